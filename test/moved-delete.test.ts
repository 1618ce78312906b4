import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, Persistent, registerModel, NotFoundError, type Client } from '@loam/sdk';
import { startEtcd, type EtcdCluster } from './harness/etcd.js';
import { startClusterNode, type NodeProcess } from './harness/node-process.js';

class Note extends Persistent {
  constructor(public n: number) {
    super();
  }
}
registerModel(Note, 'MovedDelete.Note');

let etcd: EtcdCluster;
let nodes: NodeProcess[];
const clients: Client[] = [];

beforeAll(async () => {
  etcd = await startEtcd({ members: 1 });
  const prefix = `/loam/moved-delete-${process.pid}`;
  nodes = [];
  for (let i = 0; i < 3; i++) nodes.push(await startClusterNode({ etcd: etcd.endpoints, prefix }));
});
afterAll(async () => {
  for (const c of clients) await c.close();
});

async function client(url: string): Promise<Client> {
  const c = await connect(url, { deadlineMs: 10_000, connectTimeoutMs: 5000 });
  clients.push(c);
  return c;
}

describe('deleting an object that lives away from its home node', () => {
  it('is "not found" afterwards for any client, deleted alone or in a transaction across nodes', async () => {
    const c = await client(nodes[0].url);
    const alone = await c.persist(new Note(1), { backend: 1 });
    const inTx = await c.persist(new Note(2), { backend: 1 });
    const other = await c.persist(new Note(3), { backend: 3 });
    await c.move(alone, 2); // home 1's directory now says node 2
    await c.move(inTx, 2);
    const gone = [alone.$oid!, inTx.$oid!]; // a deleted instance forgets its oid
    await c.delete(alone);
    await c.transaction(async (tx) => {
      tx.delete(await tx.get<Note>(inTx.$oid!));
      (await tx.get<Note>(other.$oid!)).n = 30; // a second node: two-phase commit
    });
    // Fresh clients start at the home (node 1), which pointed at node 2, which points home.
    for (const url of [nodes[0].url, nodes[1].url, nodes[2].url]) {
      const fresh = await client(url);
      for (const oid of gone) await expect(fresh.get(oid)).rejects.toBeInstanceOf(NotFoundError);
      expect((await fresh.get<Note>(other.$oid!)).n).toBe(30);
    }
  });
});
