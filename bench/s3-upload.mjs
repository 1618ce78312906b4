// s3-upload: background upload throughput of a node's S3 tier (node/src/storage/tier/s3-tier.ts)
// against bare @aws-sdk/client-s3 PutObject of the same object sizes and concurrency, on the
// same versitygw with the same client settings.
//
// A data dir holding SEGMENTS sealed log segments of about 64 MiB (the default maxSegmentBytes:
// neither `loam dev` nor `loam node` has a flag or variable for it) is filled in-process through
// the engine, the active segment sealed so it is empty. Each node round starts `loam dev` on that
// dir with the S3 flags and a fresh `--s3-prefix`: the tier finds every segment missing from S3
// and uploads them in the background (4 at a time, its default). The round lasts from the node's
// `ready` line (the tier's first pass starts just before it) until a manifest naming every
// segment is in S3 (seen in versitygw's directory, polled every 10 ms: polling the node's
// /metrics would cost the node CPU); no client call prods the tier (flush() would: it retries a
// pass every 50 ms). Afterwards /metrics must show exactly those uploads. The raw round PUTs
// objects of exactly the segments' sizes from memory, 4 in flight as a pool. Rounds alternate
// (the order within a pair too); the figure is the median of the per-round ratios.
// Target: >= 0.8x the raw PUT throughput.
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Engine } from '../node/dist/storage/engine.js';
import { newOid } from '../sdk/dist/oid.js';
import { startVersitygw, rawS3, s3Node, putSizesThroughput } from './s3.mjs';
import { startNode, tempDir, scrapeMetrics, metricSum, cpuMsOf, now, median, settle, fmt, bytes, verdict, note } from './lib.mjs';

/** The headline ratio with 3 decimals: 0.895 must not print as 0.90x next to FAIL of >= 0.9x. */
const figure = (x) => `${x.toFixed(3)}x`;

export const name = 's3-upload';
const TARGET = 0.8;
const SEGMENTS = 8; // two waves of the tier's 4 concurrent uploads
const CONCURRENCY = 4; // the tier's DEFAULT_CONCURRENCY
const STATE_BYTES = 64 * 1024;
const PER_COMMIT = 32; // 2 MiB per commit: segments end within 2 MiB of 64 MiB
const SEGMENT_BYTES = 64 * 1024 * 1024; // the engine's default maxSegmentBytes
const ROUNDS = 5;
const POLL_MS = 10;
const NODE_NAME = 'bench-upload';

/** Fills `dir` with SEGMENTS full segments and seals the last, so the active one is empty. */
async function fill(dir) {
  const engine = await Engine.open({ dir, compactionIntervalMs: 0, cacheBytes: 1024 * 1024 });
  try {
    const states = Array.from({ length: PER_COMMIT }, () => randomBytes(STATE_BYTES));
    const log = engine.log; // internal: the SegmentLog, to seal the last segment
    let serial = 0;
    const sealed = () => log.segments().filter((h) => h !== log.activeSegment && log.segmentSize(h) > 0).length;
    // The last segment is sealed by hand when the next commit would no longer fit in it.
    while (sealed() < SEGMENTS - 1 || log.segmentSize(log.activeSegment) + PER_COMMIT * STATE_BYTES + 64 * 1024 <= SEGMENT_BYTES) {
      const writes = states.map((s) => {
        s.writeUInt32LE(serial++, 0);
        return { oid: newOid(1), className: 'BenchBlob', state: s, expectedVersion: 0 };
      });
      await engine.commit({ dataset: 'default', writes });
    }
    await log.seal();
  } finally {
    await engine.close();
  }
  const logDir = path.join(dir, 'log');
  const sizes = fs.readdirSync(logDir).filter((f) => f.endsWith('.seg')).sort().map((f) => fs.statSync(path.join(logDir, f)).size).filter((n) => n > 0);
  if (sizes.length !== SEGMENTS) throw new Error(`filled ${sizes.length} segments, expected ${SEGMENTS}`);
  return sizes;
}

function listDir(dir) {
  try {
    return fs.readdirSync(dir);
  } catch (e) {
    if (e.code === 'ENOENT') return [];
    throw e;
  }
}

/** Segments a manifest file names, or -1 while it does not parse. */
function namedSegments(file) {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')).segments.length;
  } catch {
    return -1;
  }
}

export async function run() {
  const s3 = await startVersitygw();
  const raw = rawS3(s3);
  const dir = tempDir('loam-bench-upload-');
  const t0 = now();
  const sizes = await fill(dir);
  const total = sizes.reduce((a, b) => a + b, 0);
  note(`filled ${SEGMENTS} segments (${sizes.map((n) => bytes(n)).join(', ')}) in ${fmt((now() - t0) / 1000)} s`);

  let round = 0;
  const stats = { cpuMs: [], rawCpuMs: [], manifests: [], nodeMs: [], wave1Ms: [] };
  const measure = {
    raw: async () => {
      const prefix = `raw-${round}/`;
      const c0 = process.cpuUsage();
      const mibps = await putSizesThroughput((key, body) => raw.put(key, body), { sizes, concurrency: CONCURRENCY, prefix });
      const c = process.cpuUsage(c0);
      stats.rawCpuMs.push((c.user + c.system) / 1000);
      await raw.deleteAll(prefix);
      return mibps;
    },
    node: async () => {
      const prefix = `node-${round}`;
      const node = await startNode({ dataDir: dir, ...s3Node(s3, { prefix, nodeName: NODE_NAME }) });
      const start = now();
      const cpu0 = cpuMsOf(node.child.pid);
      // Done when the newest manifest names every segment, seen in versitygw's directory
      // (objects appear there whole: it writes an O_TMPFILE and links it). Polling the node's
      // /metrics instead cost it about 3 ms of CPU a scrape, a fifth of a core at this rate.
      const root = path.join(s3.dir, s3.bucket, prefix, 'nodes', NODE_NAME);
      const timeline = [];
      let manifests = 0;
      for (;;) {
        const segs = listDir(path.join(root, 'segments')).length;
        const ms = listDir(path.join(root, 'manifests')).sort();
        if (!timeline.length || timeline.at(-1).segs !== segs || manifests !== ms.length) timeline.push({ ms: Math.round(now() - start), segs });
        manifests = ms.length;
        if (ms.length && namedSegments(path.join(root, 'manifests', ms.at(-1))) === SEGMENTS) break;
        if (now() - start > 120_000) throw new Error(`uploads did not finish within 120 s: ${segs} segments in S3`);
        await settle(POLL_MS);
      }
      const ms = now() - start;
      const m = await scrapeMetrics(node.metricsPort);
      note(`node round ${round}: ${fmt(ms)} ms; [ms segments-in-S3]: ${timeline.map((t) => `${t.ms} ${t.segs}`).join(', ')}; PUT time sum ${fmt(metricSum(m, 'loam_s3_request_duration_seconds_sum', 'op="create"'))} s`);
      stats.cpuMs.push(cpuMsOf(node.child.pid) - cpu0);
      stats.nodeMs.push(ms);
      stats.wave1Ms.push(timeline.find((t) => t.segs >= CONCURRENCY)?.ms ?? NaN);
      const up = metricSum(m, 'loam_s3_upload_bytes_total');
      if (up !== total || metricSum(m, 'loam_s3_uploads_total') !== SEGMENTS) throw new Error(`node uploaded ${metricSum(m, 'loam_s3_uploads_total')} segments, ${up} bytes; expected ${SEGMENTS}, ${total}`);
      stats.manifests.push(metricSum(m, 'loam_s3_request_duration_seconds_count', 'op="create"') - SEGMENTS);
      if (metricSum(m, 'loam_s3_upload_failures_total') > 0) note(`node round ${round}: ${metricSum(m, 'loam_s3_upload_failures_total')} failed upload attempts`);
      await node.stop();
      await raw.deleteAll(`${prefix}/`);
      return (total / (1024 * 1024)) / (ms / 1000);
    },
  };
  // Warm-up of each (the node's first start also pays for cold module loading).
  await measure.raw();
  round++;
  await measure.node();
  round++;
  Object.assign(stats, { cpuMs: [], rawCpuMs: [], manifests: [], nodeMs: [], wave1Ms: [] });
  const results = { raw: [], node: [] };
  const ratios = [];
  for (let r = 0; r < ROUNDS; r++, round++) {
    for (const side of r % 2 ? ['node', 'raw'] : ['raw', 'node']) results[side].push(await measure[side]());
    ratios.push(results.node[r] / results.raw[r]);
  }
  const rt = median(ratios);
  note(`raw: ${results.raw.map(fmt).join(' ')} MiB/s; node: ${results.node.map(fmt).join(' ')} MiB/s; ratios ${ratios.map(fmt).join(' ')}`);
  return (
    `${name}: ${figure(rt)} raw PutObject, target >= ${TARGET}x (${verdict(rt >= TARGET)})` +
    ` | node's background upload ${fmt(median(results.node))} MiB/s vs bare PutObject ${fmt(median(results.raw))} MiB/s (medians);` +
    ` ${SEGMENTS} sealed segments of ${bytes(Math.min(...sizes))}-${bytes(Math.max(...sizes))} (${bytes(total)}; 64 MiB maxSegmentBytes, the default: no flag sets it),` +
    ` ${CONCURRENCY} in flight on both sides; node timed from its ready line until a manifest naming every segment is in versitygw's directory (polled every ${POLL_MS} ms; nothing calls flush),` +
    ` median ${fmt(median(stats.nodeMs) / 1000)} s (the first ${CONCURRENCY} segments in S3 after ${fmt(median(stats.wave1Ms) / 1000)} s: the tier uploads in waves of ${CONCURRENCY}), ${fmt(median(stats.manifests))} manifest PUTs, node CPU ${fmt(median(stats.cpuMs) / 1000)} s per round vs ${fmt(median(stats.rawCpuMs) / 1000)} s of the raw client's;` +
    ` median of ${ROUNDS} per-round ratios (pairs back to back, order alternating) after a warm-up each; versitygw on a temp dir, same client settings`
  );
}
