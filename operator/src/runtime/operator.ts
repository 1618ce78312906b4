/**
 * The runtime that drives a Reconciler: watches and resync feed a work queue, the queue runs the
 * reconciler for one DataStore key at a time per key, and only the leader's queue runs.
 *
 * Nothing here crashes on an API error: watches restart with backoff, the lease is retried every
 * round, a reconcile that throws is logged, counted and requeued with backoff. Only what cannot
 * work at all (the metrics address is taken) makes startOperator reject.
 *
 * A replica that loses the lease pauses its queue at once; a reconcile already running finishes
 * (the Reconciler contract has no cancellation), which is why the lease is given up
 * (renewDeadline) well before another candidate may take it over.
 */
import type { KubeConfig } from '@kubernetes/client-node';
import { keyString, type DataStoreKey, type EventRecorder, type NodeAdmin, type ReconcileContext, type Reconciler } from '../controller/contract.js';
import { describeError } from './errors.js';
import { startHealthServer, type HealthServer } from './http.js';
import { LeaderElector, type LeaderElectionOptions } from './leader.js';
import type { RuntimeLog } from './log.js';
import { OperatorMetrics } from './metrics.js';
import { WorkQueue, type QueueBackoff } from './queue.js';
import { Watches } from './watch.js';

export interface OperatorOptions {
  kc: KubeConfig;
  reconciler: Reconciler;
  /** Watch and reconcile only this namespace (default: all). */
  namespace?: string;
  /** Period of the full list of DataStores (0: none). */
  resyncMs: number;
  /** Reconciles running at once (different DataStores). */
  workers: number;
  /** `false` runs as the only replica (always reconciling). */
  leaderElection: LeaderElectionOptions | false;
  /** `HOST:PORT` of /metrics, /healthz and /readyz (port 0 picks one). */
  metricsListen: string;
  defaultImage: string;
  admin: NodeAdmin;
  events: EventRecorder;
  log: RuntimeLog;
  /** Backoff of a failing reconcile (default 500 ms doubling to 60 s). */
  reconcileBackoff?: Partial<QueueBackoff>;
  /** Backoff of a failed watch's restart (default 500 ms doubling to 30 s). */
  watchBackoff?: QueueBackoff;
}

export interface OperatorHandle {
  /** host:port the health server listens on. */
  readonly metricsAddress: string;
  readonly metrics: OperatorMetrics;
  readonly identity: string | undefined;
  isLeader(): boolean;
  /** Undefined when ready (every watch has listed once). */
  notReady(): string | undefined;
  /** Stops taking keys, waits for running reconciles, releases the lease, stops the watches and the health server. */
  stop(): Promise<void>;
}

export class InvalidListenAddressError extends Error {
  constructor(value: string) {
    super(`not HOST:PORT: ${JSON.stringify(value)} (examples: 0.0.0.0:8080, 127.0.0.1:0, [::]:8080)`);
    this.name = 'InvalidListenAddressError';
  }
}

export function parseListen(v: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:]+\]|[^:\s[\]]+):(\d{1,5})$/.exec(v.trim());
  if (!m || Number(m[2]) > 65535) throw new InvalidListenAddressError(v);
  return { host: m[1].replace(/^\[|\]$/g, ''), port: Number(m[2]) };
}

export function parseKey(key: string): DataStoreKey {
  const i = key.indexOf('/');
  return { namespace: key.slice(0, i), name: key.slice(i + 1) };
}

export async function startOperator(opts: OperatorOptions): Promise<OperatorHandle> {
  const { log } = opts;
  const listen = parseListen(opts.metricsListen);
  const metrics = new OperatorMetrics();
  const ctx: ReconcileContext = { kc: opts.kc, events: opts.events, admin: opts.admin, defaultImage: opts.defaultImage, log };

  const queue = new WorkQueue({
    workers: opts.workers,
    backoff: opts.reconcileBackoff,
    handler: (key) => opts.reconciler(ctx, parseKey(key)),
    onDepth: (d) => metrics.queueDepth.set(d),
    onOutcome: (o) => {
      metrics.observeReconcile(o.ok, o.durationMs);
      if (o.ok) log.debug?.({ datastore: o.key, ms: Math.round(o.durationMs) }, 'reconciled');
      else log.error({ datastore: o.key, err: describeError(o.error), failures: o.failures, retryInMs: o.retryInMs }, 'reconcile failed; retrying with backoff');
    },
  });
  queue.pause(); // until this replica leads

  const watches = new Watches({
    kc: opts.kc,
    namespace: opts.namespace,
    resyncMs: opts.resyncMs,
    log,
    backoff: opts.watchBackoff,
    enqueue: (k, why) => {
      // A replica that does not lead drops keys rather than hoarding them: the resync on becoming
      // the leader enqueues every DataStore anyway, and its queue depth stays a true 0.
      if (!leading) return;
      log.debug?.({ datastore: keyString(k), why }, 'enqueued');
      queue.add(keyString(k));
    },
  });

  let leading = false;
  const lead = () => {
    leading = true;
    metrics.leader.set(1);
    queue.resume();
    // Whatever changed while another replica led (or nobody did): every DataStore gets a pass.
    void watches.resync('became the leader');
  };
  let elector: LeaderElector | undefined;
  if (opts.leaderElection) {
    elector = new LeaderElector(opts.kc, opts.leaderElection, {
      onStartedLeading: lead,
      onStoppedLeading: () => {
        leading = false;
        metrics.leader.set(0);
        queue.pause();
      },
    }, log);
  }

  let server: HealthServer;
  try {
    server = await startHealthServer({ host: listen.host, port: listen.port, registry: metrics.registry, notReady: () => watches.notSynced() });
  } catch (e) {
    throw new Error(`cannot serve /metrics, /healthz and /readyz on ${opts.metricsListen}: ${describeError(e).message}`, { cause: e });
  }

  watches.start();
  if (elector) elector.start();
  else lead();
  log.info({ namespace: opts.namespace ?? '(all)', workers: opts.workers, resyncMs: opts.resyncMs, leaderElection: elector ? `${opts.leaderElection && opts.leaderElection.namespace}/${opts.leaderElection && opts.leaderElection.name}` : false, identity: elector?.identity, metrics: server.address }, 'operator started');

  let stopping: Promise<void> | undefined;
  return {
    metricsAddress: server.address,
    metrics,
    identity: elector?.identity,
    isLeader: () => (elector ? elector.isLeader : true),
    notReady: () => watches.notSynced(),
    stop: () =>
      (stopping ??= (async () => {
        queue.pause();
        // The lease goes only after the last reconcile has finished: a successor must not overlap it.
        await queue.stop();
        await elector?.stop();
        metrics.leader.set(0);
        await watches.stop();
        await server.close();
        log.info({}, 'operator stopped');
      })()),
  };
}
