import { InvalidArgumentError, MAX_NODE_NUMBER, type Backend } from '@loam/sdk/wire';
import { META_KEYS, type MetaLease, type MetaStore } from '../meta/meta-store.js';
import type { Logger } from '../logger.js';

export interface Member {
  id: string;
  number: number;
  address: string;
  startedAt: string;
  /** 'ready', or 'drained' once the node moved everything away (it takes no new objects). */
  state?: string;
}

/** Seconds a dead node's member key outlives it: how fast `backends()` forgets a dead node. */
export const MEMBER_TTL_SECONDS = 3;
const REFRESH_MS = 500;
/** How long an explicit fresh read waits for the metadata store before using the last view. */
const FRESH_WAIT_MS = 1_000;

/**
 * This node's place in the cluster: its number (allocated once, first writer wins), its leased
 * member key (gone a few seconds after the node dies), and a short-lived view of the others.
 */
export class Membership {
  private lease?: MetaLease;
  private cache?: { at: number; members: Member[]; homes: Map<number, string> };
  private refreshing?: Promise<void>;
  private refreshTimer?: NodeJS.Timeout;
  private stopped = false;
  private rejoining = false;

  private constructor(
    readonly meta: MetaStore,
    readonly self: Member,
    private readonly log: Logger,
  ) {}

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

  static async join(meta: MetaStore, self: Member, log: Logger): Promise<Membership> {
    const m = new Membership(meta, self, log);
    await m.register();
    await m.refresh();
    m.refreshTimer = setInterval(() => void m.refresh().catch(() => undefined), REFRESH_MS);
    m.refreshTimer.unref();
    return m;
  }

  private async register(): Promise<void> {
    const lease = await this.meta.lease(MEMBER_TTL_SECONDS);
    lease.onLost((err) => {
      this.log.warn({ err: err.message }, 'membership lease lost; re-registering');
      this.lease = undefined;
      void this.rejoin();
    });
    await this.meta.put(META_KEYS.member(this.self.id), JSON.stringify(this.self), lease);
    this.lease = lease;
  }

  /** Keeps trying to register again after the lease was lost (etcd down, partition). */
  private async rejoin(): Promise<void> {
    if (this.rejoining) return;
    this.rejoining = true;
    try {
      for (let delay = 200; !this.stopped && !this.lease; delay = Math.min(delay * 2, 2000)) {
        try {
          await this.register();
          this.log.info('membership restored');
        } catch (e) {
          this.log.warn({ err: (e as Error).message }, 'cannot re-register yet');
          await new Promise((r) => setTimeout(r, delay).unref());
        }
      }
    } finally {
      this.rejoining = false;
    }
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
      } catch (e) {
        this.log.debug({ err: (e as Error).message }, 'member view not refreshed; using the last one');
        if (!this.cache) throw e;
      }
    })().finally(() => {
      this.refreshing = undefined;
    });
    return this.refreshing;
  }

  private async view(): Promise<{ members: Member[]; homes: Map<number, string> }> {
    if (!this.cache) await this.refresh();
    return this.cache!;
  }

  /** Reloads the view now (after this node changed it). */
  async invalidate(): Promise<void> {
    await this.refresh();
  }

  /** The live members; `fresh` reads the metadata store now (falling back to the last view). */
  async members(fresh = false): Promise<Member[]> {
    if (fresh) await this.refreshWithin(FRESH_WAIT_MS);
    return (await this.view()).members;
  }

  /** Refreshes, but waits at most `ms` when a view exists (etcd may be unreachable). */
  private async refreshWithin(ms: number): Promise<void> {
    if (!this.cache) return this.refresh();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.refresh().catch(() => undefined),
      new Promise<void>((r) => (timer = setTimeout(r, ms))),
    ]).finally(() => clearTimeout(timer));
  }

  async backends(): Promise<Backend[]> {
    return (await this.members(true)).map((m) => ({ id: m.id, number: m.number, address: m.address, state: m.state ?? 'ready' }));
  }

  /** The live member that serves the home directory of node number `home`, if any. */
  async homeServer(home: number): Promise<Member | undefined> {
    const find = (v: { members: Member[]; homes: Map<number, string> }) => {
      const owner = v.homes.get(home);
      return owner !== undefined ? v.members.find((m) => m.id === owner) : v.members.find((m) => m.number === home);
    };
    const found = find(await this.view());
    if (found) return found;
    await this.refreshWithin(FRESH_WAIT_MS); // a node that just joined: look once more
    return find(await this.view());
  }

  async byNumber(n: number): Promise<Member | undefined> {
    const found = (await this.view()).members.find((m) => m.number === n);
    if (found) return found;
    await this.refreshWithin(FRESH_WAIT_MS);
    return (await this.view()).members.find((m) => m.number === n);
  }

  /** Records in the member key that this node is drained (clients then create elsewhere). */
  async markDrained(): Promise<void> {
    this.self.state = 'drained';
    if (this.lease) await this.meta.put(META_KEYS.member(this.self.id), JSON.stringify(this.self), this.lease);
    await this.invalidate();
  }

  /** Removes this node's member key at once (a clean stop does not wait for the lease to expire). */
  async leave(): Promise<void> {
    this.stopped = true;
    if (this.refreshTimer) clearInterval(this.refreshTimer);
    const lease = this.lease;
    this.lease = undefined;
    await lease?.revoke().catch(() => undefined);
  }
}
