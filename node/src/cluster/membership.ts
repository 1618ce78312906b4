import { InvalidArgumentError, MAX_NODE_NUMBER, UnavailableError, type Backend } from '@loam/sdk/wire';
import { META_KEYS, type MetaLease, type MetaStore } from '../meta/meta-store.js';
import type { Logger } from '../logger.js';
import { setTimeout as sleep } from 'node:timers/promises';

export interface Member {
  id: string;
  number: number;
  /** Where clients reach it (StoreService, health). */
  address: string;
  /**
   * Where other nodes reach it (NodeService, on the peer port, with the cluster secret). A
   * record without one (an older loam wrote it) leaves the node unreachable to its peers.
   */
  peerAddress?: string;
  startedAt: string;
  /** 'ready', or 'drained' once the node moved everything away (it takes no new objects). */
  state?: string;
  /**
   * The id of the member lease this record was written with: a new one each time the node
   * registers (a restart, or after its lease was lost). A master pushes replica copies naming
   * it, so a push sent before the replica lost its lease confirms nothing after.
   */
  incarnation?: string;
  /**
   * A random id of the node's process (Backend.instance), new at every start: clients name it in
   * their calls, so a process that later holds the same address refuses them. Absent: an older loam.
   */
  instance?: string;
}

/** What a node hears from its membership as it joins and leaves the metadata store's view. */
export interface MembershipHooks {
  /** True once the member key is written, false when its lease is lost (the node then re-registers). */
  onRegistered?(registered: boolean): void;
  /** A failure that retrying cannot fix (the node number belongs to another node): the node must stop. */
  onFatal?(err: Error): void;
}

/** Seconds a dead node's member key outlives it: how fast `backends()` forgets a dead node. */
export const MEMBER_TTL_SECONDS = 3;
/**
 * How long before its lease's certain end a node stops doing what it may do only while it is a
 * member (serving replica copies): room for clocks that run at slightly different rates.
 */
export const LEASE_MARGIN_MS = 300;
const REFRESH_MS = 500;
/** How long an explicit fresh read waits for the metadata store before using the last view. */
const FRESH_WAIT_MS = 1_000;
/** Backoff between attempts to reach the metadata store while joining. */
const RETRY_FIRST_MS = 200;
const RETRY_MAX_MS = 2_000;

/**
 * Runs `fn` until it succeeds, waiting with exponential backoff after each UnavailableError (the
 * metadata store is unreachable) and logging it; any other error is final. Undefined if `signal`
 * was aborted first. The waits keep the process alive: before the node listens they may be all
 * that does.
 */
async function retryUnavailable<T>(log: Logger, what: string, fn: () => Promise<T>, signal?: AbortSignal, failed: () => void = () => undefined): Promise<T | undefined> {
  for (let attempt = 1, delay = RETRY_FIRST_MS; !signal?.aborted; attempt++, delay = Math.min(delay * 2, RETRY_MAX_MS)) {
    try {
      return await fn();
    } catch (e) {
      if (!(e instanceof UnavailableError)) throw e;
      failed();
      // Every attempt at first, then every tenth: a long etcd outage must not flood the logs.
      if (attempt <= 10 || attempt % 10 === 0) log.warn({ attempt, retryInMs: delay, err: e.message }, `cannot ${what} yet: the metadata store is unreachable; retrying`);
      try {
        await sleep(delay, undefined, { signal });
      } catch {
        return undefined; // aborted
      }
    }
  }
  return undefined;
}

/**
 * This node's place in the cluster: its number (allocated once, first writer wins), its leased
 * member key (gone a few seconds after the node dies), and a short-lived view of the others.
 *
 * A node whose data directory already has a number starts without the metadata store: it serves
 * what it masters while `join` keeps trying to confirm the number, register and load a view in
 * the background. Until the first view arrives, anything that needs another node (or the home
 * directory's owner) fails with UnavailableError rather than being guessed.
 */
export class Membership {
  private lease?: MetaLease;
  private cache?: { at: number; members: Member[]; homes: Map<number, string> };
  private refreshing?: Promise<void>;
  private refreshTimer?: NodeJS.Timeout;
  private stopped = false;
  /** Aborted by leave(): ends the join loop's backoff wait at once. */
  private readonly stopSignal = new AbortController();
  private joining?: Promise<void>;
  /** Whether the metadata store has confirmed that `self.number` belongs to this node since it started. */
  private numberConfirmed: boolean;
  /** Whoever waits in `join` for the first outcome (joined, failed once, or fatal), until told. */
  private firstOutcome?: (r: boolean | Error) => void;

  private constructor(
    readonly meta: MetaStore,
    readonly self: Member,
    private readonly log: Logger,
    private readonly hooks: MembershipHooks,
    numberConfirmed: boolean,
  ) {
    this.numberConfirmed = numberConfirmed;
  }

  /**
   * Claims a node number for `id`: `wanted` if this data directory already has one (it must
   * still be ours), else the lowest free one.
   */
  static async claimNumber(meta: MetaStore, id: string, wanted?: number): Promise<number> {
    if (wanted !== undefined) {
      const r = await meta.createIfAbsent(META_KEYS.nodeNumber(wanted), id);
      if (r.value !== id) {
        throw new InvalidArgumentError(`node number ${wanted} of this data directory belongs to node ${r.value} in the metadata store: is the data directory a copy?`);
      }
      return wanted;
    }
    const taken = await meta.list(META_KEYS.nodeNumbers);
    for (const [k, v] of taken) if (v === id) return Number(k.slice(META_KEYS.nodeNumbers.length));
    for (let n = 1; n <= MAX_NODE_NUMBER; n++) {
      if (taken.has(META_KEYS.nodeNumber(n))) continue;
      const r = await meta.createIfAbsent(META_KEYS.nodeNumber(n), id);
      if (r.value === id) return n;
    }
    throw new InvalidArgumentError(`no free node number (limit ${MAX_NODE_NUMBER})`);
  }

  /**
   * A first start: only the metadata store can give a number, so this waits for it, retrying
   * with backoff (and logging) for as long as it takes; undefined if `signal` was aborted first.
   */
  static allocateNumber(meta: MetaStore, id: string, log: Logger, signal?: AbortSignal): Promise<number | undefined> {
    return retryUnavailable(log, 'allocate a node number for this new data directory', () => Membership.claimNumber(meta, id), signal);
  }

  /**
   * Joins the cluster: confirms the node number (unless `numberConfirmed`), writes the leased
   * member key and loads the first view, retrying in the background with backoff while the
   * metadata store is unreachable. Resolves with `joined` true once done, or false as soon as an
   * attempt failed or `waitMs` passed: the node then serves what it masters and joins later.
   * A number that belongs to another node rejects if found before that, else goes to
   * `hooks.onFatal`.
   */
  static async join(meta: MetaStore, self: Member, log: Logger, opts: { numberConfirmed?: boolean; waitMs?: number; hooks?: MembershipHooks } = {}): Promise<{ membership: Membership; joined: boolean }> {
    const m = new Membership(meta, self, log, opts.hooks ?? {}, opts.numberConfirmed ?? false);
    // From the start, so a view arrives as soon as etcd answers, even while registering retries.
    m.refreshTimer = setInterval(() => void m.refresh().catch(() => undefined), REFRESH_MS);
    m.refreshTimer.unref();
    let timer: NodeJS.Timeout | undefined;
    const outcome = await new Promise<boolean | Error>((resolve) => {
      m.firstOutcome = resolve;
      timer = setTimeout(() => m.settleFirst(false), opts.waitMs ?? 3_000);
      void m.ensureJoined();
    }).finally(() => clearTimeout(timer));
    if (outcome instanceof Error) {
      await m.leave();
      throw outcome;
    }
    return { membership: m, joined: outcome };
  }

  private settleFirst(r: boolean | Error): boolean {
    const f = this.firstOutcome;
    this.firstOutcome = undefined;
    f?.(r);
    return f !== undefined;
  }

  /** True while this node's member key is in the metadata store (as far as its lease knows). */
  get registered(): boolean {
    return this.lease !== undefined;
  }

  /** This node's incarnation: the id of its member lease; undefined while it has none. */
  get incarnation(): string | undefined {
    return this.lease?.id;
  }

  /**
   * True while this node's member key certainly exists (its lease is alive, with a margin): no
   * other node can have seen it leave, so none has dropped it from a replica set.
   */
  leaseCurrent(now = Date.now()): boolean {
    const l = this.lease;
    return l !== undefined && now < l.validUntil() - LEASE_MARGIN_MS;
  }

  /**
   * The one join loop, at start and after a lost lease: confirm the number, register, load the
   * view, retrying while the metadata store is unreachable.
   */
  private ensureJoined(): Promise<void> {
    this.joining ??= (async () => {
      let failures = 0;
      try {
        await retryUnavailable(this.log, 'join the cluster', async () => {
          if (!this.numberConfirmed) {
            await Membership.claimNumber(this.meta, this.self.id, this.self.number);
            this.numberConfirmed = true;
          }
          if (!this.lease) await this.register();
        }, this.stopSignal.signal, () => {
          if (failures++ === 0) this.settleFirst(false);
        });
      } catch (e) {
        if (!this.settleFirst(e as Error)) {
          this.log.fatal({ err: (e as Error).message }, 'cannot join the cluster');
          this.hooks.onFatal?.(e as Error);
        }
        return;
      } finally {
        this.joining = undefined;
      }
      if (this.stopped) return;
      await this.refresh().catch(() => undefined); // a view with this node in it; the timer retries
      this.settleFirst(true);
      this.log.info({ number: this.self.number, failedAttempts: failures }, 'joined the cluster');
    })();
    return this.joining;
  }

  private async register(): Promise<void> {
    const lease = await this.meta.lease(MEMBER_TTL_SECONDS);
    lease.onLost((err) => {
      if (this.lease !== lease) return; // a lease this node already gave up
      this.log.warn({ err: err.message }, 'membership lease lost; re-registering');
      this.lease = undefined;
      this.hooks.onRegistered?.(false);
      void this.ensureJoined();
    });
    this.self.incarnation = lease.id;
    try {
      await this.meta.put(META_KEYS.member(this.self.id), JSON.stringify(this.self), lease);
    } catch (e) {
      // The lease was granted and keeps itself alive: give it back, or every retry leaks one.
      await lease.revoke().catch(() => undefined);
      throw e;
    }
    if (this.stopped) {
      await lease.revoke().catch(() => undefined); // stopped while registering: leave no member key
      return;
    }
    this.lease = lease;
    this.hooks.onRegistered?.(true);
  }

  /**
   * Reloads the view of members and home owners. It runs in the background every
   * REFRESH_MS, so requests never wait on the metadata store: when etcd is unreachable, routing
   * goes on with the last view (addresses rarely change; a wrong guess only costs a redirect).
   */
  private refresh(): Promise<void> {
    this.refreshing ??= (async () => {
      try {
        const [raw, homesRaw] = await Promise.all([this.meta.list(META_KEYS.members), this.meta.list(META_KEYS.homes)]);
        const members: Member[] = [];
        for (const v of raw.values()) {
          try {
            members.push(JSON.parse(v) as Member);
          } catch {
            this.log.warn({ value: v.slice(0, 100) }, 'ignoring a malformed member key');
          }
        }
        members.sort((a, b) => a.number - b.number);
        const homes = new Map<number, string>();
        for (const [k, v] of homesRaw) homes.set(Number(k.slice(META_KEYS.homes.length)), v);
        this.cache = { at: Date.now(), members, homes };
        // Only a drain hands a home directory over: whatever this node remembers, it was drained
        // (e.g. it crashed between the hand-over and recording it in its data directory).
        if (this.homeHandedOver && this.self.state !== 'drained') queueMicrotask(() => this.onHomeHandedOver?.());
      } catch (e) {
        this.log.debug({ err: (e as Error).message }, 'member view not refreshed; using the last one');
        if (!this.cache) throw e;
      }
    })().finally(() => {
      this.refreshing = undefined;
    });
    return this.refreshing;
  }

  /**
   * The last view. Before the first one (etcd unreachable since this node started) it waits a
   * moment for a refresh, then fails typed: without it this node cannot know where another node
   * is, nor whether its own home directory was handed over, and a guess could answer "not found"
   * for an object that exists, or drop a replica as gone.
   */
  private async view(): Promise<{ members: Member[]; homes: Map<number, string> }> {
    if (!this.cache) await this.refreshWithin(FRESH_WAIT_MS);
    if (!this.cache) {
      throw new UnavailableError('this node has no view of the cluster yet (the metadata store has been unreachable since it started): it serves only the objects it masters');
    }
    return this.cache;
  }

  /** Reloads the view now (after this node changed it). */
  async invalidate(): Promise<void> {
    // A refresh already running may have read the store before the change: wait for it, then
    // read again, so the view returned is at least as new as the caller's write.
    await this.refreshing?.catch(() => undefined);
    await this.refresh();
  }

  /** The live members; `fresh` reads the metadata store now (falling back to the last view). */
  async members(fresh = false): Promise<Member[]> {
    if (fresh) await this.refreshWithin(FRESH_WAIT_MS);
    return (await this.view()).members;
  }

  /** Refreshes, but waits at most `ms` (etcd may be unreachable, or slow to say so). */
  private async refreshWithin(ms: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.refresh().catch(() => undefined),
      new Promise<void>((r) => (timer = setTimeout(r, ms))),
    ]).finally(() => clearTimeout(timer));
  }

  async backends(): Promise<Backend[]> {
    return (await this.members(true)).map((m) => ({ id: m.id, number: m.number, address: m.address, state: m.state ?? 'ready', instance: m.instance ?? '' }));
  }

  /** The live member that serves the home directory of node number `home`, if any. */
  async homeServer(home: number): Promise<Member | undefined> {
    const find = (v: { members: Member[]; homes: Map<number, string> }) => {
      const owner = v.homes.get(home);
      // This node serves its own home unless it handed it over, registered or not (yet).
      if (owner === this.self.id || (owner === undefined && home === this.self.number)) return this.self;
      return owner !== undefined ? v.members.find((m) => m.id === owner) : v.members.find((m) => m.number === home);
    };
    const found = find(await this.view());
    if (found) return found;
    await this.refreshWithin(FRESH_WAIT_MS); // a node that just joined: look once more
    return find(await this.view());
  }

  async byNumber(n: number): Promise<Member | undefined> {
    if (n === this.self.number) return this.self;
    const found = (await this.view()).members.find((m) => m.number === n);
    if (found) return found;
    await this.refreshWithin(FRESH_WAIT_MS);
    return (await this.view()).members.find((m) => m.number === n);
  }

  /** Member `n` as the view has it, read again from the store if its incarnation is not `expected`. */
  async byIncarnation(n: number, expected: string): Promise<Member | undefined> {
    const m = await this.byNumber(n);
    if (m?.incarnation === expected) return m;
    await this.refreshWithin(FRESH_WAIT_MS);
    const again = (await this.view()).members.find((x) => x.number === n);
    return again?.incarnation === expected ? again : undefined;
  }

  /** Called when a view shows this node's home directory served by another node, and the node does not say drained yet. */
  onHomeHandedOver?: () => void;

  /** True when the last view says another node serves this node's home directory (it was drained). */
  get homeHandedOver(): boolean {
    const owner = this.cache?.homes.get(this.self.number);
    return owner !== undefined && owner !== this.self.id;
  }

  /**
   * Home number -> number of the live member that serves it, for every home directory handed
   * over by a drain (clients route objects of a removed node's home there).
   */
  async homeServers(): Promise<{ home: number; node: number }[]> {
    const v = await this.view();
    const out: { home: number; node: number }[] = [];
    for (const [home, id] of v.homes) {
      const m = id === this.self.id ? this.self : v.members.find((x) => x.id === id);
      if (m) out.push({ home, node: m.number });
    }
    return out.sort((a, b) => a.home - b.home);
  }

  /** True when the home directory of node `home` was handed over (only a drain does that). */
  async homeHandedOverBy(home: number): Promise<boolean> {
    return (await this.view()).homes.has(home);
  }

  /** Records in the member key that this node is drained (clients then create elsewhere). */
  async markDrained(): Promise<void> {
    this.self.state = 'drained';
    if (this.lease) await this.meta.put(META_KEYS.member(this.self.id), JSON.stringify(this.self), this.lease);
    await this.invalidate();
  }

  /** Records in the member key that this node is a ready member again (a drain was cancelled). */
  async markReady(): Promise<void> {
    this.self.state = 'ready';
    if (this.lease) await this.meta.put(META_KEYS.member(this.self.id), JSON.stringify(this.self), this.lease);
    await this.invalidate();
  }

  /** Removes this node's member key at once (a clean stop does not wait for the lease to expire). */
  async leave(): Promise<void> {
    this.stopped = true;
    this.stopSignal.abort();
    if (this.refreshTimer) clearInterval(this.refreshTimer);
    const lease = this.lease;
    this.lease = undefined;
    await lease?.revoke().catch(() => undefined);
  }
}
