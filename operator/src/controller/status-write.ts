/** Writing a computed status through the status subresource, only when it changed. */
import { DATASTORE_API_VERSION, DATASTORE_KIND } from '../crd/datastore.js';
import type { DataStore } from '../crd/types.js';
import type { ReconcileContext } from './contract.js';
import type { KubeApi, KubeObj } from './kube-api.js';
import { sameStatus } from './status.js';

/** Writes the status when it differs from the live one (and records a phase change). */
export async function writeStatus(ctx: ReconcileContext, api: KubeApi, ds: DataStore, status: NonNullable<DataStore['status']>): Promise<void> {
  if (sameStatus(ds.status, status)) return;
  await api.apply({ apiVersion: DATASTORE_API_VERSION, kind: DATASTORE_KIND, metadata: { name: ds.metadata.name, namespace: ds.metadata.namespace }, status } as KubeObj, { subresource: 'status' });
  if (status.phase !== ds.status?.phase) await ctx.events.normal(ds, status.phase ?? 'Unknown', `phase ${ds.status?.phase ?? '(none)'} → ${status.phase}`);
  ds.status = status;
}

