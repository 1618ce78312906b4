/**
 * Whole chaos runs: a fresh cluster (3 `loam node`s on the given etcd) per workload, the workload
 * with its nemesis, the checker, and the figures; the fault-free throughput comparison; and the
 * report text both the bounded test and `npm run chaos` print.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { EtcdCluster } from '../harness/etcd.js';
import { runBank, type BankFigures } from './bank.js';
import { ChaosCluster, uniquePrefix } from './cluster.js';
import { Clock, type Anomaly, type FaultKind, type OpCounts } from './history.js';
import { TX_FAILPOINTS } from './nemesis.js';
import { runRegister, type RegisterFigures } from './register.js';

/** Participants resolve an in-doubt transaction after this long (default 5 s): faster recovery after a crash. */
const NODE_ENV = { LOAM_TX_TIMEOUT_MS: '2000' };

export const BANK_FAULTS: readonly FaultKind[] = ['kill', 'pause', 'etcd-kill', 'failpoint', 'move', 'drain'];
export const BANK_REPLICA_FAULTS: readonly FaultKind[] = [...BANK_FAULTS, 'replicate'];
export const REGISTER_FAULTS: readonly FaultKind[] = ['kill', 'pause', 'etcd-kill', 'failpoint', 'move', 'replicate', 'drain'];
export const REGISTER_FAILPOINTS = ['replicate-after-copy', 'participant-before-commit', 'coordinator-after-decision', 'participant-after-prepare'] as const;

export interface WorkloadResult {
  name: string;
  seed: number;
  /** Wall time of the whole workload: cluster start, run, heal, final read, check. */
  wallS: number;
  runS: number;
  ops: OpCounts;
  reads: OpCounts;
  faults: Record<string, number>;
  faultLog: string[];
  anomalies: Anomaly[];
  detail: string;
}

export interface RunOptions {
  etcd: EtcdCluster;
  seed: number;
  durationMs: number;
  /** Quiet time before each fault. */
  gapMs?: [number, number];
  log?: (line: string) => void;
}

/** With LOAM_CHAOS_HISTORY_DIR set, every workload's full history goes there as JSON (to study an anomaly). */
function dumpHistory(name: string, seed: number, history: unknown, anomalies: Anomaly[]): string | undefined {
  const dir = process.env.LOAM_CHAOS_HISTORY_DIR;
  if (!dir) return undefined;
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${name}-seed${seed}-${Date.now()}.json`);
  fs.writeFileSync(file, JSON.stringify({ name, seed, anomalies, history }));
  return file;
}

async function withCluster<T>(etcd: EtcdCluster, name: string, log: (l: string) => void, fn: (c: ChaosCluster) => Promise<T>): Promise<T> {
  const dir = process.env.LOAM_CHAOS_HISTORY_DIR;
  const cluster = await ChaosCluster.start({ etcd, prefix: uniquePrefix(name), nodes: 3, env: NODE_ENV, log, logDir: dir ? path.join(dir, 'node-logs') : undefined });
  try {
    return await fn(cluster);
  } finally {
    await cluster.stop();
  }
}

export async function bankWorkload(o: RunOptions & { replicas: boolean }): Promise<WorkloadResult> {
  const log = o.log ?? (() => undefined);
  const name = o.replicas ? 'bank-replicas' : 'bank';
  const t0 = Date.now();
  const faultLog: string[] = [];
  const run = await withCluster(o.etcd, name, log, (cluster) => runBank({
    cluster, clock: new Clock(), seed: o.seed, accounts: 6, initialBalance: 100, workers: 4, readers: 2, replicas: o.replicas,
    durationMs: o.durationMs, readEveryMs: 150, deadlineMs: 5000,
    nemesis: { kinds: o.replicas ? BANK_REPLICA_FAULTS : BANK_FAULTS, failpoints: TX_FAILPOINTS, gapMs: o.gapMs ?? [800, 2500] },
    log: (l) => (faultLog.push(l), log(`[${name}] ${l}`)),
  }));
  const f: BankFigures = run.figures;
  const file = dumpHistory(name, o.seed, run.history, run.anomalies);
  if (file) log(`[${name}] history written to ${file}`);
  return {
    name, seed: o.seed, wallS: (Date.now() - t0) / 1000, runS: o.durationMs / 1000,
    ops: f.transfers, reads: f.reads, faults: f.faults, faultLog, anomalies: run.anomalies,
    detail: `transfers: ${f.transfers.moved} moved money, ${f.transfers.noop} no-ops (source too low); ${f.okPerSecond.toFixed(1)} acknowledged/s`,
  };
}

export async function registerWorkload(o: RunOptions): Promise<WorkloadResult> {
  const log = o.log ?? (() => undefined);
  const t0 = Date.now();
  const faultLog: string[] = [];
  const run = await withCluster(o.etcd, 'register', log, (cluster) => runRegister({
    cluster, clock: new Clock(), seed: o.seed, registers: 3, writers: 3, readers: 3, durationMs: o.durationMs, readEveryMs: 15, deadlineMs: 3000,
    nemesis: { kinds: REGISTER_FAULTS, failpoints: REGISTER_FAILPOINTS, gapMs: o.gapMs ?? [800, 2500] },
    log: (l) => (faultLog.push(l), log(`[register] ${l}`)),
  }));
  const f: RegisterFigures = run.figures;
  const file = dumpHistory('register', o.seed, run.history, run.anomalies);
  if (file) log(`[register] history written to ${file}`);
  return {
    name: 'register', seed: o.seed, wallS: (Date.now() - t0) / 1000, runS: o.durationMs / 1000,
    ops: f.writes, reads: f.reads, faults: f.faults, faultLog, anomalies: run.anomalies,
    detail: `reads: ${f.reads.master} from the master, ${f.reads.any} with readFrom 'any'`,
  };
}

export interface Throughput {
  crossNodeTps: number;
  singleNodeTps: number;
  ratio: number;
  rounds: { cross: number; single: number }[];
}

/**
 * The bank workload without faults, accounts spread over three nodes (most transfers are
 * two-phase commits), against the same workload with every account on node 1 (single-node
 * commits), alternating rounds on one cluster so that load from elsewhere hits both alike.
 */
export async function bankThroughput(o: { etcd: EtcdCluster; seed: number; roundMs: number; rounds: number; log?: (l: string) => void }): Promise<Throughput> {
  const log = o.log ?? (() => undefined);
  return withCluster(o.etcd, 'throughput', log, async (cluster) => {
    const rounds: { cross: number; single: number }[] = [];
    const once = async (single: boolean) => {
      const run = await runBank({
        cluster, clock: new Clock(), seed: o.seed, accounts: 6, initialBalance: 100, workers: 4, readers: 2, replicas: false, durationMs: o.roundMs, readEveryMs: 150, deadlineMs: 15_000,
        placeAccount: single ? () => cluster.slots[0].number : undefined, log,
      });
      if (run.anomalies.length > 0) log(`throughput round (${single ? 'single-node' : 'cross-node'}) found anomalies without faults: ${run.anomalies.map((a) => a.kind).join(', ')}`);
      return run.figures.okPerSecond;
    };
    for (let r = 0; r < o.rounds; r++) {
      // Alternate which goes first, so a trend in outside load does not favour one.
      const round = { cross: 0, single: 0 };
      if (r % 2 === 0) {
        round.cross = await once(false);
        round.single = await once(true);
      } else {
        round.single = await once(true);
        round.cross = await once(false);
      }
      rounds.push(round);
      log(`throughput round ${r + 1}: cross-node ${round.cross.toFixed(1)}/s, single-node ${round.single.toFixed(1)}/s`);
    }
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    const crossNodeTps = median(rounds.map((r) => r.cross));
    const singleNodeTps = median(rounds.map((r) => r.single));
    return { crossNodeTps, singleNodeTps, ratio: crossNodeTps / singleNodeTps, rounds };
  });
}

const fmtCounts = (c: Record<string, number>) => Object.entries(c).sort().map(([k, v]) => `${k} ${v}`).join(', ') || 'none';

/** The figures of one workload, as lines. `maxAnomalies` caps the examples printed per kind. */
export function describeResult(r: WorkloadResult, maxAnomalies = 3): string[] {
  const byKind = new Map<string, Anomaly[]>();
  for (const a of r.anomalies) byKind.set(a.kind, [...(byKind.get(a.kind) ?? []), a]);
  const lines = [
    `${r.name} (seed ${r.seed}, ${r.runS.toFixed(0)} s of workload, ${r.wallS.toFixed(1)} s in all)`,
    `  operations: ${r.ops.ok} ok, ${r.ops.fail} failed, ${r.ops.unknown} unknown; reads: ${r.reads.ok} ok, ${r.reads.fail} failed, ${r.reads.unknown} unknown`,
    `  ${r.detail}`,
    `  faults: ${fmtCounts(r.faults)}`,
    `  anomalies: ${r.anomalies.length === 0 ? 'none' : fmtCounts(Object.fromEntries([...byKind].map(([k, v]) => [k, v.length])))}`,
  ];
  for (const [kind, list] of byKind) {
    for (const a of list.slice(0, maxAnomalies)) lines.push(`    ${kind}: ${a.message}`);
    if (list.length > maxAnomalies) lines.push(`    ${kind}: ... and ${list.length - maxAnomalies} more`);
  }
  return lines;
}
