/**
 * Real etcd clusters for tests (never a mock).
 *
 * - `ensureEtcd()` finds the `etcd` binary, installing Debian's `etcd-server` with apt-get when it is
 *   missing (serialized across parallel vitest workers with a lock file). It throws, never skips.
 * - `startEtcd({ members })` starts 1 or 3 members on loopback ports that no other harness user holds
 *   and that the kernel never hands out on its own (below the ephemeral range), data dirs in a temp dir,
 *   and resolves once every member reports healthy.
 * - `cleanupEtcd()` (test/setup.ts calls it after every file) stops whatever a test left running.
 *
 * Debian's etcd-server (bookworm: 3.4.23) ships /usr/bin/etcd, an init script and a systemd unit. Its
 * postinst only starts the system service where an init system allows it (systemd running, or
 * invoke-rc.d with no policy-rc.d saying no); if it does, that etcd is on 127.0.0.1:2379/2380, ports this
 * harness never picks.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { readOr, releasePorts, reservePorts, tryExclusiveFile } from './ports.js';
import { Children, reapDeadOwners, writeLeftoverRecord } from './leftovers.js';
import { pollUntil } from './wait.js';

export interface EtcdMember {
  name: string;
  clientPort: number;
  peerPort: number;
  clientUrl: string;
  peerUrl: string;
  dataDir: string;
  /** The last process started for this member (check exitCode/signalCode to know whether it still runs). */
  child: ChildProcess | undefined;
  /** Tail of everything the member printed (stdout and stderr, all its runs), bounded. */
  output(): string;
}

export interface EtcdCluster {
  /** Client URLs, one per member, e.g. http://127.0.0.1:23456 (what etcd3's `hosts` takes). */
  endpoints: string[];
  members: EtcdMember[];
  /** The temp dir that holds every member's data dir. */
  dir: string;
  /** Stops member i: SIGTERM (or the given signal), SIGKILL if it has not exited by the deadline; resolves once it has exited. */
  stopMember(i: number, signal?: NodeJS.Signals): Promise<void>;
  /**
   * Restarts member i with the same name, data dir and ports. Resolves when it is healthy again, or,
   * when the running members are too few for a quorum, once its process runs and accepts connections.
   */
  startMember(i: number): Promise<void>;
  /** True when member i's /health endpoint says so. */
  isHealthy(i: number): Promise<boolean>;
  /** Kills every member and removes the temp dir. Safe to call twice. */
  stop(): Promise<void>;
}

const BIN_CANDIDATES = ['/usr/bin/etcd', '/usr/local/bin/etcd'];
const REGISTRY = path.join(os.tmpdir(), 'loam-etcd');
const CLUSTERS_DIR = path.join(REGISTRY, 'clusters');
const INSTALL_LOCK = path.join(REGISTRY, 'install.lock');
const OUTPUT_LIMIT = 64 * 1024;
const ERROR_TAIL = 6 * 1024;

// ---------------------------------------------------------------------------------------------------------
// the binary

function goArch(): string {
  switch (process.arch) {
    case 'x64':
      return 'amd64';
    case 'ia32':
      return '386';
    case 'ppc64':
      return os.endianness() === 'LE' ? 'ppc64le' : 'ppc64';
    default:
      return process.arch; // arm64, arm, s390x, riscv64, mips64el... as Go spells them (close enough)
  }
}

/**
 * The environment etcd runs with: ours minus any ETCD_* variable (etcd reads those as flags), plus
 * ETCD_UNSUPPORTED_ARCH on architectures etcd 3.4 refuses without it (all but amd64 and ppc64le).
 */
function etcdEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('ETCD_')) env[k] = v;
  const arch = goArch();
  if (arch !== 'amd64' && arch !== 'ppc64le') env.ETCD_UNSUPPORTED_ARCH = arch;
  return env;
}

function isExecutable(p: string): boolean {
  try {
    fs.accessSync(p, fs.constants.X_OK);
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

/** LOAM_ETCD_BIN, else `etcd` on PATH, else Debian's /usr/bin/etcd. */
function findEtcd(): string | undefined {
  const override = process.env.LOAM_ETCD_BIN;
  if (override) {
    if (!isExecutable(override)) throw new Error(`LOAM_ETCD_BIN=${override} is not an executable file`);
    return override;
  }
  for (const dir of (process.env.PATH ?? '').split(path.delimiter).filter(Boolean)) {
    const p = path.join(dir, 'etcd');
    if (isExecutable(p)) return p;
  }
  return BIN_CANDIDATES.find(isExecutable);
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const take = (d: Buffer) => {
      out += String(d);
      if (out.length > OUTPUT_LIMIT) out = out.slice(-OUTPUT_LIMIT);
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    const timer = setTimeout(() => {
      out += `\n[killed: still running after ${timeoutMs} ms]`;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      resolve({ code: -1, out: `${out}\n${String(e)}` });
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

async function aptInstallEtcd(): Promise<string> {
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  // Wait for dpkg's own lock rather than failing if some other apt is running.
  const lockWait = ['-o', 'DPkg::Lock::Timeout=120'];
  const install = [...lockWait, 'install', '-y', '--no-install-recommends', 'etcd-server'];
  let log = `$ apt-get ${install.join(' ')}\n`;
  let r = await run('apt-get', install, env, 300_000);
  log += r.out;
  if (r.code !== 0) {
    // Usually "Unable to locate package": this machine's package lists were never fetched.
    log += '\n$ apt-get update\n';
    log += (await run('apt-get', [...lockWait, 'update'], env, 300_000)).out;
    log += `\n$ apt-get ${install.join(' ')}\n`;
    r = await run('apt-get', install, env, 300_000);
    log += r.out;
  }
  const bin = findEtcd();
  if (r.code !== 0 || !bin) {
    throw new Error(
      `etcd is not installed and installing Debian's etcd-server failed (exit ${r.code}); ` +
        `these tests need a real etcd: apt-get update && apt-get install -y etcd-server\n${log.slice(-ERROR_TAIL)}`,
    );
  }
  return bin;
}

function checkBinary(bin: string): string {
  const r = spawnSync(bin, ['--version'], { env: etcdEnv(), encoding: 'utf8', timeout: 30_000 });
  if (r.status !== 0) throw new Error(`${bin} --version failed (exit ${r.status}${r.error ? `, ${String(r.error)}` : ''}): ${r.stdout}${r.stderr}`);
  return bin;
}

let ensured: Promise<string> | undefined;

/**
 * Path of the `etcd` binary (LOAM_ETCD_BIN, PATH, /usr/bin/etcd), installing Debian's etcd-server if it is
 * missing. Throws with the install log if it cannot. Parallel workers serialize the install on a lock file.
 */
export function ensureEtcd(): Promise<string> {
  if (ensured) return ensured;
  const p = (async () => {
    const found = findEtcd();
    if (found) return checkBinary(found);
    await pollUntil(() => findEtcd() !== undefined || tryExclusiveFile(INSTALL_LOCK), 'the etcd install lock (another worker is installing)', 600_000, { everyMs: 200 });
    try {
      // Another worker may have installed it while we waited for the lock.
      return checkBinary(findEtcd() ?? (await aptInstallEtcd()));
    } finally {
      if (readOr(INSTALL_LOCK, '') === String(process.pid)) fs.rmSync(INSTALL_LOCK, { force: true });
    }
  })();
  // Cached, failure included: every later caller in this process fails at once with the same install log
  // instead of running apt-get again.
  ensured = p;
  return p;
}

// ---------------------------------------------------------------------------------------------------------
// leftovers of workers that died without cleaning up (each live cluster has a record in CLUSTERS_DIR)

// ---------------------------------------------------------------------------------------------------------
// clusters

const liveClusters = new Set<Cluster>();
const allChildren = new Children();

function connectable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(500, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

async function healthy(clientUrl: string): Promise<boolean> {
  try {
    const res = await fetch(`${clientUrl}/health`, { signal: AbortSignal.timeout(1000) });
    const body = (await res.json()) as { health?: string | boolean };
    return res.ok && String(body.health) === 'true';
  } catch {
    return false;
  }
}

class Member implements EtcdMember {
  child: ChildProcess | undefined;
  exited: Promise<void> = Promise.resolve();
  readonly clientUrl: string;
  readonly peerUrl: string;
  private buf = '';

  constructor(
    readonly name: string,
    readonly clientPort: number,
    readonly peerPort: number,
    readonly dataDir: string,
  ) {
    this.clientUrl = `http://127.0.0.1:${clientPort}`;
    this.peerUrl = `http://127.0.0.1:${peerPort}`;
  }

  output(): string {
    return this.buf;
  }

  append(s: string): void {
    this.buf += s;
    if (this.buf.length > OUTPUT_LIMIT) this.buf = this.buf.slice(-OUTPUT_LIMIT);
  }

  tail(): string {
    return `--- etcd ${this.name} (client ${this.clientPort}, peer ${this.peerPort}) output, last ${ERROR_TAIL} chars ---\n${this.buf.slice(-ERROR_TAIL)}`;
  }

  running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }
}

/** Fast failure detection for tests; zap logs to stderr (3.4's default capnslog logger is deprecated). */
const TEST_FLAGS = ['--heartbeat-interval', '50', '--election-timeout', '500', '--logger', 'zap', '--log-outputs', 'stderr', '--log-level', 'info'];

async function raceDeadline<T>(p: Promise<T>, ms: number): Promise<T | 'late'> {
  let t: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<'late'>((r) => (t = setTimeout(() => r('late'), ms)))]);
  } finally {
    clearTimeout(t);
  }
}

class Cluster implements EtcdCluster {
  readonly endpoints: string[];
  private stopped = false;
  private readonly recordFile: string;

  constructor(
    private readonly bin: string,
    readonly dir: string,
    readonly members: Member[],
    private readonly token: string,
    private readonly ports: number[],
  ) {
    this.endpoints = members.map((m) => m.clientUrl);
    this.recordFile = path.join(CLUSTERS_DIR, `${path.basename(dir)}.json`);
  }

  private args(m: Member): string[] {
    return [
      '--name', m.name,
      '--data-dir', m.dataDir,
      '--listen-client-urls', m.clientUrl,
      '--advertise-client-urls', m.clientUrl,
      '--listen-peer-urls', m.peerUrl,
      '--initial-advertise-peer-urls', m.peerUrl,
      '--initial-cluster', this.members.map((x) => `${x.name}=${x.peerUrl}`).join(','),
      '--initial-cluster-state', 'new', // ignored on restart: the data dir has a WAL by then
      '--initial-cluster-token', this.token,
      ...TEST_FLAGS,
    ];
  }

  private writeRecord(): void {
    writeLeftoverRecord(this.recordFile, { dir: this.dir, pids: this.members.map((m) => m.child?.pid).filter((p): p is number => p !== undefined), ports: this.ports });
  }

  private member(i: number): Member {
    const m = this.members[i];
    if (!m) throw new Error(`no etcd member ${i} (the cluster has ${this.members.length})`);
    return m;
  }

  spawnMember(i: number): void {
    const m = this.member(i);
    if (m.running()) throw new Error(`etcd member ${m.name} is already running`);
    m.append(`\n=== start ${new Date().toISOString()} ===\n`);
    const child = spawn(this.bin, this.args(m), { env: etcdEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    m.child = child;
    allChildren.add(child);
    child.stdout!.on('data', (d) => m.append(String(d)));
    child.stderr!.on('data', (d) => m.append(String(d)));
    m.exited = new Promise<void>((resolve) => {
      child.once('error', (e) => {
        m.append(`\n[spawn error: ${String(e)}]\n`);
        allChildren.delete(child);
        resolve();
      });
      child.once('exit', (code, signal) => {
        m.append(`\n=== exited code=${code} signal=${signal} ===\n`);
        allChildren.delete(child);
        resolve();
      });
    });
    this.writeRecord();
  }

  /** Rejects with every member's output if member i exits before `cond` holds, or when the deadline passes. */
  async waitMember(i: number, cond: () => Promise<boolean>, what: string, timeoutMs: number): Promise<void> {
    const m = this.member(i);
    const detail = () => this.members.map((x) => x.tail()).join('\n');
    let settled = false;
    const died = m.exited.then(() => {
      if (!settled) throw new Error(`etcd member ${m.name} exited while waiting for it ${what}\n${detail()}`);
    });
    try {
      // The poll stops as soon as the race is over, whoever won it.
      await Promise.race([pollUntil(cond, `etcd member ${m.name} ${what}`, timeoutMs, { detail, gaveUp: () => (settled ? 'settled' : undefined) }), died]);
    } finally {
      settled = true;
    }
  }

  isHealthy(i: number): Promise<boolean> {
    return healthy(this.member(i).clientUrl);
  }

  async stopMember(i: number, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const m = this.member(i);
    const child = m.child;
    if (!child || !m.running()) return;
    child.kill(signal);
    if ((await raceDeadline(m.exited, 10_000)) !== 'late') return;
    m.append(`\n[harness: no exit 10 s after ${signal}, sending SIGKILL]\n`);
    child.kill('SIGKILL');
    if ((await raceDeadline(m.exited, 10_000)) === 'late') {
      throw new Error(`etcd member ${m.name} (pid ${child.pid}) did not exit after SIGKILL\n${m.tail()}`);
    }
  }

  async startMember(i: number): Promise<void> {
    if (this.stopped) throw new Error('this etcd cluster was stopped');
    const m = this.member(i);
    this.spawnMember(i);
    const quorum = Math.floor(this.members.length / 2) + 1;
    if (this.members.filter((x) => x.running()).length >= quorum) {
      await this.waitMember(i, () => healthy(m.clientUrl), 'to be healthy after a restart', 30_000);
    } else {
      // No quorum: etcd binds its client port but serves nothing (not even /version) until it has joined
      // a leader, so "up" can only mean that the port accepts connections.
      await this.waitMember(i, () => connectable(m.clientPort), 'to listen after a restart (no quorum)', 30_000);
    }
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    liveClusters.delete(this);
    const errors: unknown[] = [];
    await Promise.all(this.members.map((_, i) => this.stopMember(i, 'SIGKILL').catch((e: unknown) => void errors.push(e))));
    fs.rmSync(this.dir, { recursive: true, force: true });
    releasePorts(this.ports);
    fs.rmSync(this.recordFile, { force: true });
    if (errors.length) throw errors[0];
  }
}

/**
 * Starts an etcd cluster of 1 or 3 members on free loopback ports, data in a fresh temp dir, and resolves
 * once every member is healthy (rejects with the members' output otherwise, leaving nothing behind).
 */
export async function startEtcd(opts: { members?: 1 | 3; timeoutMs?: number } = {}): Promise<EtcdCluster> {
  const n = opts.members ?? 1;
  if (n !== 1 && n !== 3) throw new Error(`members must be 1 or 3, not ${String(n)}`);
  const bin = await ensureEtcd();
  reapDeadOwners(CLUSTERS_DIR);
  for (let attempt = 1; ; attempt++) {
    const ports = await reservePorts(2 * n);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'loam-etcd-'));
    const members = Array.from({ length: n }, (_, i) => new Member(`m${i}`, ports[2 * i]!, ports[2 * i + 1]!, path.join(dir, `m${i}`)));
    const cluster = new Cluster(bin, dir, members, `loam-${path.basename(dir)}`, ports);
    liveClusters.add(cluster);
    try {
      for (let i = 0; i < n; i++) cluster.spawnMember(i);
      await Promise.all(members.map((m, i) => cluster.waitMember(i, () => healthy(m.clientUrl), 'to be healthy', opts.timeoutMs ?? 30_000)));
      return cluster;
    } catch (e) {
      const clash = members.some((m) => /address already in use/i.test(m.output()));
      await cluster.stop().catch(() => undefined);
      // A port we found free was taken by something outside this harness before etcd bound it: new ports.
      if (clash && attempt < 3) continue;
      throw e;
    }
  }
}

/** Stops every cluster this process started and has not stopped yet (test/setup.ts runs it after each file). */
export async function cleanupEtcd(): Promise<void> {
  const errors: unknown[] = [];
  for (const c of [...liveClusters]) await c.stop().catch((e: unknown) => void errors.push(e));
  if (errors.length) throw errors[0];
}
