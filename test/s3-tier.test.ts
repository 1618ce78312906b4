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
registerModel(Note, 'S3Tier.Note');

let s3: S3Server;
const clients: Client[] = [];
beforeAll(async () => {
  s3 = await startS3();
});
afterAll(async () => {
  for (const c of clients) await c.close().catch(() => undefined);
});

let seq = 0;
/** A single node (`loam dev`) with the S3 tier on the test's versitygw, under a prefix of its own. */
function s3Node(name: string, prefix: string, dataDir = tempDir(), extra: string[] = [], env: Record<string, string> = {}, onLog?: (e: Record<string, unknown>) => void): Promise<NodeProcess> {
  return startNode({
    dataDir,
    onLog,
    args: ['--s3-endpoint', s3.endpoint, '--s3-bucket', s3.bucket, '--s3-prefix', prefix, '--s3-region', s3.region, '--upload-interval', '1s', '--node-name', name, ...extra],
    env: { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, ...env },
  });
}

async function client(node: NodeProcess): Promise<Client> {
  const c = await connect(node.url, { deadlineMs: 20_000 });
  clients.push(c);
  return c;
}

async function readAll(c: Client, notes: Note[]): Promise<string[]> {
  const wrong: string[] = [];
  for (const n of notes) {
    const got = await c.get<Note>(n.$oid!).catch((e: Error) => e);
    if (got instanceof Error) wrong.push(`${n.$oid}: ${got.message}`);
    else if (got.n !== n.n || got.text !== n.text) wrong.push(`${n.$oid}: ${got.n}/${got.text}`);
  }
  return wrong;
}

describe('the S3 tier', () => {
  it('uploads in the background, flush() waits for S3, and a node whose data directory is gone restores from S3', async () => {
    const prefix = `restore-${++seq}`;
    const dir = tempDir();
    let node = await s3Node('n1', prefix, dir);
    let c = await client(node);
    const notes: Note[] = [];
    for (let i = 0; i < 300; i++) notes.push(await c.persist(new Note(i, `note ${i}`.repeat(10))));
    const res = await c.flush();
    expect(res).toEqual({ nodes: 1, s3: 1 });
    expect(s3ObjectsUnder(s3, prefix).some((f) => f.includes('manifests/'))).toBe(true);
    // Written after the flush, not flushed: in S3 within the upload interval all the same.
    for (let i = 300; i < 320; i++) notes.push(await c.persist(new Note(i, `late ${i}`)));
    await waitFor(async () => (await nodeMetric(node, 'loam_s3_upload_backlog_bytes')) === 0, 'the upload backlog to drain', 15_000, 100);

    await node.kill(); // kill -9: nothing more is uploaded
    fs.rmSync(dir, { recursive: true, force: true });
    node = await s3Node('n1', prefix, dir);
    expect(node.logs.some((l) => l.msg === 'restored the log from S3')).toBe(true);
    expect(await nodeMetric(node, 'loam_s3_replay_segments')).toBeGreaterThan(0);
    expect(await nodeMetric(node, 'loam_s3_replay_segments_done')).toBe(await nodeMetric(node, 'loam_s3_replay_segments'));
    c = await client(node);
    expect(await readAll(c, notes)).toEqual([]);
    // It goes on as itself: new writes, uploaded under a new generation.
    notes.push(await c.persist(new Note(1000, 'after the restore')));
    await c.flush();
    expect(await nodeMetric(node, 'loam_s3_generation')).toBe(2);
    // And a second loss of the volume keeps what came after the first (it went to a new segment,
    // not into the restored last one, which S3 already held under its name).
    await node.kill();
    fs.rmSync(dir, { recursive: true, force: true });
    node = await s3Node('n1', prefix, dir);
    c = await client(node);
    expect(await readAll(c, notes)).toEqual([]);
    await node.stop();
  });

  it('keeps taking writes while S3 is down; the backlog grows, then drains when S3 is back; nothing is lost', async () => {
    const prefix = `outage-${++seq}`;
    const dir = tempDir();
    let node = await s3Node('n2', prefix, dir);
    let c = await client(node);
    const notes: Note[] = [await c.persist(new Note(0, 'before'))];
    await c.flush();
    await s3.kill();
    try {
      for (let i = 1; i <= 200; i++) notes.push(await c.persist(new Note(i, `during the outage ${i}`)));
      await waitFor(async () => (await nodeMetric(node, 'loam_s3_upload_backlog_bytes')) > 0 && (await nodeMetric(node, 'loam_s3_upload_backlog_age_seconds')) >= 1,
        'the backlog to show the outage', 15_000, 100);
      expect(await nodeMetric(node, 'loam_s3_upload_failures_total')).toBeGreaterThan(0);
    } finally {
      await s3.restart();
    }
    await waitFor(async () => (await nodeMetric(node, 'loam_s3_upload_backlog_bytes')) === 0, 'the backlog to drain after S3 is back', 30_000, 100);
    await node.kill();
    fs.rmSync(dir, { recursive: true, force: true });
    node = await s3Node('n2', prefix, dir);
    c = await client(node);
    expect(await readAll(c, notes)).toEqual([]);
    await node.stop();
  });

  it('keeps local segment bytes within --disk-cache-size for a working set several times larger; every read is right, also after a restart and compaction', async () => {
    const prefix = `cache-${++seq}`;
    const dir = tempDir();
    const bound = 1024 * 1024;
    const env = { LOAM_SEGMENT_SIZE: '512KiB', LOAM_COMPACTION_INTERVAL: '300ms' };
    let node = await s3Node('n4', prefix, dir, ['--disk-cache-size', '1MiB', '--cache-size', '1MiB'], env);
    let c = await client(node);
    const notes: Note[] = [];
    const big = (i: number, round: number) => `${round}:${i}:`.padEnd(4000, String.fromCharCode(97 + (i % 26)));
    for (let i = 0; i < 900; i++) notes.push(await c.persist(new Note(i, big(i, 0)))); // ~3.6 MiB: 3.5 times the bound
    await c.flush();
    await waitFor(async () => (await nodeMetric(node, 'loam_s3_cache_bytes')) <= bound && (await nodeMetric(node, 'loam_s3_cache_evictions_total')) > 0,
      'the cache to come down to its bound', 20_000, 100);
    expect(await readAll(c, notes)).toEqual([]); // read back from S3 where evicted (the object cache is 1 MiB too)
    expect(await nodeMetric(node, 'loam_s3_remote_reads_total')).toBeGreaterThan(0);
    expect(await nodeMetric(node, 'loam_s3_cache_bytes')).toBeLessThanOrEqual(bound + 512 * 1024); // at most one segment over until the next pass

    // Rewrite most objects: the old segments, evicted, are mostly dead and get compacted.
    for (const n of notes.slice(0, 700)) {
      n.text = big(n.n, 1);
      await c.save(n);
    }
    await c.flush();
    // Compaction rewrote segments that were only in S3 (fetched whole), and the rewrites went up.
    await waitFor(async () => s3ObjectsUnder(s3, prefix).some((f) => /-\d+\.seg\.g\d+$/.test(f)) && (await nodeMetric(node, 'loam_s3_cache_bytes')) <= bound,
      'compacted segments in S3, and the cache within its bound', 30_000, 200);
    expect(await readAll(c, notes)).toEqual([]);

    // A restart replays the evicted segments from S3.
    await node.kill();
    node = await s3Node('n4', prefix, dir, ['--disk-cache-size', '1MiB', '--cache-size', '1MiB'], env);
    c = await client(node);
    expect(await readAll(c, notes)).toEqual([]);
    await node.stop();
  });

  it('a record read from an evicted segment that S3 corrupted is refused (typed), never served, and reported', async () => {
    const prefix = `corrupt-read-${++seq}`;
    const node = await s3Node('n5', prefix, tempDir(), ['--disk-cache-size', '0', '--cache-size', '0']);
    const c = await client(node);
    const notes: Note[] = [];
    for (let i = 0; i < 40; i++) notes.push(await c.persist(new Note(i, 'y'.repeat(100))));
    await c.flush();
    await waitFor(async () => (await nodeMetric(node, 'loam_s3_cache_bytes')) === 0 && (await nodeMetric(node, 'loam_s3_cache_evictions_total')) > 0, 'every uploaded segment to be evicted', 15_000, 100);
    const segment = s3ObjectsUnder(s3, prefix).find((f) => f.includes('segments/'))!;
    s3.corrupt(`${prefix}/${segment}`, 300, 4);
    // One at a time (concurrent gets share one request, which fails as a whole).
    const outcomes: string[] = [];
    for (const n of notes) outcomes.push(await c.get<Note>(n.$oid!).then((got) => (got.n === n.n && got.text === n.text ? 'right' : 'WRONG'), (e: Error) => `${e.name}: ${e.message}`));
    expect(outcomes, JSON.stringify(outcomes)).not.toContain('WRONG');
    expect(outcomes.some((o) => o.startsWith('UnavailableError')), JSON.stringify(outcomes.slice(0, 3))).toBe(true);
    expect(outcomes.filter((o) => o === 'right').length, JSON.stringify(outcomes.slice(0, 3))).toBeGreaterThan(30); // only the damaged records fail
    expect(await nodeMetric(node, 'loam_s3_checksum_mismatches_total')).toBeGreaterThan(0);
    await node.stop();
  });

  it('a node killed with uploads in flight redoes them at restart: the manifest stays readable, no segment is named twice or lost, leftovers are swept', async () => {
    const prefix = `inflight-${++seq}`;
    const dir = tempDir();
    let node = await s3Node('n6', prefix, dir);
    let c = await client(node);
    const notes: Note[] = [];
    for (let i = 0; i < 100; i++) notes.push(await c.persist(new Note(i, 'before')));
    await c.flush();
    await s3.freeze(); // uploads hang in flight
    try {
      for (let i = 100; i < 300; i++) notes.push(await c.persist(new Note(i, 'in flight')));
      await waitFor(async () => (await nodeMetric(node, 'loam_s3_upload_backlog_age_seconds')) >= 1.5, 'a sealed segment with its upload hanging', 15_000, 100);
      await node.kill();
    } finally {
      await s3.thaw();
    }
    node = await s3Node('n6', prefix, dir);
    c = await client(node);
    await c.flush();
    const manifests = s3ObjectsUnder(s3, prefix).filter((f) => f.includes('manifests/'));
    const latest = JSON.parse(fs.readFileSync(`${s3.dir}/${s3.bucket}/${prefix}/${manifests.at(-1)}`, 'utf8')) as { generation: number; segments: { name: string; key: string }[] };
    expect(latest.generation).toBe(2);
    const names = latest.segments.map((x) => x.name);
    expect(new Set(names).size).toBe(names.length);
    const present = new Set(s3ObjectsUnder(s3, prefix).map((f) => `nodes/n6/${f.slice(f.indexOf('segments/'))}`));
    for (const x of latest.segments) expect(present.has(x.key), x.key).toBe(true);
    // Whatever the killed process left half done is garbage that no manifest names: swept.
    await waitFor(() => {
      const named = new Set(latest.segments.map((x) => x.key.split('/').pop()));
      return s3ObjectsUnder(s3, prefix).filter((f) => f.includes('segments/')).every((f) => named.has(f.split('/').pop()));
    }, 'unnamed uploads to be swept', 15_000, 200);
    expect(latest.segments.some((x) => x.key.endsWith('.g2'))).toBe(true); // the hung uploads, redone by the new start
    await node.kill();
    fs.rmSync(dir, { recursive: true, force: true });
    node = await s3Node('n6', prefix, dir);
    expect(await readAll(await client(node), notes)).toEqual([]);
    await node.stop();
  });

  it('a node that restarts while S3 is down waits for its manifest (logged), then starts with everything', async () => {
    const prefix = `down-at-start-${++seq}`;
    const dir = tempDir();
    let node = await s3Node('n7', prefix, dir, ['--disk-cache-size', '0']);
    let c = await client(node);
    const notes: Note[] = [];
    for (let i = 0; i < 50; i++) notes.push(await c.persist(new Note(i, 'kept in S3 only')));
    await c.flush();
    await waitFor(async () => (await nodeMetric(node, 'loam_s3_cache_bytes')) === 0, 'the segments to be evicted', 15_000, 100);
    await node.kill();
    await s3.kill();
    let waiting = false;
    const starting = s3Node('n7', prefix, dir, ['--disk-cache-size', '0'], {}, (e) => {
      if (String(e.msg).startsWith('S3 is unreachable')) waiting = true;
    });
    try {
      await waitFor(() => waiting, 'the node to say it waits for S3', 15_000, 50);
    } finally {
      await s3.restart();
    }
    node = await starting;
    c = await client(node);
    expect(await readAll(c, notes)).toEqual([]);
    await node.stop();
  });

  it('an object corrupted in S3 is detected by its checksum and never used', async () => {
    const prefix = `corrupt-${++seq}`;
    const dir = tempDir();
    const node = await s3Node('n3', prefix, dir);
    const c = await client(node);
    for (let i = 0; i < 50; i++) await c.persist(new Note(i, 'x'.repeat(100)));
    await c.flush();
    await node.kill();
    const segment = s3ObjectsUnder(s3, prefix).find((f) => f.includes('segments/'))!;
    expect(segment).toBeDefined();
    s3.corrupt(`${prefix}/${segment}`, 200);
    fs.rmSync(dir, { recursive: true, force: true });
    // The restore downloads it three times, then refuses: a node never starts on damaged data.
    const err = await s3Node('n3', prefix, dir).then(() => undefined, (e: Error) => e);
    expect(err?.message).toMatch(/does not match its checksum/);
    expect(fs.readdirSync(`${dir}/log`).filter((f) => f.endsWith('.seg'))).toEqual([]);
  });
});
