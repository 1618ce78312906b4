import { InvalidArgumentError, isOid, type NodeServiceServer } from '@loam/sdk/wire';
import type { Engine } from './storage/engine.js';
import type { NodeMetrics } from './metrics.js';
import type { Logger } from './logger.js';
import type { ClusterContext } from './store-service.js';
import { unaryHandler } from './rpc-handler.js';

/** Node-to-node calls: install moved objects, home-directory compare-and-set, home handover. */
export function nodeService(engine: Engine, metrics: NodeMetrics, log: Logger, cluster: () => ClusterContext | undefined): NodeServiceServer {
  const ctx = () => {
    const c = cluster();
    if (!c) throw new InvalidArgumentError('node is joining the cluster');
    return c;
  };
  const unary = unaryHandler(metrics, log, () => void ctx());
  return {
    install: unary('Install', async (req) => {
      await engine.createDataset(req.dataset).catch(() => undefined); // datasets exist cluster-wide; learn it here
      await engine.install(req.dataset, req.objects);
      return {};
    }),
    setMaster: unary('SetMaster', async (req) => {
      for (const c of req.changes) if (!isOid(c.oid)) throw new InvalidArgumentError(`malformed oid ${JSON.stringify(c.oid)}`);
      await ctx().placement.setMaster(req.changes);
      return {};
    }),
    adoptHome: unary('AdoptHome', async (req) => {
      await ctx().placement.adoptHome(req.homes, req.entries);
      return {};
    }),
    prepare: unary('Prepare', async (req) => {
      if (!req.ops) throw new InvalidArgumentError('prepare without operations');
      if (!engine.hasDataset(req.ops.dataset)) await engine.createDataset(req.ops.dataset);
      return { versions: await ctx().transactions.prepareHere(req.txid, req.coordinator, req.ops) };
    }),
    installReplicas: unary('InstallReplicas', async (req) => {
      if (!engine.hasDataset(req.dataset)) await engine.createDataset(req.dataset);
      await engine.installReplicas(req.dataset, req.master, req.objects);
      return {};
    }),
    dropReplicas: unary('DropReplicas', async (req) => {
      if (!engine.hasDataset(req.dataset)) return {};
      await engine.dropReplicas(req.dataset, req.oids);
      return {};
    }),
    setHomeReplicas: unary('SetHomeReplicas', async (req) => {
      await ctx().placement.setHomeReplicas(req.entries);
      return {};
    }),
    finish: unary('Finish', async (req) => {
      await ctx().transactions.finishHere(req.txid, req.commit);
      return {};
    }),
  };
}
