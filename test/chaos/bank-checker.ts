/**
 * The bank checker. The model: N accounts; a transfer moves `amount` from one account to another
 * if the source has it, and appends its id to both accounts' logs in the same transaction. An
 * account's log is its `recent` ids plus a chain of immutable chunks (`chunk` is the newest, each
 * points to the previous), so the final state says exactly how many times each transfer applied
 * and in which order, and a read's snapshot says which transfers it saw.
 *
 * Checks: total balance conserved and no negative balance, at every successful full read and at
 * the end; each account's balance equals its initial balance plus the transfers in its log (in
 * every read and at the end); a transfer appears in both accounts' logs equally often; acknowledged
 * transfers that moved money applied exactly once, acknowledged no-ops and definitely-failed
 * transfers zero times, unknown ones at most once; a read sees every transfer acknowledged before it
 * began and none that began after it ended (strict serializability of the read transactions); what
 * a read saw is still there at the end.
 */
import type { Anomaly, FaultRecord, OpRecord } from './history.js';
import { faultsDuring, showOp } from './history.js';

export interface TransferOp extends OpRecord {
  type: 'transfer';
  from: number;
  to: number;
  amount: number;
  /** When ok: whether the committed run of the function moved money (false: too little in the source, nothing written). */
  moved?: boolean;
}

/** One account as a read saw it. */
export interface AccountView {
  balance: number;
  /** Transfer ids applied since the newest chunk, oldest first. */
  recent: string[];
  /** Oid of the newest log chunk, null before the first. */
  chunk: string | null;
}

export interface BankReadOp extends OpRecord {
  type: 'read';
  /** When ok: every account, read in one transaction that committed (its reads were validated). */
  accounts?: AccountView[];
}

export interface LogChunkRecord {
  ids: string[];
  prev: string | null;
}

export interface BankHistory {
  initial: number[];
  transfers: TransferOp[];
  reads: BankReadOp[];
  faults: FaultRecord[];
  /** Every account read in one transaction after the run, and every chunk reachable from them. */
  final: { accounts: AccountView[]; chunks: Record<string, LogChunkRecord> };
}

/** An account's final log, flattened: ids oldest first, and where each chunk's ids end. */
interface FinalLog {
  ids: string[];
  firstPos: Map<string, number>;
  count: Map<string, number>;
  /** chunk oid -> index in `ids` just past that chunk's last id */
  chunkEnd: Map<string, number>;
  /** prefixDelta[i] = balance change of ids[0..i) for this account */
  prefixDelta: number[];
}

const MAX_IDS_SHOWN = 5;

export function checkBank(h: BankHistory): Anomaly[] {
  const out: Anomaly[] = [];
  const n = h.initial.length;
  const total = h.initial.reduce((a, b) => a + b, 0);
  const byId = new Map(h.transfers.map((t) => [t.id, t]));
  const delta = (a: number, id: string): number | undefined => {
    const t = byId.get(id);
    if (!t || (t.from !== a && t.to !== a)) return undefined;
    return t.from === a ? -t.amount : t.amount;
  };

  // ---------------------------------------------------------------- the final state
  const logs: FinalLog[] = [];
  for (let a = 0; a < n; a++) logs.push(flatten(a, h.final.accounts[a], h.final.chunks, out));
  const finalBalances = h.final.accounts.map((x) => x.balance);
  const finalSum = finalBalances.reduce((x, y) => x + y, 0);
  if (finalSum !== total) {
    out.push({ kind: 'balance-not-conserved', message: `final state: the balances sum to ${finalSum}, not ${total} (balances ${finalBalances.join(', ')})` });
  }
  finalBalances.forEach((b, a) => {
    if (b < 0) out.push({ kind: 'negative-balance', message: `final state: account ${a} has ${b}` });
  });
  for (let a = 0; a < n; a++) {
    const log = logs[a];
    const phantoms = [...new Set(log.ids.filter((id) => delta(a, id) === undefined))];
    if (phantoms.length > 0) {
      out.push({ kind: 'phantom-transfer', message: `final state: account ${a}'s log holds ${phantoms.length} id(s) of no transfer from or to it: ${phantoms.slice(0, MAX_IDS_SHOWN).join(', ')}`, ops: phantoms });
    }
    const expected = h.initial[a] + log.prefixDelta[log.ids.length];
    if (expected !== finalBalances[a]) {
      out.push({ kind: 'balance-log-mismatch', message: `final state: account ${a} has ${finalBalances[a]}, but its initial ${h.initial[a]} plus the ${log.ids.length} transfers in its log make ${expected}` });
    }
  }

  // ---------------------------------------------------------------- each transfer applied as its outcome says
  for (const t of h.transfers) {
    const cf = logs[t.from].count.get(t.id) ?? 0;
    const ct = logs[t.to].count.get(t.id) ?? 0;
    if (cf !== ct) {
      out.push({ kind: 'partial-transfer', message: `transfer ${showOp(t)} is ${cf} time(s) in source account ${t.from}'s log but ${ct} time(s) in target account ${t.to}'s`, ops: [t.id] });
    }
    const applied = Math.max(cf, ct);
    const when = `; faults around it: ${faultsDuring(h.faults, t.start, t.end, 1000)}`;
    if (t.outcome === 'ok' && t.moved) {
      if (applied === 0) out.push({ kind: 'lost-transfer', message: `acknowledged transfer ${showOp(t)} of ${t.amount} from ${t.from} to ${t.to} is in no log at the end${when}`, ops: [t.id] });
      if (applied > 1) out.push({ kind: 'duplicate-transfer', message: `acknowledged transfer ${showOp(t)} of ${t.amount} from ${t.from} to ${t.to} applied ${applied} times${when}`, ops: [t.id] });
    } else if (t.outcome === 'ok' && applied > 0) {
      out.push({ kind: 'noop-transfer-applied', message: `transfer ${showOp(t)} was acknowledged as a no-op (its committed run found less than ${t.amount} in account ${t.from}) but applied ${applied} time(s): an earlier run of it committed too${when}`, ops: [t.id] });
    } else if (t.outcome === 'fail' && applied > 0) {
      out.push({ kind: 'failed-transfer-applied', message: `transfer ${showOp(t)} failed definitely but applied ${applied} time(s)${when}`, ops: [t.id] });
    } else if (t.outcome === 'unknown' && applied > 1) {
      out.push({ kind: 'duplicate-transfer', message: `transfer ${showOp(t)} (unknown outcome) applied ${applied} times${when}`, ops: [t.id] });
    }
  }

  // ---------------------------------------------------------------- reads
  // A lost transfer is reported as lost, not again as missed by every later read.
  const acked = h.transfers.filter((t) => t.outcome === 'ok' && t.moved && logs[t.from].count.has(t.id)).sort((x, y) => x.end - y.end);
  const byStart = [...h.transfers].sort((x, y) => x.start - y.start);
  for (const r of h.reads) {
    if (r.outcome !== 'ok' || !r.accounts) continue;
    const balances = r.accounts.map((x) => x.balance);
    const sum = balances.reduce((x, y) => x + y, 0);
    const at = `read ${showOp(r)}`;
    if (sum !== total) {
      out.push({ kind: 'balance-not-conserved', message: `${at}: the balances sum to ${sum}, not ${total} (balances ${balances.join(', ')}); faults around it: ${faultsDuring(h.faults, r.start, r.end, 1000)}`, ops: [r.id] });
    }
    balances.forEach((b, a) => {
      if (b < 0) out.push({ kind: 'negative-balance', message: `${at}: account ${a} has ${b}`, ops: [r.id] });
    });
    // What this read saw of each account's log, as positions in the final log.
    const seenUpTo: number[] = [];
    const seenRecent: Set<string>[] = [];
    let consistent = true;
    for (let a = 0; a < n; a++) {
      const v = r.accounts[a];
      const log = logs[a];
      let end = 0;
      if (v.chunk !== null) {
        const e = log.chunkEnd.get(v.chunk);
        if (e === undefined) {
          out.push({ kind: 'read-state-lost', message: `${at} saw log chunk ${v.chunk} of account ${a}, which the final state does not have: transfers it saw applied were undone`, ops: [r.id] });
          consistent = false;
          continue;
        }
        end = e;
      }
      seenUpTo.push(end);
      seenRecent.push(new Set(v.recent));
      // Logs only grow at the end: what the read saw after its newest chunk is the final log's next ids.
      const after = log.ids.slice(end, end + v.recent.length);
      const k = v.recent.findIndex((id, j) => after[j] !== id);
      if (k >= 0) {
        out.push({
          kind: 'read-state-lost',
          message: `${at} saw account ${a}'s log continue with ${v.recent.slice(k, k + MAX_IDS_SHOWN).join(', ')} after ${k} id(s) past ${v.chunk ?? 'its start'}, but the final log has ${after.slice(k, k + MAX_IDS_SHOWN).join(', ') || 'nothing'} there: applied transfers were undone`,
          ops: [r.id, ...v.recent.slice(k, k + MAX_IDS_SHOWN)],
        });
      }
      let d = log.prefixDelta[end];
      for (const id of v.recent) d += delta(a, id) ?? 0;
      if (h.initial[a] + d !== v.balance) {
        out.push({ kind: 'balance-log-mismatch', message: `${at}: account ${a} has ${v.balance}, but its initial ${h.initial[a]} plus the transfers in the log it read make ${h.initial[a] + d}`, ops: [r.id] });
      }
    }
    if (!consistent) continue;
    const saw = (a: number, id: string) => seenRecent[a].has(id) || (logs[a].firstPos.get(id) ?? Infinity) < seenUpTo[a];
    // Strict serializability: every transfer acknowledged before the read began is in it...
    const missed: TransferOp[] = [];
    for (const t of acked) {
      if (t.end >= r.start) break;
      if (!saw(t.from, t.id) || !saw(t.to, t.id)) missed.push(t);
    }
    if (missed.length > 0) {
      const last = missed[missed.length - 1];
      out.push({
        kind: 'stale-read',
        message: `${at} misses ${missed.length} transfer(s) acknowledged before it began, e.g. ${showOp(last)} (${last.from} -> ${last.to}); faults around it: ${faultsDuring(h.faults, last.start, r.end, 1000)}`,
        ops: [r.id, ...missed.slice(0, MAX_IDS_SHOWN).map((t) => t.id)],
      });
    }
    // ...and none that began after it ended.
    const future: TransferOp[] = [];
    for (let i = byStart.length - 1; i >= 0 && byStart[i].start > r.end; i--) {
      const t = byStart[i];
      if (saw(t.from, t.id) || saw(t.to, t.id)) future.push(t);
    }
    if (future.length > 0) {
      out.push({ kind: 'future-read', message: `${at} saw ${future.length} transfer(s) that began after it ended, e.g. ${showOp(future[0])}`, ops: [r.id, ...future.slice(0, MAX_IDS_SHOWN).map((t) => t.id)] });
    }
  }
  return out;

  function flatten(a: number, v: AccountView, chunks: Record<string, LogChunkRecord>, anomalies: Anomaly[]): FinalLog {
    const chain: { oid: string; ids: string[] }[] = [];
    const visited = new Set<string>();
    for (let c = v.chunk; c !== null;) {
      const rec: LogChunkRecord | undefined = chunks[c];
      if (!rec || visited.has(c)) {
        anomalies.push({ kind: 'broken-log', message: `final state: account ${a}'s log chunk ${c} is ${rec ? 'in a cycle' : 'missing'}` });
        break;
      }
      visited.add(c);
      chain.push({ oid: c, ids: rec.ids });
      c = rec.prev;
    }
    chain.reverse();
    const ids: string[] = [];
    const chunkEnd = new Map<string, number>();
    for (const c of chain) {
      ids.push(...c.ids);
      chunkEnd.set(c.oid, ids.length);
    }
    ids.push(...v.recent);
    const firstPos = new Map<string, number>();
    const count = new Map<string, number>();
    const prefixDelta = [0];
    ids.forEach((id, i) => {
      if (!firstPos.has(id)) firstPos.set(id, i);
      count.set(id, (count.get(id) ?? 0) + 1);
      prefixDelta.push(prefixDelta[i] + (delta(a, id) ?? 0));
    });
    return { ids, firstPos, count, chunkEnd, prefixDelta };
  }
}
