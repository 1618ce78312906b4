/**
 * The operator's reconcile (operator/src/controller/reconcile.ts) against a real kube-apiserver
 * v1.37.2 with its controller-manager (the StatefulSet controller makes Pods and PVCs, the garbage
 * collector removes owned children) and no scheduler or kubelet: Pods stay Pending, so no node
 * runs and the NodeAdmin is never reachable. What is checked: the children and their owner
 * references and labels, no write on a second pass, status and conditions, the scale
 * subresource, drain gating without node status, the finalizer for both deletion policies (with a
 * real etcd for `Delete`), and passes with injected API errors converging to what a clean run makes.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { Etcd3 } from 'etcd3';
import { FailingKubeApi, FINALIZER, type DataStore, type KubeObj } from '@loam/operator';
import { installDataStoreCrd, kubeSetup } from '../harness/kube-suite.js';
import { startKube, type KubeCluster } from '../harness/kube.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';
import { pollUntil } from '../harness/wait.js';
import { NO_NODES_ADMIN, reconcileOnce, reconcileUntil, testContext, type TestContext } from '../harness/reconcile-loop.js';

const NS = 'default';
const DS_API = `/apis/loam.dev/v1alpha1/namespaces/${NS}/datastores`;

let kube: KubeCluster;
let etcd: EtcdCluster;

kubeSetup(async () => {
  [kube, etcd] = await Promise.all([startKube({ scheduler: false }), startEtcd()]);
  await installDataStoreCrd(kube);
});

afterAll(async () => {
  await kube?.stop();
  await etcd?.stop();
});

// ---------------------------------------------------------------------------------------------------------
// helpers

function ctxWith(kube_?: FailingKubeApi): TestContext & { failing: FailingKubeApi } {
  const base = testContext({ kubeconfig: kube.kubeconfig, admin: NO_NODES_ADMIN });
  const failing = kube_ ?? new FailingKubeApi(base.kube);
  return Object.assign(testContext({ kubeconfig: kube.kubeconfig, admin: NO_NODES_ADMIN, kube: failing }), { failing });
}

async function createDs(name: string, spec: Record<string, unknown>): Promise<DataStore> {
  const r = await kube.request('POST', DS_API, { apiVersion: 'loam.dev/v1alpha1', kind: 'DataStore', metadata: { name }, spec });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return r.body as DataStore;
}

async function getDs(name: string): Promise<DataStore | undefined> {
  const r = await kube.request('GET', `${DS_API}/${name}`);
  return r.status === 200 ? (r.body as DataStore) : undefined;
}

type Child = KubeObj & { spec?: Record<string, unknown>; data?: Record<string, string> };

async function getObj(p: string): Promise<Child | undefined> {
  const r = await kube.request('GET', p);
  return r.status === 200 ? (r.body as Child) : undefined;
}

/** The API paths of a DataStore's children (external etcd: no managed etcd children). */
function childPaths(name: string, managedEtcd = false): string[] {
  const core = `/api/v1/namespaces/${NS}`;
  const paths = [
    `${core}/configmaps/${name}-config`,
    `${core}/services/${name}`,
    `${core}/services/${name}-nodes`,
    `${core}/serviceaccounts/${name}`,
    `${core}/secrets/${name}-cluster-secret`,
    `/apis/apps/v1/namespaces/${NS}/statefulsets/${name}`,
    `/apis/policy/v1/namespaces/${NS}/poddisruptionbudgets/${name}`,
  ];
  if (managedEtcd) paths.push(`${core}/services/${name}-etcd`, `${core}/services/${name}-etcd-peer`, `/apis/apps/v1/namespaces/${NS}/statefulsets/${name}-etcd`);
  return paths;
}

/**
 * What changes when the operator writes each object: the DataStore's resourceVersion (only the
 * operator and the test write it), and each child's generation where it has one (the StatefulSet
 * and PDB controllers write their status, which moves the resourceVersion but not the
 * generation), else its resourceVersion.
 */
async function versions(name: string, managedEtcd = false): Promise<Record<string, string | number | undefined>> {
  const out: Record<string, string | number | undefined> = { datastore: (await getDs(name))?.metadata.resourceVersion };
  for (const p of childPaths(name, managedEtcd)) {
    const o = await getObj(p);
    out[p] = o?.metadata.generation ?? o?.metadata.resourceVersion;
  }
  return out;
}

/** Converged: a pass that makes no write. */
async function converge(ctx: TestContext & { failing: FailingKubeApi }, name: string, timeoutMs = 60_000): Promise<void> {
  await reconcileUntil(ctx, { namespace: NS, name }, () => {
    const before = ctx.failing.writes().length;
    return reconcileOnce(ctx, { namespace: NS, name }).then(() => ctx.failing.writes().length === before);
  }, `a pass over ${name} without writes`, timeoutMs);
}


// ---------------------------------------------------------------------------------------------------------

describe('reconcile of a DataStore on kube-apiserver', () => {
  it('creates every child with a controller owner reference to the DataStore and the standard labels', async () => {
    const ctx = ctxWith();
    const ds = await createDs('alpha', { nodes: 3, image: 'loam:test-1', etcd: { endpoints: etcd.endpoints } });
    await converge(ctx, 'alpha');
    for (const p of childPaths('alpha')) {
      const c = await getObj(p);
      expect(c, p).toBeDefined();
      expect((c!.metadata as { ownerReferences?: unknown[] }).ownerReferences, p).toEqual([
        { apiVersion: 'loam.dev/v1alpha1', kind: 'DataStore', name: 'alpha', uid: ds.metadata.uid, controller: true, blockOwnerDeletion: true },
      ]);
      expect(c!.metadata.labels, p).toMatchObject({
        'app.kubernetes.io/name': 'loam', 'app.kubernetes.io/instance': 'alpha', 'app.kubernetes.io/component': 'node',
        'app.kubernetes.io/managed-by': 'loam-operator', 'app.kubernetes.io/part-of': 'loam',
      });
    }
    const sts = (await getObj(`/apis/apps/v1/namespaces/${NS}/statefulsets/alpha`))!;
    expect(sts.spec).toMatchObject({ replicas: 3, serviceName: 'alpha-nodes', updateStrategy: { rollingUpdate: { partition: 0 } } });
    const cm = (await getObj(`/api/v1/namespaces/${NS}/configmaps/alpha-config`))!;
    expect(cm.data).toMatchObject({ LOAM_ETCD: etcd.endpoints.join(','), LOAM_PREFIX: '/loam/default/alpha', LOAM_CACHE_SIZE: String(64 * 2 ** 20) });
    // Server-side apply as loam-operator.
    expect(((sts.metadata as { managedFields?: { manager: string; operation: string }[] }).managedFields ?? []).some((m) => m.manager === 'loam-operator' && m.operation === 'Apply')).toBe(true);
    expect((await getDs('alpha'))!.metadata.finalizers).toEqual([FINALIZER]);
    // The StatefulSet controller acts on it: Pods and their PVCs (no scheduler: they stay Pending).
    await pollUntil(async () => ((await kube.request('GET', `/api/v1/namespaces/${NS}/persistentvolumeclaims?labelSelector=app.kubernetes.io/instance=alpha`)).body as { items: unknown[] }).items.length === 3, 'three PVCs', 30_000);
  });

  it('makes no write on a second pass over an unchanged DataStore', async () => {
    const ctx = ctxWith();
    await converge(ctx, 'alpha');
    const before = await versions('alpha');
    const calls = ctx.failing.calls.length;
    await reconcileOnce(ctx, { namespace: NS, name: 'alpha' });
    await reconcileOnce(ctx, { namespace: NS, name: 'alpha' });
    const made = ctx.failing.calls.slice(calls);
    expect(made.length).toBeGreaterThan(0); // it did look
    expect(made.filter((c) => ['apply', 'create', 'patch', 'delete'].includes(c.verb))).toEqual([]);
    expect(await versions('alpha')).toEqual(before);
    expect(Object.values(before).every((v) => v !== undefined)).toBe(true);
  });

  it('a change to the spec is applied, and only the children it touches are written', async () => {
    const ctx = ctxWith();
    const before = await versions('alpha');
    await kube.kubectl(['patch', 'datastore/alpha', '--type=merge', '-p', JSON.stringify({ spec: { cacheSize: '128Mi' } })]);
    await converge(ctx, 'alpha');
    const after = await versions('alpha');
    const cmPath = `/api/v1/namespaces/${NS}/configmaps/alpha-config`;
    const stsPath = `/apis/apps/v1/namespaces/${NS}/statefulsets/alpha`;
    expect(after[cmPath]).not.toBe(before[cmPath]);
    expect(after[stsPath]).not.toBe(before[stsPath]); // the config hash rolls the Pods
    expect((await getObj(cmPath))!.data!.LOAM_CACHE_SIZE).toBe(String(128 * 2 ** 20));
    for (const p of childPaths('alpha').filter((x) => x !== cmPath && x !== stsPath)) expect(after[p], p).toBe(before[p]);
  });

  it('writes status: phase, conditions with observedGeneration, readyNodes, endpoint and selector', async () => {
    const ds = (await getDs('alpha'))!;
    const st = ds.status!;
    expect(st.phase).toBe('Pending');
    expect(st.observedGeneration).toBe(ds.metadata.generation);
    expect(st.readyNodes).toBe(0);
    expect(st.endpoint).toBe('loam://alpha.default.svc:7480');
    expect(st.selector).toBe('app.kubernetes.io/component=node,app.kubernetes.io/instance=alpha,app.kubernetes.io/managed-by=loam-operator,app.kubernetes.io/name=loam');
    const byType = Object.fromEntries(st.conditions!.map((c) => [c.type, c]));
    expect(byType.Ready).toMatchObject({ status: 'False', reason: 'NodesNotReady', observedGeneration: ds.metadata.generation });
    expect(byType.Progressing).toMatchObject({ status: 'True', reason: 'Creating' });
    expect(byType.Degraded).toMatchObject({ status: 'False' });
    expect(Date.parse(byType.Ready!.lastTransitionTime)).toBeGreaterThan(0);
    // kubectl's printer columns read it.
    const table = (await kube.kubectl(['get', 'lds', 'alpha'])).stdout;
    expect(table).toMatch(/alpha\s+3\s+0\s+Pending/);
    // Events record the steps.
    const evs = (await kube.request('GET', `/api/v1/namespaces/${NS}/events?fieldSelector=involvedObject.name=alpha,involvedObject.kind=DataStore`)).body as { items: { reason: string; source?: { component?: string } }[] };
    expect(evs.items.map((e) => e.reason)).toEqual(expect.arrayContaining(['Created', 'Pending']));
    expect(evs.items.every((e) => e.source?.component === 'loam-operator')).toBe(true);
  });

  it('follows the scale subresource, and never shrinks without the nodes\' status (drain gating)', async () => {
    const ctx = ctxWith();
    await kube.kubectl(['scale', 'datastore/alpha', '--replicas=5']);
    expect((await getDs('alpha'))!.spec.nodes).toBe(5);
    const stsPath = `/apis/apps/v1/namespaces/${NS}/statefulsets/alpha`;
    await reconcileUntil(ctx, { namespace: NS, name: 'alpha' }, async () => (await getObj(stsPath))!.spec!.replicas === 5, 'StatefulSet at 5 replicas', 30_000);
    const scale = (await kube.request('GET', `${DS_API}/alpha/scale`)).body as { spec: { replicas: number }; status: { selector: string } };
    expect(scale.spec.replicas).toBe(5);
    expect(scale.status.selector).toContain('app.kubernetes.io/instance=alpha');

    // Down to 2: no node answers (none runs), so nothing is drained and the StatefulSet keeps 5.
    await kube.kubectl(['scale', 'datastore/alpha', '--replicas=2']);
    await converge(ctx, 'alpha');
    expect((await getObj(stsPath))!.spec!.replicas).toBe(5);
    const ds = (await getDs('alpha'))!;
    expect(ds.status!.phase).toBe('Scaling');
    expect(ds.status!.conditions!.find((c) => c.type === 'Progressing')).toMatchObject({ status: 'True', reason: 'Draining' });
    expect(ds.status!.conditions!.find((c) => c.type === 'Progressing')!.message).toContain('alpha-4');
    // 3 is still a scale-down from 5: gated the same way. Back to 5: nothing left to drain.
    await kube.kubectl(['scale', 'datastore/alpha', '--replicas=3']);
    await converge(ctx, 'alpha');
    expect((await getObj(stsPath))!.spec!.replicas).toBe(5);
    await kube.kubectl(['scale', 'datastore/alpha', '--replicas=5']);
    await converge(ctx, 'alpha');
    expect((await getObj(stsPath))!.spec!.replicas).toBe(5);
    expect((await getDs('alpha'))!.status!.phase).toBe('Pending');
  });

  it('converges through injected API errors (500, 409, timeouts) to the children of a clean run', async () => {
    const spec = { nodes: 2, image: 'loam:test-1', cacheSize: '32Mi', etcd: { endpoints: etcd.endpoints, prefix: '/faults' } };
    const clean = ctxWith();
    await createDs('clean', spec);
    await converge(clean, 'clean');

    const faulty = ctxWith();
    faulty.failing
      .fail({ verb: 'patch', kind: 'DataStore', error: 500 }) // the finalizer
      .fail({ verb: 'apply', kind: 'ConfigMap', error: 'timeout', when: 'after' }) // applied, the answer lost
      .fail({ verb: 'create', kind: 'Secret', error: 'timeout', when: 'after' }) // the cluster Secret created, the answer lost
      .fail({ verb: 'apply', kind: 'StatefulSet', error: 500, times: 2 })
      .fail({ verb: 'get', kind: 'Service', error: 'timeout' })
      .fail({ verb: 'apply', kind: 'DataStore', error: 409 }) // the status
      .fail({ verb: 'list', kind: 'Pod', error: 500 })
      .fail({ verb: 'create', kind: 'Event', error: 500, times: 3 }); // an Event lost never fails a pass
    await createDs('faulty', spec);
    await converge(faulty, 'faulty', 90_000);
    expect(faulty.failing.pendingRules()).toEqual([]);
    expect(faulty.failing.calls.filter((c) => c.injected).length).toBe(11);

    const norm = (o: Child | undefined, from: string, to: string) => JSON.parse(JSON.stringify({ spec: o?.spec, data: o?.kind === 'Secret' ? Object.keys(o.data ?? {}) : o?.data, labels: o?.metadata.labels }).replaceAll(from, to));
    for (const p of childPaths('clean')) {
      const a = await getObj(p);
      const b = await getObj(p.replace(/clean/g, 'faulty'));
      expect(b, p).toBeDefined();
      const fa = norm(a, 'clean', 'X');
      const fb = norm(b, 'faulty', 'X');
      // Server-filled fields that differ per object (a Service's cluster IP).
      for (const f of [fa, fb]) if (f.spec) delete f.spec.clusterIP, delete f.spec.clusterIPs;
      expect(fb, p).toEqual(fa);
    }
    const st = (await getDs('faulty'))!.status!;
    expect(st.phase).toBe('Pending');
    // The error the last failing pass recorded is cleared by the pass that succeeded.
    expect(st.conditions!.find((c) => c.type === 'Degraded')).toMatchObject({ status: 'False' });
    const warnings = (await kube.request('GET', `/api/v1/namespaces/${NS}/events?fieldSelector=involvedObject.name=faulty,involvedObject.kind=DataStore,type=Warning`)).body as { items: { reason: string }[] };
    expect(warnings.items.length).toBeGreaterThan(0);
    expect(warnings.items.every((e) => e.reason === 'ReconcileError')).toBe(true);
  });

  it('sets Degraded with the error while a pass fails, and clears it when one succeeds', async () => {
    const ctx = ctxWith();
    ctx.failing.fail({ verb: 'get', kind: 'StatefulSet', error: 500, times: 1 });
    await kube.kubectl(['patch', 'datastore/clean', '--type=merge', '-p', JSON.stringify({ spec: { cacheSize: '48Mi' } })]);
    await expect(reconcileOnce(ctx, { namespace: NS, name: 'clean' })).rejects.toThrow(/HTTP 500/);
    const degraded = (await getDs('clean'))!.status!.conditions!.find((c) => c.type === 'Degraded')!;
    expect(degraded).toMatchObject({ status: 'True', reason: 'ReconcileError' });
    expect(degraded.message).toContain('500');
    await converge(ctx, 'clean');
    expect((await getDs('clean'))!.status!.conditions!.find((c) => c.type === 'Degraded')).toMatchObject({ status: 'False' });
  });

  it('a managed etcd: its StatefulSet and Services, and the nodes pointed at it', async () => {
    const ctx = ctxWith();
    await createDs('managed', { nodes: 1, image: 'loam:test-1', etcd: { managed: { members: 3 } } });
    await converge(ctx, 'managed');
    for (const p of childPaths('managed', true)) expect(await getObj(p), p).toBeDefined();
    const etcdSts = (await getObj(`/apis/apps/v1/namespaces/${NS}/statefulsets/managed-etcd`))!;
    expect(etcdSts.spec).toMatchObject({ replicas: 3, serviceName: 'managed-etcd-peer' });
    expect(etcdSts.metadata.labels!['app.kubernetes.io/component']).toBe('etcd');
    expect((await getObj(`/api/v1/namespaces/${NS}/configmaps/managed-config`))!.data!.LOAM_ETCD).toBe('http://managed-etcd.default.svc:2379');
  });

  it('deletionPolicy Retain: the finalizer goes, the children with their owner, the PVCs stay', async () => {
    const ctx = ctxWith();
    const client = new Etcd3({ hosts: etcd.endpoints });
    await client.put('/loam/default/alpha/members/1').value('kept');
    await kube.kubectl(['delete', 'datastore/alpha', '--wait=false']);
    expect((await getDs('alpha'))!.metadata.deletionTimestamp).toBeDefined(); // held by the finalizer
    await reconcileUntil(ctx, { namespace: NS, name: 'alpha' }, async () => (await getDs('alpha')) === undefined, 'alpha gone', 30_000);
    await pollUntil(async () => (await getObj(`/apis/apps/v1/namespaces/${NS}/statefulsets/alpha`)) === undefined, 'the StatefulSet garbage-collected', 60_000);
    const pvcs = (await kube.request('GET', `/api/v1/namespaces/${NS}/persistentvolumeclaims?labelSelector=app.kubernetes.io/instance=alpha`)).body as { items: unknown[] };
    expect(pvcs.items.length).toBeGreaterThanOrEqual(3);
    try {
      expect(await client.get('/loam/default/alpha/members/1').string()).toBe('kept');
    } finally {
      client.close();
    }
  });

  it('deletionPolicy Delete: nodes stopped, the etcd prefix and the PVCs removed, then the finalizer', async () => {
    const ctx = ctxWith();
    await createDs('doomed', { nodes: 2, image: 'loam:test-1', etcd: { endpoints: etcd.endpoints }, deletionPolicy: 'Delete' });
    await converge(ctx, 'doomed');
    await pollUntil(async () => ((await kube.request('GET', `/api/v1/namespaces/${NS}/persistentvolumeclaims?labelSelector=app.kubernetes.io/instance=doomed`)).body as { items: unknown[] }).items.length === 2, 'two PVCs', 30_000);
    const client = new Etcd3({ hosts: etcd.endpoints });
    try {
      await client.put('/loam/default/doomed/members/1').value('x');
      await client.put('/loam/default/doomed/objects/a').value('y');
      await client.put('/loam/default/doomed-other/keep').value('z'); // a neighbour's prefix, not this one's
      await kube.kubectl(['delete', 'datastore/doomed', '--wait=false']);
      await reconcileUntil(ctx, { namespace: NS, name: 'doomed' }, async () => (await getDs('doomed')) === undefined, 'doomed gone', 60_000);
      expect(Number(await client.getAll().prefix('/loam/default/doomed/').count())).toBe(0);
      expect(await client.get('/loam/default/doomed-other/keep').string()).toBe('z');
      await pollUntil(async () => ((await kube.request('GET', `/api/v1/namespaces/${NS}/persistentvolumeclaims?labelSelector=app.kubernetes.io/instance=doomed`)).body as { items: unknown[] }).items.length === 0, 'the PVCs gone', 30_000);
      const evs = (await kube.request('GET', `/api/v1/namespaces/${NS}/events?fieldSelector=involvedObject.name=doomed,involvedObject.kind=DataStore`)).body as { items: { reason: string }[] };
      expect(evs.items.map((e) => e.reason)).toEqual(expect.arrayContaining(['StoppingNodes', 'DataDeleted']));
    } finally {
      client.close();
    }
  });
});
