import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import type { SegmentFiles } from './storage/segment-files.js';
import type { WriteBlock } from './storage/engine.js';
import { InvalidArgumentError, NodeServiceService, StoreServiceService, UnavailableError, type Backend, type Limits } from '@loam/sdk/wire';
import { Engine } from './storage/engine.js';
import { NodeMetrics } from './metrics.js';
import { createLogger, type Logger } from './logger.js';
import { lockDataDir, readDrained, readIdentity, writeIdentity, type NodeIdentity } from './data-dir.js';
import { storeService, MalformedRequest, type ClusterContext } from './store-service.js';
import { nodeService } from './node-service.js';
import type { LinkServer } from './link-server.js';
import { Placement } from './cluster/placement.js';
import { Transactions } from './cluster/transactions.js';
import { Membership } from './cluster/membership.js';
import { Peers } from './cluster/peers.js';
import type { ClusterSecret, RefusedReason } from './cluster/peer-auth.js';
import type { MetaStore } from './meta/meta-store.js';
import type { ObjectStore } from './storage/object-store.js';
import { S3ObjectStore, type S3ObjectStoreOptions } from './storage/s3-object-store.js';
import type { S3Tier } from './storage/tier/s3-tier.js';
import { Generation } from './cluster/generation.js';
import pRetry from 'p-retry';
import type { ServiceDefinition } from '@grpc/grpc-js';

export interface NodeOptions {
  /** The file layer under the log (tests put a fault injector there). */
  files?: SegmentFiles;
  dataDir: string;
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  /** Address clients should use; defaults to host:port. */
  advertise?: string;
  /**
   * Cluster mode: where the node-to-node service (NodeService) listens, apart from the client
   * port. Default: `host`, and port 0 (a free one; other nodes find it in the member record).
   */
  peerHost?: string;
  peerPort?: number;
  /**
   * Address other nodes should use for NodeService. Default: the bound peer port on `peerHost`,
   * or on the `advertise` host when `peerHost` is a wildcard (0.0.0.0, ::).
   */
  peerAdvertise?: string;
  /** Cluster mode, required: what every node-to-node call must carry, both ways. */
  clusterSecret?: ClusterSecret;
  /** -1 disables the metrics endpoint; 0 picks a free port. */
  metricsPort?: number;
  cacheBytes?: number;
  maxSegmentBytes?: number;
  limits?: Partial<Limits>;
  nodeNumber?: number;
  logger?: Logger;
  compactionIntervalMs?: number;
  /** Cluster mode: the metadata store (etcd, or embedded for `loam dev --nodes N`). */
  meta?: MetaStore;
  /**
   * Cluster mode: how long start() waits for the metadata store before it goes on without it
   * (serving what this node masters, joining in the background). Default 3 s.
   */
  joinWaitMs?: number;
  /** Called after the node stopped itself on a failure it cannot run with (see MembershipHooks.onFatal). */
  onFatal?: (err: Error) => void;
  /**
   * A stable identity that does not live in the data directory (in Kubernetes: the pod's name):
   * a node whose volume is gone comes back as itself (its number, its S3 data).
   */
  nodeName?: string;
  /** The S3 tier: durable blocks in this store, local disk in front of it (see storage/tier/). */
  s3?: {
    uploadIntervalMs: number; diskCacheBytes?: number; config?: S3ObjectStoreOptions; store?: ObjectStore;
    /** Bytes uploaded between two index checkpoints (default: LOAM_CHECKPOINT_BYTES, a plain byte count, else 512 MiB; 0: none). */
    checkpointBytes?: number;
  };
}

/**
 * gRPC health service names. '' and StoreService are SERVING once the node serves requests,
 * which in a cluster includes "started without etcd, serving the objects it masters".
 * MEMBERSHIP_HEALTH is SERVING only while the node is registered in the metadata store: a probe
 * that must know the node is fully part of the cluster asks for that one.
 */
export const STORE_HEALTH = 'loam.v1.StoreService';
export const MEMBERSHIP_HEALTH = 'loam.membership';

/** A wildcard bind address: advertising it would tell others nothing about where to connect. */
function isWildcard(host: string): boolean {
  return host === '0.0.0.0' || host === '::' || host === '[::]';
}

function hostPort(host: string, port: number): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Host of a HOST:PORT or [V6]:PORT address. */
function hostOf(address: string): string {
  return address.replace(/:\d+$/, '');
}

/** Refused peer calls are logged at most this often (a misconfigured node retries all the time). */
const REFUSED_LOG_EVERY_MS = 10_000;

/**
 * One storage node: engine, the client gRPC server (store + health), in a cluster the peer gRPC
 * server (NodeService, cluster secret required), metrics endpoint.
 */
export class LoamNode {
  readonly engine: Engine;
  readonly identity: NodeIdentity;
  readonly metrics: NodeMetrics;
  readonly log: Logger;
  /** This process (Backend.instance): calls that name another one are refused (see INSTANCE_HEADER). */
  readonly instance = randomUUID();
  private readonly server: Server;
  /** NodeService, on its own port: only callers with the cluster secret get past its interceptor. */
  private readonly peerServer?: Server;
  private readonly health: HealthImplementation;
  private readonly unlock: () => void;
  private metricsServer?: { port: number; close: () => Promise<void> };
  private address = '';
  port = 0;
  /** Where other nodes reach this one's NodeService ('' outside a cluster). */
  peerAddress = '';
  peerPort = 0;
  private refusedLog = { at: 0, suppressed: 0 };
  membership?: Membership;
  placement?: Placement;
  transactions?: Transactions;
  private stopping?: Promise<void>;
  /** Open Link streams from other nodes: ended at shutdown so they do not hold it up. */
  private links?: LinkServer;

  private constructor(engine: Engine, identity: NodeIdentity, metrics: NodeMetrics, log: Logger, unlock: () => void, meta?: MetaStore, secret?: ClusterSecret) {
    this.engine = engine;
    this.identity = identity;
    this.metrics = metrics;
    this.log = log;
    this.unlock = unlock;
    const maxMessage = engine.limits.maxBatchBytes + 4 * 1024 * 1024;
    const serverOptions = {
      'grpc.max_receive_message_length': maxMessage,
      'grpc.max_send_message_length': maxMessage,
    };
    this.server = new Server(serverOptions);
    this.health = new HealthImplementation({ '': 'NOT_SERVING', [STORE_HEALTH]: 'NOT_SERVING', ...(meta ? { [MEMBERSHIP_HEALTH]: 'NOT_SERVING' } : {}) });
    this.health.addToServer(this.server);
    const cluster = (): ClusterContext | undefined =>
      this.membership && this.placement && this.transactions
        ? { membership: this.membership, placement: this.placement, transactions: this.transactions }
        : undefined;
    this.server.addService(lenientDeserializers(StoreServiceService), storeService(engine, () => this.backend(), metrics, log, meta ? cluster : undefined));
    if (meta && secret) {
      // Not on the client port: any client could install forged objects, switch masters or
      // commit prepared parts there.
      this.peerServer = new Server({ ...serverOptions, interceptors: [secret.serverInterceptor((reason, peer, method) => this.refused(reason, peer, method))] });
      const { service, links } = nodeService(engine, metrics, log, cluster);
      this.peerServer.addService(lenientDeserializers(NodeServiceService), service);
      this.links = links;
    }
  }

  /** A call to the peer port without the right secret: counted, and logged (throttled). */
  private refused(reason: RefusedReason, peer: string, method: string): void {
    this.metrics.peerCallsRefused.inc({ reason });
    const now = Date.now();
    if (now - this.refusedLog.at < REFUSED_LOG_EVERY_MS) {
      this.refusedLog.suppressed++;
      return;
    }
    this.log.warn({ reason, peer, method, alsoRefusedSinceLastLog: this.refusedLog.suppressed },
      `refused a node-to-node call with ${reason === 'missing' ? 'no' : 'the wrong'} cluster secret: a node started with another --cluster-secret-file, or not a node at all`);
    this.refusedLog = { at: now, suppressed: 0 };
  }

  static async start(opts: NodeOptions): Promise<LoamNode> {
    const log = opts.logger ?? createLogger('info');
    // Before anything is locked or listens: a cluster node without a secret would serve
    // node-to-node calls to anyone.
    if (opts.meta && !opts.clusterSecret) throw new Error('a cluster node needs a cluster secret (clusterSecret)');
    const dataDir = path.resolve(opts.dataDir);
    const unlock = lockDataDir(dataDir);
    let engine: Engine | undefined;
    let started: LoamNode | undefined;
    let metricsRef: NodeMetrics | undefined;
    try {
      const meta = opts.meta;
      let identity = readIdentity(dataDir);
      if (identity && opts.nodeName && identity.id !== opts.nodeName) {
        throw new InvalidArgumentError(`data directory ${dataDir} belongs to node ${identity.id}, not to --node-name ${opts.nodeName}`);
      }
      // A number the metadata store gave this run needs no confirming; one read from node.json
      // does, but that may wait for etcd: the node starts on it and confirms while joining.
      let numberConfirmed = false;
      if (!identity) {
        // A named node whose volume is gone gets its number back: etcd maps the name to it.
        const id = opts.nodeName ?? randomUUID();
        let number = opts.nodeNumber ?? 1;
        if (meta) {
          // Only the metadata store can give a new node a number: wait for it rather than exit
          // (an orchestrator starting etcd and nodes together would otherwise see crash loops).
          const n = await Membership.allocateNumber(meta, id, log);
          if (n === undefined) throw new Error('stopped while waiting for a node number');
          number = n;
          numberConfirmed = true;
        }
        identity = { id, number, createdAt: new Date().toISOString() };
        writeIdentity(dataDir, identity);
      }
      let engineRef: Engine | undefined;
      const metrics = (metricsRef = new NodeMetrics(() => engineRef));
      const t0 = Date.now();
      let nodeRef: LoamNode | undefined;
      const observer = metrics.observer((msg, fields) => log.warn(fields ?? {}, msg));
      engine = engineRef = await Engine.open({
        dir: dataDir,
        cacheBytes: opts.cacheBytes,
        maxSegmentBytes: opts.maxSegmentBytes,
        limits: opts.limits,
        compactionIntervalMs: opts.compactionIntervalMs,
        files: opts.files,
        tier: opts.s3 && {
          store: opts.s3.store ?? new S3ObjectStore({ ...opts.s3.config!, observe: metrics.s3.request }), node: identity.id, nodeNumber: identity.number, uploadIntervalMs: opts.s3.uploadIntervalMs, diskCacheBytes: opts.s3.diskCacheBytes,
          checkpointBytes: opts.s3.checkpointBytes ?? checkpointBytesFromEnv(),
          observer: metrics.s3.observer(log), onChecksumMismatch: (key) => metrics.s3.mismatch(key, log),
          info: (msg, fields) => log.info(fields ?? {}, msg),
        },
        observer: {
          ...observer,
          writable: (block) => {
            observer.writable?.(block);
            nodeRef?.writeStateChanged(block);
          },
        },
      });
      log.info({ ms: Date.now() - t0, ...engine.recovery, objects: engine.stats().objects }, 'recovered log');
      const node = (started = nodeRef = new LoamNode(engine, identity, metrics, log, unlock, meta, opts.clusterSecret));
      await node.listen(opts.host ?? '127.0.0.1', opts.port ?? 7480, opts.advertise);
      if (meta) {
        await node.listenPeers(opts.peerHost ?? opts.host ?? '127.0.0.1', opts.peerPort ?? 0, opts.peerAdvertise);
        // A drained node comes back drained, before it has any view of the cluster (see Placement.recordDrained).
        const state = readDrained(dataDir) ? 'drained' : 'ready';
        const self = { id: identity.id, number: identity.number, address: node.address, peerAddress: node.peerAddress, startedAt: new Date().toISOString(), state, instance: node.instance };
        const { membership, joined } = await Membership.join(meta, self, log, {
          numberConfirmed,
          waitMs: opts.joinWaitMs,
          hooks: {
            onRegistered: (up) => {
              if (!node.stopping) node.health.setStatus(MEMBERSHIP_HEALTH, up ? 'SERVING' : 'NOT_SERVING');
            },
            onFatal: (e) => {
              log.fatal({ err: e.message }, 'stopping: this node cannot run in this cluster');
              void node.stop().finally(() => opts.onFatal?.(e));
            },
          },
        });
        if (!joined) {
          log.warn({ number: identity.number }, 'started without the metadata store: serving the objects this node masters, joining the cluster in the background');
        }
        // One Peers each, as before the secret: each keeps its own Link streams.
        node.placement = new Placement(engine, membership, log, new Peers(opts.clusterSecret!), { dataDir });
        node.transactions = new Transactions(engine, membership, node.placement, log, new Peers(opts.clusterSecret!));
        node.membership = membership;
      }
      if ((opts.metricsPort ?? -1) >= 0) {
        node.metricsServer = await metrics.serve(opts.host ?? '127.0.0.1', opts.metricsPort!);
      }
      node.onFatal = opts.onFatal;
      if (engine.tier) node.startTier(engine.tier, meta);
      // Only now: until here calls are refused ("joining"), so SERVING earlier would be a lie.
      node.serving = true;
      node.writeStateChanged(engine.writeBlock);
      return node;
    } catch (e) {
      started?.server.forceShutdown(); // a node that could not join must not keep its ports
      started?.peerServer?.forceShutdown();
      metricsRef?.close();
      await engine?.close().catch(() => undefined);
      unlock();
      throw e;
    }
  }

  private generation?: Generation;
  /** Aborted when the node stops: ends waits that only a running node needs. */
  private readonly stopSignal = new AbortController();
  /** Called once the node stopped itself (fenced). */
  onFatal?: (err: Error) => void;

  /**
   * Uploads start once this start has a generation: from etcd (compare-and-set, retried while
   * etcd is unreachable), or, without a metadata store, one above what S3 shows. A generation
   * superseded later (another process took this identity) stops the node: it must not upload,
   * delete or acknowledge anything more.
   */
  private startTier(tier: S3Tier, meta: MetaStore | undefined): void {
    const atLeast = tier.generationSeen + 1;
    if (!meta) {
      tier.start({ value: atLeast, current: async () => true });
      this.metrics.s3.generation.set(atLeast);
      return;
    }
    void (async () => {
      this.generation = await pRetry(() => Generation.acquire(meta, this.identity.id, this.log, atLeast), {
        retries: Number.POSITIVE_INFINITY, minTimeout: 200, maxTimeout: 5_000, randomize: true, signal: this.stopSignal.signal,
        shouldRetry: ({ error }) => error instanceof UnavailableError,
        onFailedAttempt: ({ error }) => {
          if (error instanceof UnavailableError) this.log.warn({ err: error.message }, 'no generation yet (the metadata store is unreachable): uploads to S3 wait');
        },
      });
      const gen = this.generation;
      if (this.stopping) return;
      this.metrics.s3.generation.set(gen.value);
      tier.start(gen);
      gen.watch(() => this.fenced());
    })().catch((e: Error) => {
      if (!this.stopping) this.log.error({ err: e.message }, 'the S3 tier did not start');
    });
  }

  private fenced(): void {
    this.metrics.s3.fenced.set(1);
    this.log.fatal({ generation: this.generation?.value }, 'stopping: a later start of this node identity took over (generation superseded); nothing more is uploaded, deleted or acknowledged');
    const err = new Error('fenced: generation superseded');
    void this.stop(0, { flush: false }).finally(() => this.onFatal?.(err));
  }

  private async listen(host: string, port: number, advertise?: string): Promise<void> {
    this.port = await bind(this.server, host, port, 'client');
    this.address = advertise ?? `${host === '0.0.0.0' ? '127.0.0.1' : host}:${this.port}`;
  }

  private async listenPeers(host: string, port: number, advertise?: string): Promise<void> {
    this.peerPort = await bind(this.peerServer!, host, port, 'peer');
    // Bound to every interface: the host clients are told is the best guess at one peers reach.
    const clientHost = hostOf(this.address);
    const advertisedHost = !isWildcard(host) ? host : isWildcard(clientHost) ? '127.0.0.1' : clientHost;
    this.peerAddress = advertise ?? hostPort(advertisedHost, this.peerPort);
  }

  get endpoint(): string {
    return `loam://${this.address}/default`;
  }

  private serving = false;
  private writesRefused = false;

  /**
   * A node whose log refuses writes (a full disk, a failed write) says NOT_SERVING, so
   * Kubernetes and clients' health checks stop sending it work; it serves reads meanwhile.
   */
  writeStateChanged(block: WriteBlock | undefined): void {
    if (!this.serving || this.stopping) return;
    const status = block ? 'NOT_SERVING' : 'SERVING';
    this.health.setStatus('', status);
    this.health.setStatus(STORE_HEALTH, status);
    if (block) this.log.error({ reason: block.reason, err: block.message }, 'writes refused: health NOT_SERVING');
    else if (this.writesRefused) this.log.info('writes work again: health SERVING');
    this.writesRefused = block !== undefined;
  }

  get metricsPort(): number | undefined {
    return this.metricsServer?.port;
  }

  backend(): Backend {
    return { id: this.identity.id, number: this.identity.number, address: this.address, state: this.stopping ? 'stopping' : this.membership?.self.state ?? 'ready', instance: this.instance };
  }

  /** Stops accepting calls, lets running ones finish (bounded), flushes and closes the log. */
  stop(graceMs = 5000, opts: { flush?: boolean } = {}): Promise<void> {
    this.stopping ??= (async () => {
      this.stopSignal.abort(new Error('the node is stopping'));
      this.generation?.stop();
      this.health.setStatus('', 'NOT_SERVING');
      this.health.setStatus(STORE_HEALTH, 'NOT_SERVING');
      if (this.membership) this.health.setStatus(MEMBERSHIP_HEALTH, 'NOT_SERVING');
      this.links?.close();
      const shutdown = (server: Server) => new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          this.log.warn({ graceMs }, 'calls still running at the end of the grace period: cancelled');
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
      await Promise.all([shutdown(this.server), ...(this.peerServer ? [shutdown(this.peerServer)] : [])]);
      this.transactions?.close();
      this.placement?.close();
      // Bounded: with etcd unreachable the revoke could hang, and the member lease (3 s) ends anyway.
      await boundedBy(this.membership?.leave(), LEAVE_ON_STOP_MS);
      await this.metricsServer?.close();
      this.metrics.close();
      if (this.engine.tier && opts.flush !== false && !this.engine.tier.fenced && this.engine.tier.generation !== undefined) {
        // What was acknowledged goes to S3 before the process ends (bounded: S3 may be down).
        const abort = AbortSignal.timeout(FLUSH_ON_STOP_MS);
        const flushed = await this.engine.flush(abort).then(
          () => {
            this.log.info('flushed to S3');
            return true;
          },
          (e: Error) => {
            this.log.warn({ err: e.message, ms: FLUSH_ON_STOP_MS }, 'not everything reached S3 before the stop; it is uploaded at the next start');
            return false;
          },
        );
        // An index checkpoint of everything: a restore of this node then replays nothing.
        if (flushed) {
          await this.engine.checkpoint(AbortSignal.timeout(FLUSH_ON_STOP_MS)).then(
            () => this.log.info('index checkpoint written to S3'),
            (e: Error) => this.log.warn({ err: e.message }, 'no index checkpoint at the stop; a restore replays the segments after the last one'),
          );
        }
      }
      await this.engine.close();
      this.unlock();
      this.log.info('stopped');
    })();
    return this.stopping;
  }
}

/** LOAM_CHECKPOINT_BYTES: bytes uploaded between two index checkpoints (tests make it small). */
function checkpointBytesFromEnv(): number | undefined {
  const v = process.env.LOAM_CHECKPOINT_BYTES;
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`LOAM_CHECKPOINT_BYTES must be a byte count, not ${JSON.stringify(v)}`);
  return n;
}

/** How long a stopping node waits for its last uploads to S3. */
const FLUSH_ON_STOP_MS = 10_000;
/** How long a stopping node waits for etcd to remove its member key. */
const LEAVE_ON_STOP_MS = 3_000;

async function boundedBy(p: Promise<unknown> | undefined, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([p?.catch(() => undefined), new Promise<void>((r) => (timer = setTimeout(r, ms)))]).finally(() => clearTimeout(timer));
}

/** Binds `server` to host:port; resolves with the bound port (0 picks a free one). */
function bind(server: Server, host: string, port: number, what: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const bindHost = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
    server.bindAsync(`${bindHost}:${port}`, ServerCredentials.createInsecure(), (err, bound) => {
      if (err) reject(new Error(`cannot listen on ${host}:${port} (${what} port): ${err.message}`));
      else resolve(bound);
    });
  });
}

/**
 * grpc-js answers a request that fails to deserialize with a bare INTERNAL. Wrapping the
 * deserializers turns that into a value the handler rejects as a typed INVALID_ARGUMENT.
 */
function lenientDeserializers<S extends ServiceDefinition>(def: S): S {
  const out: Record<string, unknown> = {};
  for (const [name, method] of Object.entries(def)) {
    out[name] = {
      ...method,
      requestDeserialize: (buf: Buffer) => {
        try {
          return method.requestDeserialize(buf);
        } catch (e) {
          return new MalformedRequest((e as Error).message);
        }
      },
    };
  }
  return out as S;
}
