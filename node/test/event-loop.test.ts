import { describe, expect, it } from 'vitest';
import { newOid } from '@loam/sdk';
import { engineFixture } from './engine-fixture.js';

const { tmp, open } = engineFixture('loop');

/**
 * The longest the event loop was held by this process's own work while `fn` ran, in ms: the
 * gaps between 1 ms ticks, each counted only up to the CPU time the process used in it (on a
 * busy 2-core machine the process is also descheduled, which is not the loop being blocked).
 */
async function maxLoopBlockMs(fn: () => Promise<unknown>): Promise<number> {
  let worst = 0;
  let last = performance.now();
  let lastCpu = process.cpuUsage();
  const sample = () => {
    const now = performance.now();
    const cpu = process.cpuUsage(lastCpu);
    worst = Math.max(worst, Math.min(now - last, (cpu.user + cpu.system) / 1000));
    last = now;
    lastCpu = process.cpuUsage();
  };
  const ticker = setInterval(sample, 1);
  try {
    await fn();
  } finally {
    sample();
    clearInterval(ticker);
  }
  return worst;
}

describe('storage work never blocks the event loop', () => {
  it('commits, reads, segment rolls and compaction of a 32 MiB segment each block it < 50 ms', async () => {
    const e = await open(tmp(), { maxSegmentBytes: 32 * 1024 * 1024, cacheBytes: 1024 * 1024 });
    const state = Buffer.alloc(1024, 7);
    const oids = Array.from({ length: 24_000 }, () => newOid(1));
    const write = async (expectedVersion: number) => {
      // 250-object commits, two in flight (they share group writes). A commit is validated and
      // encoded in one synchronous step, about 10 us an object here: a commit of many thousands
      // of objects does hold the loop longer (docs/architecture.md).
      const batches: string[][] = [];
      for (let i = 0; i < oids.length; i += 250) batches.push(oids.slice(i, i + 250));
      for (let i = 0; i < batches.length; i += 2) {
        await Promise.all(batches.slice(i, i + 2).map((b) => e.commit({ dataset: 'default', writes: b.map((oid) => ({ oid, className: 'T', state, expectedVersion })) })));
      }
    };
    const blocked: Record<string, number> = {};
    blocked.write = await maxLoopBlockMs(() => write(0));
    blocked.overwrite = await maxLoopBlockMs(() => write(1)); // the first segments are all garbage now
    expect(e.stats().segments).toBeGreaterThan(1);
    blocked.read = await maxLoopBlockMs(async () => {
      // One get of 1,000 objects per turn of the loop, as separate requests would be.
      for (let i = 0; i < oids.length; i += 1000) {
        await e.get("default", oids.slice(i, i + 1000));
        await new Promise((r) => setImmediate(r));
      }
    });
    let compacted = 0;
    blocked.compact = await maxLoopBlockMs(async () => {
      compacted = (await e.compact()).segments;
    });
    expect(compacted).toBeGreaterThan(0);
    for (const [what, ms] of Object.entries(blocked)) expect(ms, `${what} blocked the loop for ${ms.toFixed(1)} ms`).toBeLessThan(50);
  });
});
