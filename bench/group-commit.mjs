// group-commit-64: the storage engine in-process (no gRPC). 64 concurrent committers, each
// doing single-object commits one after another, vs one committer alone (whose rate is bounded
// by one write+fdatasync per commit). Group commit shares each fdatasync among the commits that
// queued while it ran. Target: 64 committers reach >= 8x the single committer's commits/s.
import { Engine } from '../node/dist/storage/engine.js';
import { newOid } from '../sdk/dist/oid.js';
import { tempDir, concurrentRate, median, gc, settle, fmt, ratio, verdict, note } from './lib.mjs';

export const name = 'group-commit-64';
const TARGET = 8; // concurrent / single, at least
const CONCURRENCY = 64;
const ROUND_MS = 1500;
const WARMUP_MS = 500;
const ROUNDS = 5;
const STATE = Buffer.alloc(200, 0x61);

export async function run() {
  let fsyncs = 0;
  let fsyncBatches = 0;
  const engine = await Engine.open({
    dir: tempDir('loam-bench-engine-'),
    compactionIntervalMs: 0,
    observer: { fsync: (_s, _b, batches) => { fsyncs++; fsyncBatches += batches; } },
  });
  try {
    const commitOne = () => engine.commit({
      dataset: 'default',
      writes: [{ oid: newOid(1), className: 'BenchPerson', state: STATE, expectedVersion: 0 }],
    });
    const measure = async (workers, ms) => {
      gc();
      await settle(20);
      fsyncs = 0;
      fsyncBatches = 0;
      const rate = await concurrentRate(workers, ms, commitOne);
      return { rate, perFsync: fsyncBatches / Math.max(1, fsyncs) };
    };
    await measure(1, WARMUP_MS);
    await measure(CONCURRENCY, WARMUP_MS);
    const single = [];
    const many = [];
    const shared = [];
    for (let r = 0; r < ROUNDS; r++) {
      single.push((await measure(1, ROUND_MS)).rate);
      const m = await measure(CONCURRENCY, ROUND_MS);
      many.push(m.rate);
      shared.push(m.perFsync);
    }
    const one = median(single);
    const all = median(many);
    const rt = all / one;
    note(`single: ${single.map(fmt).join(' ')}; ${CONCURRENCY}: ${many.map(fmt).join(' ')}`);
    return (
      `${name}: ${fmt(all)} commits/s = ${ratio(rt)} one committer ${fmt(one)} commits/s, target >= ${TARGET}x (${verdict(rt >= TARGET)})` +
      ` | ${CONCURRENCY} concurrent single-object commits, in-process engine, median of ${ROUNDS} x ${ROUND_MS} ms;` +
      ` ${fmt(median(shared))} commits per fdatasync; single = ${fmt(1000 / one)} ms per commit`
    );
  } finally {
    await engine.close();
  }
}
