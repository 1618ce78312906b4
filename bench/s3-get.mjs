// s3-get: gets with the S3 tier on, two figures, each against a baseline of the same run.
// - evicted: sequential client.get of objects whose segments are only in S3 (--disk-cache-size 0,
//   --cache-size 0, more objects than the 32 MiB block cache holds, read in order so every block
//   is fetched), against a raw ranged GET of the same number of bytes of the same kind of object
//   on the same versitygw. Target <= 3x.
// - cached: client.get of a small object on a node with S3 (all local) against the same on a node
//   without S3, alternating rounds. Target <= 1.05x.
import { connect, Persistent, registerModel } from '@loam/sdk';
import { BenchPerson, startNode, now, gc, settle, fmt, ratio, verdict, note, median, scrapeMetrics, metricSum } from './lib.mjs';
import { startVersitygw, rawS3 } from './s3.mjs';

export const name = 's3-get';
const EVICTED_TARGET = 3;
const CACHED_TARGET = 1.05;
const OBJECT_BYTES = 100 * 1024;
const OBJECTS = 400; // 40 MiB: more than the block cache
const CACHED_ROUNDS = 7;
const CACHED_PER_ROUND = 1000;

class Blob extends Persistent {
  constructor(i, data) {
    super();
    this.i = i;
    this.data = data;
  }
}
registerModel(Blob, 'BenchS3Get.Blob');

function s3Args(s3, prefix, extra = []) {
  return ['--s3-endpoint', s3.endpoint, '--s3-bucket', s3.bucket, '--s3-prefix', prefix, '--s3-region', s3.region, '--node-name', prefix, ...extra];
}

async function waitMetric(port, metric, ok, what, ms = 60_000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = metricSum(await scrapeMetrics(port), metric);
    if (ok(v)) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what} (${metric} = ${v})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function run() {
  const s3 = await startVersitygw();
  process.env.AWS_ACCESS_KEY_ID = s3.accessKeyId;
  process.env.AWS_SECRET_ACCESS_KEY = s3.secretAccessKey;
  const raw = rawS3(s3);

  // ---- evicted
  const evictedNode = await startNode({ args: s3Args(s3, 'evicted', ['--upload-interval', '1s', '--disk-cache-size', '0', '--cache-size', '0']) });
  const c = await connect(evictedNode.url);
  const blobs = [];
  const data = 'z'.repeat(OBJECT_BYTES);
  for (let i = 0; i < OBJECTS; i++) blobs.push(await c.persist(new Blob(i, data)));
  await c.flush();
  await waitMetric(evictedNode.metricsPort, 'loam_s3_cache_bytes', (v) => v === 0, 'every segment to be evicted');
  const misses0 = metricSum(await scrapeMetrics(evictedNode.metricsPort), 'loam_s3_remote_reads_total', 'miss');
  // The raw baseline: ranged GETs of OBJECT_BYTES at random offsets of an object like a segment.
  const segmentLike = Buffer.alloc(16 * 1024 * 1024, 7);
  await raw.put('raw/segment', segmentLike);
  const rawGet = async () => {
    const off = Math.floor(Math.random() * (segmentLike.length - OBJECT_BYTES));
    await raw.rangedGet('raw/segment', off, OBJECT_BYTES);
  };
  for (let i = 0; i < 20; i++) await rawGet();
  const getMs = [];
  const rawMs = [];
  // Alternate blocks of 50 gets and 50 raw GETs; the gets walk the objects in log order once.
  for (let i = 0; i < OBJECTS; i += 50) {
    gc();
    let t0 = now();
    for (let j = i; j < Math.min(i + 50, OBJECTS); j++) {
      const o = await c.get(blobs[j].$oid);
      if (o.i !== j) throw new Error('wrong object');
    }
    getMs.push((now() - t0) / Math.min(50, OBJECTS - i));
    t0 = now();
    for (let j = 0; j < 50; j++) await rawGet();
    rawMs.push((now() - t0) / 50);
  }
  const misses = metricSum(await scrapeMetrics(evictedNode.metricsPort), 'loam_s3_remote_reads_total', 'miss') - misses0;
  const ratios = getMs.map((g, k) => g / rawMs[k]);
  const evictedRatio = median(ratios);
  await c.close();
  await evictedNode.stop();

  // ---- cached
  const withS3 = await startNode({ args: s3Args(s3, 'cached') }); // the default upload interval, 5 s
  const without = await startNode();
  const cs = await connect(withS3.url);
  const cl = await connect(without.url);
  const a = await cs.persist(new BenchPerson(1));
  const b = await cl.persist(new BenchPerson(1));
  const getS3 = () => cs.get(a.$oid);
  const getLocal = () => cl.get(b.$oid);
  for (let i = 0; i < 2000; i++) {
    await getS3();
    await getLocal();
  }
  const cachedRatios = [];
  for (let r = 0; r < CACHED_ROUNDS; r++) {
    gc();
    await settle(20);
    const first = r % 2 === 0 ? getS3 : getLocal;
    const second = r % 2 === 0 ? getLocal : getS3;
    let t0 = now();
    for (let i = 0; i < CACHED_PER_ROUND; i++) await first();
    const t1 = now() - t0;
    t0 = now();
    for (let i = 0; i < CACHED_PER_ROUND; i++) await second();
    const t2 = now() - t0;
    cachedRatios.push(r % 2 === 0 ? t1 / t2 : t2 / t1);
  }
  const cachedRatio = median(cachedRatios);
  await cs.close();
  await cl.close();
  await withS3.stop();
  await without.stop();
  note(`s3-get evicted ratios per block: ${ratios.map((x) => x.toFixed(2)).join(' ')}; cached: ${cachedRatios.map((x) => x.toFixed(3)).join(' ')}`);
  return [
    `${name} evicted: ${fmt(median(getMs))} ms/get = ${ratio(evictedRatio)} a raw ranged GET of ${OBJECT_BYTES / 1024} KiB ${fmt(median(rawMs))} ms, target <= ${EVICTED_TARGET}x (${verdict(evictedRatio <= EVICTED_TARGET)})` +
      ` | ${OBJECTS} objects of ${OBJECT_BYTES / 1024} KiB read in log order from evicted segments (--disk-cache-size 0, --cache-size 0), ${misses} block fetches of 256 KiB from S3; median of per-block ratios`,
    `${name} cached: ${ratio(cachedRatio)} the same get on a node without S3, target <= ${CACHED_TARGET}x (${verdict(cachedRatio <= CACHED_TARGET)})` +
      ` | ${CACHED_ROUNDS} alternating rounds of ${CACHED_PER_ROUND} sequential gets of one small object each, median of per-round ratios`,
  ];
}
