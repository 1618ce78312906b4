/**
 * A test harness that plays the kubelet for Pods bound to kwok's fake Nodes (kube.ts started with
 * `kwok: true` and node stages only, so Pods are bound and stay Pending): it runs each Pod's real
 * program as a child process on a loopback address of its own and reports the Pod through the real
 * API server. Never a fake process, never a mock API.
 *
 * `startKubelet(kube, opts)` watches the Pods whose `spec.nodeName` is one of its Nodes (default:
 * every Node annotated `kwok.x-k8s.io/node: fake`), and for cluster DNS every Pod, Service and
 * EndpointSlice; it lists them every `resyncMs` too, since watches can stall.
 * For each new Pod it:
 * - gives it an address 127.0.0.X (2 ≤ X ≤ 254, unique among live Pods of every harness on the
 *   machine: a file per address next to ports.ts's, holding the owner's pid); `hostNetwork` Pods get
 *   127.0.0.1;
 * - prepares its volumes as directories: a PVC (or generic ephemeral volume) is a directory per PVC,
 *   `<dir>/volumes/<namespace>/<claim>-<pvc uid>` (the PV's own `hostPath`/`local` path when that lies
 *   under the harness's dir), so a Pod recreated with the same PVC finds its data and a deleted and
 *   recreated PVC starts empty; emptyDir a directory of the Pod's; Secret, ConfigMap, downwardAPI and
 *   projected volumes (serviceAccountToken through the TokenRequest API included) are written out as
 *   files (with `items`, `defaultMode`/`mode`); a `hostPath` is `<dir>/hostpath/<path>`, never the
 *   machine's own path. With `provisionVolumes` (default on) it is also the cluster's storage: for
 *   every Pending PVC it creates a PV pre-bound to it (`claimRef`, label `kubelet-harness.loam.dev/pv`,
 *   reclaim policy Retain) so the PV controller binds it and the scheduler can place the Pod; when
 *   the PVC is gone it deletes that PV and its directory;
 * - resolves each container's environment as a kubelet does: `envFrom` (ConfigMaps, Secrets, with
 *   `prefix`), then `env` in order (`value` with `$(VAR)` expansion and `$$` escapes, `fieldRef` for
 *   metadata.name/namespace/uid/labels['k']/annotations['k'], spec.nodeName, spec.serviceAccountName,
 *   status.podIP(s), status.hostIP(s); `resourceFieldRef`; `secretKeyRef`/`configMapKeyRef` read
 *   through the API, `optional` honoured); a missing Secret or ConfigMap leaves the container waiting
 *   with `CreateContainerConfigError` and is retried, like a kubelet. Then `command`/`args` are
 *   expanded with that environment;
 * - rewrites mount paths (the one deviation a test must know): every occurrence of a volumeMount's
 *   `mountPath` in the expanded args, env values and `workingDir`, at a path boundary (not preceded
 *   by a path character, followed by `/`, the end, or a non-path character), becomes the real
 *   directory (plus `subPath`/`subPathExpr`). `--data /data`, `--data=/data/x` and `LOAM_DATA=/data`
 *   all work; a path the program has compiled in (e.g. /var/run/secrets/...) cannot be rewritten;
 * - runs the program: an image whose name contains `loam` runs this repository's CLI
 *   (`node node/bin/loam.js <args>`; the image's entrypoint is `loam`, so a `command` must start with
 *   `loam` or a path ending in `/loam`); an image whose name contains `etcd` runs Debian's etcd
 *   (`ensureEtcd()` of etcd.ts; entrypoint `etcd`), its ETCD_* environment being the container's own
 *   (ETCD_UNSUPPORTED_ARCH added off amd64/ppc64le); anything else (or a shell `command`) fails the
 *   Pod with reason `UnsupportedImage`, unless the `runImage` option knows it. A process gets only the
 *   container's environment plus PATH, HOME (a directory of the container's), HOSTNAME,
 *   KUBERNETES_SERVICE_HOST/PORT (the real API server) and KUBELET_HARNESS_DIR (how a later harness
 *   recognises, and kills, processes a dead worker left behind); never the test process's LOAM_* or
 *   ETCD_* variables. Its cwd is `workingDir` when that is under a mount, else a directory of the
 *   container's. Init containers run first, one at a time, each to a zero exit;
 * - gives it cluster DNS (option `dns`, default on) as a hosts file: every process (exec probes too)
 *   runs in a mount namespace of its own (`unshare --mount`, `sh -c 'mount --bind <file> /etc/hosts;
 *   exec "$@"'`: unshare and sh exec, so the pid, signals and exit code are the program's own), and
 *   glibc (Node's dns.lookup) and Go's resolver (etcd) read /etc/hosts before DNS; names the file
 *   lacks fall through to the machine's /etc/resolv.conf. The Pod's file (rules in cluster-dns.ts) holds
 *   the machine's lines, what a kubelet writes for the Pod itself (its hostname, hostAliases), and
 *   per Service `<svc>.<ns>.svc(.cluster.local)` (plus the search-path short forms) → its endpoints,
 *   and for a headless Service `<hostname>.<svc>.<ns>.svc(.cluster.local)` → that StatefulSet Pod.
 *   Endpoints are the matching Pods that are Ready (all of them with `publishNotReadyAddresses`),
 *   computed from the watched Pods and Services: the API server refuses loopback addresses in
 *   EndpointSlices, so the controller's slices of these Pods stay empty. The deviation: there is no
 *   Service virtual IP, a ClusterIP Service's name resolves to its endpoints' Pod IPs (so `port` must
 *   equal `targetPort`). The file is rewritten in place on every change (a bind mount pins its inode;
 *   one write of the whole content; a new mtime each time); Go re-reads /etc/hosts at most every
 *   5 s, so a test waits for a name to resolve with a deadline. The test process itself does not
 *   see these names. It needs root (CAP_SYS_ADMIN): startKubelet fails with a clear error
 *   otherwise; `dns: false` runs processes as they are. hostNetwork Pods keep the machine's
 *   /etc/hosts (plus cluster names with dnsPolicy ClusterFirstWithHostNet).
 *
 * It patches `pods/status` (strategic merge, the Pod's uid as a precondition) whenever what it
 * reports changes: phase, podIP(s), hostIP(s), startTime, conditions PodReadyToStartContainers,
 * Initialized, ContainersReady, Ready and PodScheduled with transition times, and a status per
 * (init) container (`running`/`terminated` with exit code/`waiting` with CrashLoopBackOff, `ready`,
 * `started`, `restartCount`, `lastState`). Readiness: a container's `readinessProbe` (grpc, httpGet,
 * tcpSocket, or exec of a program the harness can run) is probed on the Pod's address with the probe's
 * thresholds; without one the container is Ready once its process runs. `startupProbe` and
 * `livenessProbe` work too (a liveness failure restarts the container). Probe periods are capped at
 * `maxProbePeriodMs` (default 1 s; a kubelet's default is 10 s): tests see Ready sooner.
 *
 * When a process exits, its container is `terminated` with its exit code; restartPolicy Always
 * (StatefulSets, Deployments, bare Pods by default) restarts it with a doubling backoff
 * (`restartBackoffMs`, default 1 s, capped at `maxRestartBackoffMs`, default 10 s; a kubelet's are
 * 10 s and 5 min) and counts restarts; OnFailure restarts non-zero exits; Never leaves it; once no
 * container will run again the Pod is Succeeded (all exited 0) or Failed.
 *
 * On `metadata.deletionTimestamp` it sends SIGTERM to every process, waits up to the Pod's
 * `deletionGracePeriodSeconds` (else `terminationGracePeriodSeconds`, else 30), sends SIGKILL, then
 * deletes the Pod with grace period 0 (uid precondition). A Pod that vanishes without that (a forced
 * delete) has its processes stopped the same way. It records Events (Started, Killing, BackOff,
 * Unhealthy, Failed) as `kubelet` of the Node.
 *
 * `processOf(pod)` gives a Pod's address, pids, argv, env and logs; `kill(pod, signal)` simulates a
 * crash; `stop()` SIGKILLs every process, stops the watches, releases the addresses and removes the
 * temp dir (Pods stay in the API as they were: stop the harness before, or with, the cluster).
 * `cleanupKubelet()` (test/setup.ts runs it after every file) stops whatever a test left running;
 * an exit hook SIGKILLs the children of a worker that exits without it; a start reaps what a
 * killed worker left behind.
 *
 * Not done: Service virtual IPs (no kube-proxy: a Service name resolves to Pod IPs, see above),
 * ExternalName Services, Secret/ConfigMap volume updates after start, preStop/postStart hooks,
 * sidecar (restartable init) containers, resource limits, securityContext and readOnly mounts (not
 * enforced), image pulls (the image name only selects the program), Pod readiness gates.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { hostsFile, type DnsEndpointSlice, type DnsService } from './cluster-dns.js';
import { ensureEtcd } from './etcd.js';
import type { KubeCluster } from './kube.js';
import { ROOT } from './node-process.js';
import { pidAlive, readOr, tryExclusiveFile } from './ports.js';

// ---------------------------------------------------------------------------------------------------------
// public API

export interface KubeletOptions {
  /** The Nodes whose Pods this harness runs. Default: every Node annotated `kwok.x-k8s.io/node: fake` (re-read at each resync). */
  nodes?: string[];
  /** Period of the full list of Pods (and PVCs, PVs, Nodes, Services, EndpointSlices) besides the watches (default 1000 ms). */
  resyncMs?: number;
  /** Probe periods are min(periodSeconds, this) (default 1000 ms). */
  maxProbePeriodMs?: number;
  /** First restart backoff (default 1000 ms), doubling per consecutive crash up to `maxRestartBackoffMs` (default 10 000 ms). */
  restartBackoffMs?: number;
  maxRestartBackoffMs?: number;
  /** Create a pre-bound PV for every Pending PVC, delete it (and its directory) when its PVC is gone (default true). */
  provisionVolumes?: boolean;
  /**
   * Runs an image the harness does not know (checked before the loam/etcd rules): gets the image,
   * the container's command and args (expanded, mount paths rewritten), returns the program or
   * undefined to fall through to the built-in rules.
   */
  runImage?: (c: { image: string; command?: string[]; args: string[]; pod: PodObject; container: string }) => Program | undefined;
  /**
   * Cluster DNS (default true): each Pod process runs in a mount namespace of its own with the Pod's
   * hosts file (cluster-dns.ts) over /etc/hosts. Needs root (CAP_SYS_ADMIN): startKubelet fails if it
   * cannot; `false` runs processes as they are (no `svc` names) for a test that does not need them.
   */
  dns?: boolean;
}

export interface Program {
  /** The executable's absolute path. */
  file: string;
  args: string[];
  /** Added to the container's environment unless it sets the same names. */
  env?: Record<string, string>;
}

/** "name" (namespace default), "namespace/name", { namespace, name } or a Pod object. */
export type PodRef = string | { namespace?: string; name: string } | { metadata?: { namespace?: string; name?: string } };

export interface ContainerProcess {
  name: string;
  image: string;
  init: boolean;
  /** The current process's pid, if one runs. */
  pid: number | undefined;
  running: boolean;
  ready: boolean;
  restarts: number;
  /** The last exit, if any. */
  exitCode: number | undefined;
  signal: string | undefined;
  /** The program and its arguments as run (argv[0] is the executable; the cluster-DNS wrapper execs into it and is not listed). */
  argv: string[];
  env: Record<string, string>;
  cwd: string;
  /** Everything it printed (stdout and stderr, every run), bounded to the last 1 MiB. */
  logs: string;
  logFile: string;
}

export interface PodProcess {
  namespace: string;
  name: string;
  uid: string;
  node: string;
  /** The Pod's loopback address (status.podIP). */
  ip: string;
  address: string;
  phase: string;
  terminating: boolean;
  /** Volume name → the directory it maps to. */
  volumes: Record<string, string>;
  /** Mount path → real directory, per container. */
  mounts: Record<string, Record<string, string>>;
  containers: ContainerProcess[];
  /** The first main container's: pid, logs. */
  pid: number | undefined;
  logs: string;
}

export interface Kubelet {
  /** The harness's temp dir: volumes/, pods/, hostpath/. */
  dir: string;
  /** The Nodes it currently serves. */
  nodes(): string[];
  /** The live Pod of that name (a terminating one only if there is no other), or undefined. */
  processOf(pod: PodRef): PodProcess | undefined;
  /** Every Pod it runs. */
  pods(): PodProcess[];
  /**
   * Sends `signal` (default SIGKILL) to the process of `container` (default the first main one);
   * for SIGKILL/SIGTERM/SIGINT/SIGQUIT resolves once that process has exited (what follows is up to
   * the restart policy). Returns the pid signalled.
   */
  kill(pod: PodRef, signal?: NodeJS.Signals, container?: string): Promise<number>;
  /** Waits until the Pod has a running process (of `container`) other than `notPid`, and of another uid than `notUid`. */
  waitProcess(pod: PodRef, opts?: { timeoutMs?: number; notPid?: number; notUid?: string; container?: string }): Promise<PodProcess>;
  /** The directory of a PVC (namespace default), once a Pod mounted it or the harness provisioned it. */
  volumeDir(claim: string, namespace?: string): string | undefined;
  /** The harness's own log (spawns, exits, probe flips, status patches, API errors), for failure messages. */
  log(): string;
  /** SIGKILLs every process, stops the watches, releases the addresses, removes the temp dir. Safe twice. */
  stop(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------------------
// the Kubernetes objects it reads (the fields it uses)

interface ObjectMeta {
  name: string;
  namespace?: string;
  uid: string;
  resourceVersion?: string;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  deletionGracePeriodSeconds?: number;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
interface KeyRef {
  name: string;
  key: string;
  optional?: boolean;
}
interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: {
    fieldRef?: { fieldPath: string };
    resourceFieldRef?: ResourceFieldRef;
    configMapKeyRef?: KeyRef;
    secretKeyRef?: KeyRef;
  };
}
interface ResourceFieldRef {
  containerName?: string;
  resource: string;
  divisor?: string | number;
}
interface EnvFrom {
  prefix?: string;
  configMapRef?: { name: string; optional?: boolean };
  secretRef?: { name: string; optional?: boolean };
}
interface Probe {
  grpc?: { port: number; service?: string };
  httpGet?: { path?: string; port: number | string; host?: string; scheme?: string; httpHeaders?: { name: string; value: string }[] };
  tcpSocket?: { port: number | string; host?: string };
  exec?: { command?: string[] };
  initialDelaySeconds?: number;
  periodSeconds?: number;
  timeoutSeconds?: number;
  successThreshold?: number;
  failureThreshold?: number;
  terminationGracePeriodSeconds?: number;
}
interface VolumeMount {
  name: string;
  mountPath: string;
  subPath?: string;
  subPathExpr?: string;
}
interface Container {
  name: string;
  image?: string;
  command?: string[];
  args?: string[];
  workingDir?: string;
  env?: EnvVar[];
  envFrom?: EnvFrom[];
  ports?: { name?: string; containerPort: number }[];
  volumeMounts?: VolumeMount[];
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  startupProbe?: Probe;
  resources?: { limits?: Record<string, string | number>; requests?: Record<string, string | number> };
  restartPolicy?: string;
}
interface KeyToPath {
  key: string;
  path: string;
  mode?: number;
}
interface DownwardItem {
  path: string;
  fieldRef?: { fieldPath: string };
  resourceFieldRef?: ResourceFieldRef;
  mode?: number;
}
interface Projection {
  secret?: { name: string; items?: KeyToPath[]; optional?: boolean };
  configMap?: { name: string; items?: KeyToPath[]; optional?: boolean };
  downwardAPI?: { items?: DownwardItem[] };
  serviceAccountToken?: { path: string; audience?: string; expirationSeconds?: number };
  [other: string]: unknown;
}
interface Volume {
  name: string;
  persistentVolumeClaim?: { claimName: string };
  ephemeral?: unknown;
  emptyDir?: unknown;
  hostPath?: { path: string };
  secret?: { secretName: string; items?: KeyToPath[]; defaultMode?: number; optional?: boolean };
  configMap?: { name: string; items?: KeyToPath[]; defaultMode?: number; optional?: boolean };
  downwardAPI?: { items?: DownwardItem[]; defaultMode?: number };
  projected?: { sources?: Projection[]; defaultMode?: number };
  [other: string]: unknown;
}
interface Condition {
  type: string;
  status: string;
  lastTransitionTime?: string;
  lastProbeTime?: string | null;
  reason?: string;
  message?: string;
}
interface ContainerStatus {
  name: string;
  ready?: boolean;
  started?: boolean;
  restartCount?: number;
  state?: Record<string, { exitCode?: number; reason?: string } | undefined>;
}
export interface PodObject {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
  spec: {
    nodeName?: string;
    containers: Container[];
    initContainers?: Container[];
    volumes?: Volume[];
    restartPolicy?: string;
    terminationGracePeriodSeconds?: number;
    hostNetwork?: boolean;
    hostname?: string;
    subdomain?: string;
    dnsPolicy?: string;
    hostAliases?: { ip: string; hostnames?: string[] }[];
    serviceAccountName?: string;
  };
  status?: {
    phase?: string;
    reason?: string;
    podIP?: string;
    startTime?: string;
    conditions?: Condition[];
    containerStatuses?: ContainerStatus[];
    initContainerStatuses?: ContainerStatus[];
  };
}
interface PvcObject {
  metadata: ObjectMeta;
  spec: {
    volumeName?: string;
    storageClassName?: string | null;
    accessModes?: string[];
    volumeMode?: string;
    resources?: { requests?: Record<string, string> };
    selector?: { matchLabels?: Record<string, string> };
  };
  status?: { phase?: string };
}
interface PvObject {
  metadata: ObjectMeta;
  spec: { claimRef?: { namespace?: string; name?: string; uid?: string }; hostPath?: { path: string }; local?: { path: string } };
  status?: { phase?: string };
}
interface NodeObject {
  metadata: ObjectMeta;
  status?: { addresses?: { type: string; address: string }[]; allocatable?: Record<string, string> };
}
interface ListOf<T> {
  metadata: { resourceVersion: string };
  items: T[];
}

// ---------------------------------------------------------------------------------------------------------
// small utilities

const REGISTRY = path.join(os.tmpdir(), 'loam-kubelet');
const HARNESSES_DIR = path.join(REGISTRY, 'harnesses');
const IPS_DIR = path.join(REGISTRY, 'ips');
const LOG_LIMIT = 1024 * 1024;
const NOTES_LIMIT = 2000;
const LOAM_BIN = path.join(ROOT, 'node/bin/loam.js');
const MARKER = 'KUBELET_HARNESS_DIR';
export const PV_LABEL = 'kubelet-harness.loam.dev/pv';

const nowIso = () => new Date().toISOString().replace(/\.\d+Z$/, 'Z');

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Resolves with 'late' after `ms` unless `p` settles first. */
async function within<T>(p: Promise<T>, ms: number): Promise<T | 'late'> {
  let t: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<'late'>((r) => (t = setTimeout(() => r('late'), ms)))]);
  } finally {
    clearTimeout(t);
  }
}

/** Resource versions are opaque strings to clients, but numeric on every API server built on etcd. */
function newerOrSame(a: { resourceVersion?: string }, b: { resourceVersion?: string }): boolean {
  try {
    return BigInt(a.resourceVersion ?? '0') >= BigInt(b.resourceVersion ?? '0');
  } catch {
    return true;
  }
}

function podKey(ns: string, name: string): string {
  return `${ns}/${name}`;
}

function refKey(ref: PodRef): string {
  if (typeof ref === 'string') return ref.includes('/') ? ref : podKey('default', ref);
  if ('metadata' in ref && ref.metadata) return podKey(ref.metadata.namespace ?? 'default', ref.metadata.name ?? '');
  const r = ref as { namespace?: string; name: string };
  return podKey(r.namespace ?? 'default', r.name);
}

/** `$(VAR)` from `env` (left as is when undefined), `$$` → `$`: Kubernetes' expansion of env values, command and args. */
export function expandVars(s: string, env: Map<string, string>): string {
  return s.replace(/\$(\$|\(([A-Za-z_][A-Za-z0-9_.-]*)\))/g, (whole, what: string, name: string | undefined) => {
    if (what === '$') return '$';
    return name !== undefined && env.has(name) ? env.get(name)! : whole;
  });
}

/**
 * The mount-path rule: each mountPath, at a path boundary (not preceded by a path character; followed
 * by `/`, the end or a non-path character), becomes its directory. One pass, longest mount first, so
 * a real directory is never rewritten again.
 */
export function pathRewriter(mounts: [mountPath: string, dir: string][]): (s: string) => string {
  const list = mounts
    .map(([m, d]) => [path.posix.normalize(m).replace(/(.)\/+$/, '$1'), d] as [string, string])
    .filter(([m]) => m !== '/')
    .sort((a, b) => b[0].length - a[0].length);
  if (list.length === 0) return (s) => s;
  const byPath = new Map(list);
  const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const re = new RegExp(`(?<![\\w.~/-])(${list.map(([m]) => esc(m)).join('|')})(?![\\w.~-])`, 'g');
  return (s) => s.replace(re, (m: string) => byPath.get(m) ?? m);
}

/** A Kubernetes quantity ("100m", "1Gi", "2", "1e3") as a number of base units. */
export function parseQuantity(q: string | number): number {
  if (typeof q === 'number') return q;
  const m = /^([+-]?[0-9.]+)(e[+-]?\d+|E[+-]?\d+|[numkMGTPE]i?|Ki)?$/.exec(q.trim());
  if (!m) throw new Error(`not a quantity: ${q}`);
  const n = Number(m[1]);
  const s = m[2] ?? '';
  if (/^[eE]/.test(s)) return n * 10 ** Number(s.slice(1));
  const bin: Record<string, number> = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60 };
  const dec: Record<string, number> = { n: 1e-9, u: 1e-6, m: 1e-3, '': 1, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18 };
  const f = bin[s] ?? dec[s];
  if (f === undefined) throw new Error(`not a quantity: ${q}`);
  return n * f;
}

const SIGNALS = os.constants.signals as Record<string, number>;

/** A container needs something the API does not have yet (a Secret, a ConfigMap, a bound PVC): retried at the next sync. */
class NotYet extends Error {
  constructor(
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}
/** The harness cannot run this Pod: it fails. */
class Unsupported extends Error {
  constructor(
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

// ---------------------------------------------------------------------------------------------------------
// the API server, from the admin kubeconfig

interface Conn {
  server: string;
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

function connFromKubeconfig(file: string): Conn {
  const text = fs.readFileSync(file, 'utf8');
  const field = (name: string): Buffer => {
    const data = new RegExp(`^\\s*${name}-data:\\s*(\\S+)`, 'm').exec(text);
    if (data) return Buffer.from(data[1]!, 'base64');
    const f = new RegExp(`^\\s*${name}:\\s*(\\S+)`, 'm').exec(text);
    if (!f) throw new Error(`${file}: no ${name}`);
    return fs.readFileSync(f[1]!);
  };
  const server = /^\s*server:\s*(\S+)/m.exec(text)?.[1];
  if (!server) throw new Error(`${file}: no server`);
  return { server, ca: field('certificate-authority'), cert: field('client-certificate'), key: field('client-key') };
}

class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly body: unknown,
    what: string,
  ) {
    super(`${what}: HTTP ${status} ${typeof body === 'string' ? body.slice(0, 500) : JSON.stringify(body).slice(0, 500)}`);
  }
}

class Api {
  private readonly agent: https.Agent;
  private readonly open = new Set<http.ClientRequest>();
  private closed = false;

  constructor(private readonly conn: Conn) {
    this.agent = new https.Agent({ keepAlive: true, maxSockets: 16, ca: conn.ca, cert: conn.cert, key: conn.key });
  }

  /** One request; the parsed body. Rejects with ApiError on a status ≥ 300 unless it is in `ok`. */
  request<T>(method: string, p: string, body?: unknown, opts: { contentType?: string; ok?: number[]; timeoutMs?: number } = {}): Promise<{ status: number; body: T }> {
    if (this.closed) return Promise.reject(new Error('kubelet harness stopped'));
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = https.request(`${this.conn.server}${p}`, {
        method,
        agent: this.agent,
        headers: {
          accept: 'application/json',
          ...(payload === undefined ? {} : { 'content-type': opts.contentType ?? 'application/json', 'content-length': Buffer.byteLength(payload) }),
        },
        timeout: opts.timeoutMs ?? 15_000,
      });
      this.open.add(req);
      req.on('response', (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => {
          this.open.delete(req);
          let parsed: unknown = text;
          try {
            parsed = JSON.parse(text);
          } catch {
            /* not JSON */
          }
          const status = res.statusCode ?? 0;
          if (status >= 300 && !(opts.ok ?? []).includes(status)) reject(new ApiError(status, parsed, `${method} ${p}`));
          else resolve({ status, body: parsed as T });
        });
        res.on('error', (e) => {
          this.open.delete(req);
          reject(e);
        });
      });
      req.on('timeout', () => req.destroy(new Error(`${method} ${p}: no answer within ${opts.timeoutMs ?? 15_000} ms`)));
      req.on('error', (e) => {
        this.open.delete(req);
        reject(e);
      });
      req.end(payload);
    });
  }

  get<T>(p: string): Promise<T> {
    return this.request<T>('GET', p).then((r) => r.body);
  }

  /** GET, or undefined on 404. */
  async find<T>(p: string): Promise<T | undefined> {
    const r = await this.request<T>('GET', p, undefined, { ok: [404] });
    return r.status === 404 ? undefined : r.body;
  }

  /** A watch: `onLine` per JSON line, `onEnd` once when the stream ends or fails. Returns the request (destroy() to stop). */
  stream(p: string, onLine: (line: string) => void, onEnd: (err?: Error) => void): http.ClientRequest | undefined {
    if (this.closed) return undefined;
    let ended = false;
    const end = (e?: Error) => {
      if (ended) return;
      ended = true;
      this.open.delete(req);
      onEnd(e);
    };
    // A socket of its own (not the keep-alive pool): a watch holds it for minutes.
    const req = https.request(`${this.conn.server}${p}`, { method: 'GET', ca: this.conn.ca, cert: this.conn.cert, key: this.conn.key, agent: false, headers: { accept: 'application/json' } });
    this.open.add(req);
    req.on('response', (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        end(new Error(`watch ${p}: HTTP ${res.statusCode}`));
        return;
      }
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        buf += d;
        let i: number;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i).trim();
          buf = buf.slice(i + 1);
          if (line) onLine(line);
        }
      });
      res.on('end', () => end());
      res.on('error', (e) => end(e));
      res.on('close', () => end());
    });
    req.on('error', (e) => end(e));
    req.end();
    return req;
  }

  close(): void {
    this.closed = true;
    for (const r of this.open) r.destroy();
    this.open.clear();
    this.agent.destroy();
  }
}

/** A watch that follows the last resource version it saw and starts again from the last list's when it ends or falls behind (410). */
class Watcher {
  private rv: string | undefined;
  private req: http.ClientRequest | undefined;
  private retry: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly api: Api,
    private readonly path: string,
    private readonly onEvent: (type: string, obj: { metadata: ObjectMeta }) => void,
    private readonly note: (s: string) => void,
  ) {}

  /** Called after each list with its resource version: (re)starts the watch if it is not running. */
  listed(rv: string): void {
    if (this.rv === undefined) this.rv = rv;
    if (!this.req && !this.retry) this.connect();
  }

  private connect(): void {
    if (this.stopped || this.rv === undefined) return;
    const sep = this.path.includes('?') ? '&' : '?';
    this.req = this.api.stream(
      `${this.path}${sep}watch=1&allowWatchBookmarks=true&timeoutSeconds=300&resourceVersion=${encodeURIComponent(this.rv)}`,
      (line) => {
        let ev: { type: string; object: { metadata: ObjectMeta; code?: number; message?: string } };
        try {
          ev = JSON.parse(line) as typeof ev;
        } catch {
          return;
        }
        if (ev.type === 'ERROR') {
          // 410 Gone: that version is compacted away; the next list gives a fresh one.
          this.note(`watch ${this.path}: ${ev.object.code} ${ev.object.message}`);
          this.rv = undefined;
          this.req?.destroy();
          return;
        }
        if (ev.object?.metadata?.resourceVersion) this.rv = ev.object.metadata.resourceVersion;
        if (ev.type === 'BOOKMARK') return;
        this.onEvent(ev.type, ev.object);
      },
      (err) => {
        this.req = undefined;
        if (this.stopped) return;
        if (err) this.note(`watch ${this.path} ended: ${err.message}`);
        // Reconnect soon; if the version fell behind, the next list restarts it.
        this.retry = setTimeout(() => {
          this.retry = undefined;
          this.connect();
        }, 250);
      },
    );
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.retry);
    this.req?.destroy();
  }
}

// ---------------------------------------------------------------------------------------------------------
// probes

function varint(n: number): number[] {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return out;
}

/** grpc.health.v1.Health/Check: true when the answer is SERVING (1). The messages are encoded by hand (one field each). */
function grpcProbe(host: string, port: number, service: string, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    // A channel (and subchannel) per probe, as a kubelet dials per probe: no reconnect backoff carries over.
    const client = new grpc.Client(`${host}:${port}`, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1, 'grpc.enable_retries': 0 });
    const svc = Buffer.from(service, 'utf8');
    const req = svc.length ? Buffer.concat([Buffer.from([0x0a, ...varint(svc.length)]), svc]) : Buffer.alloc(0);
    client.makeUnaryRequest(
      '/grpc.health.v1.Health/Check',
      (b: Buffer) => b,
      (b: Buffer) => b,
      req,
      new grpc.Metadata(),
      { deadline: Date.now() + timeoutMs },
      (err, res) => {
        client.close();
        if (err || !res) return resolve(false);
        // HealthCheckResponse { ServingStatus status = 1; }: tag 0x08, then a varint.
        let status = 0;
        for (let i = 0; i + 1 < res.length; i++) if (res[i] === 0x08) status = res[i + 1]!;
        resolve(status === 1);
      },
    );
  });
}

function httpProbe(scheme: string, host: string, port: number, p: string, headers: Record<string, string>, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const mod = scheme.toUpperCase() === 'HTTPS' ? https : http;
    const req = mod.request({ host, port, path: p, method: 'GET', headers: { 'user-agent': 'kube-probe/1.37', ...headers }, timeout: timeoutMs, agent: false, rejectUnauthorized: false });
    req.on('response', (res) => {
      res.resume();
      const s = res.statusCode ?? 0;
      resolve(s >= 200 && s < 400);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve(false));
    req.end();
  });
}

function tcpProbe(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(timeoutMs, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

type ProbeKind = 'readiness' | 'liveness' | 'startup';

class ProbeLoop {
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private successes = 0;
  private failures = 0;
  /** The probe's verdict after its thresholds (undefined until the first one is reached). */
  verdict: boolean | undefined;

  constructor(
    private readonly c: ContainerRun,
    private readonly probe: Probe,
    readonly kind: ProbeKind,
    private readonly maxPeriodMs: number,
    private readonly onVerdict: (ok: boolean, detail: string) => void,
  ) {}

  start(): void {
    this.timer = setTimeout(() => void this.tick(), (this.probe.initialDelaySeconds ?? 0) * 1000);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    let ok = false;
    let detail = '';
    try {
      [ok, detail] = await this.c.runProbe(this.probe);
    } catch (e) {
      detail = String(e);
    }
    if (this.stopped) return;
    if (ok) {
      this.failures = 0;
      this.successes++;
      if (this.verdict !== true && this.successes >= (this.kind === 'readiness' ? (this.probe.successThreshold ?? 1) : 1)) {
        this.verdict = true;
        this.onVerdict(true, detail);
      }
    } else {
      this.successes = 0;
      this.failures++;
      if (this.verdict !== false && this.failures >= (this.probe.failureThreshold ?? 3)) {
        this.verdict = false;
        this.onVerdict(false, detail);
      }
    }
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.tick(), Math.min((this.probe.periodSeconds ?? 10) * 1000, this.maxPeriodMs));
  }
}

// ---------------------------------------------------------------------------------------------------------
// containers

interface Terminated {
  exitCode: number;
  signal?: number;
  reason: string;
  message?: string;
  startedAt?: string;
  finishedAt: string;
  containerID?: string;
}

class ContainerRun {
  argv: string[] = [];
  env: Record<string, string> = {};
  cwd = '';
  mounts: Record<string, string> = {};
  prepared = false;
  child: ChildProcess | undefined;
  exited: Promise<void> = Promise.resolve();
  state: 'new' | 'running' | 'backoff' | 'terminated' = 'new';
  startedAt: string | undefined;
  startedMs = 0;
  term: Terminated | undefined;
  last: Terminated | undefined;
  restarts = 0;
  ready = false;
  started = false;
  waiting: { reason: string; message?: string } | undefined;
  crashes = 0;
  private backoff: NodeJS.Timeout | undefined;
  private probes: ProbeLoop[] = [];
  private logs = '';
  readonly logFile: string;
  readonly dir: string;
  /** Set by a liveness/startup failure, so the exit is reported as such. */
  private killedBy: string | undefined;

  constructor(
    readonly pod: PodRun,
    readonly spec: Container,
    readonly init: boolean,
  ) {
    this.dir = path.join(pod.dir, 'containers', spec.name);
    this.logFile = path.join(pod.dir, 'logs', `${spec.name}.log`);
  }

  get h(): Harness {
    return this.pod.h;
  }

  running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  logsText(): string {
    return this.logs;
  }

  private append(s: string): void {
    this.logs += s;
    if (this.logs.length > LOG_LIMIT) this.logs = this.logs.slice(-LOG_LIMIT);
    try {
      fs.appendFileSync(this.logFile, s);
    } catch {
      /* the pod dir is gone (stop) */
    }
  }

  /** Env, mounts, argv, cwd: throws NotYet (retry later) or Unsupported (fail the Pod). */
  async prepare(volumes: Map<string, string>): Promise<void> {
    fs.mkdirSync(this.dir, { recursive: true });
    fs.mkdirSync(path.dirname(this.logFile), { recursive: true });
    const raw = await this.h.resolveEnv(this.pod, this.spec);
    const mounts: [string, string][] = [];
    for (const m of this.spec.volumeMounts ?? []) {
      const base = volumes.get(m.name);
      if (base === undefined) throw new Unsupported('VolumeNotFound', `container ${this.spec.name} mounts volume ${m.name}, which the Pod does not define`);
      const sub = m.subPath || (m.subPathExpr ? expandVars(m.subPathExpr, raw) : '');
      const dir = sub ? path.join(base, sub) : base;
      if (!path.resolve(dir).startsWith(path.resolve(base))) throw new Unsupported('InvalidSubPath', `subPath ${sub} leaves its volume`);
      fs.mkdirSync(dir, { recursive: true });
      mounts.push([m.mountPath, dir]);
    }
    const rewrite = pathRewriter(mounts);
    const expand = (s: string) => rewrite(expandVars(s, raw));
    const command = this.spec.command?.map(expand);
    const args = (this.spec.args ?? []).map(expand);
    const prog = await this.h.program(this.pod.pod, this.spec, command, args);
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
      HOME: this.dir,
      HOSTNAME: this.pod.pod.spec.hostname ?? this.pod.name,
      ...this.h.serviceEnv(),
    };
    for (const [k, v] of Object.entries(prog.env ?? {})) if (!raw.has(k)) env[k] = v;
    for (const [k, v] of raw) env[k] = rewrite(v);
    env[MARKER] = this.h.dir;
    let cwd = this.dir;
    if (this.spec.workingDir) {
      const w = rewrite(this.spec.workingDir);
      if (w !== this.spec.workingDir) {
        fs.mkdirSync(w, { recursive: true });
        cwd = w;
      }
    }
    this.argv = [prog.file, ...prog.args];
    this.env = env;
    this.cwd = cwd;
    this.mounts = Object.fromEntries(mounts.map(([m, d]) => [m, d]));
    this.prepared = true;
  }

  spawn(): void {
    if (this.h.stopped || this.pod.terminating) return;
    if (this.state !== 'new') this.restarts++;
    this.state = 'running';
    this.waiting = undefined;
    this.term = undefined;
    this.killedBy = undefined;
    this.ready = false;
    this.started = false;
    this.startedAt = nowIso();
    this.startedMs = Date.now();
    this.append(`\n=== kubelet harness: start ${new Date().toISOString()}: ${this.argv.join(' ')} ===\n`);
    const [file, args] = this.pod.wrap(this.argv, this.env);
    const child = spawn(file, args, { cwd: this.cwd, env: this.env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    this.h.track(child);
    child.stdout!.on('data', (d: Buffer) => this.append(d.toString()));
    child.stderr!.on('data', (d: Buffer) => this.append(d.toString()));
    this.exited = new Promise<void>((resolve) => {
      let done = false;
      const finish = (code: number | null, signal: NodeJS.Signals | null, err?: Error) => {
        if (done) return;
        done = true;
        this.h.untrack(child);
        this.onExit(code, signal, err);
        resolve();
      };
      child.once('error', (e) => finish(null, null, e));
      child.once('exit', (code, signal) => finish(code, signal));
    });
    this.h.note(`${this.pod.key} ${this.spec.name}: started pid ${child.pid} on ${this.pod.ip}: ${this.argv.map((a) => path.basename(a)).slice(0, 2).join(' ')} ${this.argv.slice(2).join(' ')}`);
    this.h.event(this.pod, 'Normal', 'Started', `Started container ${this.spec.name} (pid ${child.pid})`);
    this.startProbes();
    this.pod.poke();
  }

  private startProbes(): void {
    const max = this.h.opts.maxProbePeriodMs;
    const readinessAndLiveness = () => {
      this.started = true;
      if (this.spec.readinessProbe && !this.init) {
        const p = new ProbeLoop(this, this.spec.readinessProbe, 'readiness', max, (ok, detail) => {
          if (this.ready !== ok) this.h.note(`${this.pod.key} ${this.spec.name}: readiness ${ok ? 'passed' : `failed: ${detail}`}`);
          if (!ok) this.h.event(this.pod, 'Warning', 'Unhealthy', `Readiness probe failed: ${detail}`);
          this.ready = ok;
          this.pod.poke();
        });
        this.probes.push(p);
        p.start();
      } else {
        this.ready = !this.init;
      }
      if (this.spec.livenessProbe && !this.init) {
        const p = new ProbeLoop(this, this.spec.livenessProbe, 'liveness', max, (ok, detail) => {
          if (ok) return;
          this.h.event(this.pod, 'Warning', 'Unhealthy', `Liveness probe failed: ${detail}`);
          this.failedProbe('liveness', this.spec.livenessProbe!);
        });
        this.probes.push(p);
        p.start();
      }
      this.pod.poke();
    };
    if (this.spec.startupProbe && !this.init) {
      const p = new ProbeLoop(this, this.spec.startupProbe, 'startup', max, (ok, detail) => {
        p.stop();
        if (ok) readinessAndLiveness();
        else {
          this.h.event(this.pod, 'Warning', 'Unhealthy', `Startup probe failed: ${detail}`);
          this.failedProbe('startup', this.spec.startupProbe!);
        }
      });
      this.probes.push(p);
      p.start();
    } else readinessAndLiveness();
  }

  private failedProbe(kind: string, probe: Probe): void {
    if (!this.running()) return;
    this.killedBy = `${kind} probe failed`;
    this.h.note(`${this.pod.key} ${this.spec.name}: ${kind} probe failed, restarting`);
    const grace = probe.terminationGracePeriodSeconds ?? this.pod.pod.spec.terminationGracePeriodSeconds ?? 30;
    void this.stopProcess(grace * 1000);
  }

  private stopProbes(): void {
    for (const p of this.probes) p.stop();
    this.probes = [];
  }

  private onExit(code: number | null, signal: NodeJS.Signals | null, err?: Error): void {
    this.stopProbes();
    this.child = undefined;
    this.ready = false;
    this.started = false;
    const signum = signal ? SIGNALS[signal] : undefined;
    const exitCode = code ?? (signum !== undefined ? 128 + signum : err ? 128 : 1);
    const t: Terminated = {
      exitCode,
      ...(signum !== undefined ? { signal: signum } : {}),
      reason: err ? 'StartError' : this.killedBy ? 'Error' : exitCode === 0 ? 'Completed' : 'Error',
      ...(err ? { message: String(err) } : this.killedBy ? { message: this.killedBy } : {}),
      startedAt: this.startedAt,
      finishedAt: nowIso(),
    };
    this.append(`\n=== kubelet harness: exited code=${code} signal=${signal}${err ? ` error=${String(err)}` : ''} ===\n`);
    this.h.note(`${this.pod.key} ${this.spec.name}: exited code=${code} signal=${signal}${err ? ` (${String(err)})` : ''}`);
    const ranMs = Date.now() - this.startedMs;
    if (this.pod.terminating || this.h.stopped) {
      this.state = 'terminated';
      this.term = t;
      this.pod.poke();
      return;
    }
    const policy = this.pod.pod.spec.restartPolicy ?? 'Always';
    let restart: boolean;
    if (this.init) restart = exitCode !== 0 && policy !== 'Never';
    else restart = policy === 'Always' || (policy === 'OnFailure' && exitCode !== 0);
    if (!restart) {
      this.state = 'terminated';
      this.term = t;
      if (this.init && exitCode === 0) this.pod.initDone(this);
      this.pod.poke();
      return;
    }
    this.last = t;
    this.state = 'backoff';
    if (ranMs > 60_000) this.crashes = 0;
    this.crashes++;
    const wait = Math.min(this.h.opts.restartBackoffMs * 2 ** (this.crashes - 1), this.h.opts.maxRestartBackoffMs);
    this.waiting = { reason: 'CrashLoopBackOff', message: `back-off ${Math.round(wait / 1000)}s restarting failed container=${this.spec.name} pod=${this.pod.name}_${this.pod.ns}(${this.pod.uid})` };
    this.h.event(this.pod, 'Warning', 'BackOff', `Back-off restarting failed container ${this.spec.name} in pod ${this.pod.name}_${this.pod.ns}(${this.pod.uid})`);
    this.backoff = setTimeout(() => {
      this.backoff = undefined;
      this.spawn();
    }, wait);
    this.pod.poke();
  }

  signal(sig: NodeJS.Signals): void {
    if (this.running()) this.child!.kill(sig);
  }

  /** Cancels a pending restart and stops the probes; SIGTERM, SIGKILL after `graceMs`; resolves once it has exited. */
  async stopProcess(graceMs: number): Promise<void> {
    clearTimeout(this.backoff);
    this.backoff = undefined;
    if (this.state === 'backoff' && this.pod.terminating) {
      this.state = 'terminated';
      this.term = this.last;
    }
    if (!this.running()) return;
    const exited = this.exited;
    this.child!.kill('SIGTERM');
    if ((await within(exited, graceMs)) !== 'late') return;
    this.append(`\n=== kubelet harness: no exit ${graceMs} ms after SIGTERM, sending SIGKILL ===\n`);
    this.signal('SIGKILL');
    await this.killWait(exited);
  }

  /** SIGKILL now (stop of the harness). */
  async kill(): Promise<void> {
    clearTimeout(this.backoff);
    this.backoff = undefined;
    this.stopProbes();
    if (!this.running()) return;
    const exited = this.exited;
    this.signal('SIGKILL');
    await this.killWait(exited);
  }

  private async killWait(exited: Promise<void>): Promise<void> {
    if ((await within(exited, 15_000)) === 'late') this.h.note(`${this.pod.key} ${this.spec.name}: pid ${this.child?.pid} did not exit 15 s after SIGKILL`);
  }

  /** One probe of this container: [ok, detail]. */
  async runProbe(p: Probe): Promise<[boolean, string]> {
    const timeoutMs = (p.timeoutSeconds ?? 1) * 1000;
    const port = (v: number | string): number => {
      if (typeof v === 'number') return v;
      if (/^\d+$/.test(v)) return Number(v);
      const named = this.spec.ports?.find((x) => x.name === v);
      if (!named) throw new Error(`no container port named ${v}`);
      return named.containerPort;
    };
    const host = this.pod.ip;
    if (p.grpc) {
      const ok = await grpcProbe(host, p.grpc.port, p.grpc.service ?? '', timeoutMs);
      return [ok, `grpc ${host}:${p.grpc.port} service "${p.grpc.service ?? ''}" ${ok ? 'SERVING' : 'not SERVING'}`];
    }
    if (p.httpGet) {
      const g = p.httpGet;
      const target = g.host || host;
      const headers = Object.fromEntries((g.httpHeaders ?? []).map((x) => [x.name, x.value]));
      const ok = await httpProbe(g.scheme ?? 'HTTP', target, port(g.port), g.path ?? '/', headers, timeoutMs);
      return [ok, `GET ${(g.scheme ?? 'http').toLowerCase()}://${target}:${port(g.port)}${g.path ?? '/'}`];
    }
    if (p.tcpSocket) {
      const target = p.tcpSocket.host || host;
      const ok = await tcpProbe(target, port(p.tcpSocket.port), timeoutMs);
      return [ok, `tcp ${target}:${port(p.tcpSocket.port)}`];
    }
    if (p.exec?.command?.length) {
      const env = new Map(Object.entries(this.env));
      const cmd = p.exec.command.map((s) => expandVars(s, env));
      let prog: Program;
      try {
        prog = await this.h.program(this.pod.pod, { ...this.spec, command: cmd, args: [] }, cmd, []);
      } catch (e) {
        return [false, `exec probe: ${(e as Error).message}`];
      }
      const code = await new Promise<number>((resolve) => {
        const [file, args] = this.pod.wrap([prog.file, ...prog.args], this.env);
        const child = spawn(file, args, { cwd: this.cwd, env: this.env, stdio: 'ignore' });
        this.h.track(child);
        const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
        child.once('error', () => resolve(127));
        child.once('exit', (c) => {
          clearTimeout(t);
          this.h.untrack(child);
          resolve(c ?? 137);
        });
      });
      return [code === 0, `exec ${cmd.join(' ')}: exit ${code}`];
    }
    return [false, 'a probe with no handler'];
  }

  status(): Record<string, unknown> {
    const image = this.spec.image ?? '';
    const state = (): Record<string, unknown> => {
      if (this.state === 'running') return { running: { startedAt: this.startedAt } };
      if (this.state === 'terminated' && this.term) return { terminated: this.term };
      if (this.waiting) return { waiting: this.waiting };
      return { waiting: { reason: this.init || this.pod.initialized ? 'ContainerCreating' : 'PodInitializing' } };
    };
    return {
      name: this.spec.name,
      image,
      imageID: `harness://${image}`,
      ...(this.child?.pid ? { containerID: `harness://${this.pod.uid.slice(0, 8)}-${this.spec.name}-${this.child.pid}` } : {}),
      ready: this.ready && this.state === 'running',
      started: this.state === 'running' && this.started,
      restartCount: this.restarts,
      state: state(),
      lastState: this.last ? { terminated: this.last } : {},
    };
  }

  info(): ContainerProcess {
    const t = this.term ?? this.last;
    return {
      name: this.spec.name,
      image: this.spec.image ?? '',
      init: this.init,
      pid: this.running() ? this.child!.pid : undefined,
      running: this.running(),
      ready: this.ready && this.running(),
      restarts: this.restarts,
      exitCode: t?.exitCode,
      signal: t?.signal !== undefined ? Object.keys(SIGNALS).find((k) => SIGNALS[k] === t.signal) : undefined,
      argv: [...this.argv],
      env: { ...this.env },
      cwd: this.cwd,
      logs: this.logs,
      logFile: this.logFile,
    };
  }
}

// ---------------------------------------------------------------------------------------------------------
// pods

class PodRun {
  readonly uid: string;
  readonly ns: string;
  readonly name: string;
  readonly key: string;
  readonly node: string;
  readonly dir: string;
  readonly inits: ContainerRun[];
  readonly mains: ContainerRun[];
  ip = '';
  private ownsIp = false;
  /** The Pod's /etc/hosts (cluster DNS), bind-mounted in each of its processes; undefined: none (dns off, hostNetwork). */
  hostsFile: string | undefined;
  hostsContent = '';
  hostsMtimeMs = 0;
  pod: PodObject;
  volumes = new Map<string, string>();
  prepared = false;
  initialized = false;
  private initIndex = 0;
  failed: { reason: string; message: string } | undefined;
  waiting: { reason: string; message: string } | undefined;
  terminating = false;
  termination: Promise<void> | undefined;
  readonly startTime = nowIso();
  private readonly condTimes = new Map<string, { status: string; time: string }>();

  constructor(
    readonly h: Harness,
    pod: PodObject,
  ) {
    this.pod = pod;
    this.uid = pod.metadata.uid;
    this.ns = pod.metadata.namespace ?? 'default';
    this.name = pod.metadata.name;
    this.key = podKey(this.ns, this.name);
    this.node = pod.spec.nodeName ?? '';
    this.dir = path.join(h.dir, 'pods', `${this.ns}_${this.name}_${this.uid.slice(0, 8)}`);
    fs.mkdirSync(this.dir, { recursive: true });
    this.inits = (pod.spec.initContainers ?? []).map((c) => new ContainerRun(this, c, true));
    this.mains = pod.spec.containers.map((c) => new ContainerRun(this, c, false));
  }

  get all(): ContainerRun[] {
    return [...this.inits, ...this.mains];
  }

  allocate(): void {
    if (this.pod.spec.hostNetwork) this.ip = this.h.hostIP(this.node);
    else {
      this.ip = allocateIp();
      this.ownsIp = true;
    }
  }

  /**
   * The command line that runs `argv` with the Pod's hosts file as /etc/hosts: unshare(1) makes a
   * private mount namespace, sh bind-mounts the file and execs the program (unshare and sh exec too,
   * so the pid is the program's: signals, exit codes and pid bookkeeping are unchanged).
   */
  wrap(argv: string[], env: Record<string, string>): [string, string[]] {
    if (!this.hostsFile || !dnsTools) return [argv[0]!, argv.slice(1)];
    // sh exports a PWD of its own; the program gets only the container's environment.
    // A failed mount exits 125 (its message in the container's log) rather than run without cluster names.
    const script = `${dnsTools.mount} --bind "$0" /etc/hosts || exit 125; ${'PWD' in env ? '' : 'unset PWD; '}exec "$@"`;
    return [dnsTools.unshare, ['--mount', '--propagation', 'private', '--', dnsTools.sh, '-c', script, this.hostsFile, ...argv]];
  }

  release(): void {
    if (this.ownsIp) releaseIp(this.ip);
    this.ownsIp = false;
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  poke(): void {
    this.h.poke(this);
  }

  fail(reason: string, message: string): void {
    this.failed = { reason, message };
    this.waiting = undefined;
    for (const c of this.all) {
      if (c.state !== 'new') continue;
      c.state = 'terminated';
      c.waiting = undefined;
      c.term = { exitCode: 128, reason, message, finishedAt: nowIso() };
    }
    this.h.note(`${this.key}: failed: ${reason}: ${message}`);
    this.h.event(this, 'Warning', 'Failed', `${reason}: ${message}`);
  }

  /** Volumes, then every container's env/argv; starts the containers when all is there. */
  async prepareAndStart(): Promise<void> {
    if (this.prepared || this.failed || this.terminating) return;
    try {
      for (const r of this.pod.spec.initContainers ?? []) {
        if (r.restartPolicy === 'Always') throw new Unsupported('UnsupportedSidecar', `init container ${r.name} has restartPolicy Always (a sidecar): the kubelet harness does not run sidecars`);
      }
      this.volumes = await this.h.prepareVolumes(this);
      for (const c of this.all) await c.prepare(this.volumes);
      this.h.setupHosts(this);
    } catch (e) {
      if (e instanceof Unsupported) this.fail(e.reason, e.message);
      else {
        const reason = e instanceof NotYet ? e.reason : 'CreateContainerConfigError';
        const message = (e as Error).message;
        if (this.waiting?.message !== message) {
          this.h.note(`${this.key}: waiting: ${reason}: ${message}`);
          this.h.event(this, 'Warning', 'Failed', `Error: ${message}`);
        }
        this.waiting = { reason, message };
        for (const c of this.all) c.waiting = { reason, message };
      }
      return;
    }
    this.prepared = true;
    this.waiting = undefined;
    for (const c of this.all) c.waiting = undefined;
    this.nextInit();
  }

  private nextInit(): void {
    const c = this.inits[this.initIndex];
    if (c) {
      c.spawn();
      return;
    }
    this.initialized = true;
    for (const m of this.mains) m.spawn();
  }

  initDone(c: ContainerRun): void {
    if (this.inits[this.initIndex] !== c) return;
    this.initIndex++;
    this.nextInit();
  }

  phase(): string {
    if (this.failed) return 'Failed';
    if (!this.initialized) {
      if (this.inits.some((c) => c.state === 'terminated' && c.term && c.term.exitCode !== 0)) return 'Failed';
      return 'Pending';
    }
    if (this.mains.some((c) => c.state === 'running' || c.state === 'backoff')) return 'Running';
    if (this.mains.every((c) => c.state === 'terminated')) return this.mains.every((c) => c.term?.exitCode === 0) ? 'Succeeded' : 'Failed';
    return 'Pending';
  }

  private cond(type: string, status: boolean, reason?: string, message?: string): Condition {
    const s = status ? 'True' : 'False';
    let t = this.condTimes.get(type);
    if (!t || t.status !== s) {
      t = { status: s, time: nowIso() };
      this.condTimes.set(type, t);
    }
    return { type, status: s, lastProbeTime: null, lastTransitionTime: t.time, ...(reason ? { reason } : {}), ...(message ? { message } : {}) };
  }

  status(): Record<string, unknown> {
    const phase = this.phase();
    const done = phase === 'Succeeded' || phase === 'Failed';
    const unready = this.mains.filter((c) => !(c.ready && c.state === 'running')).map((c) => c.spec.name);
    const ready = !done && unready.length === 0;
    const notReady = done ? { reason: 'PodCompleted' } : { reason: 'ContainersNotReady', message: `containers with unready status: [${unready.join(' ')}]` };
    const scheduled = this.pod.status?.conditions?.find((c) => c.type === 'PodScheduled');
    const hostIP = this.h.hostIP(this.node);
    return {
      phase,
      ...(this.failed ? { reason: this.failed.reason, message: this.failed.message } : {}),
      hostIP,
      hostIPs: [{ ip: hostIP }],
      ...(this.ip ? { podIP: this.ip, podIPs: [{ ip: this.ip }] } : {}),
      startTime: this.pod.status?.startTime ?? this.startTime,
      conditions: [
        this.cond('PodReadyToStartContainers', !done || this.mains.some((c) => c.running())),
        this.cond('Initialized', this.initialized || (this.inits.length === 0 && !this.failed), this.initialized ? undefined : 'ContainersNotInitialized'),
        this.cond('Ready', ready, ready ? undefined : notReady.reason, ready ? undefined : notReady.message),
        this.cond('ContainersReady', ready, ready ? undefined : notReady.reason, ready ? undefined : notReady.message),
        { type: 'PodScheduled', status: 'True', lastProbeTime: null, lastTransitionTime: scheduled?.lastTransitionTime ?? this.startTime },
      ],
      containerStatuses: this.mains.map((c) => c.status()),
      ...(this.inits.length ? { initContainerStatuses: this.inits.map((c) => c.status()) } : {}),
    };
  }

  info(): PodProcess {
    const containers = this.all.map((c) => c.info());
    const first = containers.find((c) => !c.init);
    return {
      namespace: this.ns,
      name: this.name,
      uid: this.uid,
      node: this.node,
      ip: this.ip,
      address: this.ip,
      phase: this.phase(),
      terminating: this.terminating,
      volumes: Object.fromEntries(this.volumes),
      mounts: Object.fromEntries(this.all.map((c) => [c.spec.name, { ...c.mounts }])),
      containers,
      pid: first?.pid,
      logs: first?.logs ?? '',
    };
  }
}

const OUR_CONDITIONS = ['PodReadyToStartContainers', 'Initialized', 'Ready', 'ContainersReady'];

/** What a status patch changes, to compare what we would report with what the API server holds. */
function projection(s: PodObject['status'] | Record<string, unknown> | undefined): string {
  const st = (s ?? {}) as NonNullable<PodObject['status']>;
  const cs = (l: ContainerStatus[] | undefined) =>
    (l ?? []).map((c) => {
      const kind = Object.keys(c.state ?? {})[0] ?? '';
      const v = c.state?.[kind];
      return [c.name, c.ready, c.started, c.restartCount, kind, v?.exitCode, v?.reason];
    });
  return JSON.stringify([
    st.phase,
    st.reason,
    st.podIP,
    (st.conditions ?? []).filter((c) => OUR_CONDITIONS.includes(c.type)).map((c) => [c.type, c.status]).sort(),
    cs(st.containerStatuses),
    cs(st.initContainerStatuses),
  ]);
}

// ---------------------------------------------------------------------------------------------------------
// addresses: 127.0.0.X, reserved across processes with a file each (like ports.ts's ports)

let nextIp = 2;

function allocateIp(): string {
  for (let i = 0; i < 253; i++) {
    const x = 2 + ((nextIp - 2 + i) % 253);
    const ip = `127.0.0.${x}`;
    if (tryExclusiveFile(path.join(IPS_DIR, ip))) {
      // Round robin: an address is reused as late as possible.
      nextIp = x + 1;
      return ip;
    }
  }
  throw new Unsupported('NoAddress', 'no free loopback address 127.0.0.2-254 (each live Pod of every kubelet harness on this machine holds one)');
}

function releaseIp(ip: string): void {
  const f = path.join(IPS_DIR, ip);
  if (readOr(f, '') === String(process.pid)) fs.rmSync(f, { force: true });
}

function canBind(host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen({ port: 0, host, exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

// ---------------------------------------------------------------------------------------------------------
// processes a dead worker left behind

interface HarnessRecord {
  owner: number;
  dir: string;
  pids: number[];
}

function reapDeadOwners(): void {
  let files: string[];
  try {
    files = fs.readdirSync(HARNESSES_DIR);
  } catch {
    return;
  }
  for (const name of files) {
    const file = path.join(HARNESSES_DIR, name);
    let rec: HarnessRecord;
    try {
      rec = JSON.parse(fs.readFileSync(file, 'utf8')) as HarnessRecord;
    } catch {
      continue;
    }
    if (pidAlive(rec.owner)) continue;
    for (const pid of rec.pids) {
      // Only a process that is still one of ours (pids get reused): its environment names the dir.
      if (readOr(`/proc/${pid}/environ`, '').split('\0').includes(`${MARKER}=${rec.dir}`)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    }
    fs.rmSync(rec.dir, { recursive: true, force: true });
    fs.rmSync(file, { force: true });
  }
}

const allChildren = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Last resort if a worker exits without cleanupKubelet(): no Pod process outlives it.
  process.once('exit', () => {
    for (const c of allChildren) {
      try {
        c.kill('SIGKILL');
      } catch {
        /* gone */
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------------------
// cluster DNS: the tools that give a process its own /etc/hosts, and updating a file a bind mount pins

let dnsTools: { unshare: string; mount: string; sh: string } | undefined;

function which(name: string): string | undefined {
  for (const d of ['/usr/bin', '/bin', '/usr/sbin', '/sbin', ...(process.env.PATH ?? '').split(':')]) {
    const f = path.join(d, name);
    try {
      fs.accessSync(f, fs.constants.X_OK);
      return f;
    } catch {
      /* next */
    }
  }
  return undefined;
}

/** Checks once per process that a private mount namespace with its own /etc/hosts works here; throws a clear error if not. */
async function checkDns(): Promise<void> {
  if (dnsTools) return;
  const hint = 'the kubelet harness gives each Pod process its own /etc/hosts (cluster DNS) with unshare(1) and a bind mount, which needs root (CAP_SYS_ADMIN); start it with { dns: false } if the test does not need cluster DNS';
  const tools = { unshare: which('unshare'), mount: which('mount'), sh: which('sh') };
  const missing = Object.entries(tools).filter(([, v]) => !v).map(([k]) => k);
  if (missing.length) throw new Error(`kubelet harness: ${missing.join(', ')} not found (util-linux): ${hint}`);
  const t = tools as { unshare: string; mount: string; sh: string };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'loam-kubelet-dns-check-'));
  const probe = path.join(dir, 'hosts');
  const marker = `127.0.0.254\tkubelet-harness-dns-check-${process.pid}.default.svc\n`;
  fs.writeFileSync(probe, marker);
  try {
    const out = await new Promise<{ err: Error | null; stdout: string; stderr: string }>((resolve) =>
      execFile(t.unshare, ['--mount', '--propagation', 'private', '--', t.sh, '-c', `${t.mount} --bind "$0" /etc/hosts && exec cat /etc/hosts`, probe], { timeout: 10_000 }, (err, stdout, stderr) =>
        resolve({ err, stdout: String(stdout), stderr: String(stderr) }),
      ),
    );
    if (out.err || out.stdout !== marker) {
      const why = out.stderr.trim() || (out.err ? out.err.message : 'the bind mount did not show in the new namespace');
      throw new Error(`kubelet harness: cannot give a process its own /etc/hosts (${why}): ${hint}`);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  dnsTools = t;
}

/**
 * Rewrites `file` in place, keeping its inode (a bind mount pins the inode: a rename would not be
 * seen), the whole content in one write, so a reader sees the old file or the new one. A shorter
 * file is first padded to the old length with a comment (never new lines followed by old ones), then
 * cut. The mtime is set strictly later than the last one: Go's resolver re-reads /etc/hosts only
 * when its mtime or size changed.
 */
export function rewriteInPlace(file: string, content: string, lastMtimeMs: number): number {
  const buf = Buffer.from(content, 'utf8');
  const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o644);
  try {
    const old = fs.fstatSync(fd).size;
    const pad = old - buf.length;
    const out = pad <= 0 ? buf : Buffer.concat([buf, Buffer.from(pad === 1 ? '\n' : `#${' '.repeat(pad - 2)}\n`)]);
    fs.writeSync(fd, out, 0, out.length, 0);
    if (out.length !== buf.length) fs.ftruncateSync(fd, buf.length);
    const mtime = Math.max(Date.now(), lastMtimeMs + 1);
    fs.futimesSync(fd, new Date(mtime), new Date(mtime));
    return mtime;
  } finally {
    fs.closeSync(fd);
  }
}

/** A list into a map by uid: the newer of listed and watched; gone if absent from a list newer than it. */
function mergeList<T extends { metadata: ObjectMeta }>(m: Map<string, T>, list: ListOf<T>): void {
  const seen = new Set<string>();
  for (const it of list.items) {
    seen.add(it.metadata.uid);
    const cur = m.get(it.metadata.uid);
    if (!cur || newerOrSame(it.metadata, cur.metadata)) m.set(it.metadata.uid, it);
  }
  for (const [uid, cur] of m) if (!seen.has(uid) && newerOrSame(list.metadata, cur.metadata)) m.delete(uid);
}

// ---------------------------------------------------------------------------------------------------------
// the harness

const liveHarnesses = new Set<Harness>();

interface Opts {
  resyncMs: number;
  maxProbePeriodMs: number;
  restartBackoffMs: number;
  maxRestartBackoffMs: number;
  provisionVolumes: boolean;
  runImage: KubeletOptions['runImage'];
  dns: boolean;
}

class Harness implements Kubelet {
  readonly api: Api;
  readonly opts: Opts;
  stopped = false;
  private readonly fixedNodes: Set<string> | undefined;
  private nodeSet = new Set<string>();
  private foreignNodes = new Set<string>();
  private nodeInfo = new Map<string, NodeObject>();
  private readonly records = new Map<string, PodRun>();
  private readonly queues = new Map<string, { busy: boolean; next: PodObject | undefined }>();
  private readonly watchers: Watcher[] = [];
  private resyncTimer: NodeJS.Timeout | undefined;
  private resyncing: Promise<void> = Promise.resolve();
  private readonly provisioned = new Set<string>();
  private readonly children = new Set<ChildProcess>();
  private readonly notes: string[] = [];
  private readonly recordFile: string;
  private readonly apiHostPort: { host: string; port: string };
  private readonly pending = new Set<Promise<unknown>>();
  /** Services, every Pod of the cluster and EndpointSlices by uid (cluster DNS), from the watches and each resync's list. */
  private readonly allPods = new Map<string, PodObject>();
  private readonly services = new Map<string, DnsService & { metadata: ObjectMeta }>();
  private readonly slices = new Map<string, DnsEndpointSlice & { metadata: ObjectMeta }>();
  private dnsTimer: NodeJS.Timeout | undefined;
  /** The machine's /etc/hosts (its localhost lines), the start of every Pod's. */
  private readonly machineHosts = readOr('/etc/hosts', '127.0.0.1\tlocalhost\n');

  constructor(
    readonly dir: string,
    conn: Conn,
    opts: KubeletOptions,
  ) {
    this.api = new Api(conn);
    this.opts = {
      resyncMs: opts.resyncMs ?? 1000,
      maxProbePeriodMs: opts.maxProbePeriodMs ?? 1000,
      restartBackoffMs: opts.restartBackoffMs ?? 1000,
      maxRestartBackoffMs: opts.maxRestartBackoffMs ?? 10_000,
      provisionVolumes: opts.provisionVolumes !== false,
      runImage: opts.runImage,
      dns: opts.dns !== false,
    };
    this.fixedNodes = opts.nodes ? new Set(opts.nodes) : undefined;
    if (this.opts.dns && !dnsTools) throw new Error('kubelet harness: cluster DNS is on but checkDns() did not run');
    if (this.fixedNodes) this.nodeSet = new Set(this.fixedNodes);
    this.recordFile = path.join(HARNESSES_DIR, `${path.basename(dir)}.json`);
    const u = new URL(conn.server);
    this.apiHostPort = { host: u.hostname, port: u.port || '443' };
    this.writeRecord();
  }

  // --- bookkeeping ---------------------------------------------------------------------------------

  note(s: string): void {
    this.notes.push(`${new Date().toISOString()} ${s}`);
    if (this.notes.length > NOTES_LIMIT) this.notes.splice(0, this.notes.length - NOTES_LIMIT);
  }

  log(): string {
    return this.notes.join('\n');
  }

  track(c: ChildProcess): void {
    this.children.add(c);
    allChildren.add(c);
    this.writeRecord();
  }

  untrack(c: ChildProcess): void {
    this.children.delete(c);
    allChildren.delete(c);
    this.writeRecord();
  }

  private writeRecord(): void {
    if (this.stopped) return;
    const rec: HarnessRecord = { owner: process.pid, dir: this.dir, pids: [...this.children].map((c) => c.pid).filter((p): p is number => p !== undefined) };
    fs.mkdirSync(HARNESSES_DIR, { recursive: true });
    fs.writeFileSync(this.recordFile, JSON.stringify(rec));
  }

  /** Fire and forget, but stop() waits for it (so no request outlives the harness). */
  private background(p: Promise<unknown>): void {
    const q = p.catch((e: unknown) => this.note(`background: ${String(e)}`)).finally(() => this.pending.delete(q));
    this.pending.add(q);
  }

  event(rec: PodRun, type: 'Normal' | 'Warning', reason: string, message: string): void {
    if (this.stopped) return;
    const now = new Date().toISOString();
    this.background(
      this.api.request('POST', `/api/v1/namespaces/${rec.ns}/events`, {
        apiVersion: 'v1',
        kind: 'Event',
        metadata: { generateName: `${rec.name}.`, namespace: rec.ns },
        involvedObject: { apiVersion: 'v1', kind: 'Pod', namespace: rec.ns, name: rec.name, uid: rec.uid },
        reason,
        message,
        type,
        source: { component: 'kubelet', host: rec.node },
        reportingComponent: 'kubelet',
        reportingInstance: rec.node,
        firstTimestamp: now,
        lastTimestamp: now,
        count: 1,
      }),
    );
  }

  hostIP(node: string): string {
    return this.nodeInfo.get(node)?.status?.addresses?.find((a) => a.type === 'InternalIP')?.address ?? '127.0.0.1';
  }

  serviceEnv(): Record<string, string> {
    const { host, port } = this.apiHostPort;
    return {
      KUBERNETES_SERVICE_HOST: host,
      KUBERNETES_SERVICE_PORT: port,
      KUBERNETES_SERVICE_PORT_HTTPS: port,
      KUBERNETES_PORT: `tcp://${host}:${port}`,
      KUBERNETES_PORT_443_TCP: `tcp://${host}:${port}`,
      KUBERNETES_PORT_443_TCP_PROTO: 'tcp',
      KUBERNETES_PORT_443_TCP_ADDR: host,
      KUBERNETES_PORT_443_TCP_PORT: port,
    };
  }

  // --- cluster DNS (hosts files) ------------------------------------------------------------------

  private hostsOf(rec: PodRun): string {
    const spec = rec.pod.spec;
    const policy = spec.dnsPolicy ?? 'ClusterFirst';
    return hostsFile({
      base: this.machineHosts,
      services: [...this.services.values()],
      pods: [...this.allPods.values()],
      endpointSlices: [...this.slices.values()],
      // A hostNetwork Pod has the Node's hosts file (a kubelet does not manage it), plus cluster names with ClusterFirstWithHostNet.
      pod: spec.hostNetwork ? undefined : { namespace: rec.ns, name: rec.name, ip: rec.ip, hostname: spec.hostname, subdomain: spec.subdomain, hostAliases: spec.hostAliases },
      cluster: spec.hostNetwork ? policy === 'ClusterFirstWithHostNet' : policy === 'ClusterFirst' || policy === 'ClusterFirstWithHostNet',
    });
  }

  /** Creates the Pod's hosts file before its first process starts (none for a hostNetwork Pod that keeps the Node's resolver). */
  setupHosts(rec: PodRun): void {
    if (!this.opts.dns || rec.hostsFile) return;
    if (rec.pod.spec.hostNetwork && rec.pod.spec.dnsPolicy !== 'ClusterFirstWithHostNet') return;
    rec.hostsFile = path.join(rec.dir, 'hosts');
    this.writeHosts(rec);
  }

  private writeHosts(rec: PodRun): void {
    if (!rec.hostsFile) return;
    const content = this.hostsOf(rec);
    if (content === rec.hostsContent) return;
    try {
      rec.hostsMtimeMs = rewriteInPlace(rec.hostsFile, content, rec.hostsMtimeMs);
      rec.hostsContent = content;
    } catch (e) {
      if (!this.stopped && !rec.terminating) this.note(`${rec.key}: hosts file: ${String(e)}`);
    }
  }

  /** A Pod, Service or EndpointSlice changed: every Pod's hosts file, soon (bursts of events coalesce). */
  private dnsChanged(): void {
    if (this.dnsTimer || this.stopped) return;
    this.dnsTimer = setTimeout(() => {
      this.dnsTimer = undefined;
      if (this.stopped) return;
      for (const rec of this.records.values()) if (!rec.terminating) this.writeHosts(rec);
    }, 20);
  }

  // --- the loop ------------------------------------------------------------------------------------

  async start(): Promise<void> {
    this.podWatch = new Watcher(this.api, '/api/v1/pods', (type, obj) => this.onPodEvent(type, obj as PodObject), (s) => this.note(s));
    this.watchers.push(this.podWatch);
    if (this.opts.provisionVolumes) {
      this.pvcWatch = new Watcher(this.api, '/api/v1/persistentvolumeclaims', (type, obj) => {
        if (type !== 'DELETED') this.background(this.provision(obj as PvcObject));
      }, (s) => this.note(s));
      this.watchers.push(this.pvcWatch);
    }
    if (this.opts.dns) {
      const dnsEvent = <T extends { metadata: ObjectMeta }>(m: Map<string, T>) => (type: string, obj: { metadata: ObjectMeta }) => {
        const cur = m.get(obj.metadata.uid);
        if (type === 'DELETED') m.delete(obj.metadata.uid);
        else if (!cur || newerOrSame(obj.metadata, cur.metadata)) m.set(obj.metadata.uid, obj as T);
        this.dnsChanged();
      };
      this.svcWatch = new Watcher(this.api, '/api/v1/services', dnsEvent(this.services), (s) => this.note(s));
      this.sliceWatch = new Watcher(this.api, '/apis/discovery.k8s.io/v1/endpointslices', dnsEvent(this.slices), (s) => this.note(s));
      this.watchers.push(this.svcWatch, this.sliceWatch);
    }
    // The first list must work (else the API server is not there): later ones only note their errors.
    await this.resync(true);
    this.schedule();
  }

  private schedule(): void {
    if (this.stopped) return;
    this.resyncTimer = setTimeout(() => {
      this.resyncing = this.resync().finally(() => this.schedule());
    }, this.opts.resyncMs);
  }

  private podWatch: Watcher | undefined;
  private pvcWatch: Watcher | undefined;
  private svcWatch: Watcher | undefined;
  private sliceWatch: Watcher | undefined;

  private async resync(first = false): Promise<void> {
    if (this.stopped) return;
    try {
      if (!this.fixedNodes) {
        const nodes = await this.api.get<ListOf<NodeObject>>('/api/v1/nodes');
        this.nodeSet = new Set(nodes.items.filter((n) => n.metadata.annotations?.['kwok.x-k8s.io/node'] === 'fake').map((n) => n.metadata.name));
        this.nodeInfo = new Map(nodes.items.map((n) => [n.metadata.name, n]));
        this.foreignNodes.clear();
      } else if (this.nodeInfo.size === 0) {
        for (const n of this.fixedNodes) {
          const node = await this.api.find<NodeObject>(`/api/v1/nodes/${n}`);
          if (node) this.nodeInfo.set(n, node);
        }
      }
      if (this.opts.dns) {
        // Before the Pods: a Pod started by this resync gets the names its Services already have.
        const [svcs, slices] = await Promise.all([
          this.api.get<ListOf<DnsService & { metadata: ObjectMeta }>>('/api/v1/services'),
          this.api.get<ListOf<DnsEndpointSlice & { metadata: ObjectMeta }>>('/apis/discovery.k8s.io/v1/endpointslices'),
        ]);
        mergeList(this.services, svcs);
        mergeList(this.slices, slices);
        this.svcWatch?.listed(svcs.metadata.resourceVersion);
        this.sliceWatch?.listed(slices.metadata.resourceVersion);
        this.dnsChanged();
      }
      const pods = await this.api.get<ListOf<PodObject>>('/api/v1/pods');
      if (this.opts.dns) {
        mergeList(this.allPods, pods);
        this.dnsChanged();
      }
      const seen = new Set<string>();
      for (const p of pods.items) {
        seen.add(p.metadata.uid);
        if (this.records.has(p.metadata.uid) || (p.spec.nodeName && this.nodeSet.has(p.spec.nodeName))) this.enqueue(p);
      }
      for (const rec of [...this.records.values()]) {
        if (seen.has(rec.uid) || rec.terminating) continue;
        // Created after the list was taken, or gone? Ask.
        const cur = await this.api.find<PodObject>(`/api/v1/namespaces/${rec.ns}/pods/${rec.name}`);
        if (!cur || cur.metadata.uid !== rec.uid) this.vanished(rec);
      }
      this.podWatch?.listed(pods.metadata.resourceVersion);
      if (this.opts.provisionVolumes) {
        const pvcs = await this.api.get<ListOf<PvcObject>>('/api/v1/persistentvolumeclaims');
        for (const c of pvcs.items) await this.provision(c);
        this.pvcWatch?.listed(pvcs.metadata.resourceVersion);
        const pvs = await this.api.get<ListOf<PvObject>>(`/api/v1/persistentvolumes?labelSelector=${encodeURIComponent(PV_LABEL)}`);
        const live = new Set(pvcs.items.map((c) => c.metadata.uid));
        for (const pv of pvs.items) {
          const ref = pv.spec.claimRef;
          if (!ref?.uid || live.has(ref.uid) || pv.metadata.deletionTimestamp) continue;
          const cur = await this.api.find<PvcObject>(`/api/v1/namespaces/${ref.namespace}/persistentvolumeclaims/${ref.name}`);
          if (cur && cur.metadata.uid === ref.uid) continue;
          // Its claim is gone: the PV and its data go too (what reclaim policy Delete does with a provisioner).
          await this.api.request('DELETE', `/api/v1/persistentvolumes/${pv.metadata.name}`, undefined, { ok: [404] });
          const p = pv.spec.hostPath?.path ?? pv.spec.local?.path;
          if (p && p.startsWith(this.dir + path.sep)) fs.rmSync(p, { recursive: true, force: true });
          this.provisioned.delete(pv.metadata.name);
          this.note(`PV ${pv.metadata.name} of the deleted PVC ${ref.namespace}/${ref.name}: deleted with its directory`);
        }
      }
    } catch (e) {
      if (first) throw e;
      if (!this.stopped) this.note(`resync: ${String(e)}`);
    }
  }

  private onPodEvent(type: string, pod: PodObject): void {
    if (this.stopped) return;
    if (this.opts.dns) {
      const cur = this.allPods.get(pod.metadata.uid);
      if (type === 'DELETED') this.allPods.delete(pod.metadata.uid);
      else if (!cur || newerOrSame(pod.metadata, cur.metadata)) this.allPods.set(pod.metadata.uid, pod);
      this.dnsChanged();
    }
    const rec = this.records.get(pod.metadata.uid);
    if (type === 'DELETED') {
      if (rec) this.vanished(rec);
      return;
    }
    if (rec || !pod.spec.nodeName) {
      if (rec) this.enqueue(pod);
      return;
    }
    if (this.nodeSet.has(pod.spec.nodeName)) this.enqueue(pod);
    else if (!this.fixedNodes && !this.foreignNodes.has(pod.spec.nodeName)) {
      // A Node created since the last resync?
      const nodeName = pod.spec.nodeName;
      this.background(
        this.api.find<NodeObject>(`/api/v1/nodes/${nodeName}`).then((n) => {
          if (n?.metadata.annotations?.['kwok.x-k8s.io/node'] === 'fake') {
            this.nodeSet.add(nodeName);
            this.nodeInfo.set(nodeName, n);
            this.enqueue(pod);
          } else this.foreignNodes.add(nodeName);
        }),
      );
    }
  }

  /** One reconcile at a time per Pod; events that arrive meanwhile coalesce into the next one. */
  private enqueue(pod: PodObject): void {
    if (this.stopped) return;
    const uid = pod.metadata.uid;
    let q = this.queues.get(uid);
    if (!q) {
      q = { busy: false, next: undefined };
      this.queues.set(uid, q);
    }
    if (!q.next || newerOrSame(pod.metadata, q.next.metadata)) q.next = pod;
    if (!q.busy) void this.drain(uid, q);
  }

  /** Something of ours changed (a process started or exited, a probe flipped): report it. */
  poke(rec: PodRun): void {
    if (!this.stopped && this.records.get(rec.uid) === rec) this.enqueue(rec.pod);
  }

  private async drain(uid: string, q: { busy: boolean; next: PodObject | undefined }): Promise<void> {
    q.busy = true;
    try {
      while (q.next && !this.stopped) {
        const p = q.next;
        q.next = undefined;
        await this.reconcile(p).catch((e: unknown) => this.note(`reconcile ${p.metadata.namespace}/${p.metadata.name}: ${String(e)}`));
      }
    } finally {
      q.busy = false;
      if (!this.records.has(uid) && !q.next) this.queues.delete(uid);
    }
  }

  private async reconcile(incoming: PodObject): Promise<void> {
    let pod = incoming;
    let rec = this.records.get(pod.metadata.uid);
    if (rec) {
      if (newerOrSame(pod.metadata, rec.pod.metadata)) rec.pod = pod;
      pod = rec.pod;
    } else if (!pod.spec.nodeName || !this.nodeSet.has(pod.spec.nodeName)) return;
    if (pod.metadata.deletionTimestamp) {
      if (rec) void this.terminate(rec, true);
      // Grace 0 already (ours, or a forced delete): only finalizers keep it, and they are not ours.
      else if (pod.metadata.deletionGracePeriodSeconds !== 0) await this.deleteNow(pod);
      return;
    }
    if (!rec) {
      // Finished before this harness saw it (another harness ran it): nothing to run.
      if (pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed') return;
      rec = new PodRun(this, pod);
      this.records.set(rec.uid, rec);
      try {
        rec.allocate();
      } catch (e) {
        rec.fail(e instanceof Unsupported ? e.reason : 'NoAddress', (e as Error).message);
      }
      this.note(`${rec.key}: new Pod on ${rec.node}, address ${rec.ip || 'none'}`);
    }
    if (rec.terminating) return;
    if (!rec.prepared && !rec.failed) await rec.prepareAndStart();
    await this.patchStatus(rec);
  }

  private async patchStatus(rec: PodRun): Promise<void> {
    if (this.stopped || rec.terminating) return;
    const status = rec.status();
    if (projection(status) === projection(rec.pod.status)) return;
    const r = await this.api.request<PodObject>(
      'PATCH',
      `/api/v1/namespaces/${rec.ns}/pods/${rec.name}/status`,
      { metadata: { uid: rec.uid }, status },
      { contentType: 'application/strategic-merge-patch+json', ok: [404, 409] },
    );
    if (r.status === 200) {
      if (newerOrSame(r.body.metadata, rec.pod.metadata)) rec.pod = r.body;
      this.note(`${rec.key}: status ${status.phase} ready=${(status.conditions as Condition[]).find((c) => c.type === 'Ready')?.status} ip=${rec.ip}`);
    } else this.note(`${rec.key}: status patch: HTTP ${r.status}`);
  }

  private async deleteNow(pod: PodObject): Promise<void> {
    const ns = pod.metadata.namespace ?? 'default';
    const r = await this.api.request('DELETE', `/api/v1/namespaces/${ns}/pods/${pod.metadata.name}`, { apiVersion: 'v1', kind: 'DeleteOptions', gracePeriodSeconds: 0, preconditions: { uid: pod.metadata.uid } }, { ok: [404, 409] });
    this.note(`${ns}/${pod.metadata.name}: deleted with grace 0 (HTTP ${r.status})`);
  }

  /** The Pod vanished from the API without us seeing its deletionTimestamp (a forced delete): stop its processes. */
  private vanished(rec: PodRun): void {
    if (rec.terminating) return;
    this.note(`${rec.key}: gone from the API`);
    void this.terminate(rec, false);
  }

  /** SIGTERM, the grace period, SIGKILL; then (a deleted Pod) the delete with grace 0. */
  private terminate(rec: PodRun, deleteAfter: boolean): Promise<void> {
    if (rec.termination) return rec.termination;
    rec.terminating = true;
    const grace = rec.pod.metadata.deletionGracePeriodSeconds ?? rec.pod.spec.terminationGracePeriodSeconds ?? 30;
    this.note(`${rec.key}: terminating (grace ${grace} s)`);
    if (rec.all.some((c) => c.running())) this.event(rec, 'Normal', 'Killing', `Stopping container(s) ${rec.all.filter((c) => c.running()).map((c) => c.spec.name).join(', ')}`);
    rec.termination = (async () => {
      const end = Date.now() + grace * 1000;
      await Promise.all(rec.all.map((c) => c.stopProcess(Math.max(0, end - Date.now()))));
      if (deleteAfter && !this.stopped) {
        try {
          await this.deleteNow(rec.pod);
        } catch (e) {
          // The next resync finds it still there with its deletionTimestamp and no record: deleted then.
          this.note(`${rec.key}: delete: ${String(e)}`);
        }
      }
      this.records.delete(rec.uid);
      rec.release();
    })();
    this.background(rec.termination);
    return rec.termination;
  }

  // --- volumes -------------------------------------------------------------------------------------

  private claimDir(ns: string, claim: string, uid: string): string {
    return path.join(this.dir, 'volumes', ns, `${claim}-${uid}`);
  }

  private async provision(pvc: PvcObject): Promise<void> {
    if (this.stopped || !this.opts.provisionVolumes) return;
    if (pvc.spec.volumeName || pvc.metadata.deletionTimestamp || (pvc.status?.phase && pvc.status.phase !== 'Pending')) return;
    const name = `harness-pv-${pvc.metadata.uid}`;
    if (this.provisioned.has(name)) return;
    const ns = pvc.metadata.namespace ?? 'default';
    const dir = this.claimDir(ns, pvc.metadata.name, pvc.metadata.uid);
    fs.mkdirSync(dir, { recursive: true });
    const pv = {
      apiVersion: 'v1',
      kind: 'PersistentVolume',
      metadata: {
        name,
        labels: { [PV_LABEL]: 'true', ...(pvc.spec.selector?.matchLabels ?? {}) },
        annotations: { 'pv.kubernetes.io/provisioned-by': 'loam-kubelet-harness' },
      },
      spec: {
        capacity: { storage: pvc.spec.resources?.requests?.storage ?? '1Gi' },
        accessModes: pvc.spec.accessModes?.length ? pvc.spec.accessModes : ['ReadWriteOnce'],
        volumeMode: pvc.spec.volumeMode ?? 'Filesystem',
        storageClassName: pvc.spec.storageClassName ?? '',
        persistentVolumeReclaimPolicy: 'Retain',
        hostPath: { path: dir, type: 'DirectoryOrCreate' },
        claimRef: { apiVersion: 'v1', kind: 'PersistentVolumeClaim', namespace: ns, name: pvc.metadata.name, uid: pvc.metadata.uid },
      },
    };
    const r = await this.api.request('POST', '/api/v1/persistentvolumes', pv, { ok: [409] });
    this.provisioned.add(name);
    if (r.status === 201) this.note(`PVC ${ns}/${pvc.metadata.name}: PV ${name} at ${dir}`);
  }

  async prepareVolumes(rec: PodRun): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    const pod = rec.pod;
    for (const v of pod.spec.volumes ?? []) {
      const own = path.join(rec.dir, 'volumes', v.name);
      if (v.persistentVolumeClaim || v.ephemeral) {
        const claim = v.persistentVolumeClaim ? v.persistentVolumeClaim.claimName : `${rec.name}-${v.name}`;
        out.set(v.name, await this.pvcDir(rec.ns, claim));
      } else if (v.emptyDir) {
        fs.mkdirSync(own, { recursive: true });
        out.set(v.name, own);
      } else if (v.hostPath) {
        const d = path.join(this.dir, 'hostpath', path.posix.normalize(v.hostPath.path));
        fs.mkdirSync(d, { recursive: true });
        out.set(v.name, d);
      } else if (v.secret) {
        const s = await this.secret(rec.ns, v.secret.secretName, v.secret.optional);
        this.writeFiles(own, s ?? {}, v.secret.items, v.secret.defaultMode, `Secret ${v.secret.secretName}`, v.secret.optional);
        out.set(v.name, own);
      } else if (v.configMap) {
        const cm = await this.configMap(rec.ns, v.configMap.name, v.configMap.optional);
        this.writeFiles(own, cm ?? {}, v.configMap.items, v.configMap.defaultMode, `ConfigMap ${v.configMap.name}`, v.configMap.optional);
        out.set(v.name, own);
      } else if (v.downwardAPI) {
        fs.rmSync(own, { recursive: true, force: true });
        fs.mkdirSync(own, { recursive: true });
        for (const it of v.downwardAPI.items ?? []) this.writeFile(own, it.path, Buffer.from(await this.downward(rec, it)), it.mode ?? v.downwardAPI.defaultMode);
        out.set(v.name, own);
      } else if (v.projected) {
        fs.rmSync(own, { recursive: true, force: true });
        fs.mkdirSync(own, { recursive: true });
        const mode = v.projected.defaultMode;
        for (const src of v.projected.sources ?? []) {
          if (src.secret) {
            const s = await this.secret(rec.ns, src.secret.name, src.secret.optional);
            this.writeFiles(own, s ?? {}, src.secret.items, mode, `Secret ${src.secret.name}`, src.secret.optional, false);
          } else if (src.configMap) {
            const cm = await this.configMap(rec.ns, src.configMap.name, src.configMap.optional);
            this.writeFiles(own, cm ?? {}, src.configMap.items, mode, `ConfigMap ${src.configMap.name}`, src.configMap.optional, false);
          } else if (src.downwardAPI) {
            for (const it of src.downwardAPI.items ?? []) this.writeFile(own, it.path, Buffer.from(await this.downward(rec, it)), it.mode ?? mode);
          } else if (src.serviceAccountToken) {
            const t = src.serviceAccountToken;
            const sa = pod.spec.serviceAccountName ?? 'default';
            const r = await this.api.request<{ status: { token: string } }>('POST', `/api/v1/namespaces/${rec.ns}/serviceaccounts/${sa}/token`, {
              apiVersion: 'authentication.k8s.io/v1',
              kind: 'TokenRequest',
              spec: { audiences: t.audience ? [t.audience] : [], expirationSeconds: t.expirationSeconds ?? 3600, boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name: rec.name, uid: rec.uid } },
            }, { ok: [404] });
            if (r.status === 404) throw new NotYet('CreateContainerConfigError', `ServiceAccount ${rec.ns}/${sa} not found`);
            this.writeFile(own, t.path, Buffer.from(r.body.status.token), mode ?? 0o600);
          } else {
            throw new Unsupported('UnsupportedVolume', `volume ${v.name}: projected source ${Object.keys(src).join(',')} is not supported by the kubelet harness`);
          }
        }
        out.set(v.name, own);
      } else {
        const kind = Object.keys(v).filter((k) => k !== 'name').join(',');
        throw new Unsupported('UnsupportedVolume', `volume ${v.name} (${kind}): the kubelet harness maps PVCs, ephemeral, emptyDir, hostPath, secret, configMap, downwardAPI and projected volumes`);
      }
    }
    return out;
  }

  private async pvcDir(ns: string, claim: string): Promise<string> {
    const pvc = await this.api.find<PvcObject>(`/api/v1/namespaces/${ns}/persistentvolumeclaims/${claim}`);
    if (!pvc) throw new NotYet('ContainerCreating', `persistentvolumeclaim "${claim}" not found`);
    if (pvc.status?.phase !== 'Bound' || !pvc.spec.volumeName) throw new NotYet('ContainerCreating', `persistentvolumeclaim "${claim}" is not bound`);
    const pv = await this.api.find<PvObject>(`/api/v1/persistentvolumes/${pvc.spec.volumeName}`);
    const own = pv?.spec.hostPath?.path ?? pv?.spec.local?.path;
    const dir = own && own.startsWith(this.dir + path.sep) ? own : this.claimDir(ns, claim, pvc.metadata.uid);
    fs.mkdirSync(dir, { recursive: true });
    return dir;
  }

  /** A Secret's data as strings of bytes (undefined when optional and missing). */
  async secret(ns: string, name: string, optional?: boolean): Promise<Record<string, Buffer> | undefined> {
    const s = await this.api.find<{ data?: Record<string, string> }>(`/api/v1/namespaces/${ns}/secrets/${name}`);
    if (!s) {
      if (optional) return undefined;
      throw new NotYet('CreateContainerConfigError', `secret "${name}" not found`);
    }
    return Object.fromEntries(Object.entries(s.data ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64')]));
  }

  async configMap(ns: string, name: string, optional?: boolean): Promise<Record<string, Buffer> | undefined> {
    const cm = await this.api.find<{ data?: Record<string, string>; binaryData?: Record<string, string> }>(`/api/v1/namespaces/${ns}/configmaps/${name}`);
    if (!cm) {
      if (optional) return undefined;
      throw new NotYet('CreateContainerConfigError', `configmap "${name}" not found`);
    }
    return {
      ...Object.fromEntries(Object.entries(cm.data ?? {}).map(([k, v]) => [k, Buffer.from(v, 'utf8')])),
      ...Object.fromEntries(Object.entries(cm.binaryData ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64')])),
    };
  }

  private writeFile(dir: string, rel: string, data: Buffer, mode: number | undefined): void {
    const f = path.join(dir, rel);
    if (!path.resolve(f).startsWith(path.resolve(dir) + path.sep)) throw new Unsupported('InvalidPath', `volume file path ${rel} leaves its volume`);
    fs.mkdirSync(path.dirname(f), { recursive: true });
    fs.writeFileSync(f, data);
    fs.chmodSync(f, mode ?? 0o644);
  }

  private writeFiles(dir: string, data: Record<string, Buffer>, items: KeyToPath[] | undefined, mode: number | undefined, what: string, optional: boolean | undefined, fresh = true): void {
    if (fresh) {
      fs.rmSync(dir, { recursive: true, force: true });
      fs.mkdirSync(dir, { recursive: true });
    }
    if (items?.length) {
      for (const it of items) {
        const v = data[it.key];
        if (v === undefined) {
          if (optional) continue;
          throw new NotYet('CreateContainerConfigError', `${what} has no key ${it.key}`);
        }
        this.writeFile(dir, it.path, v, it.mode ?? mode);
      }
    } else for (const [k, v] of Object.entries(data)) this.writeFile(dir, k, v, mode);
  }

  // --- environment ---------------------------------------------------------------------------------

  private fieldValue(rec: PodRun, fieldPath: string): string {
    const md = rec.pod.metadata;
    const sub = /^metadata\.(labels|annotations)\['(.+)'\]$/.exec(fieldPath);
    if (sub) return (sub[1] === 'labels' ? md.labels : md.annotations)?.[sub[2]!] ?? '';
    const kv = (m: Record<string, string> | undefined) =>
      Object.entries(m ?? {})
        .sort()
        .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
        .join('\n');
    switch (fieldPath) {
      case 'metadata.name':
        return md.name;
      case 'metadata.namespace':
        return rec.ns;
      case 'metadata.uid':
        return md.uid;
      case 'metadata.labels':
        return kv(md.labels);
      case 'metadata.annotations':
        return kv(md.annotations);
      case 'spec.nodeName':
        return rec.node;
      case 'spec.serviceAccountName':
        return rec.pod.spec.serviceAccountName ?? 'default';
      case 'status.hostIP':
      case 'status.hostIPs':
        return this.hostIP(rec.node);
      case 'status.podIP':
      case 'status.podIPs':
        return rec.ip;
      default:
        throw new Unsupported('CreateContainerConfigError', `fieldRef ${fieldPath} is not supported`);
    }
  }

  private resourceValue(rec: PodRun, self: Container, ref: ResourceFieldRef): string {
    const c = ref.containerName ? [...rec.pod.spec.containers, ...(rec.pod.spec.initContainers ?? [])].find((x) => x.name === ref.containerName) : self;
    if (!c) throw new Unsupported('CreateContainerConfigError', `resourceFieldRef: no container ${ref.containerName}`);
    const [kind, res] = ref.resource.split('.', 2) as [string, string];
    const limits = c.resources?.limits ?? {};
    const requests = c.resources?.requests ?? {};
    let q: string | number | undefined = kind === 'limits' ? limits[res] : (requests[res] ?? limits[res]);
    if (q === undefined) q = kind === 'limits' ? (this.nodeInfo.get(rec.node)?.status?.allocatable?.[res] ?? '0') : '0';
    const divisor = parseQuantity(ref.divisor ?? 1) || 1;
    return String(Math.ceil(parseQuantity(q) / divisor));
  }

  private async downward(rec: PodRun, it: DownwardItem): Promise<string> {
    if (it.fieldRef) return this.fieldValue(rec, it.fieldRef.fieldPath);
    if (it.resourceFieldRef) return this.resourceValue(rec, rec.pod.spec.containers[0]!, it.resourceFieldRef);
    return '';
  }

  /** The container's environment as a kubelet builds it (mount paths not yet rewritten). */
  async resolveEnv(rec: PodRun, c: Container): Promise<Map<string, string>> {
    const env = new Map<string, string>();
    for (const from of c.envFrom ?? []) {
      const prefix = from.prefix ?? '';
      let data: Record<string, Buffer> | undefined;
      if (from.configMapRef) data = await this.configMap(rec.ns, from.configMapRef.name, from.configMapRef.optional);
      else if (from.secretRef) data = await this.secret(rec.ns, from.secretRef.name, from.secretRef.optional);
      for (const [k, v] of Object.entries(data ?? {})) if (/^[-._a-zA-Z][-._a-zA-Z0-9]*$/.test(prefix + k)) env.set(prefix + k, v.toString('utf8'));
    }
    for (const e of c.env ?? []) {
      const vf = e.valueFrom;
      if (!vf) {
        env.set(e.name, expandVars(e.value ?? '', env));
        continue;
      }
      if (vf.fieldRef) env.set(e.name, this.fieldValue(rec, vf.fieldRef.fieldPath));
      else if (vf.resourceFieldRef) env.set(e.name, this.resourceValue(rec, c, vf.resourceFieldRef));
      else if (vf.configMapKeyRef || vf.secretKeyRef) {
        const ref = (vf.configMapKeyRef ?? vf.secretKeyRef)!;
        const what = vf.configMapKeyRef ? 'configmap' : 'secret';
        const data = vf.configMapKeyRef ? await this.configMap(rec.ns, ref.name, ref.optional) : await this.secret(rec.ns, ref.name, ref.optional);
        const v = data?.[ref.key];
        if (v === undefined) {
          if (ref.optional) continue;
          throw new NotYet('CreateContainerConfigError', `couldn't find key ${ref.key} in ${what === 'configmap' ? 'ConfigMap' : 'Secret'} ${rec.ns}/${ref.name}`);
        }
        env.set(e.name, v.toString('utf8'));
      }
    }
    return env;
  }

  // --- programs ------------------------------------------------------------------------------------

  /** What to run for a container, from its image (see the file comment). Throws Unsupported. */
  async program(pod: PodObject, c: Container, command: string[] | undefined, args: string[]): Promise<Program> {
    const image = c.image ?? '';
    const custom = this.opts.runImage?.({ image, command, args, pod, container: c.name });
    if (custom) return custom;
    /** The arguments after the entrypoint: a `command` must name the entrypoint itself. */
    const after = (entry: string): string[] => {
      if (!command?.length) return args;
      const first = command[0]!;
      if (path.posix.basename(first) === entry) return [...command.slice(1), ...args];
      if (entry === 'loam' && path.posix.basename(first) === 'node' && /(loam|cli)\.js$/.test(command[1] ?? '')) return [...command.slice(2), ...args];
      const shell = /^(sh|bash|ash|dash)$/.test(path.posix.basename(first));
      throw new Unsupported(
        'UnsupportedImage',
        `image ${image}: command ${JSON.stringify(command)} ${shell ? 'is a shell command, which the kubelet harness does not run' : `does not start with the image's entrypoint ${entry}`}`,
      );
    };
    if (/loam/i.test(image)) return { file: process.execPath, args: [LOAM_BIN, ...after('loam')] };
    if (/etcd/i.test(image)) {
      const rest = after('etcd');
      const bin = await ensureEtcd();
      const arch = process.arch === 'x64' ? 'amd64' : process.arch === 'ppc64' && os.endianness() === 'LE' ? 'ppc64le' : process.arch;
      return { file: bin, args: rest, env: arch === 'amd64' || arch === 'ppc64le' ? {} : { ETCD_UNSUPPORTED_ARCH: arch } };
    }
    throw new Unsupported('UnsupportedImage', `image ${image || '(none)'}: the kubelet harness runs only images whose name contains "loam" (this repository's CLI) or "etcd" (Debian's etcd)`);
  }

  // --- the public API ------------------------------------------------------------------------------

  nodes(): string[] {
    return [...this.nodeSet].sort();
  }

  private find(ref: PodRef): PodRun | undefined {
    const key = refKey(ref);
    const all = [...this.records.values()].filter((r) => r.key === key);
    return all.find((r) => !r.terminating) ?? all[all.length - 1];
  }

  processOf(pod: PodRef): PodProcess | undefined {
    return this.find(pod)?.info();
  }

  pods(): PodProcess[] {
    return [...this.records.values()].map((r) => r.info());
  }

  async kill(pod: PodRef, signal: NodeJS.Signals = 'SIGKILL', container?: string): Promise<number> {
    const rec = this.find(pod);
    if (!rec) throw new Error(`kubelet harness: no Pod ${refKey(pod)}`);
    const c = container ? rec.all.find((x) => x.spec.name === container) : rec.mains[0];
    if (!c) throw new Error(`kubelet harness: Pod ${rec.key} has no container ${container}`);
    if (!c.running()) throw new Error(`kubelet harness: container ${c.spec.name} of ${rec.key} runs no process (${c.state})`);
    const pid = c.child!.pid!;
    const exited = c.exited;
    this.note(`${rec.key} ${c.spec.name}: test sends ${signal} to pid ${pid}`);
    c.signal(signal);
    if (['SIGKILL', 'SIGTERM', 'SIGINT', 'SIGQUIT'].includes(signal)) {
      if ((await within(exited, 30_000)) === 'late') throw new Error(`kubelet harness: pid ${pid} did not exit within 30 s of ${signal}`);
    }
    return pid;
  }

  async waitProcess(pod: PodRef, opts: { timeoutMs?: number; notPid?: number; notUid?: string; container?: string } = {}): Promise<PodProcess> {
    const end = Date.now() + (opts.timeoutMs ?? 60_000);
    for (;;) {
      const p = this.processOf(pod);
      const c = p && (opts.container ? p.containers.find((x) => x.name === opts.container) : p.containers.find((x) => !x.init));
      if (p && c?.running && c.pid !== opts.notPid && p.uid !== opts.notUid && !p.terminating) return p;
      if (Date.now() > end) throw new Error(`kubelet harness: no running process for ${refKey(pod)} within ${opts.timeoutMs ?? 60_000} ms\n${this.log().slice(-4000)}`);
      await delay(50);
    }
  }

  volumeDir(claim: string, namespace = 'default'): string | undefined {
    for (const r of this.records.values()) {
      if (r.ns !== namespace) continue;
      for (const v of r.pod.spec.volumes ?? []) {
        const name = v.persistentVolumeClaim?.claimName ?? (v.ephemeral ? `${r.name}-${v.name}` : undefined);
        if (name === claim && r.volumes.has(v.name)) return r.volumes.get(v.name);
      }
    }
    const base = path.join(this.dir, 'volumes', namespace);
    const found = readdirOr(base).filter((d) => d.startsWith(`${claim}-`) && /^[0-9a-f-]{36}$/.test(d.slice(claim.length + 1)));
    return found.length === 1 ? path.join(base, found[0]!) : undefined;
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    liveHarnesses.delete(this);
    clearTimeout(this.resyncTimer);
    clearTimeout(this.dnsTimer);
    for (const w of this.watchers) w.stop();
    await Promise.all([...this.records.values()].map((r) => Promise.all(r.all.map((c) => c.kill()))));
    // Probes run as children too (exec): none outlives the harness.
    for (const c of this.children) c.kill('SIGKILL');
    this.api.close();
    await this.resyncing.catch(() => undefined);
    await Promise.all([...this.pending]);
    for (const r of this.records.values()) r.release();
    this.records.clear();
    fs.rmSync(this.dir, { recursive: true, force: true });
    fs.rmSync(this.recordFile, { force: true });
  }
}

function readdirOr(d: string): string[] {
  try {
    return fs.readdirSync(d);
  } catch {
    return [];
  }
}

/**
 * Starts playing the kubelet for `kube`'s fake Nodes (see the file comment). Resolves after the
 * first list of Nodes and Pods; rejects if Pods cannot get loopback addresses of their own.
 */
export async function startKubelet(kube: Pick<KubeCluster, 'kubeconfig'>, opts: KubeletOptions = {}): Promise<Kubelet> {
  installExitHook();
  reapDeadOwners();
  if (!(await canBind('127.0.0.2'))) throw new Error('kubelet harness: cannot bind 127.0.0.2: Pods need loopback addresses of their own (127.0.0.0/8 on lo)');
  fs.mkdirSync(REGISTRY, { recursive: true });
  if (opts.dns !== false) await checkDns();
  const conn = connFromKubeconfig(kube.kubeconfig);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'loam-kubelet-'));
  const h = new Harness(dir, conn, opts);
  liveHarnesses.add(h);
  try {
    await h.start();
  } catch (e) {
    await h.stop();
    throw e;
  }
  return h;
}

/** Stops every harness this process started and has not stopped yet (test/setup.ts runs it after each file). */
export async function cleanupKubelet(): Promise<void> {
  const errors: unknown[] = [];
  for (const h of [...liveHarnesses]) await h.stop().catch((e: unknown) => void errors.push(e));
  if (errors.length) throw errors[0];
}
