/**
 * An EventRecorder writing core/v1 Events on the DataStore (source `loam-operator`; `instance`:
 * which operator replica, e.g. its Lease identity). It never throws: an Event is a record for
 * humans, and failing to write one must not fail a reconcile. It writes through the KubeApi seam,
 * so a FailingKubeApi fails Event writes too.
 */
import { randomBytes } from 'node:crypto';
import type { DataStore } from '../crd/types.js';
import { FIELD_MANAGER, type EventRecorder } from './contract.js';
import type { KubeApi, KubeObj } from './kube-api.js';

export function kubeEventRecorder(api: KubeApi, log?: { warn(obj: object, msg: string): void }, instance: string = FIELD_MANAGER): EventRecorder {
  const record = async (ds: DataStore, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> => {
    try {
      const now = new Date().toISOString();
      await api.create({
        apiVersion: 'v1',
        kind: 'Event',
        metadata: { name: `${ds.metadata.name}.${randomBytes(8).toString('hex')}`, namespace: ds.metadata.namespace },
        involvedObject: { apiVersion: ds.apiVersion, kind: ds.kind, name: ds.metadata.name, namespace: ds.metadata.namespace, uid: ds.metadata.uid, resourceVersion: ds.metadata.resourceVersion },
        reason,
        message: message.slice(0, 1024),
        type,
        source: { component: FIELD_MANAGER },
        reportingComponent: FIELD_MANAGER,
        reportingInstance: instance,
        firstTimestamp: now,
        lastTimestamp: now,
        count: 1,
      } as KubeObj);
    } catch (e) {
      log?.warn({ err: e, reason }, 'could not record an event');
    }
  };
  return {
    normal: (ds, reason, message) => record(ds, 'Normal', reason, message),
    warning: (ds, reason, message) => record(ds, 'Warning', reason, message),
  };
}
