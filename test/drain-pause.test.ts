import { describe, expect, it } from 'vitest';
import { Persistent, registerModel, type Client } from '@loam/sdk';
import { waitFor, type NodeProcess } from './harness/node-process.js';
import { clusterFixture } from './harness/cluster-fixture.js';

class Item extends Persistent {
  constructor(public n: number) {
    super();
  }
}
registerModel(Item, 'DrainPause.Item');

const fx = clusterFixture('drain-pause');

/** The nodes (1-based) that serve `oid` as master now: a master answers a plain Get itself. */
async function masters(nodes: NodeProcess[], direct: Client[], oid: string): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < nodes.length; i++) {
    const res = await direct[i].conn.get({ dataset: 'default', oids: [oid], readFromAny: false }).catch(() => undefined);
    if (res && res.objects.length > 0) out.push(i + 1);
  }
  return out;
}

describe('a drain whose only target is paused past its lease', () => {
  it('never gives an object two masters nor a drained node, and completes once the target is back', async () => {
    const nodes = await fx.cluster(3);
    const c = await fx.client(nodes[0], 20_000);
    const direct = await Promise.all(nodes.map((n) => fx.client(n)));
    await c.drain(2); // node 2 is drained: it must never get objects again
    const items: Item[] = [];
    for (let i = 0; i < 40; i++) items.push(await c.persist(new Item(i), { backend: 3 }));

    process.kill(nodes[0].child.pid!, 'SIGSTOP');
    const attempts: string[] = [];
    try {
      // The drain's Install to node 1 hangs; its caller gives up, then asks again (before, the
      // second drain moved the objects onto the drained node 2 while node 1 later applied the
      // first one's Install: 27 of 40 objects had two masters).
      for (let i = 0; i < 2; i++) {
        attempts.push(await direct[2].drain(3, { timeoutMs: 2_500 }).then(() => 'ok', (e: Error) => e.name));
      }
      // Long enough for node 1's member lease (3 s) to expire.
      await waitFor(async () => !(await direct[2].backends()).some((b) => b.number === 1), 'node 1 to leave the member view', 15_000, 200);
    } finally {
      process.kill(nodes[0].child.pid!, 'SIGCONT');
    }
    expect(attempts).not.toContain('ok');
    await waitFor(async () => (await direct[2].backends()).some((b) => b.number === 1), 'node 1 to rejoin', 15_000, 200);

    // Whatever the abandoned drain left behind settles: one master each, never the drained node.
    const violations: string[] = [];
    await waitFor(async () => {
      let settled = true;
      for (const it of items) {
        const m = await masters(nodes, direct, it.$oid!);
        if (m.includes(2) || m.length > 1) violations.push(`object ${it.$oid} served as master by nodes ${m.join(', ')}`);
        if (m.length !== 1) settled = false; // none: a move in between, look again
      }
      return settled || violations.length > 0;
    }, 'every object to have exactly one master', 20_000, 200);
    expect(violations).toEqual([]);

    const res = await c.drain(3);
    expect(res.homeSuccessor).toBe(1);
    for (const it of items) {
      expect(await masters(nodes, direct, it.$oid!)).toEqual([1]);
      expect((await c.get<Item>(it.$oid!)).n).toBe(it.n);
    }
  });
});
