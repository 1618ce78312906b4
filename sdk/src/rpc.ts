import { credentials } from '@grpc/grpc-js';
import {
  StoreServiceClient, type CommitRequest, type CommitResponse, type CommitBatchRequest, type CommitBatchResponse, type CreateDatasetRequest, type CreateDatasetResponse,
  type GetAliasRequest, type GetAliasResponse, type GetRequest, type GetResponse, type HelloRequest, type HelloResponse,
  type ListAliasesRequest, type ListAliasesResponse, type ListBackendsRequest, type ListBackendsResponse,
  type ListDatasetsRequest, type ListDatasetsResponse, type LocateRequest, type LocateResponse,
  type MoveRequest, type MoveResponse, type DrainRequest, type DrainResponse, type CancelDrainResponse, type FlushResponse, type StatusResponse, type CommitMultiRequest, type CommitMultiResponse,
  type ReplicateRequest, type ReplicateResponse,
} from './gen/loam/v1/store.js';
import { callUnary, fromErrorDetail, type UnaryMethod } from './wire.js';
import { InternalError, UnavailableError } from './errors.js';

export interface RpcOptions {
  /** Deadline of each call, ms. No call waits longer: a dead node gives an error, never a hang. */
  deadlineMs: number;
  maxMessageBytes: number;
}

/**
 * Fields added to CommitRequest later (commit id, attempt) given their defaults: the generated
 * encoder would otherwise write `undefined` for a caller (a test, a tool) that leaves them out.
 */
function withCommitDefaults(r: CommitRequest): CommitRequest {
  return r.commitId !== undefined && r.attempt !== undefined ? r : { ...r, commitId: r.commitId ?? '', attempt: r.attempt ?? 0 };
}

/** Commits coalesced into one CommitBatch call at most (the node accepts 1024). */
const COMMITS_PER_BATCH = 256;

/** A promise-based, typed-error wrapper over the generated gRPC client of one node. */
export class NodeConnection {
  readonly address: string;
  /**
   * The node process this connection is meant for (Backend.instance), named in every call; ''
   * while unknown (a seed before its Hello answered, a node too old to have one).
   */
  instance: string;
  private queued: { req: CommitRequest; resolve: (r: CommitResponse) => void; reject: (e: unknown) => void }[] = [];
  private readonly client: StoreServiceClient;
  private readonly opts: RpcOptions;

  constructor(address: string, opts: RpcOptions, instance = '') {
    this.address = address;
    this.instance = instance;
    this.opts = opts;
    this.client = new StoreServiceClient(address, credentials.createInsecure(), {
      'grpc.max_receive_message_length': opts.maxMessageBytes,
      'grpc.max_send_message_length': opts.maxMessageBytes,
      'grpc.keepalive_time_ms': 30_000,
      'grpc.enable_retries': 0,
      // A restarted node must be found again within a second or two, not after grpc-js's
      // default reconnect backoff (up to 120 s).
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 1000,
      'grpc.dns_min_time_between_resolutions_ms': 200,
    });
  }

  private unary<Req, Res>(fn: UnaryMethod<Req, Res>, req: Req, deadlineMs = this.opts.deadlineMs): Promise<Res> {
    return callUnary(this.client, fn, req, deadlineMs, this.instance);
  }

  hello(req: HelloRequest, deadlineMs?: number): Promise<HelloResponse> {
    return this.unary(this.client.hello, req, deadlineMs);
  }
  get(req: GetRequest): Promise<GetResponse> {
    return this.unary(this.client.get, req);
  }
  commit(req: CommitRequest): Promise<CommitResponse> {
    return this.unary(this.client.commit, withCommitDefaults(req));
  }
  commitBatch(req: CommitBatchRequest): Promise<CommitBatchResponse> {
    return this.unary(this.client.commitBatch, { commits: req.commits.map(withCommitDefaults) });
  }

  /**
   * A commit that shares its call with the other commits issued in the same turn of the event
   * loop (one CommitBatch instead of many Commit calls: far less per-call work on both ends).
   * Each commit still succeeds or fails on its own; a lone commit goes out as a plain Commit.
   */
  commitCoalesced(req: CommitRequest): Promise<CommitResponse> {
    return new Promise((resolve, reject) => {
      this.queued.push({ req, resolve, reject });
      if (this.queued.length === 1) setImmediate(() => this.flushCommits());
    });
  }

  private flushCommits(): void {
    const all = this.queued;
    this.queued = [];
    for (let i = 0; i < all.length; i += COMMITS_PER_BATCH) {
      const batch = all.slice(i, i + COMMITS_PER_BATCH);
      if (batch.length === 1) {
        this.commit(batch[0].req).then(batch[0].resolve, batch[0].reject);
        continue;
      }
      this.commitBatch({ commits: batch.map((b) => b.req) }).then(
        (res) => batch.forEach((b, j) => {
          const r = res.results[j];
          if (!r) b.reject(new InternalError('node answered fewer commits than it was sent'));
          else if (r.error) b.reject(fromErrorDetail(r.error));
          else b.resolve({ versions: r.versions });
        }),
        (err) => batch.forEach((b) => b.reject(err)),
      );
    }
  }
  getAlias(req: GetAliasRequest): Promise<GetAliasResponse> {
    return this.unary(this.client.getAlias, req);
  }
  listAliases(req: ListAliasesRequest): Promise<ListAliasesResponse> {
    return this.unary(this.client.listAliases, req);
  }
  listBackends(req: ListBackendsRequest): Promise<ListBackendsResponse> {
    return this.unary(this.client.listBackends, req);
  }
  createDataset(req: CreateDatasetRequest): Promise<CreateDatasetResponse> {
    return this.unary(this.client.createDataset, req);
  }
  listDatasets(req: ListDatasetsRequest): Promise<ListDatasetsResponse> {
    return this.unary(this.client.listDatasets, req);
  }
  locate(req: LocateRequest): Promise<LocateResponse> {
    return this.unary(this.client.locate, req);
  }
  move(req: MoveRequest, deadlineMs?: number): Promise<MoveResponse> {
    return this.unary(this.client.move, req, deadlineMs);
  }
  replicate(req: ReplicateRequest, deadlineMs?: number): Promise<ReplicateResponse> {
    return this.unary(this.client.replicate, req, deadlineMs);
  }
  commitMulti(req: CommitMultiRequest): Promise<CommitMultiResponse> {
    const parts = req.parts.map((p) => ({ ...p, ops: p.ops && withCommitDefaults(p.ops) }));
    return this.unary(this.client.commitMulti, { ...req, attempt: req.attempt ?? 0, parts });
  }
  drain(req: DrainRequest, deadlineMs?: number): Promise<DrainResponse> {
    return this.unary(this.client.drain, req, deadlineMs);
  }
  cancelDrain(backend: number, deadlineMs?: number): Promise<CancelDrainResponse> {
    return this.unary(this.client.cancelDrain, { backend }, deadlineMs);
  }
  flush(deadlineMs?: number): Promise<FlushResponse> {
    return this.unary(this.client.flush, {}, deadlineMs);
  }
  status(deadlineMs?: number): Promise<StatusResponse> {
    return this.unary(this.client.status, {}, deadlineMs);
  }

  /** Waits until the channel is connected, or fails with UnavailableError at the deadline. */
  waitForReady(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.client.waitForReady(Date.now() + timeoutMs, (err) => {
        if (err) reject(new UnavailableError(`cannot reach a Loam node at ${this.address} within ${timeoutMs} ms: ${err.message}`));
        else resolve();
      });
    });
  }

  close(): void {
    this.client.close();
  }
}

