import {
  InvalidArgumentError, isOid, type NodeServiceServer,
  type DropReplicasRequest, type FinishRequest, type InstallReplicasRequest, type PrepareRequest,
} from '@loam/sdk/wire';
import type { Engine } from './storage/engine.js';
import type { NodeMetrics } from './metrics.js';
import type { Logger } from './logger.js';
import type { ClusterContext } from './store-service.js';
import { methodMaker, unary } from './rpc-handler.js';
import { LinkServer } from './link-server.js';

/**
 * Node-to-node calls: install moved objects, home-directory compare-and-set, home handover,
 * transaction parts and replica updates (the last two also as messages on a Link stream).
 * Returns the service and its LinkServer, which the node closes before it shuts down.
 */
export function nodeService(engine: Engine, metrics: NodeMetrics, log: Logger, cluster: () => ClusterContext | undefined): { service: NodeServiceServer; links: LinkServer } {
  const ctx = () => {
    const c = cluster();
    if (!c) throw new InvalidArgumentError('node is joining the cluster');
    return c;
  };
  const method = methodMaker(metrics, log, () => void ctx());
  const prepare = method('Prepare', async (req: PrepareRequest) => {
    if (!req.ops) throw new InvalidArgumentError('prepare without operations');
    if (!engine.hasDataset(req.ops.dataset)) await engine.createDataset(req.ops.dataset);
    return ctx().transactions.prepareHere(req.txid, req.coordinator, req.ops);
  });
  const finish = method('Finish', async (req: FinishRequest) => {
    await ctx().transactions.finishHere(req.txid, req.commit);
    return {};
  });
  const installReplicas = method('InstallReplicas', async (req: InstallReplicasRequest) => {
    if (!engine.hasDataset(req.dataset)) await engine.createDataset(req.dataset);
    const placement = ctx().placement;
    const kept = req.objects.filter((o) => !placement.isReleased(o.oid));
    await engine.installReplicas(req.dataset, req.master, kept);
    await placement.replicaLeases.onPush(req, kept);
    return {};
  });
  const dropReplicas = method('DropReplicas', async (req: DropReplicasRequest) => {
    if (!engine.hasDataset(req.dataset)) return {};
    ctx().placement.replicaLeases.forget(req.oids);
    await engine.dropReplicas(req.dataset, req.oids);
    return {};
  });
  const links = new LinkServer({ prepare, finish, installReplicas, dropReplicas }, log);
  const service: NodeServiceServer = {
    install: unary(method('Install', async (req) => {
      await engine.createDataset(req.dataset).catch(() => undefined); // datasets exist cluster-wide; learn it here
      const me = ctx().membership.self.number;
      await engine.install(req.dataset, req.objects, new Map(req.replicaSets.map((r) => [r.oid, r.nodes.filter((n) => n !== me)])), req.source);
      return {};
    })),
    activateInstall: unary(method('ActivateInstall', async (req) => {
      for (const oid of req.oids) if (!isOid(oid)) throw new InvalidArgumentError(`malformed oid ${JSON.stringify(oid)}`);
      await engine.activate(req.oids, req.source);
      return {};
    })),
    installStatus: unary(method('InstallStatus', async (req) => {
      for (const oid of req.oids) if (!isOid(oid)) throw new InvalidArgumentError(`malformed oid ${JSON.stringify(oid)}`);
      return ctx().placement.installStatus(req.oids, req.target);
    })),
    setMaster: unary(method('SetMaster', async (req) => {
      for (const c of req.changes) if (!isOid(c.oid)) throw new InvalidArgumentError(`malformed oid ${JSON.stringify(c.oid)}`);
      await ctx().placement.setMaster(req.changes);
      return {};
    })),
    adoptHome: unary(method('AdoptHome', async (req) => {
      await ctx().placement.adoptHome(req.homes, req.entries);
      return {};
    })),
    returnHome: unary(method('ReturnHome', async (req) => {
      await ctx().placement.returnHome(req.home, req.nodeId);
      return {};
    })),
    releaseReplicas: unary(method('ReleaseReplicas', async (req) => {
      for (const oid of req.oids) if (!isOid(oid)) throw new InvalidArgumentError(`malformed oid ${JSON.stringify(oid)}`);
      if (!engine.hasDataset(req.dataset)) return { released: req.oids, redirects: [] };
      return ctx().placement.releaseReplicas(req.dataset, req.node, req.oids);
    })),
    confirmReplicas: unary(method('ConfirmReplicas', async (req) => {
      for (const c of req.copies) if (!isOid(c.oid)) throw new InvalidArgumentError(`malformed oid ${JSON.stringify(c.oid)}`);
      if (!engine.hasDataset(req.dataset)) return { newer: [], current: [], dropped: req.copies.map((c) => c.oid), redirects: [] };
      return ctx().placement.replicaLeases.answer(req);
    })),
    setHomeReplicas: unary(method('SetHomeReplicas', async (req) => {
      await ctx().placement.setHomeReplicas(req.entries);
      return {};
    })),
    prepare: unary(prepare),
    finish: unary(finish),
    installReplicas: unary(installReplicas),
    dropReplicas: unary(dropReplicas),
    link: links.handle,
  };
  return { service, links };
}
