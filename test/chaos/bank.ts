/**
 * The bank workload: N accounts spread over the cluster's nodes (optionally each with a replica on
 * the next node), several clients making transfers between two random accounts through
 * client.transaction(), readers taking full snapshots in read transactions, and the nemesis.
 * Each transfer has a unique id that it appends to both accounts' logs in the same transaction
 * (see bank-checker.ts), so the checker can count how often each one applied.
 */
import { Persistent, registerModel, type Client, type Transaction } from '@loam/sdk';
import { checkBank, type AccountView, type BankHistory, type BankReadOp, type LogChunkRecord, type TransferOp } from './bank-checker.js';
import { eventually, settlesWithin, type ChaosCluster } from './cluster.js';
import { classify, countBy, countOutcomes, describeError, type Anomaly, type Clock, type FaultKind, type OpCounts } from './history.js';
import { Nemesis } from './nemesis.js';
import { Rng } from './rng.js';

export class Account extends Persistent {
  recent: string[] = [];
  chunk: LogChunk | null = null;
  constructor(public idx: number, public balance: number) {
    super();
  }
}
/** An immutable block of an account's log: written once, in the transaction that fills `recent`. */
export class LogChunk extends Persistent {
  constructor(public ids: string[], public prev: LogChunk | null) {
    super();
  }
}
registerModel(Account, 'Chaos.Account');
registerModel(LogChunk, 'Chaos.LogChunk');

/** Ids kept in the account itself before they go into a chunk: small states, few chunks. */
const RECENT_IDS = 48;

export interface BankOptions {
  cluster: ChaosCluster;
  clock: Clock;
  seed: number;
  accounts: number;
  initialBalance: number;
  workers: number;
  /** Each account gets a replica on the next node. */
  replicas: boolean;
  durationMs: number;
  /** Clients taking full snapshots (a snapshot of every account conflicts often: more than one gets more through). */
  readers: number;
  /** Pause between a reader's full snapshots. */
  readEveryMs: number;
  /** Deadline of the workers' and the reader's calls (shorter than a pause: see RegisterOptions). */
  deadlineMs: number;
  /** Without: no faults (a throughput run). */
  nemesis?: { kinds: readonly FaultKind[]; failpoints: readonly string[]; gapMs: [number, number] };
  /** Where account a is created: node number; default round-robin over the nodes. */
  placeAccount?: (a: number) => number;
  log: (line: string) => void;
}

export interface BankFigures {
  transfers: OpCounts & { moved: number; noop: number };
  reads: OpCounts;
  faults: Record<string, number>;
  anomalies: Record<string, number>;
  /** Transfers acknowledged per second over the whole run. */
  okPerSecond: number;
}

export interface BankRun {
  history: BankHistory;
  anomalies: Anomaly[];
  figures: BankFigures;
}

function appendLog(acct: Account, id: string): void {
  if (acct.recent.length >= RECENT_IDS) {
    acct.chunk = new LogChunk(acct.recent, acct.chunk); // created by the same commit
    acct.recent = [];
  }
  acct.recent = [...acct.recent, id];
}

function view(a: Account): AccountView {
  return { balance: a.balance, recent: [...a.recent], chunk: a.chunk ? a.chunk.$oid! : null };
}

async function readAll(tx: Transaction, oids: readonly string[]): Promise<AccountView[]> {
  const accts = await Promise.all(oids.map((o) => tx.get<Account>(o)));
  return accts.map(view);
}

export async function runBank(o: BankOptions): Promise<BankRun> {
  const { cluster, clock } = o;
  const nodes = cluster.slots.map((s) => s.number);
  const admin = await cluster.client(0);
  const oids: string[] = [];
  for (let a = 0; a < o.accounts; a++) {
    const acct = await admin.persist(new Account(a, o.initialBalance), { backend: o.placeAccount?.(a) ?? nodes[a % nodes.length] });
    oids.push(acct.$oid!);
    if (o.replicas) await admin.replicate(acct, nodes[(a + 1) % nodes.length]);
  }
  const initial = oids.map(() => o.initialBalance);
  const transfers: TransferOp[] = [];
  const reads: BankReadOp[] = [];
  let stop = false;

  const worker = async (w: number, client: Client) => {
    const rng = Rng.derive(o.seed, `bank-worker-${w}`);
    for (let seq = 1; !stop; seq++) {
      const from = rng.int(0, o.accounts - 1);
      let to = rng.int(0, o.accounts - 2);
      if (to >= from) to++;
      const amount = rng.int(1, Math.max(1, Math.floor(o.initialBalance / 4)));
      const op: TransferOp = { type: 'transfer', id: `t${w}.${seq}`, client: `w${w}`, from, to, amount, start: clock.now(), end: 0, outcome: 'unknown' };
      transfers.push(op);
      // Where the last run of the function was when transaction() gave up: an error while it was
      // still reading means that run sent no commit (and earlier runs ended in conflicts).
      const state = { phase: 'read' as 'read' | 'commit' };
      try {
        op.moved = await client.transaction(async (tx) => {
          state.phase = 'read';
          const [src, dst] = await Promise.all([tx.get<Account>(oids[from]), tx.get<Account>(oids[to])]);
          let moved = false;
          if (src.balance >= amount) {
            src.balance -= amount;
            dst.balance += amount;
            appendLog(src, op.id);
            appendLog(dst, op.id);
            moved = true;
          }
          state.phase = 'commit';
          return moved;
        });
        op.outcome = 'ok';
      } catch (e) {
        if (state.phase === 'read') {
          op.outcome = 'fail';
          op.error = `before its commit: ${describeError(e)}`;
        } else {
          Object.assign(op, classify(e));
        }
      }
      op.end = clock.now();
    }
  };

  const reader = async (k: number, client: Client) => {
    for (let seq = 1; !stop; seq++) {
      const op: BankReadOp = { type: 'read', id: `r${k}.${seq}`, client: `reader${k}`, start: clock.now(), end: 0, outcome: 'unknown' };
      reads.push(op);
      try {
        op.accounts = await client.transaction((tx) => readAll(tx, oids));
        op.outcome = 'ok';
      } catch (e) {
        Object.assign(op, classify(e));
      }
      op.end = clock.now();
      // Workload pacing (not synchronization): snapshots every so often, not a CPU hog.
      if (!stop) await new Promise((r) => setTimeout(r, o.readEveryMs));
    }
  };

  const clients: Client[] = [];
  for (let w = 0; w < o.workers + o.readers; w++) clients.push(await cluster.client(w % nodes.length, o.deadlineMs));
  const nemesis = o.nemesis
    ? new Nemesis({
      cluster, admin, clock, seed: o.seed, kinds: o.nemesis.kinds, failpoints: o.nemesis.failpoints, objects: () => oids, gapMs: o.nemesis.gapMs, log: o.log,
    })
    : undefined;
  const t0 = clock.now();
  const running = [
    ...Array.from({ length: o.workers }, (_, w) => worker(w, clients[w])),
    ...Array.from({ length: o.readers }, (_, k) => reader(k, clients[o.workers + k])),
  ];
  nemesis?.start();
  const anomalies: Anomaly[] = [];
  let healError: unknown;
  await new Promise((r) => setTimeout(r, o.durationMs)); // the run's length
  // Heal, then let the workload run on a healthy cluster for a moment before it stops.
  if (nemesis) {
    await nemesis.stop().catch((e: unknown) => (healError = e));
    if (!healError) await new Promise((r) => setTimeout(r, 2000));
  }
  stop = true;
  // Every call has a deadline, so the workers end; one that does not is a hang.
  if (!(await settlesWithin(Promise.all(running), 180_000))) {
    const stuck = [...transfers, ...reads].filter((x) => x.end === 0);
    anomalies.push({ kind: 'stuck-operation', message: `${stuck.length} operation(s) still unanswered 180 s after the workload stopped: ${stuck.slice(0, 5).map((x) => `${x.id} (since ${x.start} ms)`).join(', ')}` });
  }
  if (healError) throw healError;
  const elapsedS = (clock.now() - t0) / 1000;

  // The final state: one read transaction over every account (once the cluster has resolved
  // what was in doubt), then every log chunk reachable from them.
  const fin = await cluster.client(1 % nodes.length);
  let final: BankHistory['final'] | undefined;
  try {
    const accounts = await eventually(() => fin.transaction((tx) => readAll(tx, oids)), 'a final read of every account', 120_000);
    const chunks: Record<string, LogChunkRecord> = {};
    for (const v of accounts) {
      for (let c = v.chunk; c !== null && !(c in chunks);) {
        const oid: string = c;
        const ch = await eventually(() => fin.get<LogChunk>(oid), `log chunk ${oid}`, 60_000);
        chunks[oid] = { ids: [...ch.ids], prev: ch.prev ? ch.prev.$oid! : null };
        c = chunks[oid].prev;
      }
    }
    final = { accounts, chunks };
  } catch (e) {
    anomalies.push({ kind: 'unavailable-after-heal', message: `the final state could not be read after every fault was healed: ${String(e)}` });
  }
  const faults = nemesis?.faults ?? [];
  const history: BankHistory = { initial, transfers, reads, faults, final: final ?? { accounts: initial.map((b) => ({ balance: b, recent: [], chunk: null })), chunks: {} } };
  if (final) anomalies.push(...checkBank(history));
  const counts = countOutcomes(transfers);
  const figures: BankFigures = {
    transfers: { ...counts, moved: transfers.filter((t) => t.outcome === 'ok' && t.moved).length, noop: transfers.filter((t) => t.outcome === 'ok' && !t.moved).length },
    reads: countOutcomes(reads),
    faults: countBy(faults, (f) => f.kind),
    anomalies: countBy(anomalies, (a) => a.kind),
    okPerSecond: counts.ok / Math.max(0.001, elapsedS),
  };
  return { history, anomalies, figures };
}
