/**
 * The install paths against the real thing: helm v3.22.0 and kubectl v1.37.2 (built with `go` and
 * cached, kube-tools.ts) on a real kube-apiserver and kube-controller-manager (kube.ts).
 *
 * - `helm lint` (also `--strict`) and `helm template` of charts/loam: what it renders by default and
 *   with each switch (watchNamespace, leader election, ServiceMonitor, Grafana dashboard), the
 *   values schema rejecting bad values with errors naming them, the dashboard querying only metrics
 *   that exist.
 * - `kubectl apply -f deploy/loam.yaml` creates its objects (the operator's Pod is admitted under the
 *   `restricted` Pod Security Standard the Namespace enforces) and `kubectl delete -f` removes them.
 * - `helm install` creates the same objects, `helm upgrade` carries changed values to the
 *   Deployment and adds and removes the optional objects, `helm uninstall` removes the release and
 *   keeps the CRD (and the DataStores).
 * - Least privilege: with a real token of the chart's ServiceAccount (TokenRequest API) the operator
 *   can do each thing its controller uses and nothing else (SelfSubjectAccessReviews through the
 *   token, and real calls), both watching every namespace and with watchNamespace.
 * - End to end, with kwok's fake Nodes and the kubelet harness (test/harness/kubelet.ts) running the
 *   Pods' real processes: `helm install --wait` runs two operator replicas as `loam operator`
 *   processes with the chart's token mount and RBAC; both become Ready through the chart's probes,
 *   one holds the Lease and says so in its metrics, and the other takes over when the leader's Pod
 *   is deleted.
 *
 * The tests of a describe block run in order and build on each other (one cluster per file).
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { ensureKubeTools, type KubeTools } from '../harness/kube-tools.js';
import { startKube, type KubeCluster } from '../harness/kube.js';
import { startKubelet, type Kubelet } from '../harness/kubelet.js';
import { ROOT } from '../harness/node-process.js';
import { pollUntil } from '../harness/wait.js';

const CHART = path.join(ROOT, 'charts/loam');
const DEPLOY = path.join(ROOT, 'deploy/loam.yaml');
const NS = 'loam-system';
const SA = 'loam-operator';
const LEASE = 'loam-operator';
const WORKLOADS = 'apps'; // a namespace where DataStores live

type Obj = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> } } & Record<string, any>;

let tools: KubeTools;
let kube: KubeCluster;
// As in the other test/kube files: a component that cannot be built or started fails every test
// (vitest would report the tests of a file whose beforeAll threw as skipped).
let toolsError: unknown;
let kubeError: unknown;
const helmHome = fs.mkdtempSync(path.join(os.tmpdir(), 'loam-helm-test-'));

beforeAll(async () => {
  try {
    tools = await ensureKubeTools(); // cold: minutes; warm: a few stat calls
  } catch (e) {
    toolsError = e;
  }
}, 60 * 60_000);

afterAll(() => {
  fs.rmSync(helmHome, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------------------
// helpers

const run = promisify(execFile);

/** helm without a cluster (lint, template), its homes in a temp dir. Resolves with the exit code and output. */
async function helmLocal(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const env = { PATH: process.env.PATH ?? '', HOME: helmHome, HELM_CACHE_HOME: `${helmHome}/cache`, HELM_CONFIG_HOME: `${helmHome}/config`, HELM_DATA_HOME: `${helmHome}/data` };
  try {
    const r = await run(tools.helm, args, { env, cwd: ROOT, timeout: 60_000, maxBuffer: 64 * 1024 * 1024 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof err.code === 'number' ? err.code : 1, stdout: err.stdout ?? '', stderr: err.stderr ?? String(e) };
  }
}

const docsOf = (text: string): Obj[] => parseAllDocuments(text).map((d) => d.toJS() as Obj).filter((d) => d !== null && typeof d === 'object');

async function template(...set: string[]): Promise<Obj[]> {
  const r = await helmLocal(['template', 'loam', CHART, '--namespace', NS, ...set.flatMap((s) => ['--set', s])]);
  expect(r.code, r.stderr).toBe(0);
  return docsOf(r.stdout);
}

const find = (docs: Obj[], kind: string, name?: string): Obj | undefined => docs.find((d) => d.kind === kind && (name === undefined || d.metadata.name === name));
const ids = (docs: Obj[]) => docs.map((d) => `${d.kind}/${d.metadata.namespace ?? ''}/${d.metadata.name}`);
const container = (dep: Obj) => dep.spec.template.spec.containers[0];

/** The REST path of an object (the kinds the chart and deploy/loam.yaml hold). */
function apiPath(o: { apiVersion: string; kind: string; metadata: { name: string; namespace?: string } }): string {
  const plural: Record<string, string> = {
    Namespace: 'namespaces',
    CustomResourceDefinition: 'customresourcedefinitions',
    ServiceAccount: 'serviceaccounts',
    ClusterRole: 'clusterroles',
    ClusterRoleBinding: 'clusterrolebindings',
    Role: 'roles',
    RoleBinding: 'rolebindings',
    Service: 'services',
    Deployment: 'deployments',
    ConfigMap: 'configmaps',
    ServiceMonitor: 'servicemonitors',
  };
  const base = o.apiVersion === 'v1' ? '/api/v1' : `/apis/${o.apiVersion}`;
  const ns = o.metadata.namespace ? `/namespaces/${o.metadata.namespace}` : '';
  return `${base}${ns}/${plural[o.kind] ?? `${o.kind.toLowerCase()}s`}/${o.metadata.name}`;
}

async function getObj(o: Parameters<typeof apiPath>[0]): Promise<{ status: number; body: any }> {
  return kube.request('GET', apiPath(o));
}

/** A real token of a ServiceAccount, from the TokenRequest API (as the kubelet gets one). */
async function tokenOf(ns: string, sa: string): Promise<string> {
  const r = await kube.request('POST', `/api/v1/namespaces/${ns}/serviceaccounts/${sa}/token`, { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest', spec: { expirationSeconds: 600 } });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return (r.body as { status: { token: string } }).status.token;
}

/** An HTTPS call to the API server with a bearer token: what the operator's own client does. */
function asToken(token: string, method: string, urlPath: string, body?: unknown): Promise<{ status: number; body: any }> {
  return kube.request(method, urlPath, body, { token });
}

interface Access {
  verb: string;
  group: string;
  resource: string;
  subresource?: string;
  namespace?: string;
  name?: string;
}
const show = (a: Access) => `${a.verb} ${a.group || 'core'}/${a.resource}${a.subresource ? `/${a.subresource}` : ''}${a.name ? ` ${a.name}` : ''} in ${a.namespace ?? '(cluster)'}`;

/** Asks the API server's authorizer, through the token itself (SelfSubjectAccessReview), whether the token may do `a`. */
async function allowed(token: string, a: Access): Promise<boolean> {
  const r = await asToken(token, 'POST', '/apis/authorization.k8s.io/v1/selfsubjectaccessreviews', {
    apiVersion: 'authorization.k8s.io/v1',
    kind: 'SelfSubjectAccessReview',
    spec: { resourceAttributes: { verb: a.verb, group: a.group, resource: a.resource, subresource: a.subresource ?? '', namespace: a.namespace ?? '', name: a.name ?? '' } },
  });
  if (r.status !== 201) throw new Error(`SelfSubjectAccessReview: HTTP ${r.status} ${JSON.stringify(r.body)}`);
  return (r.body as { status: { allowed: boolean } }).status.allowed;
}

/** Every access of `list` that the token's answer does not match `want` for: an empty list is a pass. */
async function mismatched(token: string, list: Access[], want: boolean): Promise<string[]> {
  const answers = await Promise.all(list.map((a) => allowed(token, a)));
  return list.filter((_, i) => answers[i] !== want).map(show);
}

const ALL7 = ['get', 'list', 'watch', 'create', 'patch', 'update', 'delete'];
/** What the controller uses (the contract of the operator's RBAC), per namespace it watches. */
function needed(ns: string | undefined): Access[] {
  const out: Access[] = [];
  const add = (group: string, resources: string[], verbs: string[], subresource?: string) => {
    for (const resource of resources) for (const verb of verbs) out.push({ verb, group, resource, subresource, namespace: ns });
  };
  add('loam.dev', ['datastores'], ['get', 'list', 'watch', 'patch', 'update']);
  add('loam.dev', ['datastores'], ['get', 'patch', 'update'], 'status');
  add('loam.dev', ['datastores'], ['update'], 'finalizers');
  add('', ['configmaps', 'services', 'serviceaccounts', 'secrets'], ALL7);
  add('apps', ['statefulsets'], ALL7);
  add('policy', ['poddisruptionbudgets'], ALL7);
  add('', ['pods'], ['get', 'list', 'watch']);
  add('', ['persistentvolumeclaims'], ['get', 'list', 'watch', 'delete']);
  add('', ['events'], ['create', 'patch']);
  add('events.k8s.io', ['events'], ['create', 'patch']);
  return out;
}
const leaseNeeded = (ns: string): Access[] => [
  { verb: 'create', group: 'coordination.k8s.io', resource: 'leases', namespace: ns },
  { verb: 'get', group: 'coordination.k8s.io', resource: 'leases', namespace: ns, name: LEASE },
  { verb: 'update', group: 'coordination.k8s.io', resource: 'leases', namespace: ns, name: LEASE },
];
/** Things outside the list, in a namespace it watches (and at cluster scope). */
function forbidden(ns: string, releaseNs: string): Access[] {
  const a = (verb: string, group: string, resource: string, extra: Partial<Access> = {}): Access => ({ verb, group, resource, namespace: ns, ...extra });
  return [
    a('create', 'loam.dev', 'datastores'),
    a('delete', 'loam.dev', 'datastores'),
    a('deletecollection', 'loam.dev', 'datastores'),
    a('create', 'loam.dev', 'datastores', { subresource: 'status' }),
    a('patch', 'loam.dev', 'datastores', { subresource: 'finalizers' }),
    a('update', 'loam.dev', 'datastores', { subresource: 'scale' }),
    a('deletecollection', '', 'secrets'),
    a('deletecollection', '', 'configmaps'),
    a('create', '', 'pods'),
    a('delete', '', 'pods'),
    a('update', '', 'pods'),
    a('patch', '', 'pods'),
    a('create', '', 'pods', { subresource: 'exec' }),
    a('get', '', 'pods', { subresource: 'log' }),
    a('create', '', 'pods', { subresource: 'eviction' }),
    a('create', '', 'persistentvolumeclaims'),
    a('update', '', 'persistentvolumeclaims'),
    a('patch', '', 'persistentvolumeclaims'),
    a('create', '', 'serviceaccounts', { subresource: 'token' }),
    a('get', '', 'events'),
    a('list', '', 'events'),
    a('delete', '', 'events'),
    a('create', 'apps', 'deployments'),
    a('get', 'apps', 'deployments'),
    a('list', 'apps', 'daemonsets'),
    a('update', 'apps', 'statefulsets', { subresource: 'scale' }),
    a('create', 'rbac.authorization.k8s.io', 'roles'),
    a('create', 'rbac.authorization.k8s.io', 'rolebindings'),
    a('escalate', 'rbac.authorization.k8s.io', 'roles'),
    a('*', '', 'secrets'),
    a('*', 'loam.dev', 'datastores'),
    a('*', '*', '*'),
    a('create', 'coordination.k8s.io', 'leases'),
    a('update', 'coordination.k8s.io', 'leases', { name: LEASE }),
    a('get', 'coordination.k8s.io', 'leases', { name: LEASE }),
    // cluster scope
    a('delete', '', 'namespaces', { namespace: undefined, name: ns }),
    a('create', '', 'namespaces', { namespace: undefined }),
    a('list', '', 'nodes', { namespace: undefined }),
    a('get', '', 'nodes', { namespace: undefined }),
    a('list', '', 'persistentvolumes', { namespace: undefined }),
    a('create', 'rbac.authorization.k8s.io', 'clusterrolebindings', { namespace: undefined }),
    a('bind', 'rbac.authorization.k8s.io', 'clusterroles', { namespace: undefined }),
    a('get', 'apiextensions.k8s.io', 'customresourcedefinitions', { namespace: undefined }),
    a('delete', 'apiextensions.k8s.io', 'customresourcedefinitions', { namespace: undefined }),
    a('impersonate', '', 'users', { namespace: undefined }),
    a('*', '*', '*', { namespace: undefined }),
    // the Lease: only its own, only in the release namespace, only get/create/update
    a('list', 'coordination.k8s.io', 'leases', { namespace: releaseNs }),
    a('watch', 'coordination.k8s.io', 'leases', { namespace: releaseNs }),
    a('delete', 'coordination.k8s.io', 'leases', { namespace: releaseNs, name: LEASE }),
    a('patch', 'coordination.k8s.io', 'leases', { namespace: releaseNs, name: LEASE }),
    a('update', 'coordination.k8s.io', 'leases', { namespace: releaseNs, name: 'somebody-elses-lease' }),
    a('get', 'coordination.k8s.io', 'leases', { namespace: 'kube-system', name: LEASE }),
    a('update', 'coordination.k8s.io', 'leases', { namespace: 'default', name: LEASE }),
    a('create', 'coordination.k8s.io', 'leases', { namespace: 'default' }),
  ];
}

/** The metric names a PromQL expression reads (identifiers followed by `{`, `[` or `)` that look like ours). */
function metricsIn(expr: string): string[] {
  return [...expr.matchAll(/\b(loam_[a-z0-9_]+)\b/g)].map((m) => m[1]!);
}

/** Every metric the nodes and the operator export, as series names (a histogram also as _bucket/_sum/_count). */
function knownSeries(): Set<string> {
  const names = new Map<string, string>(); // name -> type
  for (const f of ['node/src/metrics.ts', 'node/src/s3-metrics.ts']) {
    const src = fs.readFileSync(path.join(ROOT, f), 'utf8');
    for (const m of src.matchAll(/new (Counter|Gauge|Histogram|Summary)\(\{\s*name: '([a-z0-9_]+)'/g)) names.set(m[2]!, m[1]!);
    for (const m of src.matchAll(/stat\('([a-z0-9_]+)'/g)) names.set(m[1]!, 'Gauge');
    for (const m of src.matchAll(/readonly name = '([a-z0-9_]+)'/g)) names.set(m[1]!, 'Histogram'); // the event-loop lag histogram
  }
  // The operator's (the runtime's contract).
  for (const [n, t] of [
    ['loam_operator_reconciles_total', 'Counter'],
    ['loam_operator_reconcile_errors_total', 'Counter'],
    ['loam_operator_reconcile_duration_seconds', 'Histogram'],
    ['loam_operator_queue_depth', 'Gauge'],
    ['loam_operator_leader', 'Gauge'],
  ]) names.set(n!, t!);
  const out = new Set<string>();
  for (const [n, t] of names) {
    if (t === 'Histogram' || t === 'Summary') for (const s of ['_bucket', '_sum', '_count']) out.add(n + s);
    else out.add(n);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------

describe('helm lint and helm template (no cluster)', () => {
  beforeEach(() => {
    if (toolsError) throw toolsError;
  });

  it('helm lint passes, also with --strict and with every optional object on', async () => {
    for (const args of [[], ['--strict'], ['--strict', '--set', 'metrics.serviceMonitor.enabled=true,grafanaDashboard.enabled=true,watchNamespace=apps,leaderElection.enabled=false']]) {
      const r = await helmLocal(['lint', CHART, ...args]);
      expect(r.code, `helm lint ${args.join(' ')}\n${r.stdout}${r.stderr}`).toBe(0);
      expect(r.stdout).toContain('1 chart(s) linted, 0 chart(s) failed');
      expect(r.stdout).not.toMatch(/\[(ERROR|WARNING)\]/);
    }
    // and lint does check: a bad value fails it
    const bad = await helmLocal(['lint', CHART, '--set', 'replicaCount=-1']);
    expect(bad.code).not.toBe(0);
    expect(bad.stdout + bad.stderr).toContain('replicaCount');
  });

  it('helm package makes loam-0.1.0.tgz with the CRDs, the dashboard and the schema, and it renders as the directory does', async () => {
    const out = fs.mkdtempSync(path.join(helmHome, 'pkg-'));
    const r = await helmLocal(['package', CHART, '--destination', out]);
    expect(r.code, r.stderr).toBe(0);
    const tgz = path.join(out, 'loam-0.1.0.tgz');
    expect(fs.existsSync(tgz)).toBe(true);
    const files = (await run('tar', ['-tzf', tgz])).stdout.split('\n').filter(Boolean).sort();
    for (const f of ['loam/Chart.yaml', 'loam/values.yaml', 'loam/values.schema.json', 'loam/crds/datastores.loam.dev.yaml', 'loam/dashboards/loam.json', 'loam/templates/deployment.yaml', 'loam/templates/NOTES.txt']) expect(files).toContain(f);
    const set = ['--set', 'grafanaDashboard.enabled=true,metrics.serviceMonitor.enabled=true'];
    const fromTgz = await helmLocal(['template', 'loam', tgz, '--namespace', NS, '--include-crds', ...set]);
    const fromDir = await helmLocal(['template', 'loam', CHART, '--namespace', NS, '--include-crds', ...set]);
    expect(fromTgz.code, fromTgz.stderr).toBe(0);
    expect(fromTgz.stdout).toBe(fromDir.stdout);
    expect(ids(docsOf(fromTgz.stdout))[0]).toBe('CustomResourceDefinition//datastores.loam.dev');
  });

  it('the values schema rejects bad values with an error naming the value', async () => {
    const cases: [string, RegExp][] = [
      ['replicaCount=-1', /at '\/replicaCount': minimum: got -1, want 0/],
      ['image.pullPolicy=Sometimes', /at '\/image\/pullPolicy': value must be one of 'Always', 'IfNotPresent', 'Never'/],
      ['replicaCount=two', /at '\/replicaCount': got string, want integer/],
      ['logLevel=loud', /at '\/logLevel': value must be one of/],
      ['metrics.port=70000', /at '\/metrics\/port': maximum: got 70,000, want 65,535/],
      ['resync=soon', /at '\/resync'/],
      ['watchNamespace=Not_A_Namespace', /at '\/watchNamespace'/],
      ['replicaCont=2', /additional properties 'replicaCont' not allowed/],
    ];
    for (const [set, message] of cases) {
      const r = await helmLocal(['template', 'loam', CHART, '--set', set]);
      expect(r.code, set).not.toBe(0);
      expect(r.stderr, set).toContain("values don't meet the specifications of the schema");
      expect(r.stderr, set).toMatch(message);
    }
    // A value that fails a template rule rather than the schema: a clear message too.
    const r = await helmLocal(['template', 'loam', CHART, '--set', 'metrics.serviceMonitor.enabled=true,metrics.service.enabled=false']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('metrics.serviceMonitor.enabled needs metrics.service.enabled');
  });

  it('renders by default: ServiceAccount, cluster-wide RBAC, the Lease Role, the metrics Service and the Deployment; no ServiceMonitor, no dashboard', async () => {
    const docs = await template();
    expect(ids(docs)).toEqual([
      `ServiceAccount/${NS}/${SA}`,
      'ClusterRole//loam-operator',
      'ClusterRoleBinding//loam-operator',
      `Role/${NS}/loam-operator-leader-election`,
      `RoleBinding/${NS}/loam-operator-leader-election`,
      `Service/${NS}/loam-operator-metrics`,
      `Deployment/${NS}/loam-operator`,
    ]);
    for (const d of docs) {
      expect(d.metadata.labels, `${d.kind} labels`).toMatchObject({ 'app.kubernetes.io/name': 'loam', 'app.kubernetes.io/instance': 'loam', 'app.kubernetes.io/managed-by': 'Helm', 'app.kubernetes.io/version': '0.1.0', 'helm.sh/chart': 'loam-0.1.0' });
    }
    const chart = parse(fs.readFileSync(path.join(CHART, 'Chart.yaml'), 'utf8'));
    expect(chart).toMatchObject({ apiVersion: 'v2', name: 'loam', version: '0.1.0', appVersion: '0.1.0' });
  });

  it('the Deployment: the image (tag = appVersion), loam operator with its flags, probes on the metrics port, an explicit token mount, a restricted security context', async () => {
    const dep = find(await template(), 'Deployment')!;
    const pod = dep.spec.template.spec;
    const c = container(dep);
    expect(dep.spec.replicas).toBe(1);
    expect(c.image).toBe('ghcr.io/loam-dev/loam:0.1.0');
    expect(c.imagePullPolicy).toBe('IfNotPresent');
    expect(c.command).toBeUndefined(); // the image's entrypoint is `loam`
    expect(c.args).toEqual(['operator', '--metrics-listen=$(POD_IP):8080', '--leader-election-namespace=$(POD_NAMESPACE)', `--leader-election-id=${LEASE}`, '--resync=30s', '--workers=4', '--log-level=info']);
    const env = Object.fromEntries(c.env.map((e: any) => [e.name, e.value ?? e.valueFrom]));
    expect(env).toMatchObject({
      POD_IP: { fieldRef: { fieldPath: 'status.podIP' } },
      POD_NAMESPACE: { fieldRef: { fieldPath: 'metadata.namespace' } },
      POD_NAME: { fieldRef: { fieldPath: 'metadata.name' } },
      LOAM_OPERATOR_IMAGE: 'ghcr.io/loam-dev/loam:0.1.0',
      LOAM_SERVICEACCOUNT_DIR: '/var/run/secrets/kubernetes.io/serviceaccount',
    });
    // POD_IP is defined before the args use it (a kubelet expands $(VAR) from earlier variables only; args see all).
    expect(c.ports).toEqual([{ name: 'metrics', containerPort: 8080, protocol: 'TCP' }]);
    expect(c.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'metrics' });
    expect(c.readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'metrics' });
    // The token: no automount, a projected volume at the path LOAM_SERVICEACCOUNT_DIR names.
    expect(pod.serviceAccountName).toBe(SA);
    expect(pod.automountServiceAccountToken).toBe(false);
    const mount = c.volumeMounts.find((m: any) => m.mountPath === env.LOAM_SERVICEACCOUNT_DIR);
    expect(mount).toMatchObject({ readOnly: true });
    const vol = pod.volumes.find((v: any) => v.name === mount.name);
    expect(vol.projected.sources).toEqual([
      { serviceAccountToken: { path: 'token', expirationSeconds: 3607 } },
      { configMap: { name: 'kube-root-ca.crt', items: [{ key: 'ca.crt', path: 'ca.crt' }] } },
      { downwardAPI: { items: [{ path: 'namespace', fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.namespace' } }] } },
    ]);
    expect(c.volumeMounts.find((m: any) => m.mountPath === '/tmp')).toBeDefined();
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 65532, seccompProfile: { type: 'RuntimeDefault' } });
    expect(c.securityContext).toMatchObject({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, runAsNonRoot: true, capabilities: { drop: ['ALL'] }, seccompProfile: { type: 'RuntimeDefault' } });
    expect(c.resources).toEqual({ requests: { cpu: '50m', memory: '128Mi' }, limits: { memory: '512Mi' } });
  });

  it('values reach the Deployment: image, replicas, log level, scheduling, extra args', async () => {
    const dep = find(
      await template('image.repository=registry.example/loam', 'image.tag=1.2.3', 'image.pullPolicy=Always', 'replicaCount=3', 'logLevel=debug', 'nodeSelector.disk=ssd', 'tolerations[0].key=dedicated', 'tolerations[0].operator=Exists', 'extraArgs[0]=--resync=1m', 'priorityClassName=system-cluster-critical'),
      'Deployment',
    )!;
    const c = container(dep);
    expect(dep.spec.replicas).toBe(3);
    expect(c.image).toBe('registry.example/loam:1.2.3');
    expect(c.imagePullPolicy).toBe('Always');
    expect(c.args).toContain('--log-level=debug');
    expect(c.args.at(-1)).toBe('--resync=1m');
    expect(c.env.find((e: any) => e.name === 'LOAM_OPERATOR_IMAGE').value).toBe('registry.example/loam:1.2.3');
    expect(dep.spec.template.spec).toMatchObject({ nodeSelector: { disk: 'ssd' }, tolerations: [{ key: 'dedicated', operator: 'Exists' }], priorityClassName: 'system-cluster-critical' });
  });

  it('RBAC: exactly the rules the controller uses, no wildcard; watchNamespace turns the ClusterRole into a Role there; leases only in the release namespace', async () => {
    const docs = await template();
    const rules = find(docs, 'ClusterRole')!.rules;
    expect(JSON.stringify(rules)).not.toContain('"*"');
    // The rules, flattened, grant exactly needed(): compare (group, resource, verb) triples.
    const triples = (rs: any[]) => rs.flatMap((r) => r.apiGroups.flatMap((g: string) => r.resources.flatMap((res: string) => r.verbs.map((v: string) => `${g}|${res}|${v}`)))).sort();
    const want = needed(undefined).map((a) => `${a.group}|${a.resource}${a.subresource ? `/${a.subresource}` : ''}|${a.verb}`).sort();
    expect(triples(rules)).toEqual(want);
    const lease = find(docs, 'Role', 'loam-operator-leader-election')!;
    expect(lease.metadata.namespace).toBe(NS);
    expect(lease.rules).toEqual([
      { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['create'] },
      { apiGroups: ['coordination.k8s.io'], resources: ['leases'], resourceNames: [LEASE], verbs: ['get', 'update'] },
    ]);
    const binding = find(docs, 'ClusterRoleBinding')!;
    expect(binding.roleRef).toEqual({ apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'loam-operator' });
    expect(binding.subjects).toEqual([{ kind: 'ServiceAccount', name: SA, namespace: NS }]);

    const scoped = await template(`watchNamespace=${WORKLOADS}`);
    expect(find(scoped, 'ClusterRole')).toBeUndefined();
    expect(find(scoped, 'ClusterRoleBinding')).toBeUndefined();
    const role = find(scoped, 'Role', 'loam-operator')!;
    expect(role.metadata.namespace).toBe(WORKLOADS);
    expect(role.rules).toEqual(rules);
    expect(find(scoped, 'RoleBinding', 'loam-operator')).toMatchObject({ metadata: { namespace: WORKLOADS }, roleRef: { kind: 'Role', name: 'loam-operator' }, subjects: [{ kind: 'ServiceAccount', name: SA, namespace: NS }] });
    expect(container(find(scoped, 'Deployment')!).args).toContain(`--namespace=${WORKLOADS}`);

    const single = await template('leaderElection.enabled=false');
    expect(find(single, 'Role', 'loam-operator-leader-election')).toBeUndefined();
    expect(container(find(single, 'Deployment')!).args).toContain('--no-leader-elect');
    expect(container(find(single, 'Deployment')!).args.join(' ')).not.toContain('--leader-election-id');

    const none = await template('rbac.create=false', 'serviceAccount.create=false', 'serviceAccount.name=my-operator');
    expect(ids(none).filter((i) => /Role|ServiceAccount/.test(i))).toEqual([]);
    expect(find(none, 'Deployment')!.spec.template.spec.serviceAccountName).toBe('my-operator');
  });

  it('the ServiceMonitor only when enabled, selecting the metrics Service by its port name', async () => {
    expect(find(await template(), 'ServiceMonitor')).toBeUndefined();
    const docs = await template('metrics.serviceMonitor.enabled=true', 'metrics.serviceMonitor.labels.release=prom');
    const sm = find(docs, 'ServiceMonitor')!;
    expect(sm.apiVersion).toBe('monitoring.coreos.com/v1');
    expect(sm.metadata.labels.release).toBe('prom');
    const svc = find(docs, 'Service')!;
    expect(svc.metadata.labels).toMatchObject(sm.spec.selector.matchLabels);
    expect(sm.spec.namespaceSelector).toEqual({ matchNames: [NS] });
    expect(sm.spec.endpoints).toEqual([{ port: 'metrics', path: '/metrics', interval: '30s', scrapeTimeout: '10s' }]);
    expect(svc.spec.ports).toEqual([{ name: 'metrics', port: 8080, targetPort: 'metrics', protocol: 'TCP' }]);
    // The Service selects the operator's Pods.
    expect(find(docs, 'Deployment')!.spec.template.metadata.labels).toMatchObject(svc.spec.selector);
  });

  it('the Grafana dashboard ConfigMap: labelled for the sidecar, valid JSON, querying only metrics that exist, and every operator metric', async () => {
    expect(find(await template(), 'ConfigMap')).toBeUndefined();
    const cm = find(await template('grafanaDashboard.enabled=true', 'grafanaDashboard.namespace=monitoring'), 'ConfigMap')!;
    expect(cm.metadata.labels.grafana_dashboard).toBe('1');
    expect(cm.metadata.namespace).toBe('monitoring');
    const dash = JSON.parse(cm.data['loam.json']);
    expect(dash).toMatchObject({ title: 'Loam', uid: 'loam-overview' });
    const exprs: string[] = dash.panels.flatMap((p: any) => (p.targets ?? []).map((t: any) => t.expr));
    expect(exprs.length).toBeGreaterThan(20);
    const used = new Set(exprs.flatMap(metricsIn));
    const known = knownSeries();
    expect([...used].filter((m) => !known.has(m)), 'the dashboard queries metrics nothing exports').toEqual([]);
    for (const m of ['loam_operator_reconciles_total', 'loam_operator_reconcile_errors_total', 'loam_operator_reconcile_duration_seconds_bucket', 'loam_operator_queue_depth', 'loam_operator_leader', 'loam_requests_total', 'loam_commits_total', 'loam_s3_upload_bytes_total']) {
      expect(used, m).toContain(m);
    }
    // The file is the dashboard as committed (no templating touched it).
    expect(cm.data['loam.json']).toBe(fs.readFileSync(path.join(CHART, 'dashboards/loam.json'), 'utf8').trimEnd());
    // Panels do not overlap on Grafana's 24-column grid.
    const cells = new Set<string>();
    for (const p of dash.panels) {
      const { x, y, w, h } = p.gridPos;
      expect(x + w, p.title).toBeLessThanOrEqual(24);
      for (let i = x; i < x + w; i++) for (let j = y; j < y + h; j++) {
        expect(cells.has(`${i},${j}`), `${p.title} overlaps another panel`).toBe(false);
        cells.add(`${i},${j}`);
      }
    }
  });
});

// ---------------------------------------------------------------------------------------------------------

describe('on a real API server: kubectl apply -f deploy/loam.yaml, helm install / upgrade / uninstall, least-privilege RBAC', () => {
  const deployDocs = () => docsOf(fs.readFileSync(DEPLOY, 'utf8'));
  /** What kubectl apply made, to compare with what helm makes. */
  const fromKubectl = new Map<string, any>();

  beforeAll(async () => {
    if (toolsError) return;
    try {
      // The controller-manager: ReplicaSets make the operator's Pod (admission shows it passes the
      // restricted Pod Security Standard), the namespace controller empties deleted namespaces, and
      // kube-root-ca.crt is published. No scheduler: the Pod stays Pending, which is all this needs.
      kube = await startKube({ controllerManager: true, scheduler: false });
    } catch (e) {
      kubeError = e;
    }
  }, 180_000);

  beforeEach(() => {
    if (toolsError) throw toolsError;
    if (kubeError) throw kubeError;
  });

  afterAll(async () => {
    await kube?.stop();
  });

  const operatorPods = async (ns: string) =>
    ((await kube.request('GET', `/api/v1/namespaces/${ns}/pods?labelSelector=${encodeURIComponent('app.kubernetes.io/name=loam,app.kubernetes.io/component=operator')}`)).body as { items: Obj[] }).items;

  it('kubectl apply -f deploy/loam.yaml creates every object in it; the operator Pod is admitted under the restricted Pod Security Standard', async () => {
    const docs = deployDocs();
    const r = await kube.kubectl(['apply', '-f', DEPLOY]);
    for (const d of docs) expect(r.stdout, `${d.kind}/${d.metadata.name}`).toMatch(new RegExp(`/${d.metadata.name} created`));
    for (const d of docs) {
      const got = await getObj(d);
      expect(got.status, `${d.kind}/${d.metadata.name}: ${JSON.stringify(got.body)}`).toBe(200);
      fromKubectl.set(`${d.kind}/${d.metadata.name}`, got.body);
    }
    await kube.kubectl(['wait', '--for=condition=Established', 'crd/datastores.loam.dev', '--timeout=30s']);
    // The Namespace enforces `restricted`: a Pod that does not comply is refused there ...
    const bad = await kube.request('POST', `/api/v1/namespaces/${NS}/pods`, { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'not-restricted' }, spec: { containers: [{ name: 'c', image: 'loam' }] } });
    expect(bad.status, JSON.stringify(bad.body)).toBe(403);
    expect(JSON.stringify(bad.body)).toContain('violates PodSecurity');
    // ... and the operator's is created by its ReplicaSet.
    const pods = await pollUntil(async () => {
      const p = await operatorPods(NS);
      return p.length > 0 && p;
    }, 'the operator Pod (ReplicaSet admitted under restricted)', 30_000);
    expect(pods[0].spec.serviceAccountName).toBe(SA);
    expect(pods[0].spec.containers[0].image).toBe('ghcr.io/loam-dev/loam:0.1.0');
    // Applying again changes nothing.
    const again = await kube.kubectl(['apply', '-f', DEPLOY]);
    expect(again.stdout.trim().split('\n').every((l) => l.endsWith(' unchanged')), again.stdout).toBe(true);
  }, 90_000);

  it('kubectl delete -f deploy/loam.yaml removes every object in it', async () => {
    const docs = deployDocs();
    await kube.kubectl(['delete', '-f', DEPLOY, '--wait=true', '--timeout=90s'], { timeoutMs: 120_000 });
    for (const d of docs) {
      await pollUntil(async () => (await getObj(d)).status === 404, `${d.kind}/${d.metadata.name} to be gone`, 60_000);
    }
    expect((await kube.request('GET', '/apis/rbac.authorization.k8s.io/v1/clusterroles/loam-operator')).status).toBe(404);
  }, 150_000);

  it('helm install creates the same objects as deploy/loam.yaml, CRD first', async () => {
    // The namespace with the same restriction as deploy/loam.yaml's.
    await kube.kubectl(['create', 'namespace', NS]);
    await kube.kubectl(['label', 'namespace', NS, 'pod-security.kubernetes.io/enforce=restricted']);
    await kube.kubectl(['create', 'namespace', WORKLOADS]);
    const r = await kube.helm(['install', 'loam', CHART, '--namespace', NS], { timeoutMs: 120_000 });
    expect(r.stdout).toContain('STATUS: deployed');
    expect(r.stdout).toContain('It reconciles DataStores in every namespace.'); // NOTES.txt
    const crd = await kube.request('GET', '/apis/apiextensions.k8s.io/v1/customresourcedefinitions/datastores.loam.dev');
    expect(crd.status).toBe(200);
    expect((crd.body as any).spec).toEqual(fromKubectl.get('CustomResourceDefinition/datastores.loam.dev').spec);
    const manifest = docsOf((await kube.helm(['get', 'manifest', 'loam', '--namespace', NS])).stdout);
    const expected = deployDocs().filter((d) => d.kind !== 'Namespace' && d.kind !== 'CustomResourceDefinition');
    expect(ids(manifest).sort()).toEqual(ids(expected).sort());
    for (const d of expected) {
      const got = await getObj(d);
      expect(got.status, `${d.kind}/${d.metadata.name}`).toBe(200);
      const before = fromKubectl.get(`${d.kind}/${d.metadata.name}`);
      for (const field of ['spec', 'rules', 'roleRef', 'subjects', 'automountServiceAccountToken']) {
        if (field === 'spec' && d.kind === 'Service') {
          // The cluster IP is allocated afresh.
          const strip = (s: any) => ({ ...s, clusterIP: undefined, clusterIPs: undefined });
          expect(strip(got.body.spec), `${d.kind}/${d.metadata.name} spec`).toEqual(strip(before.spec));
        } else expect(got.body[field], `${d.kind}/${d.metadata.name} ${field}`).toEqual(before[field]);
      }
      expect(got.body.metadata.labels).toEqual(before.metadata.labels);
    }
    await pollUntil(async () => (await operatorPods(NS)).length > 0, 'the operator Pod of the helm release', 30_000);
    // The CRD was deleted and created again: the API server serves DataStores again once its
    // storage for them is set up (429 "storage is (re)initializing" until then).
    await pollUntil(async () => (await kube.request('GET', '/apis/loam.dev/v1alpha1/datastores')).status === 200, 'DataStores served again', 30_000);
  }, 150_000);

  let token: string;

  it('the operator\'s ServiceAccount token can do each thing the controller uses, in any namespace and across all of them', async () => {
    token = await tokenOf(NS, SA);
    expect(await mismatched(token, [...needed(WORKLOADS), ...needed('default'), ...leaseNeeded(NS)], true)).toEqual([]);
    // Watching every namespace: list and watch at cluster scope.
    const clusterWide = needed(undefined).filter((a) => a.verb === 'list' || a.verb === 'watch');
    expect(clusterWide.length).toBeGreaterThan(10);
    expect(await mismatched(token, clusterWide, true)).toEqual([]);
  }, 60_000);

  it('... and nothing outside that list (no pods create, namespaces, nodes, other secrets verbs, other leases, no wildcard)', async () => {
    expect(await mismatched(token, forbidden(WORKLOADS, NS), false)).toEqual([]);
  }, 60_000);

  it('real calls with the token: it lists DataStores everywhere, writes its children and its Lease, and is refused the rest', async () => {
    const lds = await asToken(token, 'GET', '/apis/loam.dev/v1alpha1/datastores');
    expect(lds.status, JSON.stringify(lds.body)).toBe(200);
    const cm = await asToken(token, 'POST', `/api/v1/namespaces/${WORKLOADS}/configmaps`, { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'made-by-operator' }, data: { a: '1' } });
    expect(cm.status, JSON.stringify(cm.body)).toBe(201);
    expect((await asToken(token, 'DELETE', `/api/v1/namespaces/${WORKLOADS}/configmaps/made-by-operator`)).status).toBe(200);
    const now = new Date().toISOString().replace(/\.\d+Z$/, '.000000Z');
    const lease = await asToken(token, 'POST', `/apis/coordination.k8s.io/v1/namespaces/${NS}/leases`, {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: { name: LEASE },
      spec: { holderIdentity: 'test', leaseDurationSeconds: 15, acquireTime: now, renewTime: now },
    });
    expect(lease.status, JSON.stringify(lease.body)).toBe(201);
    const got = await asToken(token, 'GET', `/apis/coordination.k8s.io/v1/namespaces/${NS}/leases/${LEASE}`);
    expect(got.status).toBe(200);
    got.body.spec.holderIdentity = 'test-2';
    expect((await asToken(token, 'PUT', `/apis/coordination.k8s.io/v1/namespaces/${NS}/leases/${LEASE}`, got.body)).status).toBe(200);
    // Refused: a lease elsewhere, a Pod, the nodes, a namespace.
    expect((await asToken(token, 'POST', `/apis/coordination.k8s.io/v1/namespaces/${WORKLOADS}/leases`, { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: LEASE }, spec: {} })).status).toBe(403);
    expect((await asToken(token, 'POST', `/api/v1/namespaces/${WORKLOADS}/pods`, { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p' }, spec: { containers: [{ name: 'c', image: 'x' }] } })).status).toBe(403);
    expect((await asToken(token, 'GET', '/api/v1/nodes')).status).toBe(403);
    expect((await asToken(token, 'DELETE', `/api/v1/namespaces/${WORKLOADS}`)).status).toBe(403);
    expect((await asToken(token, 'DELETE', `/api/v1/namespaces/${WORKLOADS}/secrets`)).status).toBe(403); // deletecollection
    await kube.request('DELETE', `/apis/coordination.k8s.io/v1/namespaces/${NS}/leases/${LEASE}`);
  }, 60_000);

  it('helm upgrade: changed values reach the Deployment; the ServiceMonitor and dashboard come and go with their values', async () => {
    // A ServiceMonitor CRD as the Prometheus operator's would be (schema-less is enough to store one).
    await kube.kubectl(['apply', '-f', '-'], {
      input: `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  names: { plural: servicemonitors, singular: servicemonitor, kind: ServiceMonitor, listKind: ServiceMonitorList }
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema: { openAPIV3Schema: { type: object, x-kubernetes-preserve-unknown-fields: true } }
`,
    });
    await kube.kubectl(['wait', '--for=condition=Established', 'crd/servicemonitors.monitoring.coreos.com', '--timeout=30s']);
    const up = await kube.helm(
      ['upgrade', 'loam', CHART, '--namespace', NS, '--reuse-values', '--set', 'logLevel=debug,replicaCount=2,image.tag=0.1.1,metrics.serviceMonitor.enabled=true,grafanaDashboard.enabled=true'],
      { timeoutMs: 120_000 },
    );
    expect(up.stdout).toContain('REVISION: 2');
    const dep = (await kube.request('GET', `/apis/apps/v1/namespaces/${NS}/deployments/loam-operator`)).body as any;
    expect(dep.spec.replicas).toBe(2);
    expect(dep.spec.template.spec.containers[0].args).toContain('--log-level=debug');
    expect(dep.spec.template.spec.containers[0].image).toBe('ghcr.io/loam-dev/loam:0.1.1');
    expect(dep.spec.template.spec.containers[0].env.find((e: any) => e.name === 'LOAM_OPERATOR_IMAGE').value).toBe('ghcr.io/loam-dev/loam:0.1.1');
    const sm = await kube.request('GET', `/apis/monitoring.coreos.com/v1/namespaces/${NS}/servicemonitors/loam-operator`);
    expect(sm.status).toBe(200);
    expect((sm.body as any).spec.endpoints[0].port).toBe('metrics');
    const cm = await kube.request('GET', `/api/v1/namespaces/${NS}/configmaps/loam-dashboard`);
    expect(cm.status).toBe(200);
    expect((cm.body as any).metadata.labels.grafana_dashboard).toBe('1');
    // The Deployment controller starts rolling to the new template: a Pod of the new image, admitted
    // under restricted. (No kubelet runs the Pods here, so none becomes Ready and the roll goes no further.)
    await pollUntil(async () => (await operatorPods(NS)).some((p) => p.spec.containers[0].image === 'ghcr.io/loam-dev/loam:0.1.1'), 'an operator Pod of the upgraded image', 30_000);

    const back = await kube.helm(['upgrade', 'loam', CHART, '--namespace', NS, '--reuse-values', '--set', 'metrics.serviceMonitor.enabled=false,grafanaDashboard.enabled=false'], { timeoutMs: 120_000 });
    expect(back.stdout).toContain('REVISION: 3');
    expect((await kube.request('GET', `/apis/monitoring.coreos.com/v1/namespaces/${NS}/servicemonitors/loam-operator`)).status).toBe(404);
    expect((await kube.request('GET', `/api/v1/namespaces/${NS}/configmaps/loam-dashboard`)).status).toBe(404);
    // --reuse-values kept the earlier change.
    const dep3 = (await kube.request('GET', `/apis/apps/v1/namespaces/${NS}/deployments/loam-operator`)).body as any;
    expect(dep3.spec.template.spec.containers[0].args).toContain('--log-level=debug');
  }, 180_000);

  it('watchNamespace: a second release whose operator may act in that namespace only', async () => {
    await kube.kubectl(['create', 'namespace', 'scoped-system']);
    await kube.kubectl(['create', 'namespace', 'scoped-apps']);
    const r = await kube.helm(['install', 'scoped', CHART, '--namespace', 'scoped-system', '--set', 'watchNamespace=scoped-apps,metrics.service.enabled=false'], { timeoutMs: 120_000 });
    expect(r.stdout).toContain('It reconciles DataStores in namespace scoped-apps only.');
    const t = await tokenOf('scoped-system', 'scoped-loam-operator');
    expect(await mismatched(t, [...needed('scoped-apps'), ...leaseNeeded('scoped-system')], true)).toEqual([]);
    // Not in another namespace, not across all of them, not the other release's Lease namespace.
    const elsewhere = [...needed(WORKLOADS), ...needed(undefined).filter((a) => a.verb === 'list' || a.verb === 'watch'), ...leaseNeeded(NS), ...leaseNeeded('scoped-apps')];
    expect(await mismatched(t, elsewhere, false)).toEqual([]);
    expect(await mismatched(t, forbidden('scoped-apps', 'scoped-system'), false)).toEqual([]);
    // Scoped, it cannot read Secrets even in its own release namespace (cluster-wide it could).
    expect(await allowed(t, { verb: 'get', group: '', resource: 'secrets', namespace: 'scoped-system' })).toBe(false);
    const un = await kube.helm(['uninstall', 'scoped', '--namespace', 'scoped-system', '--wait', '--timeout', '60s'], { timeoutMs: 90_000 });
    expect(un.stdout).toContain('release "scoped" uninstalled');
    expect((await kube.request('GET', '/apis/rbac.authorization.k8s.io/v1/namespaces/scoped-apps/roles/scoped-loam-operator')).status).toBe(404);
  }, 150_000);

  it('helm uninstall removes the release\'s objects and keeps the CRD and the DataStores', async () => {
    const ds = await kube.request('POST', `/apis/loam.dev/v1alpha1/namespaces/${WORKLOADS}/datastores`, { apiVersion: 'loam.dev/v1alpha1', kind: 'DataStore', metadata: { name: 'kept' }, spec: { nodes: 3 } });
    expect(ds.status, JSON.stringify(ds.body)).toBe(201);
    const manifest = docsOf((await kube.helm(['get', 'manifest', 'loam', '--namespace', NS])).stdout);
    expect(manifest.length).toBe(7);
    const r = await kube.helm(['uninstall', 'loam', '--namespace', NS, '--wait', '--timeout', '60s'], { timeoutMs: 90_000 });
    expect(r.stdout).toContain('release "loam" uninstalled');
    for (const d of manifest) await pollUntil(async () => (await getObj(d)).status === 404, `${d.kind}/${d.metadata.name} to be gone`, 30_000);
    expect((await kube.helm(['status', 'loam', '--namespace', NS], { check: false })).code).not.toBe(0);
    expect((await kube.request('GET', '/apis/apiextensions.k8s.io/v1/customresourcedefinitions/datastores.loam.dev')).status).toBe(200);
    expect((await kube.request('GET', `/apis/loam.dev/v1alpha1/namespaces/${WORKLOADS}/datastores/kept`)).status).toBe(200);
    // Installing again over the kept CRD works (helm skips a CRD that exists).
    const again = await kube.helm(['install', 'loam', CHART, '--namespace', NS], { timeoutMs: 120_000 });
    expect(again.stdout).toContain('STATUS: deployed');
    await kube.helm(['uninstall', 'loam', '--namespace', NS, '--wait', '--timeout', '60s'], { timeoutMs: 90_000 });
  }, 180_000);
});

// ---------------------------------------------------------------------------------------------------------

describe('end to end: the chart runs the operator (kwok Nodes, the kubelet harness runs each Pod as a real process)', () => {
  let cluster: KubeCluster;
  let kubelet: Kubelet;
  let setupError: unknown;

  beforeAll(async () => {
    if (toolsError) return;
    try {
      cluster = await startKube({ kwok: true, nodes: 1 });
      kubelet = await startKubelet(cluster);
    } catch (e) {
      setupError = e;
    }
  }, 180_000);

  beforeEach(() => {
    if (toolsError) throw toolsError;
    if (setupError) throw setupError;
  });

  afterAll(async () => {
    await kubelet?.stop();
    await cluster?.stop();
  });

  const pods = async () =>
    ((await cluster.request('GET', `/api/v1/namespaces/${NS}/pods?labelSelector=${encodeURIComponent('app.kubernetes.io/name=loam,app.kubernetes.io/component=operator')}`)).body as { items: Obj[] }).items.filter((p) => !(p.metadata as any).deletionTimestamp);
  const holder = async (): Promise<string | undefined> => {
    const r = await cluster.request('GET', `/apis/coordination.k8s.io/v1/namespaces/${NS}/leases/${LEASE}`);
    return r.status === 200 ? ((r.body as any).spec?.holderIdentity ?? undefined) : undefined;
  };
  const leaderMetric = async (ip: string): Promise<number | undefined> => {
    const res = await fetch(`http://${ip}:8080/metrics`, { signal: AbortSignal.timeout(5000) });
    const m = /^loam_operator_leader(?:\{[^}]*\})? (\d+)/m.exec(await res.text());
    return m ? Number(m[1]) : undefined;
  };
  const detail = () => `--- kubelet harness ---\n${kubelet.log().slice(-6000)}\n${kubelet.pods().map((p) => `--- ${p.name} ---\n${p.logs.slice(-3000)}`).join('\n')}`;

  it('helm install --wait: two operator replicas run as real processes, Ready through /readyz, with the token the chart mounts', async () => {
    const r = await cluster.helm(['install', 'loam', CHART, '--namespace', NS, '--create-namespace', '--set', 'replicaCount=2,logLevel=debug', '--wait', '--timeout', '120s'], { timeoutMs: 150_000, check: false });
    expect(r.code, `${r.stdout}${r.stderr}\n${detail()}`).toBe(0);
    const running = await pods();
    expect(running.length).toBe(2);
    for (const p of running) {
      const proc = kubelet.processOf(p)!;
      expect(proc, p.metadata.name).toBeDefined();
      const c = proc.containers[0]!;
      expect(c.running).toBe(true);
      // The chart's args with $(POD_IP) and $(POD_NAMESPACE) expanded, run by the repository's `loam`.
      const args = ['operator', `--metrics-listen=${proc.ip}:8080`, `--leader-election-namespace=${NS}`, `--leader-election-id=${LEASE}`, '--resync=30s', '--workers=4', '--log-level=debug'];
      expect(c.argv.slice(-args.length)).toEqual(args);
      expect(c.argv.join(' ')).toContain('node/bin/loam.js');
      // In-cluster credentials: the projected token the chart mounts, where LOAM_SERVICEACCOUNT_DIR points.
      const saDir = c.env.LOAM_SERVICEACCOUNT_DIR!;
      expect(saDir).not.toBe('/var/run/secrets/kubernetes.io/serviceaccount'); // rewritten to the real directory
      for (const f of ['token', 'ca.crt', 'namespace']) expect(fs.existsSync(path.join(saDir, f)), f).toBe(true);
      expect(fs.readFileSync(path.join(saDir, 'namespace'), 'utf8')).toBe(NS);
      const health = await fetch(`http://${proc.ip}:8080/healthz`);
      expect(health.status).toBe(200);
      const ready = await fetch(`http://${proc.ip}:8080/readyz`);
      expect(ready.status, await ready.text()).toBe(200);
    }
  }, 180_000);

  it('one replica holds the Lease and reports loam_operator_leader 1, the other 0; deleting the leader\'s Pod hands the Lease to the other', async () => {
    const running = await pods();
    const names = running.map((p) => p.metadata.name);
    const leader = await pollUntil(async () => {
      const h = await holder();
      return h && names.includes(h) ? h : undefined;
    }, 'a replica to hold the Lease', 30_000, { detail });
    const ipOf = (name: string) => kubelet.processOf({ namespace: NS, name })!.ip;
    const other = names.find((n) => n !== leader)!;
    await pollUntil(async () => (await leaderMetric(ipOf(leader))) === 1, 'the leader\'s loam_operator_leader to be 1', 15_000, { detail });
    expect(await leaderMetric(ipOf(other))).toBe(0);

    await cluster.kubectl(['delete', 'pod', '-n', NS, leader, '--wait=false']);
    // A graceful stop releases the Lease; the standby takes it (or the Pod the ReplicaSet makes instead).
    const next = await pollUntil(async () => {
      const h = await holder();
      return h && h !== leader ? h : undefined;
    }, 'another replica to take the Lease', 60_000, { detail });
    expect([other, ...(await pods()).map((p) => p.metadata.name)]).toContain(next);
    await pollUntil(async () => (await leaderMetric(ipOf(next))) === 1, 'the new leader\'s loam_operator_leader to be 1', 15_000, { detail });
  }, 120_000);

  it('helm uninstall stops the operator processes', async () => {
    const procs = kubelet.pods().filter((p) => p.namespace === NS);
    expect(procs.length).toBeGreaterThan(0);
    await cluster.helm(['uninstall', 'loam', '--namespace', NS, '--wait', '--timeout', '60s'], { timeoutMs: 90_000 });
    await pollUntil(() => kubelet.pods().filter((p) => p.namespace === NS).length === 0, 'the operator processes to stop', 60_000, { detail });
  }, 120_000);
});
