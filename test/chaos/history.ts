/**
 * What a chaos run records: every operation with its client, start and end time (ms since the run
 * began, one monotonic clock for all clients of this process) and outcome, every fault the nemesis
 * injected, and the anomalies a checker found. Workloads and checkers share these types only.
 */
import { performance } from 'node:perf_hooks';
import { ConflictError, InvalidArgumentError, LoamError, NotFoundError } from '@loam/sdk';

/**
 * - `ok`: the SDK call resolved: the operation took effect exactly once.
 * - `fail`: it definitely did not take effect (a conflict, a refusal, or an error before the commit was sent).
 * - `unknown`: it may or may not have taken effect (the node or the link failed after it may have committed).
 */
export type Outcome = 'ok' | 'fail' | 'unknown';

export interface OpRecord {
  /** Unique in the run; for writes it is also what the operation writes into the data. */
  id: string;
  client: string;
  start: number;
  end: number;
  outcome: Outcome;
  /** Error class and message of a failed or unknown operation. */
  error?: string;
}

export type FaultKind = 'kill' | 'pause' | 'etcd-kill' | 'drain' | 'move' | 'replicate' | 'failpoint';
export const FAULT_KINDS: readonly FaultKind[] = ['kill', 'pause', 'etcd-kill', 'drain', 'move', 'replicate', 'failpoint'];

export interface FaultRecord {
  kind: FaultKind;
  /** What it hit: `node 2`, `etcd m1`, `account 3 -> node 1` ... */
  target: string;
  start: number;
  /** When it was healed (or, for a move, when the call returned). */
  end: number;
  note?: string;
}

export interface Anomaly {
  kind: string;
  /** One or two sentences naming the operations and times that show it. */
  message: string;
  ops?: string[];
}

/** Milliseconds since the run began; every client of the run reads the same clock. */
export class Clock {
  private readonly t0 = performance.now();

  now(): number {
    return Math.round((performance.now() - this.t0) * 10) / 10;
  }
}

/**
 * The outcome an SDK error implies for a write. The SDK's contract: a ConflictError means "not
 * applied" (transaction() retries only those, with a fresh run of the function); NotFound and
 * InvalidArgument are refusals before anything is written. UnavailableError and
 * DeadlineExceededError can come after the node committed (a lost answer, a coordinator that
 * committed but could not update a replica, a client deadline during the finish), so they and
 * anything else are unknown.
 */
export function classify(err: unknown): { outcome: 'fail' | 'unknown'; error: string } {
  const error = describeError(err);
  if (err instanceof ConflictError || err instanceof NotFoundError || err instanceof InvalidArgumentError) return { outcome: 'fail', error };
  return { outcome: 'unknown', error };
}

export function describeError(err: unknown): string {
  if (err instanceof LoamError) return `${err.name}: ${err.message.split('\n')[0].slice(0, 200)}`;
  if (err instanceof Error) return `${err.name} (not a LoamError): ${err.message.split('\n')[0].slice(0, 200)}`;
  return String(err);
}

export interface OpCounts {
  ok: number;
  fail: number;
  unknown: number;
}

export function countOutcomes(ops: readonly OpRecord[]): OpCounts {
  const c: OpCounts = { ok: 0, fail: 0, unknown: 0 };
  for (const o of ops) c[o.outcome]++;
  return c;
}

export function countBy<T>(items: readonly T[], key: (t: T) => string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const i of items) out[key(i)] = (out[key(i)] ?? 0) + 1;
  return out;
}

/** `op t1.4 (client w1, 1203.5-1250.0 ms, ok)` */
export function showOp(op: OpRecord): string {
  return `${op.id} (client ${op.client}, ${op.start.toFixed(0)}-${op.end.toFixed(0)} ms, ${op.outcome}${op.error ? `: ${op.error}` : ''})`;
}

/** The faults that overlapped [from, to] (the last `max` of them), for anomaly messages. */
export function faultsDuring(faults: readonly FaultRecord[], from: number, to: number, slackMs = 0, max = 4): string {
  const hit = faults.filter((f) => f.start <= to + slackMs && f.end >= from - slackMs);
  if (hit.length === 0) return 'no fault at the time';
  const shown = hit.slice(-max).map((f) => `${f.kind} ${f.target} ${f.start.toFixed(0)}-${f.end.toFixed(0)} ms`);
  return `${hit.length > max ? `${hit.length - max} earlier, then ` : ''}${shown.join('; ')}`;
}
