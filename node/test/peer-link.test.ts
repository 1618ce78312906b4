import { afterEach, describe, expect, it } from 'vitest';
import { Server, ServerCredentials, credentials } from '@grpc/grpc-js';
import {
  DeadlineExceededError, UnavailableError, WriteConflictError,
  NodeServiceClient, NodeServiceService, type NodeServiceServer, type PeerResponse,
} from '@loam/sdk/wire';
import { NodeMetrics } from '../dist/metrics.js';
import { createLogger } from '../dist/logger.js';
import { methodMaker } from '../dist/rpc-handler.js';
import { LinkServer } from '../dist/link-server.js';
import { PeerLink } from '../dist/cluster/peer-link.js';
import { waitFor } from '../../test/harness/node-process.js';

// The Link stream end to end over a real gRPC server and channel; only the methods behind it
// are stand-ins (the 2PC and replica paths through it are covered by test/two-phase and cluster).

type Handlers = { prepare?: (req: any) => unknown; finish?: (req: any) => unknown };

function deferred<T = void>() {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function serve(h: Handlers, port = 0) {
  const method = methodMaker(new NodeMetrics(), createLogger('silent'));
  const links = new LinkServer({
    prepare: method('Prepare', (req: any) => h.prepare?.(req) ?? { versions: [], finished: '' }),
    finish: method('Finish', (req: any) => h.finish?.(req) ?? {}),
    installReplicas: method('InstallReplicas', () => ({})),
    dropReplicas: method('DropReplicas', () => ({})),
  }, createLogger('silent'));
  const server = new Server();
  server.addService(NodeServiceService, { link: links.handle } as unknown as NodeServiceServer);
  const bound = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`127.0.0.1:${port}`, ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  cleanups.push(() => server.forceShutdown());
  return { server, links, port: bound };
}

function connectLink(port: number, deadlineMs = 10_000) {
  const client = new NodeServiceClient(`127.0.0.1:${port}`, credentials.createInsecure(), { 'grpc.initial_reconnect_backoff_ms': 100, 'grpc.max_reconnect_backoff_ms': 200 });
  const link = new PeerLink(client, `127.0.0.1:${port}`, deadlineMs);
  cleanups.push(() => {
    link.close();
    client.close();
  });
  return { client, link };
}

describe('node-to-node Link stream', () => {
  it('answers calls by id, in the order they complete', async () => {
    const slow = deferred();
    const { port } = await serve({ prepare: async () => (await slow.promise, { versions: [7, 8], finished: '' }) });
    const { link } = connectLink(port);
    const order: string[] = [];
    const p = link.call('prepare', { txid: 'a'.repeat(32), coordinator: 1, ops: undefined }).then((r) => (order.push('prepare'), r));
    const f = link.call('finish', { txid: 'b'.repeat(32), commit: true }).then((r) => (order.push('finish'), r));
    expect(await f).toEqual({});
    slow.resolve();
    expect(await p).toEqual({ versions: [7, 8], replicated: false, finished: '', deletesAway: false });
    expect(order).toEqual(['finish', 'prepare']);
  });

  it('carries typed errors with their fields', async () => {
    const { port } = await serve({ prepare: () => { throw new WriteConflictError('changed', { oid: 'c'.repeat(32), expectedVersion: 3, actualVersion: 4 }); } });
    const { link } = connectLink(port);
    const err = await link.call('prepare', { txid: 'a'.repeat(32), coordinator: 1, ops: undefined }).catch((e) => e);
    expect(err).toBeInstanceOf(WriteConflictError);
    expect(err).toMatchObject({ oid: 'c'.repeat(32), expectedVersion: 3, actualVersion: 4 });
  });

  it('a closing server answers its running calls, refuses new ones, and shuts down gracefully', async () => {
    const slow = deferred();
    const started = deferred();
    const { server, links, port } = await serve({ finish: async () => (started.resolve(), await slow.promise, {}) });
    const { link } = connectLink(port);
    const running = link.call('finish', { txid: 'a'.repeat(32), commit: true });
    await started.promise;
    links.close();
    const shutdown = new Promise<string>((resolve) => server.tryShutdown(() => resolve('graceful')));
    slow.resolve();
    expect(await running).toEqual({});
    // tryShutdown waits for every open call: it completes only because the link stream ended.
    const forced = new Promise<string>((resolve) => setTimeout(() => resolve('stuck'), 20_000).unref());
    expect(await Promise.race([shutdown, forced])).toBe('graceful');
    await expect(link.call('finish', { txid: 'b'.repeat(32), commit: true })).rejects.toBeInstanceOf(UnavailableError);
  });

  it('fails calls in flight with UNAVAILABLE when the node goes away, and reconnects when it is back', async () => {
    const never = deferred();
    const first = await serve({ prepare: async () => (await never.promise, { versions: [] }) });
    const { link } = connectLink(first.port);
    const started = link.call('prepare', { txid: 'a'.repeat(32), coordinator: 1, ops: undefined });
    await link.call('finish', { txid: 'b'.repeat(32), commit: false }); // the stream is open and serving
    first.server.forceShutdown();
    await expect(started).rejects.toBeInstanceOf(UnavailableError);
    await serve({}, first.port);
    await waitFor(async () => {
      const r = await link.call('finish', { txid: 'c'.repeat(32), commit: true }).then(() => 'ok', (e) => e);
      if (r !== 'ok') expect(r).toBeInstanceOf(UnavailableError);
      return r === 'ok';
    }, 'the link to reconnect to the restarted server');
  });

  it('a call past its deadline fails typed and the link keeps working', async () => {
    const never = deferred();
    let calls = 0;
    const { port } = await serve({ prepare: async () => (++calls === 1 ? await never.promise : undefined, { versions: [1], finished: '' }) });
    const { link } = connectLink(port, 300);
    await expect(link.call('prepare', { txid: 'a'.repeat(32), coordinator: 1, ops: undefined })).rejects.toBeInstanceOf(DeadlineExceededError);
    expect(await link.call('prepare', { txid: 'b'.repeat(32), coordinator: 1, ops: undefined })).toEqual({ versions: [1], replicated: false, finished: '', deletesAway: false });
  });

  it('a slow call on a live link times out alone: the calls around it are not failed', async () => {
    const never = deferred();
    const release = deferred();
    let calls = 0;
    const { port } = await serve({ prepare: async () => (++calls === 1 ? await never.promise : await release.promise, { versions: [calls] }) });
    const { link } = connectLink(port, 10_000);
    const slow = link.call('prepare', { txid: 'a'.repeat(32), coordinator: 1, ops: undefined }, 300);
    const waiting = link.call('prepare', { txid: 'b'.repeat(32), coordinator: 1, ops: undefined });
    expect(await link.call('finish', { txid: 'c'.repeat(32), commit: true })).toEqual({}); // the link answers
    await expect(slow).rejects.toBeInstanceOf(DeadlineExceededError);
    release.resolve();
    expect(await waiting).toMatchObject({ versions: [2] }); // same stream, not reset
  });

  it('a message without a call gets a typed INVALID_ARGUMENT answer', async () => {
    const { port } = await serve({});
    const { client } = connectLink(port);
    const stream = client.link();
    stream.on('error', () => undefined); // cancelled by the cleanup's client.close()
    const answer = new Promise<PeerResponse>((resolve) => stream.once('data', resolve));
    stream.write({ id: 42 });
    const res = await answer;
    stream.end();
    expect(res.id).toBe(42);
    expect(res.error?.code).toBe('INVALID_ARGUMENT');
  });
});
