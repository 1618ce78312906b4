/**
 * The wire contract shared by the SDK and the node: generated protobuf types and service
 * definitions, oids, limits, and the mapping of typed errors to gRPC statuses and back.
 * The node imports this entry point (`@loam/sdk/wire`) and nothing else from the SDK but the codec.
 */
import { Metadata, status as Status, type CallOptions, type ServiceError } from '@grpc/grpc-js';
import { ErrorDetail } from './gen/loam/v1/store.js';
import { errorFromCode, LoamError, type ErrorCode, UnavailableError, DeadlineExceededError, InternalError } from './errors.js';

export * from './gen/loam/v1/store.js';
export * from './oid.js';
export * from './errors.js';
export * from './limits.js';

export const ERROR_TRAILER = 'loam-error-bin';
export const PROTOCOL_VERSION = '1';

const statusOf: Record<ErrorCode, Status> = {
  NOT_FOUND: Status.NOT_FOUND,
  UNKNOWN_DATASET: Status.NOT_FOUND,
  ALIAS_EXISTS: Status.ALREADY_EXISTS,
  ALREADY_EXISTS: Status.ALREADY_EXISTS,
  WRITE_CONFLICT: Status.ABORTED,
  READ_CONFLICT: Status.ABORTED,
  INVALID_ARGUMENT: Status.INVALID_ARGUMENT,
  LIMIT_EXCEEDED: Status.INVALID_ARGUMENT,
  UNAVAILABLE: Status.UNAVAILABLE,
  DEADLINE_EXCEEDED: Status.DEADLINE_EXCEEDED,
  INTERNAL: Status.INTERNAL,
  REDIRECT: Status.FAILED_PRECONDITION,
  DRAINED: Status.UNAVAILABLE,
  ABORTED: Status.ABORTED,
  COMMIT_UNKNOWN: Status.UNKNOWN,
  FAILED_PRECONDITION: Status.FAILED_PRECONDITION,
  DRAIN_CANCELLED: Status.ABORTED,
};

/** The typed detail of any thrown value (an unexpected one becomes INTERNAL). */
export function toErrorDetail(err: unknown): ErrorDetail {
  const e = err instanceof LoamError ? err : new InternalError(err instanceof Error ? err.message : String(err));
  return {
    code: e.code,
    message: e.message,
    oid: e.oid ?? '',
    alias: e.alias ?? '',
    dataset: e.dataset ?? '',
    expectedVersion: e.expectedVersion ?? 0,
    actualVersion: e.actualVersion ?? 0,
    limit: e.limit ?? '',
    node: e.node ?? 0,
    address: e.address ?? '',
    notApplied: e.notApplied ?? false,
  };
}

/** The typed error an ErrorDetail describes. */
export function fromErrorDetail(d: ErrorDetail): LoamError {
  return errorFromCode(d.code, d.message, {
    oid: d.oid, alias: d.alias, dataset: d.dataset,
    expectedVersion: d.expectedVersion, actualVersion: d.actualVersion, limit: d.limit,
    node: d.node, address: d.address, notApplied: d.notApplied,
  });
}

/** Turns any thrown value into a gRPC error carrying a typed ErrorDetail trailer. */
export function toServiceError(err: unknown): Partial<ServiceError> {
  const d = toErrorDetail(err);
  const metadata = new Metadata();
  metadata.set(ERROR_TRAILER, Buffer.from(ErrorDetail.encode(d).finish()));
  return { code: statusOf[d.code as ErrorCode] ?? Status.INTERNAL, details: d.message, metadata };
}

/** A generated client's unary method, called with metadata and options. */
export type UnaryMethod<Req, Res> = (req: Req, metadata: Metadata, options: Partial<CallOptions>, cb: (err: ServiceError | null, res: Res) => void) => unknown;

/** One unary call of `client` with a deadline (so it never hangs); a failure comes back as its typed error. */
export function callUnary<Req, Res>(client: object, fn: UnaryMethod<Req, Res>, req: Req, deadlineMs: number, instance?: string): Promise<Res> {
  return new Promise((resolve, reject) => {
    const deadline = Date.now() + deadlineMs;
    const md = deadlineMetadata(deadline);
    if (instance) md.set(INSTANCE_HEADER, instance);
    fn.call(client, req, md, { deadline }, (err, res) => (err ? reject(fromServiceError(err)) : resolve(res)));
  });
}

/**
 * The caller's deadline as wall-clock time (ms since the epoch). gRPC sends a deadline as a
 * relative timeout that the server starts counting when it reads the call, so a node that was
 * paused (SIGSTOP, a long GC, a VM stall) would run a call whose caller gave up long ago; with
 * this the node refuses it. Assumes clocks agree within well under a call's deadline (NTP).
 */
export const DEADLINE_HEADER = 'loam-deadline-ms';

/**
 * The process (Backend.instance) a call is meant for. Addresses get reused (a Pod IP, a port):
 * a node that is not that process refuses the call, typed as unavailable and not applied.
 */
export const INSTANCE_HEADER = 'loam-node-instance';

export function deadlineMetadata(deadline: number, md = new Metadata()): Metadata {
  md.set(DEADLINE_HEADER, String(Math.round(deadline)));
  return md;
}

/** Turns a gRPC error from a node back into the typed error it was raised as. */
export function fromServiceError(err: unknown): LoamError {
  if (err instanceof LoamError) return err;
  const se = err as Partial<ServiceError>;
  const raw = se?.metadata?.get?.(ERROR_TRAILER)?.[0];
  if (raw instanceof Buffer) {
    try {
      return fromErrorDetail(ErrorDetail.decode(raw));
    } catch {
      // fall through: a garbled trailer is reported by status below
    }
  }
  const message = se?.details || (err instanceof Error ? err.message : String(err));
  switch (se?.code) {
    case Status.UNAVAILABLE:
    case Status.CANCELLED:
      return new UnavailableError(`node unavailable: ${message}`);
    case Status.DEADLINE_EXCEEDED:
      return new DeadlineExceededError(`deadline exceeded: ${message}`);
    case Status.RESOURCE_EXHAUSTED:
      return errorFromCode('LIMIT_EXCEEDED', message, { limit: 'grpc message size' });
    default:
      return new InternalError(message || 'unknown error');
  }
}
