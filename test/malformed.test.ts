import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Client as GrpcClient, credentials, Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { ErrorDetail, ERROR_TRAILER, CommitRequest, CommitBatchRequest, CommitBatchResponse, GetRequest, GetResponse, HelloRequest, GetAliasRequest } from '@loam/sdk/wire';
import { connect, Persistent, registerModel, type Client } from '@loam/sdk';
import { startNode, type NodeProcess } from './harness/node-process.js';

class Item extends Persistent {
  n = 0;
}
registerModel(Item, 'Malformed.Item');

let node: NodeProcess;
let raw: GrpcClient;
let client: Client;

let objectsBefore = 0;
/** loam_objects of the node under test. */
async function objectsOnNode(): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${node.metricsPort}/metrics`)).text();
  return Number(/^loam_objects (\S+)$/m.exec(text)![1]);
}

beforeAll(async () => {
  node = await startNode();
  raw = new GrpcClient(`127.0.0.1:${node.port}`, credentials.createInsecure());
  client = await connect(node.url);
  objectsBefore = await objectsOnNode();
});
afterAll(async () => {
  raw?.close();
  await client?.close();
  await node?.stop();
});

/** Sends raw bytes to a StoreService method, bypassing the SDK. */
function send(method: string, body: Buffer): Promise<{ err?: ServiceError; detail?: ReturnType<typeof ErrorDetail.decode>; reply?: Buffer }> {
  return new Promise((resolve) => {
    raw.makeUnaryRequest(`/loam.v1.StoreService/${method}`, (b: Buffer) => b, (b: Buffer) => b, body, new Metadata(), { deadline: Date.now() + 5000 }, (err, reply) => {
      if (!err) return resolve({ reply: reply as Buffer });
      const t = err.metadata?.get(ERROR_TRAILER)?.[0];
      resolve({ err, detail: t instanceof Buffer ? ErrorDetail.decode(t) : undefined });
    });
  });
}
const enc = {
  commit: (r: Partial<CommitRequest>) => Buffer.from(CommitRequest.encode(CommitRequest.fromPartial(r)).finish()),
  get: (r: Partial<GetRequest>) => Buffer.from(GetRequest.encode(GetRequest.fromPartial(r)).finish()),
};

describe('malformed requests over a raw gRPC client', () => {
  it('bytes that are not protobuf get INVALID_ARGUMENT with a typed detail', async () => {
    const { err, detail } = await send('Commit', Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]));
    expect(err?.code).toBe(status.INVALID_ARGUMENT);
    expect(detail?.code).toBe('INVALID_ARGUMENT');
  });

  it.each(([
    ['a malformed oid', { dataset: 'default', writes: [{ oid: 'xyz', className: 'A', state: Buffer.from([1]), expectedVersion: 0 }] }, 'INVALID_ARGUMENT'],
    ['an unknown dataset', { dataset: 'nope', writes: [{ oid: '0'.repeat(32), className: 'A', state: Buffer.from([1]), expectedVersion: 0 }] }, 'UNKNOWN_DATASET'],
    ['an empty class name', { dataset: 'default', writes: [{ oid: '1'.repeat(32), className: '', state: Buffer.from([1]), expectedVersion: 0 }] }, 'INVALID_ARGUMENT'],
    ['an empty commit', { dataset: 'default' }, 'INVALID_ARGUMENT'],
    ['an alias with a control character', { dataset: 'default', aliasSets: [{ alias: 'a\u0000b', oid: '2'.repeat(32) }] }, 'INVALID_ARGUMENT'],
    ['an alias on a missing object', { dataset: 'default', aliasSets: [{ alias: 'ghost', oid: '3'.repeat(32) }] }, 'NOT_FOUND'],
    ['an update of a missing object', { dataset: 'default', writes: [{ oid: '4'.repeat(32), className: 'A', state: Buffer.from([1]), expectedVersion: 3 }] }, 'WRITE_CONFLICT'],
    ['an oversized object', { dataset: 'default', writes: [{ oid: '5'.repeat(32), className: 'A', state: Buffer.alloc(5 * 1024 * 1024), expectedVersion: 0 }] }, 'LIMIT_EXCEEDED'],
  ] as [string, unknown, string][]).map(([what, req, code]) => ({ what, req, code })))('a commit with $what is refused ($code) and changes nothing', async ({ req, code }) => {
    const { err, detail } = await send('Commit', enc.commit(req as Partial<CommitRequest>));
    expect(err).toBeDefined();
    expect(detail?.code).toBe(code);
    // Nothing was written: none of the objects any case names exists, no alias was set, and the
    // node holds exactly what it held before.
    const oids = ['0'.repeat(32), '1'.repeat(32), '2'.repeat(32), '3'.repeat(32), '4'.repeat(32), '5'.repeat(32)];
    const got = await send('Get', enc.get({ dataset: 'default', oids }));
    expect(got.err).toBeUndefined();
    const res = GetResponse.decode(got.reply!);
    expect(res.objects).toEqual([]);
    expect([...res.missing].sort()).toEqual(oids);
    expect((await client.aliases()).map((a) => a.alias)).not.toContain('ghost');
    expect(await objectsOnNode()).toBe(objectsBefore);
  });

  it('a CommitBatch reports each commit on its own: a malformed one does not sink the others', async () => {
    const good = { dataset: 'default', reads: [], deletes: [], aliasSets: [], aliasDeletes: [], commitId: '', attempt: 0, writes: [{ oid: '0001' + 'c'.repeat(28), className: 'A', state: Buffer.from([1]), expectedVersion: 0, origin: '' }] };
    const bad = { ...good, writes: [{ ...good.writes[0], oid: 'nope' }] };
    const body = Buffer.from(CommitBatchRequest.encode({ commits: [bad, good] }).finish());
    const res = await new Promise<CommitBatchResponse>((resolve, reject) => raw.makeUnaryRequest('/loam.v1.StoreService/CommitBatch', (b: Buffer) => b,
      (b: Buffer) => CommitBatchResponse.decode(b), body, new Metadata(), { deadline: Date.now() + 5000 }, (e, r) => (e ? reject(e) : resolve(r!))));
    expect(res.results[0].error?.code).toBe('INVALID_ARGUMENT');
    expect(res.results[1].error).toBeUndefined();
    expect(res.results[1].versions).toEqual([1]);
    const tooMany = Buffer.from(CommitBatchRequest.encode({ commits: Array(1025).fill(good) }).finish());
    expect((await send('CommitBatch', tooMany)).detail?.code).toBe('LIMIT_EXCEEDED');
  });

  it('a get with a malformed oid or too many oids is refused', async () => {
    expect((await send('Get', enc.get({ dataset: 'default', oids: ['../../etc/passwd'] }))).detail?.code).toBe('INVALID_ARGUMENT');
    expect((await send('Get', enc.get({ dataset: 'default', oids: Array(100_001).fill('6'.repeat(32)) }))).detail?.code).toBe('LIMIT_EXCEEDED');
  });

  it('unknown methods are UNIMPLEMENTED, and the node keeps serving after all of the above', async () => {
    expect((await send('Nope', Buffer.alloc(0))).err?.code).toBe(status.UNIMPLEMENTED);
    expect((await send('Hello', Buffer.from(HelloRequest.encode({ dataset: 'default', clientVersion: 'x' }).finish()))).err).toBeUndefined();
    expect((await send('GetAlias', Buffer.from(GetAliasRequest.encode({ dataset: 'default', alias: '' }).finish()))).detail?.code).toBe('INVALID_ARGUMENT');
    const item = await client.persist(new Item());
    expect((await client.get<Item>(item.$oid!)).n).toBe(0);
  });
});
