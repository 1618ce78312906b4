/**
 * The DataStore's finalizer, added and removed with JSON patches that test the list they change:
 * a concurrent change to the finalizers (another controller's) makes the patch fail (and the pass
 * retry) instead of being overwritten.
 */
import { DATASTORE_API_VERSION, DATASTORE_KIND } from '../crd/datastore.js';
import type { DataStore } from '../crd/types.js';
import { FINALIZER } from './contract.js';
import type { KubeApi, ObjectRef } from './kube-api.js';

export function dataStoreRef(ds: DataStore): ObjectRef {
  return { apiVersion: DATASTORE_API_VERSION, kind: DATASTORE_KIND, namespace: ds.metadata.namespace, name: ds.metadata.name! };
}

export function hasFinalizer(ds: DataStore): boolean {
  return ds.metadata.finalizers?.includes(FINALIZER) ?? false;
}

/** Adds the finalizer; a no-op (no write) when it is there. Returns the DataStore as it now is. */
export async function addFinalizer(api: KubeApi, ds: DataStore): Promise<DataStore> {
  if (hasFinalizer(ds)) return ds;
  const list = ds.metadata.finalizers;
  const patch = list
    ? [{ op: 'test' as const, path: '/metadata/finalizers', value: list }, { op: 'add' as const, path: '/metadata/finalizers/-', value: FINALIZER }]
    : [{ op: 'test' as const, path: '/metadata/resourceVersion', value: ds.metadata.resourceVersion }, { op: 'add' as const, path: '/metadata/finalizers', value: [FINALIZER] }];
  return (await api.patch(dataStoreRef(ds), [{ op: 'test', path: '/metadata/uid', value: ds.metadata.uid }, ...patch])) as unknown as DataStore;
}

export async function removeFinalizer(api: KubeApi, ds: DataStore): Promise<void> {
  const list = ds.metadata.finalizers ?? [];
  const i = list.indexOf(FINALIZER);
  if (i < 0) return;
  await api.patch(dataStoreRef(ds), [
    { op: 'test', path: '/metadata/uid', value: ds.metadata.uid },
    { op: 'test', path: `/metadata/finalizers/${i}`, value: FINALIZER },
    { op: 'remove', path: `/metadata/finalizers/${i}` },
  ]);
}
