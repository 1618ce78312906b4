/**
 * ObjectStore on S3 (AWS, or any S3-compatible server: versitygw, Ceph RGW, ...) through
 * `@aws-sdk/client-s3`. See object-store.ts for the contract.
 *
 * - Path-style addressing for a custom endpoint (`forcePathStyle`), virtual-hosted for AWS.
 * - Checksums `WHEN_REQUIRED` both ways: recent SDKs otherwise send every PUT as aws-chunked
 *   with a CRC trailer, which some S3-compatible servers store verbatim, and it costs about a
 *   third of PUT throughput. The tier keeps its own checksums of everything it stores.
 * - Short timeouts (connect, request, idle socket) and the SDK's standard retry strategy
 *   (exponential backoff with full jitter, a retry quota that stops retrying when most calls
 *   fail), so a store that is down surfaces as `ObjectStoreUnavailableError` quickly; the
 *   caller decides how long to keep trying.
 * - Bodies of 2 MiB and more go with `Expect: 100-continue` (the SDK's default), which lets a
 *   server refuse a create of a taken key before the body is sent. (Turning it off gained
 *   nothing here: the SDK then reuses keep-alive connections, and 8 MiB PUTs were not faster.)
 * - Credentials: given explicitly, or the SDK's default provider chain (AWS_* environment
 *   variables, ~/.aws files, SSO, web identity, container and instance metadata).
 */
import { createHash } from 'node:crypto';
import {
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import {
  ObjectExistsError,
  ObjectNotFoundError,
  ObjectStorePermanentError,
  ObjectStoreUnavailableError,
  type ByteRange,
  type CallOptions,
  type FailedKey,
  type ListOptions,
  type ObjectEntry,
  type ObjectInfo,
  type ObjectOp,
  type ObjectStore,
  type ObjectStoreError,
} from './object-store.js';

export interface S3ObjectStoreOptions {
  bucket: string;
  /** Prepended to every key (e.g. `datastores/ds1/`); listings return keys without it. */
  prefix?: string;
  /** e.g. `http://127.0.0.1:7070`; unset means AWS. A custom endpoint gets path-style addressing. */
  endpoint?: string;
  /** Unset: AWS_REGION / AWS_DEFAULT_REGION, else the SDK's config files, else `us-east-1` with a custom endpoint. */
  region?: string;
  /** Unset: the SDK's default credential provider chain. */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /** Path-style addressing; default: true when `endpoint` is set. */
  forcePathStyle?: boolean;
  /** Connecting (TCP + TLS) may take this long (default 3 s). */
  connectTimeoutMs?: number;
  /**
   * An attempt may take this long from its start, sending the body included, until the
   * answer's headers arrive (default 30 s: raise it for large objects on slow links).
   */
  requestTimeoutMs?: number;
  /** A connection may stay silent this long, also while a body streams (default 10 s). */
  idleTimeoutMs?: number;
  /** Attempts per call, first included (default 4), with the SDK's jittered exponential backoff. */
  maxAttempts?: number;
  /** Connections per client (default 64). */
  maxSockets?: number;
  /** Keys per ListObjectsV2 page (default 1000, S3's maximum). */
  listPageSize?: number;
  /** Called after every call, for metrics: the operation, how long it took, payload bytes and the error if it failed. */
  observe?: (e: { op: ObjectOp; ms: number; bytes: number; error?: ObjectStoreError | undefined }) => void;
}

const MAX_KEY_BYTES = 1024;
const DELETE_BATCH = 1000;

// The pinned SDK (see node/package.json) prints a one-time warning on Node < 22 that later
// releases will need Node 22. The pin is deliberate, so that warning is noise in a node's log;
// an explicit setting of the variable wins.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

export class S3ObjectStore implements ObjectStore {
  readonly bucket: string;
  readonly prefix: string;
  private readonly client: S3Client;
  private readonly pageSize: number;
  private readonly observe: S3ObjectStoreOptions['observe'];
  private closed = false;

  constructor(opts: S3ObjectStoreOptions) {
    this.bucket = opts.bucket;
    this.prefix = opts.prefix ?? '';
    this.pageSize = Math.max(1, Math.min(1000, opts.listPageSize ?? 1000));
    this.observe = opts.observe;
    const config = s3ClientConfig(opts);
    this.client = new S3Client(config);
    // Inside the SDK's retry loop, once per attempt: remembers whether any attempt of the call
    // may have been applied, so a write that failed in the end can say if its outcome is unknown
    // (the retry loop throws the last attempt's error only).
    // (Typed loosely: the middleware types live in @smithy/types, which is not our dependency.)
    const attemptOutcome = (next: (args: any) => Promise<any>, context: object) => async (args: unknown) => {
      try {
        return await next(args);
      } catch (e) {
        const ctx = context as { loamMaybeApplied?: boolean };
        ctx.loamMaybeApplied = (ctx.loamMaybeApplied ?? false) || attemptMayHaveApplied(e);
        if (e !== null && typeof e === 'object') (e as SdkErrorShape).$loamMaybeApplied = ctx.loamMaybeApplied;
        throw e;
      }
    };
    this.client.middlewareStack.addRelativeTo(attemptOutcome, { relation: 'after', toMiddleware: 'retryMiddleware', name: 'loamAttemptOutcome' });
  }

  async create(key: string, body: Uint8Array, opts: CallOptions = {}): Promise<ObjectInfo> {
    return this.call('create', key, body.length, opts, async () => {
      try {
        const out = await this.client.send(
          new PutObjectCommand({ Bucket: this.bucket, Key: this.fullKey(key, 'create'), Body: body, ContentLength: body.length, IfNoneMatch: '*' }),
          sendOptions(opts),
        );
        return { size: body.length, etag: unquote(out.ETag) };
      } catch (e) {
        // A retry of ours that found the key taken: the first attempt may have landed. Ours
        // only if the object holds exactly these bytes.
        if (isPreconditionFailed(e) && attempts(e) > 1) {
          let mine: ObjectInfo | undefined;
          try {
            mine = await this.holds(key, body, opts);
          } catch (check) {
            if (opts.signal?.aborted) throw check;
            // Could not look, or the object is gone again: whether ours landed is unknown.
            const c = check as ObjectStoreError;
            throw new ObjectStoreUnavailableError(`create ${key}: a retry found the key taken and reading it back failed (${c.message})`, 'create', key, c.code ?? 'Unknown', true, { cause: check });
          }
          if (mine) return mine;
        }
        throw e;
      }
    });
  }

  async get(key: string, range?: ByteRange, opts: CallOptions = {}): Promise<Buffer> {
    let header: string | undefined;
    if (range) {
      if ('suffix' in range) {
        checkCount(range.suffix, 'suffix', key);
        if (range.suffix === 0) return Buffer.alloc(0);
        header = `bytes=-${range.suffix}`;
      } else {
        checkCount(range.offset, 'offset', key);
        checkCount(range.length, 'length', key);
        if (range.length === 0) return Buffer.alloc(0);
        header = `bytes=${range.offset}-${range.offset + range.length - 1}`;
      }
    }
    let bytes = 0;
    return this.call(
      'get',
      key,
      () => bytes,
      opts,
      async () => {
        const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.fullKey(key, 'get'), Range: header }), sendOptions(opts));
        let data: Buffer;
        try {
          const arr = out.Body ? await out.Body.transformToByteArray() : new Uint8Array(0);
          data = Buffer.from(arr.buffer, arr.byteOffset, arr.byteLength);
        } catch (e) {
          // The body stream broke (connection reset, idle timeout): outside the SDK's retries.
          throw Object.assign(asError(e), { $bodyRead: true });
        }
        if (out.ContentLength !== undefined && data.length !== out.ContentLength) {
          throw Object.assign(new Error(`the answer ended after ${data.length} of ${out.ContentLength} bytes`), { code: 'TruncatedBody', $bodyRead: true });
        }
        if (header && out.ContentRange === undefined) {
          // A server that ignored the Range header sent the whole object.
          data = sliceRange(data, range!, key);
        }
        bytes = data.length;
        return data;
      },
    );
  }

  async head(key: string, opts: CallOptions = {}): Promise<ObjectInfo> {
    return this.call('head', key, 0, opts, async () => {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.fullKey(key, 'head') }), sendOptions(opts));
      return { size: out.ContentLength ?? 0, etag: unquote(out.ETag) };
    });
  }

  async list(prefix: string, opts: ListOptions = {}): Promise<ObjectEntry[]> {
    return this.call('list', prefix, 0, opts, async () => {
      const entries: ObjectEntry[] = [];
      let token: string | undefined;
      const startAfter = opts.startAfter === undefined ? undefined : this.fullKey(opts.startAfter, 'list', true);
      do {
        const out = await this.client.send(
          new ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: this.prefix + prefix,
            MaxKeys: this.pageSize,
            ContinuationToken: token,
            StartAfter: token === undefined ? startAfter : undefined,
          }),
          sendOptions(opts),
        );
        for (const o of out.Contents ?? []) {
          if (o.Key === undefined || !o.Key.startsWith(this.prefix)) continue;
          entries.push({ key: o.Key.slice(this.prefix.length), size: o.Size ?? 0, etag: unquote(o.ETag) });
        }
        token = out.IsTruncated ? out.NextContinuationToken : undefined;
      } while (token !== undefined);
      return entries;
    });
  }

  async delete(keys: readonly string[], opts: CallOptions = {}): Promise<void> {
    if (keys.length === 0) return;
    return this.call('delete', keys[0]!, 0, opts, async () => {
      const full = keys.map((k) => this.fullKey(k, 'delete'));
      const failed: FailedKey[] = [];
      for (let i = 0; i < full.length; i += DELETE_BATCH) {
        const batch = full.slice(i, i + DELETE_BATCH);
        const out = await this.client.send(
          new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true } }),
          sendOptions(opts),
        );
        for (const err of out.Errors ?? []) {
          failed.push({ key: (err.Key ?? '').slice(this.prefix.length), code: err.Code ?? 'Unknown', message: err.Message ?? '' });
        }
      }
      if (failed.length) {
        const msg = `delete: ${failed.length} of ${keys.length} keys were not deleted (${failed[0]!.key}: ${failed[0]!.code} ${failed[0]!.message})`;
        const transient = failed.every((f) => TRANSIENT_DELETE_CODES.has(f.code));
        throw transient
          ? new ObjectStoreUnavailableError(msg, 'delete', failed[0]!.key, failed[0]!.code, false, { failedKeys: failed })
          : new ObjectStorePermanentError(msg, 'delete', failed[0]!.key, failed[0]!.code, undefined, { failedKeys: failed });
      }
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    this.client.destroy();
  }

  // ---------------------------------------------------------------------------------------------

  private fullKey(key: string, op: ObjectOp, allowEmpty = false): string {
    const full = this.prefix + key;
    if ((!allowEmpty && key.length === 0) || Buffer.byteLength(full) > MAX_KEY_BYTES) {
      throw new ObjectStorePermanentError(`${op}: invalid key ${JSON.stringify(key)}: it must be 1 to ${MAX_KEY_BYTES} UTF-8 bytes with the prefix`, op, key, 'InvalidKey');
    }
    return full;
  }

  /** The object's info if `key` holds exactly `body`, else undefined. */
  private async holds(key: string, body: Uint8Array, opts: CallOptions): Promise<ObjectInfo | undefined> {
    const info = await this.head(key, opts);
    if (info.size !== body.length) return undefined;
    if (/^[0-9a-f]{32}$/.test(info.etag) && info.etag === createHash('md5').update(body).digest('hex')) return info;
    // An ETag that is not the body's MD5 (encryption, another scheme): compare the bytes.
    const stored = await this.get(key, undefined, opts);
    return Buffer.compare(stored, body) === 0 ? info : undefined;
  }

  private async call<T>(op: ObjectOp, key: string, bytes: number | (() => number), opts: CallOptions, fn: () => Promise<T>): Promise<T> {
    const t0 = performance.now();
    let error: ObjectStoreError | undefined;
    try {
      if (this.closed) throw new ObjectStorePermanentError(`${op} ${key}: the store is closed`, op, key, 'Closed');
      return await fn();
    } catch (e) {
      if (opts.signal?.aborted) throw opts.signal.reason;
      error = classify(op, key, e);
      throw error;
    } finally {
      this.observe?.({ op, ms: performance.now() - t0, bytes: typeof bytes === 'number' ? bytes : bytes(), error });
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// errors

/**
 * The S3Client settings an S3ObjectStore with `opts` uses (exported so that a benchmark's raw
 * baseline can use exactly the same ones: same checksums, timeouts, retries, sockets).
 */
export function s3ClientConfig(opts: Omit<S3ObjectStoreOptions, 'bucket'>): S3ClientConfig {
  const agent = { keepAlive: true, maxSockets: opts.maxSockets ?? 64 };
  const config: S3ClientConfig = {
    forcePathStyle: opts.forcePathStyle ?? opts.endpoint !== undefined,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts: opts.maxAttempts ?? 4,
    retryMode: 'standard',
    requestHandler: {
      connectionTimeout: opts.connectTimeoutMs ?? 3_000,
      requestTimeout: opts.requestTimeoutMs ?? 30_000,
      throwOnRequestTimeout: true,
      socketTimeout: opts.idleTimeoutMs ?? 10_000,
      httpAgent: agent,
      httpsAgent: agent,
    },
  };
  if (opts.endpoint !== undefined) config.endpoint = opts.endpoint;
  const region = opts.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? (opts.endpoint ? 'us-east-1' : undefined);
  if (region !== undefined) config.region = region;
  if (opts.credentials) config.credentials = opts.credentials;
  return config;
}

/** Codes DeleteObjects may report per key that a later try can cure. */
const TRANSIENT_DELETE_CODES = new Set(['InternalError', 'ServiceUnavailable', 'SlowDown', 'RequestTimeout']);
/** Network failures after which the request is known not to have reached the server. */
const NOT_SENT_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH']);
const NETWORK_CODES = new Set([...NOT_SENT_CODES, 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ECONNABORTED', 'ERR_STREAM_PREMATURE_CLOSE', 'UND_ERR_SOCKET']);
const THROTTLING_NAMES = new Set(['SlowDown', 'Throttling', 'ThrottlingException', 'TooManyRequestsException', 'RequestThrottled', 'ServiceUnavailable']);

interface SdkErrorShape {
  name?: string;
  code?: string;
  message?: string;
  $fault?: string;
  $metadata?: { httpStatusCode?: number; attempts?: number };
  $bodyRead?: boolean;
  $loamMaybeApplied?: boolean;
  cause?: unknown;
}

function asError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e));
}

function attempts(e: unknown): number {
  return (e as SdkErrorShape | undefined)?.$metadata?.attempts ?? 1;
}

function status(e: unknown): number | undefined {
  return e instanceof S3ServiceException ? e.$metadata.httpStatusCode : undefined;
}

function isPreconditionFailed(e: unknown): boolean {
  return status(e) === 412 || (e as SdkErrorShape | undefined)?.name === 'PreconditionFailed';
}

function networkCode(e: unknown, depth = 0): string | undefined {
  const x = e as SdkErrorShape | undefined;
  if (!x || depth > 5) return undefined;
  if (x.code && NETWORK_CODES.has(x.code)) return x.code;
  if (x.name === 'TimeoutError') return 'TimeoutError';
  return networkCode(x.cause, depth + 1);
}

/**
 * Whether one failed attempt may have been applied by the server: it may have received the
 * whole request unless the connection was refused, or it answered with an error that means
 * "not done" (4xx, throttling, 503).
 */
function attemptMayHaveApplied(e: unknown): boolean {
  if (e instanceof S3ServiceException) {
    const code = e.$metadata.httpStatusCode;
    return code === undefined || code === 500 || code === 502 || code === 504;
  }
  const net = networkCode(e);
  return net === undefined || !NOT_SENT_CODES.has(net);
}

/** For a write that failed in the end: may any of its attempts have been applied? */
function mayHaveApplied(e: unknown): boolean {
  const flag = (e as SdkErrorShape | undefined)?.$loamMaybeApplied;
  return flag ?? true; // no record (the failure came from outside the attempts): assume it may
}

/** Maps whatever the SDK threw to the contract's typed errors (an ObjectStoreError passes through). */
function classify(op: ObjectOp, key: string, e: unknown): ObjectStoreError {
  if (e instanceof ObjectStorePermanentError || e instanceof ObjectNotFoundError || e instanceof ObjectExistsError || e instanceof ObjectStoreUnavailableError) {
    return e;
  }
  const x = e as SdkErrorShape;
  // The raw HTTP response (sockets, agents) stays reachable on the cause but out of logs and test output.
  if (x !== null && typeof x === 'object' && '$response' in x) Object.defineProperty(x, '$response', { enumerable: false });
  const write = op === 'create' || op === 'delete';
  const what = `${op} ${key}`;
  const code = status(e);
  if (e instanceof S3ServiceException) {
    const name = e.name;
    const msg = `${what}: ${name} (HTTP ${code ?? '?'}) ${e.message}`;
    if (op === 'create' && isPreconditionFailed(e)) return new ObjectExistsError(`${what}: the key exists`, op, key, name, { cause: e });
    if ((code === 404 && name !== 'NoSuchBucket') || name === 'NoSuchKey' || name === 'NotFound') {
      return new ObjectNotFoundError(`${what}: no such key`, op, key, name, { cause: e });
    }
    // Throttled, failing on its side, or (409 ConditionalRequestConflict) a conflicting
    // conditional write was in flight: worth trying again later.
    if (code === 429 || code === 409 || THROTTLING_NAMES.has(name) || (code !== undefined && code >= 500)) {
      return new ObjectStoreUnavailableError(msg, op, key, name, write && mayHaveApplied(e), { cause: e });
    }
    return new ObjectStorePermanentError(msg, op, key, name, code, { cause: e });
  }
  const net = networkCode(e);
  if (net !== undefined || x?.$bodyRead) {
    const c = net ?? x?.code ?? 'BodyReadError';
    return new ObjectStoreUnavailableError(`${what}: ${c} ${x?.message ?? ''}`.trim(), op, key, c, write && mayHaveApplied(e), { cause: e });
  }
  // Anything else (no credentials, no region, a malformed answer): not cured by retrying.
  const name = x?.name ?? 'Error';
  return new ObjectStorePermanentError(`${what}: ${name} ${x?.message ?? String(e)}`, op, key, x?.code ?? name, undefined, { cause: e });
}

// ---------------------------------------------------------------------------------------------------
// small helpers

function sendOptions(opts: CallOptions): { abortSignal?: AbortSignal } {
  return opts.signal ? { abortSignal: opts.signal } : {};
}

function unquote(etag: string | undefined): string {
  return (etag ?? '').replace(/^"|"$/g, '');
}

function checkCount(n: number, what: string, key: string): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new ObjectStorePermanentError(`get ${key}: ${what} must be a non-negative integer, not ${n}`, 'get', key, 'InvalidRange');
}

function sliceRange(data: Buffer, range: ByteRange, key: string): Buffer {
  if ('suffix' in range) return data.subarray(Math.max(0, data.length - range.suffix));
  if (range.offset >= data.length && data.length > 0) {
    throw new ObjectStorePermanentError(`get ${key}: the range starts at ${range.offset}, past the end (${data.length} bytes)`, 'get', key, 'InvalidRange', 416);
  }
  return data.subarray(range.offset, range.offset + range.length);
}
