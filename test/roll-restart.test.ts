/**
 * A rolling restart as the operator does it, without Kubernetes: each node of a cluster (real
 * etcd, versitygw S3) is stopped (SIGTERM: graceful) and started again on its data directory
 * with its --node-name, but on a NEW address (a new Pod IP), one node at a time, while a writer
 * keeps persisting objects with aliases. Every write the SDK acknowledged must be readable
 * afterwards, by alias and by oid.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, newOid, newTxid, NotFoundError, oidHomeNode, Persistent, registerModel, type Client } from '@loam/sdk';
import { startEtcd, type EtcdCluster } from './harness/etcd.js';
import { startS3, type S3Server } from './harness/s3-server.js';
import { startClusterNode, tempDir, waitFor, type NodeProcess } from './harness/node-process.js';

class Item extends Persistent {
  text = '';
}
registerModel(Item, 'RollRestart.Item');

let etcd: EtcdCluster;
let s3: S3Server;
const clients: Client[] = [];

beforeAll(async () => {
  [etcd, s3] = await Promise.all([startEtcd({ members: 1 }), startS3()]);
});
afterAll(async () => {
  for (const c of clients) await c.close().catch(() => undefined);
});

async function client(urls: string[], deadlineMs = 30_000): Promise<Client> {
  const c = await connect(urls, { deadlineMs, connectTimeoutMs: 10_000 });
  clients.push(c);
  return c;
}

/**
 * Loopback addresses of this file's own: 127.0.X.Y with X picked per process (the kubelet
 * harness of other test files takes 127.0.0.X), a new Y for every start.
 */
const net = 100 + (process.pid % 100);
let nextHost = 10;
const newHost = () => `127.0.${net}.${nextHost++}`;

interface RollNode { name: string; dataDir: string; proc: NodeProcess }

function start(prefix: string, n: { name: string; dataDir: string }, at: { host: string; port?: number } = { host: newHost() }, env: Record<string, string> = {}): Promise<NodeProcess> {
  return startClusterNode({
    etcd: etcd.endpoints, prefix, dataDir: n.dataDir, host: at.host, port: at.port ?? 0,
    args: ['--node-name', n.name, '--s3-endpoint', s3.endpoint, '--s3-bucket', s3.bucket, '--s3-prefix', prefix.slice(1), '--s3-region', s3.region, '--upload-interval', '500ms'],
    env: { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, ...env },
  });
}

/** How long a node is down between its stop and its replacement's start. */
const DOWN_MS = 3000;

const address = (p: NodeProcess) => /^loam:\/\/([^/]+)\//.exec(p.url)![1];

/** Until a client of `via` lists every node at its current address (what the operator's Ready check amounts to). */
async function untilListed(via: NodeProcess, nodes: RollNode[]): Promise<void> {
  const c = await connect(via.url, { deadlineMs: 5_000, connectTimeoutMs: 5_000 });
  try {
    const want = nodes.map((n) => address(n.proc)).sort();
    await waitFor(async () => {
      const got = (await c.backends()).map((b) => b.address).sort();
      return JSON.stringify(got) === JSON.stringify(want);
    }, `every node listed at its new address ${want.join(', ')}`, 20_000, 100);
  } finally {
    await c.close();
  }
}

describe('a rolling restart that moves every node to a new address', () => {
  it('loses no acknowledged write, and the writer follows the nodes to their new addresses', async () => {
    const prefix = `/loam/roll-restart-${process.pid}`;
    const nodes: RollNode[] = [];
    for (const name of ['roll-0', 'roll-1']) {
      const n = { name, dataDir: tempDir() };
      nodes.push({ ...n, proc: await start(prefix, n) });
    }
    await untilListed(nodes[0].proc, nodes);
    const c = await client(nodes.map((n) => n.proc.url));
    const acked = new Map<string, { oid: string; text: string; ms: number }>();
    const failures: string[] = [];
    let stop = false;
    let i = 0;
    /** When the write in flight started. */
    let writeStarted = Date.now();
    const writer = (async () => {
      while (!stop) {
        const alias = `roll-${i}`;
        const text = `write ${i++}`;
        const t0 = (writeStarted = Date.now());
        try {
          const item = await c.persist(Object.assign(new Item(), { text }), { alias });
          acked.set(alias, { oid: item.$oid!, text, ms: Date.now() - t0 });
        } catch (e) {
          failures.push(`${alias} failed after ${Date.now() - t0} ms: ${String(e)}`);
        }
      }
    })();
    try {
      await waitFor(() => acked.size >= 20, 'the writer to get going', 20_000);
      for (let round = 0; round < 3; round++) {
        // Highest ordinal first, as a StatefulSet rolls; the next only once this one is back.
        for (const n of [...nodes].reverse()) {
          const before = acked.size;
          expect(await n.proc.stop()).toBe(0);
          // A Pod is down for a while before its replacement runs: the writer's retries span it.
          const downAt = Date.now();
          await waitFor(() => Date.now() - downAt > DOWN_MS, 'the downtime', DOWN_MS + 1000, 20);
          n.proc = await start(prefix, n);
          await untilListed(n.proc, nodes);
          // The operator rolls the next node only after this one is Ready and reported, seconds
          // later; a client in use learns the new address within that time, from any live node.
          // (The router's view, not a refresh forced by the test: that would hide the bug.)
          await waitFor(() => c.router.knownBackends().some((b) => b.address === address(n.proc)), `the writer's client to learn ${n.name}'s new address`, 10_000, 20);
          // Writes go on against the new addresses before the next node goes down.
          await waitFor(() => acked.size >= before + 20, `writes acknowledged after ${n.name} restarted (round ${round})`, 40_000, 20);
        }
      }
    } catch (e) {
      console.log(`writes that failed so far:\n${failures.join('\n')}`);
      throw e;
    } finally {
      stop = true;
      await writer;
    }
    const reader = await client(nodes.map((n) => n.proc.url));
    const lost: string[] = [];
    for (const [alias, w] of acked) {
      try {
        expect((await reader.getByAlias<Item>(alias)).text).toBe(w.text);
      } catch (e) {
        const byOid = await reader.get<Item>(w.oid).then((o) => `object ${w.oid} readable: ${o.text}`, (e2: unknown) => `object ${w.oid}: ${String(e2)}`);
        lost.push(`${alias} (acknowledged after ${w.ms} ms): ${String(e)}; ${byOid}`);
      }
    }
    console.log(`roll: ${acked.size} writes acknowledged, ${failures.length} failed\n${failures.join('\n')}`);
    expect(lost).toEqual([]);
    expect(failures).toEqual([]);
  }, 240_000);

  it('a write meant for a node that moved is not acknowledged by another process that took over its old address', async () => {
    // Kubernetes reuses Pod IPs: once a node restarted elsewhere, its old address may be a node
    // of another DataStore (or another node of this one). A client that still has the old
    // address must not have its write applied there.
    const prefix = `/loam/roll-reuse-${process.pid}`;
    const nodes: RollNode[] = [];
    for (const name of ['reuse-0', 'reuse-1']) {
      const n = { name, dataDir: tempDir() };
      nodes.push({ ...n, proc: await start(prefix, n) });
    }
    await untilListed(nodes[0].proc, nodes);
    const c = await client([nodes[0].proc.url]);
    const first = await c.persist(Object.assign(new Item(), { text: 'before' }), { alias: 'before' });
    const home = oidHomeNode(first.$oid!);
    const [, hostOf0, portOf0] = /^loam:\/\/([^:]+):(\d+)\//.exec(nodes[0].proc.url)!;
    expect(await nodes[0].proc.stop()).toBe(0);
    // Node 1 of another DataStore on the old address of this one's node 1, which the client
    // has not heard of moving (it made no call since).
    const other = await start(`/loam/roll-other-${process.pid}`, { name: 'other-0', dataDir: tempDir() }, { host: hostOf0, port: Number(portOf0) });
    const otherClient = await client([other.url]);
    expect(oidHomeNode((await otherClient.persist(Object.assign(new Item(), { text: 'theirs' }))).$oid!)).toBe(home);
    const write = c.persist(Object.assign(new Item(), { text: 'moved' }), { alias: 'moved' }).then(
      (item) => ({ item, at: Date.now() }),
      (e: unknown) => ({ error: e }),
    );
    // The node comes back, elsewhere; the write may be acknowledged only by it.
    nodes[0].proc = await start(prefix, nodes[0]);
    const back = Date.now();
    const outcome = await write;
    expect(outcome, JSON.stringify(outcome)).toHaveProperty('item');
    const { item, at } = outcome as { item: Item; at: number };
    // Acknowledged: so it is in this DataStore, and not in the other one.
    const reader = await client(nodes.map((n) => n.proc.url));
    expect((await reader.getByAlias<Item>('moved').catch((e: unknown) => `lost: ${String(e)}`))).toMatchObject({ text: 'moved' });
    expect((await reader.get<Item>(item.$oid!)).text).toBe('moved');
    await expect(otherClient.getByAlias('moved')).rejects.toBeInstanceOf(NotFoundError);
    expect(at).toBeGreaterThanOrEqual(back); // only the node itself, once back, acknowledged it
    expect((await reader.getByAlias<Item>('before')).text).toBe('before');
  }, 120_000);

  it('a create meant for a node that moved is not refused by the other node when it takes over the old address', async () => {
    const prefix = `/loam/roll-swap-${process.pid}`;
    const nodes: RollNode[] = [];
    for (const name of ['swap-0', 'swap-1']) {
      const n = { name, dataDir: tempDir() };
      nodes.push({ ...n, proc: await start(prefix, n) });
    }
    await untilListed(nodes[0].proc, nodes);
    const c = await client([nodes[0].proc.url]);
    const first = await c.persist(Object.assign(new Item(), { text: 'before' }));
    const [, hostOf0, portOf0] = /^loam:\/\/([^:]+):(\d+)\//.exec(nodes[0].proc.url)!;
    expect(await nodes[0].proc.stop()).toBe(0);
    expect(await nodes[1].proc.stop()).toBe(0);
    // The other node restarts on the first one's old address (its old Pod IP, reused).
    nodes[1].proc = await start(prefix, nodes[1], { host: hostOf0, port: Number(portOf0) });
    const write = c.persist(Object.assign(new Item(), { text: 'created' }), { alias: 'created' }).then(
      (item) => ({ item }),
      (e: unknown) => ({ error: String(e) }),
    );
    nodes[0].proc = await start(prefix, nodes[0]);
    const outcome = await write;
    expect(outcome, JSON.stringify(outcome)).toHaveProperty('item');
    const { item } = outcome as { item: Item };
    expect(oidHomeNode(item.$oid!)).toBe(oidHomeNode(first.$oid!));
    const reader = await client(nodes.map((n) => n.proc.url));
    expect((await reader.getByAlias<Item>('created')).text).toBe('created');
  }, 120_000);

  it('a retry that shares the alias reservation of an attempt that then gives up still sets the alias', async () => {
    // Attempt 0 reserves the alias and stalls (the failpoint) past its caller's deadline; the
    // retry (same commit id and object) finds that reservation and shares it. Attempt 0 then
    // gives up and releases it, the retry applies the commit: its acknowledgement must come with
    // the alias set.
    const prefix = `/loam/roll-alias-${process.pid}`;
    const node = await start(prefix, { name: 'alias-0', dataDir: tempDir() }, { host: newHost() }, { LOAM_FAILPOINTS: 'commit-after-alias-reserve:pause=1500' });
    const impatient = await client([node.url], 1000);
    const patient = await client([node.url], 10_000);
    const oid = newOid(impatient.router.seedBackend.number);
    const commitId = newTxid();
    const req = (attempt: number) => ({
      dataset: 'default', reads: [], deletes: [], aliasDeletes: [], commitId, attempt,
      writes: [{ oid, className: 'RollRestart.Item', state: Buffer.from([0xc0]), expectedVersion: 0, origin: '' }],
      aliasSets: [{ alias: 'shared', oid }],
    });
    const first = impatient.conn.commit(req(0)).then(() => 'applied', (e: unknown) => String(e));
    // The retry is sent once attempt 0 holds the reservation and its caller has given up.
    expect(await first).toMatch(/deadline/i);
    const versions = (await patient.conn.commit(req(1))).versions;
    expect(versions).toEqual([1]);
    const reader = await client([node.url]);
    expect((await reader.conn.get({ dataset: 'default', oids: [oid], readFromAny: false })).objects.map((o) => o.oid)).toEqual([oid]);
    expect(await reader.conn.getAlias({ dataset: 'default', alias: 'shared' }).then((r) => r.oid, (e: unknown) => String(e))).toBe(oid);
  }, 60_000);
});
