import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { Engine } from '../dist/storage/engine.js';
import { CorruptLogError } from '../dist/storage/segment-log.js';
import { newOid } from '@loam/sdk';
import { engineFixture, put } from './engine-fixture.js';

const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../dist/cli.js');
const { tmp, open, engines } = engineFixture('corrupt');
const segFiles = (dir: string) => fs.readdirSync(path.join(dir, 'log')).filter((f) => f.endsWith('.seg')).sort().map((f) => path.join(dir, 'log', f));

/** 2,000 acknowledged objects, 10 per commit, 20 commits at a time (so in many write groups). */
async function writeObjects(dir: string): Promise<string[]> {
  const e = await Engine.open({ dir, compactionIntervalMs: 0 });
  const oids = Array.from({ length: 2000 }, () => newOid(1));
  for (let i = 0; i < oids.length; i += 200) {
    await Promise.all(Array.from({ length: 20 }, (_, j) => e.commit({ dataset: 'default', writes: oids.slice(i + j * 10, i + j * 10 + 10).map((o) => put(o, `state of ${o}`)) })));
  }
  await e.close();
  return oids;
}

describe('a flipped byte in the middle of the active segment', () => {
  it('is corruption: the node refuses to start, names the file and offset, and changes nothing', async () => {
    const dir = tmp();
    await writeObjects(dir);
    const [seg] = segFiles(dir);
    const data = fs.readFileSync(seg);
    const at = Math.floor(data.length * 0.1);
    data[at] ^= 0x40;
    fs.writeFileSync(seg, data);
    const err = await Engine.open({ dir, compactionIntervalMs: 0 }).then(() => undefined, (e: unknown) => e);
    // Before: the node started with 1,800 objects gone and the file cut at 10%.
    expect(err).toBeInstanceOf(CorruptLogError);
    expect((err as CorruptLogError).message).toContain(path.basename(seg));
    expect((err as CorruptLogError).offset).toBeGreaterThan(at - 200);
    expect((err as CorruptLogError).offset).toBeLessThanOrEqual(at);
    expect((err as Error).message).toMatch(/loam repair/);
    expect(fs.readFileSync(seg).equals(data)).toBe(true); // not truncated, not touched
  });

  it('loam repair reports what it would keep; --apply keeps every intact batch and moves the file aside', async () => {
    const dir = tmp();
    const oids = await writeObjects(dir);
    const [seg] = segFiles(dir);
    const original = fs.readFileSync(seg);
    const damaged = Buffer.from(original);
    damaged[Math.floor(damaged.length * 0.1)] ^= 0x40;
    fs.writeFileSync(seg, damaged);

    const dry = execFileSync(process.execPath, [CLI, 'repair', '--data', dir], { encoding: 'utf8' });
    expect(dry).toMatch(/keeps \d+ intact batches/);
    expect(dry).toMatch(/--apply/);
    expect(fs.readFileSync(seg).equals(damaged)).toBe(true); // a dry run changes nothing

    const applied = execFileSync(process.execPath, [CLI, 'repair', '--data', dir, '--apply'], { encoding: 'utf8' });
    expect(applied).toMatch(/repaired 1 segment/);
    const aside = fs.readdirSync(path.join(dir, 'log', 'damaged'));
    expect(aside).toHaveLength(1);
    expect(fs.readFileSync(path.join(dir, 'log', 'damaged', aside[0])).equals(damaged)).toBe(true); // kept, byte for byte

    const e = await open(dir);
    const { objects, missing } = await e.get('default', oids);
    // Only the one commit (10 objects) whose batch held the flipped byte is lost.
    expect(missing.length).toBeLessThanOrEqual(10);
    expect(missing.length).toBeGreaterThan(0);
    for (const o of objects) expect(o.state.toString()).toBe(`state of ${o.oid}`);
    // and the repaired log takes writes and survives a restart
    const extra = newOid(1);
    await e.commit({ dataset: 'default', writes: [put(extra, 'after repair')] });
    await e.close();
    engines.pop();
    const again = await open(dir);
    expect((await again.get('default', [extra])).objects[0].state.toString()).toBe('after repair');
    expect(again.stats().objects).toBe(objects.length + 1);
  });

  it('a torn tail (the last write cut short) is still cut, and reported', async () => {
    const dir = tmp();
    const oids = await writeObjects(dir);
    const [seg] = segFiles(dir);
    fs.truncateSync(seg, fs.statSync(seg).size - 7);
    const e = await open(dir);
    expect(e.recovery.truncatedBytes).toBeGreaterThan(0);
    expect((await e.get('default', oids)).missing.length).toBeLessThanOrEqual(10);
  });
});
