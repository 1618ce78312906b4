import { InvalidArgumentError, WriteConflictError, assertOid, oidHomeNode, validateClassName } from '@loam/sdk/wire';
import { bytesFromHex, hexFromWords, wordsFromHex } from './oid-index.js';
import { RecordType, type LogRecord } from './record.js';
import type { DirectoryEntry } from './engine-state.js';
import type { EngineCore } from './engine-core.js';
import type { StoredObject } from './engine.js';

/**
 * The cluster's bookkeeping records on one node: replica sets (master side), replica copies
 * (replica side), objects moved in (Install) and out (forward pointers), and the home
 * directory of objects homed here.
 */
export class PlacementRecords {
  constructor(private readonly core: EngineCore) {}

  private get s() {
    return this.core.state;
  }

  replicasOf(oid: string): number[] {
    return this.s.replicaSets.get(oid)?.value ?? [];
  }

  replicaMasterOf(oid: string): number | undefined {
    return this.s.replicaOf.get(oid)?.value;
  }

  forwardOf(oid: string): number | undefined {
    return this.s.forwards.get(oid)?.value;
  }

  directoryOf(oid: string): DirectoryEntry | undefined {
    return this.s.directory.get(oid)?.value;
  }

  /** Replica copies held here in `dataset`, with the master each names (for drain). */
  replicaCopiesIn(dataset: string): { oid: string; master: number }[] {
    const ds = this.core.datasetId(dataset);
    const out: { oid: string; master: number }[] = [];
    this.s.index.forEach((w, loc) => {
      if (loc.dataset !== ds) return;
      const oid = hexFromWords(w);
      const rep = this.s.replicaOf.get(oid);
      if (rep) out.push({ oid, master: rep.value });
    });
    return out;
  }

  /** The oids this node masters in `dataset` (for drain). */
  oidsIn(dataset: string): string[] {
    const ds = this.core.datasetId(dataset);
    const out: string[] = [];
    this.s.index.forEach((w, loc) => {
      if (loc.dataset !== ds) return;
      const oid = hexFromWords(w);
      if (!this.s.replicaOf.has(oid) && !this.s.installing.has(oid)) out.push(oid);
    });
    return out;
  }

  /** Records the replica sets of objects mastered here, in one batch. */
  async setReplicaSets(dataset: string, sets: ReadonlyMap<string, number[]>): Promise<void> {
    const ds = this.core.datasetId(dataset);
    const records: LogRecord[] = [...sets].map(([oid, nodes]) => ({ type: RecordType.Replicas, dataset: ds, oid: bytesFromHex(assertOid(oid)), nodes: nodeSet(nodes) }));
    if (records.length > 0) await this.core.appendAndApply(records);
  }

  /**
   * Replica side: stores copies of objects mastered by `master`, keeping only newer versions
   * (updates may arrive out of order), and marks them as replicas.
   */
  async installReplicas(dataset: string, master: number, objects: StoredObject[]): Promise<void> {
    const ds = this.core.datasetId(dataset);
    const records: LogRecord[] = [];
    for (const o of objects) {
      assertOid(o.oid);
      validateClassName(o.className);
      const oid = bytesFromHex(o.oid);
      if (this.s.currentVersion(o.oid).version >= o.version) {
        // Not newer, but maybe a new master after a move: only the copy's master changes.
        const rep = this.s.replicaOf.get(o.oid);
        if (rep && rep.value !== master) records.push({ type: RecordType.ReplicaOf, dataset: ds, oid, master });
        continue;
      }
      const origin = o.origin ? bytesFromHex(assertOid(o.origin, 'origin')) : undefined;
      records.push({ type: RecordType.Put, dataset: ds, oid, version: o.version, className: o.className, state: o.state, ...(origin ? { origin } : {}) });
      if (this.s.replicaOf.get(o.oid)?.value !== master) records.push({ type: RecordType.ReplicaOf, dataset: ds, oid, master });
    }
    if (records.length > 0) await this.core.appendAndApply(records);
  }

  /** Replica side: drops replica copies (the master no longer keeps a replica here). */
  async dropReplicas(dataset: string, oids: string[]): Promise<void> {
    const ds = this.core.datasetId(dataset);
    const records: LogRecord[] = [];
    for (const oid of oids) {
      if (!this.s.replicaOf.has(oid)) continue;
      const v = this.s.currentVersion(oid).version;
      records.push({ type: RecordType.Delete, dataset: ds, oid: bytesFromHex(oid), version: v + 1 });
    }
    if (records.length > 0) await this.core.appendAndApply(records);
  }

  /**
   * Takes objects moved here from another node: written with the versions they had, replacing
   * any older copy, and clearing a forward pointer this node may hold for them.
   */
  async install(dataset: string, objects: StoredObject[], replicaSets: ReadonlyMap<string, number[]> = new Map(), source = 0): Promise<void> {
    const ds = this.core.datasetId(dataset);
    const records: LogRecord[] = [];
    for (const o of objects) {
      assertOid(o.oid);
      validateClassName(o.className);
      if (!Number.isSafeInteger(o.version) || o.version < 1) throw new InvalidArgumentError(`bad version ${o.version} for ${o.oid}`);
      const oid = bytesFromHex(o.oid);
      const origin = o.origin ? bytesFromHex(assertOid(o.origin, 'origin')) : undefined;
      records.push({ type: RecordType.Put, dataset: ds, oid, version: o.version, className: o.className, state: o.state, ...(origin ? { origin } : {}) });
      if (this.s.forwards.has(o.oid)) records.push({ type: RecordType.Forward, dataset: ds, oid, node: 0 });
      // A replica copy held here becomes the master copy; the object keeps its other replicas.
      if (this.s.replicaOf.has(o.oid)) records.push({ type: RecordType.ReplicaOf, dataset: ds, oid, master: 0 });
      const nodes = nodeSet(replicaSets.get(o.oid) ?? []);
      if (nodes.join() !== this.replicasOf(o.oid).join()) records.push({ type: RecordType.Replicas, dataset: ds, oid, nodes });
      // Not a master copy until the node moving it has forgotten it and says so.
      if (source !== 0 || this.s.installing.has(o.oid)) records.push({ type: RecordType.Installing, dataset: ds, oid, source });
    }
    if (records.length > 0) await this.core.appendAndApply(records);
  }

  /** The node whose move installed this copy, while the copy is not yet activated. */
  installSourceOf(oid: string): number | undefined {
    return this.s.installing.get(oid)?.value;
  }

  /** Copies still pending activation, with their source. */
  pendingInstalls(): { oid: string; source: number }[] {
    return [...this.s.installing].map(([oid, e]) => ({ oid, source: e.value }));
  }

  /** Makes copies installed by `source` master copies (it has forgotten them). */
  async activate(oids: string[], source: number): Promise<string[]> {
    const done = oids.filter((o) => this.s.installing.get(o)?.value === source);
    const records: LogRecord[] = done.map((o) => ({ type: RecordType.Installing, dataset: 0, oid: bytesFromHex(o), source: 0 }));
    if (records.length > 0) await this.core.appendAndApply(records);
    return done;
  }

  /** Drops copies installed by `source` whose move was abandoned (the source still masters them). */
  async dropInstalls(dataset: string, oids: string[], source: number): Promise<void> {
    const ds = this.core.datasetId(dataset);
    const records: LogRecord[] = [];
    for (const oid of oids) {
      if (this.s.installing.get(oid)?.value !== source) continue;
      const o = bytesFromHex(oid);
      records.push({ type: RecordType.Delete, dataset: ds, oid: o, version: this.s.currentVersion(oid).version + 1 });
      if (this.s.replicaSets.has(oid)) records.push({ type: RecordType.Replicas, dataset: ds, oid: o, nodes: [] });
    }
    if (records.length > 0) await this.core.appendAndApply(records);
  }

  /**
   * Atomically forgets objects that now live on `target` and leaves a forward pointer to it.
   * `versions` are what was copied: if one changed since, nothing is forgotten.
   */
  async moveOut(dataset: string, items: { oid: string; version: number }[], target: number): Promise<void> {
    const ds = this.core.datasetId(dataset);
    const records: LogRecord[] = [];
    for (const it of items) {
      // A prepared transaction would apply its records here after the object left.
      const tx = this.s.locks.holder(it.oid);
      if (tx) throw new WriteConflictError(`object ${it.oid} is locked by prepared transaction ${tx}`, { oid: it.oid });
      const cur = this.s.currentVersion(it.oid, wordsFromHex(it.oid));
      if (cur.version !== it.version) {
        throw new WriteConflictError(`object ${it.oid} changed while it was being moved`, { oid: it.oid, expectedVersion: it.version, actualVersion: cur.version });
      }
      const oid = bytesFromHex(it.oid);
      records.push({ type: RecordType.Delete, dataset: ds, oid, version: cur.version + 1 });
      records.push({ type: RecordType.Forward, dataset: ds, oid, node: target });
      // The replica set goes with the object (the target got it with the install).
      if (this.s.replicaSets.has(it.oid)) records.push({ type: RecordType.Replicas, dataset: ds, oid, nodes: [] });
    }
    if (records.length > 0) await this.core.appendAndApply(records);
  }

  /** Forward pointers not yet confirmed by the home directory (to finish after a crash). */
  pendingForwards(): { oid: string; node: number }[] {
    return [...this.s.forwards].map(([oid, e]) => ({ oid, node: e.value }));
  }

  /** Drops forward pointers (their objects' home directories now point at the new master). */
  async clearForwards(oids: string[]): Promise<void> {
    const records: LogRecord[] = oids.filter((o) => this.s.forwards.has(o)).map((o) => ({ type: RecordType.Forward, dataset: 0, oid: bytesFromHex(o), node: 0 }));
    if (records.length > 0) await this.core.appendAndApply(records);
  }

  /** Records where objects homed here live; an entry that says "on its home node, no replicas" is removed. */
  async setDirectory(entries: { oid: string; master: number; replicas: number[] }[]): Promise<void> {
    const records: LogRecord[] = entries.map((e) => {
      const dflt = e.master === oidHomeNode(assertOid(e.oid)) && e.replicas.length === 0;
      return { type: RecordType.Directory, dataset: 0, oid: bytesFromHex(assertOid(e.oid)), master: dflt ? 0 : e.master, replicas: dflt ? [] : e.replicas };
    });
    if (records.length > 0) await this.core.appendAndApply(records);
  }

  /** Adopts another node's home directory (drain hands it over). */
  async adoptDirectory(entries: { oid: string; master: number; replicas: number[] }[]): Promise<void> {
    const records: LogRecord[] = entries.map((e) => ({ type: RecordType.Directory, dataset: 0, oid: bytesFromHex(assertOid(e.oid)), master: e.master, replicas: e.replicas }));
    if (records.length > 0) await this.core.appendAndApply(records);
  }

  directoryEntries(): { oid: string; master: number; replicas: number[] }[] {
    return [...this.s.directory].map(([oid, e]) => ({ oid, ...e.value }));
  }
}

/** A replica set as stored: each node once, ascending. */
export function nodeSet(nodes: Iterable<number>): number[] {
  return [...new Set(nodes)].sort((a, b) => a - b);
}
