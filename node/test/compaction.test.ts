import { describe, expect, it } from 'vitest';
import type { Engine } from '../dist/storage/engine.js';
import { newOid } from '@loam/sdk';
import { engineFixture, put } from './engine-fixture.js';

const SEG = 512; // small segments: every few records start a new one
const { tmp, open: openAt, restart: restartAt } = engineFixture('compaction', { maxSegmentBytes: SEG });
const open = (dir: string) => openAt(dir);
const restart = (e: Engine, dir: string) => restartAt(e, dir);
/** Pushes what came before into sealed segments; the fillers stay live (those segments are not compacted). */
async function fill(e: Engine, n = 6): Promise<void> {
  for (let i = 0; i < n; i++) await e.commit({ dataset: 'default', writes: [put(newOid(1), 'filler'.repeat(20))] });
}
const BIG = 'x'.repeat(300); // makes the segment it sits in mostly garbage once replaced
/**
 * Compacts the mostly-garbage segments (not the live fillers before them: a removal copied to
 * the head used to be kept there because an older segment may hold what it removed), restarts,
 * checks; then compacts everything, restarts, checks again.
 */
async function compactRestartCheck(e: Engine, dir: string, check: (e: Engine) => Promise<void> | void): Promise<Engine> {
  expect((await e.compact()).segments).toBeGreaterThan(0);
  await check(e);
  e = await restart(e, dir);
  await check(e);
  await e.compact({ all: true });
  e = await restart(e, dir);
  await check(e);
  return e;
}
async function stateOf(e: Engine, oid: string): Promise<string | undefined> {
  return (await e.get('default', [oid])).objects[0]?.state.toString();
}

/**
 * Compaction must never change what a restart reads. Each case removes a key in an old segment
 * and sets it again in a newer one; compacting the old segment used to copy the removal to the
 * log head, after the newer record, so the restart applied the removal last.
 */
describe('compaction never changes what a restart reads', () => {
  it('an object moved away and back (Delete, then Put of the same oid)', async () => {
    const dir = tmp();
    let e = await open(dir);
    const a = newOid(1);
    await fill(e);
    await e.commit({ dataset: 'default', writes: [put(a, BIG)] });
    await e.moveOut('default', [{ oid: a, version: 1 }], 2); // Delete + Forward
    await fill(e);
    await e.install('default', [{ oid: a, className: 'T', state: Buffer.from('back'), version: 5, origin: '' }]); // moved back
    await fill(e);
    e = await compactRestartCheck(e, dir, async (eng) => {
      expect(await stateOf(eng, a)).toBe('back');
      expect(eng.forwardOf(a)).toBeUndefined();
    });
  });

  it('an object deleted, then a replica copy of the same oid installed', async () => {
    const dir = tmp();
    let e = await open(dir);
    const a = newOid(2);
    await fill(e);
    await e.installReplicas('default', 2, [{ oid: a, className: 'T', state: Buffer.from(BIG), version: 1, origin: '' }]);
    await e.dropReplicas('default', [a]);
    await fill(e);
    await e.installReplicas('default', 3, [{ oid: a, className: 'T', state: Buffer.from('r9'), version: 9, origin: '' }]);
    await fill(e);
    e = await compactRestartCheck(e, dir, async (eng) => {
      expect(await stateOf(eng, a)).toBe('r9');
      expect(eng.replicaMasterOf(a)).toBe(3);
    });
  });

  it('an alias deleted and set again to another object', async () => {
    const dir = tmp();
    let e = await open(dir);
    const a = newOid(1), b = newOid(1);
    await fill(e);
    await e.commit({ dataset: 'default', writes: [put(a, BIG)], aliasSets: [{ alias: 'root', oid: a }] });
    await e.commit({ dataset: 'default', aliasDeletes: ['root'], deletes: [{ oid: a, expectedVersion: 1 }] });
    await fill(e);
    await e.commit({ dataset: 'default', writes: [put(b, 'b')], aliasSets: [{ alias: 'root', oid: b }] });
    await fill(e);
    e = await compactRestartCheck(e, dir, (eng) => {
      expect(eng.getAlias('default', 'root')).toBe(b);
    });
  });

  it('forward pointers, directory entries, replica sets and replica marks removed and set again', async () => {
    const dir = tmp();
    let e = await open(dir);
    const f = newOid(1), d = newOid(1), r = newOid(1), m = newOid(4);
    await fill(e);
    await e.commit({ dataset: 'default', writes: [put(f, BIG), put(r, 'r')] });
    await e.moveOut('default', [{ oid: f, version: 1 }], 2);
    await e.clearForwards([f]);
    await e.setDirectory([{ oid: d, master: 2, replicas: [3] }]);
    await e.setDirectory([{ oid: d, master: 1, replicas: [] }]); // back to the default: a removal
    await e.setReplicas('default', r, [2]);
    await e.setReplicas('default', r, []);
    await e.installReplicas('default', 4, [{ oid: m, className: 'T', state: Buffer.from(BIG), version: 1, origin: '' }]);
    await e.install('default', [{ oid: m, className: 'T', state: Buffer.from(BIG), version: 2, origin: '' }]); // ReplicaOf -> 0
    await fill(e);
    await e.install('default', [{ oid: f, className: 'T', state: Buffer.from('f'), version: 3, origin: '' }]);
    await e.moveOut('default', [{ oid: f, version: 3 }], 3); // forward again, to 3
    await e.setDirectory([{ oid: d, master: 3, replicas: [] }]);
    await e.setReplicas('default', r, [5]);
    await e.moveOut('default', [{ oid: m, version: 2 }], 4);
    await e.installReplicas('default', 6, [{ oid: m, className: 'T', state: Buffer.from('m2'), version: 4, origin: '' }]);
    await fill(e);
    const expectAll = (eng: Engine) => {
      expect(eng.forwardOf(f)).toBe(3);
      expect(eng.directoryOf(d)).toEqual({ master: 3, replicas: [] });
      expect(eng.replicasOf(r)).toEqual([5]);
      expect(eng.replicaMasterOf(m)).toBe(6);
    };
    expectAll(e);
    e = await compactRestartCheck(e, dir, expectAll);
  });

  it('keeps its segments and shrinks them: the log gets smaller, live data stays', async () => {
    const dir = tmp();
    let e = await open(dir);
    const oids = Array.from({ length: 20 }, () => newOid(1));
    for (const o of oids) await e.commit({ dataset: 'default', writes: [put(o, 'v1'.repeat(30))] });
    for (const o of oids) await e.commit({ dataset: 'default', writes: [put(o, 'v2', 1)] });
    const before = e.stats().diskBytes;
    await e.compact({ all: true });
    expect(e.stats().diskBytes).toBeLessThan(before / 2);
    e = await restart(e, dir);
    for (const o of oids) expect(await stateOf(e, o)).toBe('v2');
    // a second compaction of the same data finds nothing more to drop
    expect((await e.compact()).segments).toBe(0);
  });
});
