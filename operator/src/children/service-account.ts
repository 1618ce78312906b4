/** The node Pods' ServiceAccount: the nodes call no Kubernetes API, so it has no roles and mounts no token. */
import type { DataStore } from '../crd/types.js';
import { childMeta, names, type ChildMeta } from './labels.js';

export interface ServiceAccount {
  apiVersion: 'v1';
  kind: 'ServiceAccount';
  metadata: ChildMeta;
  automountServiceAccountToken: false;
}

export function buildServiceAccount(ds: DataStore): ServiceAccount {
  return { apiVersion: 'v1', kind: 'ServiceAccount', metadata: childMeta(ds, names.serviceAccount(ds), 'node'), automountServiceAccountToken: false };
}
