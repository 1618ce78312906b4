import { describe, expect, it } from 'vitest';
import { Persistent, registerModel, type Client } from '@loam/sdk';
import { waitFor, type NodeProcess, nodeMetric } from './harness/node-process.js';
import { clusterFixture, untilDead } from './harness/cluster-fixture.js';

class Box extends Persistent {
  constructor(public v: number) {
    super();
  }
}
registerModel(Box, 'Moves.Box');

const fx = clusterFixture('moves');
const client = (node: NodeProcess) => fx.client(node);
/** The nodes that serve `oid` as its master right now (a master answers a plain Get itself). */
async function masters(nodes: NodeProcess[], direct: Client[], oid: string): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < nodes.length; i++) {
    if (nodes[i].child.exitCode !== null || nodes[i].child.signalCode !== null) continue;
    const res = await direct[i].conn.get({ dataset: 'default', oids: [oid], readFromAny: false }).catch(() => undefined);
    if (res && res.objects.length > 0) out.push(i + 1);
  }
  return out;
}

describe('one master per object across moves', () => {
  it('concurrent moves of one object to two nodes leave exactly one master (10 of 10 runs)', async () => {
    const nodes = await fx.cluster(3);
    const c = await client(nodes[0]);
    const direct = await Promise.all(nodes.map(client));
    for (let run = 0; run < 10; run++) {
      const o = await c.persist(new Box(run), { backend: 1 });
      // Both used to succeed, and nodes 2 and 3 then both accepted writes.
      const results = await Promise.allSettled([c.move(o, 2), c.move(o, 3)]);
      expect(results.filter((r) => r.status === 'fulfilled').length).toBeGreaterThan(0);
      expect(await masters(nodes, direct, o.$oid!), `run ${run}`).toHaveLength(1);
      o.v += 100;
      await c.save(o);
      expect((await direct[2].get<Box>(o.$oid!)).v).toBe(run + 100);
      expect(await masters(nodes, direct, o.$oid!)).toHaveLength(1);
    }
  });

  it('a move whose source dies after the install: the copy is never served, and is dropped', async () => {
    const prefix = fx.prefix();
    const nodes = [await fx.node(prefix, { env: { LOAM_FAILPOINTS: 'move-after-install' } }), await fx.node(prefix)];
    const direct = await Promise.all(nodes.map(client));
    const o = await direct[0].persist(new Box(1), { backend: 1 });
    await direct[0].move(o, 2).catch(() => undefined); // the source kills itself after the Install
    await untilDead(nodes[0]);
    // Node 2 holds a copy now, but it is not a master copy: before, it served it and took writes.
    expect(await masters(nodes, direct, o.$oid!)).toEqual([]);
    const res = await direct[1].conn.get({ dataset: 'default', oids: [o.$oid!], readFromAny: true });
    expect(res.objects).toHaveLength(0); // not even to a read of any copy
    nodes[0] = await fx.node(prefix, { restart: nodes[0] });
    const fresh = await client(nodes[0]);
    direct[0] = fresh;
    expect((await fresh.get<Box>(o.$oid!)).v).toBe(1); // the source still masters it
    // Node 2 asks the source what became of the move, and drops its copy.
    await waitFor(async () => (await direct[1].conn.get({ dataset: 'default', oids: [o.$oid!], readFromAny: true })).objects.length === 0
      && (await nodeMetric(nodes[1], 'loam_objects')) === 0, 'the abandoned copy to be dropped', 20_000, 200);
    expect(await masters(nodes, direct, o.$oid!)).toEqual([1]);
    await fresh.move(o.$oid!, 2); // and the object moves normally afterwards
    expect(await masters(nodes, direct, o.$oid!)).toEqual([2]);
  });

  it('a move whose source dies after forgetting the object: the restart activates the copy', async () => {
    const prefix = fx.prefix();
    const nodes = [await fx.node(prefix, { env: { LOAM_FAILPOINTS: 'move-before-activate' } }), await fx.node(prefix)];
    const direct = await Promise.all(nodes.map(client));
    const o = await direct[0].persist(new Box(7), { backend: 1 });
    await direct[0].move(o, 2).catch(() => undefined);
    await untilDead(nodes[0]);
    expect(await masters(nodes, direct, o.$oid!)).toEqual([]); // in between: nobody serves it, nobody loses it
    nodes[0] = await fx.node(prefix, { restart: nodes[0] });
    direct[0] = await client(nodes[0]);
    await waitFor(async () => (await masters(nodes, direct, o.$oid!)).join() === '2', 'the copy on node 2 to be activated', 20_000, 200);
    const c = await client(nodes[0]);
    const got = await c.get<Box>(o.$oid!);
    expect(got.v).toBe(7);
    got.v = 8;
    await c.save(got);
    expect((await direct[1].get<Box>(o.$oid!)).v).toBe(8);
  });
});

describe('a move whose caller gave up', () => {
  it('is not executed by a node that reads it after resuming from a pause', async () => {
    const nodes = await fx.cluster(2);
    const c = await client(nodes[0]);
    const direct = await Promise.all(nodes.map(client));
    const o = await c.persist(new Box(1), { backend: 2 });
    process.kill(nodes[1].child.pid!, 'SIGSTOP');
    try {
      // gRPC's timeout counts from when the server reads the call: without the wall-clock
      // deadline the node ran this move when it resumed (the caller had been told it failed).
      await expect(c.move(o, 1, { timeoutMs: 1_000 })).rejects.toThrow();
    } finally {
      process.kill(nodes[1].child.pid!, 'SIGCONT');
    }
    // The node reads the queued Move as it resumes, and refuses it.
    await waitFor(async () => (await refused(nodes[1], 'Move')) >= 1 || (await masters(nodes, direct, o.$oid!)).join() !== '2',
      'node 2 to read the late Move', 10_000, 100);
    expect(await masters(nodes, direct, o.$oid!)).toEqual([2]);
    expect(await refused(nodes[1], 'Move')).toBeGreaterThanOrEqual(1);
    expect((await c.get<Box>(o.$oid!)).v).toBe(1);
    await c.move(o, 1); // a move in time works
    expect(await masters(nodes, direct, o.$oid!)).toEqual([1]);
  });
});

async function refused(node: NodeProcess, method: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${node.metricsPort}/metrics`)).text();
  const m = new RegExp(`^loam_requests_total\\{method="${method}",outcome="deadline_exceeded"\\} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

