/**
 * The register workload: a few registers (objects with a counter), writers doing
 * read-modify-write with a version check (client.save, or a transaction over one or two
 * registers, never retried, so each call is one attempt), readers reading from the master and
 * with readFrom 'any' through clients whose first node differs, while the nemesis moves and
 * replicates the registers and injects faults. Checked by register-checker.ts.
 */
import { Persistent, registerModel, type Client } from '@loam/sdk';
import { eventually, settlesWithin, type ChaosCluster } from './cluster.js';
import { classify, countBy, countOutcomes, describeError, type Anomaly, type Clock, type FaultKind, type OpCounts } from './history.js';
import { Nemesis } from './nemesis.js';
import { checkRegister, INITIAL_WID, type RegReadOp, type RegValue, type RegWriteOp, type RegisterHistory } from './register-checker.js';
import { Rng } from './rng.js';

export class Register extends Persistent {
  constructor(public reg: number, public n: number, public wid: string, public prev: string) {
    super();
  }
}
registerModel(Register, 'Chaos.Register');

export interface RegisterOptions {
  cluster: ChaosCluster;
  clock: Clock;
  seed: number;
  registers: number;
  writers: number;
  readers: number;
  durationMs: number;
  /** Pause between a reader's reads (pacing, so readers leave CPU to the rest). */
  readEveryMs: number;
  /**
   * Deadline of the workload's calls. Shorter than a pause: a writer stuck on a frozen replica
   * gives up and writes again once the frozen node has left the members, so writes are
   * acknowledged while it is frozen (what a stale replica read needs).
   */
  deadlineMs: number;
  nemesis?: { kinds: readonly FaultKind[]; failpoints: readonly string[]; gapMs: [number, number] };
  log: (line: string) => void;
}

export interface RegisterFigures {
  writes: OpCounts;
  reads: OpCounts & { master: number; any: number };
  faults: Record<string, number>;
  anomalies: Record<string, number>;
}

export interface RegisterRun {
  history: RegisterHistory;
  anomalies: Anomaly[];
  figures: RegisterFigures;
}

export async function runRegister(o: RegisterOptions): Promise<RegisterRun> {
  const { cluster, clock } = o;
  const nodes = cluster.slots.map((s) => s.number);
  const admin = await cluster.client(0);
  const oids: string[] = [];
  for (let g = 0; g < o.registers; g++) {
    const r = await admin.persist(new Register(g, 0, INITIAL_WID, ''), { backend: nodes[g % nodes.length] });
    oids.push(r.$oid!);
    await admin.replicate(r, nodes[(g + 1) % nodes.length]); // so that 'any' reads meet replicas from the start
  }
  const writes: RegWriteOp[] = [];
  const reads: RegReadOp[] = [];
  let stop = false;
  let readSeq = 0;

  const startRead = (reg: number, mode: 'master' | 'any', client: string, node: number): RegReadOp => {
    const op: RegReadOp = { type: 'read', id: `r${++readSeq}`, client, reg, mode, node, start: clock.now(), end: 0, outcome: 'unknown' };
    reads.push(op);
    return op;
  };
  const endRead = (op: RegReadOp, r: Register | undefined, err?: unknown) => {
    op.end = clock.now();
    if (r) {
      op.outcome = 'ok';
      op.value = { n: r.n, wid: r.wid };
    } else {
      Object.assign(op, classify(err));
    }
  };
  /** Sets a register read with value `r` up as write `wid` and records the write (not yet sent). */
  const prepareWrite = (r: Register, wid: string, client: string, via: RegWriteOp['via'], group?: string): RegWriteOp => {
    const op: RegWriteOp = { type: 'write', id: wid, client, reg: r.reg, n: r.n + 1, prev: r.wid, via, group, start: clock.now(), end: 0, outcome: 'unknown' };
    writes.push(op);
    r.n = op.n;
    r.prev = op.prev;
    r.wid = wid;
    return op;
  };
  const finish = (ops: RegWriteOp[], err?: unknown) => {
    const end = clock.now();
    for (const op of ops) {
      op.end = end;
      if (err === undefined) op.outcome = 'ok';
      else Object.assign(op, classify(err));
    }
  };

  const writer = async (w: number, client: Client, node: number) => {
    const rng = Rng.derive(o.seed, `register-writer-${w}`);
    const name = `w${w}`;
    for (let seq = 1; !stop; seq++) {
      const wid = `w${w}.${seq}`;
      const g = rng.int(0, o.registers - 1);
      const roll = rng.next();
      if (roll < 0.5) {
        // save(): a master read, then a write with that version.
        const rd = startRead(g, 'master', name, node);
        let r: Register;
        try {
          r = await client.get<Register>(oids[g]);
          endRead(rd, r);
        } catch (e) {
          endRead(rd, undefined, e);
          continue;
        }
        const op = prepareWrite(r, wid, name, 'save');
        await client.save(r).then(() => finish([op]), (e: unknown) => finish([op], e));
      } else {
        // A transaction over one register, or two (on different nodes when they are: two-phase commit).
        let g2 = rng.int(0, o.registers - 2);
        if (g2 >= g) g2++;
        const regs = roll < 0.8 || o.registers < 2 ? [g] : [g, g2];
        const ops: RegWriteOp[] = [];
        try {
          await client.transaction(async (tx) => {
            const rds = regs.map((x) => startRead(x, 'master', name, node));
            const rs = await Promise.all(regs.map((x) => tx.get<Register>(oids[x]))).catch((e: unknown) => {
              for (const rd of rds) endRead(rd, undefined, e);
              throw e;
            });
            rs.forEach((r, k) => endRead(rds[k], r));
            rs.forEach((r, k) => ops.push(prepareWrite(r, regs.length === 1 ? wid : `${wid}.${k}`, name, regs.length === 1 ? 'tx' : 'tx2', regs.length === 1 ? undefined : wid)));
          }, { retries: 0 });
          finish(ops);
        } catch (e) {
          finish(ops, e); // no ops: the reads failed, nothing was sent
        }
      }
    }
  };

  const reader = async (k: number, client: Client, node: number) => {
    const rng = Rng.derive(o.seed, `register-reader-${k}`);
    while (!stop) {
      const g = rng.int(0, o.registers - 1);
      const mode = rng.chance(0.6) ? 'any' : 'master';
      const rd = startRead(g, mode, `rd${k}`, node);
      try {
        endRead(rd, await client.get<Register>(oids[g], { readFrom: mode }));
      } catch (e) {
        endRead(rd, undefined, e);
      }
      if (!stop) await new Promise((r) => setTimeout(r, o.readEveryMs)); // pacing
    }
  };

  const running: Promise<void>[] = [];
  for (let w = 0; w < o.writers; w++) running.push(writer(w, await cluster.client(w % nodes.length, o.deadlineMs), nodes[w % nodes.length]));
  for (let k = 0; k < o.readers; k++) running.push(reader(k, await cluster.client(k % nodes.length, o.deadlineMs), nodes[k % nodes.length]));
  const nemesis = o.nemesis
    ? new Nemesis({ cluster, admin, clock, seed: o.seed, kinds: o.nemesis.kinds, failpoints: o.nemesis.failpoints, objects: () => oids, gapMs: o.nemesis.gapMs, log: o.log })
    : undefined;
  nemesis?.start();
  const anomalies: Anomaly[] = [];
  let healError: unknown;
  await new Promise((r) => setTimeout(r, o.durationMs)); // the run's length
  if (nemesis) {
    await nemesis.stop().catch((e: unknown) => (healError = e));
    if (!healError) await new Promise((r) => setTimeout(r, 2000)); // a moment of healthy running
  }
  stop = true;
  // Every call has a deadline, so the workers end; one that does not is a hang.
  if (!(await settlesWithin(Promise.all(running), 180_000))) {
    const stuck = [...writes, ...reads].filter((x) => x.end === 0);
    anomalies.push({ kind: 'stuck-operation', message: `${stuck.length} operation(s) still unanswered 180 s after the workload stopped: ${stuck.slice(0, 5).map((x) => `${x.id} (since ${x.start} ms)`).join(', ')}` });
  }
  if (healError) throw healError;

  const fin = await cluster.client(2 % nodes.length);
  const final: RegValue[] = [];
  try {
    for (const oid of oids) {
      const r = await eventually(() => fin.get<Register>(oid), `a final read of register ${oid}`, 120_000);
      final.push({ n: r.n, wid: r.wid });
    }
  } catch (e) {
    anomalies.push({ kind: 'unavailable-after-heal', message: `the final state could not be read after every fault was healed: ${describeError(e)}` });
  }
  const faults = nemesis?.faults ?? [];
  const history: RegisterHistory = { registers: o.registers, writes, reads, faults, final };
  if (final.length === o.registers) anomalies.push(...checkRegister(history));
  const rc = countOutcomes(reads);
  const figures: RegisterFigures = {
    writes: countOutcomes(writes),
    reads: { ...rc, master: reads.filter((r) => r.mode === 'master').length, any: reads.filter((r) => r.mode === 'any').length },
    faults: countBy(faults, (f) => f.kind),
    anomalies: countBy(anomalies, (a) => a.kind),
  };
  return { history, anomalies, figures };
}
