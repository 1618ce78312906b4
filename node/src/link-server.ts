import type { ServerDuplexStream } from '@grpc/grpc-js';
import {
  InvalidArgumentError, UnavailableError, toErrorDetail, toServiceError,
  type DropReplicasRequest, type DropReplicasResponse, type FinishRequest, type FinishResponse,
  type InstallReplicasRequest, type InstallReplicasResponse, type PeerRequest, type PeerResponse,
  type PrepareRequest, type PrepareResponse,
} from '@loam/sdk/wire';
import { MalformedRequest, type Method } from './rpc-handler.js';
import type { Logger } from './logger.js';

/** The methods a Link stream carries: the same handled methods as their unary RPCs. */
export interface LinkMethods {
  prepare: Method<PrepareRequest, PrepareResponse>;
  finish: Method<FinishRequest, FinishResponse>;
  installReplicas: Method<InstallReplicasRequest, InstallReplicasResponse>;
  dropReplicas: Method<DropReplicasRequest, DropReplicasResponse>;
}

const KINDS = ['prepare', 'finish', 'installReplicas', 'dropReplicas'] as const;

type Stream = ServerDuplexStream<PeerRequest, PeerResponse>;

/**
 * The serving side of Link streams (see store.proto): runs each message's method as soon as it
 * arrives and answers it by id when it completes, in any order. close() stops taking messages
 * (later ones are answered UNAVAILABLE) and ends each stream once its running calls are
 * answered, so the gRPC server's graceful shutdown is not held up by open links.
 */
export class LinkServer {
  private readonly open = new Set<{ stream: Stream; drain: () => void }>();
  private closing = false;

  constructor(private readonly methods: LinkMethods, private readonly log: Logger) {}

  readonly handle = (stream: Stream): void => {
    if (this.closing) {
      stream.emit('error', toServiceError(new UnavailableError('node is stopping')));
      return;
    }
    let running = 0;
    let ending = false;
    let done = false;
    const finish = () => {
      if (done || !ending || running > 0) return;
      done = true;
      stream.end();
    };
    const entry = { stream, drain: () => { ending = true; finish(); } };
    this.open.add(entry);
    const answer = (res: PeerResponse) => {
      if (!done && !stream.cancelled) stream.write(res);
    };
    stream.on('data', (msg: PeerRequest | MalformedRequest) => {
      if (msg instanceof MalformedRequest) {
        // Without an id nothing can be answered: the stream ends with the error instead.
        done = true;
        stream.emit('error', toServiceError(new InvalidArgumentError(`malformed link message: ${msg.reason}`)));
        return;
      }
      const id = msg.id;
      const kind = KINDS.find((k) => msg[k] !== undefined);
      if (!kind) {
        answer({ id, error: toErrorDetail(new InvalidArgumentError('link message without a call')) });
        return;
      }
      if (ending) {
        answer({ id, error: toErrorDetail(new UnavailableError('node is stopping')) });
        return;
      }
      running++;
      (this.methods[kind] as Method<unknown, unknown>)(msg[kind], (err, res) => {
        running--;
        answer(err ? { id, error: toErrorDetail(err) } : { id, [kind]: res });
        finish();
      });
    });
    stream.on('end', entry.drain);
    stream.on('error', (e) => this.log.debug({ err: (e as Error).message }, 'link stream failed'));
    stream.on('close', () => this.open.delete(entry));
    stream.on('cancelled', () => {
      done = true;
      this.open.delete(entry);
    });
  };

  /** Stops taking messages; each stream ends when its running calls are answered. */
  close(): void {
    this.closing = true;
    for (const e of this.open) e.drain();
  }
}
