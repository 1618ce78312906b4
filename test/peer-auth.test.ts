import fs from 'node:fs';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Etcd3 } from 'etcd3';
import { credentials, Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { NodeServiceClient, type InstallRequest, type PeerResponse } from '@loam/sdk/wire';
import { connect, Persistent, registerModel, UnavailableError, type Client } from '@loam/sdk';
import { encodeValue } from '@loam/sdk/codec';
import { startEtcd, type EtcdCluster } from './harness/etcd.js';
import { clusterSecretFile, newSecretFile, startClusterNode, tempDir, waitFor, type NodeProcess } from './harness/node-process.js';

/**
 * The node-to-node service is not open to clients: it is not on the client port at all, and on
 * the peer port only callers with the cluster secret get through. Real node processes on a
 * real etcd, raw gRPC calls built like a client bypassing the SDK would.
 */

class Doc extends Persistent {
  constructor(public text: string) {
    super();
  }
}
registerModel(Doc, 'PeerAuth.Doc');

const SECRET_KEY = 'loam-cluster-secret-bin';

let etcd: EtcdCluster;
let kv: Etcd3;
let seq = 0;
const clients: Client[] = [];
const raws: NodeServiceClient[] = [];

beforeAll(async () => {
  etcd = await startEtcd({ members: 1 });
  kv = new Etcd3({ hosts: etcd.endpoints });
});
afterAll(async () => {
  for (const c of clients) await c.close();
  for (const r of raws) r.close();
  kv?.close();
});

async function cluster(n: number): Promise<{ prefix: string; nodes: NodeProcess[] }> {
  const prefix = `/loam/peer-auth-${process.pid}-${++seq}`;
  const nodes: NodeProcess[] = [];
  for (let i = 0; i < n; i++) nodes.push(await startClusterNode({ etcd: etcd.endpoints, prefix }));
  return { prefix, nodes };
}

async function client(url: string | string[]): Promise<Client> {
  const c = await connect(url, { deadlineMs: 10_000, connectTimeoutMs: 5_000 });
  clients.push(c);
  return c;
}

function raw(port: number): NodeServiceClient {
  const r = new NodeServiceClient(`127.0.0.1:${port}`, credentials.createInsecure());
  raws.push(r);
  return r;
}

function withSecret(secret?: Buffer): Metadata {
  const md = new Metadata();
  if (secret) md.set(SECRET_KEY, secret);
  return md;
}

/** The secret the harness gave this file's nodes, as the node reads it (trailing newline dropped). */
function rightSecret(): Buffer {
  return Buffer.from(fs.readFileSync(clusterSecretFile(), 'utf8').trimEnd());
}

/** A raw Install: what the reported attack sent (an older version of an object, forged content). */
function install(r: NodeServiceClient, req: InstallRequest, md: Metadata): Promise<ServiceError | undefined> {
  return new Promise((resolve) => r.install(req, md, { deadline: Date.now() + 5_000 }, (err) => resolve(err ?? undefined)));
}

function dropReplicas(r: NodeServiceClient, md: Metadata): Promise<ServiceError | undefined> {
  return new Promise((resolve) => r.dropReplicas({ dataset: 'no-such-dataset', oids: [] }, md, { deadline: Date.now() + 5_000 }, (err) => resolve(err ?? undefined)));
}

/** Opens a Link stream, sends one message on it, and resolves with how the stream ended and what came back. */
function link(r: NodeServiceClient, md: Metadata): Promise<{ err?: ServiceError; answers: PeerResponse[] }> {
  return new Promise((resolve) => {
    const answers: PeerResponse[] = [];
    const s = r.link(md, { deadline: Date.now() + 5_000 });
    s.on('data', (m: PeerResponse) => answers.push(m));
    s.on('error', (err: ServiceError) => resolve({ err, answers }));
    s.on('end', () => resolve({ answers }));
    s.write({ id: 1, dropReplicas: { dataset: 'no-such-dataset', oids: [] } });
    s.end();
  });
}

/** An object on node 1 at version 2, and the forged Install that would take it back to version 1. */
async function victim(c: Client): Promise<{ doc: Doc; forged: InstallRequest }> {
  const doc = await c.persist(new Doc('first'), { backend: 1 });
  doc.text = 'acknowledged';
  await c.save(doc);
  expect(doc.$version).toBe(2);
  const forged: InstallRequest = {
    dataset: 'default',
    // A state the SDK reads: on a node that took it, the read-back would be { 'forged', 1 }.
    objects: [{ oid: doc.$oid!, className: 'PeerAuth.Doc', state: encodeValue({ text: 'forged' }, { refFor: () => { throw new Error('no references here'); } }), version: 1, origin: '' }],
    replicaSets: [],
    source: 0,
  };
  return { doc, forged };
}

/** Reads the object back through a client with no cache: its state and version as the cluster has them. */
async function readBack(url: string, oid: string): Promise<{ text: string; version: number }> {
  const fresh = await client(url);
  const d = await fresh.get<Doc>(oid);
  return { text: d.text, version: d.$version };
}

async function metric(node: NodeProcess, name: string, labels = ''): Promise<number> {
  const body = await (await fetch(`http://127.0.0.1:${node.metricsPort}/metrics`)).text();
  let sum = 0;
  for (const line of body.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (labels && !line.includes(labels)) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

describe('node-to-node calls need the peer port and the cluster secret', () => {
  it('(a) a raw NodeService.Install to the client port is UNIMPLEMENTED and changes nothing', async () => {
    const { nodes } = await cluster(2);
    const c = await client(nodes[0].url);
    const { doc, forged } = await victim(c);
    for (const n of nodes) {
      const err = await install(raw(n.port), forged, withSecret(rightSecret())); // even with the secret: not served there
      expect(err?.code).toBe(status.UNIMPLEMENTED);
      expect((await link(raw(n.port), withSecret(rightSecret()))).err?.code).toBe(status.UNIMPLEMENTED);
    }
    expect(await readBack(nodes[0].url, doc.$oid!)).toEqual({ text: 'acknowledged', version: 2 });
  });

  it('(b) on the peer port, a call without the secret or with a wrong one is UNAUTHENTICATED and changes nothing', async () => {
    const { nodes } = await cluster(2);
    const c = await client(nodes[0].url);
    const { doc, forged } = await victim(c);
    const peer = raw(nodes[0].peerPort);
    expect(nodes[0].peerPort).not.toBe(nodes[0].port);
    const wrongs: [string, Metadata][] = [
      ['no secret', withSecret()],
      ['a wrong secret', withSecret(Buffer.from('not-the-cluster-secret-at-all'))],
      ['the secret plus a trailing byte', withSecret(Buffer.concat([rightSecret(), Buffer.from('x')]))],
      ['an empty secret', withSecret(Buffer.alloc(0))],
    ];
    for (const [what, md] of wrongs) {
      expect((await install(peer, forged, md))?.code, what).toBe(status.UNAUTHENTICATED);
      const l = await link(peer, md);
      expect(l.err?.code, `link with ${what}`).toBe(status.UNAUTHENTICATED);
      expect(l.answers, `link with ${what}`).toEqual([]); // no message reached a handler
    }
    expect(await readBack(nodes[0].url, doc.$oid!)).toEqual({ text: 'acknowledged', version: 2 });

    // The refusal is the secret's doing: with it, the same port answers (a call that changes nothing).
    expect(await dropReplicas(peer, withSecret(rightSecret()))).toBeUndefined();
    expect((await link(peer, withSecret(rightSecret()))).answers.map((a) => a.id)).toEqual([1]);

    expect(await metric(nodes[0], 'loam_peer_calls_refused_total', 'reason="missing"')).toBe(2);
    expect(await metric(nodes[0], 'loam_peer_calls_refused_total', 'reason="wrong"')).toBe(6);
    await waitFor(() => nodes[0].logs.some((l) => l.level === 40 && /refused a node-to-node call/.test(String(l.msg))), 'the refusal in the node log');
  });

  it('(c) with the secret, nodes reach each other on their peer ports: moves, replicas and two-phase transactions work', async () => {
    const { prefix, nodes } = await cluster(3);
    // The member records say where each node's peer port is, apart from its client port.
    const members = Object.values(await kv.getAll().prefix(`${prefix}/members/`).strings()).map((v) => JSON.parse(v) as { number: number; address: string; peerAddress?: string });
    expect(members.map((m) => [m.address, m.peerAddress]).sort()).toEqual(nodes.map((n) => [`127.0.0.1:${n.port}`, `127.0.0.1:${n.peerPort}`]).sort());

    const c = await client(nodes[0].url);
    const a = await c.persist(new Doc('a'), { backend: 1 });
    const b = await c.persist(new Doc('b'), { backend: 2 });
    await c.move(a, 3);
    expect((await c.locate(a)).master.number).toBe(3);
    await c.replicate(a, 2);
    a.text = 'a, replicated';
    await c.save(a); // pushed to the replica on node 2 before it is acknowledged
    const near = await client(nodes[1].url);
    expect((await near.get<Doc>(a.$oid!, { readFrom: 'any' })).text).toBe('a, replicated');
    await c.transaction(async (tx) => {
      const x = await tx.get<Doc>(a.$oid!);
      const y = await tx.get<Doc>(b.$oid!);
      x.text = 'a, in a transaction';
      y.text = 'b, in a transaction';
    });
    expect(await readBack(nodes[1].url, a.$oid!)).toEqual({ text: 'a, in a transaction', version: 3 });
    expect(await readBack(nodes[2].url, b.$oid!)).toEqual({ text: 'b, in a transaction', version: 2 });

    // Those went node to node: Install on node 3, a Prepare on whichever node did not coordinate.
    expect(await metric(nodes[2], 'loam_requests_total', 'method="Install",outcome="ok"')).toBeGreaterThan(0);
    const prepares = (await Promise.all([nodes[1], nodes[2]].map((n) => metric(n, 'loam_requests_total', 'method="Prepare",outcome="ok"')))).reduce((x, y) => x + y, 0);
    expect(prepares).toBeGreaterThan(0);
    for (const n of nodes) expect(await metric(n, 'loam_peer_calls_refused_total')).toBe(0);
  });

  it('(d) a node started with another secret joins etcd but cannot take part: its peer calls, and calls to it, fail saying the secrets differ', async () => {
    const { prefix, nodes } = await cluster(2);
    const rogue = await startClusterNode({ etcd: etcd.endpoints, prefix, secretFile: newSecretFile() });
    const c = await client(nodes[0].url);
    expect((await c.backends()).map((b) => b.number)).toEqual([1, 2, 3]);
    const mine = await c.persist(new Doc('on node 1'), { backend: 1 });
    const theirs = await c.persist(new Doc('on the rogue node'), { backend: 3 }); // local to it: works

    // A good node calling the rogue one (Install), the rogue one calling a good one (Install).
    await expect(c.move(mine, 3)).rejects.toThrow(UnavailableError);
    await expect(c.move(mine, 3)).rejects.toThrow(/refused this node's call: the cluster secrets differ/);
    await expect(c.move(theirs, 1)).rejects.toThrow(/refused this node's call: the cluster secrets differ/);
    await expect(c.replicate(mine, 3)).rejects.toThrow(/cluster secrets differ/);
    // A transaction across a good node and the rogue one aborts whole.
    await expect(c.transaction(async (tx) => {
      (await tx.get<Doc>(mine.$oid!)).text = 'changed';
      (await tx.get<Doc>(theirs.$oid!)).text = 'changed';
    })).rejects.toThrow(/cluster secrets differ/);

    expect((await c.locate(mine)).master.number).toBe(1);
    expect((await c.locate(mine)).replicas).toEqual([]);
    expect((await c.locate(theirs)).master.number).toBe(3);
    expect(await readBack(nodes[0].url, mine.$oid!)).toEqual({ text: 'on node 1', version: 1 });
    expect(await readBack(nodes[0].url, theirs.$oid!)).toEqual({ text: 'on the rogue node', version: 1 });
    mine.text = 'still writable';
    await c.save(mine); // no lock of the aborted transaction left behind
    expect(mine.$version).toBe(2);

    // Both sides say so: the refusing node in its log and metrics, the refused one in its log.
    expect(await metric(nodes[0], 'loam_peer_calls_refused_total', 'reason="wrong"')).toBeGreaterThan(0);
    expect(await metric(rogue, 'loam_peer_calls_refused_total', 'reason="wrong"')).toBeGreaterThan(0);
    expect(nodes[0].logs.some((l) => /refused a node-to-node call with the wrong cluster secret/.test(String(l.msg)))).toBe(true);
    await waitFor(() => rogue.logs.some((l) => /cluster secrets differ/.test(JSON.stringify(l.err ?? ''))), 'the refused call in the rogue node log');
  });

  it('a member record without a peer address (an older loam) is unreachable with a clear error, and nothing crashes', async () => {
    const { prefix, nodes } = await cluster(1);
    const lease = kv.lease(10);
    await kv.put(`${prefix}/nodes/9`).value('old-node');
    await lease.put(`${prefix}/members/old-node`).value(JSON.stringify({ id: 'old-node', number: 9, address: '127.0.0.1:1', startedAt: new Date().toISOString() }));
    try {
      const c = await client(nodes[0].url);
      const doc = await c.persist(new Doc('stays'), { backend: 1 });
      await expect(c.move(doc, 9)).rejects.toThrow(/node 9 \(127\.0\.0\.1:1\) has no peer address in its member record/);
      expect((await c.locate(doc)).master.number).toBe(1);
      expect(nodes[0].child.exitCode).toBeNull();
      expect((await c.get<Doc>(doc.$oid!)).text).toBe('stays');
    } finally {
      await lease.revoke();
    }
  });
});

/** A free port P whose P + 1 is free too (as far as a bind can tell: both are released before use). */
async function freePortPair(): Promise<number> {
  const listen = (port: number) => new Promise<net.Server | undefined>((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(undefined));
    srv.listen(port, '127.0.0.1', () => resolve(srv));
  });
  const close = (srv: net.Server) => new Promise<void>((r) => srv.close(() => r()));
  for (let attempt = 0; attempt < 20; attempt++) {
    const a = await listen(0);
    const p = (a!.address() as net.AddressInfo).port;
    const b = p < 65535 ? await listen(p + 1) : undefined;
    await close(a!);
    if (b) {
      await close(b);
      return p;
    }
  }
  throw new Error('no free pair of adjacent ports');
}

describe('where the peer port is, and that peers use the member record to find it', () => {
  it('--peer-listen defaults to the client port + 1', async () => {
    const port = await freePortPair();
    const prefix = `/loam/peer-auth-${process.pid}-${++seq}`;
    const node = await startClusterNode({ etcd: etcd.endpoints, prefix, port, peerPort: null });
    expect(node.peerPort).toBe(port + 1);
    const [member] = Object.values(await kv.getAll().prefix(`${prefix}/members/`).strings()).map((v) => JSON.parse(v) as { peerAddress?: string });
    expect(member.peerAddress).toBe(`127.0.0.1:${port + 1}`);
  });

  it('--peer-advertise is what other nodes dial: a right one works, a wrong one leaves the node unreachable to its peers only', async () => {
    const { prefix, nodes } = await cluster(1);
    const good = await startClusterNode({ etcd: etcd.endpoints, prefix, peerPort: null, args: ['--peer-listen', '127.0.0.1:0'] });
    // The peer port is only known once bound; a node restarted on it advertises it by name.
    await good.stop();
    const named = await startClusterNode({ etcd: etcd.endpoints, prefix, dataDir: good.dataDir, port: good.port, peerPort: null, args: ['--peer-listen', `127.0.0.1:${good.peerPort}`, '--peer-advertise', `localhost:${good.peerPort}`] });
    const wrong = await startClusterNode({ etcd: etcd.endpoints, prefix, args: ['--peer-advertise', '127.0.0.1:1'] });
    const c = await client(nodes[0].url);
    await waitFor(async () => (await c.backends()).length === 3, 'three members');
    const records = Object.values(await kv.getAll().prefix(`${prefix}/members/`).strings()).map((v) => JSON.parse(v) as { number: number; peerAddress?: string });
    expect(records.map((r) => r.peerAddress).sort()).toEqual([`127.0.0.1:${nodes[0].peerPort}`, '127.0.0.1:1', `localhost:${named.peerPort}`].sort());

    const doc = await c.persist(new Doc('moving'), { backend: 1 });
    await c.move(doc, 2);
    expect((await c.locate(doc)).master.number).toBe(2);
    await expect(c.move(doc, 3)).rejects.toThrow(UnavailableError); // node 2 dials 127.0.0.1:1 for node 3
    expect((await c.locate(doc)).master.number).toBe(2);
    // Its client port works all the same: it serves what it masters.
    const onWrong = await c.persist(new Doc('on node 3'), { backend: 3 });
    expect(await readBack(wrong.url, onWrong.$oid!)).toEqual({ text: 'on node 3', version: 1 });
  });
});

describe('loam node without a usable cluster secret', () => {
  it('refuses to start without --cluster-secret-file, saying how to make one', async () => {
    await expect(startClusterNode({ etcd: etcd.endpoints, prefix: '/loam/peer-auth-none', secretFile: null, env: { LOAM_CLUSTER_SECRET_FILE: '' } }))
      .rejects.toThrow(/exited with 1 before ready: loam: --cluster-secret-file \(or LOAM_CLUSTER_SECRET_FILE\) is required[^\n]*openssl rand/);
  });

  it('refuses a secret shorter than 16 bytes, and a file it cannot read', async () => {
    const short = `${tempDir()}/short`;
    fs.writeFileSync(short, 'hunter2\n');
    await expect(startClusterNode({ etcd: etcd.endpoints, prefix: '/loam/peer-auth-short', secretFile: short }))
      .rejects.toThrow(/the cluster secret in \S+ has 7 bytes; it needs at least 16/);
    await expect(startClusterNode({ etcd: etcd.endpoints, prefix: '/loam/peer-auth-missing', secretFile: `${tempDir()}/absent` }))
      .rejects.toThrow(/cannot read the cluster secret file \S+absent/);
  });
});
