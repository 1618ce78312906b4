// s3-writes: persist-10k and save-64 (as bench/persist.mjs and bench/save.mjs measure them) on a
// node with the S3 tier on (versitygw, the default --upload-interval 5s and 64 MiB segments)
// against the same node with S3 off, both `loam dev` children, same run, rounds alternating.
//
// The tier's cost comes in bursts: the active segment is sealed once its first write is half
// the upload interval old (2.5 s), then uploaded (read, CRC, PUT, manifest). A round that is
// shorter than that, or that starts from a drained backlog, would miss most of it. So each round
// of a side first writes for PREROLL_MS unmeasured (the tier's lag fills: seals and uploads are
// under way), then WINDOW_MS measured with writes going on exactly the same way, and only then
// drains the S3 node (untimed: client.flush(), then its upload backlog must be 0), so that its
// uploads never fall into the other node's round. The line says how many bytes the S3 node
// uploaded during pre-rolls, windows and flushes: a window carrying the tier's steady-state share
// of upload work gets about window / (pre-roll + window) of them.
//  - persist: back-to-back `client.persist(root)` of 10,000 new BenchPerson objects; objects/s =
//    objects / sum of the persist() times in the window (roots built between calls, untimed).
//  - save: 64 workers on one client, each changing a field of its own object and awaiting
//    `client.save(obj)`; saves/s over the window.
// The figure of each is the median of the per-round ratios. Target: >= 0.9x each.
import { connect } from '@loam/sdk';
import { startVersitygw, s3Node } from './s3.mjs';
import {
  BenchBatch, BenchPerson, startNode, concurrentRate, cpuMsOf, scrapeMetrics, metricSum, now, median, gc, settle, fmt, ratio, bytes, verdict, note,
} from './lib.mjs';

/** The headline ratio with 3 decimals: 0.895 must not print as 0.90x next to FAIL of >= 0.9x. */
const figure = (x) => `${x.toFixed(3)}x`;

export const name = 's3-writes';
const TARGET = 0.9;
const N = 10_000;
const WORKERS = 64;
const PREROLL_MS = 2000;
const WINDOW_MS = 2500;
const ROUNDS = 7;

let serial = 0;
function makeRoot() {
  const items = new Array(N);
  for (let i = 0; i < N; i++) items[i] = new BenchPerson(serial++);
  return new BenchBatch(items);
}

/** Back-to-back persists for `ms`: objects per second of persist() time, and the calls made. */
async function persistFor(client, ms) {
  let busy = 0;
  let calls = 0;
  const end = now() + ms;
  while (now() < end) {
    const root = makeRoot();
    const t0 = now();
    await client.persist(root);
    busy += now() - t0;
    calls++;
    if (root.items[N - 1].$oid === undefined) throw new Error('persist did not assign oids');
  }
  return { rate: (calls * N * 1000) / busy, msPer: busy / calls, writes: calls * N };
}

/** Until the S3 node's upload backlog is 0: flush() seals the active segment and uploads it now. */
async function drained(client, node) {
  await client.flush({ timeoutMs: 120_000 });
  const b = metricSum(await scrapeMetrics(node.metricsPort), 'loam_s3_upload_backlog_bytes');
  if (b !== 0) throw new Error(`the S3 node still has ${b} backlog bytes after flush()`);
}

export async function run() {
  const s3 = await startVersitygw();
  const nodes = {
    off: await startNode(),
    on: await startNode(s3Node(s3, { prefix: 'writes', nodeName: 'bench-writes' })),
  };
  const clients = { off: await connect(nodes.off.url), on: await connect(nodes.on.url) };
  const fresh = () => ({ preroll: 0, window: 0, flush: 0, uploads: 0, flushMs: 0 });
  let tier = fresh();
  try {
    // Both sides see the same phases; only the S3 node has uploads to wait for.
    const roundOf = async (side, fn) => {
      gc();
      await settle(50);
      // Both sides are scraped at the same points (a scrape costs the node a few ms).
      const mp = await scrapeMetrics(nodes[side].metricsPort);
      await fn(side, PREROLL_MS);
      const m0 = await scrapeMetrics(nodes[side].metricsPort);
      const c0 = cpuMsOf(nodes[side].child.pid);
      const g0 = cpuMsOf(s3.pid);
      const t0 = now();
      const out = await fn(side, WINDOW_MS);
      // CPU per write of the node (its uploads included) and of versitygw meanwhile: steadier
      // than throughput on a loaded machine, and it says where the S3 node's time went.
      out.cpuUs = ((cpuMsOf(nodes[side].child.pid) - c0) * 1000) / (out.writes ?? (out.rate * (now() - t0)) / 1000);
      out.s3CpuMs = cpuMsOf(s3.pid) - g0;
      const m1 = await scrapeMetrics(nodes[side].metricsPort);
      if (side === 'on') {
        const t1 = now();
        await drained(clients.on, nodes.on);
        tier.flushMs += now() - t1;
        const m2 = await scrapeMetrics(nodes.on.metricsPort);
        const up = (a, b) => metricSum(b, 'loam_s3_upload_bytes_total') - metricSum(a, 'loam_s3_upload_bytes_total');
        tier.preroll += up(mp, m0);
        tier.window += up(m0, m1);
        tier.flush += up(m1, m2);
        tier.uploads += metricSum(m1, 'loam_s3_uploads_total') - metricSum(m0, 'loam_s3_uploads_total');
      }
      return out;
    };
    const alternate = async (fn) => {
      const res = { off: [], on: [] };
      const ratios = [];
      for (let r = 0; r < ROUNDS; r++) {
        for (const side of r % 2 ? ['on', 'off'] : ['off', 'on']) res[side].push(await roundOf(side, fn));
        ratios.push(res.on[r].rate / res.off[r].rate);
      }
      return { res, ratios };
    };

    // ---- persist-10k
    const persist = (side, ms) => persistFor(clients[side], ms);
    for (const side of ['off', 'on']) await persist(side, 1000); // warm-up
    await drained(clients.on, nodes.on);
    tier = fresh();
    const p = await alternate(persist);
    const pTier = { ...tier };
    note(`persist obj/s off: ${p.res.off.map((x) => fmt(x.rate)).join(' ')}; on: ${p.res.on.map((x) => fmt(x.rate)).join(' ')}; ratios ${p.ratios.map(fmt).join(' ')}`);

    // ---- save-64
    const seed = {};
    const objs = {};
    for (const side of ['off', 'on']) {
      seed[side] = Array.from({ length: WORKERS }, (_, i) => new BenchPerson(i));
      await clients[side].persist(new BenchBatch(seed[side]));
      objs[side] = await Promise.all(seed[side].map((o) => clients[side].get(o.$oid)));
    }
    const save = async (side, ms) => ({
      rate: await concurrentRate(WORKERS, ms, async (w) => {
        const o = objs[side][w];
        o.counter++;
        await clients[side].save(o);
      }),
    });
    for (const side of ['off', 'on']) await save(side, 1000); // warm-up
    await drained(clients.on, nodes.on);
    tier = fresh();
    const s = await alternate(save);
    const sTier = { ...tier };
    note(`saves/s off: ${s.res.off.map((x) => fmt(x.rate)).join(' ')}; on: ${s.res.on.map((x) => fmt(x.rate)).join(' ')}; ratios ${s.ratios.map(fmt).join(' ')}`);
    // Every save landed on both nodes.
    for (const side of ['off', 'on']) {
      const back = await Promise.all(objs[side].map((o) => clients[side].conn.get({ dataset: clients[side].dataset, oids: [o.$oid] })));
      for (let i = 0; i < WORKERS; i++) {
        if (back[i].objects[0].version !== objs[side][i].$version) throw new Error(`${side} object ${i}: node has version ${back[i].objects[0].version}, client ${objs[side][i].$version}`);
      }
    }
    const mFinal = await scrapeMetrics(nodes.on.metricsPort);
    const failures = metricSum(mFinal, 'loam_s3_upload_failures_total');

    const pr = median(p.ratios);
    const sr = median(s.ratios);
    const cpuNote = (x, unit) => `node CPU ${fmt(median(x.res.on.map((r) => r.cpuUs)))} us/${unit} with S3 vs ${fmt(median(x.res.off.map((r) => r.cpuUs)))} without, versitygw ${fmt(median(x.res.on.map((r) => r.s3CpuMs)))} ms CPU per S3 window`;
    // Where the S3 node's uploads fell: a window carrying its steady-state share has about
    // window / (pre-roll + window) of the round's upload bytes (compaction's rewrites count too).
    const tierNote = (t) => `S3 node uploads during pre-roll / window / flush: ${bytes(t.preroll)} / ${bytes(t.window)} (${t.uploads} segments) / ${bytes(t.flush)} in all rounds (${ratio(t.window / Math.max(1, t.preroll + t.window + t.flush))} of them in the windows), flush ${fmt(t.flushMs / ROUNDS / 1000)} s per round, untimed`;
    return [
      `${name}-persist: ${figure(pr)} S3 off, target >= ${TARGET}x (${verdict(pr >= TARGET)})` +
      ` | persist of ${N} new BenchPerson objects, back to back: S3 on ${fmt(median(p.res.on.map((x) => x.rate)))} obj/s (${fmt(median(p.res.on.map((x) => x.msPer)))} ms each)` +
      ` vs off ${fmt(median(p.res.off.map((x) => x.rate)))} obj/s (${fmt(median(p.res.off.map((x) => x.msPer)))} ms); median of ${ROUNDS} per-round ratios, rounds alternating,` +
      ` each ${PREROLL_MS / 1000} s unmeasured then ${WINDOW_MS / 1000} s measured; ${cpuNote(p, 'object')}; ${tierNote(pTier)}; upload interval 5s, 64 MiB segments, versitygw`,
      `${name}-save: ${figure(sr)} S3 off, target >= ${TARGET}x (${verdict(sr >= TARGET)})` +
      ` | ${WORKERS} workers of client.save on one client: S3 on ${fmt(median(s.res.on.map((x) => x.rate)))} saves/s vs off ${fmt(median(s.res.off.map((x) => x.rate)))} saves/s;` +
      ` median of ${ROUNDS} per-round ratios, rounds alternating, each ${PREROLL_MS / 1000} s unmeasured then ${WINDOW_MS / 1000} s measured; ${cpuNote(s, 'save')}; ${tierNote(sTier)}` +
      `${failures ? `; ${failures} failed upload attempts` : ''}`,
    ];
  } finally {
    await clients.off.close();
    await clients.on.close();
    await nodes.off.stop();
    await nodes.on.stop();
  }
}
