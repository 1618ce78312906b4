/**
 * The register checker. The model: each register holds `{ n, wid, prev }`; a write reads the
 * register (value `prev`), then writes `n = prev.n + 1` with a fresh id `wid`, with a version check,
 * so the committed writes of a register form one chain from the initial value (`wid` 'init', n 0),
 * each naming the value it replaced. Walking `prev` from the final value gives exactly the writes
 * that took effect.
 *
 * Checks: every acknowledged write is on the final chain (none lost) and no definitely-failed one
 * is; the writes of one transaction are all on their chains or none is; every read returns a value
 * some write produced (not a phantom, not a failed write, not one that began after the read
 * ended), a value that is still in the final history, and never one older than a write
 * acknowledged before the read began: for master reads that is linearizability of the register
 * (whose values are totally ordered by n), for `readFrom: 'any'` reads the promise that replicas
 * are updated before a write is acknowledged.
 */
import type { Anomaly, FaultRecord, OpRecord } from './history.js';
import { faultsDuring, showOp } from './history.js';

export const INITIAL_WID = 'init';

export interface RegValue {
  n: number;
  wid: string;
}

export interface RegWriteOp extends OpRecord {
  type: 'write';
  /** The write's id is `id`; it is what the register's `wid` becomes. */
  reg: number;
  n: number;
  /** wid of the value this write read and replaces. */
  prev: string;
  via: 'save' | 'tx' | 'tx2';
  /** Writes committed together (one transaction over two registers) share a group. */
  group?: string;
}

export interface RegReadOp extends OpRecord {
  type: 'read';
  reg: number;
  mode: 'master' | 'any';
  /** The node the reading client reached first (a readFrom 'any' read asks it first). */
  node: number;
  value?: RegValue;
}

export interface RegisterHistory {
  registers: number;
  writes: RegWriteOp[];
  reads: RegReadOp[];
  faults: FaultRecord[];
  /** Each register read from its master after the run. */
  final: RegValue[];
}

export function checkRegister(h: RegisterHistory): Anomaly[] {
  const out: Anomaly[] = [];
  const byWid = new Map(h.writes.map((w) => [w.id, w]));

  // ---------------------------------------------------------------- the final chains
  const chains: Set<string>[] = [];
  /** Per register: wid -> the write on the final chain that replaced it. */
  const successors: Map<string, RegWriteOp>[] = [];
  for (let g = 0; g < h.registers; g++) {
    const chain = new Set<string>([INITIAL_WID]);
    chains.push(chain);
    const next = new Map<string, RegWriteOp>();
    successors.push(next);
    const fin = h.final[g];
    let cur = fin.wid;
    let n = fin.n;
    while (cur !== INITIAL_WID) {
      const w = byWid.get(cur);
      if (!w || w.reg !== g) {
        out.push({ kind: 'phantom-write', message: `register ${g}'s history reaches ${cur} (n ${n}), which no write of it wrote` });
        break;
      }
      if (chain.has(cur)) {
        out.push({ kind: 'corrupt-chain', message: `register ${g}'s history has a cycle at ${cur}` });
        break;
      }
      if (w.n !== n) out.push({ kind: 'corrupt-chain', message: `register ${g}'s history has ${cur} at n ${n}, but that write wrote n ${w.n}`, ops: [w.id] });
      chain.add(cur);
      next.set(w.prev, w);
      cur = w.prev;
      n = w.n - 1;
    }
    if (cur === INITIAL_WID && n !== 0) out.push({ kind: 'corrupt-chain', message: `register ${g}'s history reaches the initial value at n ${n}, not 0` });
  }

  // ---------------------------------------------------------------- writes
  const groups = new Map<string, RegWriteOp[]>();
  for (const w of h.writes) {
    const on = chains[w.reg].has(w.id);
    const when = `; faults around it: ${faultsDuring(h.faults, w.start, w.end, 1000)}`;
    if (w.outcome === 'ok' && !on) {
      const rival = h.writes.find((x) => x !== w && x.reg === w.reg && x.n === w.n && chains[w.reg].has(x.id));
      out.push({
        kind: 'lost-write',
        message: `acknowledged write ${showOp(w)} (register ${w.reg}, n ${w.n}, via ${w.via}) is not in the final history` +
          (rival ? `; ${showOp(rival)} took n ${w.n} instead` : '') + when,
        ops: rival ? [w.id, rival.id] : [w.id],
      });
    }
    if (w.outcome === 'fail' && on) {
      out.push({ kind: 'failed-write-applied', message: `write ${showOp(w)} (register ${w.reg}, n ${w.n}, via ${w.via}) failed definitely but is in the final history${when}`, ops: [w.id] });
    }
    if (w.group) groups.set(w.group, [...(groups.get(w.group) ?? []), w]);
  }
  for (const [group, ws] of groups) {
    const on = ws.filter((w) => chains[w.reg].has(w.id));
    if (on.length > 0 && on.length < ws.length) {
      out.push({ kind: 'partial-transaction', message: `transaction ${group} wrote ${ws.length} registers but only ${on.map((w) => `${w.id} (register ${w.reg})`).join(', ')} took effect`, ops: ws.map((w) => w.id) });
    }
  }

  // ---------------------------------------------------------------- reads
  // Per register: acknowledged writes by end time, with the running maximum of n.
  const ackedByEnd: { end: number; maxN: number; w: RegWriteOp }[][] = [];
  for (let g = 0; g < h.registers; g++) {
    const list = h.writes.filter((w) => w.reg === g && w.outcome === 'ok').sort((a, b) => a.end - b.end);
    let best: RegWriteOp | undefined;
    ackedByEnd.push(list.map((w) => {
      if (!best || w.n > best.n) best = w;
      return { end: w.end, maxN: best.n, w: best };
    }));
  }
  /** The acknowledged write with the highest n among those that ended before `t`. */
  const latestAckedBefore = (g: number, t: number): RegWriteOp | undefined => {
    const list = ackedByEnd[g];
    let lo = 0;
    let hi = list.length; // first index with end >= t
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (list[mid].end < t) lo = mid + 1;
      else hi = mid;
    }
    return lo === 0 ? undefined : list[lo - 1].w;
  };
  for (const r of h.reads) {
    if (r.outcome !== 'ok' || !r.value) continue;
    const v = r.value;
    const at = `${r.mode} read ${showOp(r)} of register ${r.reg} through node ${r.node}`;
    if (v.wid === INITIAL_WID) {
      if (v.n !== 0) out.push({ kind: 'corrupt-read', message: `${at} returned the initial value with n ${v.n}`, ops: [r.id] });
    } else {
      const w = byWid.get(v.wid);
      if (!w || w.reg !== r.reg) {
        out.push({ kind: 'phantom-read', message: `${at} returned ${v.wid} (n ${v.n}), which no write of this register wrote`, ops: [r.id] });
        continue;
      }
      if (w.n !== v.n) out.push({ kind: 'corrupt-read', message: `${at} returned ${v.wid} with n ${v.n}, but that write wrote n ${w.n}`, ops: [r.id, w.id] });
      if (w.start > r.end) out.push({ kind: 'future-read', message: `${at} returned the value of ${showOp(w)}, which began after the read ended`, ops: [r.id, w.id] });
      // A failed write that took effect is one anomaly (failed-write-applied), not one per read of it.
      if (w.outcome === 'fail' && !chains[r.reg].has(v.wid)) {
        out.push({ kind: 'read-of-failed-write', message: `${at} returned the value of ${showOp(w)}, which failed definitely and is not in the final history (a dirty read)`, ops: [r.id, w.id] });
      } else if (!chains[r.reg].has(v.wid)) {
        out.push({ kind: 'read-value-lost', message: `${at} returned n ${v.n} of ${showOp(w)}, which is not in the final history (a value that was visible was later undone)`, ops: [r.id, w.id] });
      }
    }
    const floor = latestAckedBefore(r.reg, r.start);
    if (floor && v.n < floor.n) {
      // Stale since the value was replaced: the faults from then on are the suspects.
      const succ = successors[r.reg].get(v.wid);
      const since = succ ? Math.min(succ.end, floor.end) : floor.end;
      out.push({
        kind: r.mode === 'master' ? 'stale-read' : 'stale-replica-read',
        message: `${at} returned n ${v.n}, older than n ${floor.n} of ${showOp(floor)}, acknowledged before the read began` +
          `${succ ? `; n ${v.n} was replaced by ${showOp(succ)}` : ''}; faults since then: ${faultsDuring(h.faults, since, r.end, 1000)}`,
        ops: [r.id, floor.id],
      });
    }
  }
  return out;
}
