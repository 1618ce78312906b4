import {
  AliasExistsError, AlreadyExistsError, InvalidArgumentError, LimitExceededError, NotFoundError, ReadConflictError,
  WriteConflictError, assertOid, validateAlias, validateClassName, type Limits,
} from '@loam/sdk/wire';
import { bytesFromHex, wordsFromHex, type OidWords } from './oid-index.js';
import { RecordType, type LogRecord } from './record.js';
import { aliasKey, type EngineState } from './engine-state.js';

export interface CommitInput {
  dataset: string;
  reads?: { oid: string; version: number }[];
  writes?: { oid: string; className: string; state: Buffer; expectedVersion: number; origin?: string }[];
  deletes?: { oid: string; expectedVersion: number }[];
  aliasSets?: { alias: string; oid: string }[];
  aliasDeletes?: string[];
}

/**
 * Checks a commit against committed state, commits in flight and prepared transactions'
 * locks, synchronously (no interleaving), and builds its records. Throws the typed error of
 * the first problem; changes nothing.
 */
export function validateCommit(state: EngineState, L: Limits, ds: number, input: CommitInput): { records: LogRecord[]; versions: number[] } {
  const writes = input.writes ?? [];
  const deletes = input.deletes ?? [];
  const reads = input.reads ?? [];
  const aliasSets = input.aliasSets ?? [];
  const aliasDeletes = input.aliasDeletes ?? [];

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
    const tx = state.locks.holder(oid);
    if (tx) throw new WriteConflictError(`object ${oid} is locked by prepared transaction ${tx}`, { oid });
  }
  for (const r of reads) {
    const tx = state.locks.holder(r.oid);
    if (tx) throw new ReadConflictError(`object ${r.oid} is locked by prepared transaction ${tx}`, { oid: r.oid });
  }
  for (const w of writes) {
    const cur = state.currentVersion(w.oid, wordsOf(w.oid));
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
    const cur = state.currentVersion(d.oid, wordsOf(d.oid));
    if (cur.version !== d.expectedVersion || (cur.version !== 0 && cur.dataset !== ds)) {
      throw new WriteConflictError(`object ${d.oid} changed or vanished: read version ${d.expectedVersion}, now ${cur.version}`, {
        oid: d.oid, expectedVersion: d.expectedVersion, actualVersion: cur.version,
      });
    }
    records.push({ type: RecordType.Delete, dataset: ds, oid: bytesFromHex(d.oid), version: cur.version + 1 });
  }
  for (const r of reads) {
    if (touched.has(r.oid)) continue; // the write check already covers it
    const cur = state.currentVersion(r.oid, wordsOf(r.oid));
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
    if (state.aliasTarget(key) !== undefined) {
      throw new AliasExistsError(`alias ${JSON.stringify(a.alias)} already exists in dataset ${input.dataset}`, { alias: a.alias, dataset: input.dataset });
    }
    const target = state.currentVersion(a.oid, wordsOf(a.oid));
    const exists = (created.has(a.oid) || (target.version !== 0 && target.dataset === ds)) && !deleted.has(a.oid);
    if (!exists) throw new NotFoundError(`alias ${JSON.stringify(a.alias)} names object ${a.oid}, which does not exist`, { oid: a.oid, alias: a.alias });
    records.push({ type: RecordType.AliasSet, dataset: ds, oid: bytesFromHex(a.oid), alias: a.alias });
  }
  for (const alias of aliasDeletes) {
    if (state.aliasTarget(aliasKey(ds, alias)) === undefined) {
      throw new NotFoundError(`no alias ${JSON.stringify(alias)} in dataset ${input.dataset}`, { alias, dataset: input.dataset });
    }
    records.push({ type: RecordType.AliasDelete, dataset: ds, alias });
  }
  return { records, versions };
}

/** Every oid a commit reads, writes or deletes. */
export function touchedOids(input: CommitInput): string[] {
  const out: string[] = [];
  for (const w of input.writes ?? []) out.push(w.oid);
  for (const d of input.deletes ?? []) out.push(d.oid);
  for (const r of input.reads ?? []) out.push(r.oid);
  return out;
}
