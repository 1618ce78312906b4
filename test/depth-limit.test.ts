import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Client as GrpcClient, credentials, Metadata, type ServiceError } from '@grpc/grpc-js';
import { CommitRequest, ErrorDetail, ERROR_TRAILER, MoveRequest } from '@loam/sdk/wire';
import { connect, Persistent, registerModel, LimitExceededError, DEFAULT_LIMITS, CODEC_V1, type Client } from '@loam/sdk';
import { startNode, type NodeProcess } from './harness/node-process.js';

class Box extends Persistent {
  constructor(public inner: unknown, public kid?: Box) {
    super();
  }
}
registerModel(Box, 'DepthLimit.Box');

const MAX = DEFAULT_LIMITS.maxDepth;

/** `levels` nested one-key objects around 7. */
function nest(levels: number): unknown {
  let v: unknown = 7;
  for (let i = 0; i < levels; i++) v = { a: v };
  return v;
}
function depthOf(v: unknown): number {
  let d = 0;
  while (typeof v === 'object' && v !== null) {
    d++;
    v = (v as { a?: unknown; inner?: unknown }).a ?? (v as { inner?: unknown }).inner;
  }
  return d;
}

/** A state no SDK writes: `levels` one-element arrays around 1, as a hostile client could send. */
function deepState(levels: number): Buffer {
  const b = Buffer.alloc(levels + 2, 0x91);
  b[0] = CODEC_V1;
  b[levels + 1] = 0x01;
  return b;
}

let dev: NodeProcess;
let client: Client;
let raw: GrpcClient;

beforeAll(async () => {
  // Two nodes: a node decodes object state only to follow references in a recursive move.
  dev = await startNode({ args: ['--nodes', '2'] });
  client = await connect(dev.url);
  raw = new GrpcClient(`127.0.0.1:${dev.port}`, credentials.createInsecure());
});
afterAll(async () => {
  raw?.close();
  await client?.close();
  await dev?.stop();
});

/** A StoreService call to node 1 around the SDK (and its checks): the typed error code, if any. */
function rawCall(method: string, body: Uint8Array): Promise<{ err?: ServiceError; code?: string }> {
  return new Promise((resolve) => {
    raw.makeUnaryRequest(`/loam.v1.StoreService/${method}`, (b: Buffer) => b, (b: Buffer) => b, Buffer.from(body), new Metadata(), { deadline: Date.now() + 10_000 }, (err) => {
      const t = err?.metadata?.get(ERROR_TRAILER)?.[0];
      resolve({ err: err ?? undefined, code: t instanceof Buffer ? ErrorDetail.decode(t).code : undefined });
    });
  });
}

async function rejection(p: Promise<unknown>): Promise<LimitExceededError> {
  const e = await p.then(() => undefined, (x: unknown) => x);
  expect(e).toBeInstanceOf(LimitExceededError);
  expect((e as LimitExceededError).limit).toBe('maxDepth');
  return e as LimitExceededError;
}

describe('nesting depth limit against a real node', () => {
  it('the SDK refuses to persist or save a value nested deeper than maxDepth, and writes nothing', async () => {
    const kid = new Box(1);
    const box = new Box(nest(MAX), kid); // the fields object is level 1, so this is MAX + 1
    const e = await rejection(client.persist(box, { alias: 'too-deep' }));
    expect(e.message).toMatch(/DepthLimit\.Box/);
    expect(box.$oid).toBeUndefined();
    expect(kid.$oid).toBeUndefined(); // the batch it would have created with it is rolled back
    expect(await client.aliases()).not.toContain('too-deep');

    const ok = await client.persist(new Box(nest(MAX - 1)), { alias: 'deep-ok' });
    const other = await connect(dev.url);
    try {
      expect(depthOf(await other.getByAlias<Box>('deep-ok'))).toBe(MAX);
    } finally {
      await other.close();
    }
    ok.inner = { a: ok.inner };
    await rejection(client.save(ok));
    expect(depthOf(await client.get<Box>(ok.$oid!))).toBe(MAX); // get refreshes the instance: unchanged
  });

  it.each([
    ['just past the limit', MAX + 1],
    ['far past what the stack takes', 200_000],
  ])('a hostile state %s, sent over raw gRPC: typed errors on every read of it, nothing moves, the node keeps serving', async (_what, levels) => {
    const hostile = `0001${levels.toString(16).padStart(28, 'e')}`;
    const stored = await rawCall('Commit', CommitRequest.encode(CommitRequest.fromPartial({
      dataset: 'default', writes: [{ oid: hostile, className: 'DepthLimit.Box', state: deepState(levels), expectedVersion: 0 }],
    })).finish());
    // The node stores states unread (it is the SDK's format); it decodes them only to follow references.
    expect(stored.err).toBeUndefined();
    const good = await client.persist(new Box('fine'), { backend: 1 });

    const moved = await rejection(client.move(hostile, 2, { recursive: true }));
    expect(moved.message).toContain(hostile);
    // One request moving a good object with it: refused before anything is locked or copied.
    const both = await rawCall('Move', MoveRequest.encode({ dataset: 'default', oids: [good.$oid!, hostile], target: 2, recursive: true }).finish());
    expect(both.code).toBe('LIMIT_EXCEEDED');
    expect((await client.locate(good)).master.number).toBe(1);
    await rejection(client.replicate(hostile, 2, { recursive: true }));
    await rejection(client.get(hostile)); // the SDK refuses it too, rather than overflow

    const where = await client.locate(hostile);
    expect(where.master.number).toBe(1);
    expect(where.replicas).toEqual([]);
    // A non-recursive move reads no state: it works, and back again.
    await client.move(hostile, 2);
    expect((await client.locate(hostile)).master.number).toBe(2);
    await client.move(hostile, 1);

    expect(dev.child.exitCode).toBeNull();
    expect((await client.get<Box>(good.$oid!)).inner).toBe('fine');
    // Refused as LIMIT_EXCEEDED, never an INTERNAL error (which the node logs at error level).
    expect(dev.logs.filter((l) => Number(l.level) >= 50)).toEqual([]);
  });
});
