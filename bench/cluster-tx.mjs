// cluster-tx: commit latency of a two-node transaction. Sequential client.transaction() calls,
// each reading and changing one object on node 1 and one on node 2 of a 2-node cluster (two
// `loam node` processes on a real etcd): a two-phase commit coordinated by node 1. Baseline:
// the same transactions on two objects both on node 1 (one single-node commit). Target: median
// two-node commit latency <= 3x the single-node one. The commit latency is timed from the end of
// the transaction's function (both objects read and changed) to client.transaction() resolving;
// the whole transaction (two reads in parallel, then the commit) is reported too. Alternating
// blocks of 10 transactions, 7 rounds of 40 of each after 40 warm-up. Where the time goes: the
// nodes' request-latency sums (CommitMulti on node 1; Prepare and Finish on node 2), their
// fdatasync latency, and the coordinator's etcd writes (the decision's create-if-absent, before
// it answers; the delete, batched afterwards), timed from this process with the same etcd3 calls.
import { connect } from '@loam/sdk';
import { Etcd3 } from 'etcd3';
import {
  BenchPerson, startCluster, scrapeMetrics, metricSum, now, median, gc, settle, fmt, ratio, verdict, note,
} from './lib.mjs';

export const name = 'cluster-tx';
const TARGET = 3; // two-node commit / single-node commit, at most
const WARMUP = 40;
const ROUNDS = 7;
const PER_ROUND = 40;
const BLOCK = 10;

const count = (m, method) => metricSum(m, 'loam_requests_total', `method="${method}"`);
const seconds = (m, method) => metricSum(m, 'loam_request_duration_seconds_sum', `method="${method}"`);

/**
 * Median ms of the two etcd writes the coordinator makes per transaction, done here the same way
 * (etcd3 client, a namespace, create-if-absent as a txn, then a delete): [create, delete].
 */
async function etcdWriteMs(url, n = 40) {
  const client = new Etcd3({ hosts: [url] });
  const ns = client.namespace('/loam-bench-probe/');
  const creates = [];
  const deletes = [];
  try {
    for (let i = 0; i < n + 10; i++) {
      const key = `tx/${i}`;
      const t0 = now();
      const res = await ns.if(key, 'Create', '==', 0).then(ns.put(key).value('commit')).else(ns.get(key)).commit();
      if (!res.succeeded) throw new Error('etcd probe key existed');
      const t1 = now();
      await ns.delete().key(key).exec();
      if (i >= 10) {
        creates.push(t1 - t0);
        deletes.push(now() - t1);
      }
    }
  } finally {
    client.close();
  }
  return [median(creates), median(deletes)];
}

export async function run() {
  const cluster = await startCluster({ nodes: 2 });
  const [n1, n2] = cluster.nodes;
  const client = await connect(n1.url);
  try {
    await client.backends();
    // Two objects on node 1 for the single-node transactions, one on node 1 and one on node 2
    // for the two-node ones (separate objects, so the two kinds never conflict).
    const s1 = await client.persist(new BenchPerson(1), { backend: n1.number });
    const s2 = await client.persist(new BenchPerson(2), { backend: n1.number });
    const d1 = await client.persist(new BenchPerson(3), { backend: n1.number });
    const d2 = await client.persist(new BenchPerson(4), { backend: n2.number });
    for (const [o, n] of [[s1, n1], [s2, n1], [d1, n1], [d2, n2]]) {
      const where = await client.locate(o);
      if (where.master.number !== n.number) throw new Error(`object ${o.$oid} is on node ${where.master.number}, expected ${n.number}`);
    }

    /** One transaction on oids a and b: returns [commit ms, whole transaction ms]. */
    const txOn = (a, b) => async () => {
      let fnEnd = 0;
      const t0 = now();
      await client.transaction(async (tx) => {
        const [x, y] = await Promise.all([tx.get(a), tx.get(b)]);
        x.counter++;
        y.counter++;
        fnEnd = now();
      }, { retries: 0 });
      const t1 = now();
      return [t1 - fnEnd, t1 - t0];
    };
    const single = txOn(s1.$oid, s2.$oid);
    const multi = txOn(d1.$oid, d2.$oid);
    for (let i = 0; i < WARMUP; i++) {
      await single();
      await multi();
    }

    const m1a = await scrapeMetrics(n1.metricsPort);
    const m2a = await scrapeMetrics(n2.metricsPort);
    const singleCommit = [];
    const singleWhole = [];
    const multiCommit = [];
    const multiWhole = [];
    const block = async (fn, commits, wholes) => {
      for (let i = 0; i < BLOCK; i++) {
        const [c, w] = await fn();
        commits.push(c);
        wholes.push(w);
      }
    };
    for (let r = 0; r < ROUNDS; r++) {
      gc();
      await settle(20);
      for (let b = 0; b < PER_ROUND / BLOCK; b++) {
        if ((r + b) % 2 === 0) {
          await block(multi, multiCommit, multiWhole);
          await block(single, singleCommit, singleWhole);
        } else {
          await block(single, singleCommit, singleWhole);
          await block(multi, multiCommit, multiWhole);
        }
      }
    }
    const m1b = await scrapeMetrics(n1.metricsPort);
    const m2b = await scrapeMetrics(n2.metricsPort);
    const n = ROUNDS * PER_ROUND;
    const delta = (a, b, f, method) => f(b, method) - f(a, method);
    const commits1 = delta(m1a, m1b, count, 'Commit');
    const multis = delta(m1a, m1b, count, 'CommitMulti');
    const prepares2 = delta(m2a, m2b, count, 'Prepare');
    if (commits1 !== n || multis !== n || prepares2 !== n) {
      throw new Error(`expected ${n} Commit and ${n} CommitMulti on node ${n1.number}, ${n} Prepare on node ${n2.number}; got ${commits1}, ${multis}, ${prepares2}`);
    }
    const meanMs = (a, b, method) => (delta(a, b, seconds, method) * 1000) / Math.max(1, delta(a, b, count, method));
    const fsyncMs = (a, b) => (1000 * (metricSum(b, 'loam_fsync_duration_seconds_sum') - metricSum(a, 'loam_fsync_duration_seconds_sum'))) /
      Math.max(1, metricSum(b, 'loam_fsync_duration_seconds_count') - metricSum(a, 'loam_fsync_duration_seconds_count'));
    const [etcdCreateMs, etcdDeleteMs] = await etcdWriteMs(cluster.etcd.url);

    const sc = median(singleCommit);
    const mc = median(multiCommit);
    const rt = mc / sc;
    note(`single commit ms p50 ${fmt(sc)}, two-node p50 ${fmt(mc)}`);
    return (
      `${name}: ${fmt(mc)} ms/commit two-node = ${ratio(rt)} single-node commit ${fmt(sc)} ms, target <= ${TARGET}x (${verdict(rt <= TARGET)})` +
      ` | medians of ${n} sequential transactions each (read 2 objects in parallel, change both, commit), alternating blocks of ${BLOCK} after ${WARMUP} warm-up;` +
      ` 2 node processes on a real etcd, client on node ${n1.number}; whole transaction ${fmt(median(multiWhole))} ms vs ${fmt(median(singleWhole))} ms (${ratio(median(multiWhole) / median(singleWhole))});` +
      ` node means: Commit ${fmt(meanMs(m1a, m1b, 'Commit'))} ms, CommitMulti ${fmt(meanMs(m1a, m1b, 'CommitMulti'))} ms on node ${n1.number},` +
      ` Prepare ${fmt(meanMs(m2a, m2b, 'Prepare'))} ms + Finish ${fmt(meanMs(m2a, m2b, 'Finish'))} ms on node ${n2.number};` +
      ` fdatasync node ${n1.number} ${fmt(fsyncMs(m1a, m1b))} ms, node ${n2.number} ${fmt(fsyncMs(m2a, m2b))} ms; etcd from a client like the node's: create-if-absent ${fmt(etcdCreateMs)} ms + delete ${fmt(etcdDeleteMs)} ms (medians; the create is on the coordinator's path before it answers, deletes are batched after)`
    );
  } finally {
    await client.close();
    await cluster.stop();
  }
}
