import {
  AbortedError, CommitUnknownError, ConflictError, InvalidArgumentError, LoamError, NodeDrainedError, NotFoundError, UnavailableError, isOid, oidHomeNode, validateAlias,
  type CommitMultiRequest, type CommitMultiResponse, type CommitRequest, type PrepareResponse,
} from '@loam/sdk/wire';
import type { Engine } from '../storage/engine.js';
import type { Logger } from '../logger.js';
import { META_KEYS } from '../meta/meta-store.js';
import { failpoint } from '../failpoints.js';
import type { Membership } from './membership.js';
import { Placement } from './placement.js';
import type { Peers, PeerTarget } from './peers.js';
import { reserveAlias } from './aliases.js';

/** How long a participant holds a prepared part before it asks etcd for the decision itself. */
const DEFAULT_PREPARED_TIMEOUT_MS = 5_000;
const RESOLVE_EVERY_MS = 1_000;
/** Decision keys of finished transactions are deleted in one batch this long after the first. */
const REAP_AFTER_MS = 200;

/**
 * Distributed transactions, two-phase commit with the decision recorded once in the metadata
 * store (create-if-absent: the first writer decides). The coordinator prepares every part,
 * writes "commit" (or "abort" if a part failed), then finishes every part. A participant that
 * holds a prepared part past the timeout reads the decision, or writes "abort" if there is none,
 * so a crashed coordinator never leaves locks behind and a crashed participant applies the
 * decision when it is back. The decision key is dropped once every participant has finished.
 */
export class Transactions {
  private readonly timer: NodeJS.Timeout;
  private resolving?: Promise<void>;
  private readonly toReap = new Set<string>();
  private reapTimer?: NodeJS.Timeout;
  readonly preparedTimeoutMs: number;

  constructor(
    private readonly engine: Engine,
    private readonly membership: Membership,
    private readonly placement: Placement,
    private readonly log: Logger,
    /** Node-to-node calls (closed with this). */
    private readonly peers: Peers,
  ) {
    this.preparedTimeoutMs = Number(process.env.LOAM_TX_TIMEOUT_MS ?? DEFAULT_PREPARED_TIMEOUT_MS);
    this.timer = setInterval(() => void this.resolveStale(), RESOLVE_EVERY_MS);
    this.timer.unref();
  }

  private get meta() {
    return this.membership.meta;
  }

  // ------------------------------------------------------------------ participant

  /** Prepares this node's part: the objects must be here (else a redirect), then validate, lock, log. */
  async prepareHere(txid: string, coordinator: number, ops: CommitRequest): Promise<PrepareResponse> {
    const me = this.membership.self.number;
    const done = this.engine.outcomeOf(txid);
    if (done) {
      // A retried transaction this node already finished: its first outcome, not a new prepare
      // (the objects may have moved or changed since). A committed part's replicas are brought
      // up to date again before the answer, as the first answer promised.
      const written = [...ops.writes.map((w) => w.oid), ...ops.deletes.map((d) => d.oid)];
      if (done.ok) await this.placement.pushReplicas(ops.dataset, written.filter((o) => this.engine.masters(o)));
      return { versions: done.versions, replicated: false, finished: done.ok ? 'commit' : 'abort', deletesAway: false };
    }
    const touched = [...ops.writes.map((w) => w.oid), ...ops.deletes.map((d) => d.oid), ...ops.reads.map((r) => r.oid)];
    for (const oid of touched) if (!isOid(oid)) throw new InvalidArgumentError(`malformed oid ${JSON.stringify(oid)}`);
    await this.placement.waitUnlocked(touched);
    if (this.placement.isDrained && ops.writes.some((w) => w.expectedVersion === 0)) {
      throw new NodeDrainedError(`node ${me} is drained: create objects on another node`, { node: me });
    }
    for (const w of ops.writes) {
      if (w.expectedVersion === 0 && oidHomeNode(w.oid) !== me) {
        const home = oidHomeNode(w.oid);
        if (await this.membership.homeHandedOverBy(home)) throw new NodeDrainedError(`node ${home} is drained: create objects on another node`, { node: home });
        throw new InvalidArgumentError(`object ${w.oid} must be created on its home node ${home}, not on node ${me}`, { oid: w.oid });
      }
    }
    for (const oid of [...ops.writes.filter((w) => w.expectedVersion > 0).map((w) => w.oid), ...ops.deletes.map((d) => d.oid), ...ops.reads.map((r) => r.oid)]) {
      if (this.engine.masters(oid)) continue;
      const r = await this.placement.redirectFor(oid);
      if (r) throw Placement.redirectError(r);
    }
    const versions = await this.engine.prepare(txid, coordinator, { dataset: ops.dataset, reads: ops.reads, writes: ops.writes, deletes: ops.deletes });
    failpoint('participant-after-prepare');
    const replicated = [...ops.writes, ...ops.deletes].some((w) => this.engine.replicasOf(w.oid).length > 0);
    return { versions, replicated, finished: '', deletesAway: ops.deletes.some((d) => oidHomeNode(d.oid) !== me) };
  }

  async finishHere(txid: string, commit: boolean): Promise<void> {
    if (commit) failpoint('participant-before-commit');
    const done = await this.engine.finish(txid, commit);
    if (done.oids.length > 0) await this.placement.pushReplicas(done.dataset, done.oids);
    if (done.oids.length > 0) await this.placement.forgetDeleted(done.oids);
  }

  /** Resolves prepared parts whose coordinator has gone quiet: read the decision, or decide abort. */
  resolveStale(): Promise<void> {
    this.resolving ??= (async () => {
      const now = Date.now();
      for (const p of this.engine.preparedTransactions()) {
        if (now - p.preparedAt < this.preparedTimeoutMs) continue;
        try {
          const d = await this.meta.createIfAbsent(META_KEYS.decision(p.txid), 'abort');
          const done = await this.engine.finish(p.txid, d.value === 'commit');
          if (done.oids.length > 0) await this.placement.pushReplicas(done.dataset, done.oids);
          if (done.oids.length > 0) await this.placement.forgetDeleted(done.oids);
          this.log.warn({ txid: p.txid, decision: d.value, decidedHere: d.created }, 'resolved a prepared transaction without its coordinator');
        } catch (e) {
          this.log.warn({ txid: p.txid, err: (e as Error).message }, 'cannot resolve a prepared transaction yet');
        }
      }
    })().finally(() => {
      this.resolving = undefined;
    });
    return this.resolving;
  }

  // ------------------------------------------------------------------ coordinator

  /**
   * Runs a distributed transaction. `deadline` (ms since the epoch) is when the client stops
   * waiting: prepares still running then fail, and the transaction aborts and releases its locks
   * rather than hold them for a client that has gone.
   */
  async commitMulti(req: CommitMultiRequest, deadline?: number): Promise<CommitMultiResponse> {
    if (!/^[0-9a-f]{32}$/.test(req.txid)) throw new InvalidArgumentError(`malformed transaction id ${JSON.stringify(req.txid)}`);
    if (req.parts.length < 1 || req.parts.length > 64) throw new InvalidArgumentError('a distributed transaction has 1 to 64 parts');
    const nodes = new Set(req.parts.map((p) => p.node));
    if (nodes.size !== req.parts.length) throw new InvalidArgumentError('each node may appear in one part only');
    const me = this.membership.self.number;
    const members = await Promise.all(req.parts.map((p) => (p.node === me ? Promise.resolve(this.membership.self) : this.membership.byNumber(p.node))));
    const missing = req.parts.findIndex((_, i) => !members[i]);
    if (missing >= 0) throw new UnavailableError(`node ${req.parts[missing].node} of this transaction is not available`, { node: req.parts[missing].node });
    const targets = members as PeerTarget[];

    const reserved = await this.reserveAliases(req);
    const decisionKey = META_KEYS.decision(req.txid);
    let versions: PrepareResponse[];
    try {
      // Phase 1: prepare every part (in parallel). Any failure decides abort.
      const results = await Promise.allSettled(req.parts.map((part, i) => {
        const ops = { ...part.ops!, dataset: req.dataset };
        return part.node === me
          ? this.prepareHere(req.txid, me, ops)
          : this.peers.prepare(members[i]!, { txid: req.txid, coordinator: me, ops }, deadline === undefined ? undefined : Math.max(1, deadline - Date.now()));
      }));
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) {
        const decided = await this.decideAndFinish(req, targets, 'abort');
        const reason = failed.reason as unknown;
        if (decided === 'commit') {
          // An earlier attempt of this txid committed (a participant that lost track of it failed
          // its prepare now): applied, but its versions cannot be answered here.
          throw new CommitUnknownError(`transaction ${req.txid} was committed by an earlier attempt; read its objects for their versions`);
        }
        // With "abort" in etcd nothing of it can apply: say so, so the client may run it again.
        if (decided === 'abort' && !(reason instanceof ConflictError) && !(reason instanceof LoamError && reason.code !== 'UNAVAILABLE' && reason.code !== 'DEADLINE_EXCEEDED')) {
          throw new AbortedError(`transaction ${req.txid} was aborted (${(reason as Error).message}); nothing of it was applied`, { notApplied: true });
        }
        throw reason;
      }
      versions = results.map((r) => (r as PromiseFulfilledResult<PrepareResponse>).value);
      failpoint('coordinator-after-prepare');

      // A retry of a transaction that already finished: answer with its first outcome.
      if (versions.some((v) => v.finished === 'abort')) {
        await this.decideAndFinish(req, targets, 'abort');
        throw new AbortedError(`transaction ${req.txid} was aborted; nothing of it was applied`, { notApplied: true });
      }
      if (versions.every((v) => v.finished === 'commit')) {
        await this.confirmAliases(req, reserved);
        return { parts: versions.map((v) => ({ ...v, finished: '' })) };
      }

      // The decision: written once; a participant that timed out may have written "abort" first.
      const d = await this.meta.createIfAbsent(decisionKey, 'commit');
      failpoint('coordinator-after-decision');
      if (d.value !== 'commit') {
        await this.decideAndFinish(req, targets, 'abort');
        throw new AbortedError(`transaction ${req.txid} was aborted: a participant timed out waiting for its coordinator; nothing of it was applied`, { notApplied: true });
      }
    } catch (e) {
      await this.releaseAliases(reserved);
      throw e;
    }
    if (versions.some((v) => v.replicated || v.deletesAway)) {
      // Replicas are current before a write is acknowledged: readers of a replica copy do not
      // wait for the decision the way readers of the (locked) master copy do. Likewise home
      // directories forget deleted objects before the ack (see Placement.forgetDeleted).
      const finished = await this.finishAll(req, targets, true);
      await this.confirmAliases(req, reserved);
      if (!finished && versions.some((v) => v.replicated)) throw new UnavailableError(`transaction ${req.txid} committed, but not every replica of what it wrote could be updated`);
      this.reap(decisionKey);
      return { parts: versions };
    }
    // Committed: the decision is durable in etcd, so the transaction is acknowledged now; the
    // parts are finished in the background (a participant that misses its Finish reads the
    // decision itself, and readers and writers of its objects wait for it).
    void (async () => {
      // After this turn, so the client's answer goes out before the finishing work starts.
      await new Promise((r) => setImmediate(r));
      const finished = await this.finishAll(req, targets, true);
      await this.confirmAliases(req, reserved);
      if (finished) this.reap(decisionKey);
    })().catch((e) => this.log.warn({ txid: req.txid, err: (e as Error).message }, 'finishing a committed transaction'));
    return { parts: versions };
  }

  /**
   * Writes the decision (if nobody has) and finishes every part with it. Returns the decision
   * in etcd, or undefined when it could not be read or written (then nothing is known).
   */
  private async decideAndFinish(req: CommitMultiRequest, targets: PeerTarget[], decision: 'abort'): Promise<string | undefined> {
    const d = await this.meta.createIfAbsent(META_KEYS.decision(req.txid), decision).catch(() => undefined);
    if (d && d.value !== decision) this.log.error({ txid: req.txid, decision: d.value }, 'decision differs from the one this coordinator reached');
    // Without a decision read from etcd the parts stay prepared: another attempt of this txid
    // may have written "commit" there, and aborting its parts would undo an applied commit.
    // They resolve themselves from etcd after their timeout.
    if (!d) return undefined;
    const finished = await this.finishAll(req, targets, d.value === 'commit');
    if (finished) this.reap(META_KEYS.decision(req.txid));
    return d.value;
  }

  /** Finishes every part; true when all acknowledged (a failed one resolves itself later). */
  private async finishAll(req: CommitMultiRequest, targets: PeerTarget[], commit: boolean): Promise<boolean> {
    const me = this.membership.self.number;
    const results = await Promise.allSettled(req.parts.map((part, i) =>
      part.node === me ? this.finishHere(req.txid, commit) : this.peers.finish(targets[i], { txid: req.txid, commit })));
    const failed = results.filter((r) => r.status === 'rejected');
    if (failed.length > 0) this.log.warn({ txid: req.txid, commit, failed: failed.length }, 'participants will finish on their own');
    return failed.length === 0;
  }

  private async reserveAliases(req: CommitMultiRequest): Promise<{ key: string; value: string; oid: string }[]> {
    const reserved: { key: string; value: string; oid: string }[] = [];
    try {
      for (const a of req.aliasSets) {
        validateAlias(a.alias, this.engine.limits);
        const r = await reserveAlias(this.meta, req.dataset, a.alias, a.oid, (oid) => this.placement.exists(req.dataset, oid));
        reserved.push({ ...r, oid: a.oid });
      }
      for (const alias of req.aliasDeletes) {
        validateAlias(alias, this.engine.limits);
        if ((await this.meta.get(META_KEYS.alias(req.dataset, alias))) === undefined) {
          throw new NotFoundError(`no alias ${JSON.stringify(alias)} in dataset ${req.dataset}`, { alias, dataset: req.dataset });
        }
      }
    } catch (e) {
      await this.releaseAliases(reserved);
      throw e;
    }
    return reserved;
  }

  private async releaseAliases(reserved: { key: string; value: string }[]): Promise<void> {
    for (const r of reserved) await this.meta.compareAndSet(r.key, r.value, undefined).catch(() => undefined);
  }

  private async confirmAliases(req: CommitMultiRequest, reserved: { key: string; value: string; oid: string }[]): Promise<void> {
    for (const r of reserved) await this.meta.compareAndSet(r.key, r.value, JSON.stringify({ oid: r.oid })).catch(() => undefined);
    for (const alias of req.aliasDeletes) await this.meta.delete(META_KEYS.alias(req.dataset, alias)).catch(() => undefined);
  }

  /**
   * Drops decision keys whose parts all finished, in batches: one etcd write per burst of
   * transactions instead of one each (every etcd write is an fsync the next commit waits behind).
   */
  private reap(key: string): void {
    this.toReap.add(key);
    this.reapTimer ??= setTimeout(() => void this.flushReaped(), REAP_AFTER_MS);
  }

  private async flushReaped(): Promise<void> {
    this.reapTimer = undefined;
    const keys = [...this.toReap];
    this.toReap.clear();
    if (keys.length > 0) await this.meta.deleteMany(keys).catch((e) => this.log.warn({ err: (e as Error).message, keys: keys.length }, 'decision keys not deleted (harmless: done later by nobody; they only take space)'));
  }


  close(): void {
    clearInterval(this.timer);
    if (this.reapTimer) {
      clearTimeout(this.reapTimer);
      void this.flushReaped();
    }
    this.peers.close();
  }
}
