/**
 * The Kubernetes test harness on the real components: a control plane built from k8s.io/kubernetes
 * v1.37.2 with etcd 3.6, kwok's fake Nodes, and helm v3.22.0. The components are built (or found in
 * the cache) in beforeAll: when one cannot be built, every test here fails with the build's log.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ensureKubeTools, KUBE_VERSION, HELM_VERSION, KUBERNETES, stagingReplaces, type KubeTools } from './harness/kube-tools.js';
import { startKube, type KubeCluster } from './harness/kube.js';
import { tempDir, waitFor } from './harness/node-process.js';
import { PORTS_DIR, readOr } from './harness/ports.js';
import { toolDir } from './harness/tools.js';

let tools: KubeTools;
let kube: KubeCluster;
// vitest reports the tests of a file whose beforeAll threw as skipped: keep the error and fail each
// test with it instead, so a component that cannot be built (or start) is a failure, never a skip.
let setupError: unknown;

beforeAll(async () => {
  const t0 = Date.now();
  try {
    tools = await ensureKubeTools();
  } catch (e) {
    setupError = e;
    return;
  }
  // Cold: minutes (the Kubernetes build is ~6.5 min on two idle cores); warm: a few stat calls.
  console.log(`ensureKubeTools: ${Date.now() - t0} ms`);
}, 60 * 60_000);

beforeAll(async () => {
  if (setupError) return;
  const t0 = Date.now();
  try {
    kube = await startKube({ kwok: true, nodes: 1 });
  } catch (e) {
    setupError = e;
    return;
  }
  console.log(`startKube (etcd, apiserver, controller-manager, scheduler, kwok, 1 fake Node Ready): ${Date.now() - t0} ms`);
}, 180_000);

beforeEach(() => {
  if (setupError) throw setupError;
});

afterAll(async () => {
  await kube?.stop();
});

const CRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.test.loam.dev
spec:
  group: test.loam.dev
  scope: Namespaced
  names: { plural: widgets, singular: widget, kind: Widget, shortNames: [wdg] }
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-validations:
            - rule: "self.replicas >= 1"
              message: "replicas must be at least 1"
            properties:
              replicas: { type: integer, default: 1 }
              bucket:
                type: string
                x-kubernetes-validations:
                - rule: "self == oldSelf"
                  message: "bucket is immutable"
`;

const widget = (name: string, replicas: number, bucket = 'b1') => `apiVersion: test.loam.dev/v1
kind: Widget
metadata: { name: ${name}, namespace: default }
spec: { replicas: ${replicas}, bucket: ${bucket} }
`;

describe('kube tools', () => {
  it('derives one replace per staging module from the release go.mod in the module cache', () => {
    const sample = 'replace (\n\tk8s.io/api => ./staging/src/k8s.io/api\n\tk8s.io/cri-streaming => ./staging/src/k8s.io/cri-streaming\n)\nreplace k8s.io/externaljwt => ./staging/src/k8s.io/externaljwt\n';
    expect(stagingReplaces(sample, 'v0.37.2')).toEqual([
      'k8s.io/api => k8s.io/api v0.37.2',
      'k8s.io/cri-streaming => k8s.io/cri-streaming v0.37.2',
      'k8s.io/externaljwt => k8s.io/externaljwt v0.37.2',
    ]);
    // The wrapper module that was built has every staging replace of the release, pointed at v0.37.2.
    const wrapper = fs.readFileSync(path.join(toolDir(KUBERNETES), 'src', 'go.mod'), 'utf8');
    const replaced = [...wrapper.matchAll(/^\s*(k8s\.io\/\S+) => (k8s\.io\/\S+) (v\S+)$/gm)];
    expect(replaced.length).toBeGreaterThanOrEqual(33);
    for (const m of replaced) {
      expect(m[2]).toBe(m[1]);
      expect(m[3]).toBe('v0.37.2');
    }
    expect(replaced.map((m) => m[1])).toEqual(expect.arrayContaining(['k8s.io/cri-streaming', 'k8s.io/externaljwt', 'k8s.io/client-go']));
  });

  it('a second ensure finds everything built', async () => {
    const t0 = Date.now();
    expect(await ensureKubeTools()).toEqual(tools);
    expect(Date.now() - t0).toBeLessThan(1000);
    for (const bin of [tools.etcd, tools.kubeApiserver, tools.kubeControllerManager, tools.kubeScheduler, tools.kubectl, tools.kwok, tools.helm]) {
      expect(fs.statSync(bin).mode & 0o111).not.toBe(0);
    }
    // etcd 3.6 lives in a directory of its own, not where Loam's Debian etcd 3.4 is found.
    expect(tools.etcd).toMatch(/kube-etcd-v3\.6\.16\/bin\/etcd$/);
  });
});

describe('kube harness', () => {
  it('the API server is ready on loopback with the admin kubeconfig', async () => {
    expect(kube.server).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    expect(fs.readFileSync(kube.kubeconfig, 'utf8')).toContain(kube.server);
    expect(await kube.request('GET', '/readyz')).toEqual({ status: 200, body: 'ok' });
    const who = await kube.kubectl(['auth', 'whoami', '-o', 'jsonpath={.status.userInfo.groups}']);
    expect(who.stdout).toContain('system:masters');
  });

  it('kubectl and the API server are v1.37.2', async () => {
    const v = JSON.parse((await kube.kubectl(['version', '-o', 'json'])).stdout) as Record<string, { gitVersion: string; major: string; minor: string }>;
    expect(v.clientVersion!.gitVersion).toBe(KUBE_VERSION);
    expect(v.serverVersion!.gitVersion).toBe(KUBE_VERSION);
    expect(v.serverVersion!.minor).toBe('37');
  });

  it('kubectl apply of a ConfigMap', async () => {
    const cm = 'apiVersion: v1\nkind: ConfigMap\nmetadata: { name: greeting, namespace: default }\ndata: { hello: world }\n';
    expect((await kube.kubectl(['apply', '-f', '-'], { input: cm })).stdout).toContain('configmap/greeting created');
    expect((await kube.kubectl(['get', 'configmap', 'greeting', '-o', 'jsonpath={.data.hello}'])).stdout).toBe('world');
    expect((await kube.kubectl(['apply', '-f', '-'], { input: cm })).stdout).toContain('configmap/greeting unchanged');
  });

  it('a CRD with CEL validation rules: a bad object is rejected with 422 Invalid', async () => {
    await kube.kubectl(['apply', '-f', '-'], { input: CRD });
    await kube.kubectl(['wait', '--for=condition=Established', 'crd/widgets.test.loam.dev', '--timeout=30s']);

    expect((await kube.kubectl(['apply', '-f', '-'], { input: widget('good', 3) })).stdout).toContain('widget.test.loam.dev/good created');

    const bad = await kube.kubectl(['apply', '-f', '-'], { input: widget('bad', 0), check: false });
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/is invalid/);
    expect(bad.stderr).toContain('replicas must be at least 1');

    // The same through the API directly: the status code and reason kubectl turned into that message.
    const raw = await kube.request('POST', '/apis/test.loam.dev/v1/namespaces/default/widgets', {
      apiVersion: 'test.loam.dev/v1',
      kind: 'Widget',
      metadata: { name: 'bad' },
      spec: { replicas: 0 },
    });
    expect(raw.status).toBe(422);
    expect(raw.body).toMatchObject({ kind: 'Status', reason: 'Invalid', code: 422 });

    // A transition rule: the field is immutable once set.
    const change = await kube.kubectl(['apply', '-f', '-'], { input: widget('good', 3, 'b2'), check: false });
    expect(change.code).not.toBe(0);
    expect(change.stderr).toContain('bucket is immutable');
    expect((await kube.kubectl(['get', 'wdg', 'good', '-o', 'jsonpath={.spec.bucket}'])).stdout).toBe('b1');
  });

  it(`helm ${HELM_VERSION}: version, lint, template, and install/uninstall against the API server`, async () => {
    expect((await kube.helm(['version', '--template', '{{.Version}}'])).stdout).toBe(HELM_VERSION);

    const chart = path.join(tempDir('loam-chart-'), 'throwaway');
    fs.mkdirSync(path.join(chart, 'templates'), { recursive: true });
    fs.writeFileSync(path.join(chart, 'Chart.yaml'), 'apiVersion: v2\nname: throwaway\nversion: 0.1.0\n');
    fs.writeFileSync(path.join(chart, 'values.yaml'), 'greeting: hello\n');
    fs.writeFileSync(
      path.join(chart, 'templates', 'configmap.yaml'),
      'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\ndata:\n  greeting: {{ .Values.greeting | quote }}\n',
    );
    await kube.helm(['lint', chart]);
    const out = (await kube.helm(['template', 'demo', chart, '--set', 'greeting=hi'])).stdout;
    expect(out).toContain('kind: ConfigMap');
    expect(out).toContain('name: demo-cm');
    expect(out).toContain('greeting: "hi"');

    await kube.helm(['install', 'demo', chart, '--wait', '--timeout', '30s']);
    expect((await kube.kubectl(['get', 'configmap', 'demo-cm', '-o', 'jsonpath={.data.greeting}'])).stdout).toBe('hello');
    await kube.helm(['uninstall', 'demo', '--wait', '--timeout', '30s']);
    expect((await kube.kubectl(['get', 'configmap', 'demo-cm', '--ignore-not-found', '-o', 'name'])).stdout).toBe('');
  });

  it('kwok: fake Nodes become Ready; the controller-manager and scheduler put a Deployment Pod on one', async () => {
    const ready = (n: string) => kube.kubectl(['get', 'node', n, '-o', 'jsonpath={.status.conditions[?(@.type=="Ready")].status}']);
    expect((await ready('kwok-node-0')).stdout).toBe('True');
    await kube.addFakeNode('kwok-node-1');
    expect((await ready('kwok-node-1')).stdout).toBe('True');
    // kwok renews each fake Node's Lease, the heartbeat that keeps the node lifecycle controller from
    // marking it unreachable.
    const lease = await waitFor(
      async () => (await kube.kubectl(['get', 'lease', '-n', 'kube-node-lease', 'kwok-node-0', '-o', 'jsonpath={.spec.holderIdentity} {.spec.leaseDurationSeconds} {.spec.renewTime}', '--ignore-not-found'])).stdout,
      'the Lease of kwok-node-0',
      30_000,
      200,
    );
    // The holder is kwok's own identity, not the Node's name.
    expect(lease).toMatch(/^\S+ 40 \d{4}-\d\d-\d\dT/);

    await kube.kubectl(['create', 'deployment', 'sleeper', '--image=registry.invalid/sleeper:1', '--replicas=1']);
    const nodeName = await waitFor(
      async () => {
        const r = await kube.kubectl(['get', 'pods', '-l', 'app=sleeper', '-o', 'jsonpath={.items[*].spec.nodeName}']);
        return r.stdout.trim();
      },
      'the Deployment Pod to be bound to a fake Node',
      30_000,
      200,
    );
    expect(nodeName).toMatch(/^kwok-node-[01]$/);
    // Node stages only: nobody runs the Pod, so it stays Pending (a kubelet harness would take over here).
    expect((await kube.kubectl(['get', 'pods', '-l', 'app=sleeper', '-o', 'jsonpath={.items[0].status.phase}'])).stdout).toBe('Pending');
  });

  it('a start that fails rejects with the components\' output and leaves nothing behind', async () => {
    // etcd cannot be healthy a millisecond after it was spawned: the first wait times out.
    const err = await startKube({ timeoutMs: 1 }).then(
      () => new Error('started'),
      (e: unknown) => e as Error & { kubeDir?: string },
    );
    expect(err.message).toMatch(/timed out after 1 ms waiting for etcd 3\.6 to be healthy/);
    expect(err.message).toContain('--- etcd (pid');
    // Its own directory is gone (other files' clusters may be starting in os.tmpdir() meanwhile).
    expect(path.dirname(err.kubeDir ?? '')).toBe(os.tmpdir());
    expect(path.basename(err.kubeDir ?? '')).toMatch(/^loam-kube-/);
    expect(fs.existsSync(err.kubeDir!)).toBe(false);
  });

  it('stop() ends every process, releases the ports and removes the temp dir', async () => {
    const port = Number(new URL(kube.server).port);
    const dir = kube.dir;
    const t0 = Date.now();
    await kube.stop();
    console.log(`stop: ${Date.now() - t0} ms`);
    expect(fs.existsSync(dir)).toBe(false);
    expect(readOr(path.join(PORTS_DIR, String(port)), '')).toBe('');
    const ours = fs
      .readdirSync('/proc')
      .filter((p) => /^\d+$/.test(p))
      .filter((p) => readOr(`/proc/${p}/cmdline`, '').includes(dir));
    expect(ours).toEqual([]);
    await kube.stop(); // twice is fine
  });
});
