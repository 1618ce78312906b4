import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, newOid, newTxid, oidHomeNode, Persistent, registerModel, NodeDrainedError, type Client } from '@loam/sdk';
import { startEtcd, type EtcdCluster } from './harness/etcd.js';
import { startClusterNode, waitFor, type NodeProcess } from './harness/node-process.js';

class Item extends Persistent {
  constructor(public n: number) {
    super();
  }
}
registerModel(Item, 'DrainRestart.Item');

let etcd: EtcdCluster;
const clients: Client[] = [];
let seq = 0;

beforeAll(async () => {
  etcd = await startEtcd({ members: 1 });
});
afterAll(async () => {
  for (const c of clients) await c.close();
});

async function client(url: string, deadlineMs = 10_000): Promise<Client> {
  const c = await connect(url, { deadlineMs, connectTimeoutMs: 5000 });
  clients.push(c);
  return c;
}

/** Two nodes; node 2 holds an object, is drained, then stopped (not removed: it comes back). */
async function drainedPair(): Promise<{ prefix: string; nodes: NodeProcess[]; c: Client; kept: Item }> {
  const prefix = `/loam/drain-restart-${process.pid}-${++seq}`;
  const nodes = [await startClusterNode({ etcd: etcd.endpoints, prefix }), await startClusterNode({ etcd: etcd.endpoints, prefix })];
  const c = await client(nodes[0].url);
  const kept = await c.persist(new Item(7), { backend: 2 });
  expect((await c.drain(2)).moved).toBe(1);
  expect((await c.backends()).find((b) => b.number === 2)?.state).toBe('drained');
  await nodes[1].stop();
  return { prefix, nodes, c, kept };
}

const restart = (prefix: string, old: NodeProcess, timeoutMs?: number) =>
  startClusterNode({ etcd: etcd.endpoints, prefix, dataDir: old.dataDir, port: old.port, timeoutMs });

/** What a drained node must keep doing after a restart: say so, refuse creates, let clients create elsewhere. */
async function expectStillDrained(c: Client, node: NodeProcess, kept: Item): Promise<void> {
  await waitFor(async () => (await c.backends()).find((b) => b.number === 2)?.state === 'drained', 'backends() to say node 2 is drained', 10_000, 100);
  await expect(c.persist(new Item(1), { backend: 2 })).rejects.toBeInstanceOf(NodeDrainedError);
  // A client that reaches the drained node first creates on the other node instead.
  const viaTwo = await client(node.url);
  const made = await viaTwo.persist(new Item(2));
  expect(oidHomeNode(made.$oid!)).toBe(1);
  expect((await viaTwo.locate(made)).master.number).toBe(1);
  expect((await viaTwo.get<Item>(kept.$oid!)).n).toBe(7); // what it held is still found, elsewhere
}

describe('a drained node that restarts', () => {
  it('comes back drained: its member record and backends() say so, and it refuses creates', async () => {
    const { prefix, nodes, c, kept } = await drainedPair();
    expect(JSON.parse(fs.readFileSync(path.join(nodes[1].dataDir, 'drained.json'), 'utf8'))).toMatchObject({ homeSuccessor: 1 });
    const back = await restart(prefix, nodes[1]);
    await expectStillDrained(c, back, kept);
    // Nor in a transaction's part (a raw call: the SDK does not send creates to a drained node).
    const direct = await client(back.url);
    const ops = {
      dataset: 'default', reads: [], deletes: [], aliasSets: [], aliasDeletes: [],
      writes: [{ oid: newOid(2), className: 'X', state: Buffer.from([0xc0]), expectedVersion: 0, origin: '' }],
    };
    await expect(direct.conn.commitMulti({ dataset: 'default', txid: newTxid(), parts: [{ node: 2, ops }], aliasSets: [], aliasDeletes: [] }))
      .rejects.toBeInstanceOf(NodeDrainedError);
    await back.stop();
  });

  it('comes back drained without its local record: etcd says its home directory was handed over', async () => {
    // As after a crash between the hand-over in etcd and the record in the data directory.
    const { prefix, nodes, c, kept } = await drainedPair();
    fs.rmSync(path.join(nodes[1].dataDir, 'drained.json'));
    const back = await restart(prefix, nodes[1]);
    await expectStillDrained(c, back, kept);
    await waitFor(() => fs.existsSync(path.join(back.dataDir, 'drained.json')), 'the local record to be written again', 10_000);
    await back.stop();
  });

  it('comes back drained while etcd is down: the data directory says so before any view of the cluster', async () => {
    const { prefix, nodes } = await drainedPair();
    await etcd.stopMember(0);
    try {
      const back = await restart(prefix, nodes[1], 20_000);
      expect(back.logs.some((l) => /started without the metadata store/.test(String(l.msg)))).toBe(true);
      const direct = await client(back.url, 3000);
      expect((await direct.conn.hello({ dataset: 'default', clientVersion: 'test' })).backend?.state).toBe('drained');
      await expect(direct.persist(new Item(3))).rejects.toBeInstanceOf(NodeDrainedError);
      await back.stop();
    } finally {
      await etcd.startMember(0);
    }
  });
});
