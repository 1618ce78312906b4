// Shared helpers of the benchmark suite: spawn a storage node or the bare echo server as child
// processes, time things, and format the one result line each benchmark prints.
// Plain JavaScript so it runs with `node` directly (no TypeScript loader).
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';
import vm from 'node:vm';
import fsp from 'node:fs/promises';
import net from 'node:net';
import grpc from '@grpc/grpc-js';
import { Persistent, registerModel } from '@loam/sdk';
import { CommitRequest, CommitResponse } from '@loam/sdk/wire';

export const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(BENCH_DIR, '..');
export const CLI = path.join(ROOT, 'node/dist/cli.js');
export const ECHO_SERVER = path.join(BENCH_DIR, 'echo-server.mjs');
export const MAX_MESSAGE = 128 * 1024 * 1024;

// ------------------------------------------------------------------ cleanup

const cleanups = new Set();
const liveChildren = new Set();
const liveDirs = new Set();

/** Registers `fn` to run at the end of the current benchmark (or at process exit). */
export function onCleanup(fn) {
  cleanups.add(fn);
  return () => cleanups.delete(fn);
}

/** Runs every registered cleanup (newest first); never throws. */
export async function cleanupAll() {
  const fns = [...cleanups].reverse();
  cleanups.clear();
  for (const fn of fns) {
    try {
      await fn();
    } catch (e) {
      process.stderr.write(`bench: cleanup failed: ${e?.message ?? e}\n`);
    }
  }
}

// Last resort when the runner dies: no child or temp dir outlives it.
process.on('exit', () => {
  for (const c of liveChildren) {
    try {
      c.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  for (const d of liveDirs) fs.rmSync(d, { recursive: true, force: true });
});
// Ctrl-C or a kill: exit through the handler above instead of leaving children behind.
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.once(sig, () => process.exit(130));

/** A fresh temp dir under os.tmpdir(), removed by cleanupAll(). */
export function tempDir(prefix = 'loam-bench-') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  liveDirs.add(dir);
  onCleanup(() => {
    fs.rmSync(dir, { recursive: true, force: true });
    liveDirs.delete(dir);
  });
  return dir;
}

// ------------------------------------------------------------------ child processes

/**
 * Spawns `node ...args` and resolves with the first stdout JSON line whose msg is 'ready'
 * (rejecting with its output if it exits or the deadline passes first). The child is killed by
 * cleanupAll() if the benchmark does not stop it itself.
 */
function spawnReady(args, { timeoutMs = 60_000, env } = {}) {
  const t0 = process.hrtime.bigint();
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: env ? { ...process.env, ...env } : process.env });
  liveChildren.add(child);
  const logs = [];
  let stderr = '';
  child.stderr.on('data', (d) => {
    if (stderr.length < 64 * 1024) stderr += String(d);
  });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => {
    liveChildren.delete(child);
    resolve(code ?? signal);
  }));
  const waitExit = async (ms) => {
    let t;
    try {
      return await Promise.race([exited, new Promise((_, rej) => (t = setTimeout(() => rej(new Error(`child ${child.pid} did not exit within ${ms} ms`)), ms)))]);
    } finally {
      clearTimeout(t);
    }
  };
  const handle = {
    child,
    logs,
    get stderr() {
      return stderr;
    },
    /** SIGTERM and wait for a clean exit. */
    async stop(ms = 15_000) {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      try {
        return await waitExit(ms);
      } catch (e) {
        child.kill('SIGKILL');
        await exited;
        throw e;
      }
    },
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      await exited;
    },
  };
  onCleanup(() => handle.kill());
  const ready = new Promise((resolve, reject) => {
    const rl = readline.createInterface({ input: child.stdout });
    rl.on('line', (line) => {
      let entry;
      try {
        entry = JSON.parse(line);
      } catch {
        entry = { raw: line };
      }
      if (logs.length < 10_000) logs.push(entry);
      if (entry.msg === 'ready') resolve({ entry, ms: Number(process.hrtime.bigint() - t0) / 1e6 });
    });
    void exited.then((code) => reject(new Error(`${path.basename(String(args.find((a) => a.endsWith('.js') || a.endsWith('.mjs'))))} exited with ${code} before ready: ${stderr}\n${JSON.stringify(logs).slice(0, 4000)}`)));
  });
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`child not ready within ${timeoutMs} ms: ${stderr}`)), timeoutMs);
  });
  return Promise.race([ready, deadline]).then(
    (r) => {
      clearTimeout(timer);
      return { ...handle, readyEntry: r.entry, readyMs: r.ms };
    },
    async (e) => {
      clearTimeout(timer);
      await handle.kill();
      throw e;
    },
  );
}

/** Extra node flags for the storage-node children, e.g. BENCH_NODE_FLAGS='--cpu-prof --cpu-prof-dir=/tmp/prof'. */
function nodeFlags() {
  const f = process.env.BENCH_NODE_FLAGS;
  return f ? f.split(/\s+/).filter(Boolean) : [];
}

/**
 * Starts `loam dev` as a child process on free ports; resolves once it logs `ready`, with its
 * url, port and `readyMs` (spawn to ready line, which the CLI prints after log recovery).
 * `env` adds variables to the child's environment (e.g. AWS credentials for the S3 tier).
 */
export async function startNode({ dataDir, args = [], timeoutMs = 60_000, execArgv = [], env } = {}) {
  const dir = dataDir ?? tempDir('loam-bench-node-');
  const h = await spawnReady([...nodeFlags(), ...execArgv, CLI, 'dev', '--data', dir, '--port', '0', '--metrics-port', '0', '--log-level', 'info', ...args], { timeoutMs, env });
  const url = String(h.readyEntry.endpoint);
  const port = Number(/:(\d+)\//.exec(url)[1]);
  return { ...h, url, port, metricsPort: Number(h.readyEntry.metricsPort), dataDir: dir };
}

/** Starts the bare gRPC echo server (bench/echo-server.mjs) in a child process. */
export async function startEcho({ timeoutMs = 30_000 } = {}) {
  const h = await spawnReady([...(process.env.BENCH_ECHO_FLAGS ?? '').split(/\s+/).filter(Boolean), ECHO_SERVER], { timeoutMs });
  return { ...h, port: Number(h.readyEntry.port), address: `127.0.0.1:${h.readyEntry.port}` };
}

/** Runs a node script in a child process and resolves with the last JSON line it prints on stdout. */
export function runChildJson(args, { timeoutMs = 120_000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    liveChildren.add(child);
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += String(d)));
    child.stderr.on('data', (d) => (err += String(d)));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      liveChildren.delete(child);
      if (code !== 0) {
        reject(new Error(`child ${args.join(' ')} exited with ${code ?? signal}: ${err}`));
        return;
      }
      const lines = out.trim().split('\n');
      try {
        resolve(JSON.parse(lines[lines.length - 1]));
      } catch {
        reject(new Error(`child printed no JSON: ${out}\n${err}`));
      }
    });
  });
}

// ------------------------------------------------------------------ bare gRPC echo client

const raw = {
  serialize: (b) => b,
  deserialize: (b) => b,
};

const rawMethod = (p) => ({
  path: p, requestStream: false, responseStream: false,
  requestSerialize: raw.serialize, requestDeserialize: raw.deserialize, responseSerialize: raw.serialize, responseDeserialize: raw.deserialize,
});
/** The echo service: Echo sends the request back; Reply answers with u32le(request[0..4]) zero bytes. */
export const ECHO_SERVICE = { echo: rawMethod('/bench.Echo/Echo'), reply: rawMethod('/bench.Echo/Reply') };

/** A request for Reply of `requestBytes` bytes asking for `replyBytes` bytes back. */
export function replyRequest(requestBytes, replyBytes) {
  const b = Buffer.alloc(Math.max(4, requestBytes));
  b.writeUInt32LE(replyBytes, 0);
  return b;
}

/**
 * A client of the echo child with the same channel options as the SDK's NodeConnection, and
 * calls made the same way (fresh Metadata and a deadline per call), so the only difference to a
 * Loam call is what Loam does on top of the transport.
 */
export async function echoClient(address) {
  const Ctor = grpc.makeGenericClientConstructor(ECHO_SERVICE, 'Echo');
  const client = new Ctor(address, grpc.credentials.createInsecure(), {
    'grpc.max_receive_message_length': MAX_MESSAGE,
    'grpc.max_send_message_length': MAX_MESSAGE,
    'grpc.keepalive_time_ms': 30_000,
    'grpc.enable_retries': 0,
  });
  await new Promise((resolve, reject) => client.waitForReady(Date.now() + 10_000, (e) => (e ? reject(e) : resolve())));
  const call = (method) => (buf) =>
    new Promise((resolve, reject) => {
      client[method](buf, new grpc.Metadata(), { deadline: Date.now() + 30_000 }, (err, res) => (err ? reject(err) : resolve(res)));
    });
  const c = { echo: call('echo'), reply: call('reply'), close: () => client.close() };
  onCleanup(() => client.close());
  return c;
}

// ------------------------------------------------------------------ timing and statistics

/** Monotonic milliseconds. */
export function now() {
  return Number(process.hrtime.bigint()) / 1e6;
}

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  if (n === 0) return NaN;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

export function mean(xs) {
  return xs.reduce((a, b) => a + b, 0) / xs.length;
}

/** Mean ms per call of `n` sequential awaited calls of fn(i). */
export async function sequentialMs(fn, n) {
  const t0 = now();
  for (let i = 0; i < n; i++) await fn(i);
  return (now() - t0) / n;
}

/**
 * Runs `workers` loops of `await fn(worker, i)` for `ms` milliseconds; returns completed calls
 * per second. Every worker finishes its current call before the round ends, and those calls
 * are counted in the elapsed time, so nothing in flight is lost or miscounted.
 */
export async function concurrentRate(workers, ms, fn) {
  let stop = false;
  let done = 0;
  const t0 = now();
  const timer = setTimeout(() => (stop = true), ms);
  await Promise.all(
    Array.from({ length: workers }, async (_, w) => {
      for (let i = 0; !stop; i++) {
        await fn(w, i);
        done++;
      }
    }),
  );
  clearTimeout(timer);
  return (done * 1000) / (now() - t0);
}

/** Full GC (works without --expose-gc on the command line). */
export function gc() {
  if (typeof globalThis.gc !== 'function') {
    v8.setFlagsFromString('--expose-gc');
    globalThis.gc = vm.runInNewContext('gc');
  }
  globalThis.gc();
}

/**
 * The durability floor: ms to append `n` bytes to a file and fdatasync it, with the same async
 * FileHandle calls the segment log uses (write at the end of a growing file, then datasync).
 * Median of `rounds`, after one warm-up.
 */
export async function writeFsyncMs(dir, n, rounds = 5) {
  const file = path.join(dir, `fsync-probe-${process.pid}`);
  const h = await fsp.open(file, 'w+');
  const buf = Buffer.alloc(n, 0x5a);
  let pos = 0;
  const times = [];
  try {
    for (let r = 0; r <= rounds; r++) {
      const t0 = now();
      let written = 0;
      while (written < n) written += (await h.write(buf, written, n - written, pos + written)).bytesWritten;
      await h.datasync();
      const t = now() - t0;
      pos += n;
      if (r > 0) times.push(t);
    }
  } finally {
    await h.close();
    fs.rmSync(file, { force: true });
  }
  return median(times);
}

/** Gives the event loop, the child processes and the GC a moment between phases. */
export function settle(ms = 100) {
  return new Promise((r) => setTimeout(r, ms));
}

export function quiet() {
  return process.env.BENCH_VERBOSE ? false : true;
}

/** Progress notes on stderr (stdout carries only the result lines). */
export function note(msg) {
  if (!quiet()) process.stderr.write(`  ${msg}\n`);
}

// ------------------------------------------------------------------ formatting

/** Number with sensible precision: 61234, 612.3, 6.12, 0.0612. */
export function fmt(x) {
  if (!Number.isFinite(x)) return String(x);
  const a = Math.abs(x);
  if (a >= 1000) return String(Math.round(x));
  if (a >= 100) return x.toFixed(1).replace(/\.0$/, '');
  if (a >= 10) return x.toFixed(1);
  if (a >= 1) return x.toFixed(2);
  return x.toPrecision(3);
}

export function ratio(x) {
  return `${x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2)}x`;
}

export function bytes(n) {
  if (n >= 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  if (n >= 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${n} B`;
}

export function verdict(ok) {
  return ok ? 'PASS' : 'FAIL';
}

// ------------------------------------------------------------------ models and data

/** A small object of the shape the targets talk about: about 200 bytes of fields. */
export class BenchPerson extends Persistent {
  constructor(i) {
    super();
    this.name = `Person ${i}`;
    this.email = `person${i}@example.com`;
    this.age = 20 + (i % 60);
    this.tags = ['alpha', 'beta', 'gamma'];
    this.note = 'x'.repeat(100);
    this.counter = 0;
  }
}
registerModel(BenchPerson, 'BenchPerson');

/** A root holding many persons: persisting it persists all of them in one batch. */
export class BenchBatch extends Persistent {
  constructor(items) {
    super();
    this.items = items;
  }
}
registerModel(BenchBatch, 'BenchBatch');

/** Total bytes of a node data dir's log segments. */
export function logBytes(dataDir) {
  const dir = path.join(dataDir, 'log');
  let n = 0;
  for (const f of fs.readdirSync(dir)) if (f.endsWith('.seg')) n += fs.statSync(path.join(dir, f)).size;
  return n;
}

// ------------------------------------------------------------------ process and node metrics

/** CPU ms (user + system) a child process used so far; undefined where /proc is missing. */
export function cpuMsOf(pid) {
  try {
    const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / 100; // clock ticks, USER_HZ = 100 on Linux
  } catch {
    return undefined;
  }
}

/** The node's Prometheus metrics as a map `name{labels}` -> value. */
export async function scrapeMetrics(metricsPort) {
  const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
  const text = await res.text();
  const out = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

/** Sum of every series of metric `name` (any labels) whose label text contains `filter`. */
export function metricSum(m, name, filter = '') {
  let s = 0;
  for (const [k, v] of m) if ((k === name || k.startsWith(`${name}{`)) && k.includes(filter)) s += v;
  return s;
}

/**
 * CPU accounting of the whole machine vs this process and its reaped children (Linux /proc), to
 * tell whether something else competed for the CPUs during a benchmark. Undefined elsewhere.
 */
export function cpuSnapshot() {
  try {
    const cpu = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    // User time only: the kernel work a benchmark causes (writeback, journal, loopback softirq)
    // runs in kernel threads and would otherwise count as somebody else's.
    const busy = cpu[0] + cpu[1]; // user nice
    const f = fs.readFileSync('/proc/self/stat', 'utf8').split(') ')[1].split(' ').map(Number);
    const own = f[11] + f[13]; // utime cutime
    return { busy, own, at: now() };
  } catch {
    return undefined;
  }
}

/** Share of all CPUs (0..1) other processes spent in user mode between two snapshots. */
export function foreignCpuShare(a, b) {
  if (!a || !b) return undefined;
  const ticks = ((b.at - a.at) / 1000) * 100 * os.cpus().length; // USER_HZ = 100
  return Math.max(0, (b.busy - a.busy - (b.own - a.own)) / ticks);
}

// ------------------------------------------------------------------ clusters on a real etcd

/** A free loopback TCP port (bound once on port 0, then released). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen({ port: 0, host: '127.0.0.1', exclusive: true }, () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** LOAM_ETCD_BIN, else etcd on PATH, else Debian's /usr/bin/etcd (package etcd-server). */
function etcdBinary() {
  const candidates = [process.env.LOAM_ETCD_BIN, ...(process.env.PATH ?? '').split(path.delimiter).filter(Boolean).map((d) => path.join(d, 'etcd')), '/usr/bin/etcd', '/usr/local/bin/etcd'];
  for (const c of candidates) {
    if (!c) continue;
    try {
      fs.accessSync(c, fs.constants.X_OK);
      if (fs.statSync(c).isFile()) return c;
    } catch {
      // next
    }
  }
  throw new Error('no etcd binary (LOAM_ETCD_BIN, PATH, /usr/bin/etcd): apt-get install -y etcd-server');
}

async function etcdHealthy(url) {
  try {
    const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(1000) });
    const body = await res.json();
    return res.ok && String(body.health) === 'true';
  } catch {
    return false;
  }
}

/**
 * Starts a one-member etcd (the real binary) on free loopback ports, data in a temp dir, with
 * the test harness's flags (test/harness/etcd.ts); resolves once GET /health says "true".
 * `pause()` / `resume()` SIGSTOP / SIGCONT it (to make etcd unresponsive on purpose); the
 * cleanup resumes and kills it whatever happened.
 */
export async function startEtcd({ timeoutMs = 30_000 } = {}) {
  const bin = etcdBinary();
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('ETCD_')) env[k] = v;
  if (process.arch !== 'x64' && process.arch !== 'ppc64') env.ETCD_UNSUPPORTED_ARCH = process.arch === 'ia32' ? '386' : process.arch;
  for (let attempt = 1; ; attempt++) {
    const dir = tempDir('loam-bench-etcd-');
    const clientPort = await freePort();
    let peerPort = await freePort();
    while (peerPort === clientPort) peerPort = await freePort();
    const url = `http://127.0.0.1:${clientPort}`;
    const peer = `http://127.0.0.1:${peerPort}`;
    const child = spawn(bin, [
      '--name', 'm0', '--data-dir', path.join(dir, 'm0'),
      '--listen-client-urls', url, '--advertise-client-urls', url,
      '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer,
      '--initial-cluster', `m0=${peer}`, '--initial-cluster-token', `loam-bench-${path.basename(dir)}`,
      '--initial-cluster-state', 'new', '--heartbeat-interval', '50', '--election-timeout', '500',
      '--logger', 'zap', '--log-outputs', 'stderr', '--log-level', 'warn',
    ], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    liveChildren.add(child);
    let output = '';
    child.stderr.on('data', (d) => {
      output += String(d);
      if (output.length > 64 * 1024) output = output.slice(-32 * 1024);
    });
    const exited = new Promise((resolve) => child.once('exit', (code, signal) => {
      liveChildren.delete(child);
      resolve(code ?? signal);
    }));
    const alive = () => child.exitCode === null && child.signalCode === null;
    const kill = async () => {
      if (!alive()) return;
      try {
        child.kill('SIGCONT');
      } catch {
        // gone
      }
      child.kill('SIGKILL');
      await exited;
    };
    onCleanup(kill);
    const end = Date.now() + timeoutMs;
    while (alive() && Date.now() < end && !(await etcdHealthy(url))) await settle(50);
    if (!alive() || Date.now() >= end) {
      await kill();
      if (/address already in use/i.test(output) && attempt < 3) continue;
      throw new Error(`etcd did not become healthy: ${output.slice(-4000)}`);
    }
    return {
      url,
      pid: child.pid,
      dataDir: dir,
      /** SIGSTOP: etcd keeps its sockets but answers nothing until resume(). */
      pause: () => alive() && child.kill('SIGSTOP'),
      resume: () => alive() && child.kill('SIGCONT'),
      /** Process state letter from /proc (T when stopped), undefined where /proc is missing. */
      state: () => {
        try {
          return fs.readFileSync(`/proc/${child.pid}/stat`, 'utf8').split(') ')[1].split(' ')[0];
        } catch {
          return undefined;
        }
      },
      healthy: () => etcdHealthy(url),
      stop: kill,
    };
  }
}

let benchSecretFile;

/** The cluster secret file every benchmark cluster node of this process shares (made on first use). */
function clusterSecretFile() {
  if (!benchSecretFile || !fs.existsSync(benchSecretFile)) {
    benchSecretFile = path.join(tempDir('loam-bench-secret-'), 'cluster-secret');
    fs.writeFileSync(benchSecretFile, `${randomBytes(32).toString('base64')}\n`, { mode: 0o600 });
  }
  return benchSecretFile;
}

/**
 * Starts `loam node` (one cluster node, its own process) against `etcdUrl` under `prefix`;
 * resolves once it logs `ready`, with its url, node number, port, peer port, metrics port and
 * data dir. (The ready line is an info log: --log-level warn would hide it.)
 */
export async function startClusterNode({ etcdUrl, prefix, dataDir, timeoutMs = 60_000, execArgv = [] }) {
  const dir = dataDir ?? tempDir('loam-bench-cnode-');
  const h = await spawnReady([
    ...nodeFlags(), ...execArgv, CLI, 'node', '--etcd', etcdUrl, '--prefix', prefix,
    '--listen', '127.0.0.1:0', '--peer-listen', '127.0.0.1:0', '--cluster-secret-file', clusterSecretFile(),
    '--data', dir, '--metrics-port', '0', '--log-level', 'info',
  ], { timeoutMs });
  const url = String(h.readyEntry.endpoint);
  const port = Number(/:(\d+)\//.exec(url)[1]);
  return {
    ...h, url, port, peerPort: Number(h.readyEntry.peerPort), number: Number(h.readyEntry.number),
    metricsPort: Number(h.readyEntry.metricsPort), dataDir: dir,
  };
}

/**
 * A real etcd plus `nodes` cluster node processes, started one after the other so that node i
 * gets number i. `stop()` stops the nodes (SIGTERM, clean) and then etcd; cleanupAll() does it
 * anyway.
 */
export async function startCluster({ nodes = 2 } = {}) {
  const etcd = await startEtcd();
  const prefix = `/loam/bench-${process.pid}-${Date.now().toString(36)}`;
  const list = [];
  for (let i = 0; i < nodes; i++) list.push(await startClusterNode({ etcdUrl: etcd.url, prefix }));
  list.sort((a, b) => a.number - b.number);
  return {
    etcd,
    nodes: list,
    prefix,
    async stop() {
      etcd.resume();
      await Promise.all(list.map((n) => n.stop().catch(() => n.kill())));
      await etcd.stop();
    },
  };
}

/**
 * Runs `fn` (one operation that sends one Commit) with the client's commit call watched, and
 * returns the exact protobuf sizes of that commit's request and response. Not for timed rounds.
 */
export async function commitWireSizes(client, fn) {
  const conn = client.conn; // internal
  const commit = conn.commit;
  let reqBytes = 0;
  let resBytes = 0;
  conn.commit = async function (req) {
    reqBytes = CommitRequest.encode(req).finish().length;
    const res = await commit.call(this, req);
    resBytes = CommitResponse.encode(res).finish().length;
    return res;
  };
  try {
    await fn();
  } finally {
    delete conn.commit;
  }
  if (reqBytes === 0) throw new Error('the operation sent no commit');
  return { reqBytes, resBytes };
}
