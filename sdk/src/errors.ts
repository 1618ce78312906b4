/**
 * Typed errors. Every error that crosses the wire carries one of these codes (in the
 * `loam-error-bin` trailer) and surfaces in the SDK as the matching class, so callers can
 * `instanceof` instead of parsing messages.
 */
export type ErrorCode =
  | 'NOT_FOUND'
  | 'UNKNOWN_DATASET'
  | 'ALIAS_EXISTS'
  | 'ALREADY_EXISTS'
  | 'WRITE_CONFLICT'
  | 'READ_CONFLICT'
  | 'INVALID_ARGUMENT'
  | 'LIMIT_EXCEEDED'
  | 'UNAVAILABLE'
  | 'DEADLINE_EXCEEDED'
  | 'INTERNAL'
  | 'REDIRECT'
  | 'DRAINED'
  | 'ABORTED'
  | 'COMMIT_UNKNOWN'
  | 'FAILED_PRECONDITION'
  | 'DRAIN_CANCELLED';

export interface ErrorFields {
  oid?: string;
  alias?: string;
  dataset?: string;
  expectedVersion?: number;
  actualVersion?: number;
  limit?: string;
  /** With REDIRECT: the node number and address to ask instead. */
  node?: number;
  address?: string;
  /** Set when the node knows nothing of the request was applied. */
  notApplied?: boolean;
}

export class LoamError extends Error {
  readonly code: ErrorCode;
  readonly oid?: string;
  readonly alias?: string;
  readonly dataset?: string;
  readonly expectedVersion?: number;
  readonly actualVersion?: number;
  readonly limit?: string;
  readonly node?: number;
  readonly address?: string;
  readonly notApplied?: boolean;

  constructor(code: ErrorCode, message: string, fields: ErrorFields = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
    Object.assign(this, stripUndefined(fields));
  }
}

function stripUndefined(fields: ErrorFields): ErrorFields {
  const out: ErrorFields = {};
  for (const [k, v] of Object.entries(fields)) {
    if (v !== undefined && v !== '' && v !== 0 && v !== false) (out as Record<string, unknown>)[k] = v;
  }
  return out;
}

/** An object, alias or dataset does not exist. */
export class NotFoundError extends LoamError {
  constructor(message: string, fields?: ErrorFields, code: ErrorCode = 'NOT_FOUND') {
    super(code, message, fields);
  }
}
/** The dataset named in a URL, ref or request does not exist on the cluster. */
export class UnknownDatasetError extends NotFoundError {
  constructor(message: string, fields?: ErrorFields) {
    super(message, fields, 'UNKNOWN_DATASET');
  }
}
export class AliasExistsError extends LoamError {
  constructor(message: string, fields?: ErrorFields) {
    super('ALIAS_EXISTS', message, fields);
  }
}
export class AlreadyExistsError extends LoamError {
  constructor(message: string, fields?: ErrorFields) {
    super('ALREADY_EXISTS', message, fields);
  }
}
/** Base of both conflict kinds: the transaction was not applied and may be retried. */
export class ConflictError extends LoamError {}
/** An object this transaction wrote was changed since it was read. */
export class WriteConflictError extends ConflictError {
  constructor(message: string, fields?: ErrorFields) {
    super('WRITE_CONFLICT', message, fields);
  }
}
/** An object this transaction only read was changed before it committed. */
export class ReadConflictError extends ConflictError {
  constructor(message: string, fields?: ErrorFields) {
    super('READ_CONFLICT', message, fields);
  }
}
/**
 * The transaction was aborted (a participant could not prepare, or gave up waiting for its
 * coordinator): nothing of it was applied, and `transaction()` runs it again.
 */
export class AbortedError extends ConflictError {
  constructor(message: string, fields?: ErrorFields) {
    super('ABORTED', message, fields);
  }
}
export class InvalidArgumentError extends LoamError {
  constructor(message: string, fields?: ErrorFields, code: ErrorCode = 'INVALID_ARGUMENT') {
    super(code, message, fields);
  }
}
/** A configured limit (object size, batch size, alias length ...) was exceeded; `limit` names it. */
export class LimitExceededError extends InvalidArgumentError {
  constructor(message: string, fields?: ErrorFields) {
    super(message, fields, 'LIMIT_EXCEEDED');
  }
}
/** The node cannot be reached or cannot serve now; nothing was applied unless stated otherwise. */
export class UnavailableError extends LoamError {
  constructor(message: string, fields?: ErrorFields, options?: { cause?: unknown }) {
    super('UNAVAILABLE', message, fields, options);
  }
}
export class DeadlineExceededError extends LoamError {
  constructor(message: string, fields?: ErrorFields) {
    super('DEADLINE_EXCEEDED', message, fields);
  }
}
export class InternalError extends LoamError {
  constructor(message: string, fields?: ErrorFields) {
    super('INTERNAL', message, fields);
  }
}

/**
 * A commit may or may not have been applied, and its outcome could not be learned: the node
 * stopped answering after the request may have reached it, and retries (with the same commit
 * id, which the node would have recognized) did not get through before the deadline. Never
 * retried automatically: running the transaction again could apply it twice. Read the objects
 * to find out.
 */
export class CommitUnknownError extends LoamError {
  constructor(message: string, fields?: ErrorFields, options?: { cause?: unknown }) {
    super('COMMIT_UNKNOWN', message, fields, options);
  }
}

/**
 * The object is held (or known) by another node. The SDK follows it itself (a bounded number
 * of hops) and updates its location cache; applications see it only if the hops run out.
 */
export class RedirectError extends LoamError {
  constructor(message: string, fields?: ErrorFields) {
    super('REDIRECT', message, fields);
  }
}

/** The node was drained: it holds nothing and takes no new objects. `node` is its number. */
export class NodeDrainedError extends UnavailableError {
  constructor(message: string, fields?: ErrorFields) {
    super(message, fields);
    (this as { code: ErrorCode }).code = 'DRAINED';
  }
}

/** The system is not in a state the operation needs (what is missing is in the message); retry once it is. */
export class FailedPreconditionError extends LoamError {
  constructor(message: string, fields?: ErrorFields) {
    super('FAILED_PRECONDITION', message, fields);
  }
}

/**
 * The drain was cancelled (CancelDrain) before it finished: the node is a ready member again,
 * and the objects it had moved stay where they went. `node` is its number.
 */
export class DrainCancelledError extends LoamError {
  constructor(message: string, fields?: ErrorFields) {
    super('DRAIN_CANCELLED', message, fields);
  }
}

const byCode: Record<ErrorCode, new (message: string, fields?: ErrorFields) => LoamError> = {
  NOT_FOUND: NotFoundError,
  UNKNOWN_DATASET: UnknownDatasetError,
  ALIAS_EXISTS: AliasExistsError,
  ALREADY_EXISTS: AlreadyExistsError,
  WRITE_CONFLICT: WriteConflictError,
  READ_CONFLICT: ReadConflictError,
  INVALID_ARGUMENT: InvalidArgumentError,
  LIMIT_EXCEEDED: LimitExceededError,
  UNAVAILABLE: UnavailableError,
  DEADLINE_EXCEEDED: DeadlineExceededError,
  INTERNAL: InternalError,
  REDIRECT: RedirectError,
  DRAINED: NodeDrainedError,
  ABORTED: AbortedError,
  COMMIT_UNKNOWN: CommitUnknownError,
  FAILED_PRECONDITION: FailedPreconditionError,
  DRAIN_CANCELLED: DrainCancelledError,
};

export function errorFromCode(code: string, message: string, fields?: ErrorFields): LoamError {
  const ctor = byCode[code as ErrorCode] ?? InternalError;
  return new ctor(message, fields);
}
