import type { Backend, ListBackendsResponse, ObjectRecord } from './wire.js';
import { LoamError, NodeDrainedError, RedirectError, UnavailableError, InvalidArgumentError } from './errors.js';
import { oidHomeNode } from './oid.js';
import { NodeConnection, type RpcOptions } from './rpc.js';

/** How many redirects one request follows before giving up (a loop means a moving object). */
export const MAX_HOPS = 4;
const LOCATION_CACHE_LIMIT = 100_000;
const MEMBER_REFRESH_MS = 500;
/**
 * A client in use relearns the members this often in the background: a node that restarted on
 * a new address (a new Pod IP) is found while another node still answers, not only once every
 * address it knew is dead (a rolling restart moves every node, one at a time).
 */
const MEMBER_BACKGROUND_REFRESH_MS = 1000;
/** How long a call waits for a node that was unreachable to come back before failing. */
const RECONNECT_WAIT_MS = 3000;
/** How long a member refresh waits for its first node before asking the others too. */
const HEDGE_MS = 250;

/** A connection is to one node process at one address (see Router.conn). */
function connKey(address: string, instance: string): string {
  return instance ? `${address}#${instance}` : address;
}

/**
 * Which node to ask about what. Knows the cluster's members (learned from any node), keeps one
 * connection per node, and caches where objects live; an object is first looked for on its
 * home node (the number in its oid), and a typed redirect corrects the cache.
 */
export class Router {
  private readonly conns = new Map<string, NodeConnection>();
  private readonly members = new Map<number, Backend>();
  private readonly locations = new Map<string, number>();
  /** Home number -> the node serving that home directory, where a drain handed it over. */
  private readonly homes = new Map<number, number>();
  /** Nodes the last member list says are drained (a cancelled drain makes one ready again). */
  private readonly drained = new Set<number>();
  /** Nodes that refused a create as drained (while a drain runs the list still says ready). */
  private readonly refused = new Set<number>();
  private lastRefresh = 0;
  /** The node whose ListBackends answered last: asked first next time. */
  private preferred?: NodeConnection;
  private refreshing?: Promise<void>;
  /**
   * The addresses connect() was given, asked (with no process named: whoever is there now) when
   * no known node process answers: e.g. every node restarted, on its old address or a new one.
   */
  private readonly seedAddresses: string[];

  constructor(
    readonly seed: NodeConnection,
    readonly seedBackend: Backend,
    private readonly rpc: RpcOptions,
    seedAddresses: string[] = [],
  ) {
    this.seedAddresses = seedAddresses.length > 0 ? seedAddresses : [seed.address];
    this.conns.set(connKey(seed.address, seed.instance), seed);
    this.members.set(seedBackend.number, seedBackend);
    if (seedBackend.state === 'drained') this.drained.add(seedBackend.number);
  }

  /**
   * The connection to the node process `instance` at `address` (any process there without one):
   * keyed by both, so a call never goes to whoever holds an address now in the name of the node
   * that held it before.
   */
  conn(address: string, instance = ''): NodeConnection {
    const key = connKey(address, instance);
    let c = this.conns.get(key);
    if (!c) {
      c = new NodeConnection(address, this.rpc, instance);
      this.conns.set(key, c);
    }
    return c;
  }

  /** The connection for member `b`. */
  connOf(b: Backend): NodeConnection {
    return this.conn(b.address, b.instance ?? '');
  }

  backend(n: number): Backend | undefined {
    return this.members.get(n);
  }

  knownBackends(): Backend[] {
    return [...this.members.values()].sort((a, b) => a.number - b.number);
  }

  /** Learns the members again (at most every 500 ms unless forced). */
  async refresh(force = false): Promise<Backend[]> {
    if (!force && Date.now() - this.lastRefresh < MEMBER_REFRESH_MS) return this.knownBackends();
    this.refreshing ??= this.listFromAny().then((res) => {
      const before = [...this.members.keys()];
      this.members.clear();
      this.drained.clear();
      for (const b of res.backends) {
        this.members.set(b.number, b);
        if (b.state === 'drained') this.drained.add(b.number);
      }
      this.homes.clear();
      for (const h of res.homes) {
        this.homes.set(h.home, h.node);
        this.drained.add(h.home); // only a drain hands a home directory over
      }
      // Locations cached on a node that left would send requests to a dead node first: forget
      // them, so those objects are looked for through their home again.
      const gone = new Set(before.filter((n) => !this.members.has(n)));
      if (gone.size > 0) for (const [oid, n] of this.locations) if (gone.has(n)) this.locations.delete(oid);
      // A node that moved (or left) leaves a channel that keeps dialling its old address: close it.
      const live = new Set([...this.members.values()].map((b) => connKey(b.address, b.instance ?? '')));
      for (const [key, c] of this.conns) {
        if (!live.has(key) && c !== this.seed && c !== this.preferred) {
          c.close();
          this.conns.delete(key);
        }
      }
      this.lastRefresh = Date.now();
    }).finally(() => {
      this.refreshing = undefined;
    });
    await this.refreshing;
    return this.knownBackends();
  }

  /**
   * ListBackends from the node that answered last time (the seed at first). If it has not
   * answered within HEDGE_MS, or failed, every other known node is asked too, at once, and the
   * first answer wins: a hung node costs a quarter second, not a call deadline per node.
   */
  private listFromAny(): Promise<ListBackendsResponse> {
    const first = this.preferred ?? this.seed;
    return new Promise((resolve, reject) => {
      let pending = 0;
      let hedged = false;
      let settled = false;
      let lastErr: unknown;
      const fail = () => {
        settled = true;
        reject(lastErr instanceof LoamError ? lastErr : new UnavailableError('no node of the cluster answers'));
      };
      const ask = (c: NodeConnection) => {
        pending++;
        c.listBackends({}).then((res) => {
          if (settled) return;
          if (!c.instance && !this.sameCluster(res)) {
            // Whoever holds a seed address now is not a node of this cluster (the address was
            // reused): its member list would send this client's writes to another DataStore.
            pending--;
            lastErr = new UnavailableError(`the process at ${c.address} is not a node of this cluster`);
            if (!hedged) hedge();
            else if (pending === 0) fail();
            return;
          }
          settled = true;
          clearTimeout(timer);
          this.preferred = c;
          resolve(res);
        }, (e: unknown) => {
          pending--;
          lastErr = e;
          if (settled) return;
          if (!hedged) hedge();
          else if (pending === 0) fail();
        });
      };
      const hedge = () => {
        if (hedged || settled) return;
        hedged = true;
        clearTimeout(timer);
        // Every member as the last list has it, every connection still open, and (last resort,
        // when every node moved) the addresses connect() was given.
        const candidates = new Set([...this.conns.values(), ...[...this.members.values()].map((b) => this.connOf(b)), ...this.seedAddresses.map((a) => this.conn(a))]);
        candidates.delete(first);
        for (const c of candidates) ask(c);
        if (pending === 0) fail();
      };
      const timer = setTimeout(hedge, HEDGE_MS);
      ask(first);
    });
  }

  /** True when a member list shares a node id with the one this client has (or it has none). */
  private sameCluster(res: ListBackendsResponse): boolean {
    const known = new Set([...this.members.values()].map((b) => b.id).filter(Boolean));
    return known.size === 0 || res.backends.some((b) => known.has(b.id));
  }

  markDrained(n: number): void {
    this.refused.add(n);
  }

  isDrained(n: number): boolean {
    return this.drained.has(n) || this.refused.has(n);
  }

  /**
   * Where new objects go by default: the node first reached, unless it was drained or has left
   * (then the lowest-numbered known node that was not drained).
   */
  creationNode(): number {
    const seed = this.seedBackend.number;
    if (!this.isDrained(seed) && this.members.has(seed)) return seed;
    const live = this.knownBackends().find((b) => !this.isDrained(b.number));
    return live?.number ?? seed;
  }

  /** The node that serves home directory `home`: its own node, unless a drain handed it over. */
  homeServerOf(home: number): number {
    return this.homes.get(home) ?? home;
  }

  /** The node number an object is believed to be on: where it was last seen, else whoever serves its home. */
  nodeOf(oid: string): number {
    return this.locations.get(oid) ?? this.homeServerOf(oidHomeNode(oid));
  }

  learn(oid: string, node: number, address?: string): void {
    if (this.homeServerOf(oidHomeNode(oid)) === node) this.locations.delete(oid);
    else {
      if (this.locations.size >= LOCATION_CACHE_LIMIT) this.locations.delete(this.locations.keys().next().value!);
      this.locations.set(oid, node);
    }
    if (address && !this.members.has(node)) this.members.set(node, { id: '', number: node, address, state: 'ready', instance: '' });
  }

  /**
   * The member a request meant for node `n` goes to: `n`, or, once `n` has left after handing
   * its home directory over, the node that serves that directory now (it answers for the
   * objects, redirecting to where they are, and refuses creates for `n` as drained).
   */
  private target(n: number): Backend | undefined {
    const b = this.members.get(n);
    if (b) return b;
    const successor = this.homes.get(n);
    return successor !== undefined ? this.members.get(successor) : undefined;
  }

  /** The member for node `n` (see `target`), refreshing the member list once if it is unknown. */
  private async route(n: number): Promise<Backend> {
    let b = this.target(n);
    if (!b) {
      await this.refresh();
      b = this.target(n);
    }
    if (!b) throw new UnavailableError(`node ${n} is not a live member of the cluster`, { node: n });
    return b;
  }

  /** True when node `n` is a member as far as this client knows. */
  isMember(n: number): boolean {
    return this.members.has(n);
  }

  /** Resolves a backend given as id, number or address. */
  async resolveBackend(backend: string | number): Promise<Backend> {
    const find = () => this.knownBackends().find((b) => b.number === backend || b.id === backend || b.address === backend);
    let b = find();
    if (!b) {
      await this.refresh(true);
      b = find();
    }
    if (!b) throw new InvalidArgumentError(`no backend ${JSON.stringify(backend)} in the cluster`);
    return b;
  }

  /**
   * Runs `call` against node `n`, following redirects (via `onRedirect`, which may pick another
   * node) and retrying once on another view of the members when the node is unreachable.
   */
  async withNode<T>(n: number, call: (c: NodeConnection, node: number) => Promise<T>, followRedirects = true): Promise<T> {
    let node = n;
    let retriedUnavailable = false;
    if (Date.now() - this.lastRefresh >= MEMBER_BACKGROUND_REFRESH_MS && !this.refreshing) void this.refresh().catch(() => undefined);
    for (let hop = 0; ; hop++) {
      try {
        const b = this.target(node) ?? (await this.route(node)); // the usual case: no extra await
        return await call(this.connOf(b), b.number);
      } catch (e) {
        if (followRedirects && e instanceof RedirectError && e.node !== undefined && hop < MAX_HOPS) {
          if (e.oid) this.learn(e.oid, e.node, e.address);
          else if (e.address && !this.members.has(e.node)) this.members.set(e.node, { id: '', number: e.node, address: e.address, state: 'ready', instance: '' });
          node = e.node;
          continue;
        }
        if (e instanceof UnavailableError && !(e instanceof NodeDrainedError) && !retriedUnavailable) {
          // The node may have restarted (same address) or moved (new member list): look again,
          // give the channel a moment to reconnect, and try once more.
          retriedUnavailable = true;
          await this.refresh(true).catch(() => undefined);
          const b = this.target(node);
          if (b) await this.connOf(b).waitForReady(RECONNECT_WAIT_MS).catch(() => undefined);
          continue;
        }
        throw e;
      }
    }
  }

  /**
   * Fetches objects from wherever they are: one Get per node, redirects followed per oid.
   * Resolves each oid to its record, or undefined when it does not exist.
   */
  async fetch(dataset: string, oids: string[], maxBatch: number, readFromAny = false): Promise<Map<string, ObjectRecord | undefined>> {
    const out = new Map<string, ObjectRecord | undefined>();
    let todo = oids.map((oid) => ({ oid, hops: 0 }));
    while (todo.length > 0) {
      const byNode = new Map<number, { oid: string; hops: number }[]>();
      for (const t of todo) {
        // Any copy will do: ask the node this client reached first (it may hold a replica).
        const n = readFromAny && t.hops === 0 ? this.seedBackend.number : this.nodeOf(t.oid);
        let list = byNode.get(n);
        if (!list) byNode.set(n, (list = []));
        list.push(t);
      }
      const next: { oid: string; hops: number }[] = [];
      const fetchFrom = async ([n, items]: [number, { oid: string; hops: number }[]]) => {
        for (let i = 0; i < items.length; i += maxBatch) {
          const chunk = items.slice(i, i + maxBatch);
          let servedBy = n;
          const res = await this.withNode(n, (c, at) => ((servedBy = at), c.get({ dataset, oids: chunk.map((x) => x.oid), readFromAny })));
          for (const o of res.objects) {
            out.set(o.oid, o);
            // Only what differs from the route taken (most objects are where their home says).
            if (!readFromAny && (servedBy !== n || servedBy !== this.homeServerOf(oidHomeNode(o.oid)))) this.learn(o.oid, servedBy);
          }
          for (const m of res.missing) out.set(m, undefined);
          for (const r of res.redirects) {
            const item = chunk.find((x) => x.oid === r.oid)!;
            if (!r.address) throw new UnavailableError(`node ${r.node}, which holds object ${r.oid}, is not available`, { oid: r.oid, node: r.node });
            if (item.hops >= MAX_HOPS) throw new UnavailableError(`object ${r.oid} kept moving: gave up after ${MAX_HOPS} redirects`, { oid: r.oid });
            this.learn(r.oid, r.node, r.address);
            next.push({ oid: r.oid, hops: item.hops + 1 });
          }
        }
      };
      if (byNode.size === 1) await fetchFrom(byNode.entries().next().value!);
      else await Promise.all([...byNode].map(fetchFrom));
      todo = next;
    }
    return out;
  }

  /** How long one call may take, ms. */
  get deadlineMs(): number {
    return this.rpc.deadlineMs;
  }

  close(): void {
    for (const c of this.conns.values()) c.close();
    this.conns.clear();
  }
}
