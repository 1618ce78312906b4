import { AbortedError, InvalidArgumentError, ReadConflictError, WriteConflictError } from '@loam/sdk/wire';
import { bytesFromHex } from './oid-index.js';
import { encodeBatch, RecordType, type LogRecord } from './record.js';
import { olderThan } from './locks.js';
import { touchedOids, validateCommit, type CommitInput } from './commit-validation.js';
import type { EngineCore } from './engine-core.js';

/**
 * This node's side of distributed transactions: prepare (validate, lock, log the records to
 * apply) and finish (apply or drop, release the locks).
 */
export class Participant {
  /** Prepares still being made durable, by txid: a duplicate gets the same answer. */
  private readonly preparing = new Map<string, Promise<number[]>>();

  constructor(private readonly core: EngineCore, private readonly lockWaitMs: number) {}

  private get s() {
    return this.core.state;
  }

  /**
   * Prepares this node's part of a distributed transaction: validates it like a commit, locks
   * every object it reads or writes, and makes the records to apply durable in a Prepare
   * record. Nothing is visible until finish(). Preparing the same txid again returns the same answer.
   */
  prepare(txid: string, coordinator: number, input: CommitInput): Promise<number[]> {
    try {
      assertTxid(txid);
    } catch (e) {
      return Promise.reject(e);
    }
    const done = this.s.prepared.get(txid);
    if (done) return Promise.resolve(done.versions);
    // Finished here already (a retried transaction): its first outcome, never a second prepare.
    const outcome = this.s.outcomes.get(txid);
    if (outcome) return outcome.ok ? Promise.resolve(outcome.versions) : Promise.reject(new AbortedError(`transaction ${txid} was aborted; nothing of it was applied`, { notApplied: true }));
    const running = this.preparing.get(txid);
    if (running) return running;
    if ((input.aliasSets?.length ?? 0) + (input.aliasDeletes?.length ?? 0) > 0) {
      return Promise.reject(new InvalidArgumentError('aliases of a distributed transaction are kept by its coordinator, not prepared'));
    }
    const p = this.prepareInner(txid, coordinator, input).finally(() => this.preparing.delete(txid));
    this.preparing.set(txid, p);
    return p;
  }

  private async prepareInner(txid: string, coordinator: number, input: CommitInput): Promise<number[]> {
    // Wait-die: this part waits only for younger transactions; an older lock makes it give up
    // at once (the SDK retries), so two transactions taking objects in opposite order never wait
    // for each other. See LockTable.
    const touched = touchedOids(input);
    const deadline = Date.now() + this.lockWaitMs;
    let step;
    while ((step = this.s.locks.waitStep(touched, deadline, txid, (holder) => olderThan(txid, holder))) instanceof Promise) await step;
    if (step.refused !== undefined) {
      const oid = touched.find((o) => this.s.locks.holder(o) === step.refused)!;
      const isWrite = (input.writes ?? []).some((w) => w.oid === oid) || (input.deletes ?? []).some((d) => d.oid === oid);
      const msg = `object ${oid} is locked by older transaction ${step.refused}; this one gives way (retry)`;
      throw isWrite ? new WriteConflictError(msg, { oid }) : new ReadConflictError(msg, { oid });
    }
    const ds = this.core.datasetId(input.dataset);
    const { records, versions } = validateCommit(this.s, this.core.limits, ds, input);
    const locked = [...new Set(touched)];
    this.s.locks.acquire(txid, locked); // taken synchronously with the validation
    try {
      const body = records.length > 0 ? encodeBatch(records).buf : Buffer.alloc(0);
      const rec: LogRecord = { type: RecordType.Prepare, dataset: ds, txid: Buffer.from(txid, 'hex'), coordinator, locked: locked.map(bytesFromHex), body };
      const at = await this.core.append([rec]);
      const place = { segment: at.segment, offset: at.offsets[0], length: at.sizes[0] };
      this.s.prepared.set(txid, { records, versions, locked, coordinator, dataset: ds, preparedAt: Date.now(), ...place });
      this.s.liveDelta(place.segment, place.length);
      return versions;
    } catch (e) {
      this.s.locks.release(txid);
      throw e;
    }
  }

  /**
   * Applies (commit) or drops (abort) a prepared part, and releases its locks. Idempotent.
   * Returns the dataset and the objects it wrote or deleted (for replica updates).
   */
  async finish(txid: string, commit: boolean): Promise<{ dataset: string; oids: string[] }> {
    assertTxid(txid);
    const p = this.s.prepared.get(txid);
    if (!p) return { dataset: '', oids: [] }; // finished before, or never prepared here
    const id = Buffer.from(txid, 'hex');
    const decided: LogRecord = { type: RecordType.Decided, dataset: p.dataset, txid: id, commit };
    // Remembered with the decision, so a retried prepare of this txid gets the first outcome.
    const outcome: LogRecord = { type: RecordType.Outcome, dataset: p.dataset, id, at: Date.now(), ok: commit, versions: p.versions };
    const batch = commit ? [...p.records, decided, outcome] : [decided, outcome];
    const at = await this.core.append(batch);
    for (let i = 0; i < batch.length; i++) this.s.apply(batch[i], { segment: at.segment, offset: at.offsets[i], length: at.sizes[i] });
    const oids = commit ? p.records.flatMap((r) => (r.type === RecordType.Put || r.type === RecordType.Delete ? [r.oid.toString('hex')] : [])) : [];
    return { dataset: this.s.datasetName(p.dataset), oids };
  }

  /** Prepared parts still waiting for their decision. */
  preparedTransactions(): { txid: string; coordinator: number; preparedAt: number }[] {
    return [...this.s.prepared].map(([txid, p]) => ({ txid, coordinator: p.coordinator, preparedAt: p.preparedAt }));
  }
}

const TXID_RE = /^[0-9a-f]{32}$/;
function assertTxid(txid: string): void {
  if (!TXID_RE.test(txid)) throw new InvalidArgumentError(`malformed transaction id ${JSON.stringify(txid)} (32 hex digits)`);
}
