/**
 * Names, labels and owner references every child shares. The selector labels are the ones the
 * CRD keeps users' podTemplate.labels away from (OPERATOR_LABEL_KEYS): changing them would
 * detach Pods from their StatefulSet.
 */
import { createHash } from 'node:crypto';
import { DATASTORE_API_VERSION, DATASTORE_KIND } from '../crd/datastore.js';
import type { DataStore } from '../crd/types.js';

export type Component = 'node' | 'etcd';

export const APP_NAME = 'loam';
export const MANAGED_BY = 'loam-operator';

/** The annotation holding the hash of what the operator last applied to a child (see reconcile.ts). */
export const SPEC_HASH_ANNOTATION = 'loam.dev/spec-hash';
/** On the node StatefulSet: the hash of its Pod template as last applied (a change starts a rollout). */
export const TEMPLATE_HASH_ANNOTATION = 'loam.dev/template-hash';
/** On the node Pod template: the hash of the node configuration, so a config change rolls the Pods. */
export const CONFIG_HASH_ANNOTATION = 'loam.dev/config-hash';

export interface OwnerReference {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
  controller: true;
  blockOwnerDeletion: true;
}

export interface ChildMeta {
  name: string;
  namespace: string;
  labels: Record<string, string>;
  annotations?: Record<string, string>;
  ownerReferences: OwnerReference[];
  [field: string]: unknown;
}

/** The labels that select a component's Pods (never changed after creation: a StatefulSet's selector is immutable). */
export function selectorLabels(ds: DataStore, component: Component): Record<string, string> {
  return {
    'app.kubernetes.io/name': APP_NAME,
    'app.kubernetes.io/instance': ds.metadata.name!,
    'app.kubernetes.io/component': component,
    'app.kubernetes.io/managed-by': MANAGED_BY,
  };
}

export function standardLabels(ds: DataStore, component: Component): Record<string, string> {
  return { ...selectorLabels(ds, component), 'app.kubernetes.io/part-of': APP_NAME };
}

/** `a=b,c=d`: the label selector string of the scale subresource and of list calls. */
export function selectorString(labels: Record<string, string>): string {
  return Object.entries(labels)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
}

export function ownerReference(ds: DataStore): OwnerReference {
  if (!ds.metadata.uid || !ds.metadata.name) throw new Error('a DataStore read from the API server has a name and a uid: cannot own children without them');
  return { apiVersion: DATASTORE_API_VERSION, kind: DATASTORE_KIND, name: ds.metadata.name, uid: ds.metadata.uid, controller: true, blockOwnerDeletion: true };
}

export function childMeta(ds: DataStore, name: string, component: Component): ChildMeta {
  return { name, namespace: ds.metadata.namespace!, labels: standardLabels(ds, component), ownerReferences: [ownerReference(ds)] };
}

/** Child names, all derived from the DataStore's name (DATASTORE_NAME_MAX keeps them valid). */
export const names = {
  clientService: (ds: DataStore) => ds.metadata.name!,
  peerService: (ds: DataStore) => `${ds.metadata.name}-nodes`,
  statefulSet: (ds: DataStore) => ds.metadata.name!,
  configMap: (ds: DataStore) => `${ds.metadata.name}-config`,
  pdb: (ds: DataStore) => ds.metadata.name!,
  serviceAccount: (ds: DataStore) => ds.metadata.name!,
  clusterSecret: (ds: DataStore) => `${ds.metadata.name}-cluster-secret`,
  etcdStatefulSet: (ds: DataStore) => `${ds.metadata.name}-etcd`,
  etcdClientService: (ds: DataStore) => `${ds.metadata.name}-etcd`,
  etcdPeerService: (ds: DataStore) => `${ds.metadata.name}-etcd-peer`,
  /** A node Pod of the StatefulSet. */
  pod: (ds: DataStore, ordinal: number) => `${ds.metadata.name}-${ordinal}`,
  /** The data PVC of node `ordinal` (volumeClaimTemplate `data`). */
  dataClaim: (ds: DataStore, ordinal: number) => `data-${ds.metadata.name}-${ordinal}`,
};

/** A stable JSON (object keys sorted), so equal values hash equally. */
export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (v && typeof v === 'object') {
    return `{${Object.entries(v as Record<string, unknown>)
      .filter(([, x]) => x !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([k, x]) => `${JSON.stringify(k)}:${canonicalJson(x)}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

export function hashOf(v: unknown): string {
  return createHash('sha256').update(canonicalJson(v)).digest('hex').slice(0, 16);
}
