import { describe, expect, it } from 'vitest';
import { Persistent, registerModel, type Client } from '@loam/sdk';
import { waitFor, nodeMetric } from './harness/node-process.js';
import { clusterFixture, untilDead } from './harness/cluster-fixture.js';

class Reg extends Persistent {
  constructor(public v: number) {
    super();
  }
}
registerModel(Reg, 'ReplicaLeases.Reg');

const fx = clusterFixture('replica-leases');

/** What `node` itself answers to a `readFrom: 'any'` read: its copy's version, or undefined (it redirects). */
async function servedVersion(direct: Client, oid: string): Promise<number | undefined> {
  const res = await direct.conn.get({ dataset: 'default', oids: [oid], readFromAny: true });
  return res.objects[0]?.version;
}

describe('replica copies serve reads only under a current lease from their master', () => {
  it('a replica paused past its member lease serves nothing stale when it resumes, and drops the copy', async () => {
    const nodes = await fx.cluster(3);
    const writer = await fx.client(nodes[0], 20_000);
    const viaTwo = await fx.client(nodes[1]);
    const o = await writer.persist(new Reg(0), { backend: 1 });
    await writer.replicate(o, 2);
    expect(await servedVersion(viaTwo, o.$oid!)).toBe(o.$version); // the copy serves while confirmed

    process.kill(nodes[1].child.pid!, 'SIGSTOP');
    try {
      // The master drops node 2 from the replica set once its member key is gone (~3 s), then
      // acknowledges writes without it.
      for (let v = 1; v <= 5; v++) {
        o.v = v;
        await writer.save(o);
      }
    } finally {
      process.kill(nodes[1].child.pid!, 'SIGCONT');
    }
    const acked = o.$version!;
    // Before: node 2 served version 1 to readFrom 'any' from here on, for good.
    const stale: string[] = [];
    await waitFor(async () => {
      const served = await servedVersion(viaTwo, o.$oid!);
      if (served !== undefined && served < acked) stale.push(`node 2 served version ${served} after ${acked} was acknowledged`);
      const read = (await viaTwo.get<Reg>(o.$oid!, { readFrom: 'any' })).v;
      if (read !== 5) stale.push(`readFrom 'any' through node 2 read v=${read}`);
      return stale.length > 0 || (served === undefined && (await nodeMetric(nodes[1], 'loam_objects')) === 0);
    }, 'node 2 to learn that its copy was dropped, and drop it', 20_000, 50);
    expect(stale).toEqual([]);

    // It is a replica again once replicated again, and current.
    await writer.replicate(o, 2);
    o.v = 6;
    await writer.save(o);
    await waitFor(async () => (await servedVersion(viaTwo, o.$oid!)) === o.$version, 'the new copy to serve', 10_000);
    expect((await viaTwo.get<Reg>(o.$oid!, { readFrom: 'any' })).v).toBe(6);
  });

  it('a replicate whose master dies between the copy and recording the set leaves no copy that serves', async () => {
    const prefix = fx.prefix();
    const nodes = [await fx.node(prefix, { env: { LOAM_FAILPOINTS: 'replicate-after-copy' } }), await fx.node(prefix)];
    const direct = await Promise.all(nodes.map((n) => fx.client(n)));
    const o = await direct[0].persist(new Reg(1), { backend: 1 });
    await direct[0].replicate(o, 2).catch(() => undefined); // the master kills itself after the copy
    await untilDead(nodes[0]);
    expect(await nodeMetric(nodes[1], 'loam_objects')).toBe(1); // the copy is there...
    expect(await servedVersion(direct[1], o.$oid!)).toBeUndefined(); // ...but not served (before: it was)

    nodes[0] = await fx.node(prefix, { restart: nodes[0] });
    const writer = await fx.client(nodes[0]);
    const again = await writer.get<Reg>(o.$oid!);
    again.v = 2;
    await writer.save(again); // not pushed to node 2: it is in no replica set
    const served: number[] = [];
    await waitFor(async () => {
      const v = await servedVersion(direct[1], o.$oid!);
      if (v !== undefined) served.push(v);
      return served.length > 0 || (await nodeMetric(nodes[1], 'loam_objects')) === 0;
    }, 'node 2 to drop the orphan copy after asking its master', 20_000, 100);
    expect(served, 'versions the orphan copy served').toEqual([]);
    expect((await direct[1].get<Reg>(o.$oid!, { readFrom: 'any' })).v).toBe(2);
  });
});
