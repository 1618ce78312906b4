import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, oidHomeNode, Persistent, registerModel, NotFoundError, type Client } from '@loam/sdk';
import { startEtcd, type EtcdCluster } from './harness/etcd.js';
import { startClusterNode, waitFor, type NodeProcess } from './harness/node-process.js';

class Doc extends Persistent {
  next?: Doc;
  constructor(public n: number, public text = 'v0') {
    super();
  }
}
registerModel(Doc, 'DrainedHome.Doc');

let etcd: EtcdCluster;
const clients: Client[] = [];

beforeAll(async () => {
  etcd = await startEtcd({ members: 1 });
});
afterAll(async () => {
  for (const c of clients) await c.close();
});

async function client(url: string): Promise<Client> {
  const c = await connect(url, { deadlineMs: 10_000, connectTimeoutMs: 5000 });
  clients.push(c);
  return c;
}

/** How many `method` calls the node has answered (any outcome), from its /metrics. */
async function requests(node: NodeProcess, method: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${node.metricsPort}/metrics`)).text();
  let n = 0;
  for (const m of text.matchAll(/^loam_requests_total\{([^}]*)\} (\d+)$/gm)) if (m[1].includes(`method="${method}"`)) n += Number(m[2]);
  return n;
}

describe('a node drained and then removed for good (a scale-down)', () => {
  it('leaves every object it was home to readable and writable, through fresh clients and clients connected before', async () => {
    const prefix = `/loam/drained-home-${process.pid}`;
    const nodes: NodeProcess[] = [];
    for (let i = 0; i < 3; i++) nodes.push(await startClusterNode({ etcd: etcd.endpoints, prefix }));
    const [one, two, three] = nodes;
    const before = await client(one.url); // connected before, seeded at the node that adopts home 3
    const beforeViaThree = await client(three.url); // connected before, seeded at the node that goes

    // Objects homed on node 3: some moved away before the drain (the home directory on node 3
    // points at them), some left on node 3 (the drain moves them), two with aliases, one
    // referencing another, and some created by the client seeded at node 3 (its default node).
    const homed: Doc[] = [];
    for (let i = 0; i < 8; i++) homed.push(await before.persist(new Doc(i), { backend: 3, alias: i < 2 ? `h3-${i}` : undefined }));
    for (let i = 0; i < 3; i++) homed.push(await beforeViaThree.persist(new Doc(8 + i)));
    homed[0].next = homed[6];
    await before.save(homed[0]);
    for (const d of homed) expect(oidHomeNode(d.$oid!)).toBe(3);
    await before.move(homed[1], 1);
    await before.move(homed[2], 1);
    await before.move(homed[3], 2);
    await before.move(homed[4], 2);
    // An object homed elsewhere that lives on node 3 (`before` caches that location).
    const visitor = await before.persist(new Doc(100), { backend: 2 });
    await before.move(visitor, 3);
    const all = [...homed, visitor];
    const n0 = new Map(all.map((d) => [d.$oid!, d.n])); // `before` refreshes its instances in place later
    for (const d of all) await beforeViaThree.get(d.$oid!); // it learns where they are too

    await before.drain(3);
    await three.stop(); // for good: its data directory is never started again
    await waitFor(async () => (await before.backends()).map((b) => b.number).join() === '1,2', 'node 3 to leave the members', 10_000, 100);

    // Reads, through a fresh client seeded at a node that is not the adopter of home 3. It
    // learns who serves home 3 with the member list, once, not per object.
    const reader = await client(two.url);
    const listed = async () => (await requests(one, 'ListBackends')) + (await requests(two, 'ListBackends'));
    const listedBefore = await listed();
    for (const d of all) {
      const got = await reader.get<Doc>(d.$oid!);
      expect([got.n, got.text]).toEqual([n0.get(d.$oid!), 'v0']);
    }
    expect((await listed()) - listedBefore).toBeLessThanOrEqual(2);
    expect((await reader.get<Doc>(homed[0].$oid!)).next?.$oid).toBe(homed[6].$oid);
    expect((await reader.getByAlias<Doc>('h3-1')).$oid).toBe(homed[1].$oid);

    // Locate: every one of them is mastered by a live node.
    const locator = await client(one.url);
    for (const d of all) expect([1, 2]).toContain((await locator.locate(d.$oid!)).master.number);

    // Writes, each object through a fresh client, one with a new referent.
    const writer = await client(two.url);
    for (const d of all) {
      const got = await writer.get<Doc>(d.$oid!);
      got.text = 'saved';
      if (d === homed[7]) got.next = new Doc(700);
      await writer.save(got);
    }

    // A transaction over objects on both live nodes, creating one more object.
    const txer = await client(one.url);
    await txer.transaction(async (tx) => {
      for (const d of [homed[1], homed[3], homed[6]]) (await tx.get<Doc>(d.$oid!)).n += 1000;
      tx.persist(new Doc(-1), { alias: 'made-in-tx' });
    });

    // Moves, through a fresh client: each object to the live node it is not on.
    const mover = await client(two.url);
    for (const d of all) {
      const from = (await mover.locate(d.$oid!)).master.number;
      const to = from === 1 ? 2 : 1;
      await mover.move(d.$oid!, to);
      expect((await mover.locate(d.$oid!)).master.number).toBe(to);
    }

    // The clients connected before keep working: reads, writes, creates.
    for (const c of [before, beforeViaThree]) {
      for (const d of all) {
        const got = await c.get<Doc>(d.$oid!);
        expect(got.text).toBe('saved');
        got.n += 1;
        await c.save(got);
      }
      const made = await c.persist(new Doc(500));
      expect([1, 2]).toContain(oidHomeNode(made.$oid!));
    }

    // What everyone wrote, seen by yet another fresh client; then it deletes every one of them.
    const deleter = await client(one.url);
    for (const [i, d] of all.entries()) {
      const got = await deleter.get<Doc>(d.$oid!);
      const inTx = [homed[1], homed[3], homed[6]].includes(d) ? 1000 : 0;
      expect([got.n, got.text]).toEqual([n0.get(d.$oid!)! + inTx + 2, 'saved']);
      if (i === 7) expect((await deleter.load(got.next!)).n).toBe(700);
      await deleter.delete(got);
    }
    expect((await deleter.getByAlias<Doc>('made-in-tx')).n).toBe(-1);
    const check = await client(two.url);
    for (const d of all) await expect(check.get(d.$oid!)).rejects.toBeInstanceOf(NotFoundError);
  });
});
