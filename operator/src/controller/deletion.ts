/**
 * The finalizer's work when a DataStore is deleted. `Retain` (the default): remove the
 * finalizer; the children go with their owner (Kubernetes' garbage collector), and the PVCs,
 * etcd keys and S3 data stay. `Delete`: first stop the nodes (StatefulSet to 0 replicas, wait
 * until no node Pod is left: a running node would write again), then remove the etcd prefix, the
 * S3 prefix and the PVCs (cleanup.ts), then the finalizer. Each pass does what it can and
 * requeues; every step is idempotent.
 */
import { DATASTORE_DEFAULTS } from '../crd/datastore.js';
import type { DataStore } from '../crd/types.js';
import { clientEndpoint, names, selectorLabels, selectorString } from '../children/index.js';
import type { ReconcileContext, ReconcileResult } from './contract.js';
import { deleteEtcdPrefix, deleteS3Prefix, deleteVolumes } from './cleanup.js';
import { hasFinalizer, removeFinalizer } from './finalizer.js';
import type { KubeApi } from './kube-api.js';
import type { PodObj, StatefulSetObj } from './objects.js';
import { computeStatus } from './status.js';
import { writeStatus } from './status-write.js';

export const DELETION_REQUEUE_MS = 1_000;

export async function reconcileDeletion(ctx: ReconcileContext, api: KubeApi, ds: DataStore): Promise<ReconcileResult> {
  if (!hasFinalizer(ds)) return {};
  const ns = ds.metadata.namespace!;
  const policy = ds.spec.deletionPolicy ?? DATASTORE_DEFAULTS.deletionPolicy;
  if (policy === 'Retain') {
    await removeFinalizer(api, ds);
    await ctx.events.normal(ds, 'Retained', 'deleted with deletionPolicy Retain: the etcd keys, S3 data and volumes are kept');
    return {};
  }
  const setName = names.statefulSet(ds);
  const stsRef = { apiVersion: 'apps/v1', kind: 'StatefulSet', namespace: ns, name: setName };
  const sts = await api.get<StatefulSetObj>(stsRef);
  const pods = await api.list<PodObj>('v1', 'Pod', ns, selectorString(selectorLabels(ds, 'node')));
  const deleting = async (message: string) => {
    const status = computeStatus(ds, { desired: ds.spec.nodes ?? DATASTORE_DEFAULTS.nodes, pods: [], nodes: undefined, deleting: message, now: new Date() });
    await writeStatus(ctx, api, ds, { ...status, endpoint: clientEndpoint(ds) });
  };
  if (sts && (sts.spec.replicas ?? 1) > 0) {
    await deleting('stopping the nodes');
    await api.patch(stsRef, { spec: { replicas: 0 } });
    await ctx.events.normal(ds, 'StoppingNodes', 'deletionPolicy Delete: stopping the nodes before removing their data');
    return { requeueAfterMs: DELETION_REQUEUE_MS };
  }
  if (pods.length > 0) {
    await deleting(`waiting for ${pods.length} node Pod${pods.length === 1 ? '' : 's'} to stop`);
    return { requeueAfterMs: DELETION_REQUEUE_MS };
  }
  await deleting('removing the etcd keys, S3 data and volumes');
  const keys = await deleteEtcdPrefix(api, ds);
  const objects = await deleteS3Prefix(api, ds);
  const claims = await deleteVolumes(api, ds);
  await ctx.events.normal(ds, 'DataDeleted', `deletionPolicy Delete: removed ${keys} etcd keys, ${objects} S3 objects and ${claims} volumes`);
  await removeFinalizer(api, ds);
  return {};
}
