import fs from 'node:fs';
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { InterceptingCall, ServerInterceptingCall, status as Status, type Interceptor, type Metadata, type ServerInterceptor } from '@grpc/grpc-js';
import { UnavailableError, fromServiceError, type LoamError } from '@loam/sdk/wire';

/**
 * The gRPC metadata key every node-to-node call carries the cluster secret in. A `-bin` key, so
 * the secret may be any bytes (a `head -c 32 /dev/urandom` file works as well as base64 text).
 */
export const SECRET_METADATA_KEY = 'loam-cluster-secret-bin';

/** Shorter than this is a password someone typed, not a secret: refused at start. */
export const MIN_SECRET_BYTES = 16;

export type RefusedReason = 'missing' | 'wrong';

/**
 * What a node proves it belongs to its cluster with: the same bytes on every node, sent with
 * each node-to-node call and checked by the peer server before any handler runs.
 */
export class ClusterSecret {
  private readonly digest: Buffer;

  private constructor(private readonly secret: Buffer) {
    this.digest = sha256(secret);
  }

  /**
   * Reads the secret from `file`. Trailing whitespace is dropped, so `echo` or an editor's final
   * newline does not make two copies of one secret differ.
   */
  static fromFile(file: string): ClusterSecret {
    let raw: Buffer;
    try {
      raw = fs.readFileSync(file);
    } catch (e) {
      throw new Error(`cannot read the cluster secret file ${file}: ${(e as Error).message}`);
    }
    let end = raw.length;
    while (end > 0 && (raw[end - 1] === 0x20 || raw[end - 1] === 0x09 || raw[end - 1] === 0x0a || raw[end - 1] === 0x0d)) end--;
    const secret = raw.subarray(0, end);
    if (secret.length < MIN_SECRET_BYTES) {
      throw new Error(`the cluster secret in ${file} has ${secret.length} bytes; it needs at least ${MIN_SECRET_BYTES} (make one with: openssl rand -base64 32 > ${file})`);
    }
    return new ClusterSecret(Buffer.from(secret));
  }

  /** A secret only this process knows (`loam dev`: all its nodes run in it). */
  static random(): ClusterSecret {
    return new ClusterSecret(randomBytes(32));
  }

  /**
   * Constant time in the candidate's content and length: both sides are hashed to 32 bytes
   * first, since timingSafeEqual needs equal lengths and a length check would leak the length.
   */
  private matches(candidate: Buffer): boolean {
    return timingSafeEqual(sha256(candidate), this.digest);
  }

  /** Why `metadata` does not prove membership, or undefined when it does. */
  check(metadata: Metadata): RefusedReason | undefined {
    const values = metadata.get(SECRET_METADATA_KEY);
    if (values.length === 0) return 'missing';
    // Exactly one value: a second one is no way to send a secret, only a way to confuse a check.
    if (values.length !== 1 || !Buffer.isBuffer(values[0]) || !this.matches(values[0])) return 'wrong';
    return undefined;
  }

  /** For channels to other nodes' peer ports: adds the secret to every call, unary and stream. */
  clientInterceptor(): Interceptor {
    return (options, nextCall) => new InterceptingCall(nextCall(options), {
      start: (metadata, listener, next) => {
        metadata.set(SECRET_METADATA_KEY, this.secret);
        next(metadata, listener);
      },
    });
  }

  /**
   * For the peer server: a call without the secret ends UNAUTHENTICATED before its handler runs
   * (its metadata is never passed on, so neither are its messages), whatever the method, so a
   * method added later is covered too.
   */
  serverInterceptor(onRefused: (reason: RefusedReason, peer: string, method: string) => void): ServerInterceptor {
    return (method, call) => new ServerInterceptingCall(call, {
      start: (next) => {
        next({
          onReceiveMetadata: (metadata, pass) => {
            const refused = this.check(metadata);
            if (!refused) {
              pass(metadata);
              return;
            }
            onRefused(refused, call.getPeer(), method.path);
            call.sendStatus({
              code: Status.UNAUTHENTICATED,
              details: refused === 'missing'
                ? 'node-to-node call without the cluster secret: this port serves only the nodes of this cluster'
                : 'node-to-node call with the wrong cluster secret: this port serves only the nodes of this cluster',
            });
          },
        });
      },
    });
  }
}

function sha256(b: Buffer): Buffer {
  return createHash('sha256').update(b).digest();
}

/**
 * The typed error of a failed call to another node's peer port. A refusal of this node's secret
 * becomes an UnavailableError that says so: the caller (and the client behind it) sees a
 * misconfigured cluster, not an internal error, and what to fix.
 */
export function peerCallError(err: unknown, address: string): LoamError {
  if ((err as { code?: unknown })?.code === Status.UNAUTHENTICATED) {
    return new UnavailableError(`the node at ${address} refused this node's call: the cluster secrets differ (every node of a cluster must be started with the same --cluster-secret-file)`);
  }
  return fromServiceError(err);
}
