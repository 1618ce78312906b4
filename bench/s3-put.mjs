// s3-put: S3ObjectStore.create (Loam's object-store seam, node/src/storage/s3-object-store.ts)
// against bare @aws-sdk/client-s3 PutObject of the same bodies, sizes and concurrency, on the
// same versitygw, with the same client settings (checksums WHEN_REQUIRED on both sides): the
// seam's own cost on the upload path. Rounds alternate, after a warm-up of each; housekeeping
// (deleting a round's objects) is untimed. The figure is the median of the per-round ratios
// (each round's pair runs back to back, so load from other processes mostly cancels out).
// Target: >= 0.9x raw PUT throughput.
import { randomBytes } from 'node:crypto';
import { S3ObjectStore } from '../node/dist/storage/s3-object-store.js';
import { startVersitygw, rawS3, putThroughput, rangedGetMs } from './s3.mjs';
import { median, fmt, ratio, bytes, verdict, note, onCleanup } from './lib.mjs';

export const name = 's3-put';
const TARGET = 0.9;
const SIZE = 8 * 1024 * 1024;
const CONCURRENCY = 4;
const COUNT = 6; // objects per round: 48 MiB
const ROUNDS = 7;
const GET_BYTES = 64 * 1024;

export async function run() {
  const s3 = await startVersitygw();
  const raw = rawS3(s3);
  const store = new S3ObjectStore({
    bucket: s3.bucket,
    endpoint: s3.endpoint,
    region: s3.region,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
  });
  onCleanup(() => store.close());
  const sides = {
    raw: (key, body) => raw.put(key, body),
    ours: (key, body) => store.create(key, body),
  };
  const results = { raw: [], ours: [] };
  const ratios = [];
  let round = 0;
  const measure = async (side) => {
    const prefix = `${side}-${round++}/`;
    const mibps = await putThroughput(sides[side], { size: SIZE, concurrency: CONCURRENCY, count: COUNT, prefix });
    await raw.deleteAll(prefix);
    return mibps;
  };
  await measure('raw');
  await measure('ours');
  for (let r = 0; r < ROUNDS; r++) {
    // Alternate which side goes first, so a drift over the run does not favour one.
    for (const side of r % 2 ? ['ours', 'raw'] : ['raw', 'ours']) results[side].push(await measure(side));
    ratios.push(results.ours[r] / results.raw[r]);
  }
  const ours = median(results.ours);
  const base = median(results.raw);
  const rt = median(ratios);

  // Also (no target): a 64 KiB ranged GET of an 8 MiB object, the read the S3 tier's cache misses
  // will make, bare vs through the seam: blocks of 25 alternating, the first of each a warm-up.
  await raw.put('ranged', randomBytes(SIZE));
  const get = { raw: (off, len) => raw.rangedGet('ranged', off, len), ours: (off, len) => store.get('ranged', { offset: off, length: len }) };
  const getMs = { raw: [], ours: [] };
  for (let b = 0; b < 4; b++) for (const side of ['raw', 'ours']) getMs[side].push(await rangedGetMs(get[side], { objectSize: SIZE, length: GET_BYTES, count: 25 }));
  note(`raw: ${results.raw.map(fmt).join(' ')} MiB/s; S3ObjectStore: ${results.ours.map(fmt).join(' ')} MiB/s`);
  return (
    `${name}: ${ratio(rt)} raw PutObject, target >= ${TARGET}x (${verdict(rt >= TARGET)})` +
    ` | S3ObjectStore.create (If-None-Match: *) ${fmt(ours)} MiB/s vs bare @aws-sdk/client-s3 PutObject ${fmt(base)} MiB/s (medians),` +
    ` ${bytes(SIZE)} objects, ${CONCURRENCY} in flight, ${COUNT} per round; median of ${ROUNDS} per-round ratios (pairs back to back,` +
    ` order alternating) after a warm-up each; versitygw on a temp dir, same client settings (checksums WHEN_REQUIRED, keep-alive);` +
    ` ${bytes(GET_BYTES)} ranged GET: ${fmt(median(getMs.ours.slice(1)))} ms through the seam vs ${fmt(median(getMs.raw.slice(1)))} ms bare`
  );
}
