import type { Client } from './client.js';
import type { ReadCheck } from './wire.js';
import { InvalidArgumentError, NotFoundError, LoamError } from './errors.js';
import { isOid } from './oid.js';
import { validateAlias } from './limits.js';
import { Persistent, metaOf, assignFields } from './model.js';
import { Ref } from './ref.js';
import { ObjectSpace } from './object-space.js';
import { decodeState } from './codec.js';

/**
 * An optimistic transaction. Reads go to the node and are remembered with their versions;
 * changes stay in this process until commit, which sends them as one atomic batch: objects
 * loaded here and changed are written (WriteConflictError if someone changed them meanwhile),
 * objects only read are checked (ReadConflictError), new objects are created. The transaction
 * has its own identity map, so an aborted one leaves the client's objects as they were.
 */
export class Transaction {
  private readonly client: Client;
  private readonly space: ObjectSpace;
  private readonly persists: Persistent[] = [];
  private readonly deletes = new Map<string, number>();
  private readonly aliasSets: { alias: string; obj: Persistent }[] = [];
  private readonly aliasDeletes: string[] = [];
  private state: 'open' | 'committed' | 'aborted' = 'open';

  /** @internal use client.transaction() */
  constructor(client: Client) {
    this.client = client;
    this.space = new ObjectSpace(this);
  }

  async get<T extends Persistent = Persistent>(oidOrRef: string | Ref): Promise<T> {
    this.assertOpen();
    const oid = typeof oidOrRef === 'string' && isOid(oidOrRef) ? oidOrRef : Ref.parse(oidOrRef).oid;
    const existing = this.space.lookup(oid);
    if (existing && existing.$loaded) return existing as T; // repeatable read within the transaction
    const rec = await this.client.fetch(oid);
    if (!rec) throw new NotFoundError(`object ${oid} does not exist`, { oid, dataset: this.client.dataset });
    return this.space.materialize(rec) as T;
  }

  async getByAlias<T extends Persistent = Persistent>(alias: string): Promise<T> {
    validateAlias(alias, this.client.limits);
    const { oid } = await this.client.router.withNode(this.client.homeNode, (c) => c.getAlias({ dataset: this.client.dataset, alias }));
    return this.get<T>(oid);
  }

  async load<T extends Persistent>(stub: T): Promise<T> {
    const m = this.ownMeta(stub);
    if (m.loaded) return stub;
    return this.get<T>(m.oid!);
  }

  /** Queues `obj` (and the new objects it reaches) to be created at commit; sets `$oid` at commit. */
  persist<T extends Persistent>(obj: T, options: { alias?: string } = {}): T {
    this.assertOpen();
    if (!(obj instanceof Persistent)) throw new InvalidArgumentError('persist() takes a Persistent object');
    if (options.alias !== undefined) {
      validateAlias(options.alias, this.client.limits);
      this.aliasSets.push({ alias: options.alias, obj });
    }
    this.persists.push(obj);
    return obj;
  }

  /** @internal replaces a loaded object's fields with an encoded state (consolidate) */
  overwrite(obj: Persistent, state: Buffer): void {
    this.ownMeta(obj);
    assignFields(obj, decodeState(state, { stubFor: (oid, cls) => this.space.stub(oid, cls) }));
  }

  /** Explicitly marks a loaded object for writing (changes are detected anyway). */
  save<T extends Persistent>(obj: T): T {
    this.ownMeta(obj);
    return obj;
  }

  delete(obj: Persistent): void {
    const m = this.ownMeta(obj);
    if (!m.loaded) throw new InvalidArgumentError(`load object ${m.oid} before deleting it`, { oid: m.oid });
    this.deletes.set(m.oid!, m.version);
  }

  addAlias(obj: Persistent, alias: string): void {
    this.assertOpen();
    validateAlias(alias, this.client.limits);
    this.aliasSets.push({ alias, obj });
  }

  deleteAlias(alias: string): void {
    this.assertOpen();
    validateAlias(alias, this.client.limits);
    this.aliasDeletes.push(alias);
  }

  /** @internal called by client.transaction() after fn returns */
  async commit(): Promise<void> {
    this.assertOpen();
    const loaded = [...this.space.instances()].filter((o) => o.$loaded && o.$version > 0 && !this.deletes.has(o.$oid!));
    // New objects are created where the objects this transaction read live, so that it stays on one node.
    const home = loaded.length > 0 ? this.client.router.nodeOf(loaded[0].$oid!) : this.client.homeNode;
    const graph = this.space.encodeGraph([...loaded, ...this.persists], home, this.client.limits, true);
    const reads: ReadCheck[] = graph.clean.map((o) => ({ oid: o.$oid!, version: o.$version }));
    const hasWork = graph.writes.length + reads.length + this.deletes.size + this.aliasSets.length + this.aliasDeletes.length > 0;
    if (!hasWork) {
      this.state = 'committed';
      return;
    }
    try {
      const versions = await this.client.commitRaw({
        reads,
        writes: graph.writes,
        deletes: [...this.deletes].map(([oid, expectedVersion]) => ({ oid, expectedVersion })),
        aliasSets: this.aliasSets.map((a) => {
          const oid = a.obj.$oid;
          if (!oid) throw new InvalidArgumentError('addAlias() of an object that is neither persisted nor persisted in this transaction');
          return { alias: a.alias, oid };
        }),
        aliasDeletes: this.aliasDeletes,
      });
      this.space.committed(graph, versions);
      this.state = 'committed';
      this.refreshClient(graph.written);
    } catch (e) {
      graph.rollback();
      throw e;
    }
  }

  /** @internal */
  abort(): void {
    if (this.state === 'open') this.state = 'aborted';
  }

  /**
   * After a commit, the client's own instances of the written objects are brought up to date,
   * unless the application changed them locally (then its next save() reports the conflict).
   */
  private refreshClient(written: Persistent[]): void {
    for (const obj of written) {
      const m = metaOf(obj);
      const mine = this.client.space.lookup(m.oid!);
      if (mine) {
        const cm = metaOf(mine);
        if (!cm.loaded || !cm.snapshot) continue;
        if (!this.client.space.isClean(mine)) continue;
        assignFields(mine, decodeState(m.snapshot!, { stubFor: (oid, cls) => this.client.space.stub(oid, cls) }));
        cm.version = m.version;
        cm.snapshot = m.snapshot;
      }
    }
    for (const oid of this.deletes.keys()) {
      const mine = this.client.space.lookup(oid);
      if (mine) this.client.space.deleted(mine);
    }
  }

  private assertOpen(): void {
    if (this.state !== 'open') throw new LoamError('INVALID_ARGUMENT', `transaction is ${this.state}`);
  }

  private ownMeta(obj: Persistent) {
    this.assertOpen();
    if (!(obj instanceof Persistent)) throw new InvalidArgumentError('expected a Persistent object');
    const m = metaOf(obj);
    if (!m.oid || m.owner !== this) {
      throw new InvalidArgumentError('the object was not read in this transaction: use tx.get() (objects of the client are not part of it)', { oid: m.oid });
    }
    return m;
  }
}
