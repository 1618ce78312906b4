// s3-restore: a node holding 1,000,000 small objects (restart-1m's data: filled in-process
// through the engine, 10,000 per commit, ~200-byte states) restored from S3 onto an empty data
// directory: spawn of `loam dev` with the S3 flags and the same --node-name on an empty dir until
// its `ready` line (printed after the restore and log recovery). Baseline: the local restart of
// the same data in the same run, the same command line on the data dir that still holds the log.
// The data goes to S3 once first (a node with the S3 tier on the filled dir, client.flush(),
// stop: the graceful stop writes an index checkpoint of everything). Each restore loads that
// checkpoint (it must: the bench fails otherwise) and replays only the segments after it (none
// here), leaving the segments in S3 to be read on demand; the local restart replays its log.
// Then STARTS pairs, order alternating; each restore gets a fresh empty dir (removed after).
// The figure is the median of the per-pair ratios. Target: <= 1.5x the local restart.
import fs from 'node:fs';
import { connect } from '@loam/sdk';
import { fill, OBJECTS } from './restart.mjs';
import { startVersitygw, s3Node } from './s3.mjs';
import { startNode, tempDir, scrapeMetrics, metricSum, now, median, fmt, bytes, verdict, note } from './lib.mjs';

/** The headline ratio with 3 decimals: 0.895 must not print as 0.90x next to FAIL of >= 0.9x. */
const figure = (x) => `${x.toFixed(3)}x`;

export const name = 's3-restore';
const TARGET = 1.5;
const STARTS = 3;
const NODE_NAME = 'bench-restore';

export async function run() {
  const s3 = await startVersitygw();
  const flags = s3Node(s3, { prefix: 'restore', nodeName: NODE_NAME });
  const dir = tempDir('loam-bench-s3restore-');
  const t0 = now();
  const filled = await fill(dir);
  const fillS = (now() - t0) / 1000;

  // Into S3: the first start with the tier uploads every segment; flush() returns once a
  // manifest names them all.
  const t1 = now();
  const first = await startNode({ dataDir: dir, timeoutMs: 180_000, ...flags });
  const client = await connect(first.url);
  await client.flush({ timeoutMs: 180_000 });
  await client.close();
  const m = await scrapeMetrics(first.metricsPort);
  const uploaded = metricSum(m, 'loam_s3_upload_bytes_total');
  const segments = metricSum(m, 'loam_s3_uploads_total');
  await first.stop();
  const uploadS = (now() - t1) / 1000;
  const ckpt = first.logs.find((l) => l.msg === 'index checkpoint in S3');
  if (!ckpt) throw new Error(`the stop wrote no index checkpoint: ${JSON.stringify(first.logs.slice(-10))}`);
  note(`index checkpoint: ${bytes(Number(ckpt.bytes))} for ${ckpt.objects} objects over ${ckpt.segments} segments, captured (seal + encode, one synchronous step) in ${ckpt.captureMs} ms`);
  note(`filled ${filled.objects} objects (${bytes(filled.diskBytes)}) in ${fmt(fillS)} s; into S3 (${segments} segments, ${bytes(uploaded)}) in ${fmt(uploadS)} s including that node's start`);
  if (uploaded < filled.diskBytes * 0.99) throw new Error(`uploaded ${uploaded} bytes of a ${filled.diskBytes}-byte log`);

  const starts = {
    local: async () => {
      const node = await startNode({ dataDir: dir, timeoutMs: 180_000, ...flags });
      const rec = node.logs.find((l) => l.msg === 'recovered log');
      if (node.logs.some((l) => l.msg === 'restoring the log from S3')) throw new Error('the local restart restored from S3');
      await node.stop();
      return { ms: node.readyMs, recoveryMs: Number(rec?.ms), objects: Number(rec?.objects) };
    },
    restore: async () => {
      const empty = tempDir('loam-bench-s3restore-empty-');
      const node = await startNode({ dataDir: empty, timeoutMs: 180_000, ...flags });
      const rec = node.logs.find((l) => l.msg === 'recovered log');
      const restored = node.logs.find((l) => l.msg === 'restored the log from S3');
      if (!restored) throw new Error(`the node on an empty dir did not restore from S3: ${JSON.stringify(node.logs).slice(0, 2000)}`);
      if (!(Number(restored.checkpoint) > 0)) throw new Error(`the restore did not use the index checkpoint: ${JSON.stringify(node.logs).slice(0, 2000)}`);
      const loading = node.logs.find((l) => l.msg === 'loading the index checkpoint');
      await node.stop();
      fs.rmSync(empty, { recursive: true, force: true });
      return {
        ms: node.readyMs, recoveryMs: Number(rec?.ms), objects: Number(rec?.objects), downloadMs: Number(restored.ms), bytes: Number(restored.bytes),
        fetchMs: Number(loading?.fetchMs), covered: Number(restored.checkpoint), replayed: Number(restored.replayed),
      };
    },
  };
  const res = { local: [], restore: [] };
  const ratios = [];
  for (let r = 0; r < STARTS; r++) {
    for (const side of r % 2 ? ['restore', 'local'] : ['local', 'restore']) {
      const out = await starts[side]();
      if (out.objects !== OBJECTS) throw new Error(`${side} start recovered ${out.objects} objects, expected ${OBJECTS}`);
      res[side].push(out);
    }
    ratios.push(res.restore[r].ms / res.local[r].ms);
  }
  const rt = median(ratios);
  const med = (side, k) => median(res[side].map((x) => x[k]));
  note(`local ready ms: ${res.local.map((x) => fmt(x.ms)).join(' ')}; restore ready ms: ${res.restore.map((x) => fmt(x.ms)).join(' ')} (log open from S3 ${res.restore.map((x) => fmt(x.downloadMs)).join(' ')}, of which checkpoint fetch ${res.restore.map((x) => fmt(x.fetchMs)).join(' ')}); ratios ${ratios.map(fmt).join(' ')}`);
  return (
    `${name}: ${figure(rt)} local restart, target <= ${TARGET}x (${verdict(rt <= TARGET)})` +
    ` | ${OBJECTS} objects, ${bytes(filled.diskBytes)} log in ${segments} segments in S3 (versitygw):` +
    ` restore onto an empty dir with the index checkpoint (${res.restore[0].covered} segments from it, ${res.restore[0].replayed} replayed; ${bytes(Number(ckpt.bytes))})` +
    ` ready in ${fmt(med('restore', 'ms') / 1000)} s (opening the log from S3 ${fmt(med('restore', 'downloadMs') / 1000)} s, checkpoint fetch ${fmt(med('restore', 'fetchMs') / 1000)} s)` +
    ` vs local restart ${fmt(med('local', 'ms') / 1000)} s (log recovery ${fmt(med('local', 'recoveryMs') / 1000)} s), spawn to ready line, same flags;` +
    ` median of ${STARTS} per-pair ratios, order alternating; fill ${fmt(fillS)} s, first upload ${fmt(uploadS)} s`
  );
}
