import { describe, expect, it } from 'vitest';
import { InvalidArgumentError, LoamError, Persistent, newTxid, registerModel } from '@loam/sdk';
import { LoamNodeAdmin } from '@loam/operator';
import { clusterFixture } from './harness/cluster-fixture.js';
import { pollUntil } from './harness/wait.js';

class Item extends Persistent {
  constructor(public n: number) {
    super();
  }
}
registerModel(Item, 'NodeAdmin.Item');

const fx = clusterFixture('node-admin');
const addr = (url: string) => new URL(url.replace('loam://', 'http://')).host;

describe('the operator node admin', () => {
  it('reports every node, and startDrain returns once the drain has begun, not when it ends', async () => {
    const prefix = fx.prefix();
    const one = await fx.node(prefix);
    const two = await fx.node(prefix);
    // Each chunk the drain of node 3 moves waits here: the drain runs for seconds.
    const three = await fx.node(prefix, { env: { LOAM_FAILPOINTS: 'move-after-install:pause=2500' } });
    const c = await fx.client(one);
    const items: Item[] = [];
    for (let i = 0; i < 20; i++) items.push(await c.persist(new Item(i), { backend: 3 }));

    const admin = new LoamNodeAdmin({ deadlineMs: 5_000 });
    try {
      const via = { address: addr(one.url) };
      const before = await admin.status(via);
      expect(before.map((s) => s.number).sort()).toEqual([1, 2, 3]);
      const s3 = before.find((s) => s.number === 3)!;
      expect(s3).toMatchObject({ state: 'ready', objects: 20, draining: null, s3: null });
      expect(s3.id).toBeTruthy();

      const opId = newTxid();
      await admin.startDrain(via, 3, opId);
      const during = (await admin.status(via)).find((s) => s.number === 3)!;
      expect(during.state).toBe('ready');
      expect(during.draining).not.toBeNull();
      expect(during.draining!.objectsLeft).toBeGreaterThan(0);
      expect(during.draining!.objectsTotal).toBe(20);

      // Asked again (an operator's next reconcile), with the same id or through another node: it joins.
      await admin.startDrain(via, 3, opId);
      await admin.startDrain({ address: addr(two.url) }, 3, opId);

      const after = await pollUntil(async () => {
        const s = (await admin.status(via)).find((n) => n.number === 3);
        return s?.state === 'drained' && s;
      }, 'node 3 to be drained', 30_000, { everyMs: 100 });
      expect(after.objects).toBe(0);
      expect(after.draining).toBeNull();
      for (const it of items) expect((await c.get<Item>(it.$oid!)).n).toBe(it.n);
      // A drained node asked again: already drained, so it returns at once.
      await admin.startDrain(via, 3, newTxid());
      expect(three.child.exitCode).toBeNull();
    } finally {
      await admin.close();
    }
    await expect(admin.status({ address: addr(one.url) })).rejects.toBeInstanceOf(LoamError);
  });

  it('startDrain throws what the node refused with, and an unreachable address is a typed error', async () => {
    const prefix = fx.prefix();
    const nodes = [await fx.node(prefix), await fx.node(prefix)];
    const admin = new LoamNodeAdmin({ deadlineMs: 3_000, connectTimeoutMs: 1_000 });
    try {
      const via = { address: addr(nodes[0].url) };
      await expect(admin.startDrain(via, 9, newTxid())).rejects.toBeInstanceOf(InvalidArgumentError);
      await admin.startDrain(via, 2, newTxid()); // empty: over soon
      await pollUntil(async () => (await admin.status(via)).find((s) => s.number === 2)?.state === 'drained', 'node 2 to be drained', 10_000);
      // The last node that is not drained cannot be drained: the node's refusal comes back.
      await expect(admin.startDrain(via, 1, newTxid())).rejects.toBeInstanceOf(InvalidArgumentError);
      await nodes[1].stop();
      const t0 = Date.now();
      await expect(admin.status({ address: addr(nodes[1].url) })).rejects.toBeInstanceOf(LoamError);
      expect(Date.now() - t0).toBeLessThan(10_000);
      // Back on the same address (a Pod restarted): the admin reaches it again.
      await fx.node(prefix, { restart: nodes[1] });
      const again = await admin.status({ address: addr(nodes[1].url) });
      expect(again.find((s) => s.number === 2)?.state).toBe('drained');
    } finally {
      await admin.close();
    }
  });
});
