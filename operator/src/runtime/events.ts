/**
 * An EventRecorder that writes core/v1 Events on the DataStore (what `kubectl describe lds x`
 * shows). Best effort, as the contract says: a failed write is logged, never thrown, so an
 * Event cannot fail a reconcile.
 */
import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import type { EventRecorder } from '../controller/contract.js';
import type { DataStore } from '../crd/types.js';
import { describeError } from './errors.js';
import type { RuntimeLog } from './log.js';

export class KubeEventRecorder implements EventRecorder {
  private readonly api: CoreV1Api;

  constructor(kc: KubeConfig, private readonly log: RuntimeLog, private readonly instance: string) {
    this.api = kc.makeApiClient(CoreV1Api);
  }

  normal(ds: DataStore, reason: string, message: string): Promise<void> {
    return this.record(ds, 'Normal', reason, message);
  }

  warning(ds: DataStore, reason: string, message: string): Promise<void> {
    return this.record(ds, 'Warning', reason, message);
  }

  private async record(ds: DataStore, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    const namespace = ds.metadata.namespace ?? 'default';
    const now = new Date();
    try {
      await this.api.createNamespacedEvent({
        namespace,
        body: {
          metadata: { generateName: `${ds.metadata.name}.`, namespace },
          involvedObject: { apiVersion: ds.apiVersion, kind: ds.kind, name: ds.metadata.name, namespace, uid: ds.metadata.uid, resourceVersion: ds.metadata.resourceVersion },
          type,
          reason,
          message,
          firstTimestamp: now,
          lastTimestamp: now,
          count: 1,
          source: { component: 'loam-operator' },
          reportingComponent: 'loam-operator',
          reportingInstance: this.instance,
        },
      });
    } catch (e) {
      this.log.warn({ err: describeError(e), reason, datastore: `${namespace}/${ds.metadata.name}` }, 'recording an Event failed');
    }
  }
}
