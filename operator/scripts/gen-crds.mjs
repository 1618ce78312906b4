#!/usr/bin/env node
// Writes the CustomResourceDefinition YAML from operator/src/crd/ (built: run `npm run build`
// first, as `npm run gen:crds` does). `node operator/scripts/gen-crds.mjs [OUT]` writes into OUT
// (default crds/ at the repository root); the drift test generates into a temp dir and compares.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const out = path.resolve(process.argv[2] ?? path.join(root, 'crds'));
const dist = path.join(root, 'operator/dist/crd/render.js');
if (!fs.existsSync(dist)) {
  console.error(`${path.relative(root, dist)} is missing: run \`npm run build\` first (or \`npm run gen:crds\`)`);
  process.exit(1);
}
const { crdFiles } = await import(pathToFileURL(dist).href);
fs.mkdirSync(out, { recursive: true });
for (const [name, text] of crdFiles()) {
  fs.writeFileSync(path.join(out, name), text);
  console.log(`wrote ${path.relative(process.cwd(), path.join(out, name)) || name}`);
}
