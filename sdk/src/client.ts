import type { Backend, CommitRequest, ObjectRecord, Limits, HelloResponse } from './wire.js';
import { DEFAULT_LIMITS, validateAlias, validateDatasetName } from './limits.js';
import { CommitUnknownError, ConflictError, DeadlineExceededError, InvalidArgumentError, NotFoundError, LoamError, NodeDrainedError, RedirectError, UnavailableError } from './errors.js';
import { isOid, newTxid, oidHomeNode } from './oid.js';
import { Router, MAX_HOPS } from './router.js';
import { Persistent, metaOf, instantiate, assignFields } from './model.js';
import { encodeState, decodeState } from './codec.js';
import { Ref, parseUrl, DEFAULT_URL } from './ref.js';
import { NodeConnection, type RpcOptions } from './rpc.js';
import { probeHttp2 } from './probe.js';
import { ObjectSpace } from './object-space.js';
import { Transaction } from './transaction.js';

export interface ConnectOptions {
  /** Deadline of every call to a node, ms (default 30 s). */
  deadlineMs?: number;
  /** How long connect() waits for the node to answer, ms (default 10 s). */
  connectTimeoutMs?: number;
}

export interface TransactionOptions {
  /** How many times `fn` is run again after a conflict (default 5; 0 surfaces the first conflict). */
  retries?: number;
  /** First backoff delay, ms (default 10; doubles each retry, with jitter, up to 1 s). */
  backoffMs?: number;
}

export interface BackendInfo {
  id: string;
  number: number;
  address: string;
  state: string;
}

/** One node as `Client.status()` found it: its own answer, or why there was none. */
export type NodeStatus = NodeStatusAnswer | NodeUnreachable;

export interface NodeStatusAnswer extends BackendInfo {
  reachable: true;
  /** "ready", "drained" or "stopping", as the node says. */
  state: string;
  /** Objects stored on the node, replica copies included. */
  objects: number;
  /** Bytes of its log on local disk. */
  diskBytes: number;
  /** While a drain of this node runs: what it has left to move, of what it held when it began. */
  draining: { objectsLeft: number; objectsTotal: number } | null;
  /** Its S3 tier, or null without one. */
  s3: { backlogBytes: number; backlogOldestMs: number; backlogSegments: number; generation: number; fenced: boolean } | null;
}

export interface NodeUnreachable extends BackendInfo {
  reachable: false;
  /** Why: the error of the Status call (the node is down, hung past the timeout, joining ...). */
  error: string;
}

/**
 * Connects to a Loam DataStore. `url` is `loam://host:port/dataset`, or several of them (seed
 * nodes of one cluster, as an array or comma-separated): all are probed at once, the first that
 * answers is used and the client learns the other nodes from it. Without `url`: the LOAM_URL
 * environment variable, then loam://127.0.0.1:7480/default.
 */
export async function connect(url?: string | string[], options: ConnectOptions = {}): Promise<Client> {
  const raw = url ?? process.env.LOAM_URL ?? DEFAULT_URL;
  const seeds = (Array.isArray(raw) ? raw : raw.split(',')).map((u) => u.trim()).filter(Boolean).map(parseUrl);
  if (seeds.length === 0) throw new InvalidArgumentError('connect() needs at least one loam:// URL');
  const dataset = seeds[0].dataset;
  if (seeds.some((s) => s.dataset !== dataset)) throw new InvalidArgumentError('all seed URLs must name the same dataset');
  validateDatasetName(dataset);
  const rpc = { deadlineMs: options.deadlineMs ?? 30_000, maxMessageBytes: DEFAULT_LIMITS.maxBatchBytes + 4 * 1024 * 1024 };
  const timeout = options.connectTimeoutMs ?? 10_000;
  const { ep, conn, hello } = await firstSeed(seeds, dataset, rpc, timeout);
  const limits = hello.limits ?? DEFAULT_LIMITS;
  const router = new Router(conn, hello.backend!, rpc, seeds.map((s) => `${s.host}:${s.port}`));
  return new Client(router, ep.host, ep.port, dataset, { ...DEFAULT_LIMITS, ...limits });
}

type Endpoint = ReturnType<typeof parseUrl>;
interface SeedAnswer { ep: Endpoint; conn: NodeConnection; hello: HelloResponse }

/**
 * Probes every seed at once and takes the first answer: one dead or hung seed costs nothing
 * while another answers, and all of them together cost one timeout, not one each. A typed
 * answer other than "unavailable" (an unknown dataset ...) is final. The connections of the
 * probes that lost are closed.
 */
function firstSeed(seeds: Endpoint[], dataset: string, rpc: RpcOptions, timeout: number): Promise<SeedAnswer> {
  const deadline = Date.now() + timeout;
  const stop = new AbortController();
  const attempt = async (ep: Endpoint): Promise<SeedAnswer> => {
    const address = `${ep.host}:${ep.port}`;
    await probeHttp2(address, deadline, stop.signal);
    const conn = new NodeConnection(address, rpc);
    try {
      // The channel's own first connection attempt can still fail (a node that has just
      // restarted on this port): without this, the call below would fail fast on it.
      await conn.waitForReady(Math.max(1, deadline - Date.now()));
      // Bounded by what is left of the timeout: a node that speaks HTTP/2 but never answers the
      // call must not hold connect() for a whole call deadline.
      const hello = await conn.hello({ dataset, clientVersion: '0.1.0' }, Math.max(1, Math.min(rpc.deadlineMs, deadline - Date.now())));
      if (!hello.backend) throw new LoamError('INTERNAL', 'node sent no identity');
      // From now on every call on it names the process that answered (see INSTANCE_HEADER).
      conn.instance = hello.backend.instance;
      return { ep, conn, hello };
    } catch (e) {
      conn.close();
      if (e instanceof DeadlineExceededError) throw new UnavailableError(`the Loam node at ${address} did not answer within ${timeout} ms`);
      throw e;
    }
  };
  return new Promise<SeedAnswer>((resolve, reject) => {
    let left = seeds.length;
    let settled = false;
    const failures: string[] = [];
    for (const ep of seeds) {
      attempt(ep).then(
        (answer) => {
          if (settled) return answer.conn.close(); // a slower seed: not needed
          settled = true;
          resolve(answer);
        },
        (e: unknown) => {
          if (settled) return;
          if (!(e instanceof UnavailableError)) {
            settled = true;
            reject(e);
            return;
          }
          failures.push(e.message);
          if (--left > 0) return;
          settled = true;
          reject(seeds.length === 1 ? e : new UnavailableError(`none of the ${seeds.length} seeds answered within ${timeout} ms: ${failures.join('; ')}`));
        },
      );
    }
  }).finally(() => stop.abort()); // ends the other probes (and closes their sockets) at once
}

/** What a commit carries, before the client adds the dataset, the commit id and the attempt. */
export type CommitOps = Omit<CommitRequest, 'dataset' | 'commitId' | 'attempt'>;

/**
 * After this error the commit may have been applied: the node stopped answering (or timed out)
 * after the request may have reached it, and did not say nothing was applied.
 */
function outcomeUnknown(e: unknown): boolean {
  if (e instanceof NodeDrainedError) return false;
  if (!(e instanceof UnavailableError) && !(e instanceof DeadlineExceededError)) return false;
  return !e.notApplied;
}

export interface Location {
  master: BackendInfo;
  replicas: BackendInfo[];
}

export class Client {
  readonly dataset: string;
  readonly host: string;
  readonly port: number;
  readonly limits: Limits;
  /** @internal */ readonly router: Router;
  /** @internal */ readonly space = new ObjectSpace(this);
  private readonly loader: BatchLoader;
  private readonly prefetched = new Map<string, Promise<Persistent>>();
  private closed = false;

  /** @internal use connect() */
  constructor(router: Router, host: string, port: number, dataset: string, limits: Limits) {
    this.router = router;
    this.host = host;
    this.port = port;
    this.dataset = dataset;
    this.limits = limits;
    this.loader = new BatchLoader(router, dataset, limits.maxBatchObjects);
  }

  /** @internal the connection of the node this client first reached */
  get conn(): NodeConnection {
    return this.router.seed;
  }

  get url(): string {
    return `loam://${this.host}:${this.port}/${this.dataset}`;
  }

  /** @internal the node number new objects are created on unless a backend is chosen */
  get homeNode(): number {
    return this.router.creationNode();
  }

  /** @internal */
  fetch(oid: string): Promise<ObjectRecord | undefined> {
    this.assertOpen();
    return this.loader.load(oid);
  }

  /**
   * @internal Sends one atomic commit where its objects live: to their node when they are all on
   * one, else as a distributed transaction (two-phase commit) coordinated by one of the nodes.
   * Creates go to the node their oids name. A redirect (an object was elsewhere) teaches the
   * location cache and the commit is split again, a bounded number of times.
   *
   * Exactly once: the commit carries an id (the txid for a distributed one), the same on every
   * attempt, and the node answers a retry with the first outcome instead of applying it again.
   * A failure that leaves the outcome unknown (the node stopped answering after the request may
   * have reached it) is retried with the same id, with backoff, until the deadline; then it is a
   * CommitUnknownError, which is never retried by running the transaction again.
   */
  async commitRaw(req: CommitOps): Promise<number[]> {
    this.assertOpen();
    let commitId = newTxid();
    const deadline = Date.now() + this.router.deadlineMs;
    let attempt = 0;
    let sent = false;
    /** An attempt ended without an answer: from then on retries go where it went, nowhere else. */
    let unknown = false;
    let sentParts: ReturnType<Client['splitByNode']> | undefined;
    let parts: ReturnType<Client['splitByNode']>;
    for (let hop = 0, retry = 0; ; hop++) {
      // Only the nodes the unanswered attempt went to can recognize this commit id.
      parts = unknown && sentParts ? sentParts : this.splitByNode(req);
      if (!unknown && hop === 0 && [...parts.keys()].some((n) => !this.router.isMember(n))) {
        // A node this client has not seen (or that left): learn the members and who serves the
        // homes of drained nodes first, so that no part is addressed to a node that is gone.
        await this.router.refresh().catch(() => undefined);
        parts = this.splitByNode(req);
      }
      try {
        if (parts.size <= 1) {
          const node = parts.size === 1 ? [...parts.keys()][0] : this.homeNode;
          const res = await this.router.withNode(node, (c) => {
            sent = true;
            sentParts = parts;
            return c.commitCoalesced({ dataset: this.dataset, ...req, commitId, attempt: attempt++ });
          }, false);
          return res.versions;
        }
        const list = [...parts];
        const res = await this.router.withNode(list[0][0], (c) => {
          sent = true;
          sentParts = parts;
          return c.commitMulti({
            dataset: this.dataset,
            txid: commitId,
            attempt: attempt++,
            parts: list.map(([node, p]) => ({ node, ops: { dataset: this.dataset, ...p.ops, commitId: '', attempt: 0 } })),
            aliasSets: req.aliasSets,
            aliasDeletes: req.aliasDeletes,
          });
        }, false);
        const versions: number[] = new Array(req.writes.length);
        list.forEach(([, p], i) => p.writeIndex.forEach((w, j) => (versions[w] = res.parts[i].versions[j])));
        return versions;
      } catch (e) {
        if (e instanceof RedirectError && e.oid && e.node !== undefined && hop < MAX_HOPS) {
          if (unknown || attempt > 1) {
            // An earlier attempt may have been applied on the node that now redirects (the object
            // moved since): the node asked next cannot know that commit id.
            throw new CommitUnknownError(`commit ${commitId}: its objects moved while its outcome was unknown`, { oid: e.oid }, { cause: e });
          }
          this.router.learn(e.oid, e.node, e.address);
          // Nothing was applied (a redirect is a definite answer): the commit goes out again,
          // split anew, under a new id, so no node confuses it with the attempt it refused.
          commitId = newTxid();
          continue;
        }
        if (sent && outcomeUnknown(e)) {
          unknown = true;
          if (Date.now() < deadline) {
            await new Promise((r) => setTimeout(r, Math.min(1000, 50 * 2 ** retry++) * (0.5 + Math.random() / 2)));
            continue; // the same commit id: applied at most once
          }
          throw new CommitUnknownError(`commit ${commitId} may or may not have been applied: ${(e as Error).message}`, {}, { cause: e });
        }
        throw e;
      }
    }
  }

  private splitByNode(req: CommitOps) {
    const parts = new Map<number, { ops: CommitOps; writeIndex: number[] }>();
    const part = (n: number) => {
      let p = parts.get(n);
      if (!p) parts.set(n, (p = { ops: { reads: [], writes: [], deletes: [], aliasSets: [], aliasDeletes: [] }, writeIndex: [] }));
      return p;
    };
    req.writes.forEach((w, i) => {
      const p = part(w.expectedVersion === 0 ? oidHomeNode(w.oid) : this.router.nodeOf(w.oid));
      p.ops.writes.push(w);
      p.writeIndex.push(i);
    });
    for (const d of req.deletes) part(this.router.nodeOf(d.oid)).ops.deletes.push(d);
    for (const r of req.reads) part(this.router.nodeOf(r.oid)).ops.reads.push(r);
    if (parts.size === 1) {
      const only = [...parts.values()][0];
      only.ops.aliasSets = req.aliasSets;
      only.ops.aliasDeletes = req.aliasDeletes;
    }
    return parts;
  }

  /**
   * Stores `obj` and every not-yet-persisted object it reaches, in one atomic batch, and sets
   * their `$oid`. Already persisted objects it reaches are stored as references, not rewritten.
   * On an object that is already persisted it acts as save().
   */
  async persist<T extends Persistent>(obj: T, options: { alias?: string; backend?: string | number } = {}): Promise<T> {
    if (options.alias !== undefined) validateAlias(options.alias, this.limits);
    const home = options.backend !== undefined
      ? (await this.router.resolveBackend(options.backend)).number
      : obj.$oid ? this.router.nodeOf(obj.$oid) : this.homeNode;
    const graph = this.space.encodeGraph([obj], home, this.limits);
    try {
      const versions = await this.commitRaw({
        reads: [], deletes: [], aliasDeletes: [],
        writes: graph.writes,
        aliasSets: options.alias !== undefined ? [{ alias: options.alias, oid: obj.$oid! }] : [],
      });
      this.space.committed(graph, versions);
    } catch (e) {
      graph.rollback();
      // The default node was drained (the oids named it, so they are made again for another).
      if (e instanceof NodeDrainedError && e.node !== undefined && options.backend === undefined) {
        this.router.markDrained(e.node);
        await this.router.refresh(true).catch(() => undefined);
        if (this.router.creationNode() !== e.node) return this.persist(obj, options);
      }
      throw e;
    }
    return obj;
  }

  /** Reads an object by oid or Ref (string or object); its references arrive as unloaded stubs. */
  async get<T extends Persistent = Persistent>(oidOrRef: string | Ref, options: { readFrom?: 'master' | 'any' } = {}): Promise<T> {
    const oid = this.oidOf(oidOrRef);
    const rec = options.readFrom === 'any'
      ? (await this.router.fetch(this.dataset, [oid], this.limits.maxBatchObjects, true)).get(oid)
      : await this.fetch(oid);
    if (!rec) throw new NotFoundError(`object ${oid} does not exist in dataset ${this.dataset}`, { oid, dataset: this.dataset });
    return this.space.materialize(rec) as T;
  }

  async getByAlias<T extends Persistent = Persistent>(alias: string): Promise<T> {
    validateAlias(alias, this.limits);
    this.assertOpen();
    const { oid } = await this.router.withNode(this.homeNode, (c) => c.getAlias({ dataset: this.dataset, alias }));
    return this.get<T>(oid);
  }

  /** Where an object lives: its master node and its replicas. */
  async locate(obj: Persistent | string | Ref): Promise<Location> {
    this.assertOpen();
    const oid = obj instanceof Persistent ? this.ownMeta(obj).oid! : this.oidOf(obj);
    const res = await this.router.withNode(this.router.nodeOf(oid), (c) => c.locate({ dataset: this.dataset, oid }));
    if (!res.master) throw new LoamError('INTERNAL', `node sent no master for ${oid}`);
    this.router.learn(oid, res.master.number, res.master.address);
    const info = (b: Backend): BackendInfo => ({ id: b.id, number: b.number, address: b.address, state: b.state });
    return { master: info(res.master), replicas: res.replicas.map(info) };
  }

  /** Fills an unloaded stub in place (same instance) and returns it; a loaded object is returned as is. */
  async load<T extends Persistent>(stub: T): Promise<T> {
    const m = this.ownMeta(stub);
    if (m.loaded) return stub;
    const rec = await this.fetch(m.oid!);
    if (!rec) throw new NotFoundError(`object ${m.oid} does not exist any more`, { oid: m.oid, dataset: this.dataset });
    return this.space.materialize(rec) as T;
  }

  /**
   * Writes `obj` if it was not changed by anyone since it was loaded or last saved
   * (WriteConflictError otherwise). New objects it now reaches are created in the same batch.
   */
  async save<T extends Persistent>(obj: T): Promise<T> {
    if (!(obj instanceof Persistent)) throw new InvalidArgumentError('save() takes a Persistent object');
    if (!obj.$oid) return this.persist(obj);
    this.ownMeta(obj);
    return this.persist(obj);
  }

  async delete(obj: Persistent): Promise<void> {
    const m = this.ownMeta(obj);
    if (!m.loaded) throw new InvalidArgumentError(`load object ${m.oid} before deleting it (its version is needed)`, { oid: m.oid });
    await this.commitRaw({ reads: [], writes: [], aliasSets: [], aliasDeletes: [], deletes: [{ oid: m.oid!, expectedVersion: m.version }] });
    this.space.deleted(obj);
  }

  async addAlias(obj: Persistent, alias: string): Promise<void> {
    validateAlias(alias, this.limits);
    const m = this.ownMeta(obj);
    await this.commitRaw({ reads: [], writes: [], deletes: [], aliasDeletes: [], aliasSets: [{ alias, oid: m.oid! }] });
  }

  async deleteAlias(alias: string): Promise<void> {
    validateAlias(alias, this.limits);
    await this.commitRaw({ reads: [], writes: [], deletes: [], aliasSets: [], aliasDeletes: [alias] });
  }

  async aliases(): Promise<{ alias: string; oid: string }[]> {
    this.assertOpen();
    return (await this.router.withNode(this.homeNode, (c) => c.listAliases({ dataset: this.dataset }))).aliases;
  }

  /**
   * Runs `fn` in an optimistic transaction and commits what it changed atomically. On a
   * conflict `fn` runs again (fresh objects), up to `retries` times with exponential backoff.
   */
  async transaction<R>(fn: (tx: Transaction) => Promise<R> | R, options: TransactionOptions = {}): Promise<R> {
    const retries = options.retries ?? 5;
    if (!Number.isInteger(retries) || retries < 0 || retries > 100) throw new InvalidArgumentError(`retries must be an integer 0-100, got ${retries}`);
    const base = options.backoffMs ?? 10;
    for (let attempt = 0; ; attempt++) {
      const tx = new Transaction(this);
      try {
        const result = await fn(tx);
        await tx.commit();
        return result;
      } catch (e) {
        tx.abort();
        if (!(e instanceof ConflictError) || attempt >= retries) throw e;
        const delay = Math.min(1000, base * 2 ** attempt) * (0.5 + Math.random() / 2);
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  /**
   * Moves an object to another node. With `recursive`, what it references moves too: on its
   * node in one step, and (unless `remotes: false`) referents that live on other nodes as well.
   */
  async move(obj: Persistent | string | Ref, backend: string | number, options: { recursive?: boolean; remotes?: boolean; timeoutMs?: number } = {}): Promise<{ moved: number }> {
    this.assertOpen();
    const target = await this.router.resolveBackend(backend);
    const recursive = options.recursive ?? false;
    const follow = recursive && (options.remotes ?? true);
    const moved = await this.perNode(this.oidOfAny(obj), follow, async (c, oids, opId) => {
      const res = await c.move({ dataset: this.dataset, oids, target: target.number, recursive, opId }, options.timeoutMs ?? 300_000);
      for (const m of res.moved) this.router.learn(m, target.number, target.address);
      return { done: res.moved.length, remote: res.remote };
    });
    return { moved };
  }

  /**
   * Runs a per-node operation on an object, on the node that masters it; with `follow`, again on
   * the nodes of the referents it reports as living elsewhere, until none are left.
   */
  private async perNode(oid: string, follow: boolean, op: (c: NodeConnection, oids: string[], opId: string) => Promise<{ done: number; remote: string[] }>): Promise<number> {
    const seen = new Set([oid]);
    let todo = [oid];
    let done = 0;
    while (todo.length > 0) {
      const byNode = new Map<number, string[]>();
      for (const o of todo) {
        const n = this.router.nodeOf(o);
        const list = byNode.get(n);
        if (list) list.push(o);
        else byNode.set(n, [o]);
      }
      const next: string[] = [];
      for (const [n, oids] of byNode) {
        // One id per call, the same on its retries: a node never runs it twice at once.
        const opId = newTxid();
        const res = await this.router.withNode(n, (c) => op(c, oids, opId));
        done += res.done;
        if (follow) for (const r of res.remote) if (!seen.has(r)) (seen.add(r), next.push(r));
      }
      todo = next;
    }
    return done;
  }

  private oidOfAny(obj: Persistent | string | Ref): string {
    return obj instanceof Persistent ? this.ownMeta(obj).oid! : this.oidOf(obj);
  }

  /**
   * Makes a version of `obj`: a copy with a new oid that records `obj` as its origin. Its fields
   * are copied deeply, except references to persistent objects, which stay references to them.
   */
  async newVersion<T extends Persistent>(obj: T, options: { backend?: string | number } = {}): Promise<T> {
    const m = this.ownMeta(obj);
    if (!m.loaded) throw new InvalidArgumentError(`load object ${m.oid} before making a version of it`, { oid: m.oid });
    const hooks = { refFor: (o: Persistent) => ({ oid: this.refOid(o), className: metaOf(o).className }) };
    const copy = instantiate(m.className, { version: 0, loaded: true, className: m.className, origin: m.oid }) as T;
    assignFields(copy, decodeState(encodeState(obj, hooks), { stubFor: (oid, cls) => this.space.stub(oid, cls) }));
    return this.persist(copy, { backend: options.backend ?? this.router.nodeOf(m.oid!) });
  }

  /**
   * Writes the state of version `v` over its origin, and over every version in between (the
   * chain of origins up to the first object), in one transaction: no reader ever sees an origin
   * missing or half written. Conflicts are retried like any transaction.
   */
  async consolidate(v: Persistent, options: TransactionOptions = {}): Promise<void> {
    const m = this.ownMeta(v);
    if (!m.origin) throw new InvalidArgumentError(`object ${m.oid} is not a version (it has no origin)`, { oid: m.oid });
    await this.transaction(async (tx) => {
      const version = await tx.get(m.oid!);
      const state = encodeState(version, { refFor: (o) => ({ oid: o.$oid!, className: metaOf(o).className }) });
      const seen = new Set([m.oid!]);
      for (let oid = version.$origin; oid; ) {
        if (seen.has(oid)) throw new InvalidArgumentError(`the origins of ${m.oid} form a cycle at ${oid}`, { oid });
        seen.add(oid);
        const target = await tx.get(oid);
        tx.overwrite(target, state);
        oid = target.$origin;
      }
    }, options);
  }

  /** @internal the oid of a referenced object, which must already be persisted */
  private refOid(o: Persistent): string {
    const oid = o.$oid;
    if (!oid) throw new InvalidArgumentError('a version cannot reference an object that is not persisted yet: persist it first');
    return oid;
  }

  /**
   * Keeps a replica of an object on another node (and with `recursive`, of what it references):
   * the master updates every replica before it acknowledges a write, and `get(oid, { readFrom:
   * 'any' })` may read one.
   */
  async replicate(obj: Persistent | string | Ref, backend: string | number, options: { recursive?: boolean; timeoutMs?: number } = {}): Promise<{ replicated: number }> {
    this.assertOpen();
    const target = await this.router.resolveBackend(backend);
    const recursive = options.recursive ?? false;
    const replicated = await this.perNode(this.oidOfAny(obj), recursive, async (c, oids, opId) => {
      const res = await c.replicate({ dataset: this.dataset, oids, target: target.number, recursive, opId }, options.timeoutMs ?? 300_000);
      return { done: res.replicated.length, remote: res.remote };
    });
    return { replicated };
  }

  /** Moves everything a node masters to the others and hands its home directory over (also `loam drain`). */
  async drain(backend: string | number, options: { timeoutMs?: number; opId?: string } = {}): Promise<{ moved: number; homeSuccessor: number }> {
    this.assertOpen();
    const b = await this.router.resolveBackend(backend);
    // The same on a retry: it joins the drain already running. A caller that asks again later
    // (an operator after a restart) passes its own.
    const opId = options.opId ?? newTxid();
    const res = await this.router.withNode(b.number, (c) => c.drain({ opId }, options.timeoutMs ?? 600_000));
    await this.router.refresh(true).catch(() => undefined);
    return { moved: res.moved, homeSuccessor: res.homeSuccessor };
  }

  /**
   * Stops a drain of a node (`loam drain` begun) at a safe point between moves and makes the node
   * a ready member that takes new objects again; objects it already moved stay where they went.
   * A node whose drain had finished is made ready too (it takes its home directory back). No
   * drain: nothing to do. FailedPreconditionError when the node cannot be made ready safely.
   * `stopped`: a drain was running; `undrained`: a drained state was undone.
   */
  async cancelDrain(backend: string | number, options: { timeoutMs?: number } = {}): Promise<{ stopped: boolean; undrained: boolean }> {
    this.assertOpen();
    const b = await this.router.resolveBackend(backend);
    const res = await this.router.withNode(b.number, (c) => c.cancelDrain(b.number, options.timeoutMs ?? 120_000));
    await this.router.refresh(true).catch(() => undefined);
    return { stopped: res.stopped, undrained: res.undrained };
  }

  /**
   * Resolves once everything acknowledged before the call is in S3 on every node of the
   * DataStore (dataClay's `flush_all`); at once for nodes without S3, whose local log is all
   * their durability. Rejects (typed) if a node cannot flush before `timeoutMs`.
   */
  async flush(options: { timeoutMs?: number } = {}): Promise<{ nodes: number; s3: number }> {
    this.assertOpen();
    const nodes = await this.backends();
    const results = await Promise.all(nodes.map((b) => this.router.withNode(b.number, (c) => c.flush(options.timeoutMs ?? 120_000), false)));
    return { nodes: nodes.length, s3: results.filter((r) => r.s3).length };
  }

  /**
   * Every live node's own report (`loam status`): the member list from ListBackends, then a
   * Status call to each node at once, each bounded by `timeoutMs` (default 5 s). A node that
   * does not answer is in the list as unreachable, with the error; only a member list that no
   * node gives makes this reject.
   */
  async status(options: { timeoutMs?: number } = {}): Promise<NodeStatus[]> {
    this.assertOpen();
    const nodes = await this.backends();
    const timeoutMs = options.timeoutMs ?? 5_000;
    return Promise.all(nodes.map(async (b): Promise<NodeStatus> => {
      try {
        const r = await this.router.conn(b.address).status(timeoutMs);
        const me = r.backend ?? b;
        return {
          id: me.id, number: me.number, address: b.address, state: me.state, reachable: true,
          objects: r.objects, diskBytes: r.diskBytes,
          draining: r.draining ? { objectsLeft: r.draining.objectsLeft, objectsTotal: r.draining.objectsTotal } : null,
          s3: r.s3 ? {
            backlogBytes: r.s3.backlogBytes, backlogOldestMs: r.s3.backlogOldestMs, backlogSegments: r.s3.backlogSegments,
            generation: r.s3.generation, fenced: r.s3.fenced,
          } : null,
        };
      } catch (e) {
        return { ...b, reachable: false, error: (e as Error).message };
      }
    }));
  }

  /** A serializable reference to a persisted object: `loam://host:port/dataset/oid`. */
  ref(obj: Persistent | string): Ref {
    const oid = typeof obj === 'string' ? this.oidOf(obj) : obj.$oid;
    if (!oid) throw new InvalidArgumentError('ref() of an object that is not persisted yet');
    return new Ref(this.host, this.port, this.dataset, oid);
  }

  /** Resolves a ref (string or Ref) to its object. Concurrent resolutions share one request. */
  async resolve<T extends Persistent = Persistent>(ref: string | Ref): Promise<T> {
    const r = Ref.parse(ref);
    this.checkRefDataset(r);
    const pre = this.prefetched.get(r.oid);
    if (pre) {
      this.prefetched.delete(r.oid);
      return pre as Promise<T>;
    }
    return this.get<T>(r.oid);
  }

  /** Starts resolving refs in the background; a later resolve() of one of them uses the result. */
  prefetch(...refs: (string | Ref)[]): void {
    for (const ref of refs) {
      const r = Ref.parse(ref);
      this.checkRefDataset(r);
      if (this.prefetched.has(r.oid)) continue;
      const p = this.get(r.oid);
      p.catch(() => undefined); // reported by the resolve() that consumes it
      this.prefetched.set(r.oid, p);
      if (this.prefetched.size > 10_000) this.prefetched.delete(this.prefetched.keys().next().value!);
    }
  }

  /** The live nodes of the DataStore. */
  async backends(): Promise<BackendInfo[]> {
    this.assertOpen();
    const list = await this.router.refresh(true);
    return list.map((b) => ({ id: b.id, number: b.number, address: b.address, state: b.state }));
  }

  async createDataset(name: string): Promise<boolean> {
    validateDatasetName(name);
    this.assertOpen();
    return (await this.router.withNode(this.homeNode, (c) => c.createDataset({ name }))).created;
  }

  async datasets(): Promise<string[]> {
    this.assertOpen();
    return (await this.router.withNode(this.homeNode, (c) => c.listDatasets({}))).names;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.loader.failAll(new LoamError('UNAVAILABLE', 'client closed'));
    this.router.close();
  }

  private assertOpen(): void {
    if (this.closed) throw new LoamError('UNAVAILABLE', 'this client is closed');
  }

  private oidOf(oidOrRef: string | Ref): string {
    if (typeof oidOrRef === 'string' && isOid(oidOrRef)) return oidOrRef;
    if (typeof oidOrRef === 'string' && !oidOrRef.startsWith('loam://')) {
      throw new InvalidArgumentError(`malformed oid ${JSON.stringify(oidOrRef.slice(0, 80))} (expected 32 lowercase hex digits or a loam:// ref)`);
    }
    const r = Ref.parse(oidOrRef);
    this.checkRefDataset(r);
    return r.oid;
  }

  private checkRefDataset(r: Ref): void {
    if (r.dataset !== this.dataset) {
      throw new InvalidArgumentError(`ref ${r} is in dataset ${r.dataset}, this client uses ${this.dataset}: connect to loam://host:port/${r.dataset}`, { dataset: r.dataset });
    }
  }

  private ownMeta(obj: Persistent) {
    if (!(obj instanceof Persistent)) throw new InvalidArgumentError('expected a Persistent object');
    const m = metaOf(obj);
    if (!m.oid) throw new InvalidArgumentError('the object is not persisted yet');
    if (m.owner !== this) throw new InvalidArgumentError(`object ${m.oid} belongs to another client or transaction`, { oid: m.oid });
    return m;
  }
}

/** Collects the gets of one tick into one Get request per node (and batch-size chunk). */
class BatchLoader {
  private waiting = new Map<string, { resolve: (r: ObjectRecord | undefined) => void; reject: (e: unknown) => void }[]>();
  private scheduled = false;

  constructor(private readonly router: Router, private readonly dataset: string, private readonly maxBatch: number) {}

  load(oid: string): Promise<ObjectRecord | undefined> {
    return new Promise((resolve, reject) => {
      const list = this.waiting.get(oid);
      if (list) list.push({ resolve, reject });
      else this.waiting.set(oid, [{ resolve, reject }]);
      if (!this.scheduled) {
        this.scheduled = true;
        queueMicrotask(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.scheduled = false;
    const batch = this.waiting;
    this.waiting = new Map();
    this.router.fetch(this.dataset, [...batch.keys()], this.maxBatch).then(
      (found) => {
        for (const [oid, waiters] of batch) for (const w of waiters) w.resolve(found.get(oid));
      },
      (err) => {
        for (const waiters of batch.values()) for (const w of waiters) w.reject(err);
      },
    );
  }

  failAll(err: unknown): void {
    for (const list of this.waiting.values()) for (const w of list) w.reject(err);
    this.waiting.clear();
  }
}
