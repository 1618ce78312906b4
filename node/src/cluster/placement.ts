import {
  DeadlineExceededError, DrainCancelledError, FailedPreconditionError, InvalidArgumentError, LimitExceededError, NotFoundError, RedirectError, UnavailableError, WriteConflictError, oidHomeNode,
  type Backend, type DrainResponse, type MasterChange, type MoveResponse, type Redirect,
} from '@loam/sdk/wire';
import { decodeValue } from '@loam/sdk/codec';
import type { Engine, StoredObject } from '../storage/engine.js';
import type { Logger } from '../logger.js';
import { META_KEYS } from '../meta/meta-store.js';
import type { Member, Membership } from './membership.js';
import type { Peers } from './peers.js';
import { failpointAsync } from '../failpoints.js';
import { clearDrained, writeDrained } from '../data-dir.js';
import { ReplicaLeases } from './replica-leases.js';
import { groupBy } from './group-by.js';

/** Objects sent to the target per Install call: bounded so one call stays well under message limits. */
const MOVE_CHUNK_OBJECTS = 5_000;
const MOVE_CHUNK_BYTES = 16 * 1024 * 1024;
const DRAIN_MAX_PASSES = 20;
const FINISH_EVERY_MS = 2_000;
/** A copy installed by a move and still pending after this long is settled with its source. */
const INSTALL_GRACE_MS = 5_000;

/**
 * Where objects live and how they get somewhere else. A move copies objects to the target
 * (durable there), then atomically forgets them here leaving forward pointers, then switches
 * the home directory by compare-and-set; a crash between the last two steps is finished later
 * from the forward pointers, so an object is never mastered twice nor lost. Writes to an object
 * wait while it moves.
 */
export class Placement {
  private readonly moving = new Map<string, Promise<void>>();
  private handingOff = false;
  /** Drained (here, or as the data directory or etcd remember it): takes no new objects. */
  private drained: boolean;
  /** A drain is running: new objects would be left behind, so none are taken already. */
  private draining = false;
  /** Objects this node mastered when the running drain began (for drainProgress). */
  private drainTotal = 0;
  private running?: Promise<DrainResponse>;
  /** CancelDrain asked the running drain to stop at its next safe point. */
  private cancelRequested = false;
  /** A CancelDrain in progress (one at a time; a drain waits for it to end). */
  private cancelling?: Promise<{ stopped: boolean; undrained: boolean }>;
  /** Set while a cancel makes this node ready again: a stale view must not record it drained. */
  private undraining = false;
  private recording?: Promise<void>;
  /** The node a running drain hands the home directory to (recorded with the drained state). */
  private successor?: number;
  /**
   * Replica copies this node gave up while draining: a push already in flight when the master
   * released them must not bring them back (acknowledged, not stored).
   */
  private readonly released = new Set<string>();
  /** Home directories handed to this node by a drain (also recorded in etcd's homes/N). */
  private readonly adopted = new Set<number>();
  private finishTimer?: NodeJS.Timeout;
  private finishing?: Promise<void>;
  private checking?: Promise<void>;
  /** When each pending installed copy was first seen here (settled after INSTALL_GRACE_MS). */
  private readonly installSeen = new Map<string, number>();
  /** Which replica copies here may serve reads (confirmed by their masters under this lease). */
  readonly replicaLeases: ReplicaLeases;

  constructor(
    private readonly engine: Engine,
    private readonly membership: Membership,
    private readonly log: Logger,
    /** Node-to-node calls (closed with this). */
    private readonly peers: Peers,
    /** Where the drained state is recorded (DIR/drained.json); none: only in etcd. */
    private readonly opts: { dataDir?: string } = {},
  ) {
    this.drained = membership.self.state === 'drained';
    this.replicaLeases = new ReplicaLeases({
      engine, membership, peers, log,
      withLocks: (oids, fn) => this.withLocks(oids, fn),
      redirectFor: (oid) => this.redirectFor(oid),
    });
    membership.onHomeHandedOver = () => {
      if (!this.undraining) void this.recordDrained();
    };
    if (!this.drained && membership.homeHandedOver) void this.recordDrained();
    this.finishTimer = setInterval(() => {
      void this.finishForwards();
      void this.checkInstalls();
    }, FINISH_EVERY_MS);
    this.finishTimer.unref();
    void this.finishForwards();
  }

  private get me(): Member {
    return this.membership.self;
  }

  /** True while this node takes no new objects: drained, being drained, or its home directory handed over. */
  get isDrained(): boolean {
    return this.drained || this.draining || this.membership.homeHandedOver;
  }

  /**
   * While a drain runs: the objects it has left to move (those this node still masters) and
   * how many it mastered when the drain began; undefined otherwise. Counts only, no scan.
   */
  get drainProgress(): { left: number; total: number } | undefined {
    if (!this.draining) return undefined;
    const left = this.masteredCount();
    return { left, total: Math.max(this.drainTotal, left) };
  }

  private masteredCount(): number {
    const s = this.engine.state;
    return Math.max(0, s.index.size - s.replicaOf.size - s.installing.size);
  }

  /**
   * Makes the drained state survive a restart: DIR/drained.json (durable before this resolves,
   * read at start before anything is served) and the member key's state. Once per process.
   */
  private recordDrained(homeSuccessor?: number): Promise<void> {
    this.drained = true;
    this.recording ??= (async () => {
      if (this.opts.dataDir) {
        try {
          writeDrained(this.opts.dataDir, { drainedAt: new Date().toISOString(), homeSuccessor: homeSuccessor ?? this.successor });
        } catch (e) {
          // etcd's homes/N still says so; only a restart while etcd is down would not know.
          this.log.error({ err: (e as Error).message }, 'drained state not recorded in the data directory');
        }
      }
      await this.membership.markDrained().catch((e) => this.log.warn({ err: (e as Error).message }, 'drained state not recorded in the member key'));
    })();
    return this.recording;
  }

  /** Waits until none of `oids` is being moved (their writers then see where they went). */
  async waitUnlocked(oids: Iterable<string>): Promise<void> {
    for (;;) {
      const waits: Promise<void>[] = [];
      for (const o of oids) {
        const p = this.moving.get(o);
        if (p) waits.push(p);
      }
      if (waits.length === 0) return;
      await Promise.allSettled(waits);
    }
  }

  private async member(n: number): Promise<Member | undefined> {
    return this.membership.byNumber(n);
  }

  private redirectTo(oid: string, m: Member | undefined, n: number): Redirect {
    return { oid, node: m?.number ?? n, address: m?.address ?? '' };
  }

  /** Where to send a request for an object this node does not hold; undefined: it does not exist. */
  async redirectFor(oid: string, waitForMove = true): Promise<Redirect | undefined> {
    // Mid-move the object may be neither here (forget in flight) nor pointed at (forward not
    // published yet): wait for the move to settle rather than answer "does not exist" (not when
    // the caller holds the move lock itself).
    if (waitForMove && this.moving.has(oid)) await this.waitUnlocked([oid]);
    if (this.engine.masters(oid)) return undefined;
    // A copy a move has not activated yet: its source masters it (or is finishing the move).
    const src = this.engine.installSourceOf(oid);
    if (src !== undefined) return this.redirectTo(oid, await this.member(src), src);
    const rm = this.engine.replicaMasterOf(oid);
    if (rm !== undefined) return this.redirectTo(oid, await this.member(rm), rm);
    const fwd = this.engine.forwardOf(oid);
    if (fwd !== undefined) return this.redirectTo(oid, await this.member(fwd), fwd);
    const home = oidHomeNode(oid);
    const server = await this.homeServer(home);
    if (server && server.id !== this.me.id) return this.redirectTo(oid, server, home);
    if (!server && home !== this.me.number) return this.redirectTo(oid, undefined, home);
    const entry = this.engine.directoryOf(oid);
    if (!entry || entry.master === this.me.number) return undefined;
    return this.redirectTo(oid, await this.member(entry.master), entry.master);
  }

  static redirectError(r: Redirect): RedirectError | UnavailableError {
    if (!r.address) return new UnavailableError(`node ${r.node}, which holds object ${r.oid}, is not available`, { oid: r.oid, node: r.node });
    return new RedirectError(`object ${r.oid} is on node ${r.node} at ${r.address}`, { oid: r.oid, node: r.node, address: r.address });
  }

  /**
   * The member serving home directory `home`. Homes this node adopted count as its own at once:
   * its view of etcd may lag by a refresh, and the drained node already points here.
   */
  private async homeServer(home: number): Promise<Member | undefined> {
    if (this.adopted.has(home)) return this.me;
    return this.membership.homeServer(home);
  }

  /** Whether an object exists anywhere in the cluster (asked of wherever it is located). */
  async exists(dataset: string, oid: string): Promise<boolean> {
    for (let hop = 0; hop < 4; hop++) {
      if (this.engine.masters(oid)) return (await this.engine.get(dataset, [oid])).objects.length > 0;
      const r = await this.redirectFor(oid);
      if (!r) return false;
      if (!r.address) throw new UnavailableError(`node ${r.node}, which holds object ${oid}, is not available`, { oid, node: r.node });
      const res = await this.peers.get(r.address, { dataset, oids: [oid], readFromAny: false });
      if (res.objects.length > 0) return true;
      if (res.redirects.length === 0) return false;
    }
    throw new UnavailableError(`object ${oid} kept moving while its existence was checked`, { oid });
  }

  /** Master and replicas of an object, answered by its home (or its current master). */
  async locate(dataset: string, oid: string): Promise<{ master: Backend; replicas: Backend[] }> {
    const backend = (m: Member): Backend => ({ id: m.id, number: m.number, address: m.address, state: 'ready', instance: m.instance ?? '' });
    if (this.engine.masters(oid) && (await this.engine.get(dataset, [oid])).objects.length > 0) {
      const replicas = await Promise.all(this.engine.replicasOf(oid).map((n) => this.member(n)));
      return { master: backend(this.me), replicas: replicas.filter((m): m is Member => !!m).map(backend) };
    }
    const r = await this.redirectFor(oid);
    if (r) throw Placement.redirectError(r);
    throw new NotFoundError(`object ${oid} does not exist`, { oid, dataset });
  }

  // ------------------------------------------------------------------ move

  /**
   * `deadline`: when the caller stops waiting (ms since the epoch). Past it, the move stops
   * before its next durable step (a copy to the target, the forget here); a chunk already
   * forgotten here is always finished.
   */
  async move(dataset: string, oids: string[], target: number, recursive: boolean, deadline?: number): Promise<MoveResponse> {
    for (const oid of oids) {
      if (!this.engine.masters(oid)) {
        const r = await this.redirectFor(oid);
        throw r ? Placement.redirectError(r) : new NotFoundError(`object ${oid} does not exist`, { oid, dataset });
      }
    }
    const { set, remote } = await this.collect(dataset, oids, recursive);
    if (target === this.me.number) return { moved: set, remote };
    const dest = await this.member(target);
    if (!dest) throw new UnavailableError(`target node ${target} is not a live member`, { node: target });
    if (dest.state === 'drained') throw new InvalidArgumentError(`node ${target} is drained: it takes no objects`, { node: target });

    // Concurrent moves and replica changes of an object take turns (a move used to skip
    // objects already locked and move them at the same time, to two targets).
    return this.withLocks(set, async () => {
      const moved: string[] = [];
      const here = set.filter((o) => this.engine.masters(o)); // a move that went first may have taken some
      for (const oid of oids) {
        if (this.engine.masters(oid)) continue;
        const r = await this.redirectFor(oid, false);
        throw r ? Placement.redirectError(r) : new NotFoundError(`object ${oid} does not exist`, { oid, dataset });
      }
      for (let i = 0; i < here.length;) {
        let chunk: StoredObject[] = [];
        let bytes = 0;
        for (; i < here.length && chunk.length < MOVE_CHUNK_OBJECTS && bytes < MOVE_CHUNK_BYTES; i++) {
          const [o] = (await this.engine.get(dataset, [here[i]])).objects;
          if (o) {
            chunk.push(o);
            bytes += o.state.length;
          }
        }
        if (chunk.length === 0) continue;
        // Replica sets go with their objects (the target drops itself from them): the target
        // keeps the copies up to date from its first write on.
        const replicaSets = new Map(chunk.map((o) => [o.oid, this.engine.replicasOf(o.oid).filter((n) => n !== target)]));
        // The home directory keeps replica sets across the switch; only where the target was a
        // replica is the recorded set wrong afterwards.
        const wasReplica = chunk.filter((o) => this.engine.replicasOf(o.oid).includes(target)).map((o) => o.oid);
        chunk = await this.moveChunk(dataset, chunk, dest, target, replicaSets, deadline);
        moved.push(...chunk.map((o) => o.oid));
        await this.repointReplicas(dataset, chunk, replicaSets, target);
        await this.switchHomes(chunk.map((o) => ({ oid: o.oid, from: this.me.number, to: target })));
        await this.recordHomeReplicas(wasReplica, target, replicaSets);
      }
      return { moved, remote };
    });
  }

  /**
   * Copies a chunk to the target and forgets it here. A commit already in flight when the move
   * lock was taken can land between the copy and the forget; the forget then sees a newer
   * version and refuses, and the chunk is copied again (the lock lets no further commit in).
   */
  private async moveChunk(dataset: string, chunk: StoredObject[], dest: Member, target: number, replicaSets: Map<string, number[]>, deadline?: number): Promise<StoredObject[]> {
    const sets = [...replicaSets].filter(([, nodes]) => nodes.length > 0).map(([oid, nodes]) => ({ oid, nodes }));
    for (let attempt = 1; ; attempt++) {
      await this.waitForPrepared(chunk.map((o) => o.oid));
      chunk = (await this.engine.get(dataset, chunk.map((o) => o.oid))).objects;
      // The target holds them as pending copies (not served) until they are activated below.
      checkDeadline(deadline, 'copying objects to the target');
      await this.peers.install(dest, { dataset, objects: chunk, replicaSets: sets, source: this.me.number });
      await failpointAsync('move-after-install');
      try {
        checkDeadline(deadline, 'the objects were forgotten here (the target drops its pending copies)');
        await this.engine.moveOut(dataset, chunk.map((o) => ({ oid: o.oid, version: o.version })), target);
      } catch (e) {
        if (!(e instanceof WriteConflictError) || attempt >= 5) {
          // Abandoned: the target's pending copies are never served, and its own check drops them.
          throw e;
        }
        continue;
      }
      // Forgotten here (forward pointers): now the target's copies are the master copies. If this
      // fails, the finisher activates them from the forward pointers before switching homes.
      await failpointAsync('move-before-activate');
      await this.peers.activateInstall(dest, { dataset, oids: chunk.map((o) => o.oid), source: this.me.number })
        .catch((e) => this.log.warn({ err: (e as Error).message, target }, 'activation deferred to the finisher'));
      return chunk;
    }
  }

  /** Waits until no prepared transaction locks any of `oids` (each resolves within its timeout). */
  private async waitForPrepared(oids: string[]): Promise<void> {
    const txs = new Set<string>();
    for (const o of oids) {
      const tx = this.engine.lockedBy(o);
      if (tx) txs.add(tx);
    }
    await Promise.all([...txs].map((t) => this.engine.waitForTx(t)));
  }

  // ------------------------------------------------------------------ replicas

  /** Collects `oids` and, with `recursive`, the objects mastered here that they reach. */
  private async collect(dataset: string, oids: string[], recursive: boolean): Promise<{ set: string[]; remote: string[] }> {
    const set = [...new Set(oids)];
    const remote: string[] = [];
    if (!recursive) return { set, remote };
    const seen = new Set(set);
    for (let i = 0; i < set.length; i++) {
      const [obj] = (await this.engine.get(dataset, [set[i]])).objects;
      if (!obj) continue;
      for (const ref of referencesOf(obj)) {
        if (seen.has(ref)) continue;
        seen.add(ref);
        if (this.engine.masters(ref)) set.push(ref);
        else remote.push(ref);
      }
    }
    return { set, remote };
  }

  /** Runs `fn` holding the per-object lock of every oid (moves and replica changes serialize on it). */
  private async withLocks<T>(oids: string[], fn: () => Promise<T>): Promise<T> {
    for (;;) {
      await this.waitUnlocked(oids);
      if (oids.every((o) => !this.moving.has(o))) break;
    }
    let release!: () => void;
    const lock = new Promise<void>((r) => (release = r));
    for (const o of oids) this.moving.set(o, lock);
    try {
      return await fn();
    } finally {
      for (const o of oids) if (this.moving.get(o) === lock) this.moving.delete(o);
      release();
    }
  }

  /**
   * Keeps a replica of objects on `target`: copies them there, then adds `target` to their
   * replica sets. Calls on one object are serialized, so concurrent replicate calls all count.
   */
  async replicate(dataset: string, oids: string[], target: number, recursive: boolean, deadline?: number): Promise<{ replicated: string[]; remote: string[] }> {
    for (const oid of oids) {
      if (!this.engine.masters(oid)) {
        const r = await this.redirectFor(oid);
        throw r ? Placement.redirectError(r) : new NotFoundError(`object ${oid} does not exist`, { oid, dataset });
      }
    }
    const { set, remote } = await this.collect(dataset, oids, recursive);
    if (target === this.me.number) return { replicated: [], remote };
    const dest = await this.member(target);
    if (!dest) throw new UnavailableError(`target node ${target} is not a live member`, { node: target });
    const replicated: string[] = [];
    for (let i = 0; i < set.length; i += MOVE_CHUNK_OBJECTS) {
      const part = set.slice(i, i + MOVE_CHUNK_OBJECTS);
      await this.withLocks(part, async () => {
        const objects = (await this.engine.get(dataset, part.filter((o) => this.engine.masters(o)))).objects;
        const fresh = objects.filter((o) => !this.engine.replicasOf(o.oid).includes(target));
        if (fresh.length === 0) return;
        checkDeadline(deadline, 'copying objects to the target');
        // The first copies are not served until confirmed below, after the set is recorded: a
        // crash in between leaves copies that the target's resync finds orphaned and drops.
        await this.peers.installReplicas(dest, { dataset, master: this.me.number, objects: fresh, incarnation: dest.incarnation ?? '', unconfirmed: true, confirm: [] });
        await failpointAsync('replicate-after-copy');
        checkDeadline(deadline, 'recording the new replica set (the target drops the unconfirmed copies)');
        await this.engine.setReplicaSets(dataset, new Map(fresh.map((o) => [o.oid, [...this.engine.replicasOf(o.oid), target]])));
        // A write acknowledged between the copy and the new replica set pushed to the old set
        // only: send what changed since the copy (later writes push to the target themselves),
        // and confirm the rest at the versions copied.
        const copied = new Map(fresh.map((o) => [o.oid, o.version]));
        const now = await this.engine.get(dataset, fresh.map((o) => o.oid));
        const newer = now.objects.filter((o) => o.version > copied.get(o.oid)!);
        const same = now.objects.filter((o) => o.version === copied.get(o.oid)).map((o) => ({ oid: o.oid, version: o.version }));
        await this.peers.installReplicas(dest, { dataset, master: this.me.number, objects: newer, incarnation: dest.incarnation ?? '', unconfirmed: false, confirm: same });
        if (newer.length > 0) this.log.info({ objects: newer.length, target }, 'replicate: sent the writes acknowledged during the copy');
        if (now.missing.length > 0) await this.peers.dropReplicas(dest, { dataset, oids: now.missing });
        replicated.push(...fresh.map((o) => o.oid));
        await this.recordHomeReplicas(fresh.map((o) => o.oid));
      });
    }
    return { replicated, remote };
  }

  /**
   * After a write here: brings every replica of the written objects up to date before the write
   * is acknowledged. A replica on a node that left the cluster is dropped from the set; a live
   * replica that cannot be updated fails the call (the write is durable here; the caller is told
   * it could not be confirmed).
   */
  async pushReplicas(dataset: string, oids: string[]): Promise<void> {
    const byNode = groupBy(oids, (oid) => this.engine.replicasOf(oid));
    if (byNode.size === 0) return;
    await Promise.all([...byNode].map(async ([n, list]) => {
      const m = await this.member(n);
      if (!m) {
        for (const oid of list) await this.engine.setReplicas(dataset, oid, this.engine.replicasOf(oid).filter((x) => x !== n));
        await this.recordHomeReplicas(list);
        this.log.warn({ node: n, objects: list.length }, 'dropped replicas on a node that left the cluster');
        return;
      }
      const { objects, missing } = await this.engine.get(dataset, list);
      if (objects.length > 0) await this.peers.installReplicas(m, { dataset, master: this.me.number, objects, incarnation: m.incarnation ?? '', unconfirmed: false, confirm: [] });
      if (missing.length > 0) await this.peers.dropReplicas(m, { dataset, oids: missing });
    }));
  }

  /** Master side of a drain: stops replicating `oids` to `node`; redirects for objects mastered elsewhere. */
  async releaseReplicas(dataset: string, node: number, oids: string[]): Promise<{ released: string[]; redirects: Redirect[] }> {
    const released: string[] = [];
    const redirects: Redirect[] = [];
    const mine: string[] = [];
    for (const oid of oids) {
      if (this.engine.masters(oid)) {
        mine.push(oid);
        continue;
      }
      const r = await this.redirectFor(oid);
      if (r) redirects.push(r);
      else released.push(oid); // gone: nothing replicates it
    }
    const changed = new Map<string, number[]>();
    await this.withLocks(mine, async () => {
      for (const oid of mine) {
        const set = this.engine.replicasOf(oid);
        if (set.includes(node)) changed.set(oid, set.filter((n) => n !== node));
      }
      await this.engine.setReplicaSets(dataset, changed);
    });
    await this.recordHomeReplicas([...changed.keys()]);
    released.push(...mine);
    return { released, redirects };
  }

  /** True for a replica copy this node gave up while draining (see `released`). */
  isReleased(oid: string): boolean {
    return this.released.has(oid);
  }

  /**
   * Drain side: hands back every replica copy held here. Each master first takes this node out
   * of the object's replica set, then the copy is dropped, so no write is acknowledged as pushed
   * to a copy that is gone. A master that left the cluster cannot push: its copies just go.
   */
  private async releaseReplicaCopies(): Promise<number> {
    let dropped = 0;
    for (const ds of this.engine.listDatasets()) {
      let pending = this.engine.replicaCopiesIn(ds);
      for (let hop = 0; pending.length > 0 && hop < 4; hop++) {
        const byMaster = groupBy(pending, (c) => [c.master]);
        pending = [];
        for (const [master, copies] of byMaster) {
          const oids = copies.map((c) => c.oid);
          for (let i = 0; i < oids.length; i += MOVE_CHUNK_OBJECTS) {
            const part = oids.slice(i, i + MOVE_CHUNK_OBJECTS);
            const m = await this.member(master);
            let gone = part;
            this.replicaLeases.forget(part); // stop serving them before the master lets them go
            if (m && m.id !== this.me.id) {
              const res = await this.peers.releaseReplicas(m, { dataset: ds, node: this.me.number, oids: part });
              gone = res.released;
              pending.push(...res.redirects.map((r) => ({ oid: r.oid, master: r.node })));
            }
            for (const oid of gone) this.released.add(oid);
            await this.engine.dropReplicas(ds, gone);
            dropped += gone.length;
          }
        }
      }
      if (pending.length > 0) throw new UnavailableError(`drain: the masters of ${pending.length} replica copies kept moving`);
    }
    return dropped;
  }

  /**
   * After a move: tells each replica that its copies now follow `target` (and brings them up to
   * date). Best effort: the target's next write to an object does the same for its copies, and
   * until then a copy that still names the old master only costs a redirect through it.
   */
  private async repointReplicas(dataset: string, chunk: StoredObject[], replicaSets: Map<string, number[]>, target: number): Promise<void> {
    const byNode = groupBy(chunk, (o) => replicaSets.get(o.oid) ?? []);
    await Promise.all([...byNode].map(async ([n, objects]) => {
      const m = await this.member(n);
      if (!m) return;
      await this.peers.installReplicas(m, { dataset, master: target, objects, incarnation: m.incarnation ?? '', unconfirmed: false, confirm: [] })
        .catch((e) => this.log.warn({ node: n, err: (e as Error).message }, 'replica copies not told their new master'));
    }));
  }

  /**
   * Tells each object's home which replicas it has (for locate); best effort. By default the
   * objects are mastered here; after a move, `master` and `sets` say where and what they are.
   */
  private async recordHomeReplicas(oids: string[], master = this.me.number, sets?: Map<string, number[]>): Promise<void> {
    // One call per home node, not per object (a recursive replicate records thousands).
    const byHome = groupBy(oids.map((oid) => ({ oid, master, replicas: sets?.get(oid) ?? this.engine.replicasOf(oid) })), (e) => [oidHomeNode(e.oid)]);
    for (const [home, entries] of byHome) {
      try {
        const server = await this.homeServer(home);
        for (let i = 0; i < entries.length; i += MOVE_CHUNK_OBJECTS) {
          const part = entries.slice(i, i + MOVE_CHUNK_OBJECTS);
          if (server?.id === this.me.id) await this.setHomeReplicas(part);
          else if (server) await this.peers.setHomeReplicas(server, { entries: part });
        }
      } catch (e) {
        this.log.warn({ home, objects: entries.length, err: (e as Error).message }, 'home directory replicas not updated');
      }
    }
  }

  /** Home side: records replica sets (the master must be the one on record). */
  async setHomeReplicas(entries: { oid: string; master: number; replicas: number[] }[]): Promise<void> {
    const ok = entries.filter((e) => (this.engine.directoryOf(e.oid)?.master ?? oidHomeNode(e.oid)) === e.master);
    await this.engine.setDirectory(ok);
  }

  /** Asks each object's home to point at its new master, then drops the forward pointers. */
  private async switchHomes(changes: MasterChange[]): Promise<void> {
    const byHome = new Map<string, { server: Member | undefined; changes: MasterChange[] }>();
    for (const c of changes) {
      const server = await this.homeServer(oidHomeNode(c.oid));
      const key = server?.id ?? `missing-${oidHomeNode(c.oid)}`;
      let g = byHome.get(key);
      if (!g) byHome.set(key, (g = { server, changes: [] }));
      g.changes.push(c);
    }
    for (const { server, changes: cs } of byHome.values()) {
      try {
        if (!server) throw new UnavailableError('home node is not available');
        if (server.id === this.me.id) await this.setMaster(cs);
        else await this.peers.setMaster(server, { changes: cs });
        await this.engine.clearForwards(cs.map((c) => c.oid));
      } catch (e) {
        // The forward pointers keep redirecting; the finisher retries the switch.
        this.log.warn({ err: (e as Error).message, objects: cs.length }, 'home directory switch deferred');
      }
    }
  }

  /**
   * After objects mastered here were deleted: the home directories that name this node as their
   * master drop the entry (as for an object on its home), or every later read would bounce between
   * the home, which points here, and this node, which points home, and end "kept moving" rather
   * than "not found". Before the delete is acknowledged, best effort: a failure only leaves those
   * redirects for an object that is gone either way.
   */
  async forgetDeleted(oids: string[]): Promise<void> {
    const away = oids.filter((oid) => oidHomeNode(oid) !== this.me.number && !this.engine.holds(oid));
    if (away.length > 0) await this.switchHomes(away.map((oid) => ({ oid, from: this.me.number, to: oidHomeNode(oid) })));
  }

  /** Finishes moves whose home switch did not happen (crash, home unreachable). */
  finishForwards(): Promise<void> {
    this.finishing ??= (async () => {
      const pending = this.engine.pendingForwards();
      if (pending.length === 0) return;
      // A forward pointer means the object was forgotten here: its copy on the target is the master
      // copy. Activate it there (again: it is idempotent) before the home directory points at it.
      const byTarget = groupBy(pending, (p) => [p.node]);
      const active: typeof pending = [];
      for (const [node, list] of byTarget) {
        const m = await this.member(node);
        if (!m) continue;
        try {
          for (const ds of this.engine.listDatasets()) await this.peers.activateInstall(m, { dataset: ds, oids: list.map((p) => p.oid), source: this.me.number });
          active.push(...list);
        } catch (e) {
          this.log.warn({ err: (e as Error).message, node, objects: list.length }, 'activation of moved objects deferred');
        }
      }
      if (active.length > 0) await this.switchHomes(active.map((p) => ({ oid: p.oid, from: this.me.number, to: p.node })));
    })().catch((e) => this.log.warn({ err: (e as Error).message }, 'finishing moves failed')).finally(() => {
      this.finishing = undefined;
    });
    return this.finishing;
  }

  /** Source side: what became of the moves of `oids` to `target` (asked by the target). */
  installStatus(oids: string[], target: number): { forwarded: string[]; kept: string[]; moving: string[] } {
    const out = { forwarded: [] as string[], kept: [] as string[], moving: [] as string[] };
    for (const oid of oids) {
      if (this.moving.has(oid)) out.moving.push(oid);
      else if (this.engine.forwardOf(oid) === target) out.forwarded.push(oid);
      else out.kept.push(oid); // still mastered here, or gone elsewhere: not the target's to serve
    }
    return out;
  }

  /**
   * Target side: copies installed by a move that was neither activated nor abandoned in time
   * (its source crashed, or gave up after a timeout while this node was paused) are settled by
   * asking the source: activated if it forgot them, dropped if it kept them.
   */
  checkInstalls(): Promise<void> {
    this.checking ??= (async () => {
      const now = Date.now();
      const pending = this.engine.pendingInstalls();
      for (const p of pending) if (!this.installSeen.has(p.oid)) this.installSeen.set(p.oid, now);
      for (const oid of this.installSeen.keys()) if (this.engine.installSourceOf(oid) === undefined) this.installSeen.delete(oid);
      const due = pending.filter((p) => now - this.installSeen.get(p.oid)! >= INSTALL_GRACE_MS);
      for (const [source, list] of groupBy(due, (p) => [p.source])) {
        const m = await this.member(source);
        if (!m) continue; // ask again once it is back
        const oids = list.map((p) => p.oid);
        for (const ds of this.engine.listDatasets()) {
          const mine = oids.filter((o) => this.engine.holds(o));
          if (mine.length === 0) break;
          const st = await this.peers.installStatus(m, { dataset: ds, oids: mine, target: this.me.number });
          if (st.forwarded.length > 0) await this.engine.activate(st.forwarded, source);
          if (st.kept.length > 0) {
            await this.engine.dropInstalls(ds, st.kept, source);
            this.log.warn({ source, objects: st.kept.length }, 'dropped copies of an abandoned move');
          }
          break; // one answer covers every dataset (the source answers by oid)
        }
      }
    })().catch((e) => this.log.warn({ err: (e as Error).message }, 'checking pending installs failed')).finally(() => {
      this.checking = undefined;
    });
    return this.checking;
  }

  /** Home side: compare-and-set of masters in this node's home directory. */
  async setMaster(changes: MasterChange[]): Promise<void> {
    if (this.handingOff) throw new UnavailableError('this home directory is being handed to another node; retry');
    const entries: { oid: string; master: number; replicas: number[] }[] = [];
    for (const c of changes) {
      const home = oidHomeNode(c.oid);
      const server = await this.homeServer(home);
      if (server && server.id !== this.me.id) throw Placement.redirectError({ oid: c.oid, node: server.number, address: server.address });
      const entry = this.engine.directoryOf(c.oid);
      const current = entry?.master ?? home;
      if (current === c.to) continue; // already done (a retried switch)
      if (current !== c.from) {
        throw new WriteConflictError(`object ${c.oid} is mastered by node ${current}, not ${c.from}`, { oid: c.oid });
      }
      entries.push({ oid: c.oid, master: c.to, replicas: entry?.replicas ?? [] });
    }
    await this.engine.setDirectory(entries);
  }

  async adoptHome(homes: number[], entries: { oid: string; master: number; replicas: number[] }[]): Promise<void> {
    // The entries handed over are the whole directory of those homes: any older entry kept here
    // (this node served one of them before: its own, given back after a cancelled drain) is stale.
    const given = new Set(entries.map((e) => e.oid));
    const wanted = new Set(homes);
    const stale = this.engine.directoryEntries().filter((e) => wanted.has(oidHomeNode(e.oid)) && !given.has(e.oid));
    if (stale.length > 0) await this.engine.setDirectory(stale.map((e) => ({ oid: e.oid, master: oidHomeNode(e.oid), replicas: [] })));
    await this.engine.adoptDirectory(entries);
    for (const h of homes) this.adopted.add(h);
    this.log.info({ homes, entries: entries.length }, 'adopted home directories');
  }

  // ------------------------------------------------------------------ drain

  /**
   * Moves everything this node masters to the other nodes (round-robin, so evenly), then hands
   * its home directory (and any it had adopted) to the lowest-numbered other node that is not
   * drained. Creates are refused from the start, and the drained state is recorded at the end.
   */
  /**
   * Moves everything away and hands the home directory over. One drain at a time: a call while
   * one runs waits for it (a drain sent again after a timeout must not run beside the first).
   */
  drain(): Promise<DrainResponse> {
    if (this.cancelling && !this.running) return Promise.reject(new UnavailableError('a cancel of this node\'s drain is in progress; retry the drain once it ends'));
    this.running ??= this.drainOnce().finally(() => (this.running = undefined));
    return this.running;
  }

  /** The drain stops here when it was cancelled: between moves, never within one. */
  private checkCancelled(): void {
    if (this.cancelRequested) {
      throw new DrainCancelledError(`the drain of node ${this.me.number} was cancelled; the objects it moved stay where they went`, { node: this.me.number });
    }
  }

  /**
   * Stops a running drain at its next safe point (the move in flight ends first, so no object is
   * ever half moved) and makes this node a ready member that takes new objects again. A drain
   * already past its last safe point (handing the home directory over) finishes first, and is
   * then undone like one that had finished: the home directory is taken back from the node that
   * serves it, and the drained state is cleared. Nothing running and nothing drained: no-op.
   */
  cancelDrain(): Promise<{ stopped: boolean; undrained: boolean }> {
    this.cancelling ??= (async () => {
      const running = this.running;
      if (running) {
        this.cancelRequested = true;
        await running.catch(() => undefined); // stopped (DrainCancelledError), failed, or finished
      }
      const stopped = running !== undefined;
      if (!this.drained && !this.membership.homeHandedOver) return { stopped, undrained: false };
      await this.undrain();
      return { stopped, undrained: true };
    })().finally(() => {
      this.cancelling = undefined;
      this.cancelRequested = false;
    });
    return this.cancelling;
  }

  /**
   * Makes a drained node ready again. Its home directory first: the node serving it hands it
   * back (ReturnHome) and removes homes/N from etcd, so every directory update after that lands
   * here; only then is the drained state cleared (data directory, then member key). A crash in
   * between leaves the node drained with its home back, which a cancel again finishes.
   */
  private async undrain(): Promise<void> {
    this.undraining = true;
    try {
      const home = this.me.number;
      const owner = await this.membership.meta.get(META_KEYS.home(home));
      if (owner !== undefined && owner !== this.me.id) {
        const server = (await this.membership.members(true)).find((m) => m.id === owner);
        if (!server) {
          throw new FailedPreconditionError(`node ${home} stays drained: its home directory is served by ${owner}, which is not a live member, so it cannot be taken back safely; retry once ${owner} is up`, { node: home });
        }
        try {
          await this.peers.returnHome(server, { home, nodeId: this.me.id });
        } catch (e) {
          throw new FailedPreconditionError(`node ${home} stays drained: node ${server.number} (${owner}), which serves its home directory, did not hand it back: ${(e as Error).message}`, { node: home });
        }
      } else if (owner === this.me.id) {
        await this.membership.meta.delete(META_KEYS.home(home));
      }
      await this.membership.invalidate();
      if (this.membership.homeHandedOver) throw new FailedPreconditionError(`node ${home} stays drained: its home directory is still recorded as handed over`, { node: home });
      if (this.opts.dataDir) clearDrained(this.opts.dataDir);
      this.drained = false;
      this.recording = undefined;
      this.successor = undefined;
      // Replica copies given up by the drain are not in their masters' sets any more; a new
      // replicate sends them again.
      this.released.clear();
      await this.membership.markReady();
      this.log.info({ node: home }, 'drain cancelled: a ready member again');
    } finally {
      this.undraining = false;
    }
  }

  /**
   * Hands home directory `home`, adopted by a drain, back to its own node `nodeId`, which asks
   * for it (it is being made ready again). Like a drain's hand-over: home directory updates here
   * wait (handingOff), the entries go to that node, homes/N is removed from etcd, then this
   * node's view is reloaded before updates are taken again (they are redirected there since).
   */
  async returnHome(home: number, nodeId: string): Promise<void> {
    const to = (await this.membership.members(true)).find((m) => m.id === nodeId);
    if (!to || to.number !== home) throw new InvalidArgumentError(`node ${nodeId} is not the live member with number ${home}`, { node: home });
    const owner = await this.membership.meta.get(META_KEYS.home(home));
    if (owner === undefined || owner === nodeId) return; // already back (a retry)
    if (owner !== this.me.id) throw new FailedPreconditionError(`home directory ${home} is served by ${owner}, not by this node`, { node: home });
    // A drain of this node hands over every home it serves, this one included: not both at once.
    if (this.running || this.handingOff) throw new UnavailableError('this node is handing its home directories over (it is being drained); retry', { node: home });
    this.handingOff = true;
    try {
      const entries = this.engine.directoryEntries().filter((e) => oidHomeNode(e.oid) === home);
      await this.peers.adoptHome(to, { homes: [home], entries });
      await this.membership.meta.delete(META_KEYS.home(home));
      this.adopted.delete(home);
      await this.membership.invalidate();
      this.log.info({ home, to: to.number, entries: entries.length }, 'handed a home directory back');
    } finally {
      this.handingOff = false;
    }
  }

  private async drainOnce(): Promise<DrainResponse> {
    // Drained nodes take nothing: neither objects nor a home directory (they may be removed next).
    const others = (await this.membership.members(true)).filter((m) => m.id !== this.me.id && m.state !== 'drained');
    if (others.length === 0) throw new InvalidArgumentError('cannot drain the only node of the cluster that is not drained');
    this.cancelRequested = false;
    this.draining = true;
    this.drainTotal = this.masteredCount();
    try {
      let moved = 0;
      let next = 0;
      for (let pass = 0; pass < DRAIN_MAX_PASSES; pass++) {
        let left = 0;
        for (const ds of this.engine.listDatasets()) {
          const oids = this.engine.oidsIn(ds);
          left += oids.length;
          // Chunks no larger than an even share, dealt round-robin, so every node gets about as much.
          const chunk = Math.max(1, Math.min(1000, Math.ceil(oids.length / others.length)));
          for (let i = 0; i < oids.length; i += chunk) {
            const target = others[next++ % others.length];
            const part = oids.slice(i, i + chunk).filter((o) => this.engine.masters(o));
            if (part.length === 0) continue;
            this.checkCancelled();
            const res = await this.move(ds, part, target.number, false);
            moved += res.moved.length;
          }
        }
        if (left === 0) break;
        if (pass === DRAIN_MAX_PASSES - 1) throw new UnavailableError(`drain did not converge: ${left} objects still arriving`);
      }
      // The last safe point: past it replica copies are given up and the home directory handed
      // over, so a cancel from here on waits for the end and undoes the drain instead.
      this.checkCancelled();
      await this.finishForwards();
      const copies = await this.releaseReplicaCopies();
      const successor = others.reduce((a, b) => (a.number <= b.number ? a : b));
      // The home directories this node serves now: its own unless an earlier drain handed it over
      // (its copy is stale since), and those it adopted.
      const homes = new Set<number>();
      if (!this.membership.homeHandedOver) homes.add(this.me.number);
      for (const [k, v] of await this.membership.meta.list(META_KEYS.homes)) if (v === this.me.id) homes.add(Number(k.slice(META_KEYS.homes.length)));
      if (homes.size > 0) {
        this.handingOff = true;
        this.successor = successor.number; // this node's view may show the hand-over (and record it) first
        try {
          const entries = this.engine.directoryEntries().filter((e) => homes.has(oidHomeNode(e.oid)));
          await this.peers.adoptHome(successor, { homes: [...homes], entries });
          for (const h of homes) await this.membership.meta.put(META_KEYS.home(h), successor.id);
          for (const h of homes) this.adopted.delete(h);
          await this.recordDrained(successor.number);
          await this.membership.invalidate();
        } finally {
          this.handingOff = false;
        }
      }
      await this.recordDrained(successor.number); // a drain again after a restart: nothing was handed over
      const homeSuccessor = (await this.membership.homeServer(this.me.number))?.number ?? successor.number;
      this.log.info({ moved, replicaCopiesReleased: copies, successor: homeSuccessor, homes: [...homes] }, 'drained');
      return { moved, homeSuccessor };
    } finally {
      this.draining = false;
    }
  }

  close(): void {
    if (this.finishTimer) clearInterval(this.finishTimer);
    this.replicaLeases.stop();
    this.peers.close();
  }
}

/** Stops an operation before its next durable step once its caller has given up. */
function checkDeadline(deadline: number | undefined, step: string): void {
  if (deadline !== undefined && Date.now() >= deadline) {
    throw new DeadlineExceededError(`the caller's deadline passed before ${step}; stopped there`);
  }
}


/**
 * The oids an object's state references (decoded with the SDK codec; no model classes needed).
 * The node stores states unread, so a client that bypassed the SDK may have written one nested
 * deeper than the codec takes: that is a LimitExceededError naming the object, before anything
 * is locked or moved.
 */
export function referencesOf(obj: StoredObject): string[] {
  const refs: string[] = [];
  try {
    decodeValue(obj.state, {
      stubFor: (oid) => {
        refs.push(oid);
        return {} as never;
      },
    });
  } catch (e) {
    if (e instanceof LimitExceededError) {
      throw new LimitExceededError(`object ${obj.oid} cannot be followed: ${e.message}`, { oid: obj.oid, limit: e.limit });
    }
    throw e;
  }
  return refs;
}
