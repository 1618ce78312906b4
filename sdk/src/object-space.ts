import type { ObjectRecord, Write, Limits } from './wire.js';
import { InvalidArgumentError, LimitExceededError } from './errors.js';
import { Persistent, assignFields, instantiate, metaOf, setMeta, classNameOf } from './model.js';
import { encodeState, decodeState, type DecodeHooks, type EncodeHooks } from './codec.js';
import { newOid } from './oid.js';

/**
 * An identity map plus the encode/decode of object graphs against it. A Client has one, and
 * each Transaction has its own, so that within either an oid is exactly one instance (cycles
 * and shared references keep their shape) and an aborted transaction leaves the client's
 * instances untouched. Entries are weak: the map never keeps an object alive by itself.
 */
export class ObjectSpace {
  private readonly map = new Map<string, WeakRef<Persistent>>();
  private readonly finalizer = new FinalizationRegistry<string>((oid) => {
    const ref = this.map.get(oid);
    if (ref && ref.deref() === undefined) this.map.delete(oid);
  });
  private readonly decodeHooks: DecodeHooks = { stubFor: (oid, className) => this.stub(oid, className) };

  constructor(readonly owner: object) {}

  lookup(oid: string): Persistent | undefined {
    return this.map.get(oid)?.deref();
  }

  adopt(obj: Persistent, oid: string): void {
    this.map.set(oid, new WeakRef(obj));
    this.finalizer.register(obj, oid);
  }

  forget(oid: string): void {
    this.map.delete(oid);
  }

  /** Every live instance in this space. */
  *instances(): IterableIterator<Persistent> {
    for (const ref of this.map.values()) {
      const o = ref.deref();
      if (o) yield o;
    }
  }

  stub(oid: string, className: string): Persistent {
    const existing = this.lookup(oid);
    if (existing) return existing;
    const obj = instantiate(className, { oid, className, version: 0, loaded: false, owner: this.owner });
    this.adopt(obj, oid);
    return obj;
  }

  /** The instance for a record, with its fields replaced by the record's state (identity kept). */
  materialize(rec: ObjectRecord): Persistent {
    let obj = this.lookup(rec.oid);
    if (!obj) {
      obj = instantiate(rec.className, { oid: rec.oid, className: rec.className, version: 0, loaded: false, owner: this.owner });
      this.adopt(obj, rec.oid);
    }
    let fields: Record<string, unknown>;
    try {
      fields = decodeState(rec.state, this.decodeHooks);
    } catch (e) {
      throw naming(e, rec.oid, rec.className);
    }
    assignFields(obj, fields);
    const m = metaOf(obj);
    m.loaded = true;
    m.version = rec.version;
    m.snapshot = rec.state;
    m.origin = rec.origin || undefined;
    return obj;
  }

  /**
   * Encodes `roots` and every not-yet-persisted object they reach into writes, assigning oids on
   * `homeNode` to new ones. With `onlyDirty`, a loaded root whose state equals its snapshot is
   * reported as clean instead of written. `rollback()` undoes the oid assignments when the
   * commit does not happen, so the objects stay new.
   */
  encodeGraph(roots: Iterable<Persistent>, homeNode: number, limits: Limits, onlyDirty = false): EncodedGraph {
    const writes: Write[] = [];
    const written: Persistent[] = [];
    const clean: Persistent[] = [];
    const created: Persistent[] = [];
    const queue: Persistent[] = [];
    const queued = new Set<Persistent>();
    const assign = (obj: Persistent) => {
      const m = metaOf(obj);
      m.className = classNameOf(obj);
      m.oid = newOid(homeNode);
      m.owner = this.owner;
      m.version = 0;
      m.loaded = true;
      this.adopt(obj, m.oid);
      created.push(obj);
    };
    const hooks: EncodeHooks = {
      refFor: (obj) => {
        const m = metaOf(obj);
        if (!m.oid) {
          assign(obj);
          queued.add(obj);
          queue.push(obj);
        }
        return { oid: m.oid!, className: m.className };
      },
    };
    const rollback = () => {
      for (const obj of created) {
        const m = metaOf(obj);
        if (m.oid) this.forget(m.oid);
        m.oid = undefined;
        m.version = 0;
      }
    };
    try {
      for (const root of roots) {
        if (!(root instanceof Persistent)) throw new InvalidArgumentError('only instances of Persistent subclasses can be stored');
        if (queued.has(root)) continue;
        if (!metaOf(root).oid) assign(root);
        queued.add(root);
        queue.push(root);
      }
      let bytes = 0;
      for (let i = 0; i < queue.length; i++) {
        const obj = queue[i];
        const m = metaOf(obj);
        if (!m.loaded) throw new InvalidArgumentError(`object ${m.oid} is an unloaded stub: load it before writing it`, { oid: m.oid });
        let state: Buffer;
        try {
          state = encodeState(obj, hooks, limits.maxDepth);
        } catch (e) {
          throw naming(e, m.oid!, m.className);
        }
        if (onlyDirty && m.version > 0 && m.snapshot && state.equals(m.snapshot)) {
          clean.push(obj);
          continue;
        }
        if (state.length + m.className.length > limits.maxObjectBytes) {
          throw new LimitExceededError(`object ${m.oid} (${m.className}) encodes to ${state.length} bytes, the limit is ${limits.maxObjectBytes}`, {
            oid: m.oid, limit: 'maxObjectBytes',
          });
        }
        bytes += state.length;
        writes.push({ oid: m.oid!, className: m.className, state, expectedVersion: m.version, origin: m.origin ?? '' });
        written.push(obj);
      }
      if (writes.length > limits.maxBatchObjects) {
        throw new LimitExceededError(`a commit of ${writes.length} objects exceeds the batch limit of ${limits.maxBatchObjects}`, { limit: 'maxBatchObjects' });
      }
      if (bytes > limits.maxBatchBytes) {
        throw new LimitExceededError(`a commit of ${bytes} bytes exceeds the batch limit of ${limits.maxBatchBytes}`, { limit: 'maxBatchBytes' });
      }
    } catch (e) {
      rollback();
      throw e;
    }
    return { writes, written, clean, created, rollback };
  }

  /** Records a successful commit of `graph` with the versions the node assigned. */
  committed(graph: EncodedGraph, versions: number[]): void {
    for (let i = 0; i < graph.written.length; i++) {
      const m = metaOf(graph.written[i]);
      m.version = versions[i];
      m.snapshot = graph.writes[i].state;
      m.loaded = true;
    }
  }

  /** True when the instance's fields encode to what was last loaded or committed. */
  isClean(obj: Persistent): boolean {
    const m = metaOf(obj);
    if (!m.snapshot) return false;
    try {
      const state = encodeState(obj, { refFor: (o) => {
        const om = metaOf(o);
        if (!om.oid) throw new Error('dirty: reaches a new object');
        return { oid: om.oid, className: om.className };
      } });
      return state.equals(m.snapshot);
    } catch {
      return false;
    }
  }

  /** After a delete: the instance is new again (persisting it creates a new object). */
  deleted(obj: Persistent): void {
    const m = metaOf(obj);
    if (m.oid) this.forget(m.oid);
    setMeta(obj, { version: 0, loaded: true, className: m.className });
  }
}

export interface EncodedGraph {
  writes: Write[];
  written: Persistent[];
  clean: Persistent[];
  created: Persistent[];
  rollback: () => void;
}

/** A codec limit error, reworded to name the object it is about. */
function naming(e: unknown, oid: string, className: string): unknown {
  if (!(e instanceof LimitExceededError)) return e;
  return new LimitExceededError(`object ${oid} (${className}): ${e.message}`, { oid, limit: e.limit });
}
