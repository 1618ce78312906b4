import path from 'node:path';
import { LRUCache } from 'lru-cache';
import {
  AliasExistsError, AlreadyExistsError, DEFAULT_LIMITS, InternalError, InvalidArgumentError, LimitExceededError,
  NotFoundError, ReadConflictError, UnavailableError, UnknownDatasetError, WriteConflictError,
  assertOid, oidHomeNode, validateAlias, validateClassName, validateDatasetName, type Limits,
} from '@loam/sdk/wire';
import { OidIndex, bytesFromHex, hexFromWords, wordsFromBytes, wordsFromHex, type OidWords } from './oid-index.js';
import { encodeBatch, checkFrame, decodeFrame, decodeFrames, frameType, setEndFlag, RecordType, type LogRecord, type PutRecord } from './record.js';
import { SegmentLog, type RecoveryReport } from './segment-log.js';
import { LockTable, olderThan } from './locks.js';

/**
 * The object engine of one node: validates and applies atomic commits against the durable log,
 * keeps the index and an object cache, and compacts old segments. It does not decode object
 * state (that is the SDK codec's business); it stores class name, state bytes and a version.
 */
export interface EngineOptions {
  dir: string;
  /** Upper bound of the decoded-object cache, in bytes. */
  cacheBytes?: number;
  maxSegmentBytes?: number;
  limits?: Partial<Limits>;
  /** A sealed segment is compacted when its live bytes fall below this share of its size. */
  compactBelowLiveRatio?: number;
  /** How often to look for segments to compact, ms; 0 turns the timer off (compact() still works). */
  compactionIntervalMs?: number;
  observer?: EngineObserver;
  /** How long a commit waits for a prepared transaction's lock (default 7 s). */
  lockWaitMs?: number;
}

export interface EngineObserver {
  fsync?(seconds: number, bytes: number, batches: number): void;
  commit?(outcome: 'ok' | 'write_conflict' | 'read_conflict' | 'error', writes: number): void;
  cache?(hit: boolean): void;
  warn?(msg: string, fields?: Record<string, unknown>): void;
}

export interface StoredObject {
  oid: string;
  className: string;
  state: Buffer;
  version: number;
  /** The object this one is a version of ('' for none). */
  origin: string;
}

export interface CommitInput {
  dataset: string;
  reads?: { oid: string; version: number }[];
  writes?: { oid: string; className: string; state: Buffer; expectedVersion: number; origin?: string }[];
  deletes?: { oid: string; expectedVersion: number }[];
  aliasSets?: { alias: string; oid: string }[];
  aliasDeletes?: string[];
}

interface CachedObject {
  className: string;
  state: Buffer;
  version: number;
  origin: string;
}

interface AliasEntry {
  oid: string;
  segment: number;
  offset: number;
  length: number;
}

interface PlacedEntry<T> {
  value: T;
  segment: number;
  offset: number;
  length: number;
}

export interface DirectoryEntry {
  master: number;
  replicas: number[];
}

interface PreparedTx {
  records: LogRecord[];
  versions: number[];
  locked: string[];
  coordinator: number;
  dataset: number;
  preparedAt: number;
  segment: number;
  offset: number;
  length: number;
}

interface PendingObject {
  version: number; // 0 while a delete is in flight
  dataset: number;
}

export const DEFAULT_DATASET = 'default';
const MAX_DATASETS = 0xffff;

export class Engine {
  readonly limits: Limits;
  private log!: SegmentLog;
  private readonly observer: EngineObserver;
  private readonly index: OidIndex;
  private readonly cache: LRUCache<string, CachedObject>;
  private readonly datasetIds = new Map<string, number>();
  private readonly aliases = new Map<string, AliasEntry>(); // `${datasetId}\0${alias}`
  private readonly pendingObjects = new Map<string, PendingObject>();
  private readonly pendingAliases = new Map<string, string | null>();
  /** In-flight forward/directory records by `${type}:${oid}` (a count: several may be queued). */
  private readonly pendingSystem = new Map<string, number>();
  private readonly liveBytes = new Map<number, number>();
  /** Objects this node moved away, and to which node (kept until their home directory agrees). */
  private readonly forwards = new Map<string, PlacedEntry<number>>();
  /** Prepared parts of distributed transactions, by txid (hex), and the oids they lock. */
  private readonly prepared = new Map<string, PreparedTx>();
  private readonly locks = new LockTable();
  /** Prepares still being made durable, by txid: a duplicate gets the same answer. */
  private readonly preparing = new Map<string, Promise<number[]>>();
  /** Master side: replica nodes per object. Replica side: the master of each replica copy here. */
  private readonly replicaSets = new Map<string, PlacedEntry<number[]>>();
  private readonly replicaOf = new Map<string, PlacedEntry<number>>();
  /** Home-directory entries for objects homed here that do not simply live here. */
  private readonly directory = new Map<string, PlacedEntry<DirectoryEntry>>();
  private readonly compactBelow: number;
  /** How long a commit waits for a prepared transaction's lock before it reports a conflict. */
  private readonly lockWaitMs: number;
  private compacting?: Promise<CompactionResult>;
  private compactTimer?: NodeJS.Timeout;
  private closed = false;
  recovery!: RecoveryReport;

  private constructor(opts: EngineOptions) {
    this.index = new OidIndex();
    this.observer = opts.observer ?? {};
    this.limits = { ...DEFAULT_LIMITS, ...opts.limits };
    this.compactBelow = opts.compactBelowLiveRatio ?? 0.5;
    this.lockWaitMs = opts.lockWaitMs ?? 7_000;
    this.cache = new LRUCache<string, CachedObject>({
      maxSize: Math.max(1, opts.cacheBytes ?? 64 * 1024 * 1024),
      sizeCalculation: (v) => v.state.length + v.className.length + 96,
    });
  }

  /** Opens the data directory: replays the log (through the same publish() commits use). */
  static async open(opts: EngineOptions): Promise<Engine> {
    const engine = new Engine(opts);
    const { log, report } = await SegmentLog.open(
      {
        dir: path.join(opts.dir, 'log'),
        maxSegmentBytes: opts.maxSegmentBytes ?? 64 * 1024 * 1024,
        onFsync: opts.observer?.fsync?.bind(opts.observer),
      },
      (batch) => {
        for (const { record, segment, offset, length } of batch) engine.publish(record, segment, offset, length, true);
      },
    );
    engine.log = log;
    engine.recovery = report;
    if (report.truncatedBytes > 0) {
      opts.observer?.warn?.('cut a torn log tail', { bytes: report.truncatedBytes, reason: report.truncatedReason });
    }
    if (!engine.datasetIds.has(DEFAULT_DATASET)) await engine.createDataset(DEFAULT_DATASET);
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

  private datasetId(name: string): number {
    const id = this.datasetIds.get(name);
    if (id === undefined) {
      validateDatasetName(name);
      throw new UnknownDatasetError(`unknown dataset ${JSON.stringify(name)}`, { dataset: name });
    }
    return id;
  }

  /** Replica nodes of an object this node masters. */
  replicasOf(oid: string): number[] {
    return this.replicaSets.get(oid)?.value ?? [];
  }

  /** The master of a replica copy held here, if this copy is one. */
  replicaMasterOf(oid: string): number | undefined {
    return this.replicaOf.get(oid)?.value;
  }

  /** True when this node masters the object (holds it and it is not a replica copy). */
  masters(oid: string): boolean {
    return this.holds(oid) && !this.replicaOf.has(oid);
  }

  /** Replica copies held here in `dataset`, with the master each names (for drain). */
  replicaCopiesIn(dataset: string): { oid: string; master: number }[] {
    const ds = this.datasetId(dataset);
    const out: { oid: string; master: number }[] = [];
    this.index.forEach((w, loc) => {
      if (loc.dataset !== ds) return;
      const oid = hexFromWords(w);
      const rep = this.replicaOf.get(oid);
      if (rep) out.push({ oid, master: rep.value });
    });
    return out;
  }

  /** Records the replica sets of objects mastered here, in one batch. */
  async setReplicaSets(dataset: string, sets: ReadonlyMap<string, number[]>): Promise<void> {
    const ds = this.datasetId(dataset);
    const records: LogRecord[] = [...sets].map(([oid, nodes]) => ({ type: RecordType.Replicas, dataset: ds, oid: bytesFromHex(assertOid(oid)), nodes: nodeSet(nodes) }));
    if (records.length > 0) await this.appendAndPublish(records);
  }

  /** Records the replica set of an object mastered here. */
  setReplicas(dataset: string, oid: string, nodes: number[]): Promise<void> {
    return this.setReplicaSets(dataset, new Map([[oid, nodes]]));
  }

  /**
   * Replica side: stores copies of objects mastered by `master`, keeping only newer versions
   * (updates may arrive out of order), and marks them as replicas.
   */
  async installReplicas(dataset: string, master: number, objects: StoredObject[]): Promise<void> {
    const ds = this.datasetId(dataset);
    const records: LogRecord[] = [];
    for (const o of objects) {
      assertOid(o.oid);
      validateClassName(o.className);
      const oid = bytesFromHex(o.oid);
      if (this.currentVersion(o.oid, wordsFromHex(o.oid)).version >= o.version) {
        // Not newer, but maybe a new master after a move: only the copy's master changes.
        const rep = this.replicaOf.get(o.oid);
        if (rep && rep.value !== master) records.push({ type: RecordType.ReplicaOf, dataset: ds, oid, master });
        continue;
      }
      const origin = o.origin ? bytesFromHex(assertOid(o.origin, 'origin')) : undefined;
      records.push({ type: RecordType.Put, dataset: ds, oid, version: o.version, className: o.className, state: o.state, ...(origin ? { origin } : {}) });
      if (this.replicaOf.get(o.oid)?.value !== master) records.push({ type: RecordType.ReplicaOf, dataset: ds, oid, master });
    }
    if (records.length > 0) await this.appendAndPublish(records);
  }

  /** Replica side: drops replica copies (the master no longer keeps a replica here). */
  async dropReplicas(dataset: string, oids: string[]): Promise<void> {
    const ds = this.datasetId(dataset);
    const records: LogRecord[] = [];
    for (const oid of oids) {
      if (!this.replicaOf.has(oid)) continue;
      const v = this.currentVersion(oid, wordsFromHex(oid)).version;
      records.push({ type: RecordType.Delete, dataset: ds, oid: bytesFromHex(oid), version: v + 1 });
    }
    if (records.length > 0) await this.appendAndPublish(records);
  }

  /** True when this node holds the object (durable, or a create in flight). */
  holds(oid: string): boolean {
    const p = this.pendingObjects.get(oid);
    if (p) return p.version !== 0;
    return this.index.version(wordsFromHex(oid)) !== 0;
  }

  hasDataset(name: string): boolean {
    return this.datasetIds.has(name);
  }

  listDatasets(): string[] {
    return [...this.datasetIds.keys()].sort();
  }

  /** Returns the durable state of each oid; oids that do not exist (in this dataset) are `missing`. */
  get(dataset: string, oids: string[]): { objects: StoredObject[]; missing: string[] } {
    const ds = this.datasetId(dataset);
    if (oids.length > this.limits.maxBatchObjects) {
      throw new LimitExceededError(`get of ${oids.length} objects exceeds the batch limit of ${this.limits.maxBatchObjects}`, { limit: 'maxBatchObjects' });
    }
    const objects: StoredObject[] = [];
    const missing: string[] = [];
    for (const oid of oids) {
      assertOid(oid);
      const o = this.readObject(oid, ds);
      if (o) objects.push(o);
      else missing.push(oid);
    }
    return { objects, missing };
  }

  private readObject(oid: string, ds: number): StoredObject | undefined {
    const loc = this.index.get(wordsFromHex(oid));
    if (!loc || loc.dataset !== ds) return undefined;
    const cached = this.cache.get(oid);
    if (cached && cached.version === loc.version) {
      this.observer.cache?.(true);
      return { oid, className: cached.className, state: cached.state, version: cached.version, origin: cached.origin };
    }
    this.observer.cache?.(false);
    const frame = this.log.read(loc.segment, loc.offset, loc.length);
    const check = checkFrame(frame, 0);
    if (!check.ok) {
      throw new InternalError(`record of ${oid} in segment ${loc.segment} at ${loc.offset} failed its check (${check.reason})`, { oid });
    }
    const r = decodeFrame(frame, 0);
    if (r.type !== RecordType.Put || r.version !== loc.version) {
      throw new InternalError(`index points ${oid} at a record that is not its version ${loc.version}`, { oid });
    }
    const entry = { className: r.className, state: r.state, version: r.version, origin: r.origin ? r.origin.toString('hex') : '' };
    this.cache.set(oid, entry);
    return { oid, ...entry };
  }

  getAlias(dataset: string, alias: string): string {
    const ds = this.datasetId(dataset);
    validateAlias(alias, this.limits);
    const e = this.aliases.get(aliasKey(ds, alias));
    if (!e) throw new NotFoundError(`no alias ${JSON.stringify(alias)} in dataset ${dataset}`, { alias, dataset });
    return e.oid;
  }

  listAliases(dataset: string): { alias: string; oid: string }[] {
    const ds = this.datasetId(dataset);
    const prefix = `${ds}\0`;
    const out: { alias: string; oid: string }[] = [];
    for (const [k, v] of this.aliases) if (k.startsWith(prefix)) out.push({ alias: k.slice(prefix.length), oid: v.oid });
    return out.sort((a, b) => (a.alias < b.alias ? -1 : 1));
  }

  stats(): { objects: number; aliases: number; datasets: number; segments: number; diskBytes: number; liveBytes: number; indexBytes: number; cacheBytes: number } {
    let liveBytes = 0;
    for (const v of this.liveBytes.values()) liveBytes += v;
    return {
      objects: this.index.size,
      aliases: this.aliases.size,
      datasets: this.datasetIds.size,
      segments: this.log.segments().length,
      diskBytes: this.log.totalBytes,
      liveBytes,
      indexBytes: this.index.memoryBytes,
      cacheBytes: this.cache.calculatedSize,
    };
  }

  // ---------------------------------------------------------------- writes

  async createDataset(name: string): Promise<boolean> {
    validateDatasetName(name);
    if (this.datasetIds.has(name)) return false;
    if (this.datasetIds.size >= MAX_DATASETS) throw new LimitExceededError(`at most ${MAX_DATASETS} datasets`, { limit: 'datasets' });
    const id = this.datasetIds.size + 1;
    this.datasetIds.set(name, id); // reserve now so a concurrent create does not take the id
    try {
      const record: LogRecord = { type: RecordType.Dataset, dataset: id, name };
      const at = await this.append([record]);
      this.publish(record, at.segment, at.offsets[0], at.sizes[0]);
    } catch (e) {
      this.datasetIds.delete(name);
      throw e;
    }
    return true;
  }

  private liveDelta(segment: number, delta: number): void {
    this.liveBytes.set(segment, (this.liveBytes.get(segment) ?? 0) + delta);
  }

  private async append(records: LogRecord[]): Promise<{ segment: number; offsets: number[]; sizes: number[] }> {
    if (this.closed) throw new UnavailableError('node is shutting down');
    if (this.log.failure) throw new UnavailableError(this.log.failure.message);
    const { buf, offsets, sizes } = encodeBatch(records);
    try {
      const loc = await this.log.append(buf);
      return { segment: loc.segment, offsets: offsets.map((o) => o + loc.offset), sizes };
    } catch (e) {
      throw new UnavailableError(`write not durable: ${(e as Error).message}`, {}, { cause: e });
    }
  }

  /**
   * Validates and applies one atomic batch. Validation runs synchronously against committed
   * state plus the commits still waiting for their fsync, so two in-flight commits can never
   * both succeed on the same version; readers only ever see durable state.
   */
  async commit(input: CommitInput): Promise<number[]> {
    let outcome: 'ok' | 'write_conflict' | 'read_conflict' | 'error' = 'error';
    const nWrites = (input.writes?.length ?? 0) + (input.deletes?.length ?? 0);
    try {
      const versions = await this.commitInner(input);
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

  private currentVersion(oid: string, words: OidWords): { version: number; dataset: number } {
    const p = this.pendingObjects.get(oid);
    if (p) return p;
    const loc = this.index.get(words);
    return loc ? { version: loc.version, dataset: loc.dataset } : { version: 0, dataset: 0 };
  }

  private aliasTarget(key: string): string | undefined {
    if (this.pendingAliases.has(key)) return this.pendingAliases.get(key) ?? undefined;
    return this.aliases.get(key)?.oid;
  }

  private async commitInner(input: CommitInput): Promise<number[]> {
    // A prepared transaction's lock is released as soon as its decision arrives, usually within
    // a round trip: wait for it (bounded). A commit holds no locks while it waits, so it cannot
    // be part of a deadlock. The last lock check and the validation are one synchronous step.
    if (this.locks.size > 0) {
      const oids = touchedOids(input);
      const deadline = Date.now() + this.lockWaitMs;
      let step;
      while ((step = this.locks.waitStep(oids, deadline)) instanceof Promise) await step;
    }
    const { ds, records, versions } = this.validate(input);
    if (records.length === 0) return versions; // read-only validation passed
    const aliasSets = input.aliasSets ?? [];
    const aliasDeletes = input.aliasDeletes ?? [];

    // 3. Reserve, make durable, then publish.
    const mine = new Map<string, PendingObject>();
    for (const r of records) {
      if (r.type === RecordType.Put || r.type === RecordType.Delete) {
        const oid = r.oid.toString('hex');
        const p = { version: r.type === RecordType.Put ? r.version : 0, dataset: ds };
        mine.set(oid, p);
        this.pendingObjects.set(oid, p);
      }
    }
    const myAliases = new Map<string, string | null>();
    for (const a of aliasSets) myAliases.set(aliasKey(ds, a.alias), a.oid);
    for (const a of aliasDeletes) myAliases.set(aliasKey(ds, a), null);
    for (const [k, v] of myAliases) this.pendingAliases.set(k, v);

    try {
      const at = await this.append(records);
      for (let i = 0; i < records.length; i++) this.publish(records[i], at.segment, at.offsets[i], at.sizes[i]);
      return versions;
    } finally {
      for (const [oid, p] of mine) if (this.pendingObjects.get(oid) === p) this.pendingObjects.delete(oid);
      for (const [k, v] of myAliases) if (this.pendingAliases.get(k) === v) this.pendingAliases.delete(k);
    }
  }

  /**
   * Checks a commit against committed state, commits in flight and prepared transactions'
   * locks, synchronously (no interleaving), and builds its records. Throws the typed error of
   * the first problem; changes nothing.
   */
  private validate(input: CommitInput): { ds: number; records: LogRecord[]; versions: number[] } {
    const ds = this.datasetId(input.dataset);
    const writes = input.writes ?? [];
    const deletes = input.deletes ?? [];
    const reads = input.reads ?? [];
    const aliasSets = input.aliasSets ?? [];
    const aliasDeletes = input.aliasDeletes ?? [];
    const L = this.limits;

    // 1. Shape and limits: nothing below runs on a request that fails here.
    const count = writes.length + deletes.length + reads.length + aliasSets.length + aliasDeletes.length;
    if (count === 0) throw new InvalidArgumentError('empty commit');
    if (count > L.maxBatchObjects) {
      throw new LimitExceededError(`commit of ${count} operations exceeds the batch limit of ${L.maxBatchObjects}`, { limit: 'maxBatchObjects' });
    }
    let bytes = 0;
    const touched = new Set<string>();
    for (const w of writes) {
      assertOid(w.oid);
      validateClassName(w.className);
      if (!Number.isSafeInteger(w.expectedVersion) || w.expectedVersion < 0) throw new InvalidArgumentError(`bad expected version ${w.expectedVersion}`, { oid: w.oid });
      const size = w.state.length + w.className.length;
      if (size > L.maxObjectBytes) {
        throw new LimitExceededError(`object ${w.oid} is ${size} bytes, the limit is ${L.maxObjectBytes}`, { oid: w.oid, limit: 'maxObjectBytes' });
      }
      bytes += size;
      if (touched.has(w.oid)) throw new InvalidArgumentError(`object ${w.oid} is written twice in one commit`, { oid: w.oid });
      touched.add(w.oid);
    }
    for (const d of deletes) {
      assertOid(d.oid);
      if (!Number.isSafeInteger(d.expectedVersion) || d.expectedVersion <= 0) throw new InvalidArgumentError(`delete of ${d.oid} needs the version it read`, { oid: d.oid });
      if (touched.has(d.oid)) throw new InvalidArgumentError(`object ${d.oid} is written twice in one commit`, { oid: d.oid });
      touched.add(d.oid);
    }
    for (const r of reads) assertOid(r.oid);
    if (bytes > L.maxBatchBytes) {
      throw new LimitExceededError(`commit of ${bytes} bytes exceeds the batch limit of ${L.maxBatchBytes}`, { limit: 'maxBatchBytes' });
    }
    const aliasKeys = new Set<string>();
    for (const a of [...aliasSets.map((s) => s.alias), ...aliasDeletes]) {
      validateAlias(a, L);
      const key = aliasKey(ds, a);
      if (aliasKeys.has(key)) throw new InvalidArgumentError(`alias ${JSON.stringify(a)} appears twice in one commit`, { alias: a });
      aliasKeys.add(key);
    }
    for (const a of aliasSets) assertOid(a.oid);

    // 2. Validation against committed + in-flight state (synchronous: no interleaving).
    const records: LogRecord[] = [];
    const versions: number[] = [];
    const words = new Map<string, OidWords>();
    const wordsOf = (oid: string) => {
      let w = words.get(oid);
      if (!w) words.set(oid, (w = wordsFromHex(oid)));
      return w;
    };
    for (const oid of touched) {
      const tx = this.locks.holder(oid);
      if (tx) throw new WriteConflictError(`object ${oid} is locked by prepared transaction ${tx}`, { oid });
    }
    for (const r of reads) {
      const tx = this.locks.holder(r.oid);
      if (tx) throw new ReadConflictError(`object ${r.oid} is locked by prepared transaction ${tx}`, { oid: r.oid });
    }
    for (const w of writes) {
      const cur = this.currentVersion(w.oid, wordsOf(w.oid));
      if (cur.version !== 0 && cur.dataset !== ds) {
        throw new NotFoundError(`object ${w.oid} is not in dataset ${input.dataset}`, { oid: w.oid, dataset: input.dataset });
      }
      if (w.expectedVersion === 0) {
        if (cur.version !== 0) throw new AlreadyExistsError(`object ${w.oid} already exists`, { oid: w.oid, actualVersion: cur.version });
      } else if (cur.version !== w.expectedVersion) {
        throw new WriteConflictError(
          cur.version === 0
            ? `object ${w.oid} was deleted after version ${w.expectedVersion} was read`
            : `object ${w.oid} changed: read version ${w.expectedVersion}, now ${cur.version}`,
          { oid: w.oid, expectedVersion: w.expectedVersion, actualVersion: cur.version },
        );
      }
      const version = cur.version + 1;
      versions.push(version);
      const origin = w.origin ? bytesFromHex(assertOid(w.origin, 'origin')) : undefined;
      records.push({ type: RecordType.Put, dataset: ds, oid: bytesFromHex(w.oid), version, className: w.className, state: w.state, ...(origin ? { origin } : {}) });
    }
    for (const d of deletes) {
      const cur = this.currentVersion(d.oid, wordsOf(d.oid));
      if (cur.version !== d.expectedVersion || (cur.version !== 0 && cur.dataset !== ds)) {
        throw new WriteConflictError(`object ${d.oid} changed or vanished: read version ${d.expectedVersion}, now ${cur.version}`, {
          oid: d.oid, expectedVersion: d.expectedVersion, actualVersion: cur.version,
        });
      }
      records.push({ type: RecordType.Delete, dataset: ds, oid: bytesFromHex(d.oid), version: cur.version + 1 });
    }
    for (const r of reads) {
      if (touched.has(r.oid)) continue; // the write check already covers it
      const cur = this.currentVersion(r.oid, wordsOf(r.oid));
      const actual = cur.dataset === ds ? cur.version : 0;
      if (actual !== r.version) {
        throw new ReadConflictError(`object ${r.oid} changed after it was read: read version ${r.version}, now ${actual}`, {
          oid: r.oid, expectedVersion: r.version, actualVersion: actual,
        });
      }
    }
    const created = new Set(writes.filter((w) => w.expectedVersion === 0).map((w) => w.oid));
    const deleted = new Set(deletes.map((d) => d.oid));
    for (const a of aliasSets) {
      const key = aliasKey(ds, a.alias);
      if (this.aliasTarget(key) !== undefined) {
        throw new AliasExistsError(`alias ${JSON.stringify(a.alias)} already exists in dataset ${input.dataset}`, { alias: a.alias, dataset: input.dataset });
      }
      const target = this.currentVersion(a.oid, wordsOf(a.oid));
      const exists = (created.has(a.oid) || (target.version !== 0 && target.dataset === ds)) && !deleted.has(a.oid);
      if (!exists) throw new NotFoundError(`alias ${JSON.stringify(a.alias)} names object ${a.oid}, which does not exist`, { oid: a.oid, alias: a.alias });
      records.push({ type: RecordType.AliasSet, dataset: ds, oid: bytesFromHex(a.oid), alias: a.alias });
    }
    for (const alias of aliasDeletes) {
      if (this.aliasTarget(aliasKey(ds, alias)) === undefined) {
        throw new NotFoundError(`no alias ${JSON.stringify(alias)} in dataset ${input.dataset}`, { alias, dataset: input.dataset });
      }
      records.push({ type: RecordType.AliasDelete, dataset: ds, alias });
    }
    return { ds, records, versions };
  }

  /** Makes a durable record visible in the index, alias map and cache. */
  private publish(r: LogRecord, segment: number, offset: number, length: number, recovering = false): void {
    switch (r.type) {
      case RecordType.Put: {
        const prev = this.index.set(wordsFromBytes(r.oid), { segment, offset, length, version: r.version, dataset: r.dataset });
        if (prev) this.liveDelta(prev.segment, -prev.length);
        this.liveDelta(segment, length);
        // Replayed records are views into a whole segment file: caching them would pin it (and
        // the cache is empty during recovery, so there is nothing to invalidate either).
        if (!recovering) {
          this.cache.set(r.oid.toString('hex'), { className: r.className, state: r.state, version: r.version, origin: r.origin ? r.origin.toString('hex') : '' });
        }
        break;
      }
      case RecordType.Delete: {
        const prev = this.index.delete(wordsFromBytes(r.oid));
        if (prev) this.liveDelta(prev.segment, -prev.length);
        const oid = r.oid.toString('hex');
        this.cache.delete(oid);
        const rep = this.replicaOf.get(oid);
        if (rep) {
          this.liveDelta(rep.segment, -rep.length);
          this.replicaOf.delete(oid);
        }
        break;
      }
      case RecordType.AliasSet: {
        const key = aliasKey(r.dataset, r.alias);
        const prev = this.aliases.get(key);
        if (prev) this.liveDelta(prev.segment, -prev.length);
        this.aliases.set(key, { oid: r.oid.toString('hex'), segment, offset, length });
        this.liveDelta(segment, length);
        break;
      }
      case RecordType.AliasDelete: {
        const key = aliasKey(r.dataset, r.alias);
        const prev = this.aliases.get(key);
        if (prev) this.liveDelta(prev.segment, -prev.length);
        this.aliases.delete(key);
        break;
      }
      case RecordType.Dataset:
        this.datasetIds.set(r.name, r.dataset);
        this.liveDelta(segment, length);
        break;
      case RecordType.Forward:
        this.placeEntry(this.forwards, r.oid.toString('hex'), r.node === 0 ? undefined : r.node, segment, offset, length);
        break;
      case RecordType.Directory:
        this.placeEntry(this.directory, r.oid.toString('hex'), r.master === 0 ? undefined : { master: r.master, replicas: r.replicas }, segment, offset, length);
        break;
      case RecordType.Replicas:
        this.placeEntry(this.replicaSets, r.oid.toString('hex'), r.nodes.length === 0 ? undefined : r.nodes, segment, offset, length);
        break;
      case RecordType.ReplicaOf:
        this.placeEntry(this.replicaOf, r.oid.toString('hex'), r.master === 0 ? undefined : r.master, segment, offset, length);
        break;
      case RecordType.Prepare: {
        const txid = r.txid.toString('hex');
        const records = decodeFrames(r.body);
        const locked = r.locked.map((o) => o.toString('hex'));
        const versions = records.filter((x): x is PutRecord => x.type === RecordType.Put).map((x) => x.version);
        this.prepared.set(txid, { records, versions, locked, coordinator: r.coordinator, dataset: r.dataset, preparedAt: Date.now(), segment, offset, length });
        this.locks.acquire(txid, locked);
        this.liveDelta(segment, length);
        break;
      }
      case RecordType.Decided: {
        const txid = r.txid.toString('hex');
        const p = this.prepared.get(txid);
        if (p) {
          this.prepared.delete(txid);
          this.liveDelta(p.segment, -p.length);
        }
        this.locks.release(txid);
        break;
      }
    }
  }

  // ---------------------------------------------------------------- distributed transactions

  /**
   * Prepares this node's part of a distributed transaction: validates it like a commit, locks
   * every object it reads or writes, and makes the records to apply durable in a Prepare
   * record. Nothing is visible until finish(). Preparing the same txid again returns the same answer.
   */
  async prepare(txid: string, coordinator: number, input: CommitInput): Promise<number[]> {
    assertTxid(txid);
    const done = this.prepared.get(txid);
    if (done) return done.versions;
    const running = this.preparing.get(txid);
    if (running) return running;
    if ((input.aliasSets?.length ?? 0) + (input.aliasDeletes?.length ?? 0) > 0) {
      throw new InvalidArgumentError('aliases of a distributed transaction are kept by its coordinator, not prepared');
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
    while ((step = this.locks.waitStep(touched, deadline, txid, (holder) => olderThan(txid, holder))) instanceof Promise) await step;
    const { refused } = step;
    if (refused !== undefined) {
      const oid = touched.find((o) => this.locks.holder(o) === refused)!;
      const isWrite = (input.writes ?? []).some((w) => w.oid === oid) || (input.deletes ?? []).some((d) => d.oid === oid);
      const msg = `object ${oid} is locked by older transaction ${refused}; this one gives way (retry)`;
      throw isWrite ? new WriteConflictError(msg, { oid }) : new ReadConflictError(msg, { oid });
    }
    const { ds, records, versions } = this.validate(input);
    const locked = [...new Set(touched)];
    this.locks.acquire(txid, locked); // taken synchronously with the validation
    try {
      const body = records.length > 0 ? encodeBatch(records).buf : Buffer.alloc(0);
      const rec: LogRecord = { type: RecordType.Prepare, dataset: ds, txid: Buffer.from(txid, 'hex'), coordinator, locked: locked.map(bytesFromHex), body };
      const at = await this.append([rec]);
      this.prepared.set(txid, { records, versions, locked, coordinator, dataset: ds, preparedAt: Date.now(), segment: at.segment, offset: at.offsets[0], length: at.sizes[0] });
      this.liveDelta(at.segment, at.sizes[0]);
      return versions;
    } catch (e) {
      this.locks.release(txid);
      throw e;
    }
  }

  /**
   * Applies (commit) or drops (abort) a prepared part, and releases its locks. Idempotent.
   * Returns the dataset and the objects it wrote or deleted (for replica updates).
   */
  async finish(txid: string, commit: boolean): Promise<{ dataset: string; oids: string[] }> {
    assertTxid(txid);
    const p = this.prepared.get(txid);
    if (!p) return { dataset: '', oids: [] }; // finished before, or never prepared here
    const decided: LogRecord = { type: RecordType.Decided, dataset: p.dataset, txid: Buffer.from(txid, 'hex'), commit };
    const batch = commit ? [...p.records, decided] : [decided];
    const at = await this.append(batch);
    for (let i = 0; i < batch.length; i++) this.publish(batch[i], at.segment, at.offsets[i], at.sizes[i]);
    const oids = commit ? p.records.flatMap((r) => (r.type === RecordType.Put || r.type === RecordType.Delete ? [r.oid.toString('hex')] : [])) : [];
    return { dataset: this.datasetName(p.dataset), oids };
  }

  private datasetName(id: number): string {
    for (const [name, v] of this.datasetIds) if (v === id) return name;
    return '';
  }

  /** Prepared parts still waiting for their decision. */
  preparedTransactions(): { txid: string; coordinator: number; preparedAt: number }[] {
    return [...this.prepared].map(([txid, p]) => ({ txid, coordinator: p.coordinator, preparedAt: p.preparedAt }));
  }

  lockedBy(oid: string): string | undefined {
    return this.locks.holder(oid);
  }

  /** Resolves when transaction `txid` releases its locks here (at once if it holds none). */
  waitForTx(txid: string): Promise<void> {
    return this.locks.released(txid);
  }

  private placeEntry<T>(map: Map<string, PlacedEntry<T>>, key: string, value: T | undefined, segment: number, offset: number, length: number): void {
    const prev = map.get(key);
    if (prev) this.liveDelta(prev.segment, -prev.length);
    if (value === undefined) {
      map.delete(key);
    } else {
      map.set(key, { value, segment, offset, length });
      this.liveDelta(segment, length);
    }
  }

  // ---------------------------------------------------------------- placement (cluster)

  forwardOf(oid: string): number | undefined {
    return this.forwards.get(oid)?.value;
  }

  directoryOf(oid: string): DirectoryEntry | undefined {
    return this.directory.get(oid)?.value;
  }

  private placedMap(type: RecordType): Map<string, PlacedEntry<unknown>> {
    switch (type) {
      case RecordType.Forward: return this.forwards;
      case RecordType.Directory: return this.directory;
      case RecordType.Replicas: return this.replicaSets;
      case RecordType.ReplicaOf: return this.replicaOf;
      default: throw new Error(`invariant: record type ${type} has no placed map`);
    }
  }

  /** Forward pointers not yet confirmed by the home directory (to finish after a crash). */
  pendingForwards(): { oid: string; node: number }[] {
    return [...this.forwards].map(([oid, e]) => ({ oid, node: e.value }));
  }

  /** The oids this node masters in `dataset` (for drain). */
  oidsIn(dataset: string): string[] {
    const ds = this.datasetId(dataset);
    const out: string[] = [];
    this.index.forEach((w, loc) => {
      if (loc.dataset !== ds) return;
      const oid = hexFromWords(w);
      if (!this.replicaOf.has(oid)) out.push(oid);
    });
    return out;
  }

  /**
   * Takes objects moved here from another node: written with the versions they had, replacing
   * any older copy, and clearing a forward pointer this node may hold for them.
   */
  async install(dataset: string, objects: StoredObject[], replicaSets: ReadonlyMap<string, number[]> = new Map()): Promise<void> {
    const ds = this.datasetId(dataset);
    const records: LogRecord[] = [];
    for (const o of objects) {
      assertOid(o.oid);
      validateClassName(o.className);
      if (!Number.isSafeInteger(o.version) || o.version < 1) throw new InvalidArgumentError(`bad version ${o.version} for ${o.oid}`);
      const oid = bytesFromHex(o.oid);
      const origin = o.origin ? bytesFromHex(assertOid(o.origin, 'origin')) : undefined;
      records.push({ type: RecordType.Put, dataset: ds, oid, version: o.version, className: o.className, state: o.state, ...(origin ? { origin } : {}) });
      if (this.forwards.has(o.oid)) records.push({ type: RecordType.Forward, dataset: ds, oid, node: 0 });
      // A replica copy held here becomes the master copy; the object keeps its other replicas.
      if (this.replicaOf.has(o.oid)) records.push({ type: RecordType.ReplicaOf, dataset: ds, oid, master: 0 });
      const nodes = nodeSet(replicaSets.get(o.oid) ?? []);
      if (nodes.join() !== this.replicasOf(o.oid).join()) records.push({ type: RecordType.Replicas, dataset: ds, oid, nodes });
    }
    if (records.length === 0) return;
    await this.appendAndPublish(records);
  }

  /**
   * Atomically forgets objects that now live on `target` and leaves a forward pointer to it.
   * `versions` are what was copied: if one changed since, nothing is forgotten.
   */
  async moveOut(dataset: string, items: { oid: string; version: number }[], target: number): Promise<void> {
    const ds = this.datasetId(dataset);
    const records: LogRecord[] = [];
    for (const it of items) {
      // A prepared transaction would apply its records here after the object left.
      const tx = this.locks.holder(it.oid);
      if (tx) throw new WriteConflictError(`object ${it.oid} is locked by prepared transaction ${tx}`, { oid: it.oid });
      const cur = this.currentVersion(it.oid, wordsFromHex(it.oid));
      if (cur.version !== it.version) {
        throw new WriteConflictError(`object ${it.oid} changed while it was being moved`, { oid: it.oid, expectedVersion: it.version, actualVersion: cur.version });
      }
      const oid = bytesFromHex(it.oid);
      records.push({ type: RecordType.Delete, dataset: ds, oid, version: cur.version + 1 });
      records.push({ type: RecordType.Forward, dataset: ds, oid, node: target });
      // The replica set goes with the object (the target got it with the install).
      if (this.replicaSets.has(it.oid)) records.push({ type: RecordType.Replicas, dataset: ds, oid, nodes: [] });
    }
    if (records.length === 0) return;
    await this.appendAndPublish(records);
  }

  /** Drops forward pointers (their objects' home directories now point at the new master). */
  async clearForwards(oids: string[]): Promise<void> {
    const records: LogRecord[] = oids.filter((o) => this.forwards.has(o)).map((o) => ({ type: RecordType.Forward, dataset: 0, oid: bytesFromHex(o), node: 0 }));
    if (records.length > 0) await this.appendAndPublish(records);
  }

  /** Records where objects homed here live; an entry that says "on its home node, no replicas" is removed. */
  async setDirectory(entries: { oid: string; master: number; replicas: number[] }[]): Promise<void> {
    const records: LogRecord[] = entries.map((e) => {
      const dflt = e.master === oidHomeNode(assertOid(e.oid)) && e.replicas.length === 0;
      return { type: RecordType.Directory, dataset: 0, oid: bytesFromHex(assertOid(e.oid)), master: dflt ? 0 : e.master, replicas: dflt ? [] : e.replicas };
    });
    if (records.length > 0) await this.appendAndPublish(records);
  }

  /** Adopts another node's home directory (drain hands it over). */
  async adoptDirectory(entries: { oid: string; master: number; replicas: number[] }[]): Promise<void> {
    const records: LogRecord[] = entries.map((e) => ({ type: RecordType.Directory, dataset: 0, oid: bytesFromHex(assertOid(e.oid)), master: e.master, replicas: e.replicas }));
    if (records.length > 0) await this.appendAndPublish(records);
  }

  directoryEntries(): { oid: string; master: number; replicas: number[] }[] {
    return [...this.directory].map(([oid, e]) => ({ oid, ...e.value }));
  }

  /**
   * Appends node-internal records and publishes them once durable. While in flight their keys
   * are marked pending, so validation sees them and compaction does not copy what they replace.
   */
  private async appendAndPublish(records: LogRecord[]): Promise<void> {
    const mine: [string, PendingObject][] = [];
    const sys: string[] = [];
    for (const r of records) {
      if (r.type === RecordType.Put || r.type === RecordType.Delete) {
        const p = { version: r.type === RecordType.Put ? r.version : 0, dataset: r.dataset };
        const oid = r.oid.toString('hex');
        this.pendingObjects.set(oid, p);
        mine.push([oid, p]);
      } else if (r.type === RecordType.Forward || r.type === RecordType.Directory || r.type === RecordType.Replicas || r.type === RecordType.ReplicaOf) {
        const key = `${r.type}:${r.oid.toString('hex')}`;
        this.pendingSystem.set(key, (this.pendingSystem.get(key) ?? 0) + 1);
        sys.push(key);
      }
    }
    try {
      const at = await this.append(records);
      for (let i = 0; i < records.length; i++) this.publish(records[i], at.segment, at.offsets[i], at.sizes[i]);
    } finally {
      for (const [oid, p] of mine) if (this.pendingObjects.get(oid) === p) this.pendingObjects.delete(oid);
      for (const key of sys) {
        const n = this.pendingSystem.get(key)! - 1;
        if (n === 0) this.pendingSystem.delete(key);
        else this.pendingSystem.set(key, n);
      }
    }
  }

  // ---------------------------------------------------------------- compaction

  /** Compacts every sealed segment whose live share fell below the threshold (one run at a time). */
  compact(opts: { all?: boolean } = {}): Promise<CompactionResult> {
    if (this.compacting) return this.compacting;
    this.compacting = this.compactInner(opts.all ?? false).finally(() => {
      this.compacting = undefined;
    });
    return this.compacting;
  }

  private async compactInner(all: boolean): Promise<CompactionResult> {
    const result: CompactionResult = { segments: 0, bytesBefore: 0, bytesAfter: 0 };
    for (const seg of this.log.segments()) {
      if (this.closed || this.log.failure) break;
      if (seg === this.log.activeSegment) continue;
      const size = this.log.segmentSize(seg);
      const live = this.liveBytes.get(seg) ?? 0;
      if (!all && size > 0 && live / size >= this.compactBelow) continue;
      result.segments++;
      result.bytesBefore += size;
      result.bytesAfter += await this.compactSegment(seg);
    }
    return result;
  }

  /**
   * Copies a sealed segment's live records to the log head, then deletes the segment. Liveness is
   * decided in one synchronous step and the copy is appended in that same step, so any commit
   * queued earlier is durable (and published) before the copy, and any later one comes after it.
   * Objects with an in-flight write are skipped: that write supersedes the old record.
   */
  private async compactSegment(seg: number): Promise<number> {
    const data = await this.log.readSegment(seg);
    const hasOlder = this.log.segments().some((s) => s < seg);
    const copies: { frame: Buffer; kind: 'put' | 'alias' | 'placed' | 'prepare' | 'keep'; key: string; offset: number }[] = [];
    for (let pos = 0; pos < data.length;) {
      const check = checkFrame(data, pos);
      if (!check.ok) throw new InternalError(`segment ${seg} damaged at ${pos} (${check.reason}); not compacting it`);
      const r = decodeFrame(data, pos);
      const frame = data.subarray(pos, pos + check.size);
      switch (r.type) {
        case RecordType.Put: {
          const oid = r.oid.toString('hex');
          const loc = this.index.get(wordsFromBytes(r.oid));
          if (loc && loc.segment === seg && loc.offset === pos && !this.pendingObjects.has(oid)) copies.push({ frame, kind: 'put', key: oid, offset: pos });
          break;
        }
        case RecordType.AliasSet: {
          const key = aliasKey(r.dataset, r.alias);
          const e = this.aliases.get(key);
          if (e && e.segment === seg && e.offset === pos && !this.pendingAliases.has(key)) copies.push({ frame, kind: 'alias', key, offset: pos });
          break;
        }
        case RecordType.Dataset:
          copies.push({ frame, kind: 'keep', key: '', offset: pos });
          break;
        case RecordType.Forward:
        case RecordType.Directory:
        case RecordType.Replicas:
        case RecordType.ReplicaOf: {
          const key = r.oid.toString('hex');
          const map = this.placedMap(r.type);
          const e = map.get(key);
          const removal = r.type === RecordType.Forward ? r.node === 0 : r.type === RecordType.Directory ? r.master === 0
            : r.type === RecordType.Replicas ? r.nodes.length === 0 : r.master === 0;
          if (e && e.segment === seg && e.offset === pos && !this.pendingSystem.has(`${r.type}:${key}`)) copies.push({ frame, kind: 'placed', key, offset: pos });
          else if (removal && hasOlder) copies.push({ frame, kind: 'keep', key: '', offset: pos });
          break;
        }
        case RecordType.Prepare: {
          const txid = r.txid.toString('hex');
          const p = this.prepared.get(txid);
          if (p && p.segment === seg && p.offset === pos) copies.push({ frame, kind: 'prepare', key: txid, offset: pos });
          break;
        }
        case RecordType.Decided:
        case RecordType.Delete:
        case RecordType.AliasDelete:
          // A tombstone matters only while an older segment may still hold what it deleted.
          if (hasOlder) copies.push({ frame, kind: 'keep', key: '', offset: pos });
          break;
      }
      pos += check.size;
    }
    let copiedBytes = 0;
    if (copies.length > 0) {
      const buf = Buffer.concat(copies.map((c) => c.frame));
      let p = 0;
      for (const c of copies) {
        setEndFlag(buf.subarray(p, p + c.frame.length)); // each copy stands alone
        p += c.frame.length;
      }
      copiedBytes = buf.length;
      if (this.log.failure) throw new UnavailableError(this.log.failure.message);
      const at = await this.log.append(buf);
      let off = at.offset;
      for (const c of copies) {
        const len = c.frame.length;
        if (c.kind === 'put') {
          const w = wordsFromHex(c.key);
          const loc = this.index.get(w);
          if (loc && loc.segment === seg && loc.offset === c.offset) {
            this.index.set(w, { ...loc, segment: at.segment, offset: off });
            this.liveDelta(seg, -len);
            this.liveDelta(at.segment, len);
          }
        } else if (c.kind === 'alias') {
          const e = this.aliases.get(c.key);
          if (e && e.segment === seg && e.offset === c.offset) {
            this.aliases.set(c.key, { ...e, segment: at.segment, offset: off });
            this.liveDelta(seg, -len);
            this.liveDelta(at.segment, len);
          }
        } else if (c.kind === 'prepare') {
          const p = this.prepared.get(c.key);
          if (p && p.segment === seg && p.offset === c.offset) {
            p.segment = at.segment;
            p.offset = off;
            this.liveDelta(seg, -len);
            this.liveDelta(at.segment, len);
          }
        } else if (c.kind === 'placed') {
          const map = this.placedMap(frameType(c.frame, 0));
          const e = map.get(c.key);
          if (e && e.segment === seg && e.offset === c.offset) {
            map.set(c.key, { ...e, segment: at.segment, offset: off });
            this.liveDelta(seg, -len);
            this.liveDelta(at.segment, len);
          }
        } else if (frameIsDataset(c.frame)) {
          this.liveDelta(at.segment, len);
        }
        off += len;
      }
    }
    this.log.removeSegment(seg);
    this.liveBytes.delete(seg);
    return copiedBytes;
  }

  // ---------------------------------------------------------------- lifecycle

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.compactTimer) clearInterval(this.compactTimer);
    await this.compacting?.catch(() => undefined);
    await this.log.close();
  }
}

export interface CompactionResult {
  segments: number;
  bytesBefore: number;
  bytesAfter: number;
}

const TXID_RE = /^[0-9a-f]{32}$/;
function assertTxid(txid: string): void {
  if (!TXID_RE.test(txid)) throw new InvalidArgumentError(`malformed transaction id ${JSON.stringify(txid)} (32 hex digits)`);
}

/** Every oid a commit reads, writes or deletes. */
function touchedOids(input: CommitInput): string[] {
  const out: string[] = [];
  for (const w of input.writes ?? []) out.push(w.oid);
  for (const d of input.deletes ?? []) out.push(d.oid);
  for (const r of input.reads ?? []) out.push(r.oid);
  return out;
}

function aliasKey(ds: number, alias: string): string {
  return `${ds}\0${alias}`;
}

function frameIsDataset(frame: Buffer): boolean {
  return frame.readUInt8(8) === RecordType.Dataset;
}

/** A replica set as stored: each node once, ascending. */
function nodeSet(nodes: Iterable<number>): number[] {
  return [...new Set(nodes)].sort((a, b) => a - b);
}
