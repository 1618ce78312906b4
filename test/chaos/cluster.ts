/**
 * The cluster a chaos run works on: `loam node` processes on a (3-member) etcd, each node in a
 * slot that keeps its data dir and port, so the nemesis can kill, pause and restart it where
 * clients expect it. Node processes are the harness's (test/setup.ts kills whatever is left).
 */
import fs from 'node:fs';
import path from 'node:path';
import { connect, type Client } from '@loam/sdk';
import type { EtcdCluster } from '../harness/etcd.js';
import { startClusterNode, tempDir, waitFor, type NodeProcess } from '../harness/node-process.js';

export interface NodeSlot {
  /** 0-based; the node's number in the cluster is index + 1 (nodes start one after another). */
  index: number;
  number: number;
  dataDir: string;
  port: number;
  proc: NodeProcess;
  paused: boolean;
  /** The failpoints the running process was started with. */
  armed?: string;
  /** Drained nodes take no new objects; the nemesis moves nothing onto them. */
  drained: boolean;
}

export interface ChaosClusterOptions {
  etcd: EtcdCluster;
  prefix: string;
  nodes: number;
  /** Environment of every node process (e.g. LOAM_TX_TIMEOUT_MS). */
  env?: Record<string, string>;
  log?: (line: string) => void;
  /** Where to write every node process's log lines when the cluster stops (to study an anomaly). */
  logDir?: string;
}

let prefixSeq = 0;

/** A metadata prefix no other run of this process uses. */
export function uniquePrefix(name: string): string {
  return `/loam/chaos-${name}-${process.pid}-${Date.now().toString(36)}-${++prefixSeq}`;
}

export class ChaosCluster {
  readonly slots: NodeSlot[] = [];
  private readonly clients: Client[] = [];
  /** Every process each slot ran, in order (restarts included), for the logs. */
  private readonly runs: { number: number; proc: NodeProcess; armed?: string }[] = [];
  private stopped = false;

  private constructor(private readonly opts: ChaosClusterOptions) {}

  static async start(opts: ChaosClusterOptions): Promise<ChaosCluster> {
    const c = new ChaosCluster(opts);
    try {
      for (let i = 0; i < opts.nodes; i++) {
        const dataDir = tempDir('loam-chaos-');
        // One after another, so node i gets number i + 1 (first writer of nodes/N wins).
        const proc = await startClusterNode({ etcd: opts.etcd.endpoints, prefix: opts.prefix, dataDir, env: opts.env, timeoutMs: 60_000 });
        c.slots.push({ index: i, number: i + 1, dataDir, port: proc.port, proc, paused: false, drained: false });
        c.runs.push({ number: i + 1, proc });
      }
      const admin = await c.client(0);
      const backends = await admin.backends();
      for (const s of c.slots) {
        const b = backends.find((x) => x.address.endsWith(`:${s.port}`));
        if (!b) throw new Error(`node on port ${s.port} is not among the backends ${JSON.stringify(backends)}`);
        s.number = b.number;
      }
    } catch (e) {
      await c.stop();
      throw e;
    }
    return c;
  }

  get etcd(): EtcdCluster {
    return this.opts.etcd;
  }

  url(i: number): string {
    return `loam://127.0.0.1:${this.slots[i].port}/default`;
  }

  /** Every node's URL, node `first` first (the client reaches it first: its seed). */
  urls(first = 0): string[] {
    return this.slots.map((_, k) => this.url((first + k) % this.slots.length));
  }

  /** A client whose seed is node `first` (closed by stop()). Generous deadlines: the machine is loaded. */
  async client(first = 0, deadlineMs = 15_000): Promise<Client> {
    const c = await connect(this.urls(first), { deadlineMs, connectTimeoutMs: 20_000 });
    this.clients.push(c);
    return c;
  }

  slotOf(number: number): NodeSlot {
    const s = this.slots.find((x) => x.number === number);
    if (!s) throw new Error(`no node number ${number}`);
    return s;
  }

  running(i: number): boolean {
    const c = this.slots[i].proc.child;
    return c.exitCode === null && c.signalCode === null;
  }

  /** Resolves when node i's process has exited (at once if it has). */
  exited(i: number): Promise<void> {
    const c = this.slots[i].proc.child;
    if (c.exitCode !== null || c.signalCode !== null) return Promise.resolve();
    return new Promise((r) => c.once('exit', () => r()));
  }

  async kill(i: number): Promise<void> {
    const s = this.slots[i];
    if (s.paused) this.resume(i);
    await s.proc.kill();
  }

  /** (Re)starts node i on its data dir and port, with `failpoints` armed if given. */
  async restart(i: number, failpoints?: string): Promise<void> {
    const s = this.slots[i];
    if (this.running(i)) await this.kill(i);
    const env = { ...this.opts.env, ...(failpoints ? { LOAM_FAILPOINTS: failpoints } : {}) };
    let lastErr: unknown;
    // The port was just released; a restart that loses a race for it (or for etcd) is tried again.
    for (let attempt = 1; attempt <= 3; attempt++) {
      try {
        s.proc = await startClusterNode({ etcd: this.opts.etcd.endpoints, prefix: this.opts.prefix, dataDir: s.dataDir, port: s.port, env, timeoutMs: 60_000 });
        s.armed = failpoints;
        s.paused = false;
        this.runs.push({ number: s.number, proc: s.proc, armed: failpoints });
        s.drained = false; // a restarted node serves as a normal member again
        return;
      } catch (e) {
        lastErr = e;
        this.opts.log?.(`restart of node ${s.number} failed (attempt ${attempt}): ${String(e).slice(0, 300)}`);
      }
    }
    throw new Error(`node ${s.number} does not restart on ${s.dataDir}: ${String(lastErr)}`);
  }

  pause(i: number): void {
    this.slots[i].proc.child.kill('SIGSTOP');
    this.slots[i].paused = true;
  }

  resume(i: number): void {
    this.slots[i].proc.child.kill('SIGCONT');
    this.slots[i].paused = false;
  }

  /**
   * Undoes whatever is still broken: paused nodes continue, dead or armed nodes restart unarmed,
   * stopped etcd members start. Then waits until every node is a member again.
   */
  async heal(admin: Client): Promise<void> {
    for (let i = 0; i < this.slots.length; i++) if (this.slots[i].paused) this.resume(i);
    for (let m = 0; m < this.opts.etcd.members.length; m++) {
      const child = this.opts.etcd.members[m].child;
      if (!child || child.exitCode !== null || child.signalCode !== null) await this.opts.etcd.startMember(m);
    }
    for (let i = 0; i < this.slots.length; i++) if (!this.running(i) || this.slots[i].armed) await this.restart(i);
    await this.waitMembers(admin);
  }

  /** Waits (bounded) until every node is registered in etcd and known to the admin client. */
  async waitMembers(admin: Client, timeoutMs = 60_000): Promise<void> {
    await waitFor(async () => (await admin.backends()).length === this.slots.length, `all ${this.slots.length} nodes to be members`, timeoutMs, 200);
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const c of this.clients) await c.close().catch(() => undefined);
    for (let i = 0; i < this.slots.length; i++) {
      if (this.slots[i].paused) this.resume(i);
      await this.slots[i].proc.kill().catch(() => undefined);
    }
    if (this.opts.logDir) {
      fs.mkdirSync(this.opts.logDir, { recursive: true });
      this.runs.forEach((r, k) => {
        const name = `${path.basename(this.opts.prefix)}-node${r.number}-run${k}${r.armed ? `-${r.armed}` : ''}.jsonl`;
        fs.writeFileSync(path.join(this.opts.logDir!, name), r.proc.logs.map((l) => JSON.stringify(l)).join('\n'));
      });
    }
  }
}

/** Runs `fn` until it resolves (polling, bounded); rejects with its last error after `timeoutMs`. */
export async function eventually<T>(fn: () => Promise<T>, what: string, timeoutMs: number, everyMs = 500): Promise<T> {
  let last: unknown;
  const box = await waitFor(() => fn().then((v) => ({ v }), (e: unknown) => {
    last = e;
    return undefined;
  }), what, timeoutMs, everyMs).catch((e: unknown) => {
    throw new Error(`${String(e)}; last error: ${String(last)}`);
  });
  return box!.v; // waitFor resolves only with a truthy value
}

/** Whether `p` settles within `ms` (its timer cleared either way). */
export async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let t: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p.then(() => true, () => true), new Promise<false>((r) => (t = setTimeout(() => r(false), ms)))]);
  } finally {
    clearTimeout(t);
  }
}
