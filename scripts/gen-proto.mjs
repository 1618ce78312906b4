#!/usr/bin/env node
// Generates the typed TS wire code from sdk/proto with buf (compiler) and ts-proto (generator),
// both from npm, so no protoc is needed. `node scripts/gen-proto.mjs [OUT]` writes to OUT
// (default sdk/src/gen); the drift test generates into a temp dir and compares.
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = path.resolve(process.argv[2] ?? path.join(root, 'sdk/src/gen'));
const plugin = path.join(root, 'node_modules/.bin/protoc-gen-ts_proto');
const template = JSON.stringify({
  version: 'v2',
  plugins: [{
    local: plugin,
    out,
    opt: [
      'outputServices=grpc-js', 'env=node', 'esModuleInterop=true', 'importSuffix=.js',
      'forceLong=number', 'outputJsonMethods=false', 'outputPartialMethods=true',
      'useExactTypes=false', 'outputTypeRegistry=false', 'useOptionals=none',
    ],
  }],
});
execFileSync(path.join(root, 'node_modules/.bin/buf'), ['generate', '--template', template], {
  cwd: root, stdio: 'inherit',
});
