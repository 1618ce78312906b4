#!/usr/bin/env node
// The `loam` command. npm links a package's bin only if its file exists at install time, and
// dist/ is built only after that (the root `prepare` script), so the bin is this committed
// launcher rather than dist/cli.js itself.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const cli = new URL('../dist/cli.js', import.meta.url);
if (!existsSync(cli)) {
  process.stderr.write(`loam: ${fileURLToPath(cli)} is missing: build it first (npm run build in the repository root)\n`);
  process.exit(1);
}
await import(cli.href);
