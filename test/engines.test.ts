import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from './harness/node-process.js';

/**
 * Node APIs the code calls that not every Node 20 has, with the release that added each. The
 * engines fields must ask for at least the newest one the source uses. Add a row when code
 * starts using another such API.
 */
const NEEDS: { api: string; since: string; uses: (src: string) => boolean }[] = [
  { api: 'zlib.crc32', since: '20.15.0', uses: (s) => /from ['"](node:)?zlib['"]/.test(s) && /\bcrc32\b/.test(s) },
];

function sources(dir: string): { file: string; text: string }[] {
  const out: { file: string; text: string }[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...sources(p));
    else if (e.name.endsWith('.ts')) out.push({ file: path.relative(ROOT, p), text: fs.readFileSync(p, 'utf8') });
  }
  return out;
}

function parse(v: string): number[] {
  return v.split('.').map(Number).concat(0, 0).slice(0, 3);
}
function atLeast(a: string, b: string): boolean {
  const [x, y] = [parse(a), parse(b)];
  for (let i = 0; i < 3; i++) if (x[i] !== y[i]) return x[i] > y[i];
  return true;
}

/** The minimum an engines.node range like ">=20.15" states (only that form is used here). */
function minimumOf(pkgFile: string): string {
  const range = JSON.parse(fs.readFileSync(path.join(ROOT, pkgFile), 'utf8')).engines?.node as string | undefined;
  const m = /^>=\s*(\d+(?:\.\d+){0,2})$/.exec(range ?? '');
  expect(m, `${pkgFile} engines.node should be ">=X.Y", got ${JSON.stringify(range)}`).not.toBeNull();
  return m![1];
}

describe('engines.node states the Node the code needs', () => {
  const used = NEEDS.map((n) => ({ ...n, files: [...sources(path.join(ROOT, 'node/src')), ...sources(path.join(ROOT, 'sdk/src'))].filter((f) => n.uses(f.text)).map((f) => f.file) }));

  it('the storage log checksums with zlib.crc32 (so NEEDS checks something)', () => {
    expect(used.find((u) => u.api === 'zlib.crc32')!.files.length, 'crc32 is no longer used: drop its row from NEEDS').toBeGreaterThan(0);
  });

  it.each(['package.json', 'node/package.json', 'sdk/package.json'])('%s asks for at least every API the source uses, and the same minimum as the others', (pkg) => {
    const min = minimumOf(pkg);
    for (const u of used.filter((x) => x.files.length > 0)) {
      expect(atLeast(min, u.since), `${pkg} says Node >=${min}, but ${u.files.join(', ')} use ${u.api}, added in Node ${u.since}`).toBe(true);
    }
    // One supported Node for the whole repository, as the README states it.
    expect(min).toBe(minimumOf('package.json'));
    expect(fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8')).toContain(`Node ${min} or newer`);
  });

  it('package-lock.json records the same engines for the workspaces (npm ci reads it)', () => {
    const lock = JSON.parse(fs.readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, { engines?: { node?: string } }> };
    for (const [key, pkg] of [['', 'package.json'], ['node', 'node/package.json'], ['sdk', 'sdk/package.json']]) {
      expect(lock.packages[key].engines?.node, `package-lock.json packages["${key}"]`).toBe(`>=${minimumOf(pkg)}`);
    }
  });
});

describe('the loam command on an older Node', () => {
  /** Runs the bin with process.versions.node faked to `version` before it starts. */
  const loamOn = (version: string) => spawnSync(process.execPath, [
    '--import', `data:text/javascript,Object.defineProperty(process.versions,'node',{value:'${version}'})`,
    path.join(ROOT, 'node/bin/loam.js'), '--version',
  ], { encoding: 'utf8' });

  it('refuses with a clear message instead of crashing while loading', () => {
    const min = minimumOf('node/package.json');
    const r = loamOn('20.11.0');
    expect(r.status).toBe(1);
    expect(r.stderr).toBe(`loam: needs Node ${min} or newer (this is Node 20.11.0)\n`);
    expect(loamOn('19.99.9').status).toBe(1);
  });

  it('runs on the minimum itself', () => {
    const r = loamOn(`${minimumOf('node/package.json')}.0`);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe(JSON.parse(fs.readFileSync(path.join(ROOT, 'node/package.json'), 'utf8')).version);
  });
});

