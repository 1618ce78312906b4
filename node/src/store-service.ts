import type { ServerUnaryCall, sendUnaryData } from '@grpc/grpc-js';
import {
  InvalidArgumentError, PROTOCOL_VERSION, toServiceError, type Backend, type StoreServiceServer,
} from '@loam/sdk/wire';
import type { Engine } from './storage/engine.js';
import type { NodeMetrics } from './metrics.js';
import type { Logger } from './logger.js';

export const SERVER_VERSION = '0.1.0';

/** What a request that is not valid protobuf deserializes to (see lenientDeserializers). */
export class MalformedRequest {
  constructor(readonly reason: string) {}
}

/**
 * The StoreService handlers: decode nothing beyond the protobuf, hand requests to the engine,
 * and map every failure to a typed gRPC error. Each handler is wrapped for metrics and logs.
 */
export function storeService(engine: Engine, self: () => Backend, metrics: NodeMetrics, log: Logger): StoreServiceServer {
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

  return {
    hello: unary('Hello', (req) => {
      if (req.dataset && !engine.hasDataset(req.dataset)) engine.get(req.dataset, []); // throws the typed error
      const l = engine.limits;
      return {
        backend: self(),
        serverVersion: `${SERVER_VERSION}/${PROTOCOL_VERSION}`,
        limits: { maxObjectBytes: l.maxObjectBytes, maxBatchObjects: l.maxBatchObjects, maxBatchBytes: l.maxBatchBytes, maxAliasLength: l.maxAliasLength },
      };
    }),
    get: unary('Get', (req) => engine.get(req.dataset, req.oids)),
    commit: unary('Commit', async (req) => {
      const versions = await engine.commit({
        dataset: req.dataset,
        reads: req.reads,
        writes: req.writes,
        deletes: req.deletes,
        aliasSets: req.aliasSets,
        aliasDeletes: req.aliasDeletes,
      });
      return { versions };
    }),
    getAlias: unary('GetAlias', (req) => ({ oid: engine.getAlias(req.dataset, req.alias) })),
    listAliases: unary('ListAliases', (req) => ({ aliases: engine.listAliases(req.dataset) })),
    listBackends: unary('ListBackends', () => ({ backends: [self()] })),
    createDataset: unary('CreateDataset', async (req) => ({ created: await engine.createDataset(req.name) })),
    listDatasets: unary('ListDatasets', () => ({ names: engine.listDatasets() })),
  };
}
