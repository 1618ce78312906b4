// cluster-move: client.move(root, 2, { recursive: true }) of a root referencing 10,000 small
// objects, all on node 1 of a 2-node cluster (two `loam node` processes on a real etcd), to
// node 2. Target: >= 20,000 objects/s. Baseline for the ratio: one persist of the same kind of
// batch (10,000 new objects + root) on the target node, in rounds alternating with the moves.
// Each move round first persists a fresh batch on node 1 (not timed). Medians of 5 after 1
// warm-up. Where the time goes: the nodes' own request-latency sums (Move on node 1, Install on
// node 2) and each process's CPU per move.
import { connect } from '@loam/sdk';
import {
  BenchBatch, BenchPerson, startCluster, scrapeMetrics, metricSum, cpuMsOf, now, median, gc, settle, fmt, ratio, verdict, note,
} from './lib.mjs';

export const name = 'cluster-move';
const N = 10_000;
const TARGET = 20_000; // objects/s
const WARMUP = 1;
const ROUNDS = 5;

let serial = 0;
function makeRoot() {
  const items = new Array(N);
  for (let i = 0; i < N; i++) items[i] = new BenchPerson(serial++);
  return new BenchBatch(items);
}

const seconds = (m, method) => metricSum(m, 'loam_request_duration_seconds_sum', `method="${method}"`);

export async function run() {
  const cluster = await startCluster({ nodes: 2 });
  const [n1, n2] = cluster.nodes;
  const client = await connect(n1.url);
  try {
    await client.backends();
    const moveTimes = [];
    const persistTimes = [];
    const use = { moveMs: 0, installMs: 0, n1Cpu: 0, n2Cpu: 0, clientCpu: 0 };
    let checked = false;

    const moveRound = async (measured) => {
      const root = makeRoot();
      await client.persist(root, { backend: n1.number });
      gc();
      await settle(50);
      const [m1, m2] = [await scrapeMetrics(n1.metricsPort), await scrapeMetrics(n2.metricsPort)];
      const c0 = [cpuMsOf(n1.child.pid), cpuMsOf(n2.child.pid), process.cpuUsage()];
      const t0 = now();
      const { moved } = await client.move(root, n2.number, { recursive: true });
      const ms = now() - t0;
      const c1 = [cpuMsOf(n1.child.pid), cpuMsOf(n2.child.pid), process.cpuUsage(c0[2])];
      if (moved !== N + 1) throw new Error(`move reported ${moved} objects moved, expected ${N + 1}`);
      if (!checked) {
        // Once: the objects really are on node 2 now.
        checked = true;
        for (const o of [root, root.items[0], root.items[N - 1]]) {
          const where = await client.locate(o);
          if (where.master.number !== n2.number) throw new Error(`object ${o.$oid} is on node ${where.master.number} after the move`);
        }
      }
      if (!measured) return;
      moveTimes.push(ms);
      const [a1, a2] = [await scrapeMetrics(n1.metricsPort), await scrapeMetrics(n2.metricsPort)];
      use.moveMs += (seconds(a1, 'Move') - seconds(m1, 'Move')) * 1000;
      use.installMs += (seconds(a2, 'Install') - seconds(m2, 'Install')) * 1000;
      use.n1Cpu += c1[0] - c0[0];
      use.n2Cpu += c1[1] - c0[1];
      use.clientCpu += (c1[2].user + c1[2].system) / 1000;
    };
    const persistRound = async (measured) => {
      const root = makeRoot();
      gc();
      await settle(50);
      const t0 = now();
      await client.persist(root, { backend: n2.number });
      const ms = now() - t0;
      if (root.items[N - 1].$oid === undefined) throw new Error('persist did not assign oids');
      if (measured) persistTimes.push(ms);
    };

    for (let r = 0; r < WARMUP + ROUNDS; r++) {
      const measured = r >= WARMUP;
      if (r % 2 === 0) {
        await moveRound(measured);
        await persistRound(measured);
      } else {
        await persistRound(measured);
        await moveRound(measured);
      }
    }
    const moveMs = median(moveTimes);
    const persistMs = median(persistTimes);
    const rate = (N * 1000) / moveMs;
    const pRate = (N * 1000) / persistMs;
    note(`move ms: ${moveTimes.map(fmt).join(' ')}`);
    note(`persist on node ${n2.number} ms: ${persistTimes.map(fmt).join(' ')}`);
    const per = (x) => fmt(x / ROUNDS);
    return (
      `${name}: ${fmt(rate)} obj/s = ${ratio(rate / pRate)} persist on the target node ${fmt(pRate)} obj/s, target >= ${TARGET} obj/s (${verdict(rate >= TARGET)})` +
      ` | move(root, ${n2.number}, recursive) of ${N} objects (+1 root) from node ${n1.number} to node ${n2.number}, 2 node processes on a real etcd;` +
      ` median ${fmt(moveMs)} ms per move vs ${fmt(persistMs)} ms per persist of the same batch on node ${n2.number}, ${ROUNDS} alternating rounds after ${WARMUP} warm-up;` +
      ` per move: node ${n1.number} Move handler ${per(use.moveMs)} ms (node ${n2.number} Install ${per(use.installMs)} ms inside it; node ${n1.number} is the objects' home, so their directory switch is local),` +
      ` CPU node ${n1.number} ${per(use.n1Cpu)} ms, node ${n2.number} ${per(use.n2Cpu)} ms, client ${per(use.clientCpu)} ms`
    );
  } finally {
    await client.close();
    await cluster.stop();
  }
}
