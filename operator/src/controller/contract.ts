/**
 * The seams of the operator, so the reconcile (reconcile.ts and the children builders), the
 * runtime that drives it (work queue, watches and resync, leader election, /metrics, `loam
 * operator`) and the node admin client can be built and tested apart, and a fault injector
 * (API errors between steps) plugs in without touching the callers.
 */
import type { KubeConfig } from '@kubernetes/client-node';
import type { DataStore } from '../crd/types.js';
import type { KubeApi } from './kube-api.js';

/** The field manager of every server-side apply and status write of the operator. */
export const FIELD_MANAGER = 'loam-operator';

/** The finalizer the operator puts on every DataStore it reconciles. */
export const FINALIZER = 'loam.dev/finalizer';

export interface DataStoreKey {
  namespace: string;
  name: string;
}

export function keyString(k: DataStoreKey): string {
  return `${k.namespace}/${k.name}`;
}

/**
 * What one reconcile asks of the queue. The runtime also resyncs every DataStore periodically,
 * so `requeueAfterMs` is for "something is in progress, look again soon" (a drain, pods
 * starting), not a substitute for the resync.
 */
export interface ReconcileResult {
  requeueAfterMs?: number;
}

/** Records Kubernetes Events on a DataStore (reason CamelCase, message one sentence). Never throws. */
export interface EventRecorder {
  normal(ds: DataStore, reason: string, message: string): Promise<void>;
  warning(ds: DataStore, reason: string, message: string): Promise<void>;
}

/** A storage node as the operator reaches it: its own client address (the Pod IP and port). */
export interface NodeAddress {
  /** `host:port` of the node's client gRPC service. */
  address: string;
}

/** One node's answer to the admin Status call (a subset of @loam/sdk's NodeStatusAnswer). */
export interface NodeAdminStatus {
  /** The node's id: its `--node-name` (the Pod's name). */
  id: string;
  /** Its node number (the number in its oids). */
  number: number;
  /** "ready", "drained" or "stopping". */
  state: string;
  objects: number;
  draining: { objectsLeft: number; objectsTotal: number } | null;
  s3: { backlogBytes: number; generation: number; fenced: boolean } | null;
}

/**
 * The nodes' admin gRPC service, as the operator uses it (implemented over @loam/sdk's Client).
 * Every call has a deadline and throws on failure; none waits for a drain to finish.
 */
export interface NodeAdmin {
  /** Every node of the cluster that `via` belongs to, as `via` and the others answer. */
  status(via: NodeAddress, timeoutMs?: number): Promise<NodeAdminStatus[]>;
  /** Starts (or joins, with the same opId) the drain of node `number`; returns once it has begun. */
  startDrain(via: NodeAddress, number: number, opId: string): Promise<void>;
  /** Stops a drain of node `number` in progress; the node stays (or becomes again) a ready member. */
  cancelDrain(via: NodeAddress, number: number): Promise<void>;
  close(): Promise<void>;
}

export interface ReconcileContext {
  kc: KubeConfig;
  events: EventRecorder;
  admin: NodeAdmin;
  /** The image `spec.image` defaults to: the operator's own. */
  defaultImage: string;
  log: { info(obj: object, msg: string): void; warn(obj: object, msg: string): void; error(obj: object, msg: string): void };
  /** The API calls of the reconcile (kube-api.ts); default: over `kc`. Tests put a FailingKubeApi here. */
  kube?: KubeApi;
}

/** One level-triggered, idempotent pass over one DataStore. Throws on an error to be retried with backoff. */
export type Reconciler = (ctx: ReconcileContext, key: DataStoreKey) => Promise<ReconcileResult>;
