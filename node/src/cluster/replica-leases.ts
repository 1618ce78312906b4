import { UnavailableError, type ConfirmReplicasRequest, type ConfirmReplicasResponse, type InstallReplicasRequest, type ReadCheck, type Redirect } from '@loam/sdk/wire';
import type { Engine, StoredObject } from '../storage/engine.js';
import type { Logger } from '../logger.js';
import type { Member, Membership } from './membership.js';
import type { Peers } from './peers.js';
import { groupBy } from './group-by.js';

/** Copies asked about per ConfirmReplicas call. */
const CONFIRM_CHUNK = 5_000;
/** How often a replica retries copies that are not confirmed yet. */
const RESYNC_EVERY_MS = 1_000;

/** What the replica-lease logic needs of the node's placement. */
export interface ReplicaHost {
  readonly engine: Engine;
  readonly membership: Membership;
  readonly peers: Peers;
  readonly log: Logger;
  /** Runs `fn` holding the per-object locks (pushes, moves and replica changes take them too). */
  withLocks<T>(oids: string[], fn: () => Promise<T>): Promise<T>;
  redirectFor(oid: string): Promise<Redirect | undefined>;
}

/**
 * Replica copies serve `readFrom: 'any'` reads only while they are known to be current: a copy
 * is current while its master keeps this node in the object's replica set, because the master
 * pushes every write to its set before acknowledging it. A master takes a node out of a set only
 * when the node asked (a drain) or when the node's member key is gone, which needs its lease to
 * expire. So a copy is served only
 * - while this node's own lease is certainly alive (`Membership.leaseCurrent`): before any
 *   master can have seen it leave, and
 * - if it was confirmed under the incarnation (member lease) this node has now, by a push or a
 *   resync answer that named it: a node that lost its lease (paused past the TTL, cut off from
 *   etcd) comes back with a new incarnation, and every copy waits for its master to confirm it
 *   (ConfirmReplicas) or to say it was dropped meanwhile.
 * The first copies of a replicate arrive unconfirmed and are confirmed once the master has
 * recorded the new set, so a master that crashed in between leaves no orphan copy that serves.
 */
export class ReplicaLeases {
  /** oid -> the incarnation under which its copy was last confirmed. */
  private readonly confirmed = new Map<string, string>();
  private resyncWanted = true;
  private lastIncarnation?: string;
  private resyncing?: Promise<void>;
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly host: ReplicaHost) {
    this.timer = setInterval(() => void this.resync(), RESYNC_EVERY_MS);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** Whether this node may serve its replica copy of `oid` to a `readFrom: 'any'` read now. */
  servable(oid: string): boolean {
    const inc = this.host.membership.incarnation;
    return inc !== undefined && this.confirmed.get(oid) === inc && this.host.membership.leaseCurrent();
  }

  /**
   * Records what a push confirms: the objects it carried (unless it is a replicate's first copy)
   * and its `confirm` list at or below the versions now held. Nothing counts if the push named
   * another incarnation of this node, or if this node's lease is not current (it may have been
   * dropped from the set meanwhile; a resync settles it).
   */
  async onPush(req: InstallReplicasRequest, stored: StoredObject[]): Promise<void> {
    const oids = req.unconfirmed ? [] : stored.map((o) => o.oid);
    if (req.confirm.length > 0) {
      const held = await this.host.engine.get(req.dataset, req.confirm.map((c) => c.oid));
      const version = new Map(held.objects.map((o) => [o.oid, o.version]));
      for (const c of req.confirm) if ((version.get(c.oid) ?? -1) >= c.version) oids.push(c.oid);
    }
    if (!this.confirm(oids, req.incarnation) || req.unconfirmed) this.resyncWanted = true;
  }

  /** Copies that are gone (dropped, released): never served again unless confirmed anew. */
  forget(oids: Iterable<string>): void {
    for (const oid of oids) this.confirmed.delete(oid);
  }

  private confirm(oids: string[], incarnation: string): boolean {
    if (oids.length === 0) return true;
    if (!incarnation || incarnation !== this.host.membership.incarnation || !this.host.membership.leaseCurrent()) return false;
    for (const oid of oids) this.confirmed.set(oid, incarnation);
    return true;
  }

  // ------------------------------------------------------------------ replica side

  /** Asks the masters about every copy not confirmed under this incarnation. */
  resync(): Promise<void> {
    // A new incarnation (this node registered again): every copy waits for a confirmation.
    const inc = this.host.membership.incarnation;
    if (inc !== this.lastIncarnation) {
      this.lastIncarnation = inc;
      this.resyncWanted = true;
    }
    if (!this.resyncWanted) return Promise.resolve();
    this.resyncing ??= (async () => {
      this.resyncWanted = false;
      try {
        if (!(await this.resyncAll())) this.resyncWanted = true;
      } catch (e) {
        this.resyncWanted = true;
        this.host.log.debug({ err: (e as Error).message }, 'replica copies not confirmed yet; retrying');
      } finally {
        this.resyncing = undefined;
      }
    })();
    return this.resyncing;
  }

  /** True when every copy got an answer. */
  private async resyncAll(): Promise<boolean> {
    const { engine, membership, peers, log } = this.host;
    const inc = membership.incarnation;
    if (!inc || !membership.leaseCurrent()) return false;
    let complete = true;
    let confirmedCount = 0;
    let droppedCount = 0;
    for (const dataset of engine.listDatasets()) {
      let pending = engine.replicaCopiesIn(dataset).filter((c) => this.confirmed.get(c.oid) !== inc);
      for (let hop = 0; pending.length > 0 && hop < 4; hop++) {
        const next: { oid: string; master: number }[] = [];
        for (const [master, copies] of groupBy(pending, (c) => [c.master])) {
          const m = await membership.byNumber(master);
          if (!m || m.id === membership.self.id) {
            complete = false; // a master that is not a member now: ask again later
            continue;
          }
          for (let i = 0; i < copies.length; i += CONFIRM_CHUNK) {
            const part = copies.slice(i, i + CONFIRM_CHUNK);
            const held = await engine.get(dataset, part.map((c) => c.oid));
            const res = await peers.confirmReplicas(m, { dataset, node: membership.self.number, incarnation: inc, copies: held.objects.map((o): ReadCheck => ({ oid: o.oid, version: o.version })) });
            if (res.newer.length > 0) await engine.installReplicas(dataset, master, res.newer);
            // Copies now confirmed by a master other than the one they name: name it, so
            // reads that must go to the master go straight there.
            const current = new Set(res.current);
            const renamed = held.objects.filter((o) => current.has(o.oid) && engine.replicaMasterOf(o.oid) !== master);
            if (renamed.length > 0) await engine.installReplicas(dataset, master, renamed);
            if (!this.confirm([...res.newer.map((o) => o.oid), ...res.current], inc)) return false;
            confirmedCount += res.newer.length + res.current.length;
            if (res.dropped.length > 0) {
              await engine.dropReplicas(dataset, res.dropped);
              this.forget(res.dropped);
              droppedCount += res.dropped.length;
            }
            next.push(...res.redirects.map((r) => ({ oid: r.oid, master: r.node })));
          }
        }
        pending = next;
      }
      if (pending.length > 0) complete = false;
    }
    if (confirmedCount + droppedCount > 0) log.info({ confirmed: confirmedCount, dropped: droppedCount, incarnation: inc }, 'replica copies confirmed with their masters');
    return complete;
  }

  // ------------------------------------------------------------------ master side

  /** Which of a replica's copies are still replicated to it, and what changed. */
  async answer(req: ConfirmReplicasRequest): Promise<ConfirmReplicasResponse> {
    const { engine, membership } = this.host;
    // Only a view that has the replica's new incarnation: an older view may still drop it.
    if (!(await membership.byIncarnation(req.node, req.incarnation))) {
      throw new UnavailableError(`node ${req.node} incarnation ${req.incarnation} is not in this node's member view yet`, { node: req.node });
    }
    const res: ConfirmReplicasResponse = { newer: [], current: [], dropped: [], redirects: [] };
    const mine: ReadCheck[] = [];
    for (const c of req.copies) {
      if (engine.masters(c.oid)) {
        mine.push(c);
        continue;
      }
      const r = await this.host.redirectFor(c.oid);
      if (r) res.redirects.push(r);
      else res.dropped.push(c.oid);
    }
    const movedAway: string[] = [];
    await this.host.withLocks(mine.map((c) => c.oid), async () => {
      const here = mine.filter((c) => engine.masters(c.oid));
      for (const c of mine) if (!engine.masters(c.oid)) movedAway.push(c.oid); // moved while we waited for the lock
      const now = await engine.get(req.dataset, here.map((c) => c.oid));
      const byOid = new Map(now.objects.map((o) => [o.oid, o]));
      for (const c of here) {
        const o = byOid.get(c.oid);
        if (!o || !engine.replicasOf(c.oid).includes(req.node)) res.dropped.push(c.oid);
        else if (o.version > c.version) res.newer.push(o);
        else res.current.push(c.oid);
      }
    });
    for (const oid of movedAway) {
      const r = await this.host.redirectFor(oid);
      if (r) res.redirects.push(r);
      else res.dropped.push(oid);
    }
    return res;
  }
}
