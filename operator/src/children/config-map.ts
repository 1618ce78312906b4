/**
 * The node configuration as a ConfigMap of LOAM_* variables (the node Pods take it with envFrom).
 * Everything `loam node` needs that is the same for every node lives here; what differs per Pod
 * (its name and address) is in the StatefulSet's args. Sizes are passed in bytes.
 */
import { DATASTORE_DEFAULTS } from '../crd/datastore.js';
import type { DataStore } from '../crd/types.js';
import { childMeta, names, type ChildMeta } from './labels.js';
import { diskCacheBytes, quantityBytes } from './quantity.js';

/** Ports of a node container: client gRPC (and health), node-to-node, Prometheus /metrics. */
export const CLIENT_PORT = 7480;
export const PEER_PORT = 7481;
export const METRICS_PORT = 9464;
export const ETCD_CLIENT_PORT = 2379;
export const ETCD_PEER_PORT = 2380;

/** Where the node Pod mounts its volume and the cluster secret. */
export const DATA_DIR = '/var/lib/loam';
export const CLUSTER_SECRET_DIR = '/etc/loam/cluster-secret';
export const CLUSTER_SECRET_KEY = 'secret';

export interface ConfigMap {
  apiVersion: 'v1';
  kind: 'ConfigMap';
  metadata: ChildMeta;
  data: Record<string, string>;
}

/** The etcd key prefix: spec.etcd.prefix, else `/loam/<namespace>/<name>`. */
export function etcdPrefix(ds: DataStore): string {
  return ds.spec.etcd?.prefix ?? `/loam/${ds.metadata.namespace}/${ds.metadata.name}`;
}

/** The S3 key prefix: spec.s3.prefix, else `<namespace>/<name>/`. */
export function s3Prefix(ds: DataStore): string {
  return ds.spec.s3?.prefix ?? `${ds.metadata.namespace}/${ds.metadata.name}/`;
}

/** Whether the DataStore runs its own etcd (no endpoints given). */
export function isManagedEtcd(ds: DataStore): boolean {
  return !ds.spec.etcd?.endpoints?.length;
}

/** The etcd endpoints the nodes use: the external ones, or the managed etcd's client Service. */
export function etcdEndpoints(ds: DataStore): string[] {
  if (!isManagedEtcd(ds)) return ds.spec.etcd!.endpoints!;
  return [`http://${names.etcdClientService(ds)}.${ds.metadata.namespace}.svc:${ETCD_CLIENT_PORT}`];
}

/** The client URL of the DataStore (status.endpoint). */
export function clientEndpoint(ds: DataStore): string {
  return `loam://${names.clientService(ds)}.${ds.metadata.namespace}.svc:${CLIENT_PORT}`;
}

export function nodeConfig(ds: DataStore): Record<string, string> {
  const spec = ds.spec;
  const data: Record<string, string> = {
    LOAM_ETCD: etcdEndpoints(ds).join(','),
    LOAM_PREFIX: etcdPrefix(ds),
    LOAM_DATA: DATA_DIR,
    LOAM_CLUSTER_SECRET_FILE: `${CLUSTER_SECRET_DIR}/${CLUSTER_SECRET_KEY}`,
    LOAM_CACHE_SIZE: String(quantityBytes(spec.cacheSize ?? DATASTORE_DEFAULTS.cacheSize)),
    LOAM_METRICS_PORT: String(METRICS_PORT),
  };
  if (spec.s3) {
    data.LOAM_S3_BUCKET = spec.s3.bucket;
    data.LOAM_S3_PREFIX = s3Prefix(ds);
    if (spec.s3.endpoint) data.LOAM_S3_ENDPOINT = spec.s3.endpoint;
    if (spec.s3.region) data.LOAM_S3_REGION = spec.s3.region;
    data.LOAM_UPLOAD_INTERVAL = spec.s3.uploadInterval ?? DATASTORE_DEFAULTS.uploadInterval;
    data.LOAM_DISK_CACHE_SIZE = String(diskCacheBytes(spec.storage?.size ?? DATASTORE_DEFAULTS.storageSize));
  }
  return data;
}

export function buildConfigMap(ds: DataStore): ConfigMap {
  return { apiVersion: 'v1', kind: 'ConfigMap', metadata: childMeta(ds, names.configMap(ds), 'node'), data: nodeConfig(ds) };
}
