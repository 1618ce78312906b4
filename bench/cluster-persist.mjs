// cluster-persist: persist throughput of a cluster node does not fall when etcd is slow. One
// client.persist(root) creating 10,000 new small objects in one batch (as persist-10k) on node 1
// of a 2-node cluster (two `loam node` processes on a real etcd) while that etcd is SIGSTOPped,
// vs the same persist on a single node (`loam dev`, no etcd). Target: cluster >= 0.8x single.
// Creating objects must not touch etcd: oids carry their home node, so nothing needs a lookup.
// etcd stays stopped for the whole measured phase (warm-ups included) and at least 6 s, past
// the nodes' membership lease TTL (3 s): first the nodes' background etcd calls (lease keep-alive,
// member refresh) hang, then the node declares its lease lost and retries registering, as with a
// stuck etcd. The cluster rounds alternate with the single-node rounds (at least 7 each, more
// until 6 s have passed); medians. For scale the line also gives the cluster node with etcd
// running (measured after SIGCONT).
import { connect } from '@loam/sdk';
import { BenchBatch, BenchPerson, startCluster, startNode, now, median, gc, settle, fmt, ratio, verdict, note } from './lib.mjs';

export const name = 'cluster-persist';
const N = 10_000;
const TARGET = 0.8; // cluster (etcd stopped) / single node, at least
const WARMUP = 2;
const ROUNDS = 7;
const RUNNING_ROUNDS = 5;
const MIN_STOPPED_MS = 6_000; // past the lease TTL (3 s) and the node's detection of it
const MAX_ROUNDS = 40;
const PERSIST_LIMIT_MS = 20_000; // a persist that waits for the stopped etcd is reported, not waited for

let serial = 0;
function makeRoot() {
  const items = new Array(N);
  for (let i = 0; i < N; i++) items[i] = new BenchPerson(serial++);
  return new BenchBatch(items);
}

/** ms of one persist of a fresh 10,000-object root, or an Error if it failed or took too long. */
async function timedPersist(client, opts) {
  const root = makeRoot();
  gc();
  await settle(50);
  let timer;
  const t0 = now();
  try {
    await Promise.race([
      client.persist(root, opts),
      new Promise((_, rej) => (timer = setTimeout(() => rej(new Error(`persist did not finish within ${PERSIST_LIMIT_MS} ms`)), PERSIST_LIMIT_MS))),
    ]);
  } catch (e) {
    return e instanceof Error ? e : new Error(String(e));
  } finally {
    clearTimeout(timer);
  }
  const ms = now() - t0;
  if (root.items[N - 1].$oid === undefined) return new Error('persist did not assign oids');
  return ms;
}

export async function run() {
  const cluster = await startCluster({ nodes: 2 });
  const [n1] = cluster.nodes;
  const single = await startNode();
  const cc = await connect(n1.url);
  const sc = await connect(single.url);
  const { etcd } = cluster;
  try {
    // With etcd up: the client learns the members, the node its dataset.
    await cc.backends();
    const opts = { backend: n1.number };
    const cluster1 = () => timedPersist(cc, opts);
    const single1 = () => timedPersist(sc, {});

    const clusterTimes = [];
    const singleTimes = [];
    let failure;
    let stateSeen = '';
    let pausedMs = 0;
    const logs0 = n1.logs.length;
    const leaseLostNow = () => n1.logs.slice(logs0).some((l) => /lease lost/.test(String(l.msg)));
    let afterLoss = 0;
    const t0 = now();
    etcd.pause();
    try {
      // SIGSTOP reaches every thread of the Go process shortly after kill() returns.
      let state = etcd.state();
      for (let i = 0; i < 100 && state !== undefined && state !== 'T'; i++) {
        await settle(10);
        state = etcd.state();
      }
      if (state !== undefined && state !== 'T') throw new Error(`etcd did not stop (process state ${state})`);
      stateSeen = state ?? '?';
      for (let r = 0; !failure && r < MAX_ROUNDS && (r < WARMUP + ROUNDS || now() - t0 < MIN_STOPPED_MS); r++) {
        if (r >= WARMUP && leaseLostNow()) afterLoss++;
        const pair = r % 2 === 0 ? [cluster1, single1] : [single1, cluster1];
        for (const fn of pair) {
          const res = await fn();
          if (res instanceof Error) {
            failure = `${fn === cluster1 ? 'cluster' : 'single-node'} persist failed: ${res.message.split('\n')[0]}`;
            break;
          }
          if (r >= WARMUP) (fn === cluster1 ? clusterTimes : singleTimes).push(res);
        }
        if (etcd.state() !== undefined && etcd.state() !== 'T') throw new Error('etcd resumed during the measurement');
      }
    } finally {
      pausedMs = now() - t0;
      etcd.resume();
    }
    const leaseLost = leaseLostNow();

    // Reference: the same node with etcd running again.
    const runningTimes = [];
    if (!failure) {
      const deadline = Date.now() + 10_000;
      while (!(await etcd.healthy()) && Date.now() < deadline) await settle(100);
      for (let r = 0; r < RUNNING_ROUNDS; r++) {
        const res = await cluster1();
        if (res instanceof Error) {
          failure = `cluster persist with etcd running failed: ${res.message.split('\n')[0]}`;
          break;
        }
        runningTimes.push(res);
      }
    }
    if (failure) {
      return `${name}: FAIL ${failure} | etcd SIGSTOPped for ${fmt(pausedMs / 1000)} s; target cluster >= ${TARGET}x single node`;
    }

    const rate = (ms) => (N * 1000) / ms;
    const cRate = rate(median(clusterTimes));
    const sRate = rate(median(singleTimes));
    const rRate = rate(median(runningTimes));
    const rt = cRate / sRate;
    note(`cluster (etcd stopped) ms: ${clusterTimes.map(fmt).join(' ')}`);
    note(`single node ms: ${singleTimes.map(fmt).join(' ')}`);
    note(`cluster (etcd running) ms: ${runningTimes.map(fmt).join(' ')}`);
    return (
      `${name}: ${fmt(cRate)} obj/s with etcd stopped = ${ratio(rt)} single node ${fmt(sRate)} obj/s, target >= ${TARGET}x (${verdict(rt >= TARGET)})` +
      ` | one persist of ${N} new objects (+1 root) on node ${n1.number} of 2 node processes on a real etcd, etcd SIGSTOPped (state ${stateSeen}) for the whole` +
      ` ${fmt(pausedMs / 1000)} s of ${WARMUP} warm-up + ${clusterTimes.length} measured rounds, alternating with the single node (loam dev, no etcd); medians` +
      ` ${fmt(median(clusterTimes))} ms vs ${fmt(median(singleTimes))} ms;` +
      ` same node with etcd running: ${fmt(rRate)} obj/s (${ratio(rRate / sRate)} single, median of ${RUNNING_ROUNDS});` +
      ` node ${n1.number} ${leaseLost ? `declared its membership lease lost meanwhile (${afterLoss} cluster round(s) measured after that; it re-registers after SIGCONT)` : 'did not report its lease lost'}`
    );
  } finally {
    etcd.resume();
    await cc.close();
    await sc.close();
    await single.stop();
    await cluster.stop();
  }
}
