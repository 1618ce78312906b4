/**
 * The node StatefulSet: Pod `<name>-<i>` runs `loam node --node-name <name>-<i>` on its Pod IP,
 * with a PVC of its own for the log and segment cache. What the reconcile decides per pass
 * (replicas during a drain, the rollout partition) comes in as `NodeSetParams`; everything else
 * follows from the DataStore.
 *
 * - Args carry the per-Pod values ($(POD_NAME), $(POD_IP): expanded by the kubelet); the rest of
 *   the configuration comes from the ConfigMap (envFrom), whose hash is a Pod annotation so a
 *   config change rolls the Pods like an image change.
 * - Listen and advertise on the Pod IP, not 0.0.0.0: the node advertises what it listens on to
 *   its peers and clients.
 * - podManagementPolicy Parallel: scale-up starts every new node at once. Updates are still one at
 *   a time, highest ordinal first, gated by the reconcile through the RollingUpdate partition.
 * - PVCs are retained when the StatefulSet is deleted or scaled down: deletion of data is the
 *   DataStore's deletionPolicy's business (cleanup.ts), not the StatefulSet controller's.
 */
import { DATASTORE_DEFAULTS } from '../crd/datastore.js';
import type { DataStore, KubeObject } from '../crd/types.js';
import { buildConfigMap, CLIENT_PORT, CLUSTER_SECRET_DIR, DATA_DIR, METRICS_PORT, PEER_PORT } from './config-map.js';
import { childMeta, CONFIG_HASH_ANNOTATION, hashOf, names, selectorLabels, standardLabels, type ChildMeta } from './labels.js';

export interface NodeSetParams {
  /** The StatefulSet's replicas (spec.nodes, except while a scale-down drains a node). */
  replicas: number;
  /** RollingUpdate partition: Pods with an ordinal >= this run the new template. */
  partition: number;
  /** The image when spec.image is not set (the operator's own). */
  defaultImage: string;
  /**
   * The claim size of the volumeClaimTemplate, when the StatefulSet exists: its templates cannot
   * change, so a grown storage.size keeps the size it was created with (default storage.size).
   */
  claimSize?: string;
}

export interface StatefulSet {
  apiVersion: 'apps/v1';
  kind: 'StatefulSet';
  metadata: ChildMeta;
  spec: {
    replicas: number;
    serviceName: string;
    selector: { matchLabels: Record<string, string> };
    podManagementPolicy: 'Parallel' | 'OrderedReady';
    updateStrategy: { type: 'RollingUpdate'; rollingUpdate: { partition: number } };
    persistentVolumeClaimRetentionPolicy?: { whenDeleted: 'Retain' | 'Delete'; whenScaled: 'Retain' | 'Delete' };
    template: { metadata: { labels: Record<string, string>; annotations: Record<string, string> }; spec: KubeObject };
    volumeClaimTemplates: KubeObject[];
  };
}

/** The node container's name. */
export const NODE_CONTAINER = 'loam';
export const DATA_VOLUME = 'data';
export const TERMINATION_GRACE_SECONDS = 60;
/** The non-root user of the image. */
export const RUN_AS_USER = 65532;

/** The image the nodes run. */
export function nodeImage(ds: DataStore, defaultImage: string): string {
  return ds.spec.image ?? defaultImage;
}

/** The hash of the node configuration: a change rolls the Pods. */
export function configHash(ds: DataStore): string {
  return hashOf(buildConfigMap(ds).data);
}

function secretEnv(name: string, secret: string, key: string, optional = false): KubeObject {
  return { name, valueFrom: { secretKeyRef: { name: secret, key, ...(optional ? { optional: true } : {}) } } };
}

function nodeEnv(ds: DataStore): KubeObject[] {
  const env: KubeObject[] = [
    { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
    { name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
  ];
  const etcdSecret = ds.spec.etcd?.credentialsSecret;
  if (etcdSecret) env.push(secretEnv('LOAM_ETCD_USERNAME', etcdSecret, 'username'), secretEnv('LOAM_ETCD_PASSWORD', etcdSecret, 'password'));
  const s3Secret = ds.spec.s3?.credentialsSecret;
  if (s3Secret) {
    env.push(
      secretEnv('AWS_ACCESS_KEY_ID', s3Secret, 'accessKeyId'),
      secretEnv('AWS_SECRET_ACCESS_KEY', s3Secret, 'secretAccessKey'),
      secretEnv('AWS_SESSION_TOKEN', s3Secret, 'sessionToken', true),
    );
  }
  return env;
}

export function buildStatefulSet(ds: DataStore, p: NodeSetParams): StatefulSet {
  const spec = ds.spec;
  const pt = spec.podTemplate ?? {};
  const selector = selectorLabels(ds, 'node');
  const container: KubeObject = {
    name: NODE_CONTAINER,
    image: nodeImage(ds, p.defaultImage),
    imagePullPolicy: spec.imagePullPolicy ?? DATASTORE_DEFAULTS.imagePullPolicy,
    args: [
      'node',
      '--node-name', '$(POD_NAME)',
      '--listen', `$(POD_IP):${CLIENT_PORT}`,
      '--advertise', `$(POD_IP):${CLIENT_PORT}`,
      '--peer-listen', `$(POD_IP):${PEER_PORT}`,
      '--peer-advertise', `$(POD_IP):${PEER_PORT}`,
    ],
    envFrom: [{ configMapRef: { name: names.configMap(ds) } }],
    env: nodeEnv(ds),
    ports: [
      { name: 'grpc', containerPort: CLIENT_PORT, protocol: 'TCP' },
      { name: 'peer', containerPort: PEER_PORT, protocol: 'TCP' },
      { name: 'metrics', containerPort: METRICS_PORT, protocol: 'TCP' },
    ],
    // Ready = the client gRPC service answers health SERVING: the Service and the rollout wait on it.
    readinessProbe: { grpc: { port: CLIENT_PORT }, periodSeconds: 5, timeoutSeconds: 3, failureThreshold: 3 },
    ...(spec.resources ? { resources: spec.resources } : {}),
    volumeMounts: [
      { name: DATA_VOLUME, mountPath: DATA_DIR },
      { name: 'cluster-secret', mountPath: CLUSTER_SECRET_DIR, readOnly: true },
      // The root filesystem is read-only: a writable /tmp for whatever a library puts there.
      { name: 'tmp', mountPath: '/tmp' },
    ],
    securityContext: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, runAsNonRoot: true, capabilities: { drop: ['ALL'] } },
  };
  const podSpec: KubeObject = {
    serviceAccountName: names.serviceAccount(ds),
    automountServiceAccountToken: false,
    terminationGracePeriodSeconds: TERMINATION_GRACE_SECONDS,
    // The user's PodSecurityContext on top of the operator's non-root defaults.
    securityContext: { runAsNonRoot: true, runAsUser: RUN_AS_USER, runAsGroup: RUN_AS_USER, fsGroup: RUN_AS_USER, seccompProfile: { type: 'RuntimeDefault' }, ...(pt.securityContext ?? {}) },
    containers: [container],
    volumes: [
      { name: 'cluster-secret', secret: { secretName: names.clusterSecret(ds), defaultMode: 0o440 } },
      { name: 'tmp', emptyDir: {} },
    ],
    ...(pt.affinity ? { affinity: pt.affinity } : {}),
    ...(pt.tolerations ? { tolerations: pt.tolerations } : {}),
    ...(pt.topologySpreadConstraints ? { topologySpreadConstraints: pt.topologySpreadConstraints } : {}),
    ...(pt.nodeSelector ? { nodeSelector: pt.nodeSelector } : {}),
    ...(pt.priorityClassName ? { priorityClassName: pt.priorityClassName } : {}),
  };
  const storage = spec.storage ?? {};
  return {
    apiVersion: 'apps/v1',
    kind: 'StatefulSet',
    metadata: childMeta(ds, names.statefulSet(ds), 'node'),
    spec: {
      replicas: p.replicas,
      serviceName: names.peerService(ds),
      selector: { matchLabels: selector },
      podManagementPolicy: 'Parallel',
      updateStrategy: { type: 'RollingUpdate', rollingUpdate: { partition: p.partition } },
      persistentVolumeClaimRetentionPolicy: { whenDeleted: 'Retain', whenScaled: 'Retain' },
      template: {
        metadata: {
          // User labels first: the CRD forbids the operator's keys, and ours win anyway.
          labels: { ...(pt.labels ?? {}), ...standardLabels(ds, 'node') },
          annotations: { ...(pt.annotations ?? {}), [CONFIG_HASH_ANNOTATION]: configHash(ds) },
        },
        spec: podSpec,
      },
      volumeClaimTemplates: [
        {
          apiVersion: 'v1',
          kind: 'PersistentVolumeClaim',
          metadata: { name: DATA_VOLUME, labels: standardLabels(ds, 'node') },
          spec: {
            accessModes: ['ReadWriteOnce'],
            ...(storage.storageClassName ? { storageClassName: storage.storageClassName } : {}),
            resources: { requests: { storage: p.claimSize ?? storage.size ?? DATASTORE_DEFAULTS.storageSize } },
          },
        },
      ],
    },
  };
}
