import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { LocalFiles } from '../dist/storage/segment-files.js';
import { FaultyFiles } from '../dist/storage/faulty-files.js';
import { newOid, newTxid, AbortedError, CommitUnknownError, UnavailableError } from '@loam/sdk';
import { engineFixture, put } from './engine-fixture.js';

const { tmp, open, restart } = engineFixture('ids', { maxSegmentBytes: 1024 });

describe('commit ids: a retried commit is applied once', () => {
  it('a retry gets the first outcome, before and after a restart and a compaction', async () => {
    const dir = tmp();
    let e = await open(dir);
    const a = newOid(1);
    await e.commit({ dataset: 'default', writes: [put(a, 'v1')] });
    const id = newTxid();
    const bump = { dataset: 'default', writes: [put(a, 'v2', 1)] };
    expect(await e.commit(bump, { commitId: id })).toEqual([2]);
    // Without the id this retry would be a WriteConflictError (version 1 is gone), and the
    // SDK would run the transaction again: applied twice.
    expect(await e.commit(bump, { commitId: id, attempt: 1 })).toEqual([2]);
    for (let i = 0; i < 20; i++) await e.commit({ dataset: 'default', writes: [put(newOid(1), 'filler'.repeat(20))] });
    e = await restart(e, dir);
    expect(await e.commit(bump, { commitId: id, attempt: 2 })).toEqual([2]);
    await e.compact({ all: true });
    e = await restart(e, dir);
    expect(await e.commit(bump, { commitId: id, attempt: 3 })).toEqual([2]);
    expect((await e.get('default', [a])).objects[0]).toMatchObject({ version: 2 });
  });

  it('duplicates in flight share one application', async () => {
    const e = await open(tmp());
    const a = newOid(1);
    await e.commit({ dataset: 'default', writes: [put(a, 'v1')] });
    const id = newTxid();
    const bump = { dataset: 'default', writes: [put(a, 'v2', 1)] };
    expect(await Promise.all([e.commit(bump, { commitId: id }), e.commit(bump, { commitId: id, attempt: 1 })])).toEqual([[2], [2]]);
    expect((await e.get('default', [a])).objects[0].version).toBe(2);
  });

  it('a retry whose first write failed but may be on disk is not applied again until that is known', async () => {
    const dir = tmp();
    const files = new FaultyFiles(new LocalFiles(path.join(dir, 'log')));
    const e = await open(dir, { files });
    const a = newOid(1);
    await e.commit({ dataset: 'default', writes: [put(a, 'v1')] });
    const id = newTxid();
    const bump = { dataset: 'default', writes: [put(a, 'v2', 1)] };
    files.inject({ op: 'write', code: 'EIO', times: 1 }); // all of it may be on disk: unknown
    const first = await e.commit(bump, { commitId: id }).catch((x: unknown) => x);
    expect(first).toBeInstanceOf(UnavailableError);
    expect((first as UnavailableError).notApplied).toBeUndefined();
    const retry = await e.commit(bump, { commitId: id, attempt: 1 }).catch((x: unknown) => x);
    expect(retry).toBeInstanceOf(UnavailableError);
    expect((retry as UnavailableError).notApplied).toBeUndefined(); // still unknown: never re-applied
  });

  it('a full disk is cut back before it answers, so it can say nothing was applied', async () => {
    const dir = tmp();
    const files = new FaultyFiles(new LocalFiles(path.join(dir, 'log')));
    const e = await open(dir, { files });
    const a = newOid(1);
    await e.commit({ dataset: 'default', writes: [put(a, 'v1')] });
    const id = newTxid();
    const bump = { dataset: 'default', writes: [put(a, 'v2', 1)] };
    files.inject({ op: 'write', code: 'ENOSPC', times: 1, partialBytes: 50 });
    const first = await e.commit(bump, { commitId: id }).catch((x: unknown) => x);
    expect((first as UnavailableError).notApplied).toBe(true);
    expect(await e.commit(bump, { commitId: id, attempt: 1 })).toEqual([2]); // space back: applied now, once
  });

  it('a retry too old to be remembered is CommitUnknownError, never applied', async () => {
    const e = await open(tmp());
    const a = newOid(1);
    await e.commit({ dataset: 'default', writes: [put(a, 'v1')] });
    const ancient = newTxid(Date.now() - 24 * 3600_000);
    // Fill the table's horizon: an outcome older than the retention was forgotten at replay.
    e.state.outcomes.forgottenUpTo = Date.now() - 11 * 60_000;
    await expect(e.commit({ dataset: 'default', writes: [put(a, 'v2', 1)] }, { commitId: ancient, attempt: 1 })).rejects.toBeInstanceOf(CommitUnknownError);
    expect((await e.get('default', [a])).objects[0].version).toBe(1);
    // a first attempt with an old id is just a commit (nothing can have applied it before)
    expect(await e.commit({ dataset: 'default', writes: [put(a, 'v2', 1)] }, { commitId: ancient, attempt: 0 })).toEqual([2]);
  });

  it('a commit with the id of an aborted two-phase part here is applied, not answered with the abort', async () => {
    // The SDK once sent a transaction as two-phase commit, got an abort, and sent it again as
    // one node's commit under the same id: it was acknowledged with the aborted part's versions
    // and never applied (found by the bank workload under the nemesis).
    const e = await open(tmp());
    const a = newOid(1);
    await e.commit({ dataset: 'default', writes: [put(a, 'v1')] });
    const id = newTxid();
    await e.prepare(id, 1, { dataset: 'default', writes: [put(a, 'tx', 1)] });
    await e.finish(id, false);
    expect(await e.commit({ dataset: 'default', writes: [put(a, 'single', 1)] }, { commitId: id, attempt: 1 })).toEqual([2]);
    expect((await e.get('default', [a])).objects[0]).toMatchObject({ version: 2 });
    expect((await e.get('default', [a])).objects[0].state.toString()).toBe('single');
  });

  it('a prepare of a transaction already finished here returns its outcome, not a second prepare', async () => {
    const dir = tmp();
    let e = await open(dir);
    const a = newOid(1), b = newOid(1);
    await e.commit({ dataset: 'default', writes: [put(a, 'v1'), put(b, 'v1')] });
    const committed = newTxid(), aborted = newTxid();
    expect(await e.prepare(committed, 1, { dataset: 'default', writes: [put(a, 'tx', 1)] })).toEqual([2]);
    await e.finish(committed, true);
    await e.prepare(aborted, 1, { dataset: 'default', writes: [put(b, 'tx', 1)] });
    await e.finish(aborted, false);
    e = await restart(e, dir);
    expect(await e.prepare(committed, 1, { dataset: 'default', writes: [put(a, 'tx', 1)] })).toEqual([2]);
    await expect(e.prepare(aborted, 1, { dataset: 'default', writes: [put(b, 'tx', 1)] })).rejects.toBeInstanceOf(AbortedError);
    expect(e.lockedBy(a)).toBeUndefined();
    expect(e.lockedBy(b)).toBeUndefined();
    expect(e.outcomeOf(committed)).toEqual({ ok: true, versions: [2] });
  });
});
