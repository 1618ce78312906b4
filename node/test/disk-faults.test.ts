import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { WriteBlock } from '../dist/storage/engine.js';
import { LocalFiles } from '../dist/storage/segment-files.js';
import { FaultyFiles } from '../dist/storage/faulty-files.js';
import { newOid, UnavailableError } from '@loam/sdk';
import { engineFixture, put } from './engine-fixture.js';

const { tmp, open, engines } = engineFixture('disk');

async function openFaulty(dir: string, events: (WriteBlock | undefined)[] = [], probeIntervalMs = 20) {
  const files = new FaultyFiles(new LocalFiles(path.join(dir, 'log')));
  const e = await open(dir, { files, probeIntervalMs, observer: { writable: (b) => events.push(b) } });
  return { e, files, events };
}
async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('disk faults under the log', () => {
  it('a full disk refuses writes (typed), and the next write after space is freed succeeds without a restart', async () => {
    const dir = tmp();
    // No probes here: one failing while space is freed would fail the write queued behind it.
    const { e, files, events } = await openFaulty(dir, [], 60_000);
    const acked = [newOid(1), newOid(1)];
    for (const o of acked) await e.commit({ dataset: 'default', writes: [put(o, 'before')] });
    // ENOSPC after part of the write reached the file: the tail holds garbage until it is cut.
    files.inject({ op: 'write', code: 'ENOSPC', partialBytes: 40 });
    const lost = newOid(1);
    await expect(e.commit({ dataset: 'default', writes: [put(lost, 'refused')] })).rejects.toBeInstanceOf(UnavailableError);
    expect(e.writeBlock).toMatchObject({ reason: 'ENOSPC', recoverable: true });
    expect(events.at(-1)).toMatchObject({ reason: 'ENOSPC' });
    await expect(e.commit({ dataset: 'default', writes: [put(acked[0], 'still refused', 1)] })).rejects.toBeInstanceOf(UnavailableError);
    // Reads go on meanwhile.
    expect((await e.get('default', acked)).objects).toHaveLength(2);

    files.clear(); // space freed
    const after = newOid(1);
    expect(await e.commit({ dataset: 'default', writes: [put(after, 'after')] })).toEqual([1]);
    expect(e.writeBlock).toBeUndefined();
    expect(events.at(-1)).toBeUndefined(); // told the observer writes work again
    await e.close();
    engines.pop();

    const again = await open(dir);
    expect(again.recovery.truncatedBytes).toBe(0); // the garbage was cut before writing went on
    const got = await again.get('default', [...acked, lost, after]);
    expect(got.objects.map((o) => o.state.toString()).sort()).toEqual(['after', 'before', 'before']);
    expect(got.missing).toEqual([lost]);
  });

  it('while refused, a probe notices freed space by itself', async () => {
    const dir = tmp();
    const { e, files, events } = await openFaulty(dir);
    files.inject({ op: 'write', code: 'ENOSPC' });
    await expect(e.commit({ dataset: 'default', writes: [put(newOid(1), 'x')] })).rejects.toBeInstanceOf(UnavailableError);
    await until(() => files.calls.write >= 3, 'probes to try writing');
    expect(e.writeBlock).toBeDefined();
    files.clear();
    await until(() => events.length > 1 && events.at(-1) === undefined, 'the probe to report writes working again');
    expect(e.writeBlock).toBeUndefined();
  });

  it('an I/O error (EIO, a failed sync) keeps writes refused until a restart, and loses nothing acknowledged', async () => {
    const dir = tmp();
    const { e, files } = await openFaulty(dir);
    const a = newOid(1);
    await e.commit({ dataset: 'default', writes: [put(a, 'v1')] });
    files.inject({ op: 'write', code: 'EIO', times: 1, partialBytes: 30 });
    await expect(e.commit({ dataset: 'default', writes: [put(a, 'v2', 1)] })).rejects.toBeInstanceOf(UnavailableError);
    expect(e.writeBlock).toMatchObject({ reason: 'EIO', recoverable: false });
    await expect(e.commit({ dataset: 'default', writes: [put(a, 'v2', 1)] })).rejects.toBeInstanceOf(UnavailableError);
    await e.close();
    engines.pop();
    const again = await open(dir);
    expect((await again.get('default', [a])).objects[0]).toMatchObject({ version: 1 });
    expect(await again.commit({ dataset: 'default', writes: [put(a, 'v2', 1)] })).toEqual([2]);
  });

  it('a short write at a segment roll and a failed rewrite leave the log readable', async () => {
    const dir = tmp();
    const files = new FaultyFiles(new LocalFiles(path.join(dir, 'log')));
    const e = await open(dir, { files, maxSegmentBytes: 512 });
    const oids = Array.from({ length: 12 }, () => newOid(1));
    for (const o of oids) await e.commit({ dataset: 'default', writes: [put(o, 'x'.repeat(60))] });
    for (const o of oids) await e.commit({ dataset: 'default', writes: [put(o, 'y', 1)] });
    files.inject({ op: 'replace', code: 'ENOSPC', times: 1 });
    await expect(e.compact({ all: true })).rejects.toThrow(/ENOSPC/);
    for (const o of oids) expect((await e.get('default', [o])).objects[0].state.toString()).toBe('y');
    await e.compact({ all: true }); // works once space is there
    await e.close();
    engines.pop();
    const again = await open(dir, { maxSegmentBytes: 512 });
    for (const o of oids) expect((await again.get('default', [o])).objects[0].state.toString()).toBe('y');
  });
});
