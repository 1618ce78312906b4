import { describe, expect, it } from 'vitest';
import { DrainCancelledError, FailedPreconditionError, Persistent, newTxid, oidHomeNode, registerModel, type Client } from '@loam/sdk';
import { LoamNodeAdmin } from '@loam/operator';
import { clusterFixture } from './harness/cluster-fixture.js';
import { pollUntil } from './harness/wait.js';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { CLI, type NodeProcess } from './harness/node-process.js';

class Item extends Persistent {
  constructor(public n: number) {
    super();
  }
}
registerModel(Item, 'CancelDrain.Item');

const fx = clusterFixture('cancel-drain');
const addr = (n: NodeProcess) => new URL(n.url.replace('loam://', 'http://')).host;

/** The nodes (1-based) that serve `oid` as master now: a master answers a plain Get itself. */
async function masters(direct: Client[], oid: string): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < direct.length; i++) {
    const res = await direct[i].conn.get({ dataset: 'default', oids: [oid], readFromAny: false }).catch(() => undefined);
    if (res && res.objects.length > 0) out.push(i + 1);
  }
  return out;
}

async function expectAllReadable(c: Client, items: Item[]): Promise<void> {
  for (const it of items) expect((await c.get<Item>(it.$oid!)).n).toBe(it.n);
}

describe('CancelDrain', () => {
  it('stops a running drain between moves: the node is ready again, takes new objects, and drains fully later', async () => {
    const prefix = fx.prefix();
    const nodes = [await fx.node(prefix), await fx.node(prefix)];
    // Every chunk node 3 moves waits 4 s after its copy: the drain is held open at a known step.
    nodes.push(await fx.node(prefix, { env: { LOAM_FAILPOINTS: 'move-after-install:pause=4000' } }));
    const c = await fx.client(nodes[0], 20_000);
    const direct = await Promise.all(nodes.map((n) => fx.client(n)));
    const items: Item[] = [];
    for (let i = 0; i < 40; i++) items.push(await c.persist(new Item(i), { backend: 3 }));

    const admin = new LoamNodeAdmin();
    try {
      const via = { address: addr(nodes[0]) };
      expect(await direct[1].cancelDrain(2)).toEqual({ stopped: false, undrained: false }); // nothing to cancel

      const opId = newTxid();
      await admin.startDrain(via, 3, opId);
      // The same drain, joined: its caller learns it was cancelled.
      const joined = c.drain(3, { opId }).then(() => 'finished', (e: unknown) => e);
      await admin.cancelDrain(via, 3);
      expect(await joined).toBeInstanceOf(DrainCancelledError);

      const s3 = (await admin.status(via)).find((s) => s.number === 3)!;
      expect(s3.state).toBe('ready');
      expect(s3.draining).toBeNull();
      // Stopped part way (40 objects in two chunks of 20, the first held 4 s), never half moved.
      const onThree = [];
      for (const it of items) {
        const m = await masters(direct, it.$oid!);
        expect(m).toHaveLength(1);
        if (m[0] === 3) onThree.push(it);
      }
      expect(onThree.length).toBeGreaterThan(0);
      expect(onThree.length).toBeLessThan(items.length);
      await expectAllReadable(c, items);

      // Ready again: new objects land on it, by choice and by default for a client seeded there.
      const fresh = await c.persist(new Item(100), { backend: 3 });
      expect((await c.locate(fresh)).master.number).toBe(3);
      const viaThree = await fx.client(nodes[2]);
      const made = await viaThree.persist(new Item(101));
      expect(oidHomeNode(made.$oid!)).toBe(3);
      items.push(fresh, made);

      // A Drain with the cancelled drain's id is a new drain, and this one runs to the end.
      const res = await c.drain(3, { opId });
      expect(res.moved).toBe(onThree.length + 2);
      const after = (await admin.status(via)).find((s) => s.number === 3)!;
      expect(after).toMatchObject({ state: 'drained', objects: 0, draining: null });
      for (const it of items) expect(await masters(direct, it.$oid!)).not.toContain(3);
      await expectAllReadable(c, items);
    } finally {
      await admin.close();
    }
  });

  it('makes a drained node that restarts with the same --node-name a ready member again, its home directory back', async () => {
    const prefix = fx.prefix();
    const named = (name: string) => ['--node-name', name];
    const nodes = [await fx.node(prefix, { args: named('lds-0') }), await fx.node(prefix, { args: named('lds-1') })];
    nodes.push(await fx.node(prefix, { args: named('lds-2') }));
    const c = await fx.client(nodes[0], 20_000);
    // Homed on node 3: after its drain their home directory is served by node 1, then handed back.
    const items: Item[] = [];
    for (let i = 0; i < 10; i++) items.push(await c.persist(new Item(i), { backend: 3 }));
    await c.move(items[0], 2); // one the directory has to know is elsewhere
    expect((await c.drain(3)).homeSuccessor).toBe(1);

    // Scaled down (the Pod goes), then up again: the same name and volume.
    await nodes[2].stop();
    const admin = new LoamNodeAdmin();
    try {
      const via = { address: addr(nodes[0]) };
      // While it is gone its home directory cannot come back: typed, and nothing changes.
      const back = await fx.node(prefix, { args: named('lds-2'), restart: nodes[2] });
      await pollUntil(async () => (await admin.status(via)).find((s) => s.number === 3)?.state === 'drained', 'node 3 to rejoin, drained', 15_000);
      await nodes[0].stop(); // node 1 serves node 3's home
      const viaTwo = { address: addr(nodes[1]) };
      await expect(admin.cancelDrain(viaTwo, 3)).rejects.toBeInstanceOf(FailedPreconditionError);
      expect((await admin.status(viaTwo)).find((s) => s.number === 3)?.state).toBe('drained');
      nodes[0] = await fx.node(prefix, { args: named('lds-0'), restart: nodes[0] });

      await pollUntil(async () => (await admin.status(via)).length === 3, 'node 1 to rejoin', 15_000);
      await admin.cancelDrain(via, 3);
      expect((await admin.status(via)).find((s) => s.number === 3)).toMatchObject({ state: 'ready', draining: null });
      expect(nodes[0].logs.find((l) => l.msg === 'handed a home directory back')).toMatchObject({ home: 3, to: 3 });
      const c2 = await fx.client(nodes[0], 20_000);
      await expectAllReadable(c2, items); // found through the home directory node 3 took back
      expect((await c2.locate(items[0].$oid!)).master.number).toBe(2);
      const fresh = await c2.persist(new Item(50), { backend: 3 });
      expect((await c2.locate(fresh)).master.number).toBe(3);
      items.push(fresh);
      const direct = [await fx.client(nodes[0]), await fx.client(nodes[1]), await fx.client(back)];
      for (const it of items) expect(await masters(direct, it.$oid!)).toHaveLength(1);

      // A cancel again is a no-op, and the node drains again to the end.
      expect(await c2.cancelDrain(3)).toEqual({ stopped: false, undrained: false });
      const res = await c2.drain(3);
      expect(res.moved).toBe(1);
      await expectAllReadable(c2, items);
    } finally {
      await admin.close();
    }
  });

  it('makes a drained node whose volume was lost (same --node-name, empty data directory) ready again', async () => {
    const prefix = fx.prefix();
    const named = (name: string) => ['--node-name', name];
    const nodes = [await fx.node(prefix, { args: named('v-0') }), await fx.node(prefix, { args: named('v-1') })];
    const c = await fx.client(nodes[0], 20_000);
    const items: Item[] = [];
    for (let i = 0; i < 5; i++) items.push(await c.persist(new Item(i), { backend: 2 }));
    await c.drain(2);
    await nodes[1].kill();
    // No drained.json any more: etcd's homes/2 is what says it was drained.
    const back = await fx.node(prefix, { args: named('v-1') });
    expect(back.logs.find((l) => l.msg === 'ready')?.number).toBe(2);
    const admin = new LoamNodeAdmin();
    try {
      const via = { address: addr(nodes[0]) };
      await pollUntil(async () => (await admin.status(via)).find((s) => s.number === 2)?.state === 'drained', 'node 2 to rejoin, drained', 15_000);
      // `loam drain --cancel`, as an operator's human would.
      const run = (...args: string[]) => promisify(execFile)(process.execPath, [CLI, 'drain', '--cancel', '2', '--url', nodes[0].url, ...args]);
      expect((await run()).stdout).toMatch(/^node 2 is a ready member again \(its drain was undone\)/);
      expect((await admin.status(via)).find((s) => s.number === 2)?.state).toBe('ready');
      expect((await run()).stdout).toMatch(/^node 2 was not being drained: nothing to cancel/);
      const c2 = await fx.client(back, 20_000);
      await expectAllReadable(c2, items);
      const fresh = await c2.persist(new Item(9));
      expect(oidHomeNode(fresh.$oid!)).toBe(2);
      expect((await c2.locate(fresh)).master.number).toBe(2);
    } finally {
      await admin.close();
    }
  });
});
