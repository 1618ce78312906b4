/**
 * The kubelet harness (test/harness/kubelet.ts) on the real control plane: kwok keeps fake Nodes
 * Ready, the scheduler binds Pods to them, the StatefulSet controller makes Pods and PVCs, and the
 * harness runs each Pod's real program (`loam dev`, Debian's etcd) on a 127.0.0.x address of its own.
 * `npm run test:kube` runs it (it needs the Kubernetes tools built: kube-tools.ts).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { connect, Persistent, registerModel, type Client } from '@loam/sdk';
import { Etcd3 } from 'etcd3';
import { kubeSetup } from '../harness/kube-suite.js';
import { startKube, type KubeCluster } from '../harness/kube.js';
import { clusterRecords, hostsFile, type DnsEndpointSlice, type DnsPodObject, type DnsService } from '../harness/cluster-dns.js';
import { PV_LABEL, rewriteInPlace, startKubelet, type Kubelet, type PodObject } from '../harness/kubelet.js';
import { waitFor } from '../harness/node-process.js';
import { pidAlive, readOr } from '../harness/ports.js';
import { pollUntil } from '../harness/wait.js';

class Note extends Persistent {
  text = '';
  n = 0;
}
registerModel(Note, 'KubeletHarness.Note');

/**
 * The program of image `resolver` (through the harness's runImage): a Node process that answers, on
 * its Pod's address, what its own resolver says (`/resolve?name=`: dns.lookup, i.e. getaddrinfo, as
 * any Node program in a Pod resolves), what an HTTP GET of a URL by cluster name answers (`/fetch?url=`),
 * and its /etc/hosts (`/hosts`). On SIGTERM it says so and exits 43: proof the signal reached it.
 */
const RESOLVER = `
const http = require('node:http'), dns = require('node:dns'), fs = require('node:fs');
const json = (res, code, v) => { res.writeHead(code, { 'content-type': 'application/json' }); res.end(JSON.stringify(v)); };
const srv = http.createServer((req, res) => {
  const u = new URL(req.url, 'http://x');
  if (u.pathname === '/healthz') return json(res, 200, { ok: true });
  if (u.pathname === '/hosts') return json(res, 200, { hosts: fs.readFileSync('/etc/hosts', 'utf8') });
  if (u.pathname === '/resolve') return dns.lookup(u.searchParams.get('name'), { all: true, family: 4 }, (err, addrs) => json(res, 200, err ? { error: err.code } : { addresses: addrs.map((a) => a.address).sort() }));
  if (u.pathname === '/fetch') {
    const r = http.get(u.searchParams.get('url'), { timeout: 5000 }, (up) => { let b = ''; up.on('data', (d) => (b += d)); up.on('end', () => json(res, 200, { status: up.statusCode, body: b })); });
    r.on('timeout', () => r.destroy(new Error('timeout')));
    r.on('error', (e) => json(res, 200, { error: String(e.code || e.message) }));
    return;
  }
  json(res, 404, {});
});
srv.listen(8080, process.env.POD_IP, () => console.log('resolver listening on ' + process.env.POD_IP));
process.on('SIGTERM', () => { console.log('resolver: got SIGTERM'); srv.close(); process.exit(43); });
`;

let kube: KubeCluster;
let kubelet: Kubelet;
kubeSetup(async () => {
  const t0 = Date.now();
  kube = await startKube({ kwok: true, nodes: 2 });
  kubelet = await startKubelet(kube, {
    runImage: ({ image, command }) => {
      if (!image.startsWith('resolver')) return undefined;
      // `resolve NAME` (an exec probe): exit 0 once NAME resolves in the Pod.
      if (command?.[0] === 'resolve') return { file: process.execPath, args: ['-e', "require('node:dns').lookup(process.argv[1], (e) => process.exit(e ? 1 : 0))", command[1] ?? ''] };
      return { file: process.execPath, args: ['-e', RESOLVER] };
    },
  });
  console.log(`control plane with 2 fake Nodes and the kubelet harness: ${Date.now() - t0} ms`);
});

afterEach((ctx) => {
  if (ctx.task.result?.state === 'fail' && kubelet) console.log(`--- kubelet harness log ---\n${kubelet.log().slice(-12_000)}`);
});

afterAll(async () => {
  await kubelet?.stop();
  await kube?.stop();
});

// ---------------------------------------------------------------------------------------------------------

async function apply(yaml: string): Promise<void> {
  await kube.kubectl(['apply', '-f', '-'], { input: yaml });
}

async function getPod(name: string, ns = 'default'): Promise<PodObject | undefined> {
  const r = await kube.request('GET', `/api/v1/namespaces/${ns}/pods/${name}`);
  return r.status === 200 ? (r.body as PodObject) : undefined;
}

function condition(pod: PodObject | undefined, type: string): string | undefined {
  return pod?.status?.conditions?.find((c) => c.type === type)?.status;
}

/** waitFor for a Pod: the first one `fn` returns. */
async function waitPod(fn: () => Promise<PodObject | undefined>, what: string, timeoutMs: number, everyMs: number): Promise<PodObject> {
  return (await waitFor(fn, what, timeoutMs, everyMs))!;
}

/** Waits until the Pod (a new one when `notUid` is given) is Ready, and returns it. */
async function waitReady(name: string, opts: { notUid?: string; timeoutMs?: number } = {}): Promise<PodObject> {
  return waitPod(
    async () => {
      const p = await getPod(name);
      return p && p.metadata.uid !== opts.notUid && !p.metadata.deletionTimestamp && condition(p, 'Ready') === 'True' ? p : undefined;
    },
    `Pod ${name} to be Ready${opts.notUid ? ' (a new one)' : ''}`,
    opts.timeoutMs ?? 90_000,
    100,
  );
}

async function waitPhase(name: string, phase: string, timeoutMs = 60_000): Promise<PodObject> {
  return waitPod(
    async () => {
      const p = await getPod(name);
      return p?.status?.phase === phase ? p : undefined;
    },
    `Pod ${name} to be ${phase}`,
    timeoutMs,
    100,
  );
}

const clients: Client[] = [];
async function client(ip: string): Promise<Client> {
  const c = await connect(`loam://${ip}:7480/default`);
  clients.push(c);
  return c;
}
afterAll(async () => {
  for (const c of clients) await c.close().catch(() => undefined);
});

const LOAM_STS = `apiVersion: v1
kind: Service
metadata: { name: loam, namespace: default }
spec:
  clusterIP: None
  selector: { app: loam }
  ports: [{ name: grpc, port: 7480 }]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: { name: loam, namespace: default }
spec:
  serviceName: loam
  replicas: 3
  selector: { matchLabels: { app: loam } }
  template:
    metadata: { labels: { app: loam } }
    spec:
      terminationGracePeriodSeconds: 10
      containers:
      - name: loam
        image: loam:test
        args: [dev, --host, $(POD_IP), --port, "7480", --data, /data, --metrics-port, "0"]
        env:
        - name: POD_IP
          valueFrom: { fieldRef: { fieldPath: status.podIP } }
        ports: [{ name: grpc, containerPort: 7480 }]
        readinessProbe:
          grpc: { port: 7480 }
          periodSeconds: 1
        volumeMounts: [{ name: data, mountPath: /data }]
  volumeClaimTemplates:
  - metadata: { name: data }
    spec:
      accessModes: [ReadWriteOnce]
      resources: { requests: { storage: 1Gi } }
`;

describe('kubelet harness: a StatefulSet of loam dev', () => {
  it('goes 3/3 Ready, each Pod its own 127.0.0.x address and PVC directory', async () => {
    const t0 = Date.now();
    await apply(LOAM_STS);
    await kube.kubectl(['rollout', 'status', 'statefulset/loam', '--timeout=150s'], { timeoutMs: 160_000 });
    console.log(`StatefulSet 3/3 Ready: ${Date.now() - t0} ms`);

    const ips = new Set<string>();
    for (let i = 0; i < 3; i++) {
      const pod = (await getPod(`loam-${i}`))!;
      expect(pod.spec.nodeName).toMatch(/^kwok-node-[01]$/);
      expect(pod.status?.phase).toBe('Running');
      for (const t of ['PodScheduled', 'Initialized', 'ContainersReady', 'Ready']) expect(condition(pod, t)).toBe('True');
      const ip = pod.status!.podIP!;
      expect(ip).toMatch(/^127\.0\.0\.(\d+)$/);
      expect((pod.status as { hostIP?: string }).hostIP).toBe('127.0.0.1');
      ips.add(ip);
      const cs = pod.status!.containerStatuses![0]!;
      expect(cs).toMatchObject({ name: 'loam', ready: true, started: true, restartCount: 0 });
      expect(Object.keys(cs.state!)).toEqual(['running']);

      const proc = kubelet.processOf(`loam-${i}`)!;
      expect(proc.ip).toBe(ip);
      expect(pidAlive(proc.pid!)).toBe(true);
      // POD_IP came from status.podIP, and /data was rewritten to the PVC's directory.
      const dir = kubelet.volumeDir(`data-loam-${i}`)!;
      expect(dir.startsWith(kubelet.dir)).toBe(true);
      expect(proc.containers[0]!.argv.slice(1)).toEqual([path.resolve('node/bin/loam.js'), 'dev', '--host', ip, '--port', '7480', '--data', dir, '--metrics-port', '0']);
      expect(proc.containers[0]!.env.POD_IP).toBe(ip);
      expect(fs.readdirSync(dir).length).toBeGreaterThan(0); // loam wrote its data there
      // The harness provisioned the PV the PVC is bound to.
      const pvc = (await kube.request('GET', `/api/v1/namespaces/default/persistentvolumeclaims/data-loam-${i}`)).body as { spec: { volumeName: string }; status: { phase: string } };
      expect(pvc.status.phase).toBe('Bound');
      const pv = (await kube.request('GET', `/api/v1/persistentvolumes/${pvc.spec.volumeName}`)).body as { metadata: { labels: Record<string, string> }; spec: { hostPath: { path: string } } };
      expect(pv.metadata.labels[PV_LABEL]).toBe('true');
      expect(pv.spec.hostPath.path).toBe(dir);
    }
    expect(ips.size).toBe(3);
    // The readiness probe is what made them Ready: each answered grpc.health.v1 on its own address.
    expect(kubelet.log()).toMatch(/default\/loam-0 loam: readiness passed/);
  }, 200_000);

  it('the SDK persists and reads through one Pod\'s IP', async () => {
    const ip = (await getPod('loam-1'))!.status!.podIP!;
    const a = await client(ip);
    const note = new Note();
    note.text = 'hello from a Pod';
    note.n = 1;
    await a.persist(note, { alias: 'kubelet-note' });
    const b = await client(ip);
    const got = await b.getByAlias<Note>('kubelet-note');
    expect(got).toBeInstanceOf(Note);
    expect(got.text).toBe('hello from a Pod');
  });

  it('a crash (SIGKILL) restarts the container with a backoff, counts it, and keeps its data', async () => {
    const before = kubelet.processOf('loam-1')!;
    const pid = await kubelet.kill('loam-1', 'SIGKILL');
    expect(pid).toBe(before.pid);
    expect(pidAlive(pid)).toBe(false);
    // The kubelet reports the exit, then the restart.
    const pod = await waitPod(
      async () => {
        const p = await getPod('loam-1');
        const cs = p?.status?.containerStatuses?.[0];
        return cs?.restartCount === 1 && cs.ready ? p : undefined;
      },
      'loam-1 restarted and Ready again',
      60_000,
      100,
    );
    expect(pod.metadata.uid).toBe(before.uid); // the same Pod, a new process
    const cs = pod.status!.containerStatuses![0] as unknown as { lastState: { terminated: { exitCode: number; signal: number; reason: string } } };
    expect(cs.lastState.terminated).toMatchObject({ exitCode: 137, signal: 9, reason: 'Error' });
    const after = kubelet.processOf('loam-1')!;
    expect(after.pid).not.toBe(pid);
    expect(after.containers[0]!.restarts).toBe(1);
    const c = await client(pod.status!.podIP!);
    expect((await c.getByAlias<Note>('kubelet-note')).text).toBe('hello from a Pod');
    // Recorded as Events of the Pod, by the kubelet of its Node.
    const events = await kube.kubectl(['get', 'events', '--field-selector', 'involvedObject.name=loam-1', '-o', 'jsonpath={range .items[*]}{.reason}/{.source.component}/{.source.host}{"\\n"}{end}']);
    expect(events.stdout).toContain(`Started/kubelet/${pod.spec.nodeName}`);
    expect(events.stdout).toContain(`BackOff/kubelet/${pod.spec.nodeName}`);
  }, 90_000);

  it('a deleted Pod gets SIGTERM, is deleted, and comes back (StatefulSet controller) with its data on the same PVC', async () => {
    const old = (await getPod('loam-1'))!;
    const oldProc = kubelet.processOf('loam-1')!;
    const dir = kubelet.volumeDir('data-loam-1');
    await kube.kubectl(['delete', 'pod', 'loam-1', '--wait=false']);
    const pod = await waitReady('loam-1', { notUid: old.metadata.uid });
    // The old process stopped on SIGTERM (loam exits 0 after a clean stop), well within its grace period.
    expect(pidAlive(oldProc.pid!)).toBe(false);
    expect(kubelet.log()).toMatch(/default\/loam-1 loam: exited code=0 signal=null/);
    expect(kubelet.log()).toMatch(/default\/loam-1: deleted with grace 0/);
    const proc = kubelet.processOf('loam-1')!;
    expect(proc.uid).toBe(pod.metadata.uid);
    expect(proc.ip).toBe(pod.status!.podIP);
    expect(kubelet.volumeDir('data-loam-1')).toBe(dir);
    const c = await client(pod.status!.podIP!);
    expect((await c.getByAlias<Note>('kubelet-note')).text).toBe('hello from a Pod');
  }, 120_000);

  it('a Pod deleted with its PVC comes back on a new, empty directory', async () => {
    const old = (await getPod('loam-2'))!;
    const oldDir = kubelet.volumeDir('data-loam-2')!;
    const ip = old.status!.podIP!;
    const a = await client(ip);
    await a.persist(Object.assign(new Note(), { text: 'lost with the volume' }), { alias: 'on-loam-2' });
    // The PVC stays (pvc-protection) until its Pod is gone; the StatefulSet controller then makes a
    // new PVC for the new Pod, and the harness a new PV and directory for it.
    await kube.kubectl(['delete', 'pvc', 'data-loam-2', '--wait=false']);
    await kube.kubectl(['delete', 'pod', 'loam-2', '--wait=false']);
    const pod = await waitReady('loam-2', { notUid: old.metadata.uid, timeoutMs: 120_000 });
    const dir = kubelet.volumeDir('data-loam-2')!;
    expect(dir).not.toBe(oldDir);
    await waitFor(() => !fs.existsSync(oldDir), 'the old PVC directory to be removed', 30_000, 100);
    const c = await client(pod.status!.podIP!);
    await expect(c.getByAlias('on-loam-2')).rejects.toThrow();
  }, 150_000);
});

describe('kubelet harness: other Pods', () => {
  it('a managed-etcd style Pod (image etcd) runs Debian\'s etcd and goes Ready on its /health', async () => {
    await apply(`apiVersion: apps/v1
kind: StatefulSet
metadata: { name: store-etcd, namespace: default }
spec:
  serviceName: store-etcd
  replicas: 1
  selector: { matchLabels: { app: store-etcd } }
  template:
    metadata: { labels: { app: store-etcd } }
    spec:
      containers:
      - name: etcd
        image: registry.k8s.io/etcd:3.5.21-0
        command: [etcd]
        args:
        - --name=$(POD_NAME)
        - --data-dir=/var/lib/etcd/data
        - --listen-client-urls=http://$(POD_IP):2379
        - --advertise-client-urls=http://$(POD_IP):2379
        - --listen-peer-urls=http://$(POD_IP):2380
        - --initial-advertise-peer-urls=http://$(POD_IP):2380
        - --initial-cluster=$(POD_NAME)=http://$(POD_IP):2380
        - --initial-cluster-state=new
        env:
        - name: POD_NAME
          valueFrom: { fieldRef: { fieldPath: metadata.name } }
        - name: POD_IP
          valueFrom: { fieldRef: { fieldPath: status.podIP } }
        readinessProbe:
          httpGet: { path: /health, port: 2379 }
          periodSeconds: 2
        volumeMounts: [{ name: data, mountPath: /var/lib/etcd }]
  volumeClaimTemplates:
  - metadata: { name: data }
    spec:
      accessModes: [ReadWriteOnce]
      resources: { requests: { storage: 1Gi } }
`);
    const pod = await waitReady('store-etcd-0');
    const ip = pod.status!.podIP!;
    const proc = kubelet.processOf('store-etcd-0')!;
    expect(proc.containers[0]!.argv[0]).toMatch(/\/etcd$/);
    expect(proc.containers[0]!.argv).toContain(`--data-dir=${kubelet.volumeDir('data-store-etcd-0')}/data`);
    expect(proc.containers[0]!.argv).toContain(`--initial-cluster=store-etcd-0=http://${ip}:2380`);
    const etcd = new Etcd3({ hosts: `http://${ip}:2379` });
    try {
      await etcd.put('/kubelet-harness/k').value('v');
      expect(await etcd.get('/kubelet-harness/k').string()).toBe('v');
    } finally {
      etcd.close();
    }
  }, 120_000);

  it('resolves env (fieldRef, ConfigMap and Secret keys, envFrom, $(VAR)) and writes Secret/ConfigMap volumes; restartPolicy Never ends Succeeded', async () => {
    await apply(`apiVersion: v1
kind: ConfigMap
metadata: { name: settings, namespace: default }
data: { greeting: hello, level: debug }
---
apiVersion: v1
kind: Secret
metadata: { name: creds, namespace: default }
stringData: { password: s3cret, token: tkn }
---
apiVersion: v1
kind: Pod
metadata: { name: env-check, namespace: default, labels: { tier: test } }
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: example.com/loam:v1
    command: [/usr/local/bin/loam]
    args: [--version]
    workingDir: /work
    envFrom:
    - configMapRef: { name: settings }
      prefix: CM_
    env:
    - { name: POD_NAME, valueFrom: { fieldRef: { fieldPath: metadata.name } } }
    - { name: POD_NS, valueFrom: { fieldRef: { fieldPath: metadata.namespace } } }
    - { name: TIER, valueFrom: { fieldRef: { fieldPath: "metadata.labels['tier']" } } }
    - { name: GREETING, valueFrom: { configMapKeyRef: { name: settings, key: greeting } } }
    - { name: PASSWORD, valueFrom: { secretKeyRef: { name: creds, key: password } } }
    - { name: MISSING, valueFrom: { secretKeyRef: { name: creds, key: nope, optional: true } } }
    - { name: COMBINED, value: "$(POD_NAME).$(POD_NS) $$(POD_NAME)" }
    - { name: TOKEN_FILE, value: /etc/creds/token }
    - { name: MEM, valueFrom: { resourceFieldRef: { resource: limits.memory, divisor: 1Mi } } }
    resources: { limits: { memory: 64Mi } }
    volumeMounts:
    - { name: creds, mountPath: /etc/creds }
    - { name: conf, mountPath: /etc/conf }
    - { name: work, mountPath: /work }
  volumes:
  - name: creds
    secret: { secretName: creds, defaultMode: 0400 }
  - name: conf
    configMap:
      name: settings
      items: [{ key: greeting, path: sub/greeting.txt }]
  - name: work
    emptyDir: {}
`);
    const pod = await waitPhase('env-check', 'Succeeded');
    const cs = pod.status!.containerStatuses![0] as unknown as { state: { terminated: { exitCode: number; reason: string } } };
    expect(cs.state.terminated).toMatchObject({ exitCode: 0, reason: 'Completed' });
    expect(condition(pod, 'Ready')).toBe('False');
    const proc = kubelet.processOf('env-check')!;
    const c = proc.containers[0]!;
    expect(c.logs).toMatch(/\d+\.\d+\.\d+/); // loam --version printed its version
    expect(c.env).toMatchObject({
      POD_NAME: 'env-check',
      POD_NS: 'default',
      TIER: 'test',
      GREETING: 'hello',
      CM_greeting: 'hello',
      CM_level: 'debug',
      PASSWORD: 's3cret',
      COMBINED: 'env-check.default $(POD_NAME)',
      TOKEN_FILE: path.join(proc.volumes.creds!, 'token'),
      MEM: '64',
      HOSTNAME: 'env-check',
    });
    expect(c.env.MISSING).toBeUndefined();
    expect(c.env.LOAM_ETCD_BIN).toBeUndefined(); // nothing of the test process's own environment
    expect(c.cwd).toBe(proc.volumes.work);
    expect(fs.readFileSync(path.join(proc.volumes.creds!, 'password'), 'utf8')).toBe('s3cret');
    expect(fs.statSync(path.join(proc.volumes.creds!, 'password')).mode & 0o777).toBe(0o400);
    expect(fs.readFileSync(path.join(proc.volumes.conf!, 'sub/greeting.txt'), 'utf8')).toBe('hello');
    expect(fs.existsSync(path.join(proc.volumes.conf!, 'level'))).toBe(false);
  }, 90_000);

  it('a missing Secret keeps the container waiting (CreateContainerConfigError) until it exists', async () => {
    await apply(`apiVersion: v1
kind: Pod
metadata: { name: waits-for-secret, namespace: default }
spec:
  containers:
  - name: main
    image: loam:test
    args: [dev, --host, $(POD_IP), --port, "7480", --data, /data, --metrics-port, "0"]
    env:
    - { name: POD_IP, valueFrom: { fieldRef: { fieldPath: status.podIP } } }
    - { name: LATER, valueFrom: { secretKeyRef: { name: later, key: k } } }
    volumeMounts: [{ name: data, mountPath: /data }]
  volumes: [{ name: data, emptyDir: {} }]
`);
    await waitFor(
      async () => {
        const p = await getPod('waits-for-secret');
        const w = (p?.status?.containerStatuses?.[0]?.state as { waiting?: { reason: string; message: string } } | undefined)?.waiting;
        return w?.reason === 'CreateContainerConfigError' && /secret "later" not found/.test(w.message) && p!.status!.phase === 'Pending';
      },
      'waits-for-secret to wait for its Secret',
      30_000,
      100,
    );
    await kube.kubectl(['create', 'secret', 'generic', 'later', '--from-literal=k=v']);
    // Without a readinessProbe: Ready once the process runs.
    await waitReady('waits-for-secret');
    expect(kubelet.processOf('waits-for-secret')!.containers[0]!.env.LATER).toBe('v');
  }, 60_000);

  it('runs init containers first; a hung process fails its liveness probe and is restarted; one that ignores SIGTERM is SIGKILLed after the grace period', async () => {
    await apply(`apiVersion: v1
kind: Pod
metadata: { name: probed, namespace: default }
spec:
  terminationGracePeriodSeconds: 2
  initContainers:
  - { name: init, image: loam:test, args: [--version] }
  containers:
  - name: main
    image: loam:test
    args: [dev, --host, $(POD_IP), --port, "7480", --data, /data, --metrics-port, "0"]
    env: [{ name: POD_IP, valueFrom: { fieldRef: { fieldPath: status.podIP } } }]
    ports: [{ name: grpc, containerPort: 7480 }]
    startupProbe: { tcpSocket: { port: grpc }, periodSeconds: 1, failureThreshold: 30 }
    readinessProbe: { grpc: { port: 7480 }, periodSeconds: 1 }
    livenessProbe: { grpc: { port: 7480 }, periodSeconds: 1, failureThreshold: 2, terminationGracePeriodSeconds: 1 }
    volumeMounts: [{ name: data, mountPath: /data }]
  volumes: [{ name: data, emptyDir: {} }]
`);
    const pod = await waitReady('probed');
    expect(condition(pod, 'Initialized')).toBe('True');
    const init = (pod.status as { initContainerStatuses?: { name: string; state: { terminated?: { exitCode: number } } }[] }).initContainerStatuses!;
    expect(init[0]).toMatchObject({ name: 'init', state: { terminated: { exitCode: 0 } } });
    const hung = kubelet.processOf('probed')!.pid!;
    // A hang, not a crash: the liveness probe finds it (it cannot exit on SIGTERM while stopped: SIGKILL after 1 s).
    await kubelet.kill('probed', 'SIGSTOP');
    const back = await waitPod(
      async () => {
        const p = await getPod('probed');
        const cs = p?.status?.containerStatuses?.[0];
        return cs?.restartCount === 1 && cs.ready ? p : undefined;
      },
      'probed restarted after failing its liveness probe, and Ready again',
      60_000,
      100,
    );
    expect(pidAlive(hung)).toBe(false);
    expect(kubelet.log()).toMatch(/default\/probed main: liveness probe failed, restarting/);
    const cs = back.status!.containerStatuses![0] as unknown as { lastState: { terminated: { exitCode: number; reason: string } } };
    expect(cs.lastState.terminated.exitCode).toBe(137);

    // Deleted while hung: SIGTERM does nothing, SIGKILL after terminationGracePeriodSeconds (2 s).
    const proc = kubelet.processOf('probed')!;
    await kubelet.kill('probed', 'SIGSTOP');
    const t0 = Date.now();
    await kube.kubectl(['delete', 'pod', 'probed', '--wait=false']);
    await waitFor(async () => (await getPod('probed')) === undefined, 'probed to be deleted', 30_000, 100);
    const took = Date.now() - t0;
    expect(took).toBeGreaterThanOrEqual(1900);
    expect(took).toBeLessThan(15_000);
    expect(pidAlive(proc.pid!)).toBe(false);
    expect(proc.logs).not.toMatch(/"msg":"stopping"/);
  }, 90_000);

  it('an image it cannot run, or a shell command, fails the Pod with a clear reason', async () => {
    await apply(`apiVersion: v1
kind: Pod
metadata: { name: nginx, namespace: default }
spec:
  containers: [{ name: web, image: nginx:1.27 }]
---
apiVersion: v1
kind: Pod
metadata: { name: shell, namespace: default }
spec:
  containers: [{ name: sh, image: loam:test, command: [sh, -c, "loam dev"] }]
`);
    const pod = await waitPhase('nginx', 'Failed');
    expect(pod.status!.reason).toBe('UnsupportedImage');
    expect((pod.status as { message?: string }).message).toMatch(/nginx:1\.27: the kubelet harness runs only images whose name contains "loam".*or "etcd"/);
    const cs = pod.status!.containerStatuses![0] as unknown as { state: { terminated: { reason: string } } };
    expect(cs.state.terminated.reason).toBe('UnsupportedImage');
    expect(kubelet.processOf('nginx')!.containers[0]!.pid).toBeUndefined();
    const shell = await waitPhase('shell', 'Failed');
    expect((shell.status as { message?: string }).message).toMatch(/is a shell command, which the kubelet harness does not run/);
  }, 60_000);
});

describe('kubelet harness: cluster DNS (a hosts file per Pod)', () => {
  it('hostsFile: Service and Pod hostname records from the Pods (as the EndpointSlice controller picks them), search-path forms, the Pod\'s own lines', () => {
    const services: DnsService[] = [
      { metadata: { name: 'peers', namespace: 'ns1' }, spec: { clusterIP: 'None', publishNotReadyAddresses: true, selector: { app: 'p' } } },
      { metadata: { name: 'db', namespace: 'ns1' }, spec: { clusterIP: 'None', selector: { app: 'db' } } },
      { metadata: { name: 'api', namespace: 'ns1' }, spec: { clusterIP: '10.0.0.7', selector: { app: 'db', tier: 'api' } } },
      { metadata: { name: 'web', namespace: 'ns2' }, spec: { clusterIP: '10.0.0.8', selector: { app: 'db' } } },
      { metadata: { name: 'ext', namespace: 'ns1' }, spec: { type: 'ExternalName', selector: { app: 'db' } } },
      { metadata: { name: 'outside', namespace: 'ns1' }, spec: { clusterIP: '10.0.0.9' } }, // no selector: its own EndpointSlices
    ];
    const pod = (ns: string, name: string, labels: Record<string, string>, ip: string | undefined, opts: { ready?: boolean; phase?: string; deleting?: boolean; subdomain?: string } = {}): DnsPodObject => ({
      metadata: { name, namespace: ns, labels, ...(opts.deleting ? { deletionTimestamp: '2026-12-02T00:00:00Z' } : {}) },
      spec: { hostname: name, ...(opts.subdomain ? { subdomain: opts.subdomain } : {}) },
      status: { phase: opts.phase ?? 'Running', ...(ip ? { podIP: ip } : {}), conditions: [{ type: 'Ready', status: opts.ready === false ? 'False' : 'True' }] },
    });
    const pods: DnsPodObject[] = [
      pod('ns1', 'p-0', { app: 'p' }, '127.0.0.3', { subdomain: 'peers' }),
      pod('ns1', 'p-1', { app: 'p' }, '127.0.0.10', { subdomain: 'peers', ready: false }), // published anyway
      pod('ns1', 'p-2', { app: 'p' }, undefined, { subdomain: 'peers' }), // no IP yet
      pod('ns1', 'db-0', { app: 'db', tier: 'api' }, '127.0.0.4', { subdomain: 'db' }),
      pod('ns1', 'db-1', { app: 'db' }, '127.0.0.5', { subdomain: 'db', ready: false }), // not ready: no record
      pod('ns1', 'db-2', { app: 'db' }, '127.0.0.6', { subdomain: 'other' }), // in db, but no hostname record there
      pod('ns1', 'db-3', { app: 'db' }, '127.0.0.14', { deleting: true }), // terminating
      pod('ns1', 'db-4', { app: 'db' }, '127.0.0.15', { phase: 'Succeeded' }),
      pod('ns2', 'w-0', { app: 'db' }, '127.0.0.11'),
    ];
    const slices: DnsEndpointSlice[] = [
      { metadata: { name: 'outside-1', namespace: 'ns1', labels: { 'kubernetes.io/service-name': 'outside' } }, addressType: 'IPv4', endpoints: [{ addresses: ['10.1.2.3'] }, { addresses: ['10.1.2.4'], conditions: { ready: false } }] },
      { metadata: { name: 'db-x', namespace: 'ns1', labels: { 'kubernetes.io/service-name': 'db' } }, addressType: 'IPv4', endpoints: [{ addresses: ['10.9.9.9'] }] }, // a selector's Service: Pods only
    ];
    expect(Object.fromEntries(clusterRecords(services, pods, slices))).toEqual({
      'api.ns1.svc.cluster.local': ['127.0.0.4'], // a ClusterIP Service: its endpoints' Pod IPs (no virtual IP), no hostname records
      'db-0.db.ns1.svc.cluster.local': ['127.0.0.4'],
      'db.ns1.svc.cluster.local': ['127.0.0.4', '127.0.0.6'],
      'outside.ns1.svc.cluster.local': ['10.1.2.3'],
      'p-0.peers.ns1.svc.cluster.local': ['127.0.0.3'],
      'p-1.peers.ns1.svc.cluster.local': ['127.0.0.10'],
      'peers.ns1.svc.cluster.local': ['127.0.0.3', '127.0.0.10'],
      'web.ns2.svc.cluster.local': ['127.0.0.11'],
    });
    const text = hostsFile({
      base: '127.0.0.1 localhost\n::1 localhost ip6-localhost\n',
      services,
      pods,
      endpointSlices: slices,
      pod: { namespace: 'ns1', name: 'p-0', ip: '127.0.0.3', hostname: 'p-0', subdomain: 'peers', hostAliases: [{ ip: '127.0.0.200', hostnames: ['foo.local', 'bar'] }] },
    });
    const lines = text.split('\n');
    expect(lines.slice(0, 2)).toEqual(['127.0.0.1 localhost', '::1 localhost ip6-localhost']); // the machine's lines stay
    expect(lines).toContain('127.0.0.3\tp-0.peers.ns1.svc.cluster.local\tp-0'); // what a kubelet writes for the Pod itself
    expect(lines).toContain('127.0.0.200\tfoo.local\tbar');
    expect(lines).toContain('127.0.0.4\tdb.ns1.svc.cluster.local\tdb.ns1.svc\tdb.ns1\tdb'); // short forms in the Pod's namespace
    expect(lines).toContain('127.0.0.6\tdb.ns1.svc.cluster.local\tdb.ns1.svc\tdb.ns1\tdb');
    expect(lines).toContain('127.0.0.4\tdb-0.db.ns1.svc.cluster.local\tdb-0.db.ns1.svc\tdb-0.db.ns1\tdb-0.db');
    expect(lines).toContain('127.0.0.11\tweb.ns2.svc.cluster.local\tweb.ns2.svc\tweb.ns2'); // another namespace: no bare name
    expect(text).not.toMatch(/127\.0\.0\.(5|14|15)\b|10\.9\.9\.9|10\.1\.2\.4/);
    expect(text.endsWith('\n')).toBe(true);
    expect(hostsFile({ base: '', services, pods, endpointSlices: slices, pod: { namespace: 'ns1', name: 'x', ip: '127.0.0.20' }, cluster: false }).split('\n').filter((l) => l && !l.startsWith('#'))).toEqual(['127.0.0.20\tx']);
  });

  it('rewriteInPlace keeps the inode (a bind mount pins it), shrinks cleanly and always moves the mtime', () => {
    const f = path.join(os.tmpdir(), `hosts-inplace-${process.pid}`);
    try {
      let m = rewriteInPlace(f, 'a long first version of the file\n', 0);
      const ino = fs.statSync(f).ino;
      m = rewriteInPlace(f, 'short\n', m);
      expect(fs.readFileSync(f, 'utf8')).toBe('short\n');
      const m2 = rewriteInPlace(f, 'same!\n', m); // same size, within the same millisecond or not
      expect(m2).toBeGreaterThan(m);
      expect(Math.round(fs.statSync(f).mtimeMs)).toBe(m2);
      expect(fs.statSync(f).ino).toBe(ino);
      expect(fs.readFileSync(f, 'utf8')).toBe('same!\n');
    } finally {
      fs.rmSync(f, { force: true });
    }
  });

  it('without the right to make a mount namespace (not root), startKubelet fails with a clear error; dns: false skips the check', async () => {
    // A child process as nobody (no CAP_SYS_ADMIN), with a registry of its own (TMPDIR).
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubelet-nonroot-'));
    try {
      fs.chmodSync(dir, 0o777);
      const script = path.join(dir, 'try.ts');
      fs.writeFileSync(
        script,
        `import { startKubelet } from ${JSON.stringify(path.resolve('test/harness/kubelet.ts'))};
for (const dns of [true, false]) {
  try { await startKubelet({ kubeconfig: '/nonexistent/kubeconfig' }, { dns }); console.log('RESULT started'); }
  catch (e) { console.log('RESULT ' + JSON.stringify({ dns, error: (e as Error).message })); }
}
`,
      );
      const child = spawn('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', path.resolve('node_modules/.bin/vite-node'), script], {
        env: { ...process.env, HOME: dir, TMPDIR: dir },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      const code = await new Promise<number | null>((r) => child.once('exit', r));
      const results = out
        .split('\n')
        .filter((l) => l.startsWith('RESULT '))
        .map((l) => JSON.parse(l.slice(7)) as { dns: boolean; error: string });
      expect(code, out).toBe(0);
      expect(results, out).toHaveLength(2);
      expect(results[0]!.error).toMatch(/^kubelet harness: cannot give a process its own \/etc\/hosts \(unshare: .*Operation not permitted\): .*needs root \(CAP_SYS_ADMIN\); start it with \{ dns: false \}/);
      // Without DNS it gets past the check, to the (here missing) kubeconfig.
      expect(results[1]!.error).toMatch(/ENOENT.*\/nonexistent\/kubeconfig/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  /** What the resolver Pod at `ip` answers for `p`. */
  async function ask<T>(ip: string, p: string): Promise<T> {
    const r = await fetch(`http://${ip}:8080${p}`, { signal: AbortSignal.timeout(10_000) });
    return (await r.json()) as T;
  }
  const resolve = (ip: string, name: string) => ask<{ addresses?: string[]; error?: string }>(ip, `/resolve?name=${encodeURIComponent(name)}`);
  /** Polls until `name` resolves in the resolver Pod to exactly `want` (Go and glibc see a hosts-file change within seconds, not at once). */
  async function resolvesTo(ip: string, name: string, want: string[], timeoutMs = 30_000): Promise<void> {
    let last: unknown;
    await pollUntil(
      async () => {
        last = await resolve(ip, name);
        return JSON.stringify((last as { addresses?: string[] }).addresses) === JSON.stringify([...want].sort());
      },
      `${name} to resolve to ${want.join(',')} inside the resolver Pod`,
      timeoutMs,
      { everyMs: 200, detail: () => `last answer: ${JSON.stringify(last)}` },
    );
  }

  const ETCD = (n: number) => `dns-etcd-${n}=http://dns-etcd-${n}.dns-etcd-peers.default.svc:2380`;
  it('a 3-member etcd StatefulSet bootstrapped by DNS names (--initial-cluster etcd-N.peers.ns.svc) forms a cluster and goes Ready', async () => {
    const t0 = Date.now();
    await apply(`apiVersion: v1
kind: Service
metadata: { name: dns-etcd-peers, namespace: default }
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector: { app: dns-etcd }
  ports: [{ name: peer, port: 2380 }]
---
apiVersion: v1
kind: Service
metadata: { name: dns-etcd, namespace: default }
spec:
  selector: { app: dns-etcd }
  ports: [{ name: client, port: 2379 }]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: { name: dns-etcd, namespace: default }
spec:
  serviceName: dns-etcd-peers
  replicas: 3
  podManagementPolicy: Parallel
  selector: { matchLabels: { app: dns-etcd } }
  template:
    metadata: { labels: { app: dns-etcd } }
    spec:
      terminationGracePeriodSeconds: 10
      containers:
      - name: etcd
        image: registry.k8s.io/etcd:3.5.21-0
        command: [etcd]
        args:
        - --name=$(POD_NAME)
        - --data-dir=/var/lib/etcd/data
        - --listen-client-urls=http://$(POD_IP):2379
        - --advertise-client-urls=http://$(POD_NAME).dns-etcd-peers.default.svc:2379
        - --listen-peer-urls=http://$(POD_IP):2380
        - --initial-advertise-peer-urls=http://$(POD_NAME).dns-etcd-peers.default.svc:2380
        - --initial-cluster=${ETCD(0)},${ETCD(1)},${ETCD(2)}
        - --initial-cluster-state=new
        - --initial-cluster-token=dns-etcd
        env:
        - name: POD_NAME
          valueFrom: { fieldRef: { fieldPath: metadata.name } }
        - name: POD_IP
          valueFrom: { fieldRef: { fieldPath: status.podIP } }
        readinessProbe:
          httpGet: { path: /health, port: 2379 }
          periodSeconds: 1
        volumeMounts: [{ name: data, mountPath: /var/lib/etcd }]
  volumeClaimTemplates:
  - metadata: { name: data }
    spec:
      accessModes: [ReadWriteOnce]
      resources: { requests: { storage: 1Gi } }
`);
    await kube.kubectl(['rollout', 'status', 'statefulset/dns-etcd', '--timeout=150s'], { timeoutMs: 160_000 });
    console.log(`3-member etcd by DNS names Ready: ${Date.now() - t0} ms`);
    const ips = await Promise.all([0, 1, 2].map(async (i) => (await getPod(`dns-etcd-${i}`))!.status!.podIP!));
    expect(new Set(ips).size).toBe(3);
    // One cluster of three, each member known by its DNS name (its /health is what made it Ready: it has a leader).
    const etcd = new Etcd3({ hosts: ips.map((ip) => `http://${ip}:2379`) });
    try {
      const members = (await etcd.cluster.memberList({})).members!;
      expect(members.map((m) => m.peerURLs).sort()).toEqual([0, 1, 2].map((i) => [`http://dns-etcd-${i}.dns-etcd-peers.default.svc:2380`]));
      await etcd.put('/kubelet-harness/dns').value('by-name');
    } finally {
      etcd.close();
    }
    // The Pod's process is the program itself (exec'd, not a shell's child), in a mount namespace of its own.
    const proc = kubelet.processOf('dns-etcd-0')!;
    expect(fs.readlinkSync(`/proc/${proc.pid}/exe`)).toMatch(/etcd$/);
    expect(fs.readlinkSync(`/proc/${proc.pid}/ns/mnt`)).not.toBe(fs.readlinkSync('/proc/self/ns/mnt'));
    expect(proc.containers[0]!.argv).toContain(`--initial-cluster=${ETCD(0)},${ETCD(1)},${ETCD(2)}`);
  }, 200_000);

  it('a Node process in a Pod resolves Service names (ClusterIP and headless, short and long forms) to ready Pod IPs and reaches etcd by its Service name', async () => {
    await apply(`apiVersion: v1
kind: Pod
metadata: { name: resolver, namespace: default }
spec:
  terminationGracePeriodSeconds: 10
  containers:
  - name: main
    image: resolver:test
    env: [{ name: POD_IP, valueFrom: { fieldRef: { fieldPath: status.podIP } } }]
    # An exec probe runs in the Pod's namespace too: Ready once etcd's Service name resolves there.
    readinessProbe: { exec: { command: [resolve, dns-etcd.default.svc] }, periodSeconds: 1 }
    livenessProbe: { httpGet: { path: /healthz, port: 8080 }, periodSeconds: 1 }
`);
    const r = (await waitReady('resolver')).status!.podIP!;
    expect(kubelet.log()).toMatch(/default\/resolver main: readiness passed/);
    const ips = await Promise.all([0, 1, 2].map(async (i) => (await getPod(`dns-etcd-${i}`))!.status!.podIP!));
    for (const name of ['dns-etcd.default.svc', 'dns-etcd.default.svc.cluster.local', 'dns-etcd.default', 'dns-etcd', 'dns-etcd-peers.default.svc']) await resolvesTo(r, name, ips);
    await resolvesTo(r, 'dns-etcd-2.dns-etcd-peers.default.svc', [ips[2]!]);
    // The loam StatefulSet's headless Service, and the Pod's own name (what a kubelet writes into its /etc/hosts).
    const loamIps = await Promise.all([0, 1, 2].map(async (i) => (await getPod(`loam-${i}`))!.status!.podIP!));
    await resolvesTo(r, 'loam.default.svc', loamIps);
    await resolvesTo(r, 'resolver', [r]);
    // Names the cluster does not have fall through to the machine's resolver (and fail there).
    expect((await resolve(r, 'no-such-service.default.svc')).addresses).toBeUndefined();
    // An HTTP client in the Pod reaches etcd by its client Service's name.
    const health = await ask<{ status?: number; body?: string; error?: string }>(r, `/fetch?url=${encodeURIComponent('http://dns-etcd.default.svc:2379/health')}`);
    expect(health).toMatchObject({ status: 200 });
    expect(JSON.parse(health.body!)).toMatchObject({ health: 'true' });
    // The test process's own /etc/hosts is untouched.
    expect(fs.readFileSync('/etc/hosts', 'utf8')).not.toMatch(/svc/);
  }, 90_000);

  it('a deleted and recreated etcd member comes back on a new IP, its name follows it, and the cluster stays whole', async () => {
    const r = kubelet.processOf('resolver')!.ip;
    const old = (await getPod('dns-etcd-1'))!;
    const oldIp = old.status!.podIP!;
    await kube.kubectl(['delete', 'pod', 'dns-etcd-1', '--wait=false']);
    const pod = await waitReady('dns-etcd-1', { notUid: old.metadata.uid, timeoutMs: 120_000 });
    const ip = pod.status!.podIP!;
    expect(ip).not.toBe(oldIp); // addresses are handed out round robin
    await resolvesTo(r, 'dns-etcd-1.dns-etcd-peers.default.svc', [ip]);
    const ips = await Promise.all([0, 1, 2].map(async (i) => (await getPod(`dns-etcd-${i}`))!.status!.podIP!));
    await resolvesTo(r, 'dns-etcd.default.svc', ips);
    // Its peers found it again by name: it serves the data written before, and the cluster takes writes.
    const etcd = new Etcd3({ hosts: `http://${ip}:2379` });
    try {
      expect(await etcd.get('/kubelet-harness/dns').string()).toBe('by-name');
      await etcd.put('/kubelet-harness/dns2').value('after');
      expect(await etcd.get('/kubelet-harness/dns2').string()).toBe('after');
    } finally {
      etcd.close();
    }
  }, 150_000);

  it('SIGTERM still reaches the program itself: a deleted Pod\'s graceful exit is reported with its exit code', async () => {
    const proc = kubelet.processOf('resolver')!;
    expect(fs.readlinkSync(`/proc/${proc.pid}/exe`)).toBe(fs.realpathSync(process.execPath));
    expect(proc.containers[0]!.argv[0]).toBe(process.execPath);
    await kube.kubectl(['delete', 'pod', 'resolver', '--wait=false']);
    await waitFor(async () => (await getPod('resolver')) === undefined, 'resolver to be deleted', 30_000, 100);
    expect(pidAlive(proc.pid!)).toBe(false);
    const after = kubelet.pods().find((p) => p.uid === proc.uid);
    expect(after).toBeUndefined();
    // 43 is what its SIGTERM handler exits with: the signal reached it, and its exit code came back.
    expect(kubelet.log()).toMatch(/default\/resolver main: exited code=43 signal=null/);
  }, 60_000);
});

describe('kubelet harness: stop', () => {
  it('ends every process, releases the addresses and removes its temp dir', async () => {
    const pods = kubelet.pods();
    const pids = pods.flatMap((p) => p.containers.map((c) => c.pid)).filter((p): p is number => p !== undefined);
    const ips = pods.map((p) => p.ip);
    expect(pids.length).toBeGreaterThanOrEqual(4); // 3 loam, 1 etcd, waits-for-secret
    for (const pid of pids) expect(pidAlive(pid)).toBe(true);
    const dir = kubelet.dir;
    const t0 = Date.now();
    await kubelet.stop();
    console.log(`kubelet stop: ${Date.now() - t0} ms`);
    for (const pid of pids) expect(pidAlive(pid)).toBe(false);
    const ours = fs
      .readdirSync('/proc')
      .filter((p) => /^\d+$/.test(p))
      .filter((p) => readOr(`/proc/${p}/environ`, '').includes(`KUBELET_HARNESS_DIR=${dir}`));
    expect(ours).toEqual([]);
    expect(fs.existsSync(dir)).toBe(false);
    for (const ip of ips) expect(readOr(path.join(os.tmpdir(), 'loam-kubelet', 'ips', ip), '')).not.toBe(String(process.pid));
    await kubelet.stop(); // twice is fine
  }, 60_000);

  it('a start reaps the processes of a harness whose worker died without stopping it', async () => {
    // What a killed worker leaves: its record (owner: a pid that is gone), its dir, a Pod process.
    const gone = spawn('true');
    const deadPid = gone.pid!;
    await new Promise((r) => gone.once('exit', r));
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'loam-kubelet-'));
    const orphan = spawn('sleep', ['600'], { env: { ...process.env, KUBELET_HARNESS_DIR: dir }, stdio: 'ignore' });
    const exited = new Promise((r) => orphan.once('exit', r));
    const record = path.join(os.tmpdir(), 'loam-kubelet', 'harnesses', `${path.basename(dir)}.json`);
    fs.writeFileSync(record, JSON.stringify({ owner: deadPid, dir, pids: [orphan.pid] }));
    // And a process whose pid is listed but that is not one of its own (pids get reused): left alone.
    const bystander = spawn('sleep', ['600'], { stdio: 'ignore' });
    fs.writeFileSync(record, JSON.stringify({ owner: deadPid, dir, pids: [orphan.pid, bystander.pid] }));
    try {
      const k = await startKubelet(kube, { nodes: [] });
      await k.stop();
      await exited;
      expect(orphan.signalCode).toBe('SIGKILL');
      expect(fs.existsSync(dir)).toBe(false);
      expect(fs.existsSync(record)).toBe(false);
      expect(pidAlive(bystander.pid!)).toBe(true);
    } finally {
      orphan.kill('SIGKILL');
      bystander.kill('SIGKILL');
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
