/**
 * What deleting a DataStore with deletionPolicy `Delete` removes, once its nodes are stopped:
 * the etcd prefix (an external etcd's; a managed etcd goes with its own volumes), the S3 prefix,
 * and the PVCs of the nodes (and of a managed etcd). Each step is idempotent (deleting what is
 * gone is a no-op), so a pass that fails part-way is simply run again. Credentials come from the
 * Secrets the spec names, read at the time of the call.
 */
import { DeleteObjectsCommand, ListObjectsV2Command, S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';
import { Etcd3 } from 'etcd3';
import type { DataStore } from '../crd/types.js';
import { etcdEndpoints, etcdPrefix, isManagedEtcd, s3Prefix, selectorLabels, selectorString } from '../children/index.js';
import type { KubeApi, KubeObj } from './kube-api.js';

export class CleanupError extends Error {
  constructor(readonly step: 'etcd' | 's3' | 'volumes' | 'credentials', message: string, cause?: unknown) {
    super(`deleting the DataStore's ${step === 'volumes' || step === 'credentials' ? step : `${step} data`}: ${message}`, { cause });
    this.name = 'CleanupError';
  }
}

/** A Secret's data, decoded; a missing Secret or key is a CleanupError (the data cannot be reached without it). */
export async function secretData(api: KubeApi, namespace: string, name: string): Promise<Record<string, string>> {
  const s = await api.get<KubeObj & { data?: Record<string, string> }>({ apiVersion: 'v1', kind: 'Secret', namespace, name });
  if (!s) throw new CleanupError('credentials', `Secret ${namespace}/${name} not found`);
  return Object.fromEntries(Object.entries(s.data ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')]));
}

/** Deletes every key under the DataStore's etcd prefix (the prefix itself as a directory: `<prefix>/`). */
export async function deleteEtcdPrefix(api: KubeApi, ds: DataStore, timeoutMs = 15_000): Promise<number> {
  if (isManagedEtcd(ds)) return 0;
  const ns = ds.metadata.namespace!;
  let auth: { username: string; password: string } | undefined;
  if (ds.spec.etcd?.credentialsSecret) {
    const d = await secretData(api, ns, ds.spec.etcd.credentialsSecret);
    if (d.username === undefined || d.password === undefined) throw new CleanupError('credentials', `Secret ${ns}/${ds.spec.etcd.credentialsSecret} has no username and password`);
    auth = { username: d.username, password: d.password };
  }
  const hosts = etcdEndpoints(ds).map((e) => (/^https?:\/\//.test(e) ? e : `http://${e}`));
  const client = new Etcd3({ hosts, ...(auth ? { auth } : {}), dialTimeout: timeoutMs });
  try {
    const prefix = etcdPrefix(ds);
    const res = await client.delete().prefix(prefix.endsWith('/') ? prefix : `${prefix}/`).exec();
    return Number(res.deleted);
  } catch (e) {
    throw new CleanupError('etcd', (e as Error).message, e);
  } finally {
    client.close();
  }
}

export async function s3ClientFor(api: KubeApi, ds: DataStore): Promise<S3Client> {
  const s3 = ds.spec.s3!;
  const config: S3ClientConfig = {
    // Non-AWS stores (MinIO, versitygw...) take path-style addressing and no default checksums.
    forcePathStyle: s3.endpoint !== undefined,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts: 3,
    region: s3.region ?? (s3.endpoint ? 'us-east-1' : undefined),
    ...(s3.endpoint ? { endpoint: s3.endpoint } : {}),
  };
  if (s3.credentialsSecret) {
    const d = await secretData(api, ds.metadata.namespace!, s3.credentialsSecret);
    if (!d.accessKeyId || !d.secretAccessKey) throw new CleanupError('credentials', `Secret ${ds.metadata.namespace}/${s3.credentialsSecret} has no accessKeyId and secretAccessKey`);
    config.credentials = { accessKeyId: d.accessKeyId, secretAccessKey: d.secretAccessKey, ...(d.sessionToken ? { sessionToken: d.sessionToken } : {}) };
  }
  return new S3Client(config);
}

/** Deletes every object under the DataStore's S3 prefix; returns how many. */
export async function deleteS3Prefix(api: KubeApi, ds: DataStore): Promise<number> {
  if (!ds.spec.s3) return 0;
  const bucket = ds.spec.s3.bucket;
  const prefix = s3Prefix(ds);
  // An empty prefix would be the whole bucket: a DataStore never owns a whole bucket by default.
  if (!prefix) throw new CleanupError('s3', 'the S3 prefix is empty: refusing to delete a whole bucket');
  const client = await s3ClientFor(api, ds);
  let deleted = 0;
  try {
    for (;;) {
      const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix.endsWith('/') ? prefix : `${prefix}/`, MaxKeys: 1000 }));
      const keys = (page.Contents ?? []).map((o) => o.Key!).filter(Boolean);
      if (keys.length === 0) return deleted;
      const res = await client.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys.map((Key) => ({ Key })), Quiet: true } }));
      if (res.Errors?.length) throw new CleanupError('s3', `${res.Errors.length} objects not deleted, e.g. ${res.Errors[0]!.Key}: ${res.Errors[0]!.Code} ${res.Errors[0]!.Message}`);
      deleted += keys.length;
    }
  } catch (e) {
    throw e instanceof CleanupError ? e : new CleanupError('s3', (e as Error).message, e);
  } finally {
    client.destroy();
  }
}

/** Deletes the PVCs of the nodes and of a managed etcd (the volumeClaimTemplates' labels select them). */
export async function deleteVolumes(api: KubeApi, ds: DataStore): Promise<number> {
  const ns = ds.metadata.namespace!;
  let n = 0;
  for (const component of ['node', 'etcd'] as const) {
    const claims = await api.list('v1', 'PersistentVolumeClaim', ns, selectorString(selectorLabels(ds, component)));
    for (const c of claims) if (await api.delete({ apiVersion: 'v1', kind: 'PersistentVolumeClaim', namespace: ns, name: c.metadata.name! }, { uid: c.metadata.uid })) n++;
  }
  return n;
}
