import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Engine } from '../dist/storage/engine.js';
import { CorruptLogError } from '../dist/storage/segment-log.js';
import {
  newOid, AliasExistsError, AlreadyExistsError, InvalidArgumentError, LimitExceededError, NotFoundError,
  ReadConflictError, UnknownDatasetError, WriteConflictError,
} from '@loam/sdk';

const dirs: string[] = [];
const engines: Engine[] = [];
afterEach(async () => {
  for (const e of engines.splice(0)) await e.close();
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function tmp(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'loam-engine-'));
  dirs.push(d);
  return d;
}
async function open(dir: string, opts: Partial<Parameters<typeof Engine.open>[0]> = {}): Promise<Engine> {
  const e = await Engine.open({ dir, compactionIntervalMs: 0, ...opts });
  engines.push(e);
  return e;
}
async function reopen(e: Engine, dir: string, opts: Partial<Parameters<typeof Engine.open>[0]> = {}): Promise<Engine> {
  await e.close();
  engines.splice(engines.indexOf(e), 1);
  return open(dir, opts);
}
const put = (oid: string, text: string, expectedVersion = 0) => ({ oid, className: 'T', state: Buffer.from(text), expectedVersion });
const segFiles = (dir: string) => fs.readdirSync(path.join(dir, 'log')).filter((f) => f.endsWith('.seg')).sort().map((f) => path.join(dir, 'log', f));

describe('Engine', () => {
  it('commits, reads, versions and deletes', async () => {
    const dir = tmp();
    const e = await open(dir);
    const a = newOid(1);
    expect(await e.commit({ dataset: 'default', writes: [put(a, 'one')] })).toEqual([1]);
    expect(await e.commit({ dataset: 'default', writes: [put(a, 'two', 1)] })).toEqual([2]);
    const got = await e.get('default', [a, newOid(1)]);
    expect(got.objects.map((o) => [o.state.toString(), o.version])).toEqual([['two', 2]]);
    expect(got.missing).toHaveLength(1);
    await e.commit({ dataset: 'default', deletes: [{ oid: a, expectedVersion: 2 }] });
    expect((await e.get('default', [a])).missing).toEqual([a]);
  });

  it('reports both conflict kinds and applies nothing of a rejected commit', async () => {
    const e = await open(tmp());
    const a = newOid(1), b = newOid(1), c = newOid(1);
    await e.commit({ dataset: 'default', writes: [put(a, 'a'), put(b, 'b')] });
    await e.commit({ dataset: 'default', writes: [put(a, 'a2', 1)] });
    await expect(e.commit({ dataset: 'default', writes: [put(a, 'x', 1), put(c, 'c')] })).rejects.toBeInstanceOf(WriteConflictError);
    await expect(e.commit({ dataset: 'default', reads: [{ oid: a, version: 1 }], writes: [put(b, 'b2', 1), put(c, 'c')] })).rejects.toBeInstanceOf(ReadConflictError);
    expect((await e.get('default', [c])).missing).toEqual([c]);
    expect((await e.get('default', [b])).objects[0].version).toBe(1);
    await expect(e.commit({ dataset: 'default', writes: [put(a, 'dup')] })).rejects.toBeInstanceOf(AlreadyExistsError);
  });

  it('lets exactly one of two concurrent writers of the same version win', async () => {
    const e = await open(tmp());
    const a = newOid(1);
    await e.commit({ dataset: 'default', writes: [put(a, 'v1')] });
    const results = await Promise.allSettled([
      e.commit({ dataset: 'default', writes: [put(a, 'x', 1)] }),
      e.commit({ dataset: 'default', writes: [put(a, 'y', 1)] }),
    ]);
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    expect((results.find((r) => r.status === 'rejected') as PromiseRejectedResult).reason).toBeInstanceOf(WriteConflictError);
  });

  it('keeps aliases unique per dataset and datasets apart', async () => {
    const e = await open(tmp());
    const a = newOid(1), b = newOid(1);
    await e.createDataset('other');
    await e.commit({ dataset: 'default', writes: [put(a, 'a')], aliasSets: [{ alias: 'root', oid: a }] });
    await expect(e.commit({ dataset: 'default', writes: [put(b, 'b')], aliasSets: [{ alias: 'root', oid: b }] })).rejects.toBeInstanceOf(AliasExistsError);
    expect((await e.get('default', [b])).missing).toEqual([b]); // the failed commit's object was not created
    await e.commit({ dataset: 'other', writes: [put(b, 'b')], aliasSets: [{ alias: 'root', oid: b }] });
    expect(e.getAlias('default', 'root')).toBe(a);
    expect(e.getAlias('other', 'root')).toBe(b);
    expect((await e.get('other', [a])).missing).toEqual([a]);
    await expect(e.get('nope', [a])).rejects.toThrow(UnknownDatasetError);
    await e.commit({ dataset: 'default', aliasDeletes: ['root'] });
    expect(() => e.getAlias('default', 'root')).toThrow(NotFoundError);
  });

  it('rejects bad input with typed errors', async () => {
    const e = await open(tmp(), { limits: { maxObjectBytes: 1000, maxBatchObjects: 5 } });
    await expect(e.commit({ dataset: 'default', writes: [put('zz', 'x')] })).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(e.commit({ dataset: 'default', writes: [put(newOid(1), 'x'.repeat(2000))] })).rejects.toBeInstanceOf(LimitExceededError);
    await expect(e.commit({ dataset: 'default', writes: Array.from({ length: 6 }, () => put(newOid(1), 'x')) })).rejects.toMatchObject({ limit: 'maxBatchObjects' });
    await expect(e.commit({ dataset: 'default', writes: [{ ...put(newOid(1), 'x'), className: 'bad class!' }] })).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(e.commit({ dataset: 'default', aliasSets: [{ alias: 'a'.repeat(300), oid: newOid(1) }] })).rejects.toBeInstanceOf(LimitExceededError);
    await expect(e.commit({ dataset: 'default', aliasSets: [{ alias: 'bad alias', oid: newOid(1) }] })).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(e.commit({ dataset: 'default' })).rejects.toBeInstanceOf(InvalidArgumentError);
    expect(e.stats().objects).toBe(0);
  });

  it('recovers everything after reopen', async () => {
    const dir = tmp();
    let e = await open(dir, { maxSegmentBytes: 4096 });
    const oids = Array.from({ length: 300 }, () => newOid(1));
    for (let i = 0; i < oids.length; i += 10) await e.commit({ dataset: 'default', writes: oids.slice(i, i + 10).map((o) => put(o, `v-${o}`)) });
    await e.commit({ dataset: 'default', writes: [put(oids[0], 'changed', 1)], deletes: [{ oid: oids[1], expectedVersion: 1 }], aliasSets: [{ alias: 'first', oid: oids[0] }] });
    expect(segFiles(dir).length).toBeGreaterThan(3);
    e = await reopen(e, dir, { maxSegmentBytes: 4096 });
    expect(e.stats().objects).toBe(299);
    expect((await e.get('default', [oids[0]])).objects[0]).toMatchObject({ version: 2 });
    expect((await e.get('default', [oids[0]])).objects[0].state.toString()).toBe('changed');
    expect((await e.get('default', [oids[1]])).missing).toHaveLength(1);
    expect((await e.get('default', [oids[299]])).objects[0].state.toString()).toBe(`v-${oids[299]}`);
    expect(e.getAlias('default', 'first')).toBe(oids[0]);
  });

  it('cuts a torn tail (a batch cut mid-record) and keeps every whole batch', async () => {
    const dir = tmp();
    let e = await open(dir);
    const a = newOid(1), b = newOid(1);
    await e.commit({ dataset: 'default', writes: [put(a, 'kept')] });
    await e.commit({ dataset: 'default', writes: [put(b, 'torn-1'), put(newOid(1), 'torn-2')] });
    await e.close();
    engines.pop();
    const [seg] = segFiles(dir).slice(-1);
    fs.truncateSync(seg, fs.statSync(seg).size - 5);
    e = await open(dir);
    expect(e.recovery.truncatedBytes).toBeGreaterThan(0);
    expect((await e.get('default', [a])).objects[0].state.toString()).toBe('kept');
    expect((await e.get('default', [b])).missing).toEqual([b]); // half a batch is no batch
    await e.commit({ dataset: 'default', writes: [put(b, 'after')] }); // and the log is writable after the cut
    e = await reopen(e, dir);
    expect((await e.get('default', [b])).objects[0].state.toString()).toBe('after');
  });

  it('cuts a corrupted tail instead of reading it as data', async () => {
    const dir = tmp();
    let e = await open(dir);
    const a = newOid(1), b = newOid(1);
    await e.commit({ dataset: 'default', writes: [put(a, 'kept')] });
    await e.commit({ dataset: 'default', writes: [put(b, 'corrupted')] });
    await e.close();
    engines.pop();
    const [seg] = segFiles(dir).slice(-1);
    const data = fs.readFileSync(seg);
    data[data.length - 3] ^= 0xff; // flip bits inside the last record's state
    fs.writeFileSync(seg, data);
    e = await open(dir);
    expect(e.recovery.truncatedReason).toBe('bad-checksum');
    expect((await e.get('default', [a])).objects).toHaveLength(1);
    expect((await e.get('default', [b])).missing).toEqual([b]);
  });

  it('refuses to open when a sealed segment is corrupt', async () => {
    const dir = tmp();
    const e = await open(dir, { maxSegmentBytes: 256 });
    for (let i = 0; i < 5; i++) await e.commit({ dataset: 'default', writes: [put(newOid(1), 'x'.repeat(200))] });
    await e.close();
    engines.pop();
    const first = segFiles(dir)[0];
    const data = fs.readFileSync(first);
    data[data.length - 10] ^= 0xff;
    fs.writeFileSync(first, data);
    await expect(Engine.open({ dir, compactionIntervalMs: 0 })).rejects.toBeInstanceOf(CorruptLogError);
  });

  it('compacts old segments without losing live data, tombstones or aliases', async () => {
    const dir = tmp();
    let e = await open(dir, { maxSegmentBytes: 2048 });
    const oids = Array.from({ length: 40 }, () => newOid(1));
    for (const o of oids) await e.commit({ dataset: 'default', writes: [put(o, 'v1-' + 'x'.repeat(100))] });
    await e.commit({ dataset: 'default', aliasSets: [{ alias: 'keep', oid: oids[5] }] });
    for (const o of oids.slice(0, 30)) await e.commit({ dataset: 'default', writes: [put(o, 'v2', 1)] });
    for (const o of oids.slice(30, 35)) await e.commit({ dataset: 'default', deletes: [{ oid: o, expectedVersion: 1 }] });
    const before = e.stats();
    const res = await e.compact({ all: true });
    expect(res.segments).toBeGreaterThan(0);
    const after = e.stats();
    expect(after.diskBytes).toBeLessThan(before.diskBytes);
    const check = async (eng: Engine) => {
      expect(eng.stats().objects).toBe(35);
      for (const o of oids.slice(0, 30)) expect((await eng.get('default', [o])).objects[0]).toMatchObject({ version: 2 });
      for (const o of oids.slice(30, 35)) expect((await eng.get('default', [o])).missing).toEqual([o]);
      for (const o of oids.slice(35)) expect((await eng.get('default', [o])).objects[0].state.toString()).toMatch(/^v1-/);
      expect(eng.getAlias('default', 'keep')).toBe(oids[5]);
    };
    await check(e);
    e = await reopen(e, dir, { maxSegmentBytes: 2048 });
    await check(e);
  });

  it('keeps a version\'s origin through compaction and restart', async () => {
    const dir = tmp();
    let e = await open(dir, { maxSegmentBytes: 512 });
    const base = newOid(1), v = newOid(1);
    await e.commit({ dataset: 'default', writes: [put(base, 'base')] });
    await e.commit({ dataset: 'default', writes: [{ ...put(v, 'version'), origin: base }] });
    for (let i = 0; i < 10; i++) await e.commit({ dataset: 'default', writes: [put(newOid(1), 'filler'.repeat(20))] });
    await e.compact({ all: true });
    expect((await e.get('default', [v])).objects[0].origin).toBe(base);
    e = await reopen(e, dir, { maxSegmentBytes: 512 });
    expect((await e.get('default', [v])).objects[0]).toMatchObject({ origin: base, version: 1 });
    expect((await e.get('default', [base])).objects[0].origin).toBe('');
  });

  it('prepared transactions lock, survive a restart, and finish either way', async () => {
    const dir = tmp();
    let e = await open(dir, { lockWaitMs: 30 }); // a commit waits this long for a lock, then conflicts
    const a = newOid(1), b = newOid(1);
    await e.commit({ dataset: 'default', writes: [put(a, 'a1'), put(b, 'b1')] });
    const t1 = 'a'.repeat(32), t2 = 'b'.repeat(32);
    expect(await e.prepare(t1, 2, { dataset: 'default', writes: [put(a, 'a2', 1)] })).toEqual([2]);
    await e.prepare(t2, 2, { dataset: 'default', reads: [{ oid: b, version: 1 }], writes: [] });
    await expect(e.commit({ dataset: 'default', writes: [put(a, 'x', 1)] })).rejects.toBeInstanceOf(WriteConflictError);
    await expect(e.commit({ dataset: 'default', writes: [put(b, 'x', 1)] })).rejects.toBeInstanceOf(WriteConflictError);
    expect((await e.get('default', [a])).objects[0].state.toString()).toBe('a1'); // nothing visible before the decision
    e = await reopen(e, dir, { lockWaitMs: 30 });
    expect(e.preparedTransactions().map((p) => p.txid).sort()).toEqual([t1, t2]);
    expect(e.lockedBy(a)).toBe(t1);
    await e.finish(t1, true);
    await e.finish(t2, false);
    await e.finish(t1, true); // idempotent
    expect((await e.get('default', [a])).objects[0]).toMatchObject({ version: 2 });
    expect(e.lockedBy(b)).toBeUndefined();
    // a commit that meets a lock waits for the decision instead of failing
    const t3 = 'c'.repeat(32);
    await e.prepare(t3, 2, { dataset: 'default', writes: [put(a, 'a3', 2)] });
    const waiting = e.commit({ dataset: 'default', reads: [{ oid: b, version: 1 }], writes: [put(newOid(1), 'new')] });
    const blocked = e.commit({ dataset: 'default', writes: [put(a, 'a4', 3)] });
    await waiting; // not locked: not held up
    await e.finish(t3, true);
    expect(await blocked).toEqual([4]);
    await e.commit({ dataset: 'default', writes: [put(b, 'b2', 1)] });
    e = await reopen(e, dir);
    expect(e.preparedTransactions()).toEqual([]);
    expect((await e.get('default', [a])).objects[0].state.toString()).toBe('a4');
  });

  it('an object locked by a prepared transaction is not moved out (its commit would bring it back)', async () => {
    const dir = tmp();
    const e = await open(dir, { lockWaitMs: 30 });
    const x = newOid(1);
    await e.commit({ dataset: 'default', writes: [put(x, 'x1')] });
    const tx = 'e'.repeat(32);
    await e.prepare(tx, 2, { dataset: 'default', writes: [put(x, 'x2', 1)] });
    await expect(e.moveOut('default', [{ oid: x, version: 1 }], 3)).rejects.toBeInstanceOf(WriteConflictError);
    expect(e.forwardOf(x)).toBeUndefined();
    await e.finish(tx, true);
    await e.moveOut('default', [{ oid: x, version: 2 }], 3);
    expect(e.forwardOf(x)).toBe(3);
    expect(e.holds(x)).toBe(false);
    await e.close();
  });

  it('compaction and restart keep cluster records: forwards, directory, replicas, prepared transactions', async () => {
    const dir = tmp();
    let e = await open(dir, { maxSegmentBytes: 600, lockWaitMs: 30 });
    const moved = newOid(1), kept = newOid(1), replica = newOid(2), homed = newOid(1), locked = newOid(1);
    await e.commit({ dataset: 'default', writes: [put(moved, 'm'), put(kept, 'k'), put(homed, 'h'), put(locked, 'l')] });
    await e.moveOut('default', [{ oid: moved, version: 1 }], 3); // forward pointer to node 3
    await e.setDirectory([{ oid: homed, master: 2, replicas: [4] }]); // homed here, lives on 2
    await e.setReplicas('default', kept, [2, 3]);
    await e.installReplicas('default', 2, [{ oid: replica, className: 'T', state: Buffer.from('r'), version: 5, origin: '' }]);
    const tx = 'd'.repeat(32);
    await e.prepare(tx, 2, { dataset: 'default', writes: [put(locked, 'l2', 1)] });
    for (let i = 0; i < 20; i++) await e.commit({ dataset: 'default', writes: [put(newOid(1), 'filler-' + 'x'.repeat(60))] });
    await e.setReplicas('default', kept, [2]); // supersedes the first replica set (garbage for compaction)
    const check = async (eng: Engine) => {
      expect(eng.forwardOf(moved)).toBe(3);
      expect((await eng.get('default', [moved])).missing).toEqual([moved]);
      expect(eng.directoryOf(homed)).toEqual({ master: 2, replicas: [4] });
      expect(eng.replicasOf(kept)).toEqual([2]);
      expect(eng.replicaMasterOf(replica)).toBe(2);
      expect(eng.masters(replica)).toBe(false);
      expect((await eng.get('default', [replica])).objects[0]).toMatchObject({ version: 5 });
      expect(eng.lockedBy(locked)).toBe(tx);
      expect(eng.preparedTransactions().map((p) => p.txid)).toEqual([tx]);
    };
    const before = e.stats().diskBytes;
    const res = await e.compact({ all: true });
    expect(res.segments).toBeGreaterThan(3); // every sealed segment was rewritten...
    expect(e.stats().diskBytes).toBeLessThan(before); // ...and the superseded records dropped
    await check(e);
    e = await reopen(e, dir, { maxSegmentBytes: 600, lockWaitMs: 30 });
    await check(e);
    await e.finish(tx, true);
    await e.compact({ all: true });
    e = await reopen(e, dir, { maxSegmentBytes: 600 });
    expect((await e.get('default', [locked])).objects[0].state.toString()).toBe('l2');
    expect(e.lockedBy(locked)).toBeUndefined();
    expect(e.preparedTransactions()).toEqual([]);
    expect(e.forwardOf(moved)).toBe(3);
  });

  it('shares fsyncs between concurrent committers (group commit)', async () => {
    const batches: number[] = [];
    const e = await open(tmp(), { observer: { fsync: (_s, _b, n) => batches.push(n) } });
    batches.length = 0;
    await Promise.all(Array.from({ length: 64 }, () => e.commit({ dataset: 'default', writes: [put(newOid(1), 'x')] })));
    expect(batches.reduce((a, b) => a + b, 0)).toBe(64);
    expect(batches.length).toBeLessThan(64);
    expect(Math.max(...batches)).toBeGreaterThan(1);
  });
});
