/**
 * The DataStore CustomResourceDefinition (crds/datastores.loam.dev.yaml, generated from
 * operator/src/crd/) against a real kube-apiserver v1.37.2: it is accepted and Established, its
 * defaults are filled in, its OpenAPI and CEL rules reject what they should (422 with the rule's
 * message) and accept what they should, the scale and status subresources work, kubectl shows the
 * printer columns, and the examples in examples/ are valid. No controller runs: the API server
 * (with its etcd) alone, so this needs neither the controller-manager, the scheduler nor kwok.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { completeDataStore, DATASTORE_CRD_NAME, type DataStore } from '@loam/operator';
import { DATASTORE_CRD_FILE as CRD_FILE, installDataStoreCrd, kubeSetup } from '../harness/kube-suite.js';
import { startKube, type KubeCluster } from '../harness/kube.js';
import { ROOT, waitFor } from '../harness/node-process.js';

const MINIMAL = path.join(ROOT, 'examples/datastore-minimal.yaml');
const WITH_S3 = path.join(ROOT, 'examples/datastore-s3.yaml');
const NS = 'default';
const API = `/apis/loam.dev/v1alpha1/namespaces/${NS}/datastores`;

let kube: KubeCluster;
let crdApply = '';
kubeSetup(async () => {
  kube = await startKube({ controllerManager: false, scheduler: false });
  crdApply = await installDataStoreCrd(kube);
});

afterAll(async () => {
  await kube?.stop();
});

// ---------------------------------------------------------------------------------------------------------
// helpers

type Obj = Record<string, unknown>;
interface ApiStatus {
  kind: 'Status';
  code: number;
  reason: string;
  message: string;
}

const dataStore = (name: string, spec: Obj): Obj => ({ apiVersion: 'loam.dev/v1alpha1', kind: 'DataStore', metadata: { name }, spec });

async function create(obj: Obj): Promise<{ status: number; body: Obj }> {
  return (await kube.request('POST', API, obj)) as { status: number; body: Obj };
}

async function createOk(obj: Obj): Promise<DataStore> {
  const r = await create(obj);
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return r.body as unknown as DataStore;
}

async function get(name: string): Promise<DataStore> {
  const r = await kube.request('GET', `${API}/${name}`);
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body as DataStore;
}

/** GET, change with `edit`, PUT (the resourceVersion read is sent back, so it is a plain update). */
async function update(name: string, edit: (ds: DataStore) => void, subresource = ''): Promise<{ status: number; body: Obj }> {
  const ds = await get(name);
  edit(ds);
  return (await kube.request('PUT', `${API}/${name}${subresource}`, ds)) as { status: number; body: Obj };
}

/** A 422 Invalid whose message has `message` in it (and, with `field`, names that field). */
function expectInvalid(r: { status: number; body: unknown }, message: string, field?: string): void {
  const body = r.body as ApiStatus;
  expect(r.status, JSON.stringify(body)).toBe(422);
  expect(body).toMatchObject({ kind: 'Status', reason: 'Invalid', code: 422 });
  expect(body.message).toContain(message);
  if (field) expect(body.message).toContain(field);
}

const complete = (name: string) => completeDataStore(name, NS);
let accepted = 0;

// ---------------------------------------------------------------------------------------------------------

describe('the DataStore CRD on kube-apiserver', () => {
  it('applies from crds/ and becomes Established with its names accepted; the API server stores the schema as generated', async () => {
    expect(crdApply).toContain(`customresourcedefinition.apiextensions.k8s.io/${DATASTORE_CRD_NAME} created`);
    const crd = (await kube.request('GET', `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${DATASTORE_CRD_NAME}`)).body as {
      spec: { names: Obj; versions: { schema: unknown }[] };
      status: { conditions: { type: string; status: string }[]; acceptedNames: Obj };
    };
    const cond = Object.fromEntries(crd.status.conditions.map((c) => [c.type, c.status]));
    expect(cond).toMatchObject({ Established: 'True', NamesAccepted: 'True' });
    expect(crd.status.acceptedNames).toMatchObject({ kind: 'DataStore', plural: 'datastores', shortNames: ['lds'] });
    // Nothing in the definition was dropped or rewritten on the way in.
    const ours = parseAllDocuments(fs.readFileSync(CRD_FILE, 'utf8'))[0].toJS() as { spec: { versions: { schema: unknown }[] } };
    expect(crd.spec.versions[0].schema).toEqual(ours.spec.versions[0].schema);
    // Applying the same file again changes nothing.
    expect((await kube.kubectl(['apply', '-f', CRD_FILE])).stdout).toContain(`${DATASTORE_CRD_NAME} unchanged`);
    // kubectl finds it by its short name (api-resources reads discovery afresh, past kubectl's cache
    // from before the CRD existed) ...
    const resources = (await kube.kubectl(['api-resources', '--api-group=loam.dev', '--no-headers'])).stdout.trim();
    expect(resources.split(/\s+/)).toEqual(['datastores', 'lds', 'loam.dev/v1alpha1', 'true', 'DataStore']);
    // ... and shows the schema's descriptions with `kubectl explain`, once the API server has
    // published the CRD in its OpenAPI documents (that happens in the background, after Established).
    const explained = await waitFor(
      async () => {
        const r = await kube.kubectl(['explain', 'lds.spec.deletionPolicy'], { check: false });
        return r.code === 0 && r.stdout;
      },
      'kubectl explain lds.spec.deletionPolicy (the OpenAPI v3 document with DataStore in it)',
      30_000,
      200,
    );
    expect(explained).toMatch(/Retain keeps them, Delete removes them/);
  });

  it('a minimal DataStore (nodes: 3, the example) is accepted and read back with every default filled in', async () => {
    expect((await kube.kubectl(['apply', '-f', MINIMAL])).stdout).toContain('datastore.loam.dev/minimal created');
    const ds = await get('minimal');
    expect(ds.spec).toEqual({
      nodes: 3,
      imagePullPolicy: 'IfNotPresent',
      storage: { size: '10Gi' },
      cacheSize: '64Mi',
      etcd: { managed: { members: 3 } },
      deletionPolicy: 'Retain',
    });
    expect(ds.status).toBeUndefined();
    expect(ds.metadata.generation).toBe(1);
    // Applying it again is a no-op: the defaults are not a difference.
    expect((await kube.kubectl(['apply', '-f', MINIMAL])).stdout).toContain('datastore.loam.dev/minimal unchanged');
    // With no spec at all the same defaults apply; S3 defaults only come with an s3 section.
    expect((await createOk(dataStore('empty', {}))).spec).toEqual(ds.spec);
    const s3 = await createOk(dataStore('s3-defaults', { s3: { bucket: 'loam-b' } }));
    expect(s3.spec.s3).toEqual({ bucket: 'loam-b', uploadInterval: '5s' });
  });

  it('a DataStore with every field of the TypeScript types set is stored as written: nothing pruned, nothing added', async () => {
    // External etcd: `managed` goes (the two exclude each other).
    const external = complete('every-field');
    delete (external.spec.etcd as Partial<typeof external.spec.etcd>).managed;
    const { status: _ignored, ...withoutStatus } = external;
    const stored = await createOk(withoutStatus);
    expect(stored.spec).toEqual(external.spec);
    // Managed etcd: `endpoints` and `credentialsSecret` go.
    const managed = complete('every-field-managed');
    delete (managed.spec.etcd as Partial<typeof managed.spec.etcd>).endpoints;
    delete (managed.spec.etcd as Partial<typeof managed.spec.etcd>).credentialsSecret;
    // A status sent with a create is dropped: the status subresource owns it.
    const stored2 = await createOk(managed);
    expect(stored2.spec).toEqual(managed.spec);
    expect(stored2.status).toBeUndefined();
  });

  it('nodes: 0 is rejected with 422 and the rule\'s message, through the API and through kubectl', async () => {
    expectInvalid(await create(dataStore('zero', { nodes: 0 })), 'nodes must be at least 1', 'spec.nodes');
    expectInvalid(await create(dataStore('negative', { nodes: -2 })), 'nodes must be at least 1');
    const r = await kube.kubectl(['apply', '-f', '-'], { input: 'apiVersion: loam.dev/v1alpha1\nkind: DataStore\nmetadata: { name: zero }\nspec: { nodes: 0 }\n', check: false });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/is invalid/);
    expect(r.stderr).toContain('nodes must be at least 1');
    expect((await kube.request('GET', `${API}/zero`)).status).toBe(404);
  });

  it.each([
    ['an unknown deletionPolicy', { deletionPolicy: 'Forget' }, 'Unsupported value: "Forget"', 'spec.deletionPolicy'],
    ['an unknown imagePullPolicy', { imagePullPolicy: 'Sometimes' }, 'Unsupported value: "Sometimes"', 'spec.imagePullPolicy'],
    ['etcd endpoints and managed at once', { etcd: { endpoints: ['etcd:2379'], managed: { members: 3 } } }, 'etcd.endpoints and etcd.managed exclude each other', 'spec.etcd'],
    ['etcd credentials for a managed etcd', { etcd: { credentialsSecret: 'creds' } }, 'etcd.credentialsSecret is for an external etcd', 'spec.etcd.credentialsSecret'],
    ['an even number of managed etcd members', { etcd: { managed: { members: 4 } } }, 'etcd.managed.members must be 1, 3, 5 or 7', 'spec.etcd.managed.members'],
    ['an etcd prefix that is not a key path', { etcd: { prefix: 'loam' } }, 'should match', 'spec.etcd.prefix'],
    ['two etcd endpoints in one string', { etcd: { endpoints: ['a:2379,b:2379'] } }, 'should match', 'spec.etcd.endpoints[0]'],
    ['a cacheSize of 0', { cacheSize: '0' }, 'must be a positive quantity', 'spec.cacheSize'],
    ['a cacheSize that is no quantity', { cacheSize: 'lots' }, 'must be a positive quantity', 'spec.cacheSize'],
    ['a cacheSize above the memory limit', { cacheSize: '2Gi', resources: { limits: { memory: '1Gi' } } }, 'cacheSize must be below resources.limits.memory', 'spec.cacheSize'],
    ['a resource limit that is no quantity', { resources: { limits: { cpu: 'two' } } }, 'should match', 'spec.resources.limits.cpu'],
    ['a storage size of -1Gi', { storage: { size: '-1Gi' } }, 'must be a positive quantity', 'spec.storage.size'],
    ['s3 without a bucket', { s3: { endpoint: 'http://s3:7070' } }, 'Required value', 'spec.s3.bucket'],
    ['an s3 bucket name S3 refuses', { s3: { bucket: 'My_Bucket' } }, 'should match', 'spec.s3.bucket'],
    ['an s3 endpoint that is not http(s)', { s3: { bucket: 'loam-b', endpoint: 'ftp://s3:21' } }, 's3.endpoint must be an http:// or https:// URL', 'spec.s3.endpoint'],
    ['an upload interval below 100ms', { s3: { bucket: 'loam-b', uploadInterval: '50ms' } }, 's3.uploadInterval must be at least 100ms', 'spec.s3.uploadInterval'],
    ['an upload interval the node cannot parse', { s3: { bucket: 'loam-b', uploadInterval: '1m30s' } }, 'should match', 'spec.s3.uploadInterval'],
    ['a Secret name that is no DNS subdomain', { s3: { bucket: 'loam-b', credentialsSecret: 'S3 Keys' } }, 'should match', 'spec.s3.credentialsSecret'],
    ['a pod label the operator selects by', { podTemplate: { labels: { 'app.kubernetes.io/instance': 'other' } } }, 'podTemplate.labels may not set app.kubernetes.io/name', 'spec.podTemplate.labels'],
    ['tolerations that are not a list', { podTemplate: { tolerations: { key: 'x' } } }, 'must be of type array', 'spec.podTemplate.tolerations'],
  ])('%s is rejected', async (_what, spec, message, field) => {
    expectInvalid(await create(dataStore('rejected', spec)), message, field);
  });

  it.each([
    ['integer quantities', { cacheSize: '512Mi', resources: { limits: { cpu: 2, memory: 1073741824 }, requests: { cpu: '500m', memory: '768Mi' } } }],
    ['a cacheSize just below the memory limit', { cacheSize: '1023Mi', resources: { limits: { memory: '1Gi' } } }],
    ['one managed etcd member', { etcd: { managed: { members: 1 } } }],
    ['an external etcd with credentials and a prefix', { etcd: { endpoints: ['https://etcd.db.svc:2379'], credentialsSecret: 'etcd-creds', prefix: '/loam/prod' } }],
    ['fractional and millisecond upload intervals', { s3: { bucket: 'loam.b-1', uploadInterval: '1.5s' } }],
    ['an s3 endpoint with a path', { s3: { bucket: 'loam-b', endpoint: 'https://s3.example:9000/base', uploadInterval: '100ms' } }],
    ['pod labels of the user\'s own', { podTemplate: { labels: { 'app.kubernetes.io/version': '1', team: 'x' } } }],
  ])('%s are accepted', async (_what, spec) => {
    await createOk(dataStore(`accepted-${++accepted}`, spec));
  });

  it('a name that would not fit the children\'s names is rejected', async () => {
    expectInvalid(await create(dataStore('a'.repeat(41), {})), 'at most 40 characters', 'metadata.name');
    expectInvalid(await create(dataStore('1st', {})), 'starts with a letter');
    await createOk(dataStore('a'.repeat(40), {}));
  });

  it('an unknown field is refused by kubectl (strict field validation)', async () => {
    const r = await kube.kubectl(['apply', '-f', '-'], { input: 'apiVersion: loam.dev/v1alpha1\nkind: DataStore\nmetadata: { name: typo }\nspec: { nodes: 3, node: 4 }\n', check: false });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('unknown field "spec.node"');
  });

  it('etcd.prefix is fixed at creation: it cannot be changed, removed or added later', async () => {
    await createOk(dataStore('fixed-etcd', { etcd: { prefix: '/loam/default/a' } }));
    const msg = 'etcd.prefix cannot be added, changed or removed after creation';
    expectInvalid(await update('fixed-etcd', (d) => void (d.spec.etcd!.prefix = '/loam/default/b')), msg, 'spec.etcd.prefix');
    expectInvalid(await update('fixed-etcd', (d) => void delete d.spec.etcd!.prefix), msg);
    expect((await get('fixed-etcd')).spec.etcd!.prefix).toBe('/loam/default/a');
    // Everything else may change; the prefix given again unchanged is fine.
    expect((await update('fixed-etcd', (d) => void ((d.spec.nodes = 4), (d.spec.etcd!.managed = { members: 5 })))).status).toBe(200);
    // Created without one (the operator derives it), one cannot be added.
    await createOk(dataStore('derived-etcd', {}));
    expectInvalid(await update('derived-etcd', (d) => void (d.spec.etcd!.prefix = '/loam/default/x')), msg);
  });

  it('etcd cannot switch between managed and external after creation', async () => {
    await createOk(dataStore('managed-etcd', {}));
    expectInvalid(await update('managed-etcd', (d) => void (d.spec.etcd = { endpoints: ['etcd:2379'] })), 'etcd cannot switch between an external etcd', 'spec.etcd');
    await createOk(dataStore('external-etcd', { etcd: { endpoints: ['etcd-0:2379'] } }));
    expectInvalid(await update('external-etcd', (d) => void (d.spec.etcd = { managed: { members: 3 } })), 'etcd cannot switch');
    // The endpoints of an external etcd may change (members replaced).
    expect((await update('external-etcd', (d) => void (d.spec.etcd!.endpoints = ['etcd-0:2379', 'etcd-1:2379']))).status).toBe(200);
  });

  it('s3.bucket and s3.prefix are fixed once a bucket is set; the S3 tier may be added later', async () => {
    await createOk(dataStore('fixed-s3', { s3: { bucket: 'loam-a', prefix: 'one/' } }));
    expectInvalid(await update('fixed-s3', (d) => void (d.spec.s3!.bucket = 'loam-b')), 's3.bucket cannot be changed or removed once set', 'spec.s3.bucket');
    expectInvalid(await update('fixed-s3', (d) => void delete d.spec.s3), 's3.bucket cannot be changed or removed once set');
    const prefixMsg = 's3.prefix cannot be added, changed or removed once s3.bucket is set';
    expectInvalid(await update('fixed-s3', (d) => void (d.spec.s3!.prefix = 'two/')), prefixMsg, 'spec.s3.prefix');
    expectInvalid(await update('fixed-s3', (d) => void delete d.spec.s3!.prefix), prefixMsg);
    // The rest of s3 may change.
    expect((await update('fixed-s3', (d) => void ((d.spec.s3!.uploadInterval = '30s'), (d.spec.s3!.endpoint = 'https://s3.example:9000')))).status).toBe(200);
    expect((await get('fixed-s3')).spec.s3).toEqual({ bucket: 'loam-a', prefix: 'one/', uploadInterval: '30s', endpoint: 'https://s3.example:9000' });

    await createOk(dataStore('later-s3', { nodes: 3 }));
    expect((await update('later-s3', (d) => void (d.spec.s3 = { bucket: 'loam-late' }))).status).toBe(200);
    expectInvalid(await update('later-s3', (d) => void (d.spec.s3!.prefix = 'p/')), prefixMsg);
  });

  it('storage: the class is fixed, the size may grow and never shrink', async () => {
    await createOk(dataStore('volumes', { storage: { size: '10Gi', storageClassName: 'fast' } }));
    expectInvalid(await update('volumes', (d) => void (d.spec.storage!.storageClassName = 'slow')), 'storage.storageClassName cannot be added, changed or removed', 'spec.storage.storageClassName');
    expectInvalid(await update('volumes', (d) => void (d.spec.storage!.size = '5Gi')), 'storage.size cannot shrink', 'spec.storage.size');
    expect((await update('volumes', (d) => void (d.spec.storage!.size = '20Gi'))).status).toBe(200);
    expectInvalid(await update('volumes', (d) => void (d.spec.storage!.size = '10240Mi')), 'storage.size cannot shrink');
  });

  it('kubectl get lds prints the Nodes, Ready, Phase and Age columns', async () => {
    await createOk(dataStore('listed', { nodes: 5 }));
    const table = (await kube.kubectl(['get', 'lds', 'listed'])).stdout.trimEnd().split('\n');
    expect(table[0].split(/\s+/)).toEqual(['NAME', 'NODES', 'READY', 'PHASE', 'AGE']);
    // No status yet: Ready and Phase are blank.
    expect(table[1]).toMatch(/^listed\s+5\s+\d+s$/);
    // With a status, the operator's fields fill the columns; -o wide adds the client endpoint.
    const patch = JSON.stringify({ status: { phase: 'Scaling', readyNodes: 2, endpoint: 'loam://listed.default.svc:7480' } });
    await kube.kubectl(['patch', 'lds', 'listed', '--subresource=status', '--type=merge', '-p', patch]);
    expect((await kube.kubectl(['get', 'lds', 'listed', '--no-headers'])).stdout).toMatch(/^listed\s+5\s+2\s+Scaling\s+\d+s\s*$/);
    const wide = (await kube.kubectl(['get', 'lds', 'listed', '-o', 'wide'])).stdout.split('\n');
    expect(wide[0].split(/\s+/)).toEqual(['NAME', 'NODES', 'READY', 'PHASE', 'AGE', 'ENDPOINT']);
    expect(wide[1]).toContain('loam://listed.default.svc:7480');
    // The full name, the kind and the `loam` category list it too.
    for (const name of ['datastores', 'datastore.loam.dev', 'loam']) expect((await kube.kubectl(['get', name, '-o', 'name'])).stdout).toContain('datastore.loam.dev/listed');
  });

  it('kubectl scale datastore/x --replicas=5 changes spec.nodes through the scale subresource', async () => {
    await createOk(dataStore('scaled', { nodes: 3 }));
    expect((await kube.kubectl(['scale', 'datastore/scaled', '--replicas=5'])).stdout).toContain('datastore.loam.dev/scaled scaled');
    const ds = await get('scaled');
    expect(ds.spec.nodes).toBe(5);
    expect(ds.metadata.generation).toBe(2);
    // The Scale object reads the status fields named by the CRD.
    await kube.kubectl(['patch', 'lds', 'scaled', '--subresource=status', '--type=merge', '-p', JSON.stringify({ status: { readyNodes: 4, selector: 'app.kubernetes.io/instance=scaled' } })]);
    const scale = (await kube.request('GET', `${API}/scaled/scale`)).body as { kind: string; spec: { replicas: number }; status: { replicas: number; selector: string } };
    expect(scale).toMatchObject({ kind: 'Scale', spec: { replicas: 5 }, status: { replicas: 4, selector: 'app.kubernetes.io/instance=scaled' } });
    // The schema's rules hold for a scale too.
    const zero = await kube.kubectl(['scale', 'datastore/scaled', '--replicas=0'], { check: false });
    expect(zero.code).not.toBe(0);
    expect(zero.stderr).toContain('nodes must be at least 1');
    expect((await get('scaled')).spec.nodes).toBe(5);
  });

  it('the status subresource takes every status field, and a status write never changes the spec', async () => {
    const sample = complete('with-status');
    delete (sample.spec.etcd as Partial<typeof sample.spec.etcd>).managed;
    const { status, ...rest } = sample;
    const created = await createOk(rest);

    // PATCH /status (kubectl patch --subresource=status) with the complete status, and a spec change in the same body.
    const patch = JSON.stringify({ spec: { nodes: 7 }, status });
    await kube.kubectl(['patch', 'lds', 'with-status', '--subresource=status', '--type=merge', '-p', patch]);
    const after = await get('with-status');
    expect(after.status).toEqual(status);
    expect(after.spec).toEqual(created.spec);
    expect(after.metadata.generation).toBe(created.metadata.generation);

    // The other way round: an update of the resource itself leaves the status alone.
    const r = await update('with-status', (d) => void ((d.spec.nodes = 4), (d.status!.phase = 'Degraded'), (d.status!.readyNodes = 0)));
    expect(r.status).toBe(200);
    const again = await get('with-status');
    expect(again.spec.nodes).toBe(4);
    expect(again.status).toEqual(status);
    expect(again.metadata.generation).toBe(created.metadata.generation! + 1);

    // The status has a schema too.
    expectInvalid(await update('with-status', (d) => void (d.status!.phase = 'Exploded' as never), '/status'), 'Unsupported value: "Exploded"', 'status.phase');
    expectInvalid(
      await update('with-status', (d) => void d.status!.conditions!.push({ ...d.status!.conditions![0] }), '/status'),
      'Duplicate value',
      'status.conditions',
    );
  });

  it('the examples are valid DataStores (server-side dry-run apply)', async () => {
    const docs = (file: string) => parseAllDocuments(fs.readFileSync(file, 'utf8')).map((d) => d.toJS() as Obj);
    // The minimal example is just `nodes: 3`.
    expect(docs(MINIMAL).map((d) => d.spec)).toEqual([{ nodes: 3 }]);
    const s3 = docs(WITH_S3);
    expect(s3.map((d) => d.kind)).toEqual(['Secret', 'DataStore']);
    const ds = s3[1] as { spec: { s3: { credentialsSecret: string; bucket: string } } };
    expect(ds.spec.s3.credentialsSecret).toBe((s3[0].metadata as { name: string }).name);

    for (const file of [MINIMAL, WITH_S3]) {
      const out = (await kube.kubectl(['apply', '--server-side', '--dry-run=server', '--field-manager=examples-test', '-f', file])).stdout;
      for (const d of docs(file)) {
        const kind = d.kind === 'Secret' ? 'secret' : 'datastore.loam.dev';
        expect(out).toContain(`${kind}/${(d.metadata as { name: string }).name} serverside-applied (server dry run)`);
      }
    }
    // A dry run stores nothing.
    expect((await kube.request('GET', `${API}/tiered`)).status).toBe(404);
    // What the server would store for the S3 example: the S3 defaults and the given fields.
    const dry = JSON.parse((await kube.kubectl(['apply', '--server-side', '--dry-run=server', '-o', 'json', '-f', '-'], { input: JSON.stringify(s3[1]) })).stdout) as DataStore;
    expect(dry.spec.s3).toEqual({ endpoint: 'http://s3.storage.svc.cluster.local:7070', bucket: 'loam-data', prefix: 'tiered/', region: 'us-east-1', credentialsSecret: 'loam-s3-credentials', uploadInterval: '5s' });
  });
});
