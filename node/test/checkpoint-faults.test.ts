// Index checkpoints under S3 faults, in process: the engine and its S3 tier on a real versitygw
// through FailingObjectStore (the fault seam), as a node would run them.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newOid } from '@loam/sdk';
import { ObjectStorePermanentError } from '../dist/storage/object-store.js';
import { S3ObjectStore } from '../dist/storage/s3-object-store.js';
import { FailingObjectStore } from '../dist/storage/failing-object-store.js';
import type { Engine } from '../dist/storage/engine.js';
import { startS3, type S3Server } from '../../test/harness/s3-server.js';
import { engineFixture, put } from './engine-fixture.js';

let s3: S3Server;
beforeAll(async () => {
  s3 = await startS3();
});
afterAll(async () => {
  await s3?.stop();
});

const fx = engineFixture('checkpoint-faults', { maxSegmentBytes: 16 * 1024 });
let n = 0;

function failing(prefix: string): FailingObjectStore {
  return new FailingObjectStore(new S3ObjectStore({
    bucket: s3.bucket, endpoint: s3.endpoint, region: s3.region,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey }, prefix,
  }));
}

interface Seen {
  fallbacks: string[];
  written: number;
  loaded: number;
  replayed: number;
}

/** An engine with the S3 tier on `store`, started as the generation after what S3 shows. */
async function tiered(dir: string, store: FailingObjectStore, seen: Seen, start = true): Promise<Engine> {
  const e = await fx.open(dir, {
    tier: {
      store, node: 'n', nodeNumber: 1, uploadIntervalMs: 400,
      observer: {
        checkpointFallback: (r) => seen.fallbacks.push(r),
        checkpointWritten: () => seen.written++,
        checkpointLoaded: (s) => (seen.loaded = s),
        replayProgress: (done) => (seen.replayed = done),
      },
    },
  });
  // Not started: it uploads nothing (so it writes no manifest that would stop naming the checkpoint).
  if (start) e.tier!.start({ value: e.tier!.generationSeen + 1, current: async () => true });
  return e;
}

const seen = (): Seen => ({ fallbacks: [], written: 0, loaded: 0, replayed: 0 });

async function fill(e: Engine, count: number, text: string): Promise<Map<string, string>> {
  const want = new Map<string, string>();
  for (let i = 0; i < count; i += 10) {
    const oids = Array.from({ length: 10 }, () => newOid(1));
    await e.commit({ dataset: 'default', writes: oids.map((o) => put(o, `${text} ${o}`.repeat(8))) });
    for (const o of oids) want.set(o, `${text} ${o}`.repeat(8));
  }
  return want;
}

async function wrong(e: Engine, want: Map<string, string>): Promise<string[]> {
  const { objects, missing } = await e.get('default', [...want.keys()]);
  return [...missing, ...objects.filter((o) => o.state.toString() !== want.get(o.oid)).map((o) => o.oid)];
}

describe('index checkpoints under S3 faults', () => {
  it('a checkpoint upload that keeps failing blocks no write and no flush; once S3 takes it, a restore uses it', async () => {
    const prefix = `faults-${++n}/`;
    const store = failing(prefix);
    const s = seen();
    const e = await tiered(fx.tmp(), store, s);
    const stop = store.inject({ op: 'create', key: /checkpoints\//, action: 'fail' });
    const want = await fill(e, 200, 'a');
    await e.flush();
    const aborted = new AbortController();
    const ckpt = e.checkpoint(aborted.signal);
    // While its upload fails, writes and flushes go on.
    const more = await fill(e, 50, 'b');
    await e.flush();
    expect(store.injected.fail).toBeGreaterThan(0);
    expect(s.written).toBe(0);
    stop();
    await ckpt;
    expect(s.written).toBe(1);
    await e.checkpoint(); // covers the writes after the first one too
    for (const [k, v] of more) want.set(k, v);
    await e.close();

    const s2 = seen();
    const restored = await tiered(fx.tmp(), failing(prefix), s2);
    expect(s2.fallbacks).toEqual([]);
    expect(s2.loaded).toBeGreaterThan(0);
    expect(restored.restored).toMatchObject({ replayed: 0 });
    expect(await wrong(restored, want)).toEqual([]);
  });

  it('a checkpoint upload whose answer was lost is found as ours: one object, named, and a restore uses it', async () => {
    const prefix = `faults-${++n}/`;
    const store = failing(prefix);
    const s = seen();
    const e = await tiered(fx.tmp(), store, s);
    const want = await fill(e, 100, 'lost');
    store.inject({ op: 'create', key: /checkpoints\//, action: 'fail-after', times: 1 });
    await e.checkpoint();
    expect(store.injected['fail-after']).toBe(1);
    expect(s.written).toBe(1);
    const objects = (await store.inner.list('nodes/n/checkpoints/')).map((o) => o.key);
    expect(objects.length).toBe(1);
    await e.close();
    const s2 = seen();
    const restored = await tiered(fx.tmp(), failing(prefix), s2, false);
    expect(s2.fallbacks).toEqual([]);
    expect(restored.restored).toMatchObject({ replayed: 0 });
    expect(restored.restored!.checkpoint).toBeGreaterThan(0);
    expect(await wrong(restored, want)).toEqual([]);
  });

  it('a checkpoint that cannot be read falls back to a full replay (counted by reason); one that reads damaged bytes too', async () => {
    const prefix = `faults-${++n}/`;
    const e = await tiered(fx.tmp(), failing(prefix), seen());
    const want = await fill(e, 150, 'c');
    await e.checkpoint();
    expect(e.tier!.backlog().bytes).toBe(0);
    await e.close();

    const unreadable = failing(prefix);
    unreadable.inject({ op: 'get', key: /checkpoints\//, action: 'fail', error: (op, key) => new ObjectStorePermanentError('access denied', op, key, 'AccessDenied', 403) });
    const s = seen();
    const a = await tiered(fx.tmp(), unreadable, s, false);
    expect(s.fallbacks).toEqual(['unreadable']);
    expect(s.loaded).toBe(0);
    expect(a.restored!.replayed).toBe(a.restored!.segments);
    expect(await wrong(a, want)).toEqual([]);

    const damaged = failing(prefix);
    damaged.inject({ op: 'get', key: /checkpoints\//, action: 'corrupt', bytes: 4 });
    const s2 = seen();
    const b = await tiered(fx.tmp(), damaged, s2, false);
    expect(s2.fallbacks).toEqual(['checksum']);
    expect(b.restored!.checkpoint).toBe(0);
    expect(await wrong(b, want)).toEqual([]);
  });
});
