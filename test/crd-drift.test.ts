/**
 * The CRD YAML in crds/ and in the Helm chart's charts/loam/crds/ is generated from
 * operator/src/crd/ (`npm run gen:crds`): these tests fail when the committed files in either
 * place differ from what the definition makes now, and when the hand-written
 * TypeScript types of the resource and its schema disagree. No Kubernetes needed (the API server's
 * side of it is test/kube/datastore-crd.test.ts).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { completeDataStore, crdFiles, dataStoreCrd, type JSONSchemaProps } from '../operator/src/index.js';
import { ROOT, tempDir } from './harness/node-process.js';

/** Every place the generated CRDs are committed (operator/scripts/gen-crds.mjs writes both). */
const CRD_DIRS = ['crds', 'charts/loam/crds'];

describe('generated CRDs', () => {
  // From the TypeScript source itself (vitest compiles it), so an edit that was not built yet counts too.
  const fresh = crdFiles();

  it.each(CRD_DIRS)('%s/ holds exactly what the definitions in operator/src/crd/ make now', (dir) => {
    expect([...fresh.keys()]).toEqual(['datastores.loam.dev.yaml']);
    expect(fs.readdirSync(path.join(ROOT, dir)).sort(), `${dir}/ has files no definition makes: remove them or run \`npm run gen:crds\``).toEqual([...fresh.keys()].sort());
    for (const [name, text] of fresh) {
      expect(fs.readFileSync(path.join(ROOT, dir, name), 'utf8'), `${dir}/${name} is stale: run \`npm run gen:crds\``).toBe(text);
    }
  });

  it('the generator (operator/scripts/gen-crds.mjs, from the built package) writes the same bytes into every directory it is given', () => {
    const outs = [tempDir('loam-gen-crds-'), tempDir('loam-gen-crds-')];
    execFileSync(process.execPath, [path.join(ROOT, 'operator/scripts/gen-crds.mjs'), ...outs], { cwd: ROOT, stdio: 'pipe' });
    for (const out of outs) {
      expect(fs.readdirSync(out).sort()).toEqual([...fresh.keys()].sort());
      for (const [name, text] of fresh) {
        expect(fs.readFileSync(path.join(out, name), 'utf8'), 'operator/dist is older than operator/src: run `npm run build`').toBe(text);
      }
      fs.rmSync(out, { recursive: true, force: true });
    }
  });

  it('without arguments the generator writes crds/ and charts/loam/crds/ (the places checked above)', () => {
    const src = fs.readFileSync(path.join(ROOT, 'operator/scripts/gen-crds.mjs'), 'utf8');
    const dirs = /const CRD_DIRS = (\[[^\]]*\])/.exec(src)?.[1];
    expect(dirs && JSON.parse(dirs.replace(/'/g, '"'))).toEqual(CRD_DIRS);
  });

  it('the YAML says exactly what the typed object says, without anchors or aliases', () => {
    const text = fresh.get('datastores.loam.dev.yaml')!;
    expect(parse(text)).toEqual(JSON.parse(JSON.stringify(dataStoreCrd)));
    // A repeated schema fragment written once and referenced (&a / *a) would be legal YAML but
    // surprising in a CRD; the generator writes every occurrence out.
    expect(text).not.toMatch(/(^|\s)[&*][A-Za-z0-9]+\s*$/m);
  });
});

/**
 * Walks `value` (a sample that sets every field the TypeScript types have) against `schema`:
 * every field of one must be in the other, with a value of the schema's type.
 */
function mismatches(schema: JSONSchemaProps, value: unknown, at: string): string[] {
  const out: string[] = [];
  const is = (ok: boolean, what: string) => {
    if (!ok) out.push(`${at}: ${what}, sample has ${JSON.stringify(value)}`);
    return ok;
  };
  if (schema['x-kubernetes-int-or-string']) {
    is(typeof value === 'string' || typeof value === 'number', 'int-or-string');
    return out;
  }
  if (schema.enum) is(schema.enum.includes(value as string), `one of ${schema.enum.join('|')}`);
  switch (schema.type) {
    case 'string':
      is(typeof value === 'string', 'a string');
      break;
    case 'integer':
      is(Number.isInteger(value), 'an integer');
      break;
    case 'boolean':
      is(typeof value === 'boolean', 'a boolean');
      break;
    case 'array':
      if (is(Array.isArray(value) && value.length > 0, 'a non-empty array')) {
        (value as unknown[]).forEach((v, i) => out.push(...mismatches(schema.items!, v, `${at}[${i}]`)));
      }
      break;
    case 'object': {
      if (!is(typeof value === 'object' && value !== null && !Array.isArray(value), 'an object')) break;
      const obj = value as Record<string, unknown>;
      if (schema.properties) {
        for (const k of Object.keys(obj)) if (!(k in schema.properties)) out.push(`${at}.${k}: in the TypeScript types, not in the schema`);
        for (const [k, s] of Object.entries(schema.properties)) {
          if (!(k in obj)) out.push(`${at}.${k}: in the schema, not in the TypeScript types (or the sample)`);
          else out.push(...mismatches(s, obj[k], `${at}.${k}`));
        }
      } else if (typeof schema.additionalProperties === 'object') {
        if (is(Object.keys(obj).length > 0, 'a non-empty map')) for (const [k, v] of Object.entries(obj)) out.push(...mismatches(schema.additionalProperties, v, `${at}[${k}]`));
      } else {
        is(schema['x-kubernetes-preserve-unknown-fields'] === true, 'a schema with properties, a map, or preserved fields');
      }
      break;
    }
    default:
      out.push(`${at}: the schema gives no type`);
  }
  return out;
}

describe('DataStore types', () => {
  const root = dataStoreCrd.spec.versions[0].schema.openAPIV3Schema;

  it('the TypeScript types (through the complete sample) and the schema have the same fields, of the same types', () => {
    const sample = completeDataStore();
    expect(mismatches(root.properties!.spec, sample.spec, 'spec')).toEqual([]);
    expect(mismatches(root.properties!.status, sample.status, 'status')).toEqual([]);
  });

  it('the walk notices a field only one side has', () => {
    const sample = completeDataStore();
    const spec = sample.spec as unknown as Record<string, unknown>;
    spec.nodez = 3;
    delete (sample.spec.s3 as Partial<typeof sample.spec.s3>).uploadInterval;
    sample.status.nodes[0].ready = 'yes' as unknown as boolean;
    expect(mismatches(root.properties!.spec, sample.spec, 'spec')).toEqual([
      'spec.nodez: in the TypeScript types, not in the schema',
      'spec.s3.uploadInterval: in the schema, not in the TypeScript types (or the sample)',
    ]);
    expect(mismatches(root.properties!.status, sample.status, 'status')).toEqual(['status.nodes[0].ready: a boolean, sample has "yes"']);
  });

  it('names, subresources and printer columns as the issue has them', () => {
    const { spec } = dataStoreCrd;
    expect(spec.group).toBe('loam.dev');
    expect(spec.scope).toBe('Namespaced');
    expect(spec.names).toMatchObject({ kind: 'DataStore', plural: 'datastores', shortNames: ['lds'] });
    expect(spec.versions.map((v) => v.name)).toEqual(['v1alpha1']);
    const v = spec.versions[0];
    expect(v.subresources).toEqual({ status: {}, scale: { specReplicasPath: '.spec.nodes', statusReplicasPath: '.status.readyNodes', labelSelectorPath: '.status.selector' } });
    expect(v.additionalPrinterColumns!.filter((c) => !c.priority).map((c) => c.name)).toEqual(['Nodes', 'Ready', 'Phase', 'Age']);
  });
});
