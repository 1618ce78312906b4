import fs from 'node:fs';
import pRetry from 'p-retry';
import path from 'node:path';
import {
  CommitUnknownError, DEFAULT_LIMITS, DeadlineExceededError, InternalError, InvalidArgumentError, LimitExceededError, NotFoundError,
  ReadConflictError, UnavailableError, UnknownDatasetError, WriteConflictError, assertOid, validateAlias, validateDatasetName,
  type Limits, type LoamError,
} from '@loam/sdk/wire';
import { wordsFromHex } from './oid-index.js';
import { checkFrame, decodeFrame, encodeBatch, RecordType, type LogRecord } from './record.js';
import { SegmentLog, parseSegmentName } from './segment-log.js';
import { ObjectStoreError, ObjectStoreUnavailableError, type ObjectStore } from './object-store.js';
import { ManifestKeys, latestManifest, type Manifest } from './tier/manifest.js';
import { S3Tier, type TierObserver } from './tier/s3-tier.js';
import { CheckpointError, encodeCheckpoint, loadCheckpoint, readCheckpoint, type DecodedCheckpoint, type EncodedCheckpoint } from './tier/checkpoint.js';
import { ChecksumMismatchError } from './tier/checked-fetch.js';
import type { RecoveryReport, SegmentStore, WriteBlock } from './segment-store.js';
import type { SegmentFiles } from './segment-files.js';
import { EngineState, OUTCOME_KEEP_MS, aliasKey, type DirectoryEntry, type PendingObject } from './engine-state.js';
import { touchedOids, validateCommit, type CommitInput } from './commit-validation.js';
import { Compactor, type CompactionResult } from './compaction.js';
import { Participant } from './participant.js';
import { PlacementRecords } from './placement-records.js';
import type { EngineCore } from './engine-core.js';

export type { CommitInput } from './commit-validation.js';
export type { CompactionResult } from './compaction.js';
export type { DirectoryEntry } from './engine-state.js';
export type { WriteBlock } from './segment-store.js';

/**
 * The object engine of one node: validates and applies atomic commits against the durable log,
 * keeps the index and an object cache, and compacts old segments. It does not decode object
 * state (that is the SDK codec's business); it stores class name, state bytes and a version.
 * Its jobs live in their own files: state and record kinds (engine-state), validation
 * (commit-validation), compaction, the two-phase participant, placement records; segments are
 * reached only through the SegmentStore interface.
 */
export interface EngineOptions {
  dir: string;
  /** Upper bound of the decoded-object cache, in bytes. */
  cacheBytes?: number;
  maxSegmentBytes?: number;
  limits?: Partial<Limits>;
  /** A sealed segment is compacted when the bytes it must keep fall below this share of its size. */
  compactBelowLiveRatio?: number;
  /** How often to look for segments to compact, ms; 0 turns the timer off (compact() still works). */
  compactionIntervalMs?: number;
  observer?: EngineObserver;
  /** How long a commit waits for a prepared transaction's lock (default 7 s). */
  lockWaitMs?: number;
  /** The file layer under the log (a fault injector in tests). */
  files?: SegmentFiles;
  /** How often a refused log (full disk) is probed for space again, ms (default 1000). */
  probeIntervalMs?: number;
  /**
   * The S3 tier: sealed segments are uploaded to `store` under `node`'s keys, and an empty log
   * directory is restored from its manifest first. Uploads start with `Engine.tier.start`.
   * The engine closes `store` when it closes.
   */
  tier?: {
    store: ObjectStore;
    node: string;
    nodeNumber: number;
    uploadIntervalMs: number;
    observer?: TierObserver;
    /** A download did not match its checksum (it is retried, never served). */
    onChecksumMismatch?: (key: string) => void;
    /** Bound on local bytes of segments S3 holds (least recently read evicted first). */
    diskCacheBytes?: number;
    /** An index checkpoint is taken once this many bytes were uploaded since the last (default 512 MiB); 0: none. */
    checkpointBytes?: number;
    info?: (msg: string, fields?: Record<string, unknown>) => void;
  };
}

/** Default bytes uploaded between two index checkpoints. */
export const DEFAULT_CHECKPOINT_BYTES = 512 * 1024 * 1024;

export interface EngineObserver {
  fsync?(seconds: number, bytes: number, batches: number): void;
  commit?(outcome: 'ok' | 'write_conflict' | 'read_conflict' | 'error', writes: number): void;
  cache?(hit: boolean): void;
  warn?(msg: string, fields?: Record<string, unknown>): void;
  /** A retried commit was answered with its first outcome. */
  dedup?(): void;
  /** Appends were refused (`block`) or work again (undefined). */
  writable?(block: WriteBlock | undefined): void;
}

/** How a commit was sent: its client-chosen id and attempt, and when its caller stops waiting. */
export interface CommitOptions {
  /** 32 hex digits, a millisecond timestamp first; the same on every attempt of one commit. */
  commitId?: string;
  /** 0 for the first attempt. */
  attempt?: number;
  /** Epoch ms: past it nothing is applied (the caller has given up and may retry). */
  deadline?: number;
}

/**
 * The current manifest, waiting (with backoff, logged) while S3 is unreachable: without it the
 * node cannot know which segments are only in S3, and a log opened without them would serve an
 * old state as the current one.
 */
async function manifestWhenReachable(store: ObjectStore, keys: ManifestKeys, info: (msg: string, fields?: Record<string, unknown>) => void) {
  return pRetry(() => latestManifest(store, keys), {
    retries: Number.POSITIVE_INFINITY, minTimeout: 200, maxTimeout: 5_000, randomize: true,
    shouldRetry: ({ error }) => error instanceof ObjectStoreUnavailableError,
    onFailedAttempt: ({ error, attemptNumber }) => {
      if (error instanceof ObjectStoreUnavailableError && (attemptNumber <= 5 || attemptNumber % 10 === 0)) {
        info('S3 is unreachable: the log cannot open without its manifest; retrying', { attempt: attemptNumber, err: error.message });
      }
    },
  });
}

/** Whether some segment the manifest's checkpoint covers has no local file (evicted, or never local). */
function coversEvicted(logDir: string, m: Manifest): boolean {
  let local: Set<number>;
  try {
    local = new Set(fs.readdirSync(logDir).map((f) => parseSegmentName(f)?.id).filter((id): id is number => id !== undefined));
  } catch {
    return true;
  }
  return m.segments.slice(0, m.checkpoint?.segments.length ?? 0).some((s) => !local.has(parseSegmentName(s.name)?.id ?? -1));
}

function hasSegments(logDir: string): boolean {
  try {
    return fs.readdirSync(logDir).some((f) => parseSegmentName(f) !== undefined);
  } catch {
    return false;
  }
}

/** Clocks of clients and nodes may disagree by this much. */
const CLOCK_SKEW_MS = 60_000;
const ID_RE = /^[0-9a-f]{32}$/;

export interface StoredObject {
  oid: string;
  className: string;
  state: Buffer;
  version: number;
  /** The object this one is a version of ('' for none). */
  origin: string;
}

export const DEFAULT_DATASET = 'default';
const MAX_DATASETS = 0xffff;
/** The creation time a commit id or txid starts with (48 bits of ms). */
function idTime(id: string): number {
  return parseInt(id.slice(0, 12), 16);
}

/** Objects a get reads between two yields to the event loop. */
const READ_SLICE = 256;

export class Engine implements EngineCore {
  readonly limits: Limits;
  readonly state: EngineState;
  private log!: SegmentStore;
  private readonly observer: EngineObserver;
  private readonly lockWaitMs: number;
  private readonly participant: Participant;
  private readonly placement: PlacementRecords;
  private compactor!: Compactor;
  private readonly compactBelow: number;
  private compacting?: Promise<CompactionResult>;
  /** A checkpoint capture in progress: compaction waits for it (it repoints the state). */
  private capturing?: Promise<EncodedCheckpoint | 'nothing' | undefined>;
  private compactTimer?: NodeJS.Timeout;
  private probeTimer?: NodeJS.Timeout;
  private readonly probeIntervalMs: number;
  private closed = false;
  /** Commits in flight by id, so a duplicate waits for the first. */
  private readonly committing = new Map<string, Promise<number[]>>();
  /** Commit ids whose write failed after reaching the log (cleared once the log cut it). */
  private readonly uncertain = new Set<string>();
  recovery!: RecoveryReport;
  /** What was restored from S3 at open (an empty log directory with a manifest in S3); `checkpoint`: segments it covered. */
  restored?: { segments: number; bytes: number; ms: number; checkpoint: number; replayed: number };
  /** The S3 tier, when configured. */
  tier?: S3Tier;
  /** The tier's object store: the engine closes it. */
  private tierStore?: ObjectStore;

  private constructor(opts: EngineOptions) {
    this.observer = opts.observer ?? {};
    this.limits = { ...DEFAULT_LIMITS, ...opts.limits };
    this.compactBelow = opts.compactBelowLiveRatio ?? 0.5;
    this.lockWaitMs = opts.lockWaitMs ?? 7_000;
    this.probeIntervalMs = opts.probeIntervalMs ?? 1_000;
    this.state = new EngineState(opts.cacheBytes ?? 64 * 1024 * 1024);
    this.participant = new Participant(this, this.lockWaitMs);
    this.placement = new PlacementRecords(this);
  }

  /** Opens the data directory: replays the log through the same apply() commits use. */
  static async open(opts: EngineOptions): Promise<Engine> {
    const engine = new Engine(opts);
    const logDir = path.join(opts.dir, 'log');
    let tier: S3Tier | undefined;
    let restoring = false;
    let checkpoint: DecodedCheckpoint | undefined;
    const info = opts.tier?.info ?? ((msg: string, fields?: Record<string, unknown>) => opts.observer?.warn?.(msg, fields));
    if (opts.tier) {
      const keys = new ManifestKeys('', opts.tier.node);
      const found = await manifestWhenReachable(opts.tier.store, keys, info);
      const everyBytes = opts.tier.checkpointBytes ?? DEFAULT_CHECKPOINT_BYTES;
      tier = new S3Tier({
        store: opts.tier.store, keys, nodeNumber: opts.tier.nodeNumber, uploadIntervalMs: opts.tier.uploadIntervalMs,
        manifest: found?.manifest, observer: opts.tier.observer, diskCacheBytes: opts.tier.diskCacheBytes,
        onChecksumMismatch: opts.tier.onChecksumMismatch,
        checkpoint: everyBytes > 0 ? { everyBytes, capture: () => engine.captureCheckpoint(opts.tier!.node) } : undefined,
      });
      // An empty log directory and a manifest in S3: this node lost its volume, and its log is
      // replayed from S3 (segments stay there, read on demand, until the cache holds them).
      restoring = !!found && !hasSegments(logDir);
      const m = found?.manifest;
      if (restoring) info('restoring the log from S3', { manifest: found!.key, segments: m!.segments.length, bytes: m!.segments.reduce((n, x) => n + x.size, 0), checkpoint: m!.checkpoint?.key });
      // A restore, or a restart whose checkpointed segments are not all on local disk (evicted):
      // the checkpoint saves fetching and replaying them. A restart with all of them local replays locally.
      if (m?.checkpoint && (restoring || coversEvicted(logDir, m))) {
        // The checkpoint stands in for the segments it covers; if it cannot be used, every segment replays.
        const t = Date.now();
        try {
          checkpoint = await readCheckpoint(opts.tier.store, m, opts.tier.onChecksumMismatch);
          info('loading the index checkpoint', { key: m.checkpoint.key, bytes: m.checkpoint.size, objects: checkpoint.header.objects, covers: checkpoint.header.segments.length, of: m.segments.length, fetchMs: Date.now() - t });
        } catch (e) {
          const reason = e instanceof ChecksumMismatchError ? 'checksum' : e instanceof CheckpointError ? 'invalid' : e instanceof ObjectStoreError ? 'unreadable' : 'error';
          opts.observer?.warn?.('the index checkpoint cannot be used: replaying every segment instead', { key: m.checkpoint.key, err: (e as Error).message });
          opts.tier.observer?.checkpointFallback?.(reason);
          tier.dropCheckpoint();
        }
      }
    }
    const t0 = Date.now();
    let lastProgress = 0;
    const { log, report } = await SegmentLog.open(
      {
        dir: logDir,
        maxSegmentBytes: opts.maxSegmentBytes ?? 64 * 1024 * 1024,
        onFsync: opts.observer?.fsync?.bind(opts.observer),
        files: opts.files,
        remote: tier?.remote,
        checkpoint: checkpoint && { names: checkpoint.header.segments, load: (handles) => loadCheckpoint(engine.state, checkpoint!, handles) },
        onRemoteReplay: (done, of, bytes) => {
          opts.tier?.observer?.replayProgress?.(done, of, bytes);
          if (Date.now() - lastProgress < 1_000 && done < of) return;
          lastProgress = Date.now();
          info('replaying segments from S3', { segments: done, of, bytes });
        },
      },
      (batch) => {
        for (const { record, segment, offset, length } of batch) engine.state.apply(record, { segment, offset, length }, true);
      },
    );
    engine.log = log;
    engine.tierStore = opts.tier?.store;
    if (checkpoint && report.checkpointSegments === undefined) {
      // The local log does not start with the segments it covers (compacted further locally).
      opts.observer?.warn?.('the index checkpoint does not match the local log: every segment was replayed', { key: tier?.checkpointKey });
      opts.tier?.observer?.checkpointFallback?.('mismatch');
    }
    if (tier) {
      tier.attach(log);
      engine.tier = tier;
      if (restoring) {
        const covered = report.checkpointSegments ?? 0;
        engine.restored = { segments: report.segments, bytes: report.bytes, ms: Date.now() - t0, checkpoint: covered, replayed: report.segments - covered };
        if (checkpoint) opts.tier!.observer?.checkpointLoaded?.(covered);
        info('restored the log from S3', { ...engine.restored, records: report.records, objects: engine.state.index.size });
      }
      // The last segment may be one S3 already holds (a local copy after a flush): appending to
      // it would change an uploaded segment under the same name. New writes go to a new one.
      const active = log.fileName(log.activeSegment);
      if (tier.remote.list().has(active)) await log.seal();
    }
    engine.compactor = new Compactor(engine.state, log, engine.compactBelow);
    engine.recovery = report;
    if (report.truncatedBytes > 0) {
      opts.observer?.warn?.('cut a torn log tail', { bytes: report.truncatedBytes, reason: report.truncatedReason });
    }
    if (!engine.state.datasetIds.has(DEFAULT_DATASET)) await engine.createDataset(DEFAULT_DATASET);
    const interval = opts.compactionIntervalMs ?? 10_000;
    if (interval > 0) {
      engine.compactTimer = setInterval(() => {
        engine.compact().catch((e) => engine.observer.warn?.('compaction failed', { err: (e as Error).message }));
      }, interval);
      engine.compactTimer.unref();
    }
    return engine;
  }

  // ---------------------------------------------------------------- reads

  datasetId(name: string): number {
    const id = this.state.datasetIds.get(name);
    if (id === undefined) {
      validateDatasetName(name);
      throw new UnknownDatasetError(`unknown dataset ${JSON.stringify(name)}`, { dataset: name });
    }
    return id;
  }

  /** True when this node holds the object (durable, or a create in flight). */
  holds(oid: string): boolean {
    const p = this.state.pendingObjects.get(oid);
    if (p) return p.version !== 0;
    return this.state.index.version(wordsFromHex(oid)) !== 0;
  }

  /** True when this node masters the object (holds it, not as a replica copy nor as a copy a move has not activated). */
  masters(oid: string): boolean {
    return this.holds(oid) && !this.state.replicaOf.has(oid) && !this.state.installing.has(oid);
  }

  hasDataset(name: string): boolean {
    return this.state.datasetIds.has(name);
  }

  listDatasets(): string[] {
    return [...this.state.datasetIds.keys()].sort();
  }

  /** Returns the durable state of each oid; oids that do not exist (in this dataset) are `missing`. */
  async get(dataset: string, oids: string[]): Promise<{ objects: StoredObject[]; missing: string[] }> {
    const ds = this.datasetId(dataset);
    if (oids.length > this.limits.maxBatchObjects) {
      throw new LimitExceededError(`get of ${oids.length} objects exceeds the batch limit of ${this.limits.maxBatchObjects}`, { limit: 'maxBatchObjects' });
    }
    for (const oid of oids) assertOid(oid);
    const objects: StoredObject[] = [];
    const missing: string[] = [];
    // Large gets go in slices with a yield between (each object is read on its own anyway), so
    // one request for thousands of uncached objects does not hold the event loop.
    for (let i = 0; i < oids.length; i += READ_SLICE) {
      if (i > 0) await new Promise((r) => setImmediate(r));
      const slice = oids.length <= READ_SLICE ? oids : oids.slice(i, i + READ_SLICE);
      const found = await Promise.all(slice.map((oid) => this.readObject(oid, ds)));
      found.forEach((o, j) => (o ? objects.push(o) : missing.push(slice[j])));
    }
    return { objects, missing };
  }

  private async readObject(oid: string, ds: number): Promise<StoredObject | undefined> {
    for (let attempt = 0; ; attempt++) {
      const loc = this.state.index.get(wordsFromHex(oid));
      if (!loc || loc.dataset !== ds) return undefined;
      const cached = this.state.cache.get(oid);
      if (cached && cached.version === loc.version) {
        this.observer.cache?.(true);
        return { oid, className: cached.className, state: cached.state, version: cached.version, origin: cached.origin };
      }
      this.observer.cache?.(false);
      const frame = await this.log.read(loc.segment, loc.offset, loc.length, (b) => checkFrame(b, 0).ok);
      const check = checkFrame(frame, 0);
      const r = check.ok ? decodeFrame(frame, 0) : undefined;
      if (r?.type === RecordType.Put && r.version === loc.version && r.oid.toString('hex') === oid) {
        const entry = { className: r.className, state: r.state, version: r.version, origin: r.origin ? r.origin.toString('hex') : '' };
        if (this.state.index.get(wordsFromHex(oid))?.version === r.version) this.state.cache.set(oid, entry);
        return { oid, ...entry };
      }
      // The record moved while the read was in flight (compaction rewrote its segment, or a
      // newer version arrived): look it up again, once.
      const now = this.state.index.get(wordsFromHex(oid));
      if (attempt === 0 && (now?.segment !== loc.segment || now?.offset !== loc.offset || now?.version !== loc.version)) continue;
      throw new InternalError(`record of ${oid} in segment ${loc.segment} at ${loc.offset} failed its check (${check.ok ? 'not its version' : check.reason})`, { oid });
    }
  }

  getAlias(dataset: string, alias: string): string {
    const ds = this.datasetId(dataset);
    validateAlias(alias, this.limits);
    const e = this.state.aliases.get(aliasKey(ds, alias));
    if (!e) throw new NotFoundError(`no alias ${JSON.stringify(alias)} in dataset ${dataset}`, { alias, dataset });
    return e.value;
  }

  listAliases(dataset: string): { alias: string; oid: string }[] {
    const ds = this.datasetId(dataset);
    const prefix = `${ds}\0`;
    const out: { alias: string; oid: string }[] = [];
    for (const [k, v] of this.state.aliases) if (k.startsWith(prefix)) out.push({ alias: k.slice(prefix.length), oid: v.value });
    return out.sort((a, b) => (a.alias < b.alias ? -1 : 1));
  }

  stats(): { objects: number; aliases: number; datasets: number; segments: number; diskBytes: number; liveBytes: number; indexBytes: number; cacheBytes: number } {
    let liveBytes = 0;
    for (const v of this.state.liveBytes.values()) liveBytes += v;
    return {
      objects: this.state.index.size,
      aliases: this.state.aliases.size,
      datasets: this.state.datasetIds.size,
      segments: this.log.segments().length,
      diskBytes: this.log.totalBytes,
      liveBytes,
      indexBytes: this.state.index.memoryBytes,
      cacheBytes: this.state.cache.calculatedSize,
    };
  }

  /** Why writes are refused right now (a full disk, a failed write), if they are. */
  get writeBlock(): WriteBlock | undefined {
    return this.log.blocked;
  }

  // ---------------------------------------------------------------- writes

  async createDataset(name: string): Promise<boolean> {
    validateDatasetName(name);
    if (this.state.datasetIds.has(name)) return false;
    if (this.state.datasetIds.size >= MAX_DATASETS) throw new LimitExceededError(`at most ${MAX_DATASETS} datasets`, { limit: 'datasets' });
    const id = this.state.datasetIds.size + 1;
    this.state.datasetIds.set(name, id); // reserve now so a concurrent create does not take the id
    this.state.pendingDatasets.add(name);
    try {
      const record: LogRecord = { type: RecordType.Dataset, dataset: id, name };
      const at = await this.append([record]);
      this.state.apply(record, { segment: at.segment, offset: at.offsets[0], length: at.sizes[0] });
    } catch (e) {
      this.state.datasetIds.delete(name);
      throw e;
    } finally {
      this.state.pendingDatasets.delete(name);
    }
    return true;
  }

  async append(records: LogRecord[]): Promise<{ segment: number; offsets: number[]; sizes: number[] }> {
    if (this.closed) throw new UnavailableError('node is shutting down', { notApplied: true });
    const block = this.log.blocked;
    if (block && !block.recoverable) throw new UnavailableError(block.message, { notApplied: true });
    const { buf, offsets, sizes } = encodeBatch(records);
    try {
      const loc = await this.log.append(buf);
      if (block) this.writableAgain();
      return { segment: loc.segment, offsets: offsets.map((o) => o + loc.offset), sizes };
    } catch (e) {
      this.noteBlocked();
      const notApplied = (e as { notApplied?: boolean }).notApplied === true;
      throw new UnavailableError(`write not durable: ${(e as Error).message}${notApplied ? '; nothing was applied' : ''}`, { notApplied }, { cause: e });
    }
  }

  /** Tells the observer appends are refused, and probes for space while the refusal may pass. */
  private noteBlocked(): void {
    const block = this.log.blocked;
    if (!block || this.probeTimer || this.closed) return;
    this.observer.writable?.(block);
    this.observer.warn?.('writes refused', { reason: block.reason, err: block.message });
    if (!block.recoverable) return;
    this.probeTimer = setInterval(() => {
      void this.log.probe().then((ok) => {
        if (ok) this.writableAgain();
      });
    }, this.probeIntervalMs);
    this.probeTimer.unref();
  }

  private writableAgain(): void {
    if (this.log.blocked) return;
    // The log cut every failed write back to the last acknowledged one: none of them applied.
    this.uncertain.clear();
    if (this.probeTimer) clearInterval(this.probeTimer);
    this.probeTimer = undefined;
    this.observer.writable?.(undefined);
  }

  /**
   * Validates and applies one atomic batch. Validation runs synchronously against committed
   * state plus the commits still waiting for their fsync, so two in-flight commits can never
   * both succeed on the same version; readers only ever see durable state.
   */
  async commit(input: CommitInput, opts: CommitOptions = {}): Promise<number[]> {
    let outcome: 'ok' | 'write_conflict' | 'read_conflict' | 'error' = 'error';
    const nWrites = (input.writes?.length ?? 0) + (input.deletes?.length ?? 0);
    try {
      const versions = opts.commitId ? await this.commitOnce(input, opts) : await this.commitInner(input, opts);
      outcome = 'ok';
      return versions;
    } catch (e) {
      if (e instanceof WriteConflictError) outcome = 'write_conflict';
      else if (e instanceof ReadConflictError) outcome = 'read_conflict';
      throw e;
    } finally {
      this.observer.commit?.(outcome, nWrites);
    }
  }

  /**
   * A commit with an id is applied at most once: a retry of an id already applied gets the
   * first outcome (its versions), a duplicate still in flight waits for the first, and a retry
   * whose first attempt may have reached the log but cannot be found (forgotten, or its write
   * failed in a way that may still show up after a restart) is an error, never a second apply.
   */
  private commitOnce(input: CommitInput, opts: CommitOptions): Promise<number[]> {
    const id = opts.commitId!;
    if (!ID_RE.test(id)) return Promise.reject(new InvalidArgumentError(`malformed commit id ${JSON.stringify(id)} (32 hex digits)`));
    const known = this.state.outcomes.get(id);
    // An aborted two-phase part with this id applied nothing: this commit may apply now.
    if (known?.ok) {
      this.observer.dedup?.();
      return Promise.resolve(known.versions);
    }
    const running = this.committing.get(id);
    if (running) return running;
    if (this.uncertain.has(id)) {
      return Promise.reject(new UnavailableError(`commit ${id}: an earlier attempt's write failed and may still be on disk; its outcome is known after the node's log recovers`));
    }
    if ((opts.attempt ?? 0) > 0 && idTime(id) <= this.state.outcomes.forgottenUpTo + CLOCK_SKEW_MS) {
      return Promise.reject(new CommitUnknownError(`commit ${id} is too old to tell whether it was applied (outcomes are kept ${OUTCOME_KEEP_MS / 60_000} minutes)`));
    }
    const p = this.commitInner(input, opts).finally(() => this.committing.delete(id));
    this.committing.set(id, p);
    return p;
  }

  private async commitInner(input: CommitInput, opts: CommitOptions = {}): Promise<number[]> {
    // A prepared transaction's lock is released as soon as its decision arrives, usually within
    // a round trip: wait for it (bounded). A commit holds no locks while it waits, so it cannot
    // be part of a deadlock. The last lock check and the validation are one synchronous step.
    if (this.state.locks.size > 0) {
      const oids = touchedOids(input);
      const deadline = Date.now() + this.lockWaitMs;
      let step;
      while ((step = this.state.locks.waitStep(oids, deadline)) instanceof Promise) await step;
    }
    const ds = this.datasetId(input.dataset);
    const { records, versions } = validateCommit(this.state, this.limits, ds, input);
    if (records.length === 0) return versions; // read-only validation passed
    if (opts.deadline !== undefined && Date.now() >= opts.deadline) {
      throw new DeadlineExceededError('the caller gave up before the commit was written; nothing was applied', { notApplied: true });
    }
    // The outcome goes in the commit's own batch: remembering it costs no extra fsync.
    if (opts.commitId) records.push({ type: RecordType.Outcome, dataset: ds, id: Buffer.from(opts.commitId, 'hex'), at: Date.now(), ok: true, versions });
    const myAliases = new Map<string, string | null>();
    for (const a of input.aliasSets ?? []) myAliases.set(aliasKey(ds, a.alias), a.oid);
    for (const a of input.aliasDeletes ?? []) myAliases.set(aliasKey(ds, a), null);
    const pa = this.state.pendingAliases;
    for (const [k, v] of myAliases) pa.set(k, v);
    try {
      await this.appendAndApply(records);
      return versions;
    } catch (e) {
      // Handed to the log and failed: it may still be on disk (a retry must not apply it again).
      if (opts.commitId && !(e as LoamError).notApplied) this.uncertain.add(opts.commitId);
      throw e;
    } finally {
      for (const [k, v] of myAliases) if (pa.get(k) === v) pa.delete(k);
    }
  }

  /**
   * Appends records and applies them once durable. While in flight their objects are marked
   * pending, so validation sees them (and readers do not).
   */
  async appendAndApply(records: LogRecord[]): Promise<void> {
    const mine: [string, PendingObject][] = [];
    const pending = this.state.pendingObjects;
    for (const r of records) {
      if (r.type === RecordType.Put || r.type === RecordType.Delete) {
        const p = { version: r.type === RecordType.Put ? r.version : 0, dataset: r.dataset };
        const oid = r.oid.toString('hex');
        pending.set(oid, p);
        mine.push([oid, p]);
      }
    }
    try {
      const at = await this.append(records);
      for (let i = 0; i < records.length; i++) this.state.apply(records[i], { segment: at.segment, offset: at.offsets[i], length: at.sizes[i] });
    } finally {
      for (const [oid, p] of mine) if (pending.get(oid) === p) pending.delete(oid);
    }
  }

  // ---------------------------------------------------------------- placement (cluster)

  replicasOf(oid: string): number[] { return this.placement.replicasOf(oid); }
  replicaMasterOf(oid: string): number | undefined { return this.placement.replicaMasterOf(oid); }
  replicaCopiesIn(dataset: string): { oid: string; master: number }[] { return this.placement.replicaCopiesIn(dataset); }
  setReplicaSets(dataset: string, sets: ReadonlyMap<string, number[]>): Promise<void> { return this.placement.setReplicaSets(dataset, sets); }
  setReplicas(dataset: string, oid: string, nodes: number[]): Promise<void> { return this.placement.setReplicaSets(dataset, new Map([[oid, nodes]])); }
  installReplicas(dataset: string, master: number, objects: StoredObject[]): Promise<void> { return this.placement.installReplicas(dataset, master, objects); }
  dropReplicas(dataset: string, oids: string[]): Promise<void> { return this.placement.dropReplicas(dataset, oids); }
  forwardOf(oid: string): number | undefined { return this.placement.forwardOf(oid); }
  directoryOf(oid: string): DirectoryEntry | undefined { return this.placement.directoryOf(oid); }
  pendingForwards(): { oid: string; node: number }[] { return this.placement.pendingForwards(); }
  oidsIn(dataset: string): string[] { return this.placement.oidsIn(dataset); }
  install(dataset: string, objects: StoredObject[], replicaSets?: ReadonlyMap<string, number[]>, source = 0): Promise<void> { return this.placement.install(dataset, objects, replicaSets, source); }
  installSourceOf(oid: string): number | undefined { return this.placement.installSourceOf(oid); }
  pendingInstalls(): { oid: string; source: number }[] { return this.placement.pendingInstalls(); }
  activate(oids: string[], source: number): Promise<string[]> { return this.placement.activate(oids, source); }
  dropInstalls(dataset: string, oids: string[], source: number): Promise<void> { return this.placement.dropInstalls(dataset, oids, source); }
  moveOut(dataset: string, items: { oid: string; version: number }[], target: number): Promise<void> { return this.placement.moveOut(dataset, items, target); }
  clearForwards(oids: string[]): Promise<void> { return this.placement.clearForwards(oids); }
  setDirectory(entries: { oid: string; master: number; replicas: number[] }[]): Promise<void> { return this.placement.setDirectory(entries); }
  adoptDirectory(entries: { oid: string; master: number; replicas: number[] }[]): Promise<void> { return this.placement.adoptDirectory(entries); }
  directoryEntries(): { oid: string; master: number; replicas: number[] }[] { return this.placement.directoryEntries(); }

  // ---------------------------------------------------------------- distributed transactions

  prepare(txid: string, coordinator: number, input: CommitInput): Promise<number[]> { return this.participant.prepare(txid, coordinator, input); }
  finish(txid: string, commit: boolean): Promise<{ dataset: string; oids: string[] }> { return this.participant.finish(txid, commit); }
  preparedTransactions(): { txid: string; coordinator: number; preparedAt: number }[] { return this.participant.preparedTransactions(); }

  /** The remembered outcome of a commit id or txid, if any. */
  outcomeOf(id: string): { ok: boolean; versions: number[] } | undefined {
    const o = this.state.outcomes.get(id);
    return o ? { ok: o.ok, versions: o.versions } : undefined;
  }

  lockedBy(oid: string): string | undefined {
    return this.state.locks.holder(oid);
  }

  /** Resolves when transaction `txid` releases its locks here (at once if it holds none). */
  waitForTx(txid: string): Promise<void> {
    return this.state.locks.released(txid);
  }

  // ---------------------------------------------------------------- compaction

  /** Compacts every sealed segment whose needed share fell below the threshold (one run at a time). */
  compact(opts: { all?: boolean } = {}): Promise<CompactionResult> {
    if (this.compacting) return this.compacting;
    const capturing = this.capturing;
    this.compacting = (async () => {
      await capturing?.catch(() => undefined);
      return this.compactor.run(opts.all ?? false, () => this.closed);
    })().finally(() => {
      this.compacting = undefined;
    });
    return this.compacting;
  }

  // ---------------------------------------------------------------- index checkpoints (S3 tier)

  /**
   * The state after exactly the sealed segments, serialized (tier/checkpoint.ts): seals the
   * active segment, then encodes in one synchronous step while the new active segment is still
   * empty, so no commit lands between the boundary and the snapshot. Not while compaction runs
   * (it repoints entries between two handles): it waits for a running one, and a new one waits
   * for it. 'nothing' when no sealed segment holds data; undefined when it cannot be taken now.
   */
  captureCheckpoint(node: string): Promise<EncodedCheckpoint | 'nothing' | undefined> {
    if (this.capturing) return this.capturing;
    const compacting = this.compacting;
    const p = (async (): Promise<EncodedCheckpoint | 'nothing' | undefined> => {
      await compacting?.catch(() => undefined);
      const log = this.log as SegmentLog;
      if (this.closed || log.blocked) return undefined;
      await log.seal();
      // From this check to the end of the encode nothing else runs (all synchronous).
      if (this.closed || log.blocked) return undefined;
      const active = log.activeSegment;
      if (log.segmentSize(active) > 0) return undefined; // a commit landed after the seal: try again later
      const segments = log.segments().filter((h) => h !== active && log.segmentSize(h) > 0);
      if (segments.length === 0) return 'nothing';
      return encodeCheckpoint({ state: this.state, segments, fileName: (h) => log.fileName(h) }, node);
    })().finally(() => {
      this.capturing = undefined;
    });
    this.capturing = p;
    return p;
  }

  /** Flushes, then writes an index checkpoint of it to S3 (a graceful stop); at once without an S3 tier. */
  async checkpoint(signal?: AbortSignal): Promise<void> {
    await this.tier?.checkpointNow(signal);
  }

  // ---------------------------------------------------------------- lifecycle

  /**
   * Resolves once everything acknowledged before the call is in S3 (named by this node's
   * manifest); at once without an S3 tier, where the local log is all the durability there is.
   */
  async flush(signal?: AbortSignal): Promise<void> {
    await this.tier?.flush(signal);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.compactTimer) clearInterval(this.compactTimer);
    if (this.probeTimer) clearInterval(this.probeTimer);
    await this.compacting?.catch(() => undefined);
    await this.tier?.stop();
    await this.tierStore?.close().catch(() => undefined);
    await this.log.close();
  }
}
