'use strict';
// Lays out the npm packages to pack: the main package `corral` (launcher)
// and one package per platform carrying that platform's binary.
//
//   node stage.js VERSION OUT_DIR PLATFORM=BINARY…    (PLATFORM: linux-x64, …)
//
// Every platform known to lib/platform.js is an optional dependency of the
// main package at exactly VERSION; the ones given here are staged.

const fs = require('node:fs');
const path = require('node:path');
const { PLATFORM_PACKAGES, BINARY_IN_PACKAGE } = require('./corral/lib/platform.js');

const [version, outDir, ...binaries] = process.argv.slice(2);
const main = JSON.parse(fs.readFileSync(path.join(__dirname, 'corral/package.json'), 'utf8'));

function stageMain() {
  const dir = path.join(outDir, 'corral');
  fs.cpSync(path.join(__dirname, 'corral'), dir, { recursive: true });
  const optionalDependencies = {};
  for (const pkg of Object.values(PLATFORM_PACKAGES)) optionalDependencies[pkg] = version;
  writeJson(path.join(dir, 'package.json'), { ...main, version, optionalDependencies });
  return dir;
}

function stagePlatform(platformArch, binary) {
  const name = PLATFORM_PACKAGES[platformArch];
  if (!name) throw new Error(`stage.js: no package for platform ${platformArch}`);
  const [os, cpu] = platformArch.split('-');
  const dir = path.join(outDir, platformArch);
  fs.mkdirSync(path.join(dir, path.dirname(BINARY_IN_PACKAGE)), { recursive: true });
  fs.copyFileSync(binary, path.join(dir, BINARY_IN_PACKAGE));
  fs.chmodSync(path.join(dir, BINARY_IN_PACKAGE), 0o755);
  writeJson(path.join(dir, 'package.json'), {
    name,
    version,
    description: `The corral binary for ${platformArch} (static); installed by the \`corral\` package`,
    license: main.license,
    repository: main.repository,
    os: [os],
    cpu: [cpu],
    files: [BINARY_IN_PACKAGE],
    // Yarn PnP: keep the binary a real file on disk.
    preferUnplugged: true,
  });
  fs.writeFileSync(
    path.join(dir, 'README.md'),
    `# ${name}\n\nThe corral binary for ${platformArch}. Install \`corral\`, which selects it.\n`,
  );
  return dir;
}

function writeJson(file, value) {
  fs.writeFileSync(file, `${JSON.stringify(value, null, 2)}\n`);
}

fs.rmSync(outDir, { recursive: true, force: true });
console.log(stageMain());
for (const pair of binaries) {
  const [platformArch, binary] = pair.split('=');
  console.log(stagePlatform(platformArch, binary));
}
