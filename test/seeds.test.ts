import net from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { connect, UnavailableError, type Client } from '@loam/sdk';
import { startEtcd, type EtcdCluster } from './harness/etcd.js';
import { startClusterNode, startNode, waitFor, type NodeProcess } from './harness/node-process.js';

/**
 * Seeds that do not answer: a closed loopback port (refused at once, retried by a client until
 * its timeout) and a port that accepts TCP but never speaks HTTP/2 (a hung node). Neither may
 * cost a client more than one timeout in all, however many of them come before a live node.
 */

/** A loopback port nothing listens on: bound once by us, then closed. */
async function closedPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

/** Accepts connections and never answers (models a frozen node); counts the sockets left open. */
interface Hung { port: number; open: Set<net.Socket>; accepted: number; close(): Promise<void> }
async function hungServer(): Promise<Hung> {
  const open = new Set<net.Socket>();
  const h: Hung = {
    port: 0, open, accepted: 0,
    close: () => new Promise<void>((r) => {
      for (const s of open) s.destroy();
      srv.close(() => r());
    }),
  };
  const srv = net.createServer((s) => {
    h.accepted++;
    open.add(s);
    s.resume(); // reads (so it sees the client hang up) and never answers
    s.on('close', () => open.delete(s));
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  h.port = (srv.address() as net.AddressInfo).port;
  return h;
}

const url = (port: number) => `loam://127.0.0.1:${port}/default`;
const hung: Hung[] = [];
const clients: Client[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) await c.close();
  for (const h of hung.splice(0)) await h.close();
});

describe('connect() with dead seeds', () => {
  let live: NodeProcess;
  beforeAll(async () => {
    live = await startNode();
  });

  it('probes the seeds in parallel: dead and hung seeds before a live one cost nothing like a timeout each', async () => {
    const h = await hungServer();
    hung.push(h);
    const seeds = [url(await closedPort()), url(h.port), url(await closedPort()), live.url];
    const t0 = Date.now();
    const c = await connect(seeds, { connectTimeoutMs: 5000 });
    clients.push(c);
    const took = Date.now() - t0;
    expect(took).toBeLessThan(2500); // sequentially: 3 x 5 s
    expect(c.url).toBe(live.url); // the client works through the seed that answered
    expect((await c.backends()).map((b) => b.number)).toEqual([1]);
    // The probe of the hung seed reached it, and is closed once another seed answered.
    await waitFor(() => h.accepted > 0, 'the hung seed to be probed', 5000);
    await waitFor(() => h.open.size === 0, 'the connection to the hung seed to be closed', 5000);
  });

  it('all seeds dead: a typed UnavailableError within about one timeout, not one per seed', async () => {
    const h = await hungServer();
    hung.push(h);
    const seeds = [url(await closedPort()), url(h.port), url(await closedPort()), url(await closedPort())];
    const t0 = Date.now();
    const err = await connect(seeds, { connectTimeoutMs: 2000 }).catch((e: unknown) => e);
    const took = Date.now() - t0;
    expect(err).toBeInstanceOf(UnavailableError);
    expect((err as Error).message).toContain(`127.0.0.1:${h.port}`); // names the seeds it tried
    expect(took).toBeGreaterThanOrEqual(1900); // a refused port is retried (a node may be starting)
    expect(took).toBeLessThan(3500); // sequentially: 4 x 2 s
    await waitFor(() => h.open.size === 0, 'the connection to the hung seed to be closed', 5000);
  });

  it('a seed that starts listening during the timeout is found', async () => {
    // A node restarting at its address: refused at first, then answering.
    const port = await closedPort();
    const pending = connect(url(port), { connectTimeoutMs: 15_000 });
    const node = await startNode({ args: ['--port', String(port)] });
    const c = await pending;
    clients.push(c);
    expect(c.url).toBe(node.url);
  });
});

describe('the client asks another node when the one it reached first hangs', () => {
  let etcd: EtcdCluster;
  beforeAll(async () => {
    etcd = await startEtcd({ members: 1 });
  });

  it('backends() answers from another member well within one deadline while the seed is frozen', async () => {
    const prefix = `/loam/seeds-${process.pid}`;
    const nodes = [await startClusterNode({ etcd: etcd.endpoints, prefix }), await startClusterNode({ etcd: etcd.endpoints, prefix })];
    const c = await connect(nodes[0].url, { deadlineMs: 10_000 });
    clients.push(c);
    expect((await c.backends()).map((b) => b.number)).toEqual([1, 2]); // learns node 2
    nodes[0].child.kill('SIGSTOP');
    try {
      const t0 = Date.now();
      const list = await c.backends();
      expect(Date.now() - t0).toBeLessThan(3000); // waiting on the seed alone: the 10 s deadline
      expect(list.map((b) => b.number)).toContain(2);
    } finally {
      nodes[0].child.kill('SIGCONT');
    }
  });
});
