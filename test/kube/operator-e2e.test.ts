/**
 * The operator end to end: a real control plane with kwok's fake Nodes, the kubelet harness
 * running each node Pod as a real `loam node` process on its own 127.0.0.x address, a real etcd
 * (the DataStore's external etcd) and versitygw (its S3), the real node admin over the SDK, and
 * the reconcile driven by test/harness/reconcile-loop.ts (the runtime's stand-in). The tests run
 * in order on one DataStore: Ready, SDK writes and reads, scale 3→2, an image roll with a writer
 * running, a Pod lost with its PVC restoring from S3, deletion with `Delete`.
 */
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { Etcd3 } from 'etcd3';
import { ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { connect, oidHomeNode, Persistent, registerModel, type Client } from '@loam/sdk';
import { LoamNodeAdmin, type DataStore } from '@loam/operator';
import { installDataStoreCrd, kubeSetup } from '../harness/kube-suite.js';
import { startKube, type KubeCluster } from '../harness/kube.js';
import { startKubelet, type Kubelet } from '../harness/kubelet.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';
import { startS3, type S3Server } from '../harness/s3-server.js';
import { pollUntil } from '../harness/wait.js';
import { startReconcileLoop, testContext, type ReconcileLoop, type TestContext } from '../harness/reconcile-loop.js';

class Item extends Persistent {
  text = '';
  n = 0;
}
registerModel(Item, 'OperatorE2E.Item');

const NS = 'default';
const NAME = 'e2e';
const DS_API = `/apis/loam.dev/v1alpha1/namespaces/${NS}/datastores`;

let kube: KubeCluster;
let kubelet: Kubelet;
let etcd: EtcdCluster;
let s3: S3Server;
let admin: LoamNodeAdmin;
let ctx: TestContext;
let loop: ReconcileLoop | undefined;
/** Every phase the DataStore's status showed, in order (repeats folded), as a watcher saw them. */
const phases: string[] = [];
/** The fewest Ready nodes the watcher saw since `minReady.reset()`. */
const minReady = { value: Infinity, reset() { this.value = Infinity; } };
let watching = true;
let lastSnap = '';
let watcher: Promise<void> | undefined;
const clients: Client[] = [];
/** alias → text and oid of every write the SDK acknowledged, and when. */
const acked = new Map<string, { text: string; oid: string; at: string }>();

kubeSetup(async () => {
  [kube, etcd, s3] = await Promise.all([startKube({ kwok: true, nodes: 3 }), startEtcd(), startS3()]);
  kubelet = await startKubelet(kube);
  await installDataStoreCrd(kube);
  await kube.kubectl(['create', 'secret', 'generic', 's3-creds', `--from-literal=accessKeyId=${s3.accessKeyId}`, `--from-literal=secretAccessKey=${s3.secretAccessKey}`]);
  admin = new LoamNodeAdmin({ deadlineMs: 5_000 });
  ctx = testContext({ kubeconfig: kube.kubeconfig, admin, defaultImage: 'loam:test-1' });
}, 240_000);

afterEach((t) => {
  if (t.task.result?.state === 'fail') {
    console.log(`--- reconcile errors ---\n${loop?.errors().join('\n')}\n--- reconcile log ---\n${ctx?.logs.slice(-30).join('\n')}\n--- phases ---\n${phases.join(' → ')}\n--- kubelet ---\n${kubelet?.log().slice(-8000)}`);
    for (const p of kubelet?.pods() ?? []) console.log(`--- ${p.name} (${p.ip}) ---\n${p.logs.split('\n').filter((l) => /restor|drain|fatal|error|stop/i.test(l)).slice(-15).join('\n')}`);
  }
});

afterAll(async () => {
  watching = false;
  await watcher;
  await loop?.stop();
  for (const c of clients) await c.close().catch(() => undefined);
  await admin?.close();
  await kubelet?.stop();
  await kube?.stop();
  await etcd?.stop();
  await s3?.stop();
});

// ---------------------------------------------------------------------------------------------------------

async function getDs(): Promise<DataStore | undefined> {
  const r = await kube.request('GET', `${DS_API}/${NAME}`);
  return r.status === 200 ? (r.body as DataStore) : undefined;
}

function ready(ds: DataStore | undefined, nodes: number): boolean {
  const st = ds?.status;
  return !!st && st.phase === 'Running' && st.readyNodes === nodes && st.nodes?.length === nodes && st.nodes.every((n) => n.ready && n.endpoint && n.backend !== undefined)
    && st.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') === true && st.observedGeneration === ds!.metadata.generation;
}

async function waitRunning(nodes: number, what: string, timeoutMs = 180_000): Promise<DataStore> {
  return pollUntil(async () => {
    const ds = await getDs();
    return ready(ds, nodes) ? ds : undefined;
  }, what, timeoutMs, { everyMs: 200, detail: () => `phases: ${phases.join(' → ')}\nreconcile errors: ${loop?.errors().slice(-5).join('\n')}` });
}

async function sdk(ds: DataStore): Promise<Client> {
  const c = await connect(ds.status!.nodes!.map((n) => `${n.endpoint}/default`), { connectTimeoutMs: 10_000 });
  clients.push(c);
  return c;
}

async function write(c: Client, alias: string, text: string, withPhase = false, backend?: number): Promise<void> {
  const t0 = Date.now();
  const item = await c.persist(Object.assign(new Item(), { text }), { alias, ...(backend !== undefined ? { backend } : {}) });
  acked.set(alias, { text, oid: item.$oid!, at: `${new Date().toISOString()} after ${Date.now() - t0} ms${withPhase ? `, phase ${phases[phases.length - 1]}` : ''}` });
}

/** Every acknowledged write reads back; a lost alias says whether its object is there (by oid). */
async function expectAllReadable(c: Client): Promise<void> {
  const lost: string[] = [];
  for (const [alias, w] of acked) {
    try {
      expect((await c.getByAlias<Item>(alias)).text, alias).toBe(w.text);
    } catch (e) {
      const byOid = await c.get<Item>(w.oid).then((o) => `object ${w.oid} readable: ${JSON.stringify(o.text)}`, (e2: unknown) => `object ${w.oid} not readable: ${String(e2)}`);
      lost.push(`${alias} (acknowledged ${w.at}): ${String(e)}; ${byOid}`);
    }
  }
  expect(lost).toEqual([]);
}

// ---------------------------------------------------------------------------------------------------------

describe('the operator end to end', () => {
  it('a DataStore with nodes: 3 goes Ready', async () => {
    const r = await kube.request('POST', DS_API, {
      apiVersion: 'loam.dev/v1alpha1',
      kind: 'DataStore',
      metadata: { name: NAME },
      spec: {
        nodes: 3,
        image: 'loam:test-1',
        storage: { size: '1Gi' },
        etcd: { endpoints: [etcd.endpoints[0]] },
        s3: { endpoint: s3.endpoint, bucket: s3.bucket, credentialsSecret: 's3-creds', uploadInterval: '500ms' },
        deletionPolicy: 'Delete',
      },
    });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    watcher = (async () => {
      while (watching) {
        const st = (await getDs().catch(() => undefined))?.status;
        const p = st?.phase;
        if (p && phases[phases.length - 1] !== p) phases.push(p);
        const snap = JSON.stringify({ p, prog: st?.conditions?.find((c) => c.type === 'Progressing')?.message, ready: st?.conditions?.find((c) => c.type === 'Ready')?.reason, nodes: st?.nodes?.map((n) => `${n.name}:${n.backend}:${n.ready}`) });
        if (snap !== lastSnap) { lastSnap = snap; if (process.env.E2E_DEBUG) console.log(new Date().toISOString(), snap); }
        if (st?.readyNodes !== undefined) minReady.value = Math.min(minReady.value, st.readyNodes);
        await new Promise((res) => setTimeout(res, 100));
      }
    })();
    loop = startReconcileLoop(ctx, { namespace: NS, name: NAME });
    const ds = await waitRunning(3, 'the DataStore Running with 3 Ready nodes', 180_000);
    expect(ds.status!.endpoint).toBe('loam://e2e.default.svc:7480');
    expect(new Set(ds.status!.nodes!.map((n) => n.backend)).size).toBe(3);
    expect(ds.status!.nodes!.map((n) => n.name)).toEqual(['e2e-0', 'e2e-1', 'e2e-2']);
    expect(phases[0]).toBe('Pending');
    // Each Pod runs `loam node` named after itself, on its own address.
    for (const n of ds.status!.nodes!) {
      const p = kubelet.processOf(n.name)!;
      expect(p.containers[0]!.argv.join(' ')).toContain(`node --node-name ${n.name} --listen ${p.ip}:7480`);
      expect(n.endpoint).toBe(`loam://${p.ip}:7480`);
    }
  }, 240_000);

  it('the SDK writes and reads through the nodes\' endpoints', async () => {
    const ds = (await getDs())!;
    const c = await sdk(ds);
    for (let i = 0; i < 30; i++) await write(c, `item-${i}`, `text ${i}`);
    const c2 = await sdk(ds);
    await expectAllReadable(c2);
    // status.nodes counts them (replica copies included) once the status is next written.
    await pollUntil(async () => ((await getDs())!.status!.nodes ?? []).reduce((s, n) => s + (n.objects ?? 0), 0) >= 30, 'objects counted in the status', 30_000);
  }, 60_000);

  it('scale 3→2 drains the highest ordinal and keeps every object readable', async () => {
    const from = phases.length;
    await kube.kubectl(['scale', `datastore/${NAME}`, '--replicas=2']);
    const ds = await waitRunning(2, 'Running with 2 nodes after the drain', 180_000);
    expect(ds.status!.nodes!.map((n) => n.name)).toEqual(['e2e-0', 'e2e-1']);
    expect(phases.slice(from)).toContain('Scaling');
    const sts = (await kube.request('GET', `/apis/apps/v1/namespaces/${NS}/statefulsets/${NAME}`)).body as { spec: { replicas: number } };
    expect(sts.spec.replicas).toBe(2);
    const evs = (await kube.kubectl(['get', 'events', '--field-selector', `involvedObject.name=${NAME},involvedObject.kind=DataStore`, '-o', 'jsonpath={range .items[*]}{.reason}{"\\n"}{end}'])).stdout;
    expect(evs).toContain('DrainStarted');
    expect(evs).toContain('ScaledDown');
    await expectAllReadable(await sdk(ds));
  }, 240_000);

  it('an image change rolls one node at a time with no acknowledged write lost', async () => {
    const from = phases.length;
    const c = await sdk((await getDs())!);
    let stop = false;
    let errors = 0;
    const failures: string[] = [];
    let n = 0;
    const writer = (async () => {
      while (!stop) {
        const t0 = Date.now();
        try {
          await write(c, `roll-${n}`, `during the roll ${n}`, true);
          n++;
        } catch (e) {
          // An unacknowledged write: retried with the next alias, not counted as written.
          failures.push(`roll-${n} failed after ${Date.now() - t0} ms (phase ${phases[phases.length - 1]}): ${String(e)}`);
          n++;
          errors++;
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    })();
    try {
      minReady.reset();
      await kube.kubectl(['patch', `datastore/${NAME}`, '--type=merge', '-p', JSON.stringify({ spec: { image: 'loam:test-2' } })]);
      await pollUntil(async () => {
        const ds = await getDs();
        if (!ready(ds, 2)) return false;
        return ds!.status!.nodes!.every((x) => kubelet.processOf(x.name)?.containers[0]?.image === 'loam:test-2');
      }, 'both nodes on loam:test-2 and Running', 240_000, { everyMs: 200 });
    } finally {
      stop = true;
      await writer;
    }
    expect(phases.slice(from)).toContain('Upgrading');
    // One node at a time: the other stayed Ready throughout.
    expect(minReady.value).toBe(1);
    expect(n).toBeGreaterThan(0);
    const evs = (await kube.kubectl(['get', 'events', '--field-selector', `involvedObject.name=${NAME},involvedObject.kind=DataStore`, '-o', 'jsonpath={range .items[*]}{.reason}{"\\n"}{end}'])).stdout;
    expect(evs).toContain('RolloutStarted');
    expect(evs).toContain('RolloutStep');
    await expectAllReadable(await sdk((await getDs())!));
    console.log(`roll: ${n - errors} writes acknowledged, ${errors} failed and retried\n${failures.join('\n')}`);
  }, 300_000);

  it('a Pod deleted with its PVC restores from S3 and its objects are readable', async () => {
    const ds = (await getDs())!;
    const c = await sdk(ds);
    // Mastered on the node about to lose its volume, so its restore has them to bring back.
    const target = ds.status!.nodes!.find((x) => x.name === 'e2e-1')!.backend!;
    for (let i = 0; i < 10; i++) await write(c, `pre-loss-${i}`, `before the loss ${i}`, false, target);
    await c.flush({ timeoutMs: 60_000 }); // in S3 on every node
    const old = kubelet.processOf('e2e-1')!;
    const oldDir = kubelet.volumeDir('data-e2e-1');
    await kube.kubectl(['delete', 'pvc', 'data-e2e-1', '--wait=false']);
    await kube.kubectl(['delete', 'pod', 'e2e-1', '--wait=false']);
    await kubelet.waitProcess('e2e-1', { notUid: old.uid, timeoutMs: 120_000 });
    expect(kubelet.volumeDir('data-e2e-1')).not.toBe(oldDir);
    // It restored its log from S3 (the node logs it), not started empty.
    await pollUntil(() => kubelet.processOf('e2e-1')!.logs.includes('restored the log from S3'), 'e2e-1 to restore from S3', 120_000, { everyMs: 200 });
    const back = await pollUntil(async () => {
      const d = await getDs();
      return ready(d, 2) && d!.status!.nodes!.find((x) => x.name === 'e2e-1')!.endpoint === `loam://${kubelet.processOf('e2e-1')!.ip}:7480` ? d : undefined;
    }, 'Running again with the restored node', 180_000, { everyMs: 200 });
    // The restored node holds its objects again (its count reaches the status with a later pass).
    let seen: NonNullable<NonNullable<DataStore['status']>['nodes']>[number] | undefined;
    await pollUntil(async () => ((seen = (await getDs())!.status!.nodes!.find((x) => x.name === 'e2e-1'))?.objects ?? 0) >= 10, 'the restored node to hold its 10 objects', 30_000, {
      everyMs: 200,
      detail: () => `status: ${JSON.stringify(seen)}; node: ${kubelet.processOf('e2e-1')!.logs.split('\n').filter((l) => /restored the log/.test(l)).join('\n')}`,
    });
    for (let i = 0; i < 10; i++) expect(oidHomeNode(acked.get(`pre-loss-${i}`)!.oid)).toBe(target);
    await expectAllReadable(await sdk(back!));
  }, 300_000);

  it('deletion with Delete leaves no etcd keys and no S3 objects under the prefixes', async () => {
    const s3Client = () => new S3Client({ endpoint: s3.endpoint, region: s3.region, forcePathStyle: true, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } });
    const pre = new Etcd3({ hosts: etcd.endpoints });
    const preS3 = s3Client();
    try {
      // There is something to delete.
      expect(Number(await pre.getAll().prefix('/loam/default/e2e/').count())).toBeGreaterThan(0);
      expect((await preS3.send(new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: 'default/e2e/' }))).KeyCount).toBeGreaterThan(0);
    } finally {
      pre.close();
      preS3.destroy();
    }
    await kube.kubectl(['delete', `datastore/${NAME}`, '--wait=false']);
    await pollUntil(async () => (await getDs()) === undefined, 'the DataStore gone', 180_000, { everyMs: 200 });
    expect(phases).toContain('Deleting');
    console.log(`phases: ${phases.join(' → ')}`);
    const e = new Etcd3({ hosts: etcd.endpoints });
    try {
      expect(Number(await e.getAll().prefix('/loam/default/e2e/').count())).toBe(0);
    } finally {
      e.close();
    }
    const client = s3Client();
    try {
      const list = await client.send(new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: 'default/e2e/' }));
      expect(list.KeyCount ?? 0).toBe(0);
    } finally {
      client.destroy();
    }
    await pollUntil(async () => ((await kube.request('GET', `/api/v1/namespaces/${NS}/persistentvolumeclaims?labelSelector=app.kubernetes.io/instance=${NAME}`)).body as { items: unknown[] }).items.length === 0, 'the PVCs gone', 60_000);
  }, 240_000);
});
