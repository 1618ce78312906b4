/**
 * The operator's runtime (operator/src/runtime/) against a real kube-apiserver v1.37.2: watches
 * and resync enqueue the right DataStore keys, leader election through a Lease lets exactly one
 * of two replicas reconcile and hands over when the leader stops, a reconciler that throws is
 * retried with backoff and counted, /metrics /healthz /readyz answer, and the `loam operator`
 * process (with a kubeconfig, and in-cluster from LOAM_SERVICEACCOUNT_DIR) leads, serves, and
 * exits cleanly on SIGTERM, releasing its lease. The reconciler here records its calls (a test
 * seam): the real reconcile is tested on its own. No controller-manager or scheduler: the
 * objects the runtime watches are created directly.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { KubeConfig } from '@kubernetes/client-node';
import {
  HttpKubeApi,
  kubeEventRecorder,
  keyString,
  startOperator,
  type DataStore,
  type DataStoreKey,
  type EventRecorder,
  type NodeAdmin,
  type OperatorHandle,
  type Reconciler,
  type RuntimeLog,
} from '@loam/operator';
import { installDataStoreCrd, kubeSetup } from '../harness/kube-suite.js';
import { startKube, type KubeCluster } from '../harness/kube.js';
import { ROOT } from '../harness/node-process.js';
import { releasePorts, reservePorts } from '../harness/ports.js';
import { pollUntil } from '../harness/wait.js';

const LOAM = path.join(ROOT, 'node/bin/loam.js');
const DS_API = (ns: string) => `/apis/loam.dev/v1alpha1/namespaces/${ns}/datastores`;
const LEASE_API = (ns: string, name: string) => `/apis/coordination.k8s.io/v1/namespaces/${ns}/leases/${name}`;

let kube: KubeCluster;
let kc: KubeConfig;

kubeSetup(async () => {
  kube = await startKube({ controllerManager: false, scheduler: false });
  kc = new KubeConfig();
  kc.loadFromFile(kube.kubeconfig);
});

const running: OperatorHandle[] = [];
const procs: ChildProcess[] = [];
const ports: number[] = [];
afterEach(async () => {
  await Promise.allSettled(running.splice(0).map((h) => h.stop()));
  for (const p of procs.splice(0)) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  releasePorts(ports.splice(0));
});

afterAll(async () => {
  await kube?.stop();
});

// ---------------------------------------------------------------------------------------------------------
// helpers

type Obj = Record<string, unknown>;

let crd: Promise<void> | undefined;
/** Applies the DataStore CRD once and waits until it is served. */
function ensureCrd(): Promise<void> {
  crd ??= (async () => {
    await installDataStoreCrd(kube);
    await pollUntil(async () => (await kube.request('GET', DS_API('default'))).status === 200, 'datastores to be served', 30_000);
  })();
  return crd;
}

async function ok(method: string, urlPath: string, body?: unknown): Promise<Obj> {
  const r = await kube.request(method, urlPath, body);
  if (r.status < 200 || r.status > 299) throw new Error(`${method} ${urlPath}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
  return r.body as Obj;
}

async function ensureNamespace(ns: string): Promise<void> {
  const r = await kube.request('POST', '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } });
  if (r.status !== 201 && r.status !== 409) throw new Error(`namespace ${ns}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
}

async function createDataStore(ns: string, name: string): Promise<DataStore> {
  return (await ok('POST', DS_API(ns), { apiVersion: 'loam.dev/v1alpha1', kind: 'DataStore', metadata: { name }, spec: { nodes: 3 } })) as unknown as DataStore;
}

async function lease(ns: string, name: string): Promise<{ holderIdentity?: string; leaseDurationSeconds?: number; renewTime?: string; leaseTransitions?: number } | undefined> {
  const r = await kube.request('GET', LEASE_API(ns, name));
  if (r.status === 404) return undefined;
  return (r.body as { spec: Obj }).spec as never;
}

interface Call {
  key: string;
  at: number;
}

/** A reconciler that records each call; keys whose name starts with `fail-` throw. */
function recording(): { calls: Call[]; reconciler: Reconciler; callsFor(key: string): Call[] } {
  const calls: Call[] = [];
  const reconciler: Reconciler = async (ctx, key: DataStoreKey) => {
    expect(ctx.defaultImage).toBe('example.test/loam:test');
    calls.push({ key: keyString(key), at: performance.now() });
    if (key.name.startsWith('fail-')) throw new Error(`injected failure of ${keyString(key)}`);
    return {};
  };
  return { calls, reconciler, callsFor: (key) => calls.filter((c) => c.key === key) };
}

const logs: string[] = [];
const testLog: RuntimeLog = {
  info: (o, m) => void logs.push(`info ${m} ${JSON.stringify(o)}`),
  warn: (o, m) => void logs.push(`warn ${m} ${JSON.stringify(o)}`),
  error: (o, m) => void logs.push(`error ${m} ${JSON.stringify(o)}`),
};
const noEvents: EventRecorder = { normal: async () => undefined, warning: async () => undefined };
const noAdmin: NodeAdmin = {
  status: async () => [],
  startDrain: async () => undefined,
  cancelDrain: async () => undefined,
  close: async () => undefined,
};

interface StartOpts {
  identity?: string;
  lease?: string;
  namespace?: string;
  resyncMs?: number;
  reconciler: Reconciler;
  leaderElection?: false;
  /** Lease timings (defaults: the runtime's, with a 300 ms candidate retry). */
  timing?: { leaseDurationSeconds?: number; renewIntervalMs?: number; renewDeadlineMs?: number };
  kc?: KubeConfig;
}

async function start(opts: StartOpts): Promise<OperatorHandle> {
  const h = await startOperator({
    kc: opts.kc ?? kc,
    reconciler: opts.reconciler,
    namespace: opts.namespace,
    resyncMs: opts.resyncMs ?? 10 * 60_000, // effectively off: calls come from the watches
    workers: 2,
    leaderElection: opts.leaderElection === false ? false : { namespace: 'default', name: opts.lease ?? 'loam-operator-test', identity: opts.identity, retryIntervalMs: 300, ...opts.timing },
    metricsListen: '127.0.0.1:0',
    defaultImage: 'example.test/loam:test',
    admin: noAdmin,
    events: noEvents,
    log: testLog,
    reconcileBackoff: { baseMs: 100, maxMs: 2000 },
    watchBackoff: { baseMs: 100, maxMs: 1000 },
  });
  running.push(h);
  return h;
}

async function get(address: string, p: string): Promise<{ status: number; text: string }> {
  const res = await fetch(`http://${address}${p}`, { signal: AbortSignal.timeout(5000) });
  return { status: res.status, text: await res.text() };
}

/** The value of one sample in Prometheus text (`name{labels} value`), or undefined. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** Samples every 10 ms whether both lead at once; returns how many samples saw that. */
function watchOverlap(x: OperatorHandle, y: OperatorHandle): () => number {
  let both = 0;
  const t = setInterval(() => {
    if (x.isLeader() && y.isLeader()) both++;
  }, 10);
  return () => {
    clearInterval(t);
    return both;
  };
}

/** A TCP proxy to `target` on a loopback port; cut() drops every connection and refuses new ones. */
async function tcpProxy(target: URL): Promise<{ port: number; cut(): void; close(): void }> {
  const sockets = new Set<net.Socket>();
  let open = true;
  const server = net.createServer((client) => {
    if (!open) return void client.destroy();
    const upstream = net.connect(Number(target.port), target.hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => s.destroy());
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as net.AddressInfo).port;
  const cut = () => {
    open = false;
    for (const s of sockets) s.destroy();
  };
  return { port, cut, close: () => (cut(), server.close()) };
}

// ---------------------------------------------------------------------------------------------------------

describe('operator runtime on kube-apiserver', () => {
  it('is not ready while DataStores cannot be listed (no CRD yet), restarts the failed watch with backoff, and is ready once the CRD exists', async () => {
    const rec = recording();
    const h = await start({ reconciler: rec.reconciler, leaderElection: false, lease: 'unused' });
    expect((await get(h.metricsAddress, '/healthz')).status).toBe(200);
    if (!crd) {
      // Only meaningful when this test runs first: the CRD is not there yet.
      const r = await get(h.metricsAddress, '/readyz');
      expect(r.status).toBe(503);
      expect(r.text).toContain('DataStore');
      await pollUntil(() => logs.some((l) => l.includes('watch failed; restarting it') && l.includes('"kind":"DataStore"') && l.includes('"failures":2')), 'the DataStore watch to be restarted twice', 20_000);
    }
    await ensureCrd();
    await pollUntil(async () => (await get(h.metricsAddress, '/readyz')).status === 200, '/readyz to say ok', 20_000);
    expect(h.notReady()).toBeUndefined();
    await ensureNamespace('ready-ns');
    await createDataStore('ready-ns', 'after-crd');
    await pollUntil(() => rec.callsFor('ready-ns/after-crd').length > 0, 'the new DataStore to be reconciled', 20_000);
  }, 90_000);

  it('two replicas on one Lease: exactly one reconciles; a DataStore created or changed and a child changed enqueue the right key; the other takes over when the leader stops', async () => {
    await ensureCrd();
    await ensureNamespace('two');
    const a = recording();
    const b = recording();
    const timing = { renewIntervalMs: 1000, renewDeadlineMs: 3000 };
    const ha = await start({ identity: 'replica-a', reconciler: a.reconciler, namespace: 'two', timing });
    const hb = await start({ identity: 'replica-b', reconciler: b.reconciler, namespace: 'two', timing });
    const overlap = watchOverlap(ha, hb);
    const [leader, follower, lrec, frec] = await pollUntil(() => {
      const leaders = [ha, hb].filter((h) => h.isLeader());
      if (leaders.length !== 1) return undefined;
      return ha.isLeader() ? ([ha, hb, a, b] as const) : ([hb, ha, b, a] as const);
    }, 'exactly one leader', 30_000);
    // The leader renews (its renewTime moves) and keeps the lease.
    const first = await lease('default', 'loam-operator-test');
    expect(first?.holderIdentity).toBe(leader.identity);
    expect(first?.leaseDurationSeconds).toBe(15);
    await pollUntil(async () => {
      const l = await lease('default', 'loam-operator-test');
      return l?.holderIdentity === leader.identity && l.renewTime !== first?.renewTime;
    }, 'a renew by the leader', 10_000);

    // Created: the leader reconciles it, the follower does not.
    const ds = await createDataStore('two', 'alpha');
    await pollUntil(() => lrec.callsFor('two/alpha').length > 0, 'the leader to reconcile two/alpha', 20_000);

    // Changed.
    const before = lrec.callsFor('two/alpha').length;
    const cur = (await ok('GET', `${DS_API('two')}/alpha`)) as unknown as DataStore;
    cur.spec.nodes = 5;
    await ok('PUT', `${DS_API('two')}/alpha`, cur);
    await pollUntil(() => lrec.callsFor('two/alpha').length > before, 'a reconcile after the change', 20_000);

    // A child owned through an owner reference.
    const owned = lrec.callsFor('two/alpha').length;
    await ok('POST', '/api/v1/namespaces/two/configmaps', {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: {
        name: 'alpha-config',
        labels: { 'app.kubernetes.io/managed-by': 'loam-operator', 'app.kubernetes.io/instance': 'alpha' },
        ownerReferences: [{ apiVersion: 'loam.dev/v1alpha1', kind: 'DataStore', name: 'alpha', uid: ds.metadata.uid, controller: true }],
      },
      data: { a: '1' },
    });
    await pollUntil(() => lrec.callsFor('two/alpha').length > owned, 'the owner to be reconciled after its ConfigMap appeared', 20_000);

    // A child named by its instance label only (as a volumeClaimTemplate's PVC is): its DataStore's key, even one that does not exist.
    await ok('POST', '/api/v1/namespaces/two/persistentvolumeclaims', {
      apiVersion: 'v1',
      kind: 'PersistentVolumeClaim',
      metadata: { name: 'data-beta-0', labels: { 'app.kubernetes.io/managed-by': 'loam-operator', 'app.kubernetes.io/instance': 'beta' } },
      spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '1Gi' } } },
    });
    await pollUntil(() => lrec.callsFor('two/beta').length > 0, 'two/beta to be enqueued for its PVC', 20_000);

    // Not ours: no managed-by label, not watched.
    await ok('POST', '/api/v1/namespaces/two/configmaps', { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'stranger', labels: { 'app.kubernetes.io/instance': 'gamma' } } });

    // Both replicas answer; the follower is ready too, and says it does not lead.
    const lm = await get(leader.metricsAddress, '/metrics');
    const fm = await get(follower.metricsAddress, '/metrics');
    expect(lm.status).toBe(200);
    expect(sample(lm.text, 'loam_operator_leader')).toBe(1);
    expect(sample(fm.text, 'loam_operator_leader')).toBe(0);
    expect(sample(fm.text, 'loam_operator_queue_depth')).toBe(0); // a follower holds no keys
    expect(sample(lm.text, 'loam_operator_reconciles_total{result="success"}')).toBeGreaterThanOrEqual(4);
    expect(sample(lm.text, 'loam_operator_reconcile_duration_seconds_count')).toBeGreaterThanOrEqual(4);
    expect(lm.text).toContain('loam_operator_reconcile_duration_seconds_bucket{le="0.005"}');
    expect(sample(lm.text, 'loam_operator_queue_depth')).toBeDefined();
    expect(sample(lm.text, 'loam_operator_reconcile_errors_total')).toBe(0);
    expect(lm.text).toContain('loam_operator_process_cpu_seconds_total');
    for (const h of [leader, follower]) {
      expect(await get(h.metricsAddress, '/healthz')).toEqual({ status: 200, text: 'ok\n' });
      await pollUntil(async () => (await get(h.metricsAddress, '/readyz')).status === 200, '/readyz on both replicas', 20_000);
    }
    expect(frec.calls).toEqual([]);
    expect(lrec.calls.some((c) => c.key === 'two/gamma')).toBe(false);

    // The leader stops (releasing the lease): the follower leads within the lease duration and reconciles everything.
    const t0 = Date.now();
    await leader.stop();
    expect(leader.isLeader()).toBe(false);
    await pollUntil(() => follower.isLeader(), 'the follower to take over', 15_000);
    expect(Date.now() - t0).toBeLessThan(15_000);
    const l = await lease('default', 'loam-operator-test');
    expect(l?.holderIdentity).toBe(follower.identity);
    expect(l?.leaseTransitions).toBeGreaterThanOrEqual(1);
    await pollUntil(() => frec.callsFor('two/alpha').length > 0, 'the new leader to resync two/alpha', 20_000);
    expect(sample((await get(follower.metricsAddress, '/metrics')).text, 'loam_operator_leader')).toBe(1);
    expect(overlap()).toBe(0);
  }, 120_000);

  it('a leader cut off from the API server stops leading at its renew deadline, before the other replica may take the lease over', async () => {
    await ensureCrd();
    await ensureNamespace('cut');
    // Replica A reaches the API server through a TCP proxy the test can cut.
    const proxy = await tcpProxy(new URL(kube.server));
    try {
      const kcA = new KubeConfig();
      kcA.loadFromString(fs.readFileSync(kube.kubeconfig, 'utf8').replace(kube.server, `https://127.0.0.1:${proxy.port}`));
      const timing = { leaseDurationSeconds: 4, renewIntervalMs: 500, renewDeadlineMs: 2000 };
      const a = recording();
      const b = recording();
      const ha = await start({ identity: 'cut-a', lease: 'cut-lease', reconciler: a.reconciler, namespace: 'cut', timing, kc: kcA });
      await pollUntil(() => ha.isLeader(), 'replica A to lead', 20_000);
      const hb = await start({ identity: 'cut-b', lease: 'cut-lease', reconciler: b.reconciler, namespace: 'cut', timing });
      const overlap = watchOverlap(ha, hb);
      await pollUntil(async () => (await get(hb.metricsAddress, '/readyz')).status === 200, 'replica B ready', 20_000);
      expect(hb.isLeader()).toBe(false);
      const tCut = Date.now();
      proxy.cut();
      await pollUntil(() => !ha.isLeader(), 'replica A to stop leading', 10_000);
      const tDown = Date.now() - tCut;
      expect(sample((await get(ha.metricsAddress, '/metrics')).text, 'loam_operator_leader')).toBe(0);
      await pollUntil(() => hb.isLeader(), 'replica B to take over', 20_000);
      const tUp = Date.now() - tCut;
      // A steps down within its deadline (2 s, plus a renew round); B waits out the 4 s lease it saw last renewed.
      expect(tDown).toBeLessThan(3500);
      expect(tUp).toBeGreaterThan(tDown);
      expect(overlap()).toBe(0);
      await createDataStore('cut', 'after-cut');
      await pollUntil(() => b.callsFor('cut/after-cut').length > 0, 'B to reconcile', 20_000);
      expect(a.callsFor('cut/after-cut')).toEqual([]);
    } finally {
      proxy.close();
    }
  }, 90_000);

  it('a reconciler that throws is retried with growing backoff, and each error is counted and logged', async () => {
    await ensureCrd();
    await ensureNamespace('errs');
    const rec = recording();
    const h = await start({ reconciler: rec.reconciler, namespace: 'errs', leaderElection: false });
    await createDataStore('errs', 'fail-one');
    await pollUntil(() => rec.callsFor('errs/fail-one').length >= 4, 'four attempts', 20_000);
    const at = rec.callsFor('errs/fail-one').map((c) => c.at);
    const gaps = at.slice(1).map((t, i) => t - at[i]);
    // base 100 ms with equal jitter: 50-100, 100-200, 200-400 ms
    expect(gaps[0]).toBeGreaterThanOrEqual(45);
    expect(gaps[2]).toBeGreaterThan(gaps[0]);
    const m = (await get(h.metricsAddress, '/metrics')).text;
    expect(sample(m, 'loam_operator_reconcile_errors_total')).toBeGreaterThanOrEqual(3);
    expect(sample(m, 'loam_operator_reconciles_total{result="error"}')).toBeGreaterThanOrEqual(3);
    expect(logs.some((l) => l.startsWith('error reconcile failed') && l.includes('injected failure of errs/fail-one'))).toBe(true);
    // The runtime lives on: another DataStore still gets reconciled.
    await createDataStore('errs', 'fine');
    await pollUntil(() => rec.callsFor('errs/fine').length > 0, 'errs/fine to be reconciled', 20_000);
  }, 60_000);

  it('the periodic resync lists DataStores afresh and enqueues each', async () => {
    await ensureCrd();
    await ensureNamespace('resync');
    await createDataStore('resync', 'steady');
    const rec = recording();
    await start({ reconciler: rec.reconciler, namespace: 'resync', leaderElection: false, resyncMs: 300 });
    // The watch's initial list gives one call; only the resync gives more, with nothing changing.
    await pollUntil(() => rec.callsFor('resync/steady').length >= 3, 'repeated resync calls', 20_000);
  }, 60_000);

  it('the Event recorder writes an Event on the DataStore', async () => {
    await ensureCrd();
    await ensureNamespace('events');
    const ds = await createDataStore('events', 'noted');
    const rec = kubeEventRecorder(new HttpKubeApi(kc), testLog, 'test-instance');
    await rec.normal(ds, 'TestStep', 'a step was taken');
    await rec.warning(ds, 'TestTrouble', 'something went wrong');
    const list = (await ok('GET', '/api/v1/namespaces/events/events')) as { items: { reason: string; type: string; message: string; involvedObject: { kind: string; name: string; uid: string } }[] };
    const mine = list.items.filter((e) => e.involvedObject.name === 'noted');
    expect(mine.map((e) => [e.type, e.reason, e.message, e.involvedObject.kind, e.involvedObject.uid]).sort()).toEqual([
      ['Normal', 'TestStep', 'a step was taken', 'DataStore', ds.metadata.uid],
      ['Warning', 'TestTrouble', 'something went wrong', 'DataStore', ds.metadata.uid],
    ]);
  }, 30_000);
});

// ---------------------------------------------------------------------------------------------------------

function spawnOperator(args: string[], env: NodeJS.ProcessEnv): { proc: ChildProcess; output: () => string; exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }> } {
  const proc = spawn(process.execPath, [LOAM, 'operator', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  procs.push(proc);
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  return { proc, output: () => out, exited };
}

/** The environment of a child with no Kubernetes context of the caller's. */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^(KUBECONFIG|KUBERNETES_|POD_|LOAM_)/.test(k)) env[k] = v;
  return { ...env, HOME: fs.mkdtempSync(path.join(os.tmpdir(), 'loam-op-home-')), ...extra };
}

describe('loam operator (the process)', () => {
  async function runAndStop(args: string[], env: NodeJS.ProcessEnv, leaseName: string, identity: string): Promise<string> {
    const [port] = await reservePorts(1);
    ports.push(port);
    const op = spawnOperator([...args, '--metrics-listen', `127.0.0.1:${port}`, '--leader-election-id', leaseName, '--namespace', 'cli', '--resync', '5s'], env);
    const detail = () => op.output().slice(-4000);
    const gaveUp = () => (op.proc.exitCode !== null ? `loam operator exited ${op.proc.exitCode}` : undefined);
    await pollUntil(async () => (await get(`127.0.0.1:${port}`, '/healthz')).status === 200, '/healthz of loam operator', 30_000, { detail, gaveUp });
    await pollUntil(async () => (await lease('default', leaseName))?.holderIdentity === identity, 'loam operator to hold its lease', 30_000, { detail, gaveUp });
    await pollUntil(async () => (await get(`127.0.0.1:${port}`, '/readyz')).status === 200, '/readyz of loam operator', 30_000, { detail, gaveUp });
    const m = (await get(`127.0.0.1:${port}`, '/metrics')).text;
    expect(sample(m, 'loam_operator_leader')).toBe(1);
    // Its reconcile runs (the stand-in's error until the real one is built in, or the real one): either way a result is counted.
    await pollUntil(async () => {
      const t = (await get(`127.0.0.1:${port}`, '/metrics')).text;
      return (sample(t, 'loam_operator_reconciles_total{result="success"}') ?? 0) + (sample(t, 'loam_operator_reconciles_total{result="error"}') ?? 0) > 0;
    }, 'a reconcile of cli/by-process', 30_000, { detail, gaveUp });
    op.proc.kill('SIGTERM');
    const exit = await Promise.race([op.exited, new Promise<'late'>((r) => setTimeout(() => r('late'), 15_000))]);
    expect(exit, detail()).toEqual({ code: 0, signal: null });
    const l = await lease('default', leaseName);
    expect(l?.holderIdentity ?? '').toBe(''); // released, not left to expire
    return op.output();
  }

  it('with --kubeconfig: starts, becomes leader, serves /healthz /readyz /metrics, and exits 0 on SIGTERM releasing the lease', async () => {
    await ensureCrd();
    await ensureNamespace('cli');
    await createDataStore('cli', 'by-process').catch(() => undefined);
    const out = await runAndStop(['--kubeconfig', kube.kubeconfig], cleanEnv({ POD_NAME: 'op-kubeconfig' }), 'cli-kubeconfig', 'op-kubeconfig');
    expect(out).toContain('became the leader');
    expect(out).toContain('released the leader lease');
  }, 90_000);

  it('in a pod: reads the service account from LOAM_SERVICEACCOUNT_DIR', async () => {
    await ensureCrd();
    await ensureNamespace('cli');
    await createDataStore('cli', 'by-process').catch(() => undefined);
    // A ServiceAccount with a token from the TokenRequest API, bound to cluster-admin (the chart's least-privilege RBAC is tested with the chart).
    await kube.request('POST', '/api/v1/namespaces/default/serviceaccounts', { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'loam-operator-test' } });
    await kube.request('POST', '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings', {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRoleBinding',
      metadata: { name: 'loam-operator-test' },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'cluster-admin' },
      subjects: [{ kind: 'ServiceAccount', name: 'loam-operator-test', namespace: 'default' }],
    });
    const tr = (await ok('POST', '/api/v1/namespaces/default/serviceaccounts/loam-operator-test/token', { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest', spec: { expirationSeconds: 3600 } })) as { status: { token: string } };
    const sa = fs.mkdtempSync(path.join(os.tmpdir(), 'loam-op-sa-'));
    fs.writeFileSync(path.join(sa, 'token'), tr.status.token);
    fs.copyFileSync(kube.caFile, path.join(sa, 'ca.crt'));
    fs.writeFileSync(path.join(sa, 'namespace'), 'default');
    const port = new URL(kube.server).port;
    try {
      const out = await runAndStop([], cleanEnv({ POD_NAME: 'op-in-cluster', POD_NAMESPACE: 'default', KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: port, LOAM_SERVICEACCOUNT_DIR: sa }), 'cli-in-cluster', 'op-in-cluster');
      expect(out).toContain('"kubeconfig":"in-cluster"');
    } finally {
      fs.rmSync(sa, { recursive: true, force: true });
    }
  }, 90_000);
});

// ---------------------------------------------------------------------------------------------------------

describe('loam status --datastore (looked up through Kubernetes)', () => {
  async function loamStatus(args: string[]): Promise<{ code: number | null; out: string; err: string }> {
    const p = spawn(process.execPath, [LOAM, 'status', ...args], { env: cleanEnv({ KUBECONFIG: kube.kubeconfig }), stdio: ['ignore', 'pipe', 'pipe'] });
    procs.push(p);
    let out = '';
    let err = '';
    p.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const code = await Promise.race([new Promise<number | null>((r) => p.once('exit', (c) => r(c))), new Promise<'late'>((r) => setTimeout(() => r('late'), 20_000))]);
    if (code === 'late') throw new Error(`loam status did not exit within 20 s\n${out}\n${err}`);
    return { code, out, err };
  }

  it('prints the phase, conditions and nodes from the DataStore\'s status and a rolling upgrade from its StatefulSet', async () => {
    await ensureCrd();
    await ensureNamespace('st');
    const ds = await createDataStore('st', 'shop');
    const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    await ok('PUT', `${DS_API('st')}/shop/status`, {
      ...ds,
      status: {
        phase: 'Upgrading',
        observedGeneration: ds.metadata.generation,
        readyNodes: 3,
        endpoint: 'loam://shop.st.svc:7480',
        conditions: [{ type: 'Progressing', status: 'True', reason: 'RollingUpgrade', message: 'rolling the nodes to a new image', lastTransitionTime: now, observedGeneration: ds.metadata.generation }],
        nodes: [
          { name: 'shop-0', backend: 1, ready: true, objects: 10, uploadBacklogBytes: 0 },
          { name: 'shop-1', backend: 2, ready: true, objects: 12, uploadBacklogBytes: 2048 },
          { name: 'shop-2', backend: 3, ready: true, objects: 11, uploadBacklogBytes: 0 },
        ],
      },
    });
    const labels = { 'app.kubernetes.io/name': 'loam', 'app.kubernetes.io/instance': 'shop' };
    const sts = await ok('POST', '/apis/apps/v1/namespaces/st/statefulsets', {
      apiVersion: 'apps/v1',
      kind: 'StatefulSet',
      metadata: { name: 'shop', labels },
      spec: {
        replicas: 3,
        serviceName: 'shop-nodes',
        selector: { matchLabels: labels },
        updateStrategy: { type: 'RollingUpdate', rollingUpdate: { partition: 1 } },
        template: { metadata: { labels }, spec: { containers: [{ name: 'loam', image: 'example.test/loam:2' }] } },
      },
    });
    // No controller-manager here: the test writes the status a StatefulSet controller would.
    await ok('PUT', '/apis/apps/v1/namespaces/st/statefulsets/shop/status', { ...sts, status: { replicas: 3, readyReplicas: 3, updatedReplicas: 2, currentRevision: 'shop-aaa', updateRevision: 'shop-bbb', observedGeneration: 1 } });

    const r = await loamStatus(['--datastore', 'shop', '--namespace', 'st']);
    expect(r.code, r.err).toBe(0);
    const lines = r.out.split('\n');
    expect(lines[0]).toBe('DataStore shop in st: Upgrading, 3 of 3 nodes ready  (endpoint loam://shop.st.svc:7480)');
    expect(r.out).toMatch(/Progressing +True +RollingUpgrade +\S+ +rolling the nodes to a new image/);
    expect(r.out).toMatch(/shop-1 +2 +yes +12 +2\.0 KiB/);
    expect(r.out).toContain('rolling upgrade  [####################----------]  66%  2 of 3 pods updated (revision shop-aaa -> shop-bbb; pods from ordinal 1 up are being updated)');

    const j = await loamStatus(['--datastore', 'shop', '--namespace', 'st', '--json']);
    expect(j.code, j.err).toBe(0);
    const parsed = JSON.parse(j.out) as { phase: string; nodes: unknown[]; roll: unknown; drains: unknown[] };
    expect(parsed).toMatchObject({ phase: 'Upgrading', drains: [], roll: { updated: 2, replicas: 3, currentRevision: 'shop-aaa', updateRevision: 'shop-bbb', partition: 1 } });
    expect(parsed.nodes).toHaveLength(3);

    const missing = await loamStatus(['--datastore', 'nope', '--namespace', 'st']);
    expect(missing.code).toBe(1);
    expect(missing.err).toContain('loam: DataStore st/nope not found');
  }, 90_000);
});
