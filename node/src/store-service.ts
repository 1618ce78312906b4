import {
  AliasExistsError, DeadlineExceededError, InvalidArgumentError, LoamError, NotFoundError, PROTOCOL_VERSION, UnavailableError, UnknownDatasetError,
  LimitExceededError, NodeDrainedError, RedirectError, oidHomeNode, toErrorDetail, validateAlias, validateDatasetName, isOid,
  type Backend, type CommitRequest, type Redirect, type StoreServiceServer,
} from '@loam/sdk/wire';
import type { Engine } from './storage/engine.js';
import type { NodeMetrics } from './metrics.js';
import type { Logger } from './logger.js';
import type { Membership } from './cluster/membership.js';
import { META_KEYS } from './meta/meta-store.js';
import { Placement } from './cluster/placement.js';
import { Operations } from './cluster/operations.js';
import { reserveAlias } from './cluster/aliases.js';
import type { Transactions } from './cluster/transactions.js';
import { unaryHandler } from './rpc-handler.js';
import { failpointAsync } from './failpoints.js';

export const SERVER_VERSION = '0.1.0';
/** Commits one CommitBatch call may carry. */
export const MAX_COMMITS_PER_BATCH = 1024;

export { MalformedRequest } from './rpc-handler.js';

export interface ClusterContext {
  membership: Membership;
  placement: Placement;
  transactions: Transactions;
}

/**
 * The StoreService handlers: hand requests to the engine, and map every failure to a typed
 * gRPC error. In a cluster (`membership` given), objects this node does not hold are answered
 * with redirects, and aliases and datasets live in the metadata store; alone, the engine keeps
 * them in its log. Each handler is wrapped for metrics and logs.
 */
export function storeService(
  engine: Engine,
  self: () => Backend,
  metrics: NodeMetrics,
  log: Logger,
  /** Cluster mode only: membership and placement, undefined while the node is still joining. */
  cluster?: () => ClusterContext | undefined,
): StoreServiceServer {
  const unary = unaryHandler(metrics, log, () => joined(), self);
  const me = () => self();
  // Resolved per call: in cluster mode nothing is answered before the node has joined.
  let membership: Membership | undefined;
  let placement: Placement | undefined;
  let transactions: Transactions | undefined;
  let meta: Membership['meta'] | undefined;
  const operations = new Operations();
  function joined(): void {
    if (!cluster) return;
    const ctx = cluster();
    if (!ctx) throw new UnavailableError('node is joining the cluster');
    ({ membership, placement, transactions } = ctx);
    meta = membership.meta;
  }

  /** In a cluster a dataset exists when the metadata store says so; the engine learns it lazily. */
  async function ensureDataset(name: string): Promise<void> {
    if (engine.hasDataset(name)) return;
    validateDatasetName(name);
    if (meta && (await meta.get(META_KEYS.dataset(name))) !== undefined) {
      await engine.createDataset(name);
      return;
    }
    throw new UnknownDatasetError(`unknown dataset ${JSON.stringify(name)}`, { dataset: name });
  }

  const redirectFor = (oid: string) => placement!.redirectFor(oid);
  const redirectError = (r: Redirect) => Placement.redirectError(r);

  async function commitInCluster(req: CommitRequest, deadline?: number): Promise<number[]> {
    await ensureDataset(req.dataset);
    const mine = me().number;
    const touched = [...req.writes.map((w) => w.oid), ...req.deletes.map((d) => d.oid), ...req.reads.map((r) => r.oid)];
    await placement!.waitUnlocked(touched);
    if (placement!.isDrained && req.writes.some((w) => w.expectedVersion === 0)) {
      throw new NodeDrainedError(`node ${mine} is drained: create objects on another node`, { node: mine });
    }
    for (const w of req.writes) {
      if (w.expectedVersion === 0 && isOid(w.oid) && oidHomeNode(w.oid) !== mine) {
        const home = oidHomeNode(w.oid);
        // A client that routed a create for a drained node's home here (its adopter): that node
        // takes no new objects, and the client then creates on another node.
        if (await membership!.homeHandedOverBy(home)) {
          throw new NodeDrainedError(`node ${home} is drained: create objects on another node`, { node: home });
        }
        throw new InvalidArgumentError(`object ${w.oid} must be created on its home node ${home}, not on node ${mine}`, { oid: w.oid });
      }
    }
    const elsewhere = [...req.writes.filter((w) => w.expectedVersion > 0).map((w) => w.oid), ...req.deletes.map((d) => d.oid), ...req.reads.map((r) => r.oid)]
      .filter((oid) => isOid(oid) && !engine.masters(oid));
    for (const oid of elsewhere) {
      const r = await redirectFor(oid);
      if (r) throw redirectError(r);
    }
    // A retry of a commit this node already applied: the first outcome, with the steps after
    // the commit (replicas, aliases) done again, as the first answer would have promised.
    // (Only a commit: an aborted two-phase part of the same id applied nothing.)
    const done = req.commitId ? engine.outcomeOf(req.commitId) : undefined;
    if (done?.ok) {
      await placement!.pushReplicas(req.dataset, [...req.writes.map((w) => w.oid), ...req.deletes.map((d) => d.oid)].filter((o) => engine.masters(o)));
      for (const a of req.aliasSets) {
        const key = META_KEYS.alias(req.dataset, a.alias);
        const cur = await meta!.get(key);
        if (cur !== undefined && (JSON.parse(cur) as { oid?: string }).oid === a.oid) await meta!.compareAndSet(key, cur, JSON.stringify({ oid: a.oid }));
      }
      for (const alias of req.aliasDeletes) await meta!.delete(META_KEYS.alias(req.dataset, alias));
      return done.versions;
    }
    // Aliases: reserve in the metadata store (first writer wins), commit the objects, then
    // confirm; a failed commit releases its reservations.
    const reserved: { key: string; value: string }[] = [];
    let keep = false;
    const release = async () => {
      for (const r of reserved) await meta!.compareAndSet(r.key, r.value, undefined).catch(() => undefined);
    };
    try {
      for (const a of req.aliasSets) {
        validateAlias(a.alias, engine.limits);
        reserved.push(await reserveAlias(meta!, req.dataset, a.alias, a.oid, (oid) => placement!.exists(req.dataset, oid)));
      }
      for (const alias of req.aliasDeletes) {
        validateAlias(alias, engine.limits);
        if ((await meta!.get(META_KEYS.alias(req.dataset, alias))) === undefined) {
          throw new NotFoundError(`no alias ${JSON.stringify(alias)} in dataset ${req.dataset}`, { alias, dataset: req.dataset });
        }
      }
      if (req.aliasSets.length > 0) await failpointAsync('commit-after-alias-reserve');
      // Reserving may have waited on etcd (quorum loss) past the moment the caller gave up: a
      // request nobody waits for any more must not be applied later.
      if (deadline !== undefined && Date.now() >= deadline) {
        throw new DeadlineExceededError('the caller gave up before the commit could be applied; nothing was applied', { notApplied: true });
      }
      const hasObjects = req.writes.length + req.deletes.length + req.reads.length > 0;
      let versions: number[] = [];
      if (hasObjects) {
        try {
          versions = await engine.commit({ dataset: req.dataset, reads: req.reads, writes: req.writes, deletes: req.deletes }, { commitId: req.commitId, attempt: req.attempt, deadline });
        } catch (e) {
          // A write that failed after reaching the log may still show up after a restart: its
          // reservations stay pending (settled later by whether the object exists).
          if (mayBeApplied(e)) keep = true;
          throw e;
        }
      }
      keep = true; // applied: a failure below leaves the reservations for the retry to confirm
      // Replicas are updated before the write is acknowledged.
      await placement!.pushReplicas(req.dataset, [...req.writes.map((w) => w.oid), ...req.deletes.map((d) => d.oid)]);
      if (req.deletes.length > 0) await placement!.forgetDeleted(req.deletes.map((d) => d.oid));
      for (const r of reserved) await confirmAlias(r);
      for (const alias of req.aliasDeletes) await meta!.delete(META_KEYS.alias(req.dataset, alias));
      return versions;
    } catch (e) {
      if (keep) throw e;
      await release();
      throw notAppliedError(e);
    }
  }

  /**
   * Confirms a reservation once its commit is applied. Another attempt of the same commit (a
   * retry that found this reservation and shared it) may have released it meanwhile: the alias
   * is then set again, never left missing behind an acknowledged write; one that names another
   * object by now fails the call instead of acknowledging it.
   */
  async function confirmAlias(r: { key: string; value: string }): Promise<void> {
    const { oid } = JSON.parse(r.value) as { oid: string };
    const confirmed = JSON.stringify({ oid });
    if (await meta!.compareAndSet(r.key, r.value, confirmed)) return;
    const now = await meta!.createIfAbsent(r.key, confirmed);
    const cur = JSON.parse(now.value) as { oid?: string; pending?: boolean };
    if (cur.oid !== oid) throw new AliasExistsError(`the alias lost its reservation to object ${cur.oid} while this commit was applied (the objects were written, the alias was not)`);
    if (cur.pending) await meta!.compareAndSet(r.key, now.value, confirmed);
  }

  /** An unavailability met before anything was applied says so: the client may safely retry. */
  function notAppliedError(e: unknown): unknown {
    if (e instanceof LoamError && (e.code === 'UNAVAILABLE' || e.code === 'DEADLINE_EXCEEDED') && !e.notApplied) {
      const fields = { oid: e.oid, alias: e.alias, dataset: e.dataset, node: e.node, address: e.address, notApplied: true };
      return e.code === 'UNAVAILABLE' ? new UnavailableError(e.message, fields, { cause: e }) : new DeadlineExceededError(e.message, fields);
    }
    return e;
  }

  /** After this error from the engine, the commit may still have been applied. */
  function mayBeApplied(e: unknown): boolean {
    return e instanceof LoamError && !e.notApplied && (e.code === 'UNAVAILABLE' || e.code === 'DEADLINE_EXCEEDED' || e.code === 'INTERNAL');
  }

  function commitOne(req: CommitRequest, deadline?: number): Promise<number[]> {
    if (membership) return commitInCluster(req, deadline);
    return engine.commit({
      dataset: req.dataset, reads: req.reads, writes: req.writes, deletes: req.deletes,
      aliasSets: req.aliasSets, aliasDeletes: req.aliasDeletes,
    }, { commitId: req.commitId, attempt: req.attempt, deadline });
  }

  return {
    hello: unary('Hello', async (req) => {
      if (req.dataset) await ensureDataset(req.dataset);
      const l = engine.limits;
      return {
        backend: me(),
        serverVersion: `${SERVER_VERSION}/${PROTOCOL_VERSION}`,
        limits: { maxObjectBytes: l.maxObjectBytes, maxBatchObjects: l.maxBatchObjects, maxBatchBytes: l.maxBatchBytes, maxAliasLength: l.maxAliasLength },
      };
    }),
    get: unary('Get', async (req) => {
      if (!engine.hasDataset(req.dataset)) await ensureDataset(req.dataset);
      // An object locked by a prepared transaction may be about to change: wait (bounded) for the
      // decision, so a reader never sees the state before a transaction it was told committed.
      let txs: Set<string> | undefined;
      if (transactions) {
        for (const o of req.oids) {
          const tx = engine.lockedBy(o);
          if (tx) (txs ??= new Set()).add(tx);
        }
      }
      if (txs && transactions) {
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([
          Promise.all([...txs].map((t) => engine.waitForTx(t))),
          new Promise<void>((r) => (timer = setTimeout(r, transactions!.preparedTimeoutMs + 2000))),
        ]).finally(() => clearTimeout(timer));
      }
      const res = await engine.get(req.dataset, req.oids);
      const redirects: Redirect[] = [];
      let missing = res.missing;
      let objects = res.objects;
      if (membership) {
        // A replica copy answers only reads that asked for any copy; others go to the master.
        const notHere = [...res.missing];
        // A replica copy answers only reads that asked for any copy; a copy a move has not
        // activated answers none (it may be abandoned). An object whose move out of here is
        // being made durable is still served (its forward pointer is not published yet).
        // A replica copy serves only while its master's confirmation is current (ReplicaLeases).
        const replicaLeases = placement?.replicaLeases;
        const withheld = (oid: string) => engine.installSourceOf(oid) !== undefined
          || (engine.replicaMasterOf(oid) !== undefined && (!req.readFromAny || !replicaLeases?.servable(oid)));
        if (res.objects.some((o) => withheld(o.oid))) {
          objects = res.objects.filter((o) => !withheld(o.oid));
          for (const o of res.objects) if (withheld(o.oid)) notHere.push(o.oid);
        }
        missing = [];
        for (const oid of notHere) {
          const r = await redirectFor(oid);
          if (r) redirects.push(r);
          else missing.push(oid);
        }
      }
      return { objects, missing, redirects };
    }),
    commit: unary('Commit', async (req, call) => ({ versions: await commitOne(req, call.deadline) })),
    commitBatch: unary('CommitBatch', async (req, call) => {
      if (req.commits.length > MAX_COMMITS_PER_BATCH) {
        throw new LimitExceededError(`a batch of ${req.commits.length} commits exceeds ${MAX_COMMITS_PER_BATCH}`, { limit: 'commitsPerBatch' });
      }
      // Started together, so they share group commits; each succeeds or fails on its own.
      const results = await Promise.all(req.commits.map((c) => commitOne(c, call.deadline).then(
        (versions) => ({ versions, error: undefined }),
        (e: unknown) => ({ versions: [], error: toErrorDetail(e) }),
      )));
      return { results };
    }),
    getAlias: unary('GetAlias', async (req) => {
      if (!meta) return { oid: engine.getAlias(req.dataset, req.alias) };
      await ensureDataset(req.dataset);
      validateAlias(req.alias, engine.limits);
      const v = await meta.get(META_KEYS.alias(req.dataset, req.alias));
      if (v === undefined) throw new NotFoundError(`no alias ${JSON.stringify(req.alias)} in dataset ${req.dataset}`, { alias: req.alias, dataset: req.dataset });
      return { oid: (JSON.parse(v) as { oid: string }).oid };
    }),
    listAliases: unary('ListAliases', async (req) => {
      if (!meta) return { aliases: engine.listAliases(req.dataset) };
      await ensureDataset(req.dataset);
      const prefix = META_KEYS.aliases(req.dataset);
      const all = await meta.list(prefix);
      const aliases = [...all].map(([k, v]) => ({ alias: k.slice(prefix.length), oid: (JSON.parse(v) as { oid: string }).oid }));
      return { aliases: aliases.sort((a, b) => (a.alias < b.alias ? -1 : 1)) };
    }),
    listBackends: unary('ListBackends', async () => {
      if (!membership) return { backends: [me()], homes: [] };
      // Both from the view backends() just refreshed: clients learn who serves a drained node's home with the members.
      const backends = await membership.backends();
      return { backends, homes: await membership.homeServers() };
    }),
    createDataset: unary('CreateDataset', async (req) => {
      validateDatasetName(req.name);
      if (!meta) return { created: await engine.createDataset(req.name) };
      const r = await meta.createIfAbsent(META_KEYS.dataset(req.name), JSON.stringify({ createdAt: new Date().toISOString() }));
      await engine.createDataset(req.name);
      return { created: r.created };
    }),
    listDatasets: unary('ListDatasets', async () => {
      if (!meta) return { names: engine.listDatasets() };
      const all = await meta.list(META_KEYS.datasets);
      return { names: [...all.keys()].map((k) => k.slice(META_KEYS.datasets.length)).sort() };
    }),
    locate: unary('Locate', async (req) => {
      await ensureDataset(req.dataset);
      if (!isOid(req.oid)) throw new InvalidArgumentError(`malformed oid ${JSON.stringify(req.oid)}`);
      if (placement) return placement.locate(req.dataset, req.oid);
      if ((await engine.get(req.dataset, [req.oid])).objects.length > 0) return { master: me(), replicas: [] };
      throw new NotFoundError(`object ${req.oid} does not exist`, { oid: req.oid, dataset: req.dataset });
    }),
    move: unary('Move', async (req, call) => {
      await ensureDataset(req.dataset);
      if (req.oids.length === 0 || req.oids.length > engine.limits.maxBatchObjects) throw new InvalidArgumentError(`move takes 1 to ${engine.limits.maxBatchObjects} oids`);
      for (const oid of req.oids) if (!isOid(oid)) throw new InvalidArgumentError(`malformed oid ${JSON.stringify(oid)}`);
      if (placement) return operations.run('move', req.opId, () => placement!.move(req.dataset, req.oids, req.target, req.recursive, call.deadline));
      if (req.target !== me().number) throw new InvalidArgumentError(`node ${req.target} does not exist: this DataStore has one node`);
      const held = await engine.get(req.dataset, req.oids);
      if (held.missing.length) throw new NotFoundError(`object ${held.missing[0]} does not exist`, { oid: held.missing[0] });
      return { moved: req.oids, remote: [] };
    }),
    commitMulti: unary('CommitMulti', async (req, call) => {
      if (!transactions) throw new InvalidArgumentError('a single-node DataStore has no distributed transactions: use Commit');
      await ensureDataset(req.dataset);
      return transactions.commitMulti(req, call.deadline);
    }),
    replicate: unary('Replicate', async (req, call) => {
      await ensureDataset(req.dataset);
      if (req.oids.length === 0 || req.oids.length > engine.limits.maxBatchObjects) throw new InvalidArgumentError(`replicate takes 1 to ${engine.limits.maxBatchObjects} oids`);
      for (const oid of req.oids) if (!isOid(oid)) throw new InvalidArgumentError(`malformed oid ${JSON.stringify(oid)}`);
      if (!placement) throw new InvalidArgumentError('a single-node DataStore has no other node to replicate to');
      return operations.run('replicate', req.opId, () => placement!.replicate(req.dataset, req.oids, req.target, req.recursive, call.deadline));
    }),
    flush: unary('Flush', async (_req, call) => {
      const signal = call.deadline !== undefined ? AbortSignal.timeout(Math.max(0, call.deadline - Date.now())) : undefined;
      try {
        await engine.flush(signal);
      } catch (e) {
        if (signal?.aborted) throw new DeadlineExceededError('flush: not everything reached S3 before the deadline (S3 unreachable, or a large backlog)');
        throw new UnavailableError(`flush failed: ${(e as Error).message}`);
      }
      return { s3: engine.tier !== undefined, generation: engine.tier?.generation ?? 0 };
    }),
    status: unary('Status', () => {
      const stats = engine.stats();
      const self = me();
      // A drain records "drained" a moment before it ends (the home hand-over's last steps): from
      // then on the answer says drained, without progress, as a caller polling for the end expects.
      const drain = self.state === 'drained' ? undefined : placement?.drainProgress;
      const tier = engine.tier;
      const backlog = tier?.backlog();
      return {
        backend: self,
        objects: stats.objects,
        diskBytes: stats.diskBytes,
        draining: drain && { objectsLeft: drain.left, objectsTotal: drain.total },
        s3: tier && backlog && {
          backlogBytes: backlog.bytes, backlogOldestMs: backlog.oldestMs, backlogSegments: backlog.segments,
          generation: tier.generation ?? 0, fenced: tier.fenced,
        },
      };
    }),
    drain: unary('Drain', async (req) => {
      if (!placement) throw new InvalidArgumentError('cannot drain the only node of a single-node DataStore');
      // Runs to the end even if the caller stops waiting; a retry with the same id waits for it.
      return operations.run('drain', req.opId, () => placement!.drain());
    }),
    cancelDrain: unary('CancelDrain', async (req) => {
      const mine = me().number;
      if (req.backend !== mine) {
        // Sent to the wrong node (a stale address): point the caller at the right one.
        const m = membership && (await membership.byNumber(req.backend));
        if (m) throw new RedirectError(`node ${req.backend} is at ${m.address}`, { node: m.number, address: m.address });
        throw new InvalidArgumentError(`this is node ${mine}, not node ${req.backend}, and node ${req.backend} is not a live member`, { node: req.backend });
      }
      if (!placement) return { stopped: false, undrained: false }; // a single-node DataStore is never drained
      const res = await placement.cancelDrain();
      // The cancelled drain is over: a Drain after this starts a new one, whatever its id.
      if (res.stopped) operations.forget('drain');
      return res;
    }),
  };
}
