'use strict';
// node --test packaging/npm/platform.test.js: which binary the launcher picks,
// for platforms other than this one.

const test = require('node:test');
const assert = require('node:assert');
const { findBinary, LauncherError } = require('./corral/lib/platform.js');

function resolveOnly(installed) {
  return (request) => {
    if (request === installed) return `/prefix/node_modules/${request}`;
    throw Object.assign(new Error(`Cannot find module '${request}'`), { code: 'MODULE_NOT_FOUND' });
  };
}

test('linux x64 and arm64 run the binary of their platform package', () => {
  for (const arch of ['x64', 'arm64']) {
    const pkg = `@corral-cluster/linux-${arch}/bin/corral`;
    const binary = findBinary({ env: {}, platform: 'linux', arch, resolve: resolveOnly(pkg) });
    assert.strictEqual(binary, `/prefix/node_modules/${pkg}`);
  }
});

test('CORRAL_BINARY wins, on any platform', () => {
  const env = { CORRAL_BINARY: '/opt/corral' };
  assert.strictEqual(findBinary({ env, platform: 'darwin', arch: 'arm64', resolve: resolveOnly('') }), '/opt/corral');
});

test('an unsupported platform gets one line naming it and what to do', () => {
  for (const [platform, arch, remedy] of [
    ['darwin', 'arm64', 'Docker'],
    ['win32', 'x64', 'WSL 2'],
    ['linux', 'ia32', 'Docker'],
    ['freebsd', 'x64', 'Docker'],
  ]) {
    assert.throws(
      () => findBinary({ env: {}, platform, arch, resolve: resolveOnly('') }),
      (err) =>
        err instanceof LauncherError &&
        !err.message.includes('\n') &&
        err.message.includes(`${platform}-${arch}`) &&
        err.message.includes('Linux x86-64 and arm64') &&
        err.message.includes(remedy),
    );
  }
});

test('a missing platform package says which one and how to get it', () => {
  assert.throws(
    () => findBinary({ env: {}, platform: 'linux', arch: 'x64', resolve: resolveOnly('') }),
    (err) =>
      err instanceof LauncherError &&
      err.message.includes('@corral-cluster/linux-x64') &&
      err.message.includes('optional'),
  );
});
