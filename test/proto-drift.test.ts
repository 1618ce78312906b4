import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT, tempDir } from './harness/node-process.js';

describe('generated wire code', () => {
  it('matches what the generator makes from sdk/proto now', () => {
    const out = tempDir('loam-gen-');
    execFileSync(process.execPath, [path.join(ROOT, 'scripts/gen-proto.mjs'), out], { cwd: ROOT, stdio: 'pipe' });
    const rel = 'loam/v1/store.ts';
    const fresh = fs.readFileSync(path.join(out, rel), 'utf8');
    const committed = fs.readFileSync(path.join(ROOT, 'sdk/src/gen', rel), 'utf8');
    expect(fresh.length).toBeGreaterThan(1000);
    expect(committed, 'sdk/src/gen is stale: run `npm run gen`').toBe(fresh);
    fs.rmSync(out, { recursive: true, force: true });
  });
});
