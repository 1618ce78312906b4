import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Metadata, Server, ServerCredentials, credentials } from '@grpc/grpc-js';
import { NodeServiceClient, NodeServiceService, UnavailableError, type NodeServiceServer } from '@loam/sdk/wire';
import { NodeMetrics } from '../dist/metrics.js';
import { createLogger } from '../dist/logger.js';
import { methodMaker, unary } from '../dist/rpc-handler.js';
import { LinkServer } from '../dist/link-server.js';
import { PeerLink } from '../dist/cluster/peer-link.js';
import { Peers } from '../dist/cluster/peers.js';
import { ClusterSecret, SECRET_METADATA_KEY, type RefusedReason } from '../dist/cluster/peer-auth.js';

// The cluster secret over a real gRPC server and channel: the interceptor pair, the Link and the
// unary path, and the error a refused node sees. (Node processes: test/peer-auth.test.ts.)

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function secretFile(content: string | Buffer): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'loam-secret-unit-'));
  cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'secret');
  fs.writeFileSync(file, content);
  return file;
}

/** A peer server requiring `secret`: its handlers count the calls that reach them. */
async function serve(secret: ClusterSecret) {
  const reached: string[] = [];
  const refused: RefusedReason[] = [];
  const method = methodMaker(new NodeMetrics(() => undefined), createLogger('silent'));
  const links = new LinkServer({
    prepare: method('Prepare', () => (reached.push('prepare'), { versions: [], replicated: false, finished: '' })),
    finish: method('Finish', () => (reached.push('finish'), {})),
    installReplicas: method('InstallReplicas', () => ({})),
    dropReplicas: method('DropReplicas', () => ({})),
  }, createLogger('silent'));
  const server = new Server({ interceptors: [secret.serverInterceptor((r) => refused.push(r))] });
  server.addService(NodeServiceService, {
    link: links.handle,
    install: unary(method('Install', () => (reached.push('install'), {}))),
  } as unknown as NodeServiceServer);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  cleanups.push(() => server.forceShutdown());
  return { port, reached, refused };
}

function peers(secret: ClusterSecret): Peers {
  const p = new Peers(secret, 5_000);
  cleanups.push(() => p.close());
  return p;
}

describe('the cluster secret', () => {
  it('is read from a file without its trailing newline; shorter than 16 bytes is refused', () => {
    const a = ClusterSecret.fromFile(secretFile('0123456789abcdef0123\n'));
    const md = new Metadata();
    md.set(SECRET_METADATA_KEY, Buffer.from('0123456789abcdef0123'));
    expect(a.check(md)).toBeUndefined();
    expect(() => ClusterSecret.fromFile(secretFile('short \n'))).toThrow(/has 5 bytes; it needs at least 16/);
    expect(() => ClusterSecret.fromFile('/nonexistent/loam-secret')).toThrow(/cannot read the cluster secret file \/nonexistent\/loam-secret/);
  });

  it('check(): missing, a wrong value of any length, or two values are refused', () => {
    const s = ClusterSecret.fromFile(secretFile('the right secret, long enough'));
    const md = (...values: Buffer[]) => {
      const m = new Metadata();
      for (const v of values) m.add(SECRET_METADATA_KEY, v);
      return m;
    };
    expect(s.check(md())).toBe('missing');
    expect(s.check(md(Buffer.from('x')))).toBe('wrong');
    expect(s.check(md(Buffer.alloc(4096, 1)))).toBe('wrong');
    expect(s.check(md(Buffer.from('the right secret, long enough!')))).toBe('wrong');
    expect(s.check(md(Buffer.from('the right secret, long enough'), Buffer.from('the right secret, long enough')))).toBe('wrong');
    expect(s.check(md(Buffer.from('the right secret, long enough')))).toBeUndefined();
  });

  it('with the same secret, Link and unary calls reach their handlers', async () => {
    const secret = ClusterSecret.random();
    const { port, reached, refused } = await serve(secret);
    const p = peers(secret);
    const to = { number: 2, address: 'unused', peerAddress: `127.0.0.1:${port}` };
    await p.prepare(to, { txid: 'a'.repeat(32), coordinator: 1, ops: undefined });
    await p.finish(to, { txid: 'a'.repeat(32), commit: false });
    await p.install(to, { dataset: 'default', objects: [], replicaSets: [], source: 0 });
    expect(reached).toEqual(['prepare', 'finish', 'install']);
    expect(refused).toEqual([]);
  });

  it('with another secret, every call fails with an UnavailableError that names the cause, and reaches no handler', async () => {
    const { port, reached, refused } = await serve(ClusterSecret.random());
    const p = peers(ClusterSecret.random());
    const to = { number: 2, address: 'unused', peerAddress: `127.0.0.1:${port}` };
    for (const call of [
      () => p.prepare(to, { txid: 'a'.repeat(32), coordinator: 1, ops: undefined }), // on the Link
      () => p.install(to, { dataset: 'default', objects: [], replicaSets: [], source: 0 }), // unary
    ]) {
      const err = await call().then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(UnavailableError);
      expect((err as Error).message).toMatch(new RegExp(`the node at 127\\.0\\.0\\.1:${port} refused this node's call: the cluster secrets differ`));
    }
    expect(reached).toEqual([]);
    expect(refused).toEqual(['wrong', 'wrong']);
  });

  it('a channel without the interceptor (a plain client) is refused as missing, on the Link too', async () => {
    const { port, reached, refused } = await serve(ClusterSecret.random());
    const client = new NodeServiceClient(`127.0.0.1:${port}`, credentials.createInsecure());
    const link = new PeerLink(client, `127.0.0.1:${port}`, 5_000);
    cleanups.push(() => (link.close(), client.close()));
    await expect(link.call('finish', { txid: 'a'.repeat(32), commit: true })).rejects.toThrow(/cluster secrets differ/);
    expect(reached).toEqual([]);
    expect(refused).toEqual(['missing']);
  });

  it('a member record without a peer address fails the call typed, without throwing synchronously', async () => {
    const p = peers(ClusterSecret.random());
    const pending = p.finish({ number: 7, address: '10.0.0.7:7480' }, { txid: 'a'.repeat(32), commit: true });
    await expect(pending).rejects.toBeInstanceOf(UnavailableError);
    await expect(pending).rejects.toThrow(/node 7 \(10\.0\.0\.7:7480\) has no peer address in its member record/);
  });
});
