import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, Persistent, registerModel, type Client } from '@loam/sdk';
import { startNode, tempDir, waitFor, type NodeProcess, nodeMetric } from './harness/node-process.js';
import { startS3, type S3Server, s3ObjectsUnder } from './harness/s3-server.js';

class Note extends Persistent {
  constructor(public n: number, public text: string) {
    super();
  }
}
registerModel(Note, 'S3Checkpoint.Note');

let s3: S3Server;
const clients: Client[] = [];
beforeAll(async () => {
  s3 = await startS3();
});
afterAll(async () => {
  for (const c of clients) await c.close().catch(() => undefined);
});

let seq = 0;
/** Small segments, so a few hundred notes make several; checkpoints only when asked (a graceful stop) unless `env` says otherwise. */
const SMALL = { LOAM_SEGMENT_SIZE: '64KiB', LOAM_COMPACTION_INTERVAL: '0' };

function s3Node(name: string, prefix: string, dataDir: string, env: Record<string, string> = SMALL, extra: string[] = []): Promise<NodeProcess> {
  return startNode({
    dataDir,
    args: ['--s3-endpoint', s3.endpoint, '--s3-bucket', s3.bucket, '--s3-prefix', prefix, '--s3-region', s3.region, '--upload-interval', '1s', '--node-name', name, ...extra],
    env: { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, ...env },
  });
}

async function client(node: NodeProcess): Promise<Client> {
  const c = await connect(node.url, { deadlineMs: 20_000 });
  clients.push(c);
  return c;
}

interface ManifestJson {
  generation: number;
  segments: { name: string; key: string }[];
  checkpoint?: { key: string; through: string; segments: string[]; objects: number };
}

/** The manifests in S3 (oldest first); one deleted by GC while being read is left out. */
function manifests(prefix: string): { file: string; m: ManifestJson }[] {
  const out: { file: string; m: ManifestJson }[] = [];
  for (const f of s3ObjectsUnder(s3, prefix).filter((x) => x.includes('/manifests/'))) {
    try {
      out.push({ file: f, m: JSON.parse(fs.readFileSync(`${s3.dir}/${s3.bucket}/${prefix}/${f}`, 'utf8')) as ManifestJson });
    } catch {
      // deleted meanwhile
    }
  }
  return out;
}

const latest = (prefix: string) => manifests(prefix).at(-1)!.m;
/** An S3 key (under the prefix) as versitygw's file for it. */
const exists = (prefix: string, key: string) => fs.existsSync(`${s3.dir}/${s3.bucket}/${prefix}/${key}`);

async function readAll(c: Client, notes: Note[]): Promise<string[]> {
  const wrong: string[] = [];
  for (const n of notes) {
    const got = await c.get<Note>(n.$oid!).catch((e: Error) => e);
    if (got instanceof Error) wrong.push(`${n.$oid}: ${got.message}`);
    else if (got.n !== n.n || got.text !== n.text) wrong.push(`${n.$oid}: ${got.n}/${got.text}`);
  }
  return wrong;
}

/** Changes notes[i] through `c` (a client that did not load it: it loads its own instance first). */
async function change(c: Client, notes: Note[], i: number, to: string): Promise<void> {
  const mine = await c.get<Note>(notes[i].$oid!);
  mine.text = to;
  await c.save(mine);
  notes[i] = mine;
}

const restoredLine = (node: NodeProcess) => node.logs.find((l) => l.msg === 'restored the log from S3') as { checkpoint: number; replayed: number; segments: number } | undefined;
const text = (i: number, what: string) => `${what} ${i} `.padEnd(900, String.fromCharCode(97 + (i % 26)));

describe('index checkpoints in S3', () => {
  it('a restore loads the checkpoint and replays only the segments after it; every flushed write is there, also after restoring twice', async () => {
    const prefix = `ckpt-restore-${++seq}`;
    const dir = tempDir();
    let node = await s3Node('c1', prefix, dir);
    let c = await client(node);
    const notes: Note[] = [];
    for (let i = 0; i < 300; i++) notes.push(await c.persist(new Note(i, text(i, 'first'))));
    await node.stop(); // graceful: flushes, then writes a checkpoint of everything
    expect(node.logs.some((l) => l.msg === 'index checkpoint written to S3')).toBe(true);
    const atStop = latest(prefix);
    expect(atStop.checkpoint?.through).toBe(atStop.segments.at(-1)!.name);
    expect(atStop.checkpoint!.objects).toBeGreaterThanOrEqual(300);
    const covered = atStop.checkpoint!.segments.length;
    expect(covered).toBeGreaterThan(3);

    // A local restart, more writes (new notes, and changes to old ones), flushed, then the volume is lost.
    node = await s3Node('c1', prefix, dir);
    c = await client(node);
    for (let i = 300; i < 400; i++) notes.push(await c.persist(new Note(i, text(i, 'after the checkpoint'))));
    for (let i = 0; i < 40; i++) await change(c, notes, i, text(i, 'changed'));
    await c.flush();
    await node.kill();
    const before = latest(prefix);
    expect(before.checkpoint?.key).toBe(atStop.checkpoint!.key); // still names its segments: carried forward
    const newer = before.segments.length - covered;
    expect(newer).toBeGreaterThan(0);

    fs.rmSync(dir, { recursive: true, force: true });
    node = await s3Node('c1', prefix, dir);
    expect(restoredLine(node)).toMatchObject({ checkpoint: covered, replayed: newer, segments: before.segments.length });
    expect(await nodeMetric(node, 'loam_s3_restore_checkpoint_segments')).toBe(covered);
    expect(await nodeMetric(node, 'loam_s3_replay_segments')).toBe(newer); // only those were fetched and replayed
    c = await client(node);
    expect(await readAll(c, notes)).toEqual([]);

    // Restored twice: after writes of the restored node (a new generation), and a graceful stop.
    for (let i = 400; i < 450; i++) notes.push(await c.persist(new Note(i, text(i, 'after the restore'))));
    await c.flush();
    await node.kill();
    fs.rmSync(dir, { recursive: true, force: true });
    node = await s3Node('c1', prefix, dir);
    expect(restoredLine(node)!.checkpoint).toBe(covered); // the first checkpoint still stands
    c = await client(node);
    expect(await readAll(c, notes)).toEqual([]);
    await node.stop();
    fs.rmSync(dir, { recursive: true, force: true });
    node = await s3Node('c1', prefix, dir);
    const third = restoredLine(node)!;
    expect(third.replayed).toBe(0); // the stop's checkpoint covers everything
    expect(third.checkpoint).toBe(latest(prefix).segments.length);
    c = await client(node);
    expect(await readAll(c, notes)).toEqual([]);
    await node.stop();
  });

  it('a restart whose checkpointed segments were evicted loads the checkpoint instead of fetching them; local ones stay local', async () => {
    const prefix = `ckpt-evicted-${++seq}`;
    const dir = tempDir();
    const evictAll = ['--disk-cache-size', '0', '--cache-size', '0'];
    let node = await s3Node('c4', prefix, dir, SMALL, evictAll);
    let c = await client(node);
    const notes: Note[] = [];
    for (let i = 0; i < 300; i++) notes.push(await c.persist(new Note(i, text(i, 'evicted'))));
    await c.flush();
    await waitFor(async () => (await nodeMetric(node, 'loam_s3_cache_bytes')) === 0 && (await nodeMetric(node, 'loam_s3_cache_evictions_total')) > 0, 'the segments to be evicted', 15_000, 100);
    await node.stop(); // the checkpoint covers them all
    const covered = latest(prefix).checkpoint!.segments.length;
    // A restart that keeps every segment local writes more; those stay local.
    node = await s3Node('c4', prefix, dir);
    c = await client(node);
    for (let i = 300; i < 360; i++) notes.push(await c.persist(new Note(i, text(i, 'local'))));
    await c.flush();
    await node.kill();
    node = await s3Node('c4', prefix, dir);
    const rec = node.logs.find((l) => l.msg === 'recovered log') as { checkpointSegments?: number; segments: number };
    expect(rec.checkpointSegments).toBe(covered);
    expect(await nodeMetric(node, 'loam_s3_replay_segments')).toBe(0); // nothing fetched to replay: the later segments are local
    expect(node.logs.some((l) => l.msg === 'restoring the log from S3')).toBe(false);
    c = await client(node);
    expect(await readAll(c, notes)).toEqual([]);
    await node.stop();
  });

  it('a corrupted checkpoint is detected by its checksum: the restore replays every segment, counts it, and serves the right data', async () => {
    const prefix = `ckpt-corrupt-${++seq}`;
    const dir = tempDir();
    let node = await s3Node('c2', prefix, dir);
    let c = await client(node);
    const notes: Note[] = [];
    for (let i = 0; i < 200; i++) notes.push(await c.persist(new Note(i, text(i, 'kept'))));
    await node.stop();
    const m = latest(prefix);
    const key = m.checkpoint!.key;
    s3.corrupt(`${prefix}/${key}`, 100, 8);
    fs.rmSync(dir, { recursive: true, force: true });
    node = await s3Node('c2', prefix, dir);
    expect(node.logs.some((l) => l.msg === 'the index checkpoint cannot be used: replaying every segment instead')).toBe(true);
    expect(await nodeMetric(node, 'loam_s3_checkpoint_fallbacks_total')).toBe(1);
    expect(await nodeMetric(node, 'loam_s3_checksum_mismatches_total')).toBeGreaterThan(0);
    expect(restoredLine(node)).toMatchObject({ checkpoint: 0, replayed: m.segments.length });
    expect(await nodeMetric(node, 'loam_s3_replay_segments')).toBe(m.segments.length);
    c = await client(node);
    expect(await readAll(c, notes)).toEqual([]);
    // It is not named again, and GC removes it once no kept manifest (the current one and the two
    // before it) names it: a few more manifests.
    notes.push(await c.persist(new Note(1000, 'after the fallback')));
    await c.flush();
    expect(latest(prefix).checkpoint?.key).not.toBe(key);
    await waitFor(async () => {
      notes.push(await c.persist(new Note(1000 + notes.length, 'one more manifest')));
      await c.flush();
      return !exists(prefix, key);
    }, 'the damaged checkpoint to be deleted', 20_000, 100);
    await node.stop();
    fs.rmSync(dir, { recursive: true, force: true });
    node = await s3Node('c2', prefix, dir);
    expect(restoredLine(node)!.checkpoint).toBeGreaterThan(0); // the stop wrote a good one
    expect(await readAll(await client(node), notes)).toEqual([]);
    await node.stop();
  });

  it('compaction and GC never delete what a kept manifest\'s checkpoint names; a restore after compaction is right, and compaction goes on after it', async () => {
    const prefix = `ckpt-compact-${++seq}`;
    const dir = tempDir();
    const env = { LOAM_SEGMENT_SIZE: '64KiB', LOAM_COMPACTION_INTERVAL: '300ms', LOAM_CHECKPOINT_BYTES: String(128 * 1024) };
    let node = await s3Node('c3', prefix, dir, env);
    let c = await client(node);
    const notes: Note[] = [];
    for (let i = 0; i < 400; i++) notes.push(await c.persist(new Note(i, text(i, 'round 0'))));
    await c.flush();

    /** Every manifest that names a checkpoint has it, and every segment it points into, in S3. */
    const violations = (): string[] => {
      const out: string[] = [];
      for (const { file, m } of manifests(prefix)) {
        const ck = m.checkpoint;
        if (!ck) continue;
        const missing = [ck.key, ...ck.segments].filter((k) => !exists(prefix, k));
        const named = new Set(m.segments.map((s) => s.key));
        const outside = ck.segments.filter((k) => !named.has(k));
        // A manifest GC deleted while we looked is no longer kept: what it named may go.
        if ((missing.length > 0 || outside.length > 0) && exists(prefix, file)) out.push(`${file}: missing ${missing.join(',')} outside ${outside.join(',')}`);
      }
      return out;
    };
    const seen: string[] = [];
    const check = () => seen.push(...violations());

    // Rewrites make the old segments mostly dead: compaction rewrites them (the checkpoints that
    // point into them go stale), uploads the rewrites, GC deletes the old revisions.
    for (let round = 1; round <= 3; round++) {
      for (let i = 0; i < 350; i++) await change(c, notes, i, text(i, `round ${round}`));
      check();
    }
    await c.flush();
    await waitFor(() => {
      check();
      const m = latest(prefix);
      // A checkpoint taken after compaction: it names rewritten segments.
      return m.checkpoint?.segments.some((k) => /-\d+\.seg\.g\d+$/.test(k)) && s3ObjectsUnder(s3, prefix).some((f) => /-\d+\.seg\.g\d+$/.test(f));
    }, 'a checkpoint over compacted segments', 45_000, 100);
    expect(await nodeMetric(node, 'loam_s3_checkpoints_total')).toBeGreaterThan(0);
    check();
    expect(seen).toEqual([]);

    await node.kill();
    const m = latest(prefix);
    fs.rmSync(dir, { recursive: true, force: true });
    node = await s3Node('c3', prefix, dir, env);
    expect(restoredLine(node)!.checkpoint).toBe(m.checkpoint!.segments.length);
    c = await client(node);
    expect(await readAll(c, notes)).toEqual([]);

    // Compaction works on the restored node (segments it never replayed, only loaded from the checkpoint).
    const gen = latest(prefix).generation;
    for (let i = 0; i < 350; i++) await change(c, notes, i, text(i, 'after the restore'));
    await c.flush();
    await waitFor(() => {
      check();
      return s3ObjectsUnder(s3, prefix).some((f) => new RegExp(`-\\d+\\.seg\\.g${gen}$`).test(f));
    }, 'the restored node to compact and upload a rewrite', 45_000, 100);
    expect(await readAll(c, notes)).toEqual([]);
    expect(seen).toEqual([]);
    await node.stop();
    fs.rmSync(dir, { recursive: true, force: true });
    node = await s3Node('c3', prefix, dir, env);
    expect(restoredLine(node)!.replayed).toBe(0);
    expect(await readAll(await client(node), notes)).toEqual([]);
    await node.stop();
  });
});
