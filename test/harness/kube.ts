/**
 * A real Kubernetes control plane on loopback for tests (never a mock): etcd 3.6, kube-apiserver,
 * kube-controller-manager, kube-scheduler, and optionally kwok with fake Nodes.
 *
 * - `startKube(opts)` makes certificates with `openssl` in a fresh temp dir, starts every component
 *   on ports from ports.ts and resolves once the API server's /readyz says ok (and, with the
 *   controller-manager, the `default` ServiceAccount exists; with kwok, every fake Node is Ready).
 *   Each wait has a deadline and rejects with the components' output; a failed start leaves nothing.
 * - The result has the admin kubeconfig, the server URL, `kubectl()`, `helm()` (its cache, config
 *   and data dirs in the temp dir), `request()` (a raw HTTPS call as admin, to see status codes),
 *   `addFakeNode()` and `stop()` (the API server before its etcd: the other way round it takes ~15 s).
 * - `cleanupKube()` (test/setup.ts runs it after every file) stops whatever a test left running, and
 *   a start reaps the processes and temp dirs of a worker that died without cleaning up.
 *
 * The binaries come from kube-tools.ts: call `ensureKubeTools()` first in a `beforeAll` with a long
 * timeout (a cold build takes minutes); `startKube` only finds them.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { releasePorts, reservePorts } from './ports.js';
import { Children, reapDeadOwners, writeLeftoverRecord } from './leftovers.js';
import { pollUntil } from './wait.js';
import { ensureKubeTools, type KubeTools } from './kube-tools.js';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Written to the command's stdin. */
  input?: string;
  /** Reject when the command exits non-zero (default true). */
  check?: boolean;
  timeoutMs?: number;
}

export interface KubeStartOptions {
  /** kube-controller-manager (default true). */
  controllerManager?: boolean;
  /** kube-scheduler (default true). */
  scheduler?: boolean;
  /**
   * kwok for fake Nodes (default off). `pods: true` adds kwok's pod stages (every bound Pod becomes
   * Running and Ready at once); without it Pods are bound and stay Pending, for a harness that plays
   * the kubelet.
   */
  kwok?: boolean | { pods?: boolean };
  /** Fake Nodes to create (and wait Ready) at start; needs kwok. Default 1 with kwok, else 0. */
  nodes?: number;
  /** Deadline of each wait (default 60 s). */
  timeoutMs?: number;
}

export interface FakeNodeOptions {
  cpu?: string;
  memory?: string;
  pods?: number;
  labels?: Record<string, string>;
  /** Wait until kwok reports the Node Ready (default true). */
  waitReady?: boolean;
}

export interface KubeCluster {
  /** The temp dir holding certificates, kubeconfig, data and logs (removed by stop()). */
  dir: string;
  /** Admin kubeconfig (client certificate in group system:masters). */
  kubeconfig: string;
  /** https://127.0.0.1:PORT */
  server: string;
  caFile: string;
  /** The control plane's etcd, http://127.0.0.1:PORT (etcd 3.6, not Loam's). */
  etcdEndpoint: string;
  tools: KubeTools;
  /** `kubectl --kubeconfig <admin> args`; rejects with its output when it fails unless `check: false`. */
  kubectl(args: string[], opts?: RunOptions): Promise<RunResult>;
  /** `helm args` against this cluster, with HELM_CACHE_HOME, HELM_CONFIG_HOME and HELM_DATA_HOME in the temp dir. */
  helm(args: string[], opts?: RunOptions): Promise<RunResult>;
  /**
   * One HTTPS call to the API server, as the cluster admin (client certificate) or, with `token`,
   * as whoever that bearer token is (a ServiceAccount's, from the TokenRequest API). A PATCH is a
   * JSON merge patch. Resolves with the status code and the parsed JSON body (or its text).
   */
  request(method: string, urlPath: string, body?: unknown, opts?: { token?: string }): Promise<{ status: number; body: unknown }>;
  /** Creates a Node annotated `kwok.x-k8s.io/node: fake` (needs kwok) and by default waits until it is Ready. */
  addFakeNode(name: string, opts?: FakeNodeOptions): Promise<void>;
  /** The output of one component so far (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok), bounded. */
  output(component: string): string;
  /** Stops every component (clients, then the API server, then etcd), releases the ports, removes the temp dir. Safe to call twice. */
  stop(): Promise<void>;
}

const REGISTRY = path.join(os.tmpdir(), 'loam-kube', 'clusters');
const OUTPUT_LIMIT = 256 * 1024;
const ERROR_TAIL = 4 * 1024;

// ---------------------------------------------------------------------------------------------------------
// small utilities

function run(cmd: string, args: string[], opts: RunOptions & { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      stderr += `\n[harness: killed after ${timeoutMs} ms]`;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`${cmd} ${args.join(' ')}: ${String(e)}`));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      const r = { code: code ?? (signal ? 128 : 1), stdout, stderr };
      if (r.code !== 0 && opts.check !== false) {
        reject(new Error(`${path.basename(cmd)} ${args.join(' ')} exited ${r.code}\n--- stdout ---\n${stdout.slice(-ERROR_TAIL)}\n--- stderr ---\n${stderr.slice(-ERROR_TAIL)}`));
      } else resolve(r);
    });
    child.stdin.on('error', () => undefined); // EPIPE when it exits without reading its input
    child.stdin.end(opts.input ?? '');
  });
}

// ---------------------------------------------------------------------------------------------------------
// certificates

const OPENSSL_CNF = `[req]
distinguished_name = dn
prompt = no
[dn]
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, IP:10.0.0.1, DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local
authorityKeyIdentifier = keyid
[v3_client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
`;

interface Pki {
  caCrt: string;
  caKey: string;
  serverCrt: string;
  serverKey: string;
  adminCrt: string;
  adminKey: string;
  saKey: string;
  saPub: string;
}

async function makePki(dir: string): Promise<Pki> {
  fs.mkdirSync(dir, { recursive: true });
  const f = (n: string) => path.join(dir, n);
  const cnf = f('openssl.cnf');
  fs.writeFileSync(cnf, OPENSSL_CNF);
  const openssl = (args: string[]) => run('openssl', args, { timeoutMs: 30_000 });
  const serial = () => `0x${Math.floor(Math.random() * 2 ** 48).toString(16)}`;
  const pki: Pki = {
    caCrt: f('ca.crt'),
    caKey: f('ca.key'),
    serverCrt: f('apiserver.crt'),
    serverKey: f('apiserver.key'),
    adminCrt: f('admin.crt'),
    adminKey: f('admin.key'),
    saKey: f('sa.key'),
    saPub: f('sa.pub'),
  };
  // ECDSA P-256 for the certificates (instant; RSA keys cost ~0.5 s each on a busy machine), RSA for
  // the service-account key pair.
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1'];
  await openssl(['req', '-x509', '-new', '-config', cnf, '-extensions', 'v3_ca', ...ec, '-nodes', '-keyout', pki.caKey, '-out', pki.caCrt, '-days', '7', '-subj', '/CN=loam-test-ca', '-set_serial', serial()]);
  const leaf = async (name: string, subj: string, ext: string, crt: string, key: string) => {
    const csr = f(`${name}.csr`);
    await openssl(['req', '-new', '-config', cnf, ...ec, '-nodes', '-keyout', key, '-out', csr, '-subj', subj]);
    await openssl(['x509', '-req', '-in', csr, '-CA', pki.caCrt, '-CAkey', pki.caKey, '-set_serial', serial(), '-days', '7', '-extfile', cnf, '-extensions', ext, '-out', crt]);
  };
  await Promise.all([
    leaf('apiserver', '/CN=kube-apiserver', 'v3_server', pki.serverCrt, pki.serverKey),
    leaf('admin', '/O=system:masters/CN=loam-test-admin', 'v3_client', pki.adminCrt, pki.adminKey),
    (async () => {
      await openssl(['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', pki.saKey]);
      await openssl(['pkey', '-in', pki.saKey, '-pubout', '-out', pki.saPub]);
    })(),
  ]);
  return pki;
}

function kubeconfigYaml(server: string, pki: Pki): string {
  return `apiVersion: v1
kind: Config
clusters:
- name: loam-test
  cluster:
    server: ${server}
    certificate-authority: ${pki.caCrt}
users:
- name: admin
  user:
    client-certificate: ${pki.adminCrt}
    client-key: ${pki.adminKey}
contexts:
- name: loam-test
  context:
    cluster: loam-test
    user: admin
current-context: loam-test
`;
}

// ---------------------------------------------------------------------------------------------------------
// processes, and leftovers of workers that died without cleaning up

const allChildren = new Children();

class Component {
  child: ChildProcess;
  exited: Promise<void>;
  private buf = '';

  constructor(
    readonly name: string,
    bin: string,
    args: string[],
    logFile: string,
  ) {
    // etcd reads ETCD_* and kwok KWOK_* variables as flags: none of the caller's leak in.
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!/^(ETCD|KWOK)_/.test(k) && k !== 'KUBECONFIG') env[k] = v;
    const log = fs.openSync(logFile, 'a');
    let closed = false;
    this.child = spawn(bin, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    allChildren.add(this.child);
    const take = (d: Buffer) => {
      if (!closed) fs.writeSync(log, d);
      this.buf += d.toString();
      if (this.buf.length > OUTPUT_LIMIT) this.buf = this.buf.slice(-OUTPUT_LIMIT);
    };
    this.child.stdout!.on('data', take);
    this.child.stderr!.on('data', take);
    this.exited = new Promise<void>((resolve) => {
      const done = (how: string) => {
        if (closed) return;
        closed = true;
        this.buf += `\n=== ${this.name} ${how} ===\n`;
        allChildren.delete(this.child);
        fs.closeSync(log);
        resolve();
      };
      this.child.once('error', (e) => done(`could not start: ${String(e)}`));
      // 'close', not 'exit': by then its output is all read.
      this.child.once('close', (code, signal) => done(`exited code=${code} signal=${signal}`));
    });
  }

  output(): string {
    return this.buf;
  }

  running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null && allChildren.has(this.child);
  }

  tail(): string {
    return `--- ${this.name} (pid ${this.child.pid}), last ${ERROR_TAIL} chars ---\n${this.buf.slice(-ERROR_TAIL)}`;
  }

  /** SIGTERM, SIGKILL after `graceMs`; resolves once it has exited. */
  async stop(graceMs = 5000): Promise<void> {
    if (!this.running()) return this.exited;
    this.child.kill('SIGTERM');
    let t: NodeJS.Timeout | undefined;
    const late = await Promise.race([this.exited.then(() => false), new Promise<boolean>((r) => (t = setTimeout(() => r(true), graceMs)))]);
    clearTimeout(t);
    if (late) {
      this.buf += `\n[harness: no exit ${graceMs} ms after SIGTERM, sending SIGKILL]\n`;
      this.child.kill('SIGKILL');
      await this.exited;
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// the cluster

const liveClusters = new Set<Cluster>();

class Cluster implements KubeCluster {
  readonly kubeconfig: string;
  readonly server: string;
  readonly caFile: string;
  readonly etcdEndpoint: string;
  readonly components = new Map<string, Component>();
  private stopped = false;
  private readonly recordFile: string;
  private readonly helmEnv: NodeJS.ProcessEnv;
  private readonly kubectlEnv: NodeJS.ProcessEnv;

  constructor(
    readonly dir: string,
    readonly tools: KubeTools,
    readonly pki: Pki,
    private readonly ports: { apiserver: number; etcdClient: number; etcdPeer: number },
    private readonly kwok: boolean,
  ) {
    this.server = `https://127.0.0.1:${ports.apiserver}`;
    this.etcdEndpoint = `http://127.0.0.1:${ports.etcdClient}`;
    this.caFile = pki.caCrt;
    this.kubeconfig = path.join(dir, 'admin.kubeconfig');
    fs.writeFileSync(this.kubeconfig, kubeconfigYaml(this.server, pki), { mode: 0o600 });
    this.recordFile = path.join(REGISTRY, `${path.basename(dir)}.json`);
    // kubectl's discovery cache and helm's homes in the temp dir: nothing is shared with ~/.kube or
    // ~/.cache/helm, nor between clusters (each has its own CA and port).
    const home = (n: string) => {
      const d = path.join(dir, n);
      fs.mkdirSync(d, { recursive: true });
      return d;
    };
    this.kubectlEnv = { ...process.env, KUBECONFIG: this.kubeconfig, KUBECACHEDIR: home('kube-cache') };
    this.helmEnv = {
      ...this.kubectlEnv,
      HELM_CACHE_HOME: home('helm/cache'),
      HELM_CONFIG_HOME: home('helm/config'),
      HELM_DATA_HOME: home('helm/data'),
      HELM_NAMESPACE: 'default',
    };
  }

  start(name: string, bin: string, args: string[]): Component {
    const c = new Component(name, bin, args, path.join(this.dir, 'logs', `${name}.log`));
    this.components.set(name, c);
    this.writeRecord();
    return c;
  }

  private writeRecord(): void {
    writeLeftoverRecord(this.recordFile, { dir: this.dir, pids: [...this.components.values()].map((c) => c.child.pid).filter((p): p is number => p !== undefined), ports: Object.values(this.ports) });
  }

  detail = (): string => [...this.components.values()].map((c) => c.tail()).join('\n');

  /** Waits for `cond`, rejecting early when any component has exited. */
  async wait<T>(cond: () => T | Promise<T>, what: string, timeoutMs: number): Promise<T> {
    return pollUntil(
      async () => {
        for (const c of this.components.values()) if (!c.running()) throw new Error(`${c.name} exited`);
        return cond();
      },
      what,
      timeoutMs,
      { detail: this.detail, everyMs: 100 },
    ).catch((e: unknown) => {
      const dead = [...this.components.values()].find((c) => !c.running());
      if (dead) throw new Error(`${dead.name} exited while waiting for ${what}\n${this.detail()}`);
      throw e;
    });
  }

  output(component: string): string {
    return this.components.get(component)?.output() ?? '';
  }

  kubectl(args: string[], opts: RunOptions = {}): Promise<RunResult> {
    return run(this.tools.kubectl, ['--kubeconfig', this.kubeconfig, '--cache-dir', this.kubectlEnv.KUBECACHEDIR!, ...args], { ...opts, env: this.kubectlEnv });
  }

  helm(args: string[], opts: RunOptions = {}): Promise<RunResult> {
    return run(this.tools.helm, args, { ...opts, env: this.helmEnv, cwd: this.dir });
  }

  request(method: string, urlPath: string, body?: unknown, opts: { token?: string } = {}): Promise<{ status: number; body: unknown }> {
    const payload = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
    const contentType = method === 'PATCH' ? 'application/merge-patch+json' : 'application/json';
    const who = opts.token === undefined ? { cert: fs.readFileSync(this.pki.adminCrt), key: fs.readFileSync(this.pki.adminKey) } : {};
    return new Promise((resolve, reject) => {
      const req = https.request(
        `${this.server}${urlPath}`,
        {
          method,
          ca: fs.readFileSync(this.pki.caCrt),
          ...who,
          headers: {
            ...(opts.token === undefined ? {} : { authorization: `Bearer ${opts.token}` }),
            ...(payload === undefined ? {} : { 'content-type': contentType, 'content-length': Buffer.byteLength(payload) }),
          },
          timeout: 10_000,
        },
        (res) => {
          let text = '';
          res.on('data', (d: Buffer) => (text += d.toString()));
          res.on('end', () => {
            let parsed: unknown = text;
            try {
              parsed = JSON.parse(text);
            } catch {
              /* not JSON (e.g. /readyz says "ok") */
            }
            resolve({ status: res.statusCode ?? 0, body: parsed });
          });
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error(`${method} ${urlPath}: no answer within 10 s`)));
      req.on('error', reject);
      req.end(payload);
    });
  }

  async addFakeNode(name: string, opts: FakeNodeOptions = {}): Promise<void> {
    if (!this.kwok) throw new Error('addFakeNode needs a cluster started with kwok');
    const resources = { cpu: opts.cpu ?? '32', memory: opts.memory ?? '256Gi', pods: String(opts.pods ?? 110) };
    const node = {
      apiVersion: 'v1',
      kind: 'Node',
      metadata: {
        name,
        annotations: { 'kwok.x-k8s.io/node': 'fake', 'node.alpha.kubernetes.io/ttl': '0' },
        labels: {
          'kubernetes.io/arch': 'amd64',
          'kubernetes.io/os': 'linux',
          'kubernetes.io/hostname': name,
          'node-role.kubernetes.io/agent': '',
          type: 'kwok',
          ...opts.labels,
        },
      },
      status: {
        allocatable: resources,
        capacity: resources,
        nodeInfo: { architecture: 'amd64', operatingSystem: 'linux', kubeletVersion: 'fake', kubeProxyVersion: 'fake' },
      },
    };
    const r = await this.request('POST', '/api/v1/nodes', node);
    if (r.status !== 201) throw new Error(`creating Node ${name}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
    if (opts.waitReady !== false) await this.waitNodeReady(name, 60_000);
  }

  async waitNodeReady(name: string, timeoutMs: number): Promise<void> {
    await this.wait(
      async () => {
        const r = await this.request('GET', `/api/v1/nodes/${name}`);
        const conds = (r.body as { status?: { conditions?: { type: string; status: string }[] } }).status?.conditions ?? [];
        return conds.some((c) => c.type === 'Ready' && c.status === 'True');
      },
      `fake Node ${name} to be Ready`,
      timeoutMs,
    );
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    liveClusters.delete(this);
    const get = (n: string) => this.components.get(n);
    // Clients first, then the API server while its etcd still answers (else it retries etcd for ~15 s), then etcd.
    await Promise.all(['kwok', 'kube-scheduler', 'kube-controller-manager'].map((n) => get(n)?.stop()));
    await get('kube-apiserver')?.stop(10_000);
    await get('etcd')?.stop();
    fs.rmSync(this.dir, { recursive: true, force: true });
    releasePorts(Object.values(this.ports));
    fs.rmSync(this.recordFile, { force: true });
  }
}

async function etcdHealthy(endpoint: string): Promise<boolean> {
  try {
    const res = await fetch(`${endpoint}/health`, { signal: AbortSignal.timeout(1000) });
    const body = (await res.json()) as { health?: string | boolean };
    return res.ok && String(body.health) === 'true';
  } catch {
    return false;
  }
}

/**
 * Starts a control plane in a fresh temp dir on reserved loopback ports; see the file comment.
 * Rejects with every component's output if anything fails to come up, leaving nothing behind.
 */
export async function startKube(opts: KubeStartOptions = {}): Promise<KubeCluster> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const withKwok = opts.kwok !== undefined && opts.kwok !== false;
  const nodes = opts.nodes ?? (withKwok ? 1 : 0);
  if (nodes > 0 && !withKwok) throw new Error('fake Nodes need kwok: startKube({ kwok: true, nodes })');
  const tools = await ensureKubeTools();
  reapDeadOwners(REGISTRY);
  const [apiserver, etcdClient, etcdPeer] = (await reservePorts(3)) as [number, number, number];
  const ports = { apiserver, etcdClient, etcdPeer };
  let dir: string | undefined;
  let cluster: Cluster | undefined;
  try {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'loam-kube-'));
    fs.mkdirSync(path.join(dir, 'logs'));
    const pki = await makePki(path.join(dir, 'pki'));
    cluster = new Cluster(dir, tools, pki, ports, withKwok);
    liveClusters.add(cluster);
    const c = cluster;

    const etcdUrl = c.etcdEndpoint;
    const peerUrl = `http://127.0.0.1:${etcdPeer}`;
    c.start('etcd', tools.etcd, [
      '--name', 'kube-etcd',
      '--data-dir', path.join(dir, 'etcd'),
      '--listen-client-urls', etcdUrl,
      '--advertise-client-urls', etcdUrl,
      '--listen-peer-urls', peerUrl,
      '--initial-advertise-peer-urls', peerUrl,
      '--initial-cluster', `kube-etcd=${peerUrl}`,
      '--initial-cluster-state', 'new',
      '--unsafe-no-fsync',
      '--log-level', 'warn',
    ]);
    await c.wait(() => etcdHealthy(etcdUrl), 'etcd 3.6 to be healthy', timeoutMs);

    c.start('kube-apiserver', tools.kubeApiserver, [
      `--etcd-servers=${etcdUrl}`,
      '--bind-address=127.0.0.1',
      '--advertise-address=127.0.0.1',
      `--secure-port=${apiserver}`,
      // 1.37 refuses a loopback advertise address for the `kubernetes` Service's endpoints otherwise.
      '--endpoint-reconciler-type=none',
      `--tls-cert-file=${pki.serverCrt}`,
      `--tls-private-key-file=${pki.serverKey}`,
      `--client-ca-file=${pki.caCrt}`,
      '--authorization-mode=RBAC',
      '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
      `--service-account-key-file=${pki.saPub}`,
      `--service-account-signing-key-file=${pki.saKey}`,
      '--service-cluster-ip-range=10.0.0.0/24',
      '--allow-privileged=true',
      '--profiling=false',
    ]);
    // The clients start at once: they wait for the API server themselves, so their start-up overlaps its own.
    if (opts.controllerManager !== false) {
      c.start('kube-controller-manager', tools.kubeControllerManager, [
        `--kubeconfig=${c.kubeconfig}`,
        '--leader-elect=false',
        '--secure-port=0',
        `--service-account-private-key-file=${pki.saKey}`,
        `--root-ca-file=${pki.caCrt}`,
        '--use-service-account-credentials=true',
        `--cluster-signing-cert-file=${pki.caCrt}`,
        `--cluster-signing-key-file=${pki.caKey}`,
        '--profiling=false',
      ]);
    }
    if (opts.scheduler !== false) {
      c.start('kube-scheduler', tools.kubeScheduler, [`--kubeconfig=${c.kubeconfig}`, '--leader-elect=false', '--secure-port=0', '--profiling=false']);
    }
    if (withKwok) {
      const pods = typeof opts.kwok === 'object' && opts.kwok.pods === true;
      c.start('kwok', tools.kwok, [
        `--kubeconfig=${c.kubeconfig}`,
        `--config=${pods ? tools.kwokStages.nodesAndPods : tools.kwokStages.nodes}`,
        '--manage-all-nodes=false',
        '--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake',
        '--cidr=10.244.0.0/16',
        '--node-ip=127.0.0.1',
        // Leases are the heartbeat (the heartbeat stage itself runs every ~10 min): without them the
        // node lifecycle controller marks the fake Nodes unreachable after ~50 s and evicts their Pods.
        '--node-lease-duration-seconds=40',
      ]);
    }
    await c.wait(
      async () => {
        const r = await c.request('GET', '/readyz');
        return r.status === 200 && r.body === 'ok';
      },
      'kube-apiserver /readyz',
      timeoutMs,
    );

    for (let i = 0; i < nodes; i++) await c.addFakeNode(`kwok-node-${i}`, { waitReady: false });
    if (opts.controllerManager !== false) {
      // The ServiceAccount controller is running (and Pods in `default` can be admitted).
      await c.wait(async () => (await c.request('GET', '/api/v1/namespaces/default/serviceaccounts/default')).status === 200, 'the default ServiceAccount (kube-controller-manager)', timeoutMs);
    }
    for (let i = 0; i < nodes; i++) await c.waitNodeReady(`kwok-node-${i}`, timeoutMs);
    return c;
  } catch (e) {
    if (cluster) await cluster.stop().catch(() => undefined);
    else {
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
      releasePorts(Object.values(ports));
    }
    // Which directory this start used (and removed), so a test can check exactly that one: other
    // test files start clusters of their own at the same time.
    if (e instanceof Error && dir) Object.assign(e, { kubeDir: dir });
    throw e;
  }
}

/** Stops every cluster this process started and has not stopped yet (test/setup.ts runs it after each file). */
export async function cleanupKube(): Promise<void> {
  const errors: unknown[] = [];
  for (const c of [...liveClusters]) await c.stop().catch((e: unknown) => void errors.push(e));
  if (errors.length) throw errors[0];
}
