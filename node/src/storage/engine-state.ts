import { LRUCache } from 'lru-cache';
import { OidIndex, wordsFromBytes, wordsFromHex, type OidWords } from './oid-index.js';
import { decodeFrames, RecordType, type LogRecord, type PutRecord } from './record.js';
import { LockTable } from './locks.js';

/**
 * What the engine knows in memory, rebuilt from the log at every start: the oid index, aliases,
 * datasets, placement records (forwards, home directory, replica sets), prepared transactions
 * and their locks, and live bytes per segment. Every durable record reaches it through
 * `apply`, both at replay and after an append, so a restart reads exactly what was served.
 */
export interface Place {
  segment: number;
  offset: number;
  length: number;
}

export interface PlacedEntry<T> extends Place {
  value: T;
}

export interface DirectoryEntry {
  master: number;
  replicas: number[];
}

export interface CachedObject {
  className: string;
  state: Buffer;
  version: number;
  origin: string;
}

export interface PreparedTx extends Place {
  records: LogRecord[];
  versions: number[];
  locked: string[];
  coordinator: number;
  dataset: number;
  preparedAt: number;
}

export interface Outcome extends Place {
  ok: boolean;
  versions: number[];
  at: number;
}

/** How long the outcome of a commit id is remembered (a client retries within its deadline). */
export const OUTCOME_KEEP_MS = 10 * 60_000;
/** At most this many outcomes are remembered (a memory bound: about 150 bytes each). */
export const OUTCOME_MAX = 500_000;

/**
 * Outcomes of recent commit ids and finished two-phase parts, oldest first (insertion order is
 * log order). `forgottenUpTo` is the newest `at` of one forgotten: a retry of an id that old
 * that is not found here may have been applied, so it is reported as unknown, never re-applied.
 */
export class OutcomeTable {
  private readonly map = new Map<string, Outcome>();
  forgottenUpTo = 0;

  constructor(private readonly freed: (o: Outcome) => void) {}

  get size(): number {
    return this.map.size;
  }

  get(id: string): Outcome | undefined {
    return this.map.get(id);
  }

  /** Oldest first (log order): a checkpoint keeps that order, so forgetting goes on as before. */
  entries(): IterableIterator<[string, Outcome]> {
    return this.map.entries();
  }

  put(id: string, o: Outcome, now = Date.now()): void {
    const prev = this.map.get(id);
    if (prev) {
      this.freed(prev);
      this.map.delete(id);
    }
    this.map.set(id, o);
    for (const [k, first] of this.map) {
      if (first.at >= now - OUTCOME_KEEP_MS && this.map.size <= OUTCOME_MAX) break;
      this.map.delete(k);
      this.freed(first);
      this.forgottenUpTo = Math.max(this.forgottenUpTo, first.at);
    }
  }
}

export interface PendingObject {
  version: number; // 0 while a delete is in flight
  dataset: number;
}

export class EngineState {
  readonly index = new OidIndex();
  readonly cache: LRUCache<string, CachedObject>;
  readonly datasetIds = new Map<string, number>();
  readonly aliases = new Map<string, PlacedEntry<string>>(); // aliasKey -> oid
  /** Objects this node moved away, and to which node (kept until their home directory agrees). */
  readonly forwards = new Map<string, PlacedEntry<number>>();
  /** Home-directory entries for objects homed here that do not simply live here. */
  readonly directory = new Map<string, PlacedEntry<DirectoryEntry>>();
  /** Master side: replica nodes per object. */
  readonly replicaSets = new Map<string, PlacedEntry<number[]>>();
  /** Replica side: the master of each replica copy held here. */
  readonly replicaOf = new Map<string, PlacedEntry<number>>();
  /** Copies installed by a move and not yet activated, with the node moving them. */
  readonly installing = new Map<string, PlacedEntry<number>>();
  /** Prepared parts of distributed transactions, by txid (hex). */
  readonly prepared = new Map<string, PreparedTx>();
  readonly locks = new LockTable();
  /** Writes waiting for their append: validation sees them, readers do not. */
  readonly pendingObjects = new Map<string, PendingObject>();
  readonly pendingAliases = new Map<string, string | null>();
  /** Datasets reserved in `datasetIds` whose record is not durable yet (a checkpoint leaves them out). */
  readonly pendingDatasets = new Set<string>();
  readonly liveBytes = new Map<number, number>();
  readonly outcomes = new OutcomeTable((o) => this.liveDelta(o.segment, -o.length));

  constructor(cacheBytes: number) {
    this.cache = new LRUCache<string, CachedObject>({
      maxSize: Math.max(1, cacheBytes),
      sizeCalculation: (v) => v.state.length + v.className.length + 96,
    });
  }

  liveDelta(segment: number, delta: number): void {
    this.liveBytes.set(segment, (this.liveBytes.get(segment) ?? 0) + delta);
  }

  /** Makes a durable record visible. `recovering`: replayed at start (nothing to cache). */
  apply(r: LogRecord, at: Place, recovering = false): void {
    (KINDS[r.type] as RecordKind<LogRecord>).apply(this, r, at, recovering);
  }

  /** The version (0: none) and dataset of an object, counting writes still in flight. */
  currentVersion(oid: string, words: OidWords = wordsFromHex(oid)): { version: number; dataset: number } {
    const p = this.pendingObjects.get(oid);
    if (p) return p;
    const loc = this.index.get(words);
    return loc ? { version: loc.version, dataset: loc.dataset } : { version: 0, dataset: 0 };
  }

  aliasTarget(key: string): string | undefined {
    if (this.pendingAliases.has(key)) return this.pendingAliases.get(key) ?? undefined;
    return this.aliases.get(key)?.value;
  }

  datasetName(id: number): string {
    for (const [name, v] of this.datasetIds) if (v === id) return name;
    return '';
  }

  placeEntry<T>(map: Map<string, PlacedEntry<T>>, key: string, value: T | undefined, at: Place): void {
    const prev = map.get(key);
    if (prev) this.liveDelta(prev.segment, -prev.length);
    if (value === undefined) {
      map.delete(key);
    } else {
      map.set(key, { value, ...at });
      this.liveDelta(at.segment, at.length);
    }
  }
}

export function aliasKey(ds: number, alias: string): string {
  return `${ds}\0${alias}`;
}

const at = (e: Place | undefined, p: Place) => e !== undefined && e.segment === p.segment && e.offset === p.offset;

/** Repoints a placed entry at its record's new place, moving its live bytes along. */
function move(s: EngineState, e: Place, to: Place): void {
  s.liveDelta(e.segment, -e.length);
  e.segment = to.segment;
  e.offset = to.offset;
  s.liveDelta(to.segment, to.length);
}

/**
 * Each record type, described once: how it applies, whether the record at a place is still
 * what a restart must read (live), whether it is a removal (a tombstone: never live itself, but
 * needed while an older segment may hold what it removes), and how compaction repoints the
 * state at a live record's new place in its rewritten segment.
 */
export interface RecordKind<R extends LogRecord> {
  apply(s: EngineState, r: R, at: Place, recovering: boolean): void;
  live(s: EngineState, r: R, at: Place): boolean;
  removal(r: R): boolean;
  /** Repoints what points at `from` to `to` (its new segment handle and offset), moving its live bytes. */
  relocate(s: EngineState, r: R, from: Place, to: Place): void;
}

type Kinds = { [T in LogRecord['type']]: RecordKind<Extract<LogRecord, { type: T }>> };

/** A kind whose state is one PlacedEntry map keyed by oid; `undefined` value = removal. */
function placedKind<R extends LogRecord & { oid: Buffer }, T>(map: (s: EngineState) => Map<string, PlacedEntry<T>>, value: (r: R) => T | undefined): RecordKind<R> {
  return {
    apply: (s, r, p) => s.placeEntry(map(s), r.oid.toString('hex'), value(r), p),
    live: (s, r, p) => at(map(s).get(r.oid.toString('hex')), p),
    removal: (r) => value(r) === undefined,
    relocate: (s, r, from, to) => {
      const e = map(s).get(r.oid.toString('hex'));
      if (at(e, from)) move(s, e!, to);
    },
  };
}

export const KINDS: Kinds = {
  [RecordType.Put]: {
    apply(s, r, p, recovering) {
      const prev = s.index.set(wordsFromBytes(r.oid), { ...p, version: r.version, dataset: r.dataset });
      if (prev) s.liveDelta(prev.segment, -prev.length);
      s.liveDelta(p.segment, p.length);
      // Replayed records are views into a whole segment file: caching them would pin it (and
      // the cache is empty during recovery, so there is nothing to invalidate either).
      if (!recovering) s.cache.set(r.oid.toString('hex'), { className: r.className, state: r.state, version: r.version, origin: r.origin ? r.origin.toString('hex') : '' });
    },
    live: (s, r, p) => at(s.index.get(wordsFromBytes(r.oid)), p),
    removal: () => false,
    relocate(s, r, from, to) {
      const w = wordsFromBytes(r.oid);
      const loc = s.index.get(w);
      if (!at(loc, from)) return;
      s.index.set(w, { ...loc!, segment: to.segment, offset: to.offset });
      s.liveDelta(from.segment, -from.length);
      s.liveDelta(to.segment, to.length);
    },
  },
  [RecordType.Delete]: {
    apply(s, r) {
      const prev = s.index.delete(wordsFromBytes(r.oid));
      if (prev) s.liveDelta(prev.segment, -prev.length);
      const oid = r.oid.toString('hex');
      s.cache.delete(oid);
      for (const m of [s.replicaOf, s.installing]) {
        const e = m.get(oid);
        if (e) {
          s.liveDelta(e.segment, -e.length);
          m.delete(oid);
        }
      }
    },
    live: () => false,
    removal: () => true,
    relocate: () => undefined,
  },
  [RecordType.AliasSet]: {
    apply: (s, r, p) => s.placeEntry(s.aliases, aliasKey(r.dataset, r.alias), r.oid.toString('hex'), p),
    live: (s, r, p) => at(s.aliases.get(aliasKey(r.dataset, r.alias)), p),
    removal: () => false,
    relocate(s, r, from, to) {
      const e = s.aliases.get(aliasKey(r.dataset, r.alias));
      if (at(e, from)) move(s, e!, to);
    },
  },
  [RecordType.AliasDelete]: {
    apply: (s, r, p) => s.placeEntry(s.aliases, aliasKey(r.dataset, r.alias), undefined, p),
    live: () => false,
    removal: () => true,
    relocate: () => undefined,
  },
  [RecordType.Dataset]: {
    apply(s, r, p) {
      s.datasetIds.set(r.name, r.dataset);
      s.liveDelta(p.segment, p.length);
    },
    live: () => true, // datasets are never removed
    removal: () => false,
    relocate(s, _r, from, to) {
      s.liveDelta(from.segment, -from.length);
      s.liveDelta(to.segment, to.length);
    },
  },
  [RecordType.Forward]: placedKind((s) => s.forwards, (r) => (r.node === 0 ? undefined : r.node)),
  [RecordType.Directory]: placedKind((s) => s.directory, (r) => (r.master === 0 ? undefined : { master: r.master, replicas: r.replicas })),
  [RecordType.Replicas]: placedKind((s) => s.replicaSets, (r) => (r.nodes.length === 0 ? undefined : r.nodes)),
  [RecordType.ReplicaOf]: placedKind((s) => s.replicaOf, (r) => (r.master === 0 ? undefined : r.master)),
  [RecordType.Installing]: placedKind((s) => s.installing, (r) => (r.source === 0 ? undefined : r.source)),
  [RecordType.Prepare]: {
    apply(s, r, p) {
      const txid = r.txid.toString('hex');
      const records = decodeFrames(r.body);
      const locked = r.locked.map((o) => o.toString('hex'));
      const versions = records.filter((x): x is PutRecord => x.type === RecordType.Put).map((x) => x.version);
      s.prepared.set(txid, { records, versions, locked, coordinator: r.coordinator, dataset: r.dataset, preparedAt: Date.now(), ...p });
      s.locks.acquire(txid, locked);
      s.liveDelta(p.segment, p.length);
    },
    live: (s, r, p) => at(s.prepared.get(r.txid.toString('hex')), p),
    removal: () => false,
    relocate(s, r, from, to) {
      const e = s.prepared.get(r.txid.toString('hex'));
      if (at(e, from)) move(s, e!, to);
    },
  },
  [RecordType.Outcome]: {
    apply(s, r, p) {
      s.outcomes.put(r.id.toString('hex'), { ok: r.ok, versions: r.versions, at: r.at, ...p });
      s.liveDelta(p.segment, p.length);
    },
    live: (s, r, p) => at(s.outcomes.get(r.id.toString('hex')), p),
    removal: () => false,
    relocate(s, r, from, to) {
      const e = s.outcomes.get(r.id.toString('hex'));
      if (at(e, from)) move(s, e!, to);
    },
  },
  [RecordType.Decided]: {
    apply(s, r) {
      const txid = r.txid.toString('hex');
      const p = s.prepared.get(txid);
      if (p) {
        s.prepared.delete(txid);
        s.liveDelta(p.segment, -p.length);
      }
      s.locks.release(txid);
    },
    live: () => false,
    removal: () => true,
    relocate: () => undefined,
  },
};
