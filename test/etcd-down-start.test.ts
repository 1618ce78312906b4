import fs from 'node:fs';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Etcd3 } from 'etcd3';
import { credentials, makeGenericClientConstructor, type Client as GrpcClient } from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import {
  connect, newOid, Persistent, registerModel, DeadlineExceededError, LoamError, UnavailableError, type Client,
} from '@loam/sdk';
import { startEtcd, type EtcdCluster } from './harness/etcd.js';
import { startClusterNode, tempDir, waitFor, type NodeProcess } from './harness/node-process.js';

class Item extends Persistent {
  constructor(public name: string, public n: number) {
    super();
  }
}
registerModel(Item, 'EtcdDown.Item');

let etcd: EtcdCluster;
let kv: Etcd3;
const clients: Client[] = [];
const grpcClients: GrpcClient[] = [];
let seq = 0;
const nextPrefix = () => `/loam/etcd-down-${process.pid}-${++seq}`;

beforeAll(async () => {
  etcd = await startEtcd({ members: 1 });
  kv = new Etcd3({ hosts: etcd.endpoints });
});
afterAll(async () => {
  for (const c of clients) await c.close();
  for (const g of grpcClients) g.close();
  kv?.close();
});

async function client(url: string): Promise<Client> {
  const c = await connect(url, { deadlineMs: 3000, connectTimeoutMs: 5000 });
  clients.push(c);
  return c;
}

const HealthClient = makeGenericClientConstructor(healthService, 'grpc.health.v1.Health');

/** The node's gRPC health status for `service` ('' is the whole server). */
function health(node: NodeProcess, service: string): Promise<string> {
  const hc = new HealthClient(`127.0.0.1:${node.port}`, credentials.createInsecure());
  grpcClients.push(hc);
  return new Promise((resolve, reject) => {
    (hc as unknown as { check(req: object, opts: object, cb: (e: Error | null, r?: { status: string }) => void): void })
      .check({ service }, { deadline: Date.now() + 3000 }, (e, r) => (e ? reject(e) : resolve(r!.status)));
  });
}

async function memberIds(prefix: string): Promise<string[]> {
  const keys = await kv.getAll().prefix(`${prefix}/members/`).keys();
  return keys.map((k) => k.slice(`${prefix}/members/`.length));
}

function readyLog(node: NodeProcess): Record<string, unknown> {
  return node.logs.find((l) => l.msg === 'ready')!;
}

/** Resolves at the first log line that `match` accepts; rejects with the logs at the deadline. */
function logLine(match: (l: Record<string, unknown>) => boolean): { onLog: (l: Record<string, unknown>) => void; seen: (ms: number) => Promise<void> } {
  let hit!: () => void;
  const p = new Promise<void>((r) => (hit = r));
  return {
    onLog: (l) => {
      if (match(l)) hit();
    },
    seen: async (ms) => {
      let t: NodeJS.Timeout | undefined;
      await Promise.race([p, new Promise<never>((_, rej) => (t = setTimeout(() => rej(new Error(`no matching log line within ${ms} ms`)), ms)))]).finally(() => clearTimeout(t));
    },
  };
}

describe('a node started while etcd is down', () => {
  it('with its identity on disk: starts, serves its objects, answers typed errors for the rest, and joins once etcd is back', async () => {
    const prefix = nextPrefix();
    const first = await startClusterNode({ etcd: etcd.endpoints, prefix });
    const c1 = await client(first.url);
    const [me] = await c1.backends();
    const a = await c1.persist(new Item('a', 1), { alias: 'a' });
    const b = await c1.persist(new Item('b', 2));
    await first.stop();
    await etcd.stopMember(0);

    const node = await startClusterNode({ etcd: etcd.endpoints, prefix, dataDir: first.dataDir, port: first.port, peerPort: first.peerPort, timeoutMs: 20_000 });
    expect(readyLog(node)).toMatchObject({ number: me.number, nodeId: me.id, registered: false });
    expect(node.logs.some((l) => /started without the metadata store/.test(String(l.msg)))).toBe(true);
    // It serves (its own objects), but is not registered: the membership status says so.
    expect(await health(node, '')).toBe('SERVING');
    expect(await health(node, 'loam.v1.StoreService')).toBe('SERVING');
    expect(await health(node, 'loam.membership')).toBe('NOT_SERVING');

    const c = await client(node.url);
    expect((await c.get<Item>(a.$oid!)).n).toBe(1);
    expect((await c.get<Item>(b.$oid!)).name).toBe('b');
    const a2 = await c.get<Item>(a.$oid!);
    a2.n = 10;
    await c.save(a2);
    const d = await c.persist(new Item('d', 4));
    expect(d.$oid!.startsWith(me.number.toString(16).padStart(4, '0'))).toBe(true);
    const other = await client(node.url); // a second client reads what the first wrote, from the node
    expect((await other.get<Item>(a.$oid!)).n).toBe(10);
    expect((await other.get<Item>(d.$oid!)).name).toBe('d');

    // What needs etcd fails typed and within the deadline, never hangs.
    const t0 = Date.now();
    const aliasErr = await c.persist(new Item('e', 5), { alias: 'e' }).catch((e: unknown) => e);
    expect([UnavailableError, DeadlineExceededError].some((k) => aliasErr instanceof k)).toBe(true);
    await expect(c.getByAlias('a')).rejects.toBeInstanceOf(LoamError);
    await expect(c.backends()).rejects.toBeInstanceOf(UnavailableError);
    expect(Date.now() - t0).toBeLessThan(20_000);
    // Without a first member view the node does not guess: another node's object, or a missing
    // one of its own home (whose directory it may have handed over), is UNAVAILABLE, not a wrong
    // redirect or "not found". Asked directly, so the SDK's own routing is not what answers.
    const elsewhere = newOid(me.number + 1);
    const missingHere = newOid(me.number);
    for (const oid of [elsewhere, missingHere]) {
      await expect(c.conn.get({ dataset: 'default', oids: [oid], readFromAny: false })).rejects.toBeInstanceOf(UnavailableError);
    }

    await etcd.startMember(0);
    await waitFor(async () => (await memberIds(prefix)).includes(me.id), 'the member key in etcd', 20_000, 100);
    await waitFor(async () => (await c.backends()).some((x) => x.id === me.id && x.number === me.number), 'backends() to list the node', 20_000, 100);
    await waitFor(async () => (await health(node, 'loam.membership')) === 'SERVING', 'membership health SERVING', 10_000, 100);
    expect(node.logs.some((l) => /cannot join the cluster yet/.test(String(l.msg)) && typeof l.retryInMs === 'number')).toBe(true);
    expect(node.logs.some((l) => l.msg === 'joined the cluster')).toBe(true);
    // Routing works again: a missing object of its own home is "not found" now.
    expect((await c.conn.get({ dataset: 'default', oids: [missingHere], readFromAny: false })).missing).toEqual([missingHere]);
    await waitFor(() => c.persist(new Item('f', 6), { alias: 'f' }).then(() => true), 'alias writes to work again', 20_000, 200);
    expect((await c.getByAlias<Item>('a')).$oid).toBe(a.$oid);
  });

  it('with a new data directory: waits for etcd (retrying, logging), then takes a number and serves', async () => {
    const prefix = nextPrefix();
    const existing = await startClusterNode({ etcd: etcd.endpoints, prefix });
    await etcd.stopMember(0);
    const dataDir = tempDir();
    const waiting = logLine((l) => /cannot allocate a node number/.test(String(l.msg)) && Number(l.attempt) >= 2);
    const starting = startClusterNode({ etcd: etcd.endpoints, prefix, dataDir, timeoutMs: 60_000, onLog: waiting.onLog });
    starting.catch(() => undefined); // awaited below; not an unhandled rejection meanwhile
    await waiting.seen(20_000); // it retried at least once instead of exiting
    expect(fs.existsSync(path.join(dataDir, 'node.json'))).toBe(false);

    await etcd.startMember(0);
    const node = await starting;
    expect(readyLog(node)).toMatchObject({ number: 2, registered: true });
    expect(JSON.parse(fs.readFileSync(path.join(dataDir, 'node.json'), 'utf8')).number).toBe(2);
    const c = await client(node.url);
    const x = await c.persist(new Item('x', 1));
    expect((await c.get<Item>(x.$oid!)).n).toBe(1);
    await waitFor(async () => (await c.backends()).map((m) => m.number).join() === '1,2', 'both nodes in backends()', 20_000, 100);
    await existing.stop();
  });

  it('from a copied data directory: refused at start with etcd up, stopped once etcd is back with it down', async () => {
    const prefix = nextPrefix();
    const orig = await startClusterNode({ etcd: etcd.endpoints, prefix });
    const number = Number(readyLog(orig).number);
    await orig.stop();
    const copyDir = tempDir();
    const copyId = randomUUID();
    fs.writeFileSync(path.join(copyDir, 'node.json'), JSON.stringify({ id: copyId, number, createdAt: new Date().toISOString() }));

    await expect(startClusterNode({ etcd: etcd.endpoints, prefix, dataDir: copyDir })).rejects.toThrow(/belongs to node/);

    await etcd.stopMember(0);
    const copy = await startClusterNode({ etcd: etcd.endpoints, prefix, dataDir: copyDir, timeoutMs: 20_000 });
    expect(readyLog(copy)).toMatchObject({ registered: false });
    const exited = new Promise<number | null>((r) => copy.child.once('exit', (code) => r(code)));
    await etcd.startMember(0);
    let t: NodeJS.Timeout | undefined;
    const code = await Promise.race([exited, new Promise<never>((_, rej) => (t = setTimeout(() => rej(new Error('the copy did not exit')), 30_000)))]).finally(() => clearTimeout(t));
    expect(code).toBe(1);
    expect(copy.logs.some((l) => l.level === 60 && /belongs to node/.test(String(l.err)))).toBe(true);
    expect(await memberIds(prefix)).not.toContain(copyId);
  });
});
