#!/usr/bin/env node
// Writes the CustomResourceDefinition YAML from operator/src/crd/ (built: run `npm run build`
// first, as `npm run gen:crds` does). `node operator/scripts/gen-crds.mjs [OUT...]` writes into
// each OUT; by default into crds/ at the repository root and into the Helm chart's
// charts/loam/crds/ (helm installs those before the chart's templates and keeps them on
// uninstall), the same bytes in both. The drift test generates into temp dirs and compares.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** Where the generated CRDs live in the repository (test/crd-drift.test.ts checks each). */
const CRD_DIRS = ['crds', 'charts/loam/crds'];
const outs = process.argv.length > 2 ? process.argv.slice(2).map((d) => path.resolve(d)) : CRD_DIRS.map((d) => path.join(root, d));
const dist = path.join(root, 'operator/dist/crd/render.js');
if (!fs.existsSync(dist)) {
  console.error(`${path.relative(root, dist)} is missing: run \`npm run build\` first (or \`npm run gen:crds\`)`);
  process.exit(1);
}
const { crdFiles } = await import(pathToFileURL(dist).href);
for (const out of outs) {
  fs.mkdirSync(out, { recursive: true });
  for (const [name, text] of crdFiles()) {
    fs.writeFileSync(path.join(out, name), text);
    console.log(`wrote ${path.relative(process.cwd(), path.join(out, name)) || name}`);
  }
}
