// save-64: 64 concurrent workers over one client, each loading its own object and then
// repeatedly changing a field and awaiting client.save(obj), against a node child process; vs
// 64 workers of sequential bare gRPC calls (same request and reply sizes as a save) to the echo
// child. Target: saves/s >= 0.8x the bare calls/s.
import { connect } from '@loam/sdk';
import {
  BenchBatch, BenchPerson, startNode, startEcho, echoClient, replyRequest, concurrentRate, median, gc, settle,
  cpuMsOf, scrapeMetrics, metricSum, fmt, ratio, verdict, note, commitWireSizes,
} from './lib.mjs';

export const name = 'save-64';
const TARGET = 0.8; // saves/s vs bare calls/s, at least
const WORKERS = 64;
const ROUND_MS = 1500;
const WARMUP_MS = 1500;
const ROUNDS = 5;

export async function run() {
  const node = await startNode();
  const echo = await startEcho();
  const client = await connect(node.url);
  const ec = await echoClient(echo.address);
  try {
    const seed = Array.from({ length: WORKERS }, (_, i) => new BenchPerson(i));
    await client.persist(new BenchBatch(seed));
    const oids = seed.map((o) => o.$oid);
    const objs = await Promise.all(oids.map((oid) => client.get(oid)));

    // The exact wire sizes of one save, for the baseline call.
    objs[0].counter++;
    const { reqBytes, resBytes } = await commitWireSizes(client, () => client.save(objs[0]));
    const probe = replyRequest(reqBytes, resBytes);

    const save = async (w) => {
      const o = objs[w];
      o.counter++;
      await client.save(o);
    };
    const call = () => ec.reply(probe);
    // Where the time goes, for the report: CPU of each server per call, and the node's own
    // view of its commits (group size, fdatasync and request latency) over the measured rounds.
    const use = { nodeCpu: 0, echoCpu: 0, saves: 0, calls: 0, lastMs: 0 };
    const measure = async (fn, ms, pid) => {
      gc();
      await settle(50);
      const c0 = cpuMsOf(pid);
      const t0 = Date.now();
      const rate = await concurrentRate(WORKERS, ms, fn);
      use.lastMs = Date.now() - t0;
      const n = (rate * use.lastMs) / 1000;
      const c = cpuMsOf(pid) - c0;
      if (pid === node.child.pid) {
        use.nodeCpu += c;
        use.saves += n;
      } else {
        use.echoCpu += c;
        use.calls += n;
      }
      return rate;
    };
    await measure(save, WARMUP_MS, node.child.pid);
    await measure(call, WARMUP_MS, echo.child.pid);
    Object.assign(use, { nodeCpu: 0, echoCpu: 0, saves: 0, calls: 0 });
    const saves = [];
    const calls = [];
    let saveMs = 0;
    let m0 = await scrapeMetrics(node.metricsPort);
    const nodeM = { fsyncs: 0, fsyncS: 0, batched: 0, commits: 0, commitS: 0 };
    for (let r = 0; r < ROUNDS; r++) {
      saves.push(await measure(save, ROUND_MS, node.child.pid));
      saveMs += use.lastMs;
      const m1 = await scrapeMetrics(node.metricsPort);
      const d = (name, filter) => metricSum(m1, name, filter) - metricSum(m0, name, filter);
      nodeM.fsyncs += d('loam_fsync_duration_seconds_count');
      nodeM.fsyncS += d('loam_fsync_duration_seconds_sum');
      nodeM.batched += d('loam_group_commit_batches_sum');
      // Concurrent saves are coalesced into CommitBatch calls: count both kinds of call.
      for (const m of ['method="Commit"', 'method="CommitBatch"']) {
        nodeM.commits += d('loam_request_duration_seconds_count', m);
        nodeM.commitS += d('loam_request_duration_seconds_sum', m);
      }
      calls.push(await measure(call, ROUND_MS, echo.child.pid));
      m0 = await scrapeMetrics(node.metricsPort);
    }
    const s = median(saves);
    const e = median(calls);
    const rt = s / e;
    // Every save must have landed: versions are 1 (persist) + saves.
    const back = await Promise.all(oids.map((oid) => client.conn.get({ dataset: client.dataset, oids: [oid] })));
    for (let i = 0; i < WORKERS; i++) {
      if (back[i].objects[0].version !== objs[i].$version) throw new Error(`object ${i}: node has version ${back[i].objects[0].version}, client ${objs[i].$version}`);
    }
    note(`saves/s: ${saves.map(fmt).join(' ')}; bare calls/s: ${calls.map(fmt).join(' ')}`);
    return (
      `${name}: ${fmt(s)} saves/s = ${ratio(rt)} bare gRPC ${fmt(e)} calls/s, target >= ${TARGET}x (${verdict(rt >= TARGET)})` +
      ` | ${WORKERS} in flight on one client, median of ${ROUNDS} x ${ROUND_MS} ms; request ${reqBytes} B, reply ${resBytes} B;` +
      ` mean round trip ${fmt((WORKERS * 1000) / s)} ms vs ${fmt((WORKERS * 1000) / e)} ms;` +
      ` node: ${fmt(nodeM.batched / nodeM.fsyncs)} commits per fdatasync, one every ${fmt(saveMs / nodeM.fsyncs)} ms, fdatasync ${fmt((nodeM.fsyncS / nodeM.fsyncs) * 1000)} ms,` +
      ` Commit/CommitBatch call handled in ${fmt((nodeM.commitS / nodeM.commits) * 1000)} ms (${fmt(use.saves / Math.max(1, nodeM.commits))} saves per call), CPU ${fmt((use.nodeCpu * 1000) / use.saves)} us/save vs echo server ${fmt((use.echoCpu * 1000) / use.calls)} us/call`
    );
  } finally {
    ec.close();
    await client.close();
    await echo.stop();
    await node.stop();
  }
}
