import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { newOid, newTxid } from '@loam/sdk';
import { EngineState } from '../dist/storage/engine-state.js';
import { CheckpointError, decodeCheckpoint, encodeCheckpoint, loadCheckpoint, type EncodedCheckpoint } from '../dist/storage/tier/checkpoint.js';
import { RecordType } from '../dist/storage/record.js';
import { scanBatches } from '../dist/storage/log-scan.js';
import { parseSegmentName } from '../dist/storage/segment-log.js';
import type { Engine } from '../dist/storage/engine.js';
import { engineFixture, put } from './engine-fixture.js';

const fx = engineFixture('checkpoint');

/** Everything in an EngineState a restart must get back, as plain values (cache and pending writes are not). */
function view(s: EngineState) {
  const index: Record<string, unknown> = {};
  s.index.forEach((w, loc) => (index[w.join('.')] = loc));
  const m = <T>(map: Map<string, T>) => Object.fromEntries([...map].map(([k, v]) => [k, v]));
  return {
    index,
    datasets: m(s.datasetIds),
    aliases: m(s.aliases),
    forwards: m(s.forwards),
    directory: m(s.directory),
    replicaSets: m(s.replicaSets),
    replicaOf: m(s.replicaOf),
    installing: m(s.installing),
    prepared: Object.fromEntries([...s.prepared].map(([k, p]) => [k, { locked: p.locked, versions: p.versions, coordinator: p.coordinator, dataset: p.dataset, segment: p.segment, offset: p.offset, length: p.length, records: p.records.length }])),
    outcomes: [...s.outcomes.entries()],
    forgottenUpTo: s.outcomes.forgottenUpTo,
    locks: s.locks.size,
    liveBytes: Object.fromEntries([...s.liveBytes].filter(([, v]) => v !== 0)),
  };
}

/** The handles of the segments a checkpoint names, as an open log numbers them (no rewrites here: handle = id). */
function handlesOf(c: EncodedCheckpoint): number[] {
  return c.names.map((n) => {
    const p = parseSegmentName(n)!;
    expect(p.rev).toBe(0);
    return p.id;
  });
}

/** A fresh state built by replaying exactly the named segment files (what a checkpoint must equal). */
function replayed(dir: string, names: string[]): EngineState {
  const s = new EngineState(1024 * 1024);
  for (const name of names) {
    const handle = parseSegmentName(name)!.id;
    const { damage } = scanBatches(fs.readFileSync(path.join(dir, 'log', name)), (batch) => {
      for (const r of batch) s.apply(r.record, { segment: handle, offset: r.offset, length: r.length }, true);
    });
    expect(damage).toBeUndefined();
  }
  return s;
}

async function capture(e: Engine): Promise<EncodedCheckpoint> {
  const c = await e.captureCheckpoint('unit');
  if (c === undefined || c === 'nothing') throw new Error(`no checkpoint: ${String(c)}`);
  return c;
}

describe('index checkpoints', () => {
  it('round-trip every table of the engine state: loading one gives back what the engine holds', async () => {
    const dir = fx.tmp();
    const e = await fx.open(dir, { maxSegmentBytes: 4096 });
    await e.createDataset('other');
    const oids = Array.from({ length: 60 }, () => newOid(1));
    for (let i = 0; i < oids.length; i += 6) {
      await e.commit({ dataset: i % 12 === 0 ? 'other' : 'default', writes: oids.slice(i, i + 6).map((o) => put(o, `v1 ${o}`.repeat(5))) }, { commitId: newTxid() });
    }
    const ds = (o: string) => (oids.indexOf(o) % 12 < 6 ? 'other' : 'default');
    await e.commit({ dataset: ds(oids[1]), writes: [put(oids[1], 'v2', 1)], aliasSets: [{ alias: 'root', oid: oids[1] }] });
    await e.commit({ dataset: ds(oids[2]), deletes: [{ oid: oids[2], expectedVersion: 1 }] });
    await e.commit({ dataset: 'default', aliasSets: [{ alias: 'gone', oid: oids[7] }] });
    await e.commit({ dataset: 'default', aliasDeletes: ['gone'] });
    await e.setDirectory([{ oid: newOid(1), master: 2, replicas: [3, 4] }]);
    await e.setReplicas(ds(oids[8]), oids[8], [2, 3]);
    await e.installReplicas('default', 5, [{ oid: newOid(5), className: 'T', state: Buffer.from('replica'), version: 3, origin: '' }]);
    await e.install('default', [{ oid: newOid(6), className: 'T', state: Buffer.from('moving in'), version: 1, origin: '' }], new Map(), 6);
    await e.moveOut(ds(oids[9]), [{ oid: oids[9], version: 1 }], 7);
    const txid = newTxid();
    await e.prepare(txid, 2, { dataset: ds(oids[10]), writes: [put(oids[10], 'prepared', 1)] });

    const c = await capture(e);
    expect(c.objects).toBe(e.state.index.size);
    const loaded = new EngineState(1024 * 1024);
    loadCheckpoint(loaded, decodeCheckpoint(c.body, 'k'), handlesOf(c));
    const want = view(e.state);
    expect(Object.keys(want.forwards).length + Object.keys(want.directory).length + Object.keys(want.replicaOf).length + Object.keys(want.installing).length).toBe(4);
    expect(Object.keys(want.prepared)).toEqual([txid]);
    expect(want.outcomes.length).toBe(10);
    expect(view(loaded)).toEqual(want);
    // And it equals a replay of exactly the segments it names.
    expect(view(loaded)).toEqual(view(replayed(dir, c.names)));
    expect(loaded.locks.holder(oids[10])).toBe(txid);
  });

  it('is taken at a seal boundary: with commits in flight it holds exactly the segments it names', async () => {
    const dir = fx.tmp();
    const e = await fx.open(dir, { maxSegmentBytes: 64 * 1024 });
    const oids = Array.from({ length: 400 }, () => newOid(1));
    await e.commit({ dataset: 'default', writes: oids.slice(0, 100).map((o) => put(o, 'first')) });
    // Commits keep arriving while the capture seals and encodes.
    const running = oids.slice(100).map((o, i) => e.commit({ dataset: 'default', writes: [put(o, `c${i}`.repeat(20))] }));
    const updates = oids.slice(0, 100).map((o) => e.commit({ dataset: 'default', writes: [put(o, 'second', 1)] }));
    let c: EncodedCheckpoint | undefined;
    for (let i = 0; i < 50 && !c; i++) {
      const got = await e.captureCheckpoint('unit');
      if (got !== undefined && got !== 'nothing') c = got;
    }
    await Promise.all([...running, ...updates]);
    expect(c).toBeDefined();
    const loaded = new EngineState(1024 * 1024);
    loadCheckpoint(loaded, decodeCheckpoint(c!.body, 'k'), handlesOf(c!));
    expect(view(loaded)).toEqual(view(replayed(dir, c!.names)));
    expect(loaded.index.size).toBeGreaterThanOrEqual(100);
  });

  it('round-trips tables whose records span many 1 MiB chunks (outcomes, aliases) and a large index', async () => {
    const s = new EngineState(1024 * 1024);
    const segs = [3, 7, 2 ** 30]; // appended segments and a rewrite's handle
    let off = 0;
    const at = (i: number, length: number) => ({ segment: segs[i % 3], offset: (off += length), length });
    s.apply({ type: RecordType.Dataset, dataset: 1, name: 'default' }, at(0, 30));
    for (let i = 0; i < 30_000; i++) {
      const oid = Buffer.from(newOid(1), 'hex');
      s.apply({ type: RecordType.Put, dataset: 1, oid, version: i + 1, className: 'T', state: Buffer.from('x') }, at(i, 60), true);
      if (i % 2 === 0) s.apply({ type: RecordType.AliasSet, dataset: 1, oid, alias: `alias-${i}-`.padEnd(40, 'z') }, at(i, 70));
      s.apply({ type: RecordType.Outcome, dataset: 1, id: Buffer.from(newTxid(), 'hex'), at: Date.now(), ok: true, versions: [i, i + 1] }, at(i, 50));
    }
    const names = ['0000000003.seg', '0000000007.seg', '0000000009-2.seg'];
    const c = encodeCheckpoint({ state: s, segments: segs, fileName: (h) => names[segs.indexOf(h)] }, 'unit');
    expect(c.body.length).toBeGreaterThan(3 * 1024 * 1024);
    expect(c.records).toBe(1 + 15_000 + 30_000);
    const loaded = new EngineState(1024 * 1024);
    loadCheckpoint(loaded, decodeCheckpoint(c.body, 'k'), segs);
    expect(view(loaded)).toEqual(view(s));
    // Loaded with other handles (a restored log numbers rewrites its own way): the same, renumbered.
    const other = new EngineState(1024 * 1024);
    loadCheckpoint(other, decodeCheckpoint(c.body, 'k'), [11, 12, 2 ** 30 + 5]);
    expect(other.liveBytes.get(2 ** 30 + 5)).toBe(s.liveBytes.get(2 ** 30));
    expect(other.index.size).toBe(30_000);
  });

  it('leaves out a dataset whose creation is still in flight (reserved, its record not durable)', async () => {
    const e = await fx.open(fx.tmp());
    await e.commit({ dataset: 'default', writes: [put(newOid(1), 'x')] });
    const creating = e.createDataset('late');
    expect(e.state.datasetIds.has('late')).toBe(true); // reserved at once
    const segments = e.state.index.size > 0 ? [...new Set([...e.state.liveBytes.keys()])] : [];
    const c = encodeCheckpoint({ state: e.state, segments, fileName: (h) => `${String(h).padStart(10, '0')}.seg` }, 'unit');
    const loaded = new EngineState(1024 * 1024);
    loadCheckpoint(loaded, decodeCheckpoint(c.body, 'k'), segments);
    expect([...loaded.datasetIds.keys()]).toEqual(['default']);
    await creating;
    expect(e.state.pendingDatasets.size).toBe(0);
  });

  it('says "nothing" for an empty log', async () => {
    const e = await fx.open(fx.tmp());
    // Only the default dataset's record, in the active segment: the capture seals it.
    const c = await e.captureCheckpoint('unit');
    expect(c).not.toBe(undefined);
    expect(c === 'nothing' || c.objects === 0).toBe(true);
  });

  it('refuses damaged or foreign bytes with CheckpointError', async () => {
    const e = await fx.open(fx.tmp());
    const oid = newOid(1);
    await e.commit({ dataset: 'default', writes: [put(oid, 'x')], aliasSets: [{ alias: 'a', oid }] });
    const c = await capture(e);
    expect(() => decodeCheckpoint(Buffer.from('not a checkpoint at all'), 'k')).toThrow(CheckpointError);
    expect(() => decodeCheckpoint(c.body.subarray(0, c.body.length - 3), 'k')).toThrow(CheckpointError);
    // A byte inside the first record's frame (after the index entries): its checksum fails.
    const damaged = Buffer.from(c.body);
    damaged[decodeCheckpoint(c.body, 'k').recordsAt + 12 + 10] ^= 0xff;
    expect(() => decodeCheckpoint(damaged, 'k')).toThrow(CheckpointError);
    // An index entry naming a segment the header does not have.
    const headLen = c.body.readUInt32LE(8);
    const wrongSeg = Buffer.from(c.body);
    wrongSeg.writeUInt32LE(99, 12 + headLen + 16);
    expect(() => decodeCheckpoint(wrongSeg, 'k')).toThrow(/names segment 99/);
  });
});
