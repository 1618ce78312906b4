import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { afterEach, describe, expect, it } from 'vitest';
import { Engine } from '../dist/storage/engine.js';
import { newOid } from '@loam/sdk';

const dirs: string[] = [];
const engines: Engine[] = [];
afterEach(async () => {
  for (const e of engines.splice(0)) await e.close();
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

/** The longest the event loop was blocked while `fn` ran, in ms. */
async function maxLoopBlockMs(fn: () => Promise<unknown>): Promise<number> {
  const h = monitorEventLoopDelay({ resolution: 1 });
  h.enable();
  try {
    await fn();
  } finally {
    h.disable();
  }
  return h.max / 1e6;
}

describe('storage work never blocks the event loop', () => {
  it('commits, reads, segment rolls and compaction of a 32 MiB segment each block it < 50 ms', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'loam-loop-'));
    dirs.push(dir);
    const e = await Engine.open({ dir, compactionIntervalMs: 0, maxSegmentBytes: 32 * 1024 * 1024, cacheBytes: 1024 * 1024 });
    engines.push(e);
    const state = Buffer.alloc(1024, 7);
    const oids = Array.from({ length: 24_000 }, () => newOid(1));
    const write = async (expectedVersion: number) => {
      // 250-object commits, 8 at a time (one commit is validated in one synchronous step, about
      // 20 us an object: a commit of tens of thousands of objects does block the loop longer).
      const batches: string[][] = [];
      for (let i = 0; i < oids.length; i += 250) batches.push(oids.slice(i, i + 250));
      for (let i = 0; i < batches.length; i += 8) {
        await Promise.all(batches.slice(i, i + 8).map((b) => e.commit({ dataset: 'default', writes: b.map((oid) => ({ oid, className: 'T', state, expectedVersion })) })));
      }
    };
    const blocked: Record<string, number> = {};
    blocked.write = await maxLoopBlockMs(() => write(0));
    blocked.overwrite = await maxLoopBlockMs(() => write(1)); // the first segments are all garbage now
    expect(e.stats().segments).toBeGreaterThan(1);
    blocked.read = await maxLoopBlockMs(async () => {
      for (let i = 0; i < oids.length; i += 1000) await e.get('default', oids.slice(i, i + 1000));
    });
    let compacted = 0;
    blocked.compact = await maxLoopBlockMs(async () => {
      compacted = (await e.compact()).segments;
    });
    expect(compacted).toBeGreaterThan(0);
    for (const [what, ms] of Object.entries(blocked)) expect(ms, `${what} blocked the loop for ${ms.toFixed(1)} ms`).toBeLessThan(50);
  });
});
