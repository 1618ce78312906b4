import type { ServerUnaryCall, sendUnaryData } from '@grpc/grpc-js';
import {
  AliasExistsError, InvalidArgumentError, NotFoundError, PROTOCOL_VERSION, RedirectError, UnavailableError, UnknownDatasetError,
  oidHomeNode, toServiceError, validateAlias, validateDatasetName, isOid,
  type Backend, type CommitRequest, type Redirect, type StoreServiceServer,
} from '@loam/sdk/wire';
import type { Engine } from './storage/engine.js';
import type { NodeMetrics } from './metrics.js';
import type { Logger } from './logger.js';
import type { Membership } from './cluster/membership.js';
import { META_KEYS } from './meta/meta-store.js';

export const SERVER_VERSION = '0.1.0';

/** What a request that is not valid protobuf deserializes to (see lenientDeserializers). */
export class MalformedRequest {
  constructor(readonly reason: string) {}
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
  /** Cluster mode only: the membership, undefined while the node is still joining. */
  cluster?: () => Membership | undefined,
): StoreServiceServer {
  function unary<Req, Res>(method: string, fn: (req: Req) => Res | Promise<Res>) {
    return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
      const t0 = process.hrtime.bigint();
      const done = (outcome: string) => {
        const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
        metrics.requests.inc({ method, outcome });
        metrics.requestSeconds.observe({ method, outcome }, seconds);
      };
      let result: Res | Promise<Res>;
      try {
        if (call.request === null || call.request === undefined) throw new InvalidArgumentError('empty request');
        if (call.request instanceof MalformedRequest) throw new InvalidArgumentError(`malformed request: ${call.request.reason}`);
        joined();
        result = fn(call.request);
      } catch (e) {
        fail(e);
        return;
      }
      if (result instanceof Promise) {
        result.then((r) => {
          done('ok');
          callback(null, r);
        }, fail);
      } else {
        done('ok');
        callback(null, result);
      }
      function fail(e: unknown) {
        const se = toServiceError(e);
        const code = (e as { code?: string }).code ?? 'INTERNAL';
        done(code.toLowerCase());
        if (code === 'INTERNAL' || code === 'UNAVAILABLE') log.error({ method, err: e }, 'request failed');
        else log.debug({ method, code, msg: (e as Error).message }, 'request rejected');
        callback(se as Parameters<sendUnaryData<Res>>[0]);
      }
    };
  }

  const me = () => self();
  // Resolved per call: in cluster mode nothing is answered before the node has joined.
  let membership: Membership | undefined;
  let meta: Membership['meta'] | undefined;
  const joined = () => {
    if (!cluster) return;
    membership = cluster();
    if (!membership) throw new UnavailableError('node is joining the cluster');
    meta = membership.meta;
  };

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

  /** Where to send a request for an object this node does not hold; undefined when it is ours to answer. */
  async function redirectFor(oid: string): Promise<Redirect | undefined> {
    if (!membership) return undefined;
    const home = oidHomeNode(oid);
    const server = await membership.homeServer(home);
    if (server?.id === me().id) return undefined; // we are its home: no directory entry means it does not exist
    return { oid, node: server?.number ?? home, address: server?.address ?? '' };
  }

  function redirectError(r: Redirect): RedirectError | UnavailableError {
    if (!r.address) return new UnavailableError(`node ${r.node}, which holds object ${r.oid}, is not available`, { oid: r.oid, node: r.node });
    return new RedirectError(`object ${r.oid} is on node ${r.node} at ${r.address}`, { oid: r.oid, node: r.node, address: r.address });
  }

  async function commitInCluster(req: CommitRequest): Promise<number[]> {
    await ensureDataset(req.dataset);
    const mine = me().number;
    for (const w of req.writes) {
      if (w.expectedVersion === 0 && isOid(w.oid) && oidHomeNode(w.oid) !== mine) {
        throw new InvalidArgumentError(`object ${w.oid} must be created on its home node ${oidHomeNode(w.oid)}, not on node ${mine}`, { oid: w.oid });
      }
    }
    const elsewhere = [...req.writes.filter((w) => w.expectedVersion > 0).map((w) => w.oid), ...req.deletes.map((d) => d.oid), ...req.reads.map((r) => r.oid)]
      .filter((oid) => isOid(oid) && !engine.holds(oid));
    for (const oid of elsewhere) {
      const r = await redirectFor(oid);
      if (r) throw redirectError(r);
    }
    // Aliases: reserve in the metadata store (first writer wins), commit the objects, then
    // confirm; a failed commit releases its reservations.
    const reserved: { key: string; value: string }[] = [];
    const release = async () => {
      for (const r of reserved) await meta!.compareAndSet(r.key, r.value, undefined).catch(() => undefined);
    };
    try {
      for (const a of req.aliasSets) {
        validateAlias(a.alias, engine.limits);
        const key = META_KEYS.alias(req.dataset, a.alias);
        const value = JSON.stringify({ oid: a.oid, pending: true, node: mine });
        const r = await meta!.createIfAbsent(key, value);
        if (!r.created) throw new AliasExistsError(`alias ${JSON.stringify(a.alias)} already exists in dataset ${req.dataset}`, { alias: a.alias, dataset: req.dataset });
        reserved.push({ key, value });
      }
      for (const alias of req.aliasDeletes) {
        validateAlias(alias, engine.limits);
        if ((await meta!.get(META_KEYS.alias(req.dataset, alias))) === undefined) {
          throw new NotFoundError(`no alias ${JSON.stringify(alias)} in dataset ${req.dataset}`, { alias, dataset: req.dataset });
        }
      }
      const hasObjects = req.writes.length + req.deletes.length + req.reads.length > 0;
      const versions = hasObjects
        ? await engine.commit({ dataset: req.dataset, reads: req.reads, writes: req.writes, deletes: req.deletes })
        : [];
      for (const r of reserved) await meta!.compareAndSet(r.key, r.value, JSON.stringify({ oid: (JSON.parse(r.value) as { oid: string }).oid }));
      for (const alias of req.aliasDeletes) await meta!.delete(META_KEYS.alias(req.dataset, alias));
      return versions;
    } catch (e) {
      await release();
      throw e;
    }
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
      const res = engine.get(req.dataset, req.oids);
      const redirects: Redirect[] = [];
      let missing = res.missing;
      if (membership && missing.length > 0) {
        missing = [];
        for (const oid of res.missing) {
          const r = await redirectFor(oid);
          if (r) redirects.push(r);
          else missing.push(oid);
        }
      }
      return { objects: res.objects, missing, redirects };
    }),
    commit: unary('Commit', async (req) => {
      const versions = membership
        ? await commitInCluster(req)
        : await engine.commit({
          dataset: req.dataset, reads: req.reads, writes: req.writes, deletes: req.deletes,
          aliasSets: req.aliasSets, aliasDeletes: req.aliasDeletes,
        });
      return { versions };
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
    listBackends: unary('ListBackends', async () => ({ backends: membership ? await membership.backends() : [me()] })),
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
      if (engine.get(req.dataset, [req.oid]).objects.length > 0) return { master: me(), replicas: [] };
      const r = await redirectFor(req.oid);
      if (r) throw redirectError(r);
      throw new NotFoundError(`object ${req.oid} does not exist`, { oid: req.oid, dataset: req.dataset });
    }),
  };
}
