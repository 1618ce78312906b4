import { describe, expect, it } from 'vitest';
import { Persistent, registerModel } from '@loam/sdk';
import type { NodeProcess } from './harness/node-process.js';
import { clusterFixture, untilDead } from './harness/cluster-fixture.js';

class Counter extends Persistent {
  constructor(public n: number) {
    super();
  }
}
registerModel(Counter, 'ExactlyOnce.Counter');

const fx = clusterFixture('once', { deadlineMs: 20_000 });
const cluster = (n: number) => fx.cluster(n);
const client = (node: NodeProcess) => fx.client(node);
async function kill9(node: NodeProcess): Promise<void> {
  node.child.kill('SIGKILL');
  await untilDead(node);
}
/** Acknowledged, or its outcome unknown: both are allowed; applying twice is not. */
async function outcome(p: Promise<unknown>): Promise<'ok' | 'unknown'> {
  try {
    await p;
    return 'ok';
  } catch (e) {
    if ((e as { code?: string }).code === 'COMMIT_UNKNOWN') return 'unknown'; // CommitUnknownError
    throw e;
  }
}

/**
 * The node used to answer UNAVAILABLE after its commit was durable (the replica push failed);
 * the SDK sent the commit again, it conflicted with itself, and transaction() ran the function
 * again: one increment was applied up to 6 times, and a save() that was applied threw
 * WriteConflictError. With commit ids the retry gets the first outcome.
 */
describe('a commit meeting a dead replica is applied exactly once', () => {
  it('a transaction, a save and a two-node transaction each apply once', async () => {
    const nodes = await cluster(3);
    const c = await client(nodes[0]);
    const a = await c.persist(new Counter(0), { backend: 1 });
    const b = await c.persist(new Counter(0), { backend: 3 });
    await c.replicate(a, 2);
    await c.replicate(b, 2);
    await kill9(nodes[1]); // the replica's node

    let runs = 0;
    const tx = await outcome(c.transaction(async (t) => {
      runs++;
      (await t.get<Counter>(a.$oid!)).n += 1;
    }));
    expect(runs).toBe(1);
    const afterTx = (await c.get<Counter>(a.$oid!)).n;
    expect(afterTx).toBe(1); // applied once, acknowledged or not
    if (tx === 'ok') expect(afterTx).toBe(1);

    const fresh = await c.get<Counter>(a.$oid!);
    fresh.n += 10;
    const saved = await outcome(c.save(fresh)); // never a WriteConflictError from its own retry
    expect(['ok', 'unknown']).toContain(saved);
    expect((await c.get<Counter>(a.$oid!)).n).toBe(11);

    let runs2 = 0;
    await outcome(c.transaction(async (t) => {
      runs2++;
      (await t.get<Counter>(a.$oid!)).n -= 5;
      (await t.get<Counter>(b.$oid!)).n += 5;
    }));
    expect(runs2).toBe(1);
    const x = (await c.get<Counter>(a.$oid!)).n;
    const y = (await c.get<Counter>(b.$oid!)).n;
    expect([x, y]).toEqual([6, 5]);
  });
});
