// operator: the operator's benchmarks of issue 10, on the tests' real Kubernetes control plane
// (test/harness/kube.ts: kube-apiserver, controller-manager, scheduler v1.37.2, kwok with 3 fake
// Nodes), the kubelet harness (test/harness/kubelet.ts: every Pod's real `loam node` process on
// its own 127.0.0.X) and a real external etcd for the DataStores (test/harness/etcd.ts). The
// operator runs in this process: the real runtime (startOperator: watches, resync, work queue; no
// leader election) driving the real reconcileDataStore and the real node admin (LoamNodeAdmin).
// Three lines:
// - operator-reconcile-idle: a Ready, settled DataStore; 20 direct reconcileDataStore passes; the
//   operator's writes per pass as the API server counts them, target 0: the operator runs as a
//   ServiceAccount of its own and two FlowSchemas match its requests (one its create/update/patch/
//   delete, one the rest), so /metrics apiserver_flowcontrol_dispatched_requests_total counts its
//   writes apart from the harness's; every client's writes (apiserver_request_total, verbs
//   POST/PUT/PATCH/APPLY/DELETE) are shown too, with a control window. Pass latency vs the same
//   reads (GETs, LISTs, the node Status call) done bare with the same clients, alternating blocks.
// - operator-ready: POST of a DataStore with nodes: 3 until Ready (status phase Running, condition
//   Ready=True, 3 ready nodes with endpoints, observedGeneration current) vs a bare StatefulSet
//   of the very pod spec the operator renders (buildStatefulSet of the same, API-defaulted
//   DataStore; its ConfigMap, Secret, ServiceAccount and headless Service created untimed first)
//   until its 3 Pods are Ready. 5 pairs, order alternating, after a warm-up pair; target <= 2x (ours:
//   the issue sets none).
// - operator-drain: 10,000 small objects (BenchPerson, as in cluster-move) on the highest ordinal
//   of a 3-node DataStore, then spec.nodes 3 -> 2 until the StatefulSet has 2 replicas and the
//   DataStore is Ready with 2 nodes, vs client.move of 10,000 such objects between the two nodes
//   that stay, in the same DataStore, just before and just after the drain. A fresh DataStore per
//   round; target <= 3x (ours: drain moves + hand-over + StatefulSet shrink).
//
// The harness is TypeScript: run by plain node (bench/run.mjs), run() runs this file again under
// vite-node (as scripts/gen-deploy.mjs does) with LOAM_BENCH_OPERATOR_CHILD=1, and relays its
// lines. BENCH_OPERATOR=ready,idle,drain picks parts (default all).
import { spawn } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { onCleanup, ROOT } from './lib.mjs';

export const name = 'operator';
const SELF = fileURLToPath(import.meta.url);
const CHILD_ENV = 'LOAM_BENCH_OPERATOR_CHILD';
const RESULT = 'OPERATOR-BENCH-RESULT ';

export async function run() {
  const child = spawn(path.join(ROOT, 'node_modules/.bin/vite-node'), [SELF], {
    cwd: ROOT,
    env: { ...process.env, [CHILD_ENV]: '1' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal)));
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM'); // the child stops its clusters and processes itself
    const t = setTimeout(() => child.kill('SIGKILL'), 60_000);
    await exited;
    clearTimeout(t);
  };
  onCleanup(stop);
  // The runner exiting (Ctrl-C): the child still stops its clusters itself.
  process.once('exit', () => child.exitCode === null && child.kill('SIGTERM'));
  const lines = [];
  const rl = readline.createInterface({ input: child.stdout });
  rl.on('line', (l) => {
    if (l.startsWith(RESULT)) lines.push(JSON.parse(l.slice(RESULT.length)));
    else process.stderr.write(`${l}\n`);
  });
  const code = await exited;
  const crashed = lines.filter((l) => l.crash);
  for (const l of lines) if (!l.crash) process.stdout.write(`${l.line}\n`);
  if (crashed.length) throw new Error(crashed.map((l) => `${l.name}: ${l.crash}`).join('; '));
  if (code !== 0) throw new Error(`the vite-node child exited with ${code}`);
  return [];
}

// ===================================================================================== the child

if (process.env[CHILD_ENV]) {
  await child();
}

async function child() {
  const lib = await import('./lib.mjs');
  const { BenchBatch, BenchPerson, now, median, mean, fmt, ratio, verdict, gc, settle, note } = lib;
  const { ensureKubeTools } = await import(path.join(ROOT, 'test/harness/kube-tools.ts'));
  const { startKube } = await import(path.join(ROOT, 'test/harness/kube.ts'));
  const { startKubelet } = await import(path.join(ROOT, 'test/harness/kubelet.ts'));
  const { startEtcd } = await import(path.join(ROOT, 'test/harness/etcd.ts'));
  const { pollUntil } = await import(path.join(ROOT, 'test/harness/wait.ts'));
  const { KubeConfig } = await import('@kubernetes/client-node');
  const { connect } = await import('@loam/sdk');
  const op = await import('@loam/operator');

  // The runner gone (Ctrl-C): a write to its pipe must not kill the cleanup.
  process.stdout.on('error', () => undefined);
  const emit = (o) => {
    if (!process.stdout.destroyed) process.stdout.write(`${RESULT}${JSON.stringify(o)}\n`);
  };
  const parts = (process.env.BENCH_OPERATOR ?? 'ready,idle,drain').split(',').map((s) => s.trim());

  const NS = 'default';
  const DS_API = `/apis/loam.dev/v1alpha1/namespaces/${NS}/datastores`;
  const IMAGE = 'loam:bench';
  const OPERATOR_SA = 'loam-bench-operator';
  const FS_WRITES = 'loam-bench-operator-writes';
  const FS_OTHER = 'loam-bench-operator-other';

  // Our own shutdown instead of lib.mjs's immediate exit: the clusters stop cleanly.
  const closers = [];
  let shuttingDown;
  let interrupted = false;
  const shutdown = () =>
    (shuttingDown ??= (async () => {
      for (const c of closers.reverse()) await c().catch((e) => process.stderr.write(`operator bench: cleanup: ${e?.message ?? e}\n`));
      await lib.cleanupAll();
    })());
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.removeAllListeners(sig);
    process.once(sig, () => {
      interrupted = true;
      void shutdown().finally(() => process.exit(130));
    });
  }

  let kube;
  let kubelet;
  let etcd;
  let operator;
  let admin;
  const logs = [];
  const detail = () => `operator log:\n${logs.slice(-10).join('\n')}\nkubelet:\n${kubelet?.log().slice(-3000)}`;
  const crash = (part, e) => {
    if (interrupted) return; // what a signal's cleanup broke is no result
    process.stderr.write(`operator bench: ${part}: ${e?.stack ?? e}\n${detail()}\n`);
    emit({ name: part, crash: String(e?.message ?? e).split('\n')[0] });
  };
  try {
    lib.note('operator: control plane, kubelet harness, etcd');
    await ensureKubeTools();
    const [k, e] = await Promise.all([startKube({ kwok: true, nodes: 3 }), startEtcd()]);
    kube = k;
    closers.push(() => kube.stop());
    etcd = e;
    closers.push(() => etcd.stop());
    kubelet = await startKubelet(kube);
    closers.push(() => kubelet.stop());
    await kube.kubectl(['apply', '-f', path.join(ROOT, 'crds', `${op.DATASTORE_CRD_NAME}.yaml`)]);
    await kube.kubectl(['wait', '--for=condition=Established', `crd/${op.DATASTORE_CRD_NAME}`, '--timeout=60s']);
    await pollUntil(async () => (await kube.request('GET', '/apis/loam.dev/v1alpha1')).status === 200, 'loam.dev in discovery', 30_000);
    const must = async (method, p, body, ok) => {
      const r = await kube.request(method, p, body);
      if (!ok.includes(r.status)) throw new Error(`${method} ${p}: HTTP ${r.status} ${JSON.stringify(r.body).slice(0, 500)}`);
      return r.body;
    };

    // The operator gets an identity of its own (a ServiceAccount bound to cluster-admin) and two
    // FlowSchemas match exactly its requests, one its writes (create/update/patch/delete), one the
    // rest: the API server's apiserver_flowcontrol_dispatched_requests_total then counts the
    // operator's writes alone, apart from the harness's (kwok, the kubelet harness, this script).
    await must('POST', `/api/v1/namespaces/${NS}/serviceaccounts`, { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: OPERATOR_SA } }, [201]);
    await must('POST', '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings', {
      apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRoleBinding', metadata: { name: OPERATOR_SA },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'cluster-admin' },
      subjects: [{ kind: 'ServiceAccount', name: OPERATOR_SA, namespace: NS }],
    }, [201]);
    const subjects = [{ kind: 'ServiceAccount', serviceAccount: { name: OPERATOR_SA, namespace: NS } }];
    const flowSchema = (fsName, precedence, verbs, nonResource) => ({
      apiVersion: 'flowcontrol.apiserver.k8s.io/v1', kind: 'FlowSchema', metadata: { name: fsName },
      spec: {
        priorityLevelConfiguration: { name: 'workload-high' }, matchingPrecedence: precedence, distinguisherMethod: { type: 'ByUser' },
        rules: [{ subjects, resourceRules: [{ verbs, apiGroups: ['*'], resources: ['*'], clusterScope: true, namespaces: ['*'] }], ...(nonResource ? { nonResourceRules: [{ verbs: ['*'], nonResourceURLs: ['*'] }] } : {}) }],
      },
    });
    await must('POST', '/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas', flowSchema(FS_WRITES, 50, ['create', 'update', 'patch', 'delete', 'deletecollection'], false), [201]);
    await must('POST', '/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas', flowSchema(FS_OTHER, 51, ['*'], true), [201]);
    const token = (await must('POST', `/api/v1/namespaces/${NS}/serviceaccounts/${OPERATOR_SA}/token`, { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest', spec: { expirationSeconds: 86_400 } }, [201])).status.token;
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'bench', server: kube.server, caFile: kube.caFile, skipTLSVerify: false }],
      users: [{ name: OPERATOR_SA, token }],
      contexts: [{ name: 'bench', cluster: 'bench', user: OPERATOR_SA }],
      currentContext: 'bench',
    });
    const http = new op.HttpKubeApi(kc);
    // Every call of the operator's reconciles goes through this recorder: writes counted client-side too.
    const recorder = new op.FailingKubeApi(http);
    const log = (level) => (obj, msg) => {
      logs.push(`${level} ${msg} ${JSON.stringify(obj, (_k, v) => (v instanceof Error ? v.message : v))}`);
      if (logs.length > 100) logs.shift();
    };
    const runtimeLog = { info: () => undefined, warn: log('warn'), error: log('error') };
    admin = new op.LoamNodeAdmin({ deadlineMs: 5_000 });
    closers.push(() => admin.close());
    const events = op.kubeEventRecorder(recorder);
    const reconciler = (ctx, key) => op.reconcileDataStore({ ...ctx, kube: recorder }, key);
    operator = await op.startOperator({
      kc,
      reconciler,
      namespace: NS,
      resyncMs: 30_000,
      workers: 2,
      leaderElection: false,
      metricsListen: '127.0.0.1:0',
      defaultImage: IMAGE,
      admin,
      events,
      log: runtimeLog,
    });
    closers.push(() => operator.stop());
    const directCtx = { kc, kube: recorder, events, admin, defaultImage: IMAGE, log: runtimeLog };

    // ------------------------------------------------------------------ helpers
    const getDs = async (n) => {
      const r = await kube.request('GET', `${DS_API}/${n}`);
      return r.status === 200 ? r.body : undefined;
    };
    const dsReady = (ds, nodes) => {
      const st = ds?.status;
      return !!st && st.phase === 'Running' && st.readyNodes === nodes && st.nodes?.length === nodes && st.nodes.every((x) => x.ready && x.endpoint && x.backend !== undefined)
        && st.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') === true && st.observedGeneration === ds.metadata.generation;
    };
    const podReady = (p) => (p.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');
    const podsOf = async (instance) => {
      const r = await kube.request('GET', `/api/v1/namespaces/${NS}/pods?labelSelector=${encodeURIComponent(`app.kubernetes.io/instance=${instance},app.kubernetes.io/component=node`)}`);
      if (r.status !== 200) throw new Error(`listing pods: HTTP ${r.status}`);
      return r.body.items;
    };
    const spec = () => ({ nodes: 3, image: IMAGE, storage: { size: '1Gi' }, etcd: { endpoints: [etcd.endpoints[0]] }, deletionPolicy: 'Delete' });
    const dsBody = (n) => ({ apiVersion: 'loam.dev/v1alpha1', kind: 'DataStore', metadata: { name: n }, spec: spec() });
    /** Until no Pod of `instance` is in the API or run by the kubelet harness. */
    const waitPodsGone = (instance) =>
      pollUntil(async () => (await podsOf(instance)).length === 0 && !kubelet.pods().some((p) => p.name.startsWith(`${instance}-`)), `the Pods of ${instance} gone`, 180_000, { everyMs: 200, detail });
    const deleteDs = async (n) => {
      await must('DELETE', `${DS_API}/${n}`, undefined, [200, 202, 404]);
      await pollUntil(async () => (await getDs(n)) === undefined, `DataStore ${n} deleted`, 180_000, { everyMs: 200, detail });
      await waitPodsGone(n);
    };
    const waitDsReady = (n, nodes, what) =>
      pollUntil(async () => {
        const ds = await getDs(n);
        return dsReady(ds, nodes) ? ds : undefined;
      }, what, 240_000, { everyMs: 100, detail });


    // ------------------------------------------------------------------ operator-ready
    if (parts.includes('ready')) {
      try {
        const WARMUP = 1;
        const ROUNDS = 5;
        let serial = 0;
        const opRound = async () => {
          const n = `ready-${serial++}`;
          const t0 = now();
          await must('POST', DS_API, dsBody(n), [201]);
          let tSts;
          let tPods;
          const ds = await pollUntil(async () => {
            const d = await getDs(n);
            if (tSts === undefined && (await kube.request('GET', `/apis/apps/v1/namespaces/${NS}/statefulsets/${n}`)).status === 200) tSts = now() - t0;
            if (tSts !== undefined && tPods === undefined && (await podsOf(n)).filter(podReady).length === 3) tPods = now() - t0;
            return dsReady(d, 3) ? d : undefined;
          }, `DataStore ${n} Ready`, 240_000, { everyMs: 100, detail });
          const ms = now() - t0;
          if (tPods === undefined) tPods = ms;
          void ds;
          await deleteDs(n);
          return { ms, tSts, tPods };
        };
        const bareRound = async () => {
          const n = `bare-${serial++}`;
          // The DataStore as the API server defaults it (dry run: nothing is stored), so the children are exactly the operator's.
          const ds = await must('POST', `${DS_API}?dryRun=All`, dsBody(n), [201]);
          const strip = (o) => {
            delete o.metadata.ownerReferences; // no owner: the garbage collector would delete them at once
            return o;
          };
          await must('POST', `/api/v1/namespaces/${NS}/serviceaccounts`, strip(op.buildServiceAccount(ds)), [201]);
          await must('POST', `/api/v1/namespaces/${NS}/configmaps`, strip(op.buildConfigMap(ds)), [201]);
          await must('POST', `/api/v1/namespaces/${NS}/services`, strip(op.buildPeerService(ds)), [201]);
          await must('POST', `/api/v1/namespaces/${NS}/secrets`, strip(op.buildClusterSecret(ds)), [201]);
          const sts = strip(op.buildStatefulSet(ds, { replicas: 3, partition: 0, defaultImage: IMAGE }));
          await settle(200);
          const t0 = now();
          await must('POST', `/apis/apps/v1/namespaces/${NS}/statefulsets`, sts, [201]);
          await pollUntil(async () => (await podsOf(n)).filter(podReady).length === 3, `StatefulSet ${n}'s 3 Pods Ready`, 240_000, { everyMs: 100, detail });
          const ms = now() - t0;
          await must('DELETE', `/apis/apps/v1/namespaces/${NS}/statefulsets/${n}?propagationPolicy=Background`, undefined, [200, 202]);
          await waitPodsGone(n);
          const sel = encodeURIComponent(`app.kubernetes.io/instance=${n}`);
          await must('DELETE', `/api/v1/namespaces/${NS}/persistentvolumeclaims?labelSelector=${sel}`, undefined, [200]);
          for (const [kind, nm] of [['serviceaccounts', n], ['configmaps', op.names.configMap(ds)], ['services', op.names.peerService(ds)], ['secrets', op.names.clusterSecret(ds)]]) {
            await must('DELETE', `/api/v1/namespaces/${NS}/${kind}/${nm}`, undefined, [200, 202, 404]);
          }
          return { ms };
        };
        const ops = [];
        const bares = [];
        for (let r = 0; r < WARMUP + ROUNDS; r++) {
          gc();
          await settle(500);
          let o;
          let b;
          if (r % 2 === 0) {
            o = await opRound();
            await settle(500);
            b = await bareRound();
          } else {
            b = await bareRound();
            await settle(500);
            o = await opRound();
          }
          note(`ready round ${r}${r < WARMUP ? ' (warm-up)' : ''}: DataStore ${fmt(o.ms)} ms (StatefulSet at ${fmt(o.tSts)}, 3 Pods Ready at ${fmt(o.tPods)}), bare StatefulSet ${fmt(b.ms)} ms`);
          if (r >= WARMUP) {
            ops.push(o);
            bares.push(b);
          }
        }
        const opMs = median(ops.map((x) => x.ms));
        const bareMs = median(bares.map((x) => x.ms));
        const x = opMs / bareMs;
        const pairRatios = ops.map((o, i) => o.ms / bares[i].ms);
        emit({
          name: 'operator-ready',
          line:
            `operator-ready: ${fmt(opMs)} ms = ${ratio(x)} a bare StatefulSet of the same pod spec ${fmt(bareMs)} ms, target <= 2x, ours (${verdict(x <= 2)})` +
            ` | POST of a DataStore (nodes: 3, external etcd: one real etcd member from test/harness/etcd.ts) until status phase Running, Ready=True, 3 ready nodes with endpoints and backends, observedGeneration current;` +
            ` vs a StatefulSet built by the operator's buildStatefulSet for the same API-defaulted DataStore (its ConfigMap, cluster Secret, ServiceAccount and headless Service created untimed first) until its 3 Pods are Ready;` +
            ` real kube-apiserver/controller-manager/scheduler v1.37.2, kwok Nodes, the kubelet harness running each Pod's loam node (readiness: the gRPC probe, periods capped at 1 s), the operator in-process (startOperator, resync 30 s);` +
            ` medians of ${ROUNDS} pairs, order alternating, after ${WARMUP} warm-up pair, polled every 100 ms; per pair ${pairRatios.map(ratio).join(' ')};` +
            ` DataStore side: StatefulSet created at ${fmt(median(ops.map((o) => o.tSts)))} ms, 3 Pods Ready at ${fmt(median(ops.map((o) => o.tPods)))} ms, status Ready at ${fmt(opMs)} ms (medians);` +
            ` all DataStore runs ms ${ops.map((o) => fmt(o.ms)).join(' ')}, bare ${bares.map((b) => fmt(b.ms)).join(' ')}`,
        });
      } catch (e) {
        crash('operator-ready', e);
      }
    }

    // ------------------------------------------------------------------ operator-reconcile-idle and operator-drain
    const apiWrites = async () => {
      const r = await kube.request('GET', '/metrics');
      if (r.status !== 200 || typeof r.body !== 'string') throw new Error(`GET /metrics: HTTP ${r.status}`);
      const out = new Map();
      for (const line of r.body.split('\n')) {
        const fsm = /^apiserver_flowcontrol_dispatched_requests_total\{.*flow_schema="(loam-bench-operator-[a-z]+)"/.exec(line);
        if (fsm) out.set(`flow ${fsm[1]}`, (out.get(`flow ${fsm[1]}`) ?? 0) + Number(line.slice(line.lastIndexOf(' ') + 1)));
        if (!line.startsWith('apiserver_request_total{')) continue;
        const verb = /verb="([A-Z]+)"/.exec(line)?.[1];
        if (!['POST', 'PUT', 'PATCH', 'APPLY', 'DELETE', 'DELETECOLLECTION'].includes(verb)) continue;
        const res = /resource="([^"]*)"/.exec(line)?.[1];
        const sub = /subresource="([^"]*)"/.exec(line)?.[1];
        const k = `${verb} ${res}${sub ? `/${sub}` : ''}`;
        out.set(k, (out.get(k) ?? 0) + Number(line.slice(line.lastIndexOf(' ') + 1)));
      }
      return out;
    };
    const diff = (a, b) => {
      const d = new Map();
      for (const [k, v] of b) if (v - (a.get(k) ?? 0) > 0) d.set(k, v - (a.get(k) ?? 0));
      return d;
    };
    const isFlow = (k) => k.startsWith('flow ');
    const show = (d) => {
      const e = [...d].filter(([k]) => !isFlow(k));
      return e.length ? e.map(([k, v]) => `${k} ${v}`).join(', ') : 'none';
    };
    const total = (d) => [...d.values()].reduce((s, v) => s + v, 0);
    // Background writers of this harness that the operator never makes: kwok's node heartbeats (Leases).
    const operatorKinds = (d) => new Map([...d].filter(([k]) => !isFlow(k) && !/ leases(\/|$)/.test(k)));

    const wantDrain = parts.includes('drain');
    const wantIdle = parts.includes('idle');
    if (wantIdle || wantDrain) {
      const N = 10_000;
      const ROUNDS = wantDrain ? 5 : 1;
      let serial = 0;
      const makeRoot = () => {
        const items = new Array(N);
        for (let i = 0; i < N; i++) items[i] = new BenchPerson(serial++);
        return new BenchBatch(items);
      };
      const drains = [];
      const moves = [];
      try {
      for (let r = 0; r < ROUNDS; r++) {
        const n = `drain-${r}`;
        const up0 = await apiWrites();
        await must('POST', DS_API, dsBody(n), [201]);
        let ds = await waitDsReady(n, 3, `DataStore ${n} Ready with 3 nodes`);
        // The FlowSchema does see the operator's writes: those that brought this DataStore up.
        const upWrites = ((await apiWrites()).get(`flow ${FS_WRITES}`) ?? 0) - (up0.get(`flow ${FS_WRITES}`) ?? 0);
        const backend = (pod) => ds.status.nodes.find((x) => x.name === pod).backend;
        const client = await connect(ds.status.nodes.map((x) => `${x.endpoint}/default`), { connectTimeoutMs: 10_000 });
        try {
          await client.backends();

          if (r === 0 && wantIdle) {
            try {
              const key = { namespace: NS, name: n };
              // Settled: passes until one makes no write (the status takes the node counts once).
              let settledAfter = 0;
              for (;;) {
                const w0 = recorder.writes().length;
                await op.reconcileDataStore(directCtx, key);
                settledAfter++;
                if (recorder.writes().length === w0) break;
                if (settledAfter > 20) throw new Error(`still writing after 20 passes: ${recorder.writes().slice(-5).map((c) => `${c.verb} ${c.kind}/${c.name}`).join(', ')}`);
                await settle(500);
              }
              await settle(1000);
              const PASSES = 20;
              const BLOCK = 4;
              const via = { address: ds.status.nodes[0].endpoint.replace(/^loam:\/\//, '') };
              const dsRef = { apiVersion: 'loam.dev/v1alpha1', kind: 'DataStore', namespace: NS, name: n };
              // One pass's reads, to replay bare.
              const c0 = recorder.calls.length;
              await op.reconcileDataStore(directCtx, key);
              const passCalls = recorder.calls.slice(c0);
              const gets = passCalls.filter((c) => c.verb === 'get').length;
              const lists = passCalls.filter((c) => c.verb === 'list').length;
              const bare = async () => {
                for (let i = 0; i < gets; i++) await http.get(dsRef);
                for (let i = 0; i < lists; i++) await http.list('v1', 'Pod', NS, `app.kubernetes.io/instance=${n}`);
                await admin.status(via, 5_000);
              };
              const recTimes = [];
              const bareTimes = [];
              let recWrites = 0;
              let apiDuring = new Map();
              let windowMs = 0;
              for (let b = 0; b < PASSES / BLOCK; b++) {
                const block = async () => {
                  const w0 = recorder.writes().length;
                  const m0 = await apiWrites();
                  const t0 = now();
                  for (let i = 0; i < BLOCK; i++) {
                    const t = now();
                    await op.reconcileDataStore(directCtx, key);
                    recTimes.push(now() - t);
                  }
                  windowMs += now() - t0;
                  const d = diff(m0, await apiWrites());
                  for (const [k, v] of d) apiDuring.set(k, (apiDuring.get(k) ?? 0) + v);
                  recWrites += recorder.writes().length - w0;
                };
                const bareBlock = async () => {
                  for (let i = 0; i < BLOCK; i++) {
                    const t = now();
                    await bare();
                    bareTimes.push(now() - t);
                  }
                };
                if (b % 2 === 0) {
                  await block();
                  await bareBlock();
                } else {
                  await bareBlock();
                  await block();
                }
              }
              // A control window as long as the passes' with no reconcile: the harness's own background writes.
              const m0 = await apiWrites();
              await settle(windowMs);
              const control = diff(m0, await apiWrites());
              const opWrites = apiDuring.get(`flow ${FS_WRITES}`) ?? 0;
              const opOther = apiDuring.get(`flow ${FS_OTHER}`) ?? 0;
              if (opOther === 0) throw new Error(`the FlowSchema ${FS_OTHER} matched none of the passes' reads: the operator's requests are not counted`);
              const allWrites = total(operatorKinds(apiDuring));
              const controlWrites = total(operatorKinds(control));
              const perPass = opWrites / PASSES;
              const recMs = median(recTimes);
              const bareMs = median(bareTimes);
              emit({
                name: 'operator-reconcile-idle',
                line:
                  `operator-reconcile-idle: ${fmt(perPass)} writes/reconcile, ${fmt(recMs)} ms/reconcile = ${ratio(recMs / bareMs)} its reads done bare ${fmt(bareMs)} ms, target 0 writes (${verdict(opWrites === 0 && recWrites === 0)})` +
                  ` | DataStore ${n} (3 nodes, Ready, settled after ${settledAfter} pass(es)), ${PASSES} direct reconcileDataStore passes (the runtime's watches running too) in blocks of ${BLOCK}, over ${fmt(windowMs)} ms;` +
                  ` the operator's writes counted by the API server itself: the operator runs as its own ServiceAccount and a FlowSchema matches exactly its create/update/patch/delete requests` +
                  ` (apiserver_flowcontrol_dispatched_requests_total: ${opWrites} writes, ${opOther} other requests of the operator; the same FlowSchema counted ${upWrites} writes while the DataStore came up), and its KubeApi counted ${recWrites} writes;` +
                  ` every client's writes (apiserver_request_total, POST/PUT/PATCH/APPLY/DELETE) during the passes: ${show(apiDuring)} (${allWrites} without Leases, kwok's heartbeats),` +
                  ` in a control window as long without passes: ${show(control)} (${controlWrites}): the harness's own (controllers, kubelet harness, kwok), which come and go;` +
                  ` a pass makes ${gets} GETs, ${lists} LIST(s) and one node Status gRPC call; the bare baseline makes the same number of GETs (of the DataStore) and LISTs (its Pods) through the same HttpKubeApi plus LoamNodeAdmin.status, alternating blocks; medians of ${PASSES} each`,
              });
            } catch (e) {
              crash('operator-reconcile-idle', e);
            }
          }
          if (!wantDrain) break;

          const moveOnce = async (from = `${n}-0`, to = `${n}-1`) => {
            const root = makeRoot();
            await client.persist(root, { backend: backend(from) });
            gc();
            await settle(200);
            const t0 = now();
            const { moved } = await client.move(root, backend(to), { recursive: true });
            const ms = now() - t0;
            if (moved !== N + 1) throw new Error(`move reported ${moved} objects moved, expected ${N + 1}`);
            return ms;
          };
          // Warm-ups in every round (fresh node processes): a move node 0 -> 1 and one from the node
          // to be drained (its Move path is what the drain runs) -> node 0.
          const warm = [await moveOnce(), await moveOnce(`${n}-2`, `${n}-0`)];
          note(`drain round ${r}: warm-up moves ${warm.map(fmt).join(' / ')} ms`);
          const before = await moveOnce();
          // The objects the drain moves: all on the highest ordinal.
          const last = `${n}-2`;
          const lastNumber = backend(last);
          const root = makeRoot();
          await client.persist(root, { backend: lastNumber });
          gc();
          await settle(500);
          ds = await getDs(n);
          const via = { address: ds.status.nodes.find((x) => x.name === `${n}-0`).endpoint.replace(/^loam:\/\//, '') };
          const objectsOnLast = (await admin.status(via, 5_000)).find((x) => x.id === last)?.objects;
          const t0 = now();
          await must('PUT', `${DS_API}/${n}`, { ...ds, spec: { ...ds.spec, nodes: 2 } }, [200]);
          let tDraining;
          let tDrained;
          let tShrunk;
          await pollUntil(async () => {
            const d = await getDs(n);
            if (tDraining === undefined && d?.status?.nodes?.some((x) => x.name === last && x.draining)) tDraining = now() - t0;
            if (tDrained === undefined) {
              // The node's own word (admin Status through node 0): drained and empty.
              const st = await admin.status(via, 2_000).catch(() => undefined);
              const me = st?.find((x) => x.id === last);
              if (st && (!me || me.state === 'drained' || (me.draining && me.draining.objectsLeft === 0 && me.objects === 0))) tDrained = now() - t0;
            }
            if (tShrunk === undefined) {
              const s = await kube.request('GET', `/apis/apps/v1/namespaces/${NS}/statefulsets/${n}`);
              if (s.status === 200 && s.body.spec.replicas === 2) tShrunk = now() - t0;
            }
            return tShrunk !== undefined && dsReady(d, 2);
          }, `DataStore ${n} drained to 2 nodes and Ready`, 300_000, { everyMs: 100, detail });
          const drainMs = now() - t0;
          const after = await moveOnce();
          // The drained objects are readable, and none is on the drained node.
          let offLast = 0;
          for (const o of [root, root.items[0], root.items[N >> 1], root.items[N - 1]]) {
            const where = await client.locate(o);
            if (where.master.number === lastNumber) throw new Error(`object ${o.$oid} is still on node ${lastNumber} after the drain`);
            await client.get(o.$oid);
            offLast++;
          }
          const moveMs = mean([before, after]);
          note(`drain round ${r}: drain ${fmt(drainMs)} ms (draining seen at ${fmt(tDraining)}, drained at ${fmt(tDrained)}, StatefulSet at 2 at ${fmt(tShrunk)}), moves ${fmt(before)} / ${fmt(after)} ms, ${objectsOnLast} objects on ${last}`);
          drains.push({ ms: drainMs, tDraining, tDrained, tShrunk, objectsOnLast, offLast });
          moves.push({ before, after, ms: moveMs });
        } finally {
          await client.close();
        }
        await deleteDs(n);
      }
      } catch (e) {
        crash(wantDrain ? 'operator-drain' : 'operator-reconcile-idle', e);
      }
      if (wantDrain && drains.length === ROUNDS) {
        try {
          const drainMs = median(drains.map((d) => d.ms));
          const moveMs = median(moves.map((m) => m.ms));
          const x = median(drains.map((d, i) => d.ms / moves[i].ms));
          emit({
            name: 'operator-drain',
            line:
              `operator-drain: ${fmt(drainMs)} ms = ${ratio(x)} client.move of the same objects ${fmt(moveMs)} ms, target <= 3x, ours (${verdict(x <= 3)})` +
              ` | ${N} BenchPerson objects (+1 root, ~200 B each) persisted on the highest ordinal of a 3-node DataStore (external etcd), then spec.nodes 3 -> 2 (a PUT of the DataStore)` +
              ` until the StatefulSet has 2 replicas and the DataStore is Ready with 2 nodes (observedGeneration current); vs move(root, node 1, recursive) of ${N} fresh objects from node 0 to node 1 of the same DataStore` +
              ` just before and just after the drain (their mean per round); a fresh DataStore per round, ${ROUNDS} rounds, each after 2 warm-up moves (node 0 -> 1, and from the node to be drained -> node 0), the figure the median of the per-round ratios ${drains.map((d, i) => ratio(d.ms / moves[i].ms)).join(' ')};` +
              ` drain ms ${drains.map((d) => fmt(d.ms)).join(' ')}: node seen draining in the status at ${drains.map((d) => fmt(d.tDraining)).join(' ')}, drained and empty (its admin Status) at ${drains.map((d) => fmt(d.tDrained)).join(' ')}, StatefulSet at 2 replicas at ${drains.map((d) => fmt(d.tShrunk)).join(' ')};` +
              ` moves ms ${moves.map((m) => `${fmt(m.before)}/${fmt(m.after)}`).join(' ')}; objects on the drained node before (its admin Status) ${drains.map((d) => d.objectsOnLast).join(' ')};` +
              ` where the time goes (medians): spec change to the drain started and seen in the status ${fmt(median(drains.map((d) => d.tDraining)))} ms, then to the node drained and empty ${fmt(median(drains.map((d) => d.tDrained - d.tDraining)))} ms,` +
              ` then to the StatefulSet at 2 ${fmt(median(drains.map((d) => d.tShrunk - d.tDrained)))} ms (the operator looks again every ${op.PROGRESS_REQUEUE_MS} ms while a drain is in progress, PROGRESS_REQUEUE_MS, and on watch events), then to Ready ${fmt(median(drains.map((d) => d.ms - d.tShrunk)))} ms;` +
              ` afterwards the root and 3 sampled objects located off the drained node and readable`,
          });
        } catch (e) {
          crash('operator-drain', e);
        }
      }
    }
  } catch (e) {
    crash('operator', e);
  } finally {
    await shutdown();
  }
  process.exit(0);
}
