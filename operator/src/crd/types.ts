/**
 * TypeScript types of the DataStore resource (`loam.dev/v1alpha1`), written by hand next to its
 * schema in datastore.ts. test/crd-drift.test.ts keeps the two in sync: complete-sample.ts sets
 * every field these types have (the compiler checks that), and the test walks that sample against
 * the schema (every field in one is in the other, with a value of the schema's type);
 * test/kube/datastore-crd.test.ts applies the sample to a real API server and reads it back
 * unpruned.
 *
 * Optional fields: in a DataStore read from the API server the schema's defaults are filled in
 * (see DATASTORE_DEFAULTS), but a controller must still cope with their absence (an object stored
 * before a default existed keeps its gap until it is next written).
 */

/** A Kubernetes object the schema keeps as is (`x-kubernetes-preserve-unknown-fields`): Affinity, Toleration, ... */
export type KubeObject = { [field: string]: unknown };

/** A resource.Quantity in its string form: `10Gi`, `500m`, `64Mi`. */
export type Quantity = string;

export const PULL_POLICIES = ['Always', 'IfNotPresent', 'Never'] as const;
export type PullPolicy = (typeof PULL_POLICIES)[number];

export const DELETION_POLICIES = ['Retain', 'Delete'] as const;
export type DeletionPolicy = (typeof DELETION_POLICIES)[number];

/** corev1 ResourceRequirements' quantities: `cpu: 2` or `cpu: 500m`, `memory: 1Gi`. */
export type ResourceList = Record<string, Quantity | number>;

export interface ResourceRequirements {
  limits?: ResourceList;
  requests?: ResourceList;
}

export interface StorageSpec {
  /** The PersistentVolumeClaim of each node (its log and segment cache). Default 10Gi; never smaller than before. */
  size?: Quantity;
  /** The claims' StorageClass (default: the cluster's default class). Fixed once the DataStore exists. */
  storageClassName?: string;
}

export interface ManagedEtcdSpec {
  /** Members of the etcd the operator runs for this DataStore: 1, 3, 5 or 7 (default 3). */
  members?: number;
}

export interface EtcdSpec {
  /** An external etcd (`host:port` or `http(s)://host:port`). Without endpoints the operator runs one (`managed`). */
  endpoints?: string[];
  /** A Secret in the DataStore's namespace with `username` and `password` for the external etcd. */
  credentialsSecret?: string;
  /** The DataStore's key prefix (default: `/loam/<namespace>/<name>`). Fixed at creation. */
  prefix?: string;
  /** The etcd the operator runs; the schema fills in `{ members: 3 }` when `etcd` is left out. */
  managed?: ManagedEtcdSpec;
}

export interface S3Spec {
  /** A non-AWS S3 endpoint (path-style addressing), `http(s)://host[:port]`; without it, AWS. */
  endpoint?: string;
  /** Fixed once set: neither changed nor removed. */
  bucket: string;
  /** Key prefix in the bucket (default: `<namespace>/<name>/`). Fixed once `bucket` is set. */
  prefix?: string;
  /** Default: the node's (its AWS configuration's, else us-east-1). */
  region?: string;
  /** A Secret in the DataStore's namespace with `accessKeyId` and `secretAccessKey` (and optionally `sessionToken`). */
  credentialsSecret?: string;
  /** The longest a durable write lives only on a node's disk: `500ms`, `5s`, `2m`, `1h` (default 5s, at least 100ms). */
  uploadInterval?: string;
}

export interface PodTemplateSpec {
  /** Added to every node Pod; the `app.kubernetes.io/{name,instance,component,managed-by}` keys are the operator's. */
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  affinity?: KubeObject;
  tolerations?: KubeObject[];
  topologySpreadConstraints?: KubeObject[];
  nodeSelector?: Record<string, string>;
  priorityClassName?: string;
  /** The Pod's PodSecurityContext. */
  securityContext?: KubeObject;
}

export interface DataStoreSpec {
  /** Storage nodes (the StatefulSet's replicas, and the scale subresource's). Default 3, at least 1. */
  nodes?: number;
  /** The node image (default: the operator's own image, which runs both `loam node` and `loam operator`). */
  image?: string;
  imagePullPolicy?: PullPolicy;
  /** Of each node's container. */
  resources?: ResourceRequirements;
  storage?: StorageSpec;
  /** Each node's object cache memory bound (`loam node --cache-size`). Default 64Mi; below the memory limit when one is set. */
  cacheSize?: Quantity;
  etcd?: EtcdSpec;
  /** The S3 tier: without it every block stays on the nodes' volumes. */
  s3?: S3Spec;
  podTemplate?: PodTemplateSpec;
  /** What deleting the DataStore does to its etcd keys, S3 data and volumes: kept (default) or removed. */
  deletionPolicy?: DeletionPolicy;
}

export const CONDITION_STATUSES = ['True', 'False', 'Unknown'] as const;
export type ConditionStatus = (typeof CONDITION_STATUSES)[number];

/** The condition types the operator reports. */
export const DATASTORE_CONDITION_TYPES = ['Ready', 'Progressing', 'Degraded'] as const;
export type DataStoreConditionType = (typeof DATASTORE_CONDITION_TYPES)[number];

/** A metav1.Condition. */
export interface Condition {
  /** `Ready`, `Progressing` or `Degraded` (DataStoreConditionType); the schema accepts any CamelCase type. */
  type: string;
  status: ConditionStatus;
  /** The `.metadata.generation` the condition was set for. */
  observedGeneration?: number;
  /** RFC 3339. */
  lastTransitionTime: string;
  /** CamelCase. */
  reason: string;
  message: string;
}

/**
 * Pending: children being created, no node Ready yet. Running: every node Ready, nothing in
 * progress. Scaling: nodes joining, or a node draining before scale-down. Upgrading: an image
 * change rolling through the nodes. Restoring: a node that lost its volume restoring from S3.
 * Degraded: fewer nodes Ready than asked for, with nothing in progress to fix it. Deleting: the
 * finalizer at work.
 */
export const DATASTORE_PHASES = ['Pending', 'Running', 'Scaling', 'Upgrading', 'Restoring', 'Degraded', 'Deleting'] as const;
export type DataStorePhase = (typeof DATASTORE_PHASES)[number];

/** One storage node, as the operator last saw it. */
export interface DataStoreNodeStatus {
  /** The Pod's name, which is the node's `--node-name`. */
  name: string;
  /** The node number Loam gave it (the number in its oids). */
  backend?: number;
  ready?: boolean;
  /** A drain of this node is in progress (scale-down). */
  draining?: boolean;
  /** Objects stored on the node, replica copies included. */
  objects?: number;
  /** Bytes written on the node and not yet uploaded to S3 (0 without S3). */
  uploadBacklogBytes?: number;
  /** The node's own client address, `loam://host:port`. */
  endpoint?: string;
}

export interface DataStoreStatus {
  phase?: DataStorePhase;
  conditions?: Condition[];
  /** The `.metadata.generation` the operator last acted on. */
  observedGeneration?: number;
  readyNodes?: number;
  nodes?: DataStoreNodeStatus[];
  /** The client URL the SDK connects to, `loam://<name>.<namespace>.svc:7480`. */
  endpoint?: string;
  /** The label selector of the node Pods, for the scale subresource (`kubectl scale`, HorizontalPodAutoscaler). */
  selector?: string;
}

export interface ObjectMeta {
  name?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  finalizers?: string[];
  [field: string]: unknown;
}

export interface DataStore {
  apiVersion: 'loam.dev/v1alpha1';
  kind: 'DataStore';
  metadata: ObjectMeta;
  spec: DataStoreSpec;
  status?: DataStoreStatus;
}

/** Every field required, down to the leaves (a sample that sets everything). */
export type Complete<T> = T extends (infer U)[] ? Complete<U>[] : T extends object ? { [K in keyof T]-?: Complete<T[K]> } : T;
