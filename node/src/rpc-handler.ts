import type { ServerUnaryCall, sendUnaryData } from '@grpc/grpc-js';
import { DEADLINE_HEADER, INSTANCE_HEADER, DeadlineExceededError, InvalidArgumentError, UnavailableError, toServiceError, type Backend } from '@loam/sdk/wire';
import type { NodeMetrics } from './metrics.js';
import type { Logger } from './logger.js';

/** What a request that is not valid protobuf deserializes to (see lenientDeserializers). */
export class MalformedRequest {
  constructor(readonly reason: string) {}
}

/** What a method knows of its call: when the caller stops waiting (ms since the epoch), if it said. */
export interface CallContext {
  deadline?: number;
  /** The node process the caller meant (INSTANCE_HEADER), if it said. */
  instance?: string;
}

/** A handled method: answers `req` through `done`, with a typed error or the response. */
export type Method<Req, Res> = (req: Req, done: (err: unknown, res?: Res) => void, call?: CallContext) => void;

/**
 * Makes handled methods: each rejects malformed requests, runs `before` (e.g. "has this node
 * joined"), records its metrics and logs unexpected failures. The same method serves a unary
 * RPC (unary()) and a message on a peer link stream.
 */
export function methodMaker(metrics: NodeMetrics, log: Logger, before: () => void = () => undefined, self?: () => Backend) {
  return function method<Req, Res>(name: string, fn: (req: Req, call: CallContext) => Res | Promise<Res>): Method<Req, Res> {
    // prom-client hashes label objects on every call; the children per outcome are looked up once.
    const children = new Map<string, { count: { inc(): void }; seconds: { observe(v: number): void } }>();
    const child = (outcome: string) => {
      let c = children.get(outcome);
      if (!c) {
        c = { count: metrics.requests.labels(name, outcome), seconds: metrics.requestSeconds.labels(name, outcome) };
        children.set(outcome, c);
      }
      return c;
    };
    return (req, done, call = {}) => {
      const t0 = process.hrtime.bigint();
      const record = (outcome: string) => {
        const c = child(outcome);
        c.count.inc();
        c.seconds.observe(Number(process.hrtime.bigint() - t0) / 1e9);
      };
      const fail = (e: unknown) => {
        const code = (e as { code?: string }).code ?? 'INTERNAL';
        record(code.toLowerCase());
        if (code === 'INTERNAL' || code === 'UNAVAILABLE') log.error({ method: name, err: e }, 'request failed');
        else log.debug({ method: name, code, msg: (e as Error).message }, 'request rejected');
        done(e);
      };
      let result: Res | Promise<Res>;
      try {
        if (req === null || req === undefined) throw new InvalidArgumentError('empty request');
        if (req instanceof MalformedRequest) throw new InvalidArgumentError(`malformed request: ${req.reason}`);
        if (call.instance && self) {
          // Meant for the process that had this address before (the node moved, or this is
          // another node or DataStore on a reused IP): applying it here would acknowledge a
          // write the cluster it was meant for never sees.
          const me = self();
          if (me.instance && call.instance !== me.instance) {
            throw new UnavailableError(`this address is now node ${me.number} (${me.id}), not the node process the call was meant for: it moved; nothing was done`, { node: me.number, address: me.address, notApplied: true });
          }
        }
        before();
        if (call.deadline !== undefined && Date.now() >= call.deadline) {
          throw new DeadlineExceededError(`${name}: the caller's deadline passed before this node read the call; nothing was done`);
        }
        result = fn(req, call);
      } catch (e) {
        fail(e);
        return;
      }
      if (result instanceof Promise) {
        result.then((r) => {
          record('ok');
          done(null, r);
        }, fail);
      } else {
        record('ok');
        done(null, result);
      }
    };
  };
}

/** A method as a grpc-js unary handler: a failure goes out as a typed gRPC error. */
export function unary<Req, Res>(m: Method<Req, Res>) {
  return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
    const d = call.getDeadline();
    let deadline = d instanceof Date ? d.getTime() : Number.isFinite(d) ? d : undefined;
    const wall = Number(call.metadata.get(DEADLINE_HEADER)[0]);
    if (Number.isFinite(wall) && wall > 0) deadline = Math.min(deadline ?? wall, wall);
    const instance = call.metadata.get(INSTANCE_HEADER)[0];
    m(call.request, (err, res) => {
      if (err) callback(toServiceError(err) as Parameters<sendUnaryData<Res>>[0]);
      else callback(null, res as Res);
    }, { deadline, ...(typeof instance === 'string' && instance ? { instance } : {}) });
  };
}

/** The old one-step form: unaryHandler(...)(name, fn) is unary(methodMaker(...)(name, fn)). */
export function unaryHandler(metrics: NodeMetrics, log: Logger, before: () => void = () => undefined, self?: () => Backend) {
  const method = methodMaker(metrics, log, before, self);
  return <Req, Res>(name: string, fn: (req: Req, call: CallContext) => Res | Promise<Res>) => unary(method<Req, Res>(name, fn));
}
