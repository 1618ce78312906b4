// cluster-get: sequential client.get(oid) of a small object that lives on another node than the
// one the client first contacted, once the client has that object's location cached, on a
// 2-node cluster (two `loam node` processes on a real etcd); vs the same get of an object on the
// contacted node. Target: remote get <= 1.2x the get on the contacted node.
// The remote object was created on node 1 (its oid names node 1 as its home) and moved to node 2,
// so the client can only go straight to node 2 by its location cache (learned from the move).
// Interleaved rounds; the figure is the mean over all calls. The nodes' request counters check
// that every remote get was one Get on node 2 (no redirect hop through node 1).
import { connect } from '@loam/sdk';
import { BenchPerson, startCluster, scrapeMetrics, metricSum, now, gc, settle, fmt, ratio, verdict, note } from './lib.mjs';

export const name = 'cluster-get';
const TARGET = 1.2; // remote get / local get, at most
const WARMUP = 2000;
const ROUNDS = 7;
const PER_ROUND = 1000;

export async function run() {
  const cluster = await startCluster({ nodes: 2 });
  const [n1, n2] = cluster.nodes;
  const client = await connect(n1.url);
  try {
    const local = await client.persist(new BenchPerson(1), { backend: n1.number });
    const remote = await client.persist(new BenchPerson(2), { backend: n1.number });
    const { moved } = await client.move(remote, n2.number);
    if (moved !== 1) throw new Error(`move reported ${moved} objects moved, expected 1`);
    const where = await client.locate(remote);
    if (where.master.number !== n2.number) throw new Error(`the moved object is on node ${where.master.number}, not ${n2.number}`);
    const localOid = local.$oid;
    const remoteOid = remote.$oid;

    const getOf = (oid) => async () => {
      const o = await client.get(oid);
      if (o.age === undefined) throw new Error('get returned no fields');
    };
    const getLocal = getOf(localOid);
    const getRemote = getOf(remoteOid);
    for (let i = 0; i < WARMUP; i++) await getLocal();
    for (let i = 0; i < WARMUP; i++) await getRemote();

    const gets = async (m) => metricSum(await scrapeMetrics(m), 'loam_requests_total', 'method="Get"');
    const before = [await gets(n1.metricsPort), await gets(n2.metricsPort)];
    let localMs = 0;
    let remoteMs = 0;
    const roundRatios = [];
    // Blocks of 100 calls, alternating which of the two goes first, so that the first calls
    // after the pause between rounds (colder caches and CPU) do not all fall on one side.
    const BLOCK = 100;
    const loop = async (fn) => {
      const t0 = now();
      for (let i = 0; i < BLOCK; i++) await fn();
      return now() - t0;
    };
    for (let r = 0; r < ROUNDS; r++) {
      gc();
      await settle(20);
      let l = 0;
      let g = 0;
      for (let b = 0; b < PER_ROUND / BLOCK; b++) {
        if ((r + b) % 2 === 0) {
          g += await loop(getRemote);
          l += await loop(getLocal);
        } else {
          l += await loop(getLocal);
          g += await loop(getRemote);
        }
      }
      localMs += l;
      remoteMs += g;
      roundRatios.push(g / l);
    }
    const after = [await gets(n1.metricsPort), await gets(n2.metricsPort)];
    const n = ROUNDS * PER_ROUND;
    const localUs = (localMs / n) * 1000;
    const remoteUs = (remoteMs / n) * 1000;
    const rt = remoteUs / localUs;
    const served = [after[0] - before[0], after[1] - before[1]];
    note(`remote/local per round: ${roundRatios.map((x) => x.toFixed(2)).join(' ')}`);
    const hops = served[0] === n && served[1] === n ? 'one Get each, no redirect' : `UNEXPECTED: expected ${n} each`;
    return (
      `${name}: ${fmt(remoteUs)} us/get = ${ratio(rt)} get on the contacted node ${fmt(localUs)} us, target <= ${TARGET}x (${verdict(rt <= TARGET)})` +
      ` | 2 node processes on a real etcd; client contacted node ${n1.number}; object created on node ${n1.number} and moved to node ${n2.number} (location cached from the move);` +
      ` mean of ${n} sequential gets each, ${ROUNDS} rounds of alternating ${BLOCK}-call blocks after ${WARMUP} warm-up; round ratios ${Math.min(...roundRatios).toFixed(2)}-${Math.max(...roundRatios).toFixed(2)};` +
      ` Gets served: node ${n1.number} ${served[0]}, node ${n2.number} ${served[1]} (${hops})`
    );
  } finally {
    await client.close();
    await cluster.stop();
  }
}
