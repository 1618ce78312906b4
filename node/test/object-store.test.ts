// The object-store seam against a real S3 server (versitygw, test/harness/s3-server.ts), never
// a mock: the contract of ObjectStore as S3ObjectStore implements it, outages, in-place
// corruption, a reply lost on the network, and the failing wrapper for fault tests.
import fs from 'node:fs';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ObjectExistsError,
  ObjectNotFoundError,
  ObjectStorePermanentError,
  ObjectStoreUnavailableError,
  type ObjectStore,
} from '../dist/storage/object-store.js';
import { S3ObjectStore, type S3ObjectStoreOptions } from '../dist/storage/s3-object-store.js';
import { FailingObjectStore } from '../dist/storage/failing-object-store.js';
import { startS3, type S3Server } from '../../test/harness/s3-server.js';

let s3: S3Server;
const stores: ObjectStore[] = [];
let n = 0;

beforeAll(async () => {
  s3 = await startS3();
});
afterAll(async () => {
  for (const s of stores) await s.close();
  await s3?.stop();
});

/** A store on the test server, under a prefix of its own (so tests do not see each other's keys). */
function store(opts: Partial<S3ObjectStoreOptions> = {}): S3ObjectStore {
  const s = new S3ObjectStore({
    bucket: s3.bucket,
    endpoint: s3.endpoint,
    region: s3.region,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
    prefix: `t${++n}/`,
    ...opts,
  });
  stores.push(s);
  return s;
}

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected the call to reject');
}

/** Runs `fn` and returns how long it took, in ms. */
async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

describe('ObjectStore contract on versitygw (S3ObjectStore)', () => {
  it('create refuses an existing key with ObjectExistsError and leaves the object unchanged', async () => {
    const st = store();
    const body = randomBytes(1000);
    const info = await st.create('seg/1', body);
    expect(info.size).toBe(1000);
    expect(info.etag).toMatch(/^[0-9a-f]{32}$/);

    const e = await rejection(st.create('seg/1', Buffer.from('something else')));
    expect(e).toBeInstanceOf(ObjectExistsError);
    expect((e as ObjectExistsError).op).toBe('create');
    expect((e as ObjectExistsError).key).toBe('seg/1');
    expect(Buffer.compare(await st.get('seg/1'), body)).toBe(0);
    expect(await st.head('seg/1')).toEqual(info);
    expect(Buffer.compare(fs.readFileSync(s3.objectPath(`${st.prefix}seg/1`)), body)).toBe(0);

    // Racing creates of one key: exactly one wins, the store holds the winner's bytes.
    const bodies = Array.from({ length: 5 }, () => randomBytes(64 * 1024));
    const results = await Promise.allSettled(bodies.map((b) => st.create('race', b)));
    const won = results.flatMap((r, i) => (r.status === 'fulfilled' ? [i] : []));
    expect(won).toHaveLength(1);
    for (const r of results) if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(ObjectExistsError);
    expect(Buffer.compare(await st.get('race'), bodies[won[0]!]!)).toBe(0);
  });

  it('reads a whole object, a byte range (cut short at the end) and a suffix; a range past the end is InvalidRange', async () => {
    const st = store();
    const body = randomBytes(10_000);
    await st.create('obj', body);
    expect(Buffer.compare(await st.get('obj'), body)).toBe(0);
    expect(Buffer.compare(await st.get('obj', { offset: 1234, length: 500 }), body.subarray(1234, 1734))).toBe(0);
    expect(Buffer.compare(await st.get('obj', { offset: 0, length: 1 }), body.subarray(0, 1))).toBe(0);
    expect(Buffer.compare(await st.get('obj', { offset: 9_990, length: 100 }), body.subarray(9_990))).toBe(0);
    expect(Buffer.compare(await st.get('obj', { suffix: 16 }), body.subarray(10_000 - 16))).toBe(0);
    expect(Buffer.compare(await st.get('obj', { suffix: 20_000 }), body)).toBe(0);
    expect((await st.get('obj', { offset: 5, length: 0 })).length).toBe(0);
    for (const offset of [10_000, 50_000]) {
      const e = await rejection(st.get('obj', { offset, length: 10 }));
      expect(e).toBeInstanceOf(ObjectStorePermanentError);
      expect((e as ObjectStorePermanentError).code).toBe('InvalidRange');
    }
    await st.create('empty', Buffer.alloc(0));
    expect((await st.get('empty')).length).toBe(0);
    expect(await st.head('empty')).toMatchObject({ size: 0 });
  });

  it('get and head of a missing key reject with ObjectNotFoundError; other failures are typed too', async () => {
    const st = store();
    for (const call of [() => st.get('missing'), () => st.get('missing', { offset: 0, length: 10 }), () => st.head('missing')]) {
      expect(await rejection(call())).toBeInstanceOf(ObjectNotFoundError);
    }
    const noBucket = store({ bucket: 'no-such-bucket-here' });
    const e = await rejection(noBucket.get('x'));
    expect(e).toBeInstanceOf(ObjectStorePermanentError);
    expect((e as ObjectStorePermanentError).code).toBe('NoSuchBucket');
    const badKey = store({ credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: 'not-the-secret' } });
    const denied = await rejection(badKey.get('x'));
    expect(denied).toBeInstanceOf(ObjectStorePermanentError);
    expect((denied as ObjectStorePermanentError).status).toBe(403);
    expect(await rejection(st.create('', Buffer.from('x')))).toBeInstanceOf(ObjectStorePermanentError);
  });

  it('lists by prefix in key order across pages, with startAfter, without the store prefix', async () => {
    const st = store({ listPageSize: 2 }); // 7 keys: 4 pages
    const keys = ['seg/0003', 'seg/0001', 'seg/0010', 'seg/0002', 'seg/0007', 'seg/0005', 'seg/0004'];
    const bodies = new Map(keys.map((k, i) => [k, randomBytes(100 + i)]));
    for (const [k, b] of bodies) await st.create(k, b);
    await st.create('manifest/0001', Buffer.from('m'));
    await store().create('seg/0009', Buffer.from('another prefix')); // another store prefix: never listed

    const listed = await st.list('seg/');
    expect(listed.map((e) => e.key)).toEqual([...keys].sort());
    for (const e of listed) expect(e.size).toBe(bodies.get(e.key)!.length);
    expect((await st.list('seg/', { startAfter: 'seg/0004' })).map((e) => e.key)).toEqual(['seg/0005', 'seg/0007', 'seg/0010']);
    expect((await st.list('')).length).toBe(8);
    expect(await st.list('nothing/')).toEqual([]);
  });

  it('deletes keys in batches (missing keys are no error); a deleted key can be created again', async () => {
    const st = store();
    for (let i = 0; i < 5; i++) await st.create(`k${i}`, Buffer.from(`v${i}`));
    await st.delete(['k0', 'k1', 'k2', 'never-was']);
    expect((await st.list('')).map((e) => e.key)).toEqual(['k3', 'k4']);
    expect(await rejection(st.get('k1'))).toBeInstanceOf(ObjectNotFoundError);
    await st.delete([]);
    await st.create('k1', Buffer.from('again'));
    expect((await st.get('k1')).toString()).toBe('again');
  });

  it('in-place corruption under the server is served as is (checksums must catch it), ETag unchanged', async () => {
    const st = store();
    const body = randomBytes(4096);
    const info = await st.create('seg', body);
    s3.corrupt(`${st.prefix}seg`, 100, 3);
    const got = await st.get('seg');
    expect(got.length).toBe(body.length);
    const differ = [...got.keys()].filter((i) => got[i] !== body[i]);
    expect(differ).toEqual([100, 101, 102]);
    expect(await st.head('seg')).toEqual(info);
    const range = await st.get('seg', { offset: 96, length: 8 });
    expect(Buffer.compare(range, body.subarray(96, 104))).not.toBe(0);
    expect(Buffer.compare(range.subarray(0, 4), body.subarray(96, 100))).toBe(0);
  });
});

describe('S3ObjectStore when the server is down, hung, or a reply is lost', () => {
  it('a stopped server gives ObjectStoreUnavailableError within a bounded time (outcome known: refused); after a restart it works', async () => {
    const st = store();
    await st.create('before', Buffer.from('kept'));
    await s3.kill();
    try {
      for (const call of [() => st.get('before'), () => st.head('before'), () => st.list(''), () => st.create('new', Buffer.from('x')), () => st.delete(['before'])]) {
        let err: Error | undefined;
        const ms = await timed(async () => {
          err = await rejection(call());
        });
        expect(err).toBeInstanceOf(ObjectStoreUnavailableError);
        expect((err as ObjectStoreUnavailableError).code).toBe('ECONNREFUSED');
        expect((err as ObjectStoreUnavailableError).outcomeUnknown).toBe(false);
        expect(ms).toBeLessThan(3000); // 4 attempts with jittered backoff: a few hundred ms
      }
    } finally {
      await s3.restart();
    }
    expect((await st.get('before')).toString()).toBe('kept');
    await st.create('new', Buffer.from('x'));
    expect((await st.list('')).map((e) => e.key)).toEqual(['before', 'new']);
  });

  it('a hung server times out as ObjectStoreUnavailableError, a create with an unknown outcome', async () => {
    const st = store({ requestTimeoutMs: 600, idleTimeoutMs: 600, maxAttempts: 2 });
    await st.create('x', Buffer.from('x'));
    await s3.freeze();
    try {
      let err: Error | undefined;
      const ms = await timed(async () => {
        err = await rejection(st.create('y', randomBytes(1000)));
      });
      expect(err).toBeInstanceOf(ObjectStoreUnavailableError);
      expect(['TimeoutError', 'ETIMEDOUT']).toContain((err as ObjectStoreUnavailableError).code);
      expect((err as ObjectStoreUnavailableError).outcomeUnknown).toBe(true);
      expect(ms).toBeLessThan(4000);
      expect(await rejection(st.get('x'))).toBeInstanceOf(ObjectStoreUnavailableError);
    } finally {
      await s3.thaw();
    }
    expect((await st.get('x')).toString()).toBe('x');
  });

  it('a create whose reply was lost is retried by the SDK and resolves: the object holds exactly its bytes', async () => {
    // A TCP proxy in front of the server that cuts the connection when the next answer starts
    // (the request has been applied by then): the network losing a reply, not a fake server.
    let cutNext = false;
    let cuts = 0;
    const conns = new Set<net.Socket>();
    const proxy = net.createServer((client) => {
      const upstream = net.connect(s3.port, '127.0.0.1');
      conns.add(client).add(upstream);
      const drop = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on('error', drop).on('close', drop);
      upstream.on('error', drop).on('close', drop);
      client.pipe(upstream);
      upstream.on('data', (d: Buffer) => {
        if (cutNext) {
          cutNext = false;
          cuts++;
          client.resetAndDestroy();
          upstream.destroy();
          return;
        }
        client.write(d);
      });
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    try {
      const port = (proxy.address() as net.AddressInfo).port;
      const ops: string[] = [];
      const st = store({ endpoint: `http://127.0.0.1:${port}`, observe: (e) => ops.push(e.op) });
      const body = randomBytes(100_000);
      cutNext = true;
      const info = await st.create('seg', body);
      expect(cuts).toBe(1);
      expect(ops).toEqual(['head', 'create']); // the retry met 412 and checked the stored object
      expect(info.size).toBe(body.length);
      expect(Buffer.compare(await st.get('seg'), body)).toBe(0);
      // Another writer's bytes under a taken key are still refused, retried or not.
      cutNext = true;
      expect(await rejection(st.create('seg', randomBytes(100_000)))).toBeInstanceOf(ObjectExistsError);
      expect(Buffer.compare(await st.get('seg'), body)).toBe(0);
    } finally {
      for (const c of conns) c.destroy();
      await new Promise((r) => proxy.close(r));
    }
  });
});

describe('FailingObjectStore (fault injection over the real store)', () => {
  it('fails before the call (nothing applied), after it (applied, outcome unknown), per op and key pattern, after/times', async () => {
    const inner = store();
    const st = new FailingObjectStore(inner);
    st.inject({ op: 'create', key: 'seg/', action: 'fail', times: 1 });
    const e1 = await rejection(st.create('seg/1', Buffer.from('a')));
    expect(e1).toBeInstanceOf(ObjectStoreUnavailableError);
    expect((e1 as ObjectStoreUnavailableError).outcomeUnknown).toBe(false);
    expect(await rejection(inner.head('seg/1'))).toBeInstanceOf(ObjectNotFoundError);
    await st.create('seg/1', Buffer.from('a')); // times: 1 is used up
    await st.create('manifest', Buffer.from('m')); // another key: never matched

    st.inject({ op: 'create', key: /^seg\/\d+$/, action: 'fail-after', after: 1, times: 1 });
    await st.create('seg/2', Buffer.from('b')); // after: 1 lets the first through
    const e2 = await rejection(st.create('seg/3', Buffer.from('c')));
    expect(e2).toBeInstanceOf(ObjectStoreUnavailableError);
    expect((e2 as ObjectStoreUnavailableError).outcomeUnknown).toBe(true);
    expect((await inner.get('seg/3')).toString()).toBe('c'); // it was applied
    expect(await rejection(st.create('seg/3', Buffer.from('c')))).toBeInstanceOf(ObjectExistsError);

    const remove = st.inject({ op: ['get', 'head'], action: 'fail', error: (op, key) => new ObjectStorePermanentError(`${op} ${key}: injected`, op, key, 'AccessDenied', 403) });
    expect(await rejection(st.get('seg/1'))).toBeInstanceOf(ObjectStorePermanentError);
    expect(await rejection(st.head('seg/1'))).toBeInstanceOf(ObjectStorePermanentError);
    expect((await st.list('seg/')).map((e) => e.key)).toEqual(['seg/1', 'seg/2', 'seg/3']);
    remove();
    expect((await st.get('seg/1')).toString()).toBe('a');

    st.inject({ op: 'delete', key: 'seg/2', action: 'fail-after', times: 1 });
    expect(await rejection(st.delete(['seg/1', 'seg/2']))).toBeInstanceOf(ObjectStoreUnavailableError);
    expect((await inner.list('seg/')).map((e) => e.key)).toEqual(['seg/3']); // applied
    expect(st.calls).toMatchObject({ create: 6, get: 2, head: 1, list: 1, delete: 1 });
    expect(st.injected).toMatchObject({ fail: 3, 'fail-after': 2 });
  });

  it('delays a call (and a delayed call aborts with its signal); corrupts the bytes a get returns', async () => {
    const inner = store();
    const st = new FailingObjectStore(inner);
    const body = randomBytes(1000);
    await st.create('seg', body);

    st.inject({ op: 'get', action: 'delay', ms: 300, times: 1 });
    expect(await timed(() => st.get('seg'))).toBeGreaterThanOrEqual(290);

    st.inject({ op: 'head', action: 'delay', ms: Infinity, times: 1 });
    const ac = new AbortController();
    const pending = rejection(st.head('seg', { signal: ac.signal }));
    ac.abort(new Error('gave up'));
    expect((await pending).message).toBe('gave up');

    // Delay, then fail: faults compose in injection order.
    st.inject({ op: 'list', action: 'delay', ms: 100, times: 1 });
    st.inject({ op: 'list', action: 'fail', times: 1 });
    let err: Error | undefined;
    expect(await timed(async () => (err = await rejection(st.list(''))))).toBeGreaterThanOrEqual(90);
    expect(err).toBeInstanceOf(ObjectStoreUnavailableError);

    st.inject({ op: 'get', key: 'seg', action: 'corrupt', offset: 10, bytes: 2, times: 1 });
    const bad = await st.get('seg');
    expect([...bad.keys()].filter((i) => bad[i] !== body[i])).toEqual([10, 11]);
    expect(Buffer.compare(await st.get('seg'), body)).toBe(0); // times: 1; the stored object is intact
    expect(Buffer.compare(await inner.get('seg'), body)).toBe(0);
    expect(() => st.inject({ op: 'create', action: 'corrupt' })).toThrow(/get only/);
  });
});
