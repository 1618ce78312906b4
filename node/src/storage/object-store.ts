/**
 * The seam between the S3 tier and an object store (S3 or anything that speaks it). The tier
 * uses nothing else of S3, so this is all a store must do, and all a fault test must fake.
 *
 * Contract:
 * - Keys are non-empty strings of at most 1024 UTF-8 bytes; a body is a whole object in memory.
 *   Objects are immutable: nothing here overwrites one, and a key that was deleted may be
 *   created again.
 * - `create(key, body)` stores a new object only if `key` does not exist (S3's conditional
 *   create, `If-None-Match: *`). If it exists, it rejects with `ObjectExistsError` and the
 *   existing object is unchanged. It resolves once the object is durable in the store, with its
 *   size and ETag. A create that rejected with `ObjectStoreUnavailableError` whose
 *   `outcomeUnknown` is true may have created the object: read it back (or create again and
 *   compare on `ObjectExistsError`) before relying on either outcome. When a store retries a
 *   create internally and the retry finds the key taken, it resolves only if the object holds
 *   exactly `body` (the first attempt landed); otherwise it rejects with `ObjectExistsError`.
 * - `get(key)` returns the whole object; `get(key, { offset, length })` the bytes
 *   `[offset, offset + length)`, cut short where the object ends; `get(key, { suffix })` its
 *   last `suffix` bytes (all of it when it is shorter). A range that starts at or past the end
 *   of a non-empty object rejects with `ObjectStorePermanentError` (code `InvalidRange`).
 *   Bytes are returned as the store serves them: integrity is the caller's (checksums).
 * - `head(key)` returns size and ETag without the body.
 * - `list(prefix)` returns every object whose key starts with `prefix`, in ascending key order
 *   (UTF-8 byte order), however many pages it takes; `startAfter` skips keys up to and
 *   including it. A listing is not a snapshot: objects created or deleted meanwhile may or
 *   may not appear.
 * - `delete(keys)` removes the keys (in batches: S3 takes 1000 a request). Keys that do not
 *   exist are not an error. It resolves once every key is gone; if some could not be deleted
 *   it rejects (unavailable or permanent, by the reasons), and the error names them
 *   (`failedKeys`); the others are deleted.
 * - `get`, `head` reject with `ObjectNotFoundError` for a key that does not exist.
 * - Failures are typed (all extend `ObjectStoreError`): `ObjectNotFoundError`,
 *   `ObjectExistsError`, `ObjectStoreUnavailableError` (transient: the store cannot be reached,
 *   timed out, is throttling or failing on its side, after the store's own retries; trying
 *   again later may work), `ObjectStorePermanentError` (anything else: access denied, no such
 *   bucket, a bad request; trying again will not help). `signal` aborts a call: it rejects
 *   with the signal's reason, and a create or delete aborted in flight has an unknown outcome.
 * - Calls may run concurrently; a store bounds its own connections.
 * - `close()` releases connections; calls after it fail.
 */
export interface ObjectStore {
  create(key: string, body: Uint8Array, opts?: CallOptions): Promise<ObjectInfo>;
  get(key: string, range?: ByteRange, opts?: CallOptions): Promise<Buffer>;
  head(key: string, opts?: CallOptions): Promise<ObjectInfo>;
  list(prefix: string, opts?: ListOptions): Promise<ObjectEntry[]>;
  delete(keys: readonly string[], opts?: CallOptions): Promise<void>;
  close(): Promise<void>;
}

export interface CallOptions {
  signal?: AbortSignal;
}

export interface ListOptions extends CallOptions {
  /** Only keys after this one (exclusive). */
  startAfter?: string;
}

/** `{ offset, length }`: bytes from `offset`; `{ suffix }`: the last `suffix` bytes. */
export type ByteRange = { offset: number; length: number } | { suffix: number };

export interface ObjectInfo {
  size: number;
  /** As the store reports it, without quotes. Not a checksum the caller can rely on. */
  etag: string;
}

export interface ObjectEntry extends ObjectInfo {
  key: string;
}

export type ObjectOp = 'create' | 'get' | 'head' | 'list' | 'delete';

export interface FailedKey {
  key: string;
  code: string;
  message: string;
}

export class ObjectStoreError extends Error {
  /** For `delete`: the keys that could not be removed (the others were). */
  readonly failedKeys?: FailedKey[];

  constructor(
    message: string,
    readonly op: ObjectOp,
    /** The key (or prefix, for list; the first key, for delete) the call was about. */
    readonly key: string,
    /** The store's own error code or name (e.g. `NoSuchKey`, `ECONNREFUSED`, `TimeoutError`). */
    readonly code: string,
    options?: { cause?: unknown; failedKeys?: FailedKey[] },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    if (options?.failedKeys) this.failedKeys = options.failedKeys;
  }
}

export class ObjectNotFoundError extends ObjectStoreError {}

/** `create` found the key taken; the existing object is unchanged. */
export class ObjectExistsError extends ObjectStoreError {}

/**
 * The store could not be reached or could not serve the call now (connection refused or
 * reset, timeout, throttling, a 5xx answer), after the store's own retries.
 */
export class ObjectStoreUnavailableError extends ObjectStoreError {
  constructor(
    message: string,
    op: ObjectOp,
    key: string,
    code: string,
    /**
     * For create and delete: the request may have been applied (it may have reached the store
     * before the failure). False when it is known not to have been (the connection was
     * refused, or the store answered that it did not apply it).
     */
    readonly outcomeUnknown: boolean,
    options?: { cause?: unknown; failedKeys?: FailedKey[] },
  ) {
    super(message, op, key, code, options);
  }
}

/** A failure that retrying will not cure: access denied, no such bucket, an invalid range, a bad request. */
export class ObjectStorePermanentError extends ObjectStoreError {
  constructor(
    message: string,
    op: ObjectOp,
    key: string,
    code: string,
    /** The HTTP status of the answer, when there was one. */
    readonly status?: number,
    options?: { cause?: unknown; failedKeys?: FailedKey[] },
  ) {
    super(message, op, key, code, options);
  }
}
