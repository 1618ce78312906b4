/**
 * What tells the queue which DataStore to look at: informers (client-node's ListWatch) on
 * DataStores and on the children the operator owns, plus a periodic full list of DataStores.
 *
 * - Children are watched by the label app.kubernetes.io/managed-by=loam-operator and mapped to
 *   their DataStore by a DataStore owner reference, else by the app.kubernetes.io/instance label
 *   (Pods are owned by their StatefulSet and PVCs of a volumeClaimTemplate by nobody, so the
 *   label is what names their DataStore).
 * - ListWatch re-watches by itself after a watch ends cleanly and relists after 410 Gone, but
 *   after an error it only reports it and stops: each informer is restarted here with capped
 *   exponential backoff, for as long as the runtime runs.
 * - Informers are known to stall (a watch that silently delivers nothing), so every `resyncMs`
 *   the DataStores are listed afresh from the API server and every key is enqueued; the
 *   reconcile is level-triggered, so a spurious key costs one idempotent pass.
 */
import {
  AppsV1Api,
  CoreV1Api,
  CustomObjectsApi,
  makeInformer,
  type Informer,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
} from '@kubernetes/client-node';
import type { DataStoreKey } from '../controller/contract.js';
import { DATASTORE_API_VERSION, DATASTORE_GROUP, DATASTORE_KIND, DATASTORE_PLURAL, DATASTORE_VERSION } from '../crd/datastore.js';
import { backoffDelay, type QueueBackoff } from './queue.js';
import { describeError } from './errors.js';
import type { RuntimeLog } from './log.js';

export const MANAGED_BY_SELECTOR = 'app.kubernetes.io/managed-by=loam-operator';
export const INSTANCE_LABEL = 'app.kubernetes.io/instance';

/** The DataStore a child belongs to: a DataStore owner reference, else its instance label. */
export function ownerKey(obj: KubernetesObject): DataStoreKey | undefined {
  const ns = obj.metadata?.namespace;
  if (!ns) return undefined;
  const ref = obj.metadata?.ownerReferences?.find((r) => r.kind === DATASTORE_KIND && r.apiVersion === DATASTORE_API_VERSION);
  if (ref) return { namespace: ns, name: ref.name };
  const instance = obj.metadata?.labels?.[INSTANCE_LABEL];
  return instance ? { namespace: ns, name: instance } : undefined;
}

export interface WatchOptions {
  kc: KubeConfig;
  /** Watch only this namespace (default: all). */
  namespace?: string;
  enqueue(key: DataStoreKey, why: string): void;
  /** The full list's period (0 turns it off). */
  resyncMs: number;
  log: RuntimeLog;
  /** Backoff of a failed watch's restart (default 500 ms doubling to 30 s). */
  backoff?: QueueBackoff;
}

interface Watched {
  kind: string;
  informer: Informer<KubernetesObject>;
  listed: boolean;
  failures: number;
  restartTimer?: NodeJS.Timeout;
}

type ListFn = () => Promise<KubernetesListObject<KubernetesObject>>;

export class Watches {
  private readonly watched: Watched[] = [];
  private resyncTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private readonly backoff: QueueBackoff;
  private readonly customApi: CustomObjectsApi;

  constructor(private readonly opts: WatchOptions) {
    this.backoff = opts.backoff ?? { baseMs: 500, maxMs: 30_000 };
    this.customApi = opts.kc.makeApiClient(CustomObjectsApi);
  }

  /** Starts every informer and the resync timer; resolves at once (readiness says when they have listed). */
  start(): void {
    const { kc, namespace: ns } = this.opts;
    const core = kc.makeApiClient(CoreV1Api);
    const apps = kc.makeApiClient(AppsV1Api);
    const nsPath = (prefix: string, plural: string) => (ns ? `${prefix}/namespaces/${ns}/${plural}` : `${prefix}/${plural}`);
    const labelSelector = MANAGED_BY_SELECTOR;
    const add = (kind: string, path: string, list: ListFn, selector: string | undefined, toKey: (o: KubernetesObject) => DataStoreKey | undefined) => {
      const w: Watched = { kind, informer: undefined as unknown as Informer<KubernetesObject>, listed: false, failures: 0 };
      // The list function is ours, so a successful list is what marks the informer synced.
      const listFn: ListFn = async () => {
        const l = await list();
        w.listed = true;
        w.failures = 0;
        return l;
      };
      w.informer = makeInformer(kc, path, listFn, selector);
      const onObject = (verb: string) => (o: KubernetesObject) => {
        w.failures = 0;
        const key = toKey(o);
        if (key) this.opts.enqueue(key, `${kind} ${o.metadata?.namespace}/${o.metadata?.name} ${verb}`);
      };
      w.informer.on('add', onObject('added'));
      w.informer.on('update', onObject('changed'));
      w.informer.on('delete', onObject('deleted'));
      w.informer.on('error', (err?: unknown) => this.failed(w, err));
      this.watched.push(w);
    };
    const dsKey = (o: KubernetesObject): DataStoreKey | undefined =>
      o.metadata?.name && o.metadata.namespace ? { namespace: o.metadata.namespace, name: o.metadata.name } : undefined;

    add('DataStore', nsPath(`/apis/${DATASTORE_GROUP}/${DATASTORE_VERSION}`, DATASTORE_PLURAL), () => this.listDataStores(), undefined, dsKey);
    add('StatefulSet', nsPath('/apis/apps/v1', 'statefulsets'), () => (ns ? apps.listNamespacedStatefulSet({ namespace: ns, labelSelector }) : apps.listStatefulSetForAllNamespaces({ labelSelector })), labelSelector, ownerKey);
    add('Pod', nsPath('/api/v1', 'pods'), () => (ns ? core.listNamespacedPod({ namespace: ns, labelSelector }) : core.listPodForAllNamespaces({ labelSelector })), labelSelector, ownerKey);
    add('PersistentVolumeClaim', nsPath('/api/v1', 'persistentvolumeclaims'), () => (ns ? core.listNamespacedPersistentVolumeClaim({ namespace: ns, labelSelector }) : core.listPersistentVolumeClaimForAllNamespaces({ labelSelector })), labelSelector, ownerKey);
    add('Service', nsPath('/api/v1', 'services'), () => (ns ? core.listNamespacedService({ namespace: ns, labelSelector }) : core.listServiceForAllNamespaces({ labelSelector })), labelSelector, ownerKey);
    add('ConfigMap', nsPath('/api/v1', 'configmaps'), () => (ns ? core.listNamespacedConfigMap({ namespace: ns, labelSelector }) : core.listConfigMapForAllNamespaces({ labelSelector })), labelSelector, ownerKey);

    for (const w of this.watched) this.startOne(w);
    if (this.opts.resyncMs > 0) {
      this.resyncTimer = setInterval(() => void this.resync('periodic resync'), this.opts.resyncMs);
      this.resyncTimer.unref?.();
    }
  }

  /** Undefined once every informer has listed once; else which have not. */
  notSynced(): string | undefined {
    if (this.watched.length === 0) return 'watches not started';
    const pending = this.watched.filter((w) => !w.listed).map((w) => w.kind);
    return pending.length ? `watches not synced yet: ${pending.join(', ')}` : undefined;
  }

  /** Lists the DataStores from the API server (not a cache) and enqueues every key; never throws (logs). */
  async resync(why: string): Promise<number> {
    try {
      const list = await this.listDataStores();
      let n = 0;
      for (const o of list.items) {
        if (o.metadata?.name && o.metadata.namespace) {
          this.opts.enqueue({ namespace: o.metadata.namespace, name: o.metadata.name }, why);
          n++;
        }
      }
      return n;
    } catch (e) {
      this.opts.log.warn({ err: describeError(e) }, 'listing DataStores for the resync failed; the next resync tries again');
      return 0;
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.resyncTimer);
    for (const w of this.watched) clearTimeout(w.restartTimer);
    await Promise.allSettled(this.watched.map((w) => w.informer.stop()));
  }

  private async listDataStores(): Promise<KubernetesListObject<KubernetesObject>> {
    const base = { group: DATASTORE_GROUP, version: DATASTORE_VERSION, plural: DATASTORE_PLURAL };
    const ns = this.opts.namespace;
    return (ns ? this.customApi.listNamespacedCustomObject({ ...base, namespace: ns }) : this.customApi.listClusterCustomObject(base)) as Promise<KubernetesListObject<KubernetesObject>>;
  }

  private startOne(w: Watched): void {
    if (this.stopped) return;
    w.informer.start().catch((e: unknown) => this.failed(w, e));
  }

  private failed(w: Watched, err: unknown): void {
    // ListWatch reports the abort of its own request on stop() as an error too.
    if (this.stopped || w.restartTimer) return;
    w.failures++;
    const delay = backoffDelay(w.failures, this.backoff);
    this.opts.log.warn({ kind: w.kind, err: describeError(err), failures: w.failures, retryInMs: delay }, 'watch failed; restarting it');
    w.restartTimer = setTimeout(() => {
      w.restartTimer = undefined;
      this.startOne(w);
    }, delay);
    w.restartTimer.unref?.();
  }
}
