#!/usr/bin/env node
// The `loam` command. npm links a package's bin only if its file exists at install time, and
// dist/ is built only after that (the root `prepare` script), so the bin is this committed
// launcher rather than dist/cli.js itself.
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

// Checked before dist/ loads: on an older Node it fails while linking, with a cryptic
// "does not provide an export named 'crc32'" (zlib.crc32 arrived in Node 20.15).
const range = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).engines?.node ?? '';
const min = /^>=\s*(\d+)\.(\d+)(?:\.(\d+))?$/.exec(range);
if (min) {
  const want = [Number(min[1]), Number(min[2]), Number(min[3] ?? 0)];
  const have = process.versions.node.split('.').map(Number);
  const i = want.findIndex((w, k) => w !== have[k]);
  if (i >= 0 && have[i] < want[i]) {
    process.stderr.write(`loam: needs Node ${range.replace(/^>=\s*/, '')} or newer (this is Node ${process.versions.node})\n`);
    process.exit(1);
  }
}

const cli = new URL('../dist/cli.js', import.meta.url);
if (!existsSync(cli)) {
  process.stderr.write(`loam: ${fileURLToPath(cli)} is missing: build it first (npm run build in the repository root)\n`);
  process.exit(1);
}
await import(cli.href);
