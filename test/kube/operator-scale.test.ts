/**
 * Drain gating and rollout gating of the reconcile against a real control plane whose Pods kwok
 * makes Running and Ready at once (with Pod IPs), with a scripted NodeAdmin standing in for the
 * nodes' admin service: the test decides what each node reports (draining, drained, ready) and
 * checks what the reconcile does with the StatefulSet and which admin calls it makes. The real
 * nodes' side of the same flows is in operator-e2e.test.ts.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { FailingKubeApi, HttpKubeApi, type DataStore, type NodeAddress, type NodeAdmin, type NodeAdminStatus } from '@loam/operator';
import { KubeConfig } from '@kubernetes/client-node';
import { installDataStoreCrd, kubeSetup } from '../harness/kube-suite.js';
import { startKube, type KubeCluster } from '../harness/kube.js';
import { reconcileOnce, reconcileUntil, testContext, type TestContext } from '../harness/reconcile-loop.js';

const NS = 'default';
const NAME = 'gate';
const KEY = { namespace: NS, name: NAME };
const DS_API = `/apis/loam.dev/v1alpha1/namespaces/${NS}/datastores`;
const STS = `/apis/apps/v1/namespaces/${NS}/statefulsets/${NAME}`;

/** The nodes as the test scripts them: each Pod `gate-<i>` is node number i + 1 once it is known. */
class ScriptedAdmin implements NodeAdmin {
  readonly nodes = new Map<string, NodeAdminStatus>();
  readonly calls: string[] = [];

  add(i: number, objects = 5): void {
    this.nodes.set(`${NAME}-${i}`, { id: `${NAME}-${i}`, number: i + 1, state: 'ready', objects, draining: null, s3: null });
  }
  node(i: number): NodeAdminStatus {
    return this.nodes.get(`${NAME}-${i}`)!;
  }
  async status(_via: NodeAddress): Promise<NodeAdminStatus[]> {
    return [...this.nodes.values()].map((n) => ({ ...n }));
  }
  async startDrain(_via: NodeAddress, number: number, opId: string): Promise<void> {
    this.calls.push(`startDrain ${number} ${opId}`);
    const n = [...this.nodes.values()].find((x) => x.number === number)!;
    n.draining = { objectsLeft: n.objects, objectsTotal: n.objects };
  }
  async cancelDrain(_via: NodeAddress, number: number): Promise<void> {
    this.calls.push(`cancelDrain ${number}`);
    const n = [...this.nodes.values()].find((x) => x.number === number)!;
    n.draining = null;
    n.state = 'ready';
  }
  async close(): Promise<void> {}
}

let kube: KubeCluster;
let admin: ScriptedAdmin;
let ctx: TestContext;
let failing: FailingKubeApi;
let provisioning = true;
let provisioner: Promise<void> | undefined;

/**
 * The cluster's storage, as small as it can be: a PV pre-bound to every Pending PVC (kwok runs no
 * volume provisioner, and a Pod whose claim is unbound is never scheduled).
 */
async function provisionLoop(): Promise<void> {
  const made = new Set<string>();
  while (provisioning) {
    const r = await kube.request('GET', `/api/v1/namespaces/${NS}/persistentvolumeclaims`).catch(() => undefined);
    for (const c of ((r?.body as { items?: { metadata: { name: string; uid: string }; status?: { phase?: string } }[] })?.items ?? [])) {
      if (c.status?.phase !== 'Pending' || made.has(c.metadata.uid)) continue;
      made.add(c.metadata.uid);
      await kube.request('POST', '/api/v1/persistentvolumes', {
        apiVersion: 'v1',
        kind: 'PersistentVolume',
        metadata: { name: `pv-${c.metadata.uid}` },
        spec: {
          capacity: { storage: '100Gi' },
          accessModes: ['ReadWriteOnce'],
          persistentVolumeReclaimPolicy: 'Retain',
          hostPath: { path: `/tmp/unused/${c.metadata.uid}` },
          claimRef: { namespace: NS, name: c.metadata.name, uid: c.metadata.uid },
        },
      });
    }
    await new Promise((res) => setTimeout(res, 200));
  }
}

kubeSetup(async () => {
  kube = await startKube({ kwok: { pods: true }, nodes: 1 });
  await installDataStoreCrd(kube);
  admin = new ScriptedAdmin();
  const kc = new KubeConfig();
  kc.loadFromFile(kube.kubeconfig);
  failing = new FailingKubeApi(new HttpKubeApi(kc));
  ctx = testContext({ kubeconfig: kube.kubeconfig, admin, kube: failing, defaultImage: 'loam:test-1' });
  provisioner = provisionLoop();
});

afterAll(async () => {
  provisioning = false;
  await provisioner;
  await kube?.stop();
});

async function getDs(): Promise<DataStore> {
  return (await kube.request('GET', `${DS_API}/${NAME}`)).body as DataStore;
}
async function sts(): Promise<{ spec: { replicas: number; updateStrategy: { rollingUpdate: { partition: number } } }; status?: { currentRevision?: string; updateRevision?: string } }> {
  return (await kube.request('GET', STS)).body as never;
}
const progressing = (ds: DataStore) => ds.status?.conditions?.find((c) => c.type === 'Progressing');

describe('drain and rollout gating with kwok Pods and scripted nodes', () => {
  it('goes Running once the Pods are Ready and every node says ready; then a pass writes nothing', async () => {
    for (const i of [0, 1, 2]) admin.add(i);
    const r = await kube.request('POST', DS_API, { apiVersion: 'loam.dev/v1alpha1', kind: 'DataStore', metadata: { name: NAME }, spec: { nodes: 3, etcd: { endpoints: ['127.0.0.1:2379'] }, s3: { bucket: 'gate-bucket', endpoint: 'http://127.0.0.1:9' } } });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    const ds = await reconcileUntil(ctx, KEY, async () => {
      const d = await getDs();
      return d.status?.phase === 'Running' ? d : undefined;
    }, 'Running', 90_000);
    expect(ds.status!.readyNodes).toBe(3);
    expect(ds.status!.nodes!.map((n) => [n.name, n.backend, n.ready, n.objects])).toEqual([[`${NAME}-0`, 1, true, 5], [`${NAME}-1`, 2, true, 5], [`${NAME}-2`, 3, true, 5]]);
    expect(ds.status!.nodes!.every((n) => /^loam:\/\/\d+\.\d+\.\d+\.\d+:7480$/.test(n.endpoint ?? ''))).toBe(true);
    const writes = failing.writes().length;
    const pass = await reconcileOnce(ctx, KEY);
    await reconcileOnce(ctx, KEY);
    expect(failing.writes().slice(writes)).toEqual([]);
    // Running, it still asks to be looked at again: the nodes' counts change with no Kubernetes
    // event to say so. A changed count is written by the next pass, and nothing else is.
    expect(pass.requeueAfterMs).toBeGreaterThanOrEqual(5_000);
    expect(pass.requeueAfterMs).toBeLessThanOrEqual(15_000);
    admin.node(0).objects = 8;
    await reconcileOnce(ctx, KEY);
    expect(failing.writes().slice(writes)).toEqual([{ verb: 'apply', kind: 'DataStore', name: NAME }]);
    expect((await getDs()).status!.nodes![0]!.objects).toBe(8);
    admin.node(0).objects = 5;
    await reconcileOnce(ctx, KEY);
  }, 120_000);

  it('scale 3→2 drains the highest ordinal and keeps the StatefulSet at 3 while the drain runs', async () => {
    await kube.kubectl(['scale', `datastore/${NAME}`, '--replicas=2']);
    const gen = (await getDs()).metadata.generation;
    await reconcileUntil(ctx, KEY, () => admin.calls.some((c) => c.startsWith('startDrain')), 'a drain started', 30_000);
    expect(admin.calls).toEqual([`startDrain 3 scale-down/${(await getDs()).metadata.uid}/${NAME}-2/${gen}`]);
    for (let i = 0; i < 3; i++) await reconcileOnce(ctx, KEY);
    expect(admin.calls.filter((c) => c.startsWith('startDrain'))).toHaveLength(1); // joined, not started again
    expect((await sts()).spec.replicas).toBe(3);
    const ds = await getDs();
    expect(ds.status!.phase).toBe('Scaling');
    expect(progressing(ds)).toMatchObject({ status: 'True', reason: 'Draining' });
    expect(progressing(ds)!.message).toContain(`${NAME}-2 has 5 of 5 objects left`);
    expect(ds.status!.nodes!.find((n) => n.name === `${NAME}-2`)!.draining).toBe(true);
  }, 60_000);

  it('raising nodes again cancels the drain', async () => {
    await kube.kubectl(['scale', `datastore/${NAME}`, '--replicas=3']);
    await reconcileUntil(ctx, KEY, async () => admin.calls.includes('cancelDrain 3') && (await getDs()).status?.phase === 'Running', 'drain cancelled, Running', 30_000);
    expect((await sts()).spec.replicas).toBe(3);
    expect(admin.node(2).draining).toBeNull();
  }, 60_000);

  it('a drained, empty node is removed: the StatefulSet shrinks by one', async () => {
    admin.calls.length = 0;
    await kube.kubectl(['scale', `datastore/${NAME}`, '--replicas=2']);
    const gen = (await getDs()).metadata.generation;
    await reconcileUntil(ctx, KEY, () => admin.calls.length > 0, 'a new drain', 30_000);
    // A new generation, a new op id: not the cancelled drain's.
    expect(admin.calls).toEqual([`startDrain 3 scale-down/${(await getDs()).metadata.uid}/${NAME}-2/${gen}`]);
    expect((await sts()).spec.replicas).toBe(3);
    Object.assign(admin.node(2), { state: 'drained', objects: 0, draining: null });
    await reconcileUntil(ctx, KEY, async () => (await sts()).spec.replicas === 2, 'the StatefulSet at 2', 30_000);
    admin.nodes.delete(`${NAME}-2`); // it leaves the cluster with its Pod
    const ds = await reconcileUntil(ctx, KEY, async () => {
      const d = await getDs();
      return d.status?.phase === 'Running' && d.status.nodes?.length === 2 ? d : undefined;
    }, 'Running with 2 nodes', 60_000);
    expect(ds.status!.readyNodes).toBe(2);
    const evs = (await kube.kubectl(['get', 'events', '--field-selector', `involvedObject.name=${NAME},involvedObject.kind=DataStore`, '-o', 'jsonpath={range .items[*]}{.reason}{"\\n"}{end}'])).stdout;
    expect(evs).toContain('DrainStarted');
    expect(evs).toContain('DrainCancelled');
    expect(evs).toContain('ScaledDown');
  }, 90_000);

  it('an image change rolls the highest ordinal first and waits for its node to rejoin before the next', async () => {
    // The updated Pod's node is "not back" until the test says so.
    await kube.kubectl(['patch', `datastore/${NAME}`, '--type=merge', '-p', JSON.stringify({ spec: { image: 'loam:test-2' } })]);
    await reconcileOnce(ctx, KEY);
    expect((await sts()).spec.updateStrategy.rollingUpdate.partition).toBe(1);
    admin.node(1).state = 'stopping';
    // The StatefulSet controller replaces gate-1; kwok makes it Ready; the node still says stopping.
    await reconcileUntil(ctx, KEY, async () => {
      const p = (await kube.request('GET', `/api/v1/namespaces/${NS}/pods/${NAME}-1`)).body as { spec?: { containers: { image: string }[] }; status?: { conditions?: { type: string; status: string }[] } };
      return p.spec?.containers[0]!.image === 'loam:test-2' && p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');
    }, 'gate-1 on loam:test-2 and Ready', 60_000);
    for (let i = 0; i < 3; i++) await reconcileOnce(ctx, KEY);
    expect((await sts()).spec.updateStrategy.rollingUpdate.partition).toBe(1);
    let ds = await getDs();
    expect(ds.status!.phase).toBe('Upgrading');
    expect(progressing(ds)!.message).toContain(`${NAME}-1 to rejoin the cluster`);
    admin.node(1).state = 'ready';
    await reconcileUntil(ctx, KEY, async () => (await sts()).spec.updateStrategy.rollingUpdate.partition === 0, 'partition 0', 30_000);
    ds = await reconcileUntil(ctx, KEY, async () => {
      const d = await getDs();
      return d.status?.phase === 'Running' ? d : undefined;
    }, 'Running after the roll', 60_000);
    const s = await sts();
    expect(s.status!.currentRevision).toBe(s.status!.updateRevision);
    const p0 = (await kube.request('GET', `/api/v1/namespaces/${NS}/pods/${NAME}-0`)).body as { spec: { containers: { image: string }[] } };
    expect(p0.spec.containers[0]!.image).toBe('loam:test-2');
  }, 120_000);

  it('a Pod back on a new volume, with S3 configured, shows as Restoring until its node is ready', async () => {
    const podPath = `/api/v1/namespaces/${NS}/pods/${NAME}-1`;
    const old = (await kube.request('GET', podPath)).body as { metadata: { uid: string } };
    admin.nodes.delete(`${NAME}-1`); // down: out of the nodes' Status
    // A finalizer of the test's keeps the old claim Terminating once its Pod is gone, and the
    // StatefulSet controller makes no Pod while its claim is being deleted: passes run while the
    // member has no Pod at all, which must not make it look new (its backend is the only record
    // that it joined).
    const claim = `/api/v1/namespaces/${NS}/persistentvolumeclaims/data-${NAME}-1`;
    const finalizers = ((await kube.request('GET', claim)).body as { metadata: { finalizers?: string[] } }).metadata.finalizers ?? [];
    await kube.kubectl(['patch', 'pvc', `data-${NAME}-1`, '--type=merge', '-p', JSON.stringify({ metadata: { finalizers: [...finalizers, 'test.loam.dev/hold'] } })]);
    await kube.kubectl(['delete', 'pvc', `data-${NAME}-1`, '--wait=false']);
    await kube.kubectl(['delete', 'pod', `${NAME}-1`, '--wait=false']);
    await reconcileUntil(ctx, KEY, async () => (await kube.request('GET', podPath)).status === 404, `${NAME}-1 without a Pod`, 30_000);
    await reconcileOnce(ctx, KEY);
    await reconcileOnce(ctx, KEY);
    expect((await kube.request('GET', podPath)).status).toBe(404); // still none: those passes saw it missing
    const missing = await getDs();
    expect(missing.status!.nodes!.find((n) => n.name === `${NAME}-1`)).toEqual({ name: `${NAME}-1`, backend: 2, ready: false });
    expect(missing.status!.phase).toBe('Degraded');
    expect(progressing(missing)).toMatchObject({ status: 'True', reason: 'NodesRecovering' });
    const held = ((await kube.request('GET', claim)).body as { metadata: { finalizers?: string[] } }).metadata.finalizers ?? [];
    await kube.kubectl(['patch', 'pvc', `data-${NAME}-1`, '--type=merge', '-p', JSON.stringify({ metadata: { finalizers: held.filter((f) => f !== 'test.loam.dev/hold') } })]);
    const ds = await reconcileUntil(ctx, KEY, async () => {
      const p = (await kube.request('GET', podPath)).body as { metadata?: { uid: string } };
      const d = await getDs();
      return p.metadata?.uid && p.metadata.uid !== old.metadata.uid && d.status?.phase === 'Restoring' ? d : undefined;
    }, 'Restoring with a new gate-1', 60_000);
    expect(progressing(ds)).toMatchObject({ status: 'True', reason: 'RestoringFromS3' });
    expect(progressing(ds)!.message).toContain(`${NAME}-1 lost its volume`);
    expect(ds.status!.nodes!.find((n) => n.name === `${NAME}-1`)).toMatchObject({ backend: 2, ready: false });
    admin.add(1); // restored and back in the cluster
    await reconcileUntil(ctx, KEY, async () => (await getDs()).status?.phase === 'Running', 'Running again', 30_000);
  }, 90_000);
});
