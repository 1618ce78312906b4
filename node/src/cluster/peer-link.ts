import type { ClientDuplexStream } from '@grpc/grpc-js';
import {
  DeadlineExceededError, UnavailableError, fromErrorDetail,
  type DropReplicasRequest, type DropReplicasResponse, type FinishRequest, type FinishResponse,
  type InstallReplicasRequest, type InstallReplicasResponse, type NodeServiceClient,
  type PeerRequest, type PeerResponse, type PrepareRequest, type PrepareResponse,
} from '@loam/sdk/wire';
import { peerCallError } from './peer-auth.js';

/** The calls a Link carries, by their field name in PeerRequest / PeerResponse. */
export interface LinkCalls {
  prepare: [PrepareRequest, PrepareResponse];
  finish: [FinishRequest, FinishResponse];
  installReplicas: [InstallReplicasRequest, InstallReplicasResponse];
  dropReplicas: [DropReplicasRequest, DropReplicasResponse];
}

interface Pending {
  kind: keyof LinkCalls;
  resolve: (res: unknown) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

/** Calls in flight on one link, at most: a caller past it gets a typed error, not a queue. */
const MAX_PENDING = 100_000;

/**
 * The calling side of a Link stream to one node (see store.proto): each call is one message,
 * answered by id. The stream opens on first use and again after it fails; a failure fails
 * every call in flight on it with the stream's error (UNAVAILABLE when the node went away), as
 * their unary RPCs would have. A call past its deadline fails with DEADLINE_EXCEEDED, and resets
 * the stream when nothing at all came back on it meanwhile (a stalled node or connection).
 */
export class PeerLink {
  private stream?: ClientDuplexStream<PeerRequest, PeerResponse>;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private closed = false;
  /** When the current stream last delivered an answer (ms since the epoch). */
  private heardAt = 0;

  constructor(private readonly client: NodeServiceClient, private readonly address: string, private readonly deadlineMs: number) {}

  call<K extends keyof LinkCalls>(kind: K, req: LinkCalls[K][0], deadlineMs = this.deadlineMs): Promise<LinkCalls[K][1]> {
    if (this.closed) return Promise.reject(new UnavailableError(`link to ${this.address} is closed`));
    if (this.pending.size >= MAX_PENDING) return Promise.reject(new UnavailableError(`too many calls in flight to ${this.address}`));
    const stream = this.open();
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const sentAt = Date.now();
      const timer = setTimeout(() => {
        if (!this.pending.delete(id)) return;
        reject(new DeadlineExceededError(`node ${this.address} did not answer ${kind} within ${deadlineMs} ms`));
        // Nothing heard on the stream since this call went out: the node (or the connection) is
        // stuck, and so is every call behind it. A slow call on a live stream fails alone.
        if (this.heardAt < sentAt) this.reset(stream, new UnavailableError(`link to ${this.address} reset: no answer for ${deadlineMs} ms`));
      }, deadlineMs);
      this.pending.set(id, { kind, resolve: resolve as (res: unknown) => void, reject, timer });
      stream.write({ id, [kind]: req } as PeerRequest);
    });
  }

  private open(): ClientDuplexStream<PeerRequest, PeerResponse> {
    if (this.stream) return this.stream;
    const stream = this.client.link();
    this.stream = stream;
    this.heardAt = 0;
    stream.on('data', (res: PeerResponse) => {
      this.heardAt = Date.now();
      const p = this.pending.get(res.id);
      if (!p) return; // timed out before
      this.pending.delete(res.id);
      clearTimeout(p.timer);
      if (res.error) p.reject(fromErrorDetail(res.error));
      else p.resolve(res[p.kind] ?? {});
    });
    stream.on('error', (e) => this.reset(stream, peerCallError(e, this.address)));
    // The node ended the stream (it is stopping): what is still in flight will not be answered.
    stream.on('end', () => this.reset(stream, new UnavailableError(`node ${this.address} closed the link`)));
    return stream;
  }

  /** Drops `stream` (if it is still the current one) and fails every call in flight on it. */
  private reset(stream: ClientDuplexStream<PeerRequest, PeerResponse>, err: Error): void {
    if (this.stream !== stream) return;
    this.stream = undefined;
    stream.cancel();
    const failed = [...this.pending.values()];
    this.pending.clear();
    for (const p of failed) {
      clearTimeout(p.timer);
      p.reject(err);
    }
  }

  close(): void {
    this.closed = true;
    if (this.stream) this.reset(this.stream, new UnavailableError(`link to ${this.address} is closed`));
  }
}
