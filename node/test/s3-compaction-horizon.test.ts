// Compaction with the S3 tier: a rewrite that drops records superseded by writes not yet in S3
// must not be named by a manifest before those writes are (its liveness horizon). Otherwise a
// restore in that window has neither the old record (dropped from the rewrite the manifest
// names) nor the new one (still only local): a flushed write is lost.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newOid } from '@loam/sdk';
import { S3ObjectStore } from '../dist/storage/s3-object-store.js';
import { FailingObjectStore } from '../dist/storage/failing-object-store.js';
import { decodeManifest } from '../dist/storage/tier/manifest.js';
import type { Engine } from '../dist/storage/engine.js';
import { startS3, type S3Server } from '../../test/harness/s3-server.js';
import { pollUntil } from '../../test/harness/wait.js';
import { engineFixture, put } from './engine-fixture.js';

let s3: S3Server;
beforeAll(async () => {
  s3 = await startS3();
});
afterAll(async () => {
  await s3?.stop();
});

const fx = engineFixture('compaction-horizon', { maxSegmentBytes: 16 * 1024 });
let n = 0;

function failing(prefix: string): FailingObjectStore {
  return new FailingObjectStore(new S3ObjectStore({
    bucket: s3.bucket, endpoint: s3.endpoint, region: s3.region,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey }, prefix,
  }));
}

/** The upload interval is long: only a flush (or compaction) makes a new segment to upload. */
async function tiered(dir: string, store: FailingObjectStore, start = true): Promise<Engine> {
  const e = await fx.open(dir, { tier: { store, node: 'n', nodeNumber: 1, uploadIntervalMs: 600_000, checkpointBytes: 0 } });
  if (start) e.tier!.start({ value: e.tier!.generationSeen + 1, current: async () => true });
  return e;
}

interface Written {
  key: string;
  body: Buffer;
  /** The objects it names, as S3 held them when it was written (GC may delete them later). */
  objects: Map<string, Buffer>;
}

/** Keeps every manifest written through it, with what it names. */
class Recording extends FailingObjectStore {
  readonly manifests: Written[] = [];

  override async create(key: string, body: Uint8Array, opts?: Parameters<FailingObjectStore['create']>[2]) {
    const info = await super.create(key, body, opts);
    if (key.includes('/manifests/')) {
      const objects = new Map<string, Buffer>();
      for (const s of decodeManifest(Buffer.from(body), key).segments) objects.set(s.key, await this.inner.get(s.key));
      this.manifests.push({ key, body: Buffer.from(body), objects });
    }
    return info;
  }
}

/** A prefix holding just this manifest and the objects it names: what a restore from it reads. */
async function alone(m: Written): Promise<string> {
  const prefix = `alone-${++n}/`;
  const to = failing(prefix);
  for (const [k, v] of m.objects) await to.create(k, v);
  await to.create(m.key, m.body);
  await to.close();
  return prefix;
}

/** The current manifest and what it names, as S3 holds them now. */
async function snapshot(store: FailingObjectStore): Promise<Written> {
  const key = (await store.inner.list('nodes/n/manifests/')).map((o) => o.key).sort().at(-1)!;
  const body = await store.inner.get(key);
  const objects = new Map<string, Buffer>();
  for (const s of decodeManifest(body, key).segments) objects.set(s.key, await store.inner.get(s.key));
  return { key, body, objects };
}

async function latest(store: FailingObjectStore): Promise<string[]> {
  const keys = (await store.inner.list('nodes/n/manifests/')).map((o) => o.key).sort();
  const m = decodeManifest(await store.inner.get(keys.at(-1)!), keys.at(-1)!);
  // Whatever it names is there (GC keeps the earlier revision it still names).
  const held = new Set((await store.inner.list('nodes/n/segments/')).map((o) => o.key));
  expect(m.segments.filter((s) => !held.has(s.key)).map((s) => s.key)).toEqual([]);
  return m.segments.map((s) => s.name);
}

const uploadedRewrites = async (store: FailingObjectStore) => (await store.inner.list('nodes/n/segments/')).filter((o) => /-\d+\.seg\.g/.test(o.key)).length;

/** Compaction, then passes until its rewrites are in S3 and a pass after that wrote what it would. */
async function compactAndUpload(e: Engine, store: FailingObjectStore, all: boolean): Promise<void> {
  const r = await e.compact({ all });
  expect(r.segments).toBeGreaterThan(0);
  await pollUntil(async () => {
    await e.tier!.kick();
    return (await uploadedRewrites(store)) > 0;
  }, 'the rewritten segment is in S3', 20_000);
  await e.tier!.kick();
  await e.tier!.kick();
}

async function read(e: Engine, oid: string): Promise<string | undefined> {
  const { objects } = await e.get('default', [oid]);
  return objects[0]?.state.toString();
}

describe('compaction and the S3 manifest', () => {
  it('a rewrite that dropped a flushed record superseded only locally is not named before the superseding write is in S3', async () => {
    const prefix = `horizon-${++n}/`;
    const store = new Recording(failing(prefix).inner);
    const e = await tiered(fx.tmp(), store);
    const o = newOid(1);
    const keep = newOid(1);
    const r = 'r '.repeat(2000);
    await e.commit({ dataset: 'default', writes: [put(o, r), put(keep, 'kept')] });
    await e.flush(); // r is in S3, named by the manifest
    // r′ stays in the active segment (the upload interval is long): only local.
    await e.commit({ dataset: 'default', writes: [put(o, 'r-prime', 1)] });
    await compactAndUpload(e, store, true);
    const named = await latest(store);
    const copy = await alone(store.manifests.at(-1)!);
    expect(e.tier!.heldForHorizon()).toBe(1);
    // Once r′ is in S3, the manifest names the rewrite (the earlier revision becomes garbage).
    await e.flush();
    expect((await latest(store)).some((x) => /-\d+\.seg$/.test(x))).toBe(true);
    expect(e.tier!.heldForHorizon()).toBe(0);
    await e.close();

    const restored = await tiered(fx.tmp(), failing(copy), false);
    expect([r, 'r-prime'], `manifest ${named.join(',')}`).toContain(await read(restored, o));
    expect(await read(restored, keep)).toBe('kept');
    const now = await tiered(fx.tmp(), failing(prefix), false);
    expect(await read(now, o)).toBe('r-prime');
    expect(await read(now, keep)).toBe('kept');
  });

  it('a segment compaction removed whole stays named until what superseded it is in S3', async () => {
    const prefix = `horizon-${++n}/`;
    const store = new Recording(failing(prefix).inner);
    const e = await tiered(fx.tmp(), store);
    const o = newOid(1);
    await e.commit({ dataset: 'default', writes: [put(o, 'first')] });
    await e.flush();
    await e.commit({ dataset: 'default', writes: [put(o, 'second', 1)] });
    await e.flush();
    await e.commit({ dataset: 'default', writes: [put(o, 'third', 2)] });
    // The segment holding 'second' is wholly dead: compaction removes it; the first one is rewritten.
    await compactAndUpload(e, store, true);
    const named = await latest(store);
    expect(named).toContain('0000000002.seg');
    const copy = await alone(store.manifests.at(-1)!);
    await e.flush();
    // 'third' is in S3: the removed segment is no longer named.
    expect(await latest(store)).not.toContain('0000000002.seg');
    expect(e.tier!.heldForHorizon()).toBe(0);
    await e.close();

    const restored = await tiered(fx.tmp(), failing(copy), false);
    expect(['second', 'third'], `manifest ${named.join(',')}`).toContain(await read(restored, o));
    const now = await tiered(fx.tmp(), failing(prefix), false);
    expect(await read(now, o)).toBe('third');
  });

  it('a delete not yet in S3: the rewrite that dropped the newest flushed version is not named, no older version comes back', async () => {
    const prefix = `horizon-${++n}/`;
    const store = failing(prefix);
    const e = await tiered(fx.tmp(), store);
    const o = newOid(1);
    // v1 sits with much live data (its segment is not worth compacting), v2 with little.
    const filler = Array.from({ length: 6 }, () => newOid(1));
    await e.commit({ dataset: 'default', writes: [put(o, 'v1'), ...filler.map((f) => put(f, 'f '.repeat(500)))] });
    await e.flush();
    const small = newOid(1);
    await e.commit({ dataset: 'default', writes: [put(o, 'v2 '.repeat(2000), 1), put(small, 'small')] });
    await e.flush();
    await e.commit({ dataset: 'default', writes: [], deletes: [{ oid: o, expectedVersion: 2 }] });
    await compactAndUpload(e, store, false);
    const named = await latest(store);
    await e.close();

    const restored = await tiered(fx.tmp(), failing(prefix), false);
    const got = await read(restored, o);
    // v2 (flushed) or the delete; never v1 (older than a flushed write).
    expect(got === undefined || got === 'v2 '.repeat(2000), `read ${got?.slice(0, 10)}, manifest ${named.join(',')}`).toBe(true);
    expect(await read(restored, small)).toBe('small');
    for (const f of filler) expect(await read(restored, f)).toBe('f '.repeat(500));
  });

  it('with the superseding segment sealed and its upload failing, no manifest written meanwhile restores without the flushed record', async () => {
    const prefix = `horizon-${++n}/`;
    const store = new Recording(failing(prefix).inner);
    const e = await tiered(fx.tmp(), store);
    const o = newOid(1);
    const keep = newOid(1);
    const r = 'r '.repeat(2000);
    await e.commit({ dataset: 'default', writes: [put(o, r), put(keep, 'kept')] });
    await e.flush();
    await e.commit({ dataset: 'default', writes: [put(o, 'r-prime', 1)] });
    expect((await e.compact({ all: true })).segments).toBeGreaterThan(0);
    // r′'s segment is sealed with the rewrite waiting too: both uploads start, only the rewrite lands.
    const stop = store.inject({ op: 'create', key: /segments\/\d{10}\.seg\.g/, action: 'fail' });
    const flushed = e.flush();
    await pollUntil(async () => store.injected.fail > 0 && (await uploadedRewrites(store)) > 0, 'the rewrite landed, the later segment refused', 20_000);
    // Two more refusals of the later segment: the pass has long handled the rewrite's landing.
    const seen = store.injected.fail;
    await pollUntil(() => store.injected.fail >= seen + 2, 'the later segment refused twice more', 30_000);
    stop();
    await flushed;
    expect(await read(e, o)).toBe('r-prime');
    await e.close();

    expect(store.manifests.length).toBeGreaterThan(1);
    for (const m of store.manifests) {
      const restored = await tiered(fx.tmp(), failing(await alone(m)), false);
      const names = decodeManifest(m.body, m.key).segments.map((s) => s.name).join(',');
      expect([r, 'r-prime'], `manifest ${m.key}: ${names}`).toContain(await read(restored, o));
      expect(await read(restored, keep)).toBe('kept');
      await restored.close();
    }
  });

  it('an alias moved to another object only locally: the rewrite that dropped its flushed target is not named', async () => {
    const prefix = `horizon-${++n}/`;
    const store = failing(prefix);
    const e = await tiered(fx.tmp(), store);
    const a = newOid(1);
    const b = newOid(1);
    const pad = 'p '.repeat(2000);
    await e.commit({ dataset: 'default', writes: [put(a, 'a'), put(b, 'b')], aliasSets: [{ alias: 'x', oid: a }] });
    await e.commit({ dataset: 'default', writes: [put(a, pad, 1)] }); // the first segment mostly dead
    await e.flush();
    await e.commit({ dataset: 'default', writes: [], aliasDeletes: ['x'] });
    await e.commit({ dataset: 'default', writes: [], aliasSets: [{ alias: 'x', oid: b }] });
    await compactAndUpload(e, store, true);
    const named = await latest(store);
    await e.close();

    const restored = await tiered(fx.tmp(), failing(prefix), false);
    expect([a, b], `manifest ${named.join(',')}`).toContain(restored.getAlias('default', 'x'));
  });

  it('a restart before the horizon is in S3 keeps naming the earlier revision, and names the rewrite once it is', async () => {
    const prefix = `horizon-${++n}/`;
    const dir = fx.tmp();
    const e = await tiered(dir, failing(prefix));
    const o = newOid(1);
    const r = 'r '.repeat(2000);
    await e.commit({ dataset: 'default', writes: [put(o, r), put(newOid(1), 'kept')] });
    await e.flush();
    await e.commit({ dataset: 'default', writes: [put(o, 'r-prime', 1)] });
    const first = failing(prefix);
    await compactAndUpload(e, first, true);
    expect(await latest(first)).toContain('0000000001.seg');
    await e.close();

    // The rewrite's horizon is not kept on disk: the restart bounds it by the log's last segment.
    const store = new Recording(failing(prefix).inner);
    const again = await tiered(dir, store);
    await pollUntil(async () => {
      await again.tier!.kick();
      return (await store.inner.list('nodes/n/segments/')).some((x) => /-1\.seg\.g2$/.test(x.key));
    }, 'the rewrite uploaded again by the new generation', 20_000);
    await again.tier!.kick();
    expect(await latest(store)).toContain('0000000001.seg');
    const before = await snapshot(store);
    await again.flush();
    expect(await latest(store)).toContain('0000000001-1.seg');
    await again.close();

    const restored = await tiered(fx.tmp(), failing(await alone(before)), false);
    expect([r, 'r-prime']).toContain(await read(restored, o));
    const now = await tiered(fx.tmp(), failing(prefix), false);
    expect(await read(now, o)).toBe('r-prime');
  });
});
