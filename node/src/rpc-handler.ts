import type { ServerUnaryCall, sendUnaryData } from '@grpc/grpc-js';
import { InvalidArgumentError, toServiceError } from '@loam/sdk/wire';
import type { NodeMetrics } from './metrics.js';
import type { Logger } from './logger.js';

/** What a request that is not valid protobuf deserializes to (see lenientDeserializers). */
export class MalformedRequest {
  constructor(readonly reason: string) {}
}

/**
 * Wraps a handler: rejects malformed requests, runs `before` (e.g. "has this node joined"),
 * records the request's metrics, and turns any failure into a typed gRPC error.
 */
export function unaryHandler(metrics: NodeMetrics, log: Logger, before: () => void = () => undefined) {
  return function unary<Req, Res>(method: string, fn: (req: Req) => Res | Promise<Res>) {
    // prom-client hashes label objects on every call; the children per outcome are looked up once.
    const children = new Map<string, { count: { inc(): void }; seconds: { observe(v: number): void } }>();
    const child = (outcome: string) => {
      let c = children.get(outcome);
      if (!c) {
        c = { count: metrics.requests.labels(method, outcome), seconds: metrics.requestSeconds.labels(method, outcome) };
        children.set(outcome, c);
      }
      return c;
    };
    return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
      const t0 = process.hrtime.bigint();
      const done = (outcome: string) => {
        const c = child(outcome);
        c.count.inc();
        c.seconds.observe(Number(process.hrtime.bigint() - t0) / 1e9);
      };
      let result: Res | Promise<Res>;
      try {
        if (call.request === null || call.request === undefined) throw new InvalidArgumentError('empty request');
        if (call.request instanceof MalformedRequest) throw new InvalidArgumentError(`malformed request: ${call.request.reason}`);
        before();
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
  };
}
