/** @loam/sdk: keep graphs of ordinary class instances in a Loam DataStore. */
export { connect, Client, type ConnectOptions, type TransactionOptions, type BackendInfo, type Location,
  type NodeStatus, type NodeStatusAnswer, type NodeUnreachable } from './client.js';
export { Transaction } from './transaction.js';
export { Persistent, GenericObject, model, registerModel } from './model.js';
export { Ref, parseUrl, DEFAULT_URL } from './ref.js';
export { isOid, newOid, newTxid, oidHomeNode } from './oid.js';
export { DEFAULT_LIMITS, type Limits } from './limits.js';
export { encodeValue, decodeValue, CODEC_V1 } from './codec.js';
export {
  LoamError, NotFoundError, UnknownDatasetError, AliasExistsError, AlreadyExistsError, ConflictError,
  WriteConflictError, ReadConflictError, InvalidArgumentError, LimitExceededError, UnavailableError,
  DeadlineExceededError, InternalError, RedirectError, NodeDrainedError, AbortedError, CommitUnknownError, FailedPreconditionError, DrainCancelledError, type ErrorCode,
} from './errors.js';
