'use strict';
// Which binary the launcher runs: the one from the platform package that npm
// installed for this machine (an optional dependency selected by its `os` and
// `cpu` fields), or CORRAL_BINARY. Pure functions of their arguments, so the
// tests can ask about platforms other than the one they run on.

/** `${process.platform}-${process.arch}` → the package carrying its binary. */
const PLATFORM_PACKAGES = {
  'linux-x64': '@corral-cluster/linux-x64',
  'linux-arm64': '@corral-cluster/linux-arm64',
};

/** Where a platform package keeps the binary. */
const BINARY_IN_PACKAGE = 'bin/corral';

class LauncherError extends Error {}

function platformPackage(platform, arch) {
  return PLATFORM_PACKAGES[`${platform}-${arch}`] ?? null;
}

function unsupportedPlatformMessage(platform, arch) {
  const where = platform === 'win32' ? 'WSL 2 or Docker' : 'Docker (or a Linux VM)';
  return (
    `corral: no binary for ${platform}-${arch}: corral runs on Linux x86-64 and arm64 only; ` +
    `run it inside ${where}, e.g. \`docker run -it -v "$PWD":/app -w /app node:22 npx corral run -- node app.js\``
  );
}

/**
 * The path of the corral binary to run. `resolve` is `require.resolve`.
 * Throws a LauncherError whose message is the one line to print.
 */
function findBinary({ env, platform, arch, resolve }) {
  if (env.CORRAL_BINARY) return env.CORRAL_BINARY;
  const pkg = platformPackage(platform, arch);
  if (pkg === null) throw new LauncherError(unsupportedPlatformMessage(platform, arch));
  try {
    return resolve(`${pkg}/${BINARY_IN_PACKAGE}`);
  } catch {
    throw new LauncherError(
      `corral: the package ${pkg} that carries the binary for ${platform}-${arch} is not installed ` +
        `(installed with --omit=optional or --no-optional?); reinstall corral with optional dependencies, ` +
        `or set CORRAL_BINARY to a corral binary`,
    );
  }
}

module.exports = {
  PLATFORM_PACKAGES,
  BINARY_IN_PACKAGE,
  LauncherError,
  platformPackage,
  unsupportedPlatformMessage,
  findBinary,
};
