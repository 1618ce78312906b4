import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { pollUntil } from './wait.js';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const CLI = path.join(ROOT, 'node/dist/cli.js');

export interface NodeProcess {
  url: string;
  port: number;
  /** The port of its node-to-node service (a `loam node`; 0 for `loam dev`). */
  peerPort: number;
  metricsPort: number;
  dataDir: string;
  child: ChildProcess;
  /** Every log line the node printed so far (parsed JSON). */
  logs: Record<string, unknown>[];
  /** SIGTERM and wait for a clean exit (rejects if it does not exit by the deadline). */
  stop(): Promise<number | null>;
  /** SIGKILL and wait for the process to be gone. */
  kill(): Promise<void>;
}

const tempDirs: string[] = [];
const liveNodes = new Set<NodeProcess>();

export function tempDir(prefix = 'loam-test-'): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  tempDirs.push(d);
  return d;
}

/** Kills every node still running and removes every temp dir this file made (test/setup.ts calls it). */
export async function cleanupAll(): Promise<void> {
  for (const n of [...liveNodes]) await n.kill();
  for (const d of tempDirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
}

let sharedSecretFile: string | undefined;

/** Writes a new random cluster secret to a file of its own (mode 0600) and returns its path. */
export function newSecretFile(): string {
  const file = path.join(tempDir('loam-secret-'), 'cluster-secret');
  fs.writeFileSync(file, `${randomBytes(32).toString('base64')}\n`, { mode: 0o600 });
  return file;
}

/**
 * The secret file every cluster node of this test file shares unless told otherwise (made on
 * first use, again after cleanupAll removed it).
 */
export function clusterSecretFile(): string {
  if (!sharedSecretFile || !fs.existsSync(sharedSecretFile)) sharedSecretFile = newSecretFile();
  return sharedSecretFile;
}

/**
 * Starts `loam dev` as a real child process on free ports and resolves once it logs `ready`
 * (or rejects with its output if it exits or the deadline passes first).
 */
export async function startNode(opts: { dataDir?: string; args?: string[]; timeoutMs?: number; env?: Record<string, string>; onLog?: (entry: Record<string, unknown>) => void } = {}): Promise<NodeProcess> {
  const dataDir = opts.dataDir ?? tempDir();
  return launch(['dev', '--data', dataDir, '--port', '0', '--metrics-port', '0', '--log-level', 'info', ...(opts.args ?? [])], dataDir, opts.timeoutMs, opts.env, opts.onLog);
}

/**
 * Starts one `loam node` of a cluster on etcd. `port` and `peerPort` 0 pick free ones; pass
 * those of an earlier run to restart the same node where clients and other nodes expect it.
 */
export async function startClusterNode(opts: {
  etcd: string[]; prefix: string; dataDir?: string; port?: number; args?: string[]; timeoutMs?: number; env?: Record<string, string>;
  /** The loopback address it listens on (client and peer ports), default 127.0.0.1: another one moves the node, as a new Pod IP does. */
  host?: string;
  /** null: no --peer-listen (the node's default, or one in `args`). */
  peerPort?: number | null;
  /** The cluster secret file; default: clusterSecretFile(), shared by this test file's nodes; null: none. */
  secretFile?: string | null;
  /** Sees every log line as it arrives, also before `ready` (e.g. to wait for a node that is still starting). */
  onLog?: (entry: Record<string, unknown>) => void;
}): Promise<NodeProcess> {
  const dataDir = opts.dataDir ?? tempDir();
  const secretFile = opts.secretFile === undefined ? clusterSecretFile() : opts.secretFile;
  return launch([
    'node', '--etcd', opts.etcd.join(','), '--prefix', opts.prefix, '--listen', `${opts.host ?? '127.0.0.1'}:${opts.port ?? 0}`,
    ...(opts.peerPort !== null ? ['--peer-listen', `${opts.host ?? '127.0.0.1'}:${opts.peerPort ?? 0}`] : []),
    ...(secretFile !== null ? ['--cluster-secret-file', secretFile] : []),
    '--data', dataDir, '--metrics-port', '0', '--log-level', 'info', ...(opts.args ?? []),
  ], dataDir, opts.timeoutMs, opts.env, opts.onLog);
}

async function launch(args: string[], dataDir: string, readyWithinMs?: number, env?: Record<string, string>, onLog?: (entry: Record<string, unknown>) => void): Promise<NodeProcess> {
  const opts = { timeoutMs: readyWithinMs };
  const child = spawn(process.execPath, [CLI, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  const logs: Record<string, unknown>[] = [];
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += String(d)));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const ready = new Promise<Record<string, unknown>>((resolve, reject) => {
    const rl = readline.createInterface({ input: child.stdout! });
    rl.on('line', (line) => {
      try {
        const entry = JSON.parse(line) as Record<string, unknown>;
        logs.push(entry);
        onLog?.(entry);
        if (entry.msg === 'ready') resolve(entry);
      } catch {
        logs.push({ raw: line });
      }
    });
    void exited.then((code) => reject(new Error(`node exited with ${code} before ready: ${stderr}\n${JSON.stringify(logs)}`)));
  });
  const timeoutMs = opts.timeoutMs ?? 30_000;
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`node not ready within ${timeoutMs} ms: ${stderr}`)), timeoutMs);
  });
  let entry: Record<string, unknown>;
  try {
    entry = await Promise.race([ready, deadline]);
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  } finally {
    clearTimeout(timer);
  }
  const url = String(entry.endpoint);
  const port = Number(/:(\d+)\//.exec(url)![1]);
  const waitExit = async (ms: number) => {
    let t: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([exited, new Promise<never>((_, rej) => (t = setTimeout(() => rej(new Error(`node did not exit within ${ms} ms`)), ms)))]);
    } finally {
      clearTimeout(t);
    }
  };
  const proc: NodeProcess = {
    url, port, peerPort: Number(entry.peerPort ?? 0), metricsPort: Number(entry.metricsPort), dataDir, child, logs,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      return waitExit(15_000);
    },
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      await waitExit(15_000);
    },
  };
  liveNodes.add(proc);
  void exited.then(() => liveNodes.delete(proc));
  return proc;
}

/** Polls `fn` until it returns a truthy value or the deadline passes (never a fixed sleep). */
export function waitFor<T>(fn: () => T | Promise<T>, what: string, timeoutMs = 10_000, everyMs = 20): Promise<T> {
  return pollUntil(fn, what, timeoutMs, { everyMs });
}

/** A node's metric from its /metrics, summed over its label sets; NaN when it exports no such series. */
export async function nodeMetric(node: Pick<NodeProcess, 'metricsPort'>, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${node.metricsPort}/metrics`)).text();
  const values = [...text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'gm'))].map((m) => Number(m[1]));
  return values.length === 0 ? NaN : values.reduce((a, b) => a + b, 0);
}
