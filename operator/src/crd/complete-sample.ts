/**
 * A DataStore with every field of its spec and status set: the check that types.ts and the schema
 * in datastore.ts describe the same resource. The compiler makes this sample set every field of
 * the types and nothing else (Complete<...> and excess-property checks); test/crd-drift.test.ts
 * walks it against the schema, and test/kube/datastore-crd.test.ts writes it to a real API server
 * and reads it back with nothing pruned. Its values pass every rule of the schema, except that an
 * etcd cannot be external (`endpoints`) and `managed` at once: drop one of the two to apply it.
 */
import type { Complete, DataStoreNodeStatus, DataStoreSpec, DataStoreStatus } from './types.js';

const spec: Complete<DataStoreSpec> = {
  nodes: 3,
  image: 'loam:0.1.0',
  imagePullPolicy: 'IfNotPresent',
  resources: { limits: { cpu: '2', memory: '2Gi' }, requests: { cpu: '500m', memory: '1Gi' } },
  storage: { size: '20Gi', storageClassName: 'fast' },
  cacheSize: '256Mi',
  etcd: {
    endpoints: ['http://etcd-0.etcd:2379', 'etcd-1.etcd:2379'],
    credentialsSecret: 'etcd-credentials',
    prefix: '/loam/default/sample',
    managed: { members: 3 },
  },
  s3: {
    endpoint: 'http://s3.storage.svc:7070',
    bucket: 'loam-sample',
    prefix: 'default/sample/',
    region: 'us-east-1',
    credentialsSecret: 's3-credentials',
    uploadInterval: '5s',
  },
  podTemplate: {
    labels: { team: 'storage' },
    annotations: { 'prometheus.io/scrape': 'true' },
    affinity: {
      podAntiAffinity: {
        preferredDuringSchedulingIgnoredDuringExecution: [
          { weight: 100, podAffinityTerm: { topologyKey: 'kubernetes.io/hostname', labelSelector: { matchLabels: { 'app.kubernetes.io/instance': 'sample' } } } },
        ],
      },
    },
    tolerations: [{ key: 'dedicated', operator: 'Equal', value: 'storage', effect: 'NoSchedule' }],
    topologySpreadConstraints: [{ maxSkew: 1, topologyKey: 'topology.kubernetes.io/zone', whenUnsatisfiable: 'ScheduleAnyway' }],
    nodeSelector: { 'kubernetes.io/os': 'linux' },
    priorityClassName: 'storage-critical',
    securityContext: { runAsNonRoot: true, runAsUser: 10001, fsGroup: 10001 },
  },
  deletionPolicy: 'Retain',
};

const status: Complete<DataStoreStatus> = {
  phase: 'Running',
  conditions: [
    { type: 'Ready', status: 'True', observedGeneration: 1, lastTransitionTime: '2026-12-01T10:00:00Z', reason: 'AllNodesReady', message: '3 of 3 nodes are Ready' },
    { type: 'Progressing', status: 'False', observedGeneration: 1, lastTransitionTime: '2026-12-01T10:00:00Z', reason: 'Reconciled', message: '' },
    { type: 'Degraded', status: 'False', observedGeneration: 1, lastTransitionTime: '2026-12-01T10:00:00Z', reason: 'Healthy', message: '' },
  ],
  observedGeneration: 1,
  readyNodes: 3,
  nodes: [0, 1, 2].map((i): Complete<DataStoreNodeStatus> => ({
    name: `sample-${i}`,
    backend: i + 1,
    ready: true,
    draining: false,
    objects: 1000 * i,
    uploadBacklogBytes: 0,
    endpoint: `loam://sample-${i}.sample-nodes.default.svc:7480`,
  })),
  endpoint: 'loam://sample.default.svc:7480',
  selector: 'app.kubernetes.io/name=loam,app.kubernetes.io/instance=sample,app.kubernetes.io/component=node',
};

/** Every field set (see the file comment). A fresh copy each call. */
export function completeDataStore(name = 'sample', namespace = 'default'): { apiVersion: 'loam.dev/v1alpha1'; kind: 'DataStore'; metadata: { name: string; namespace: string }; spec: Complete<DataStoreSpec>; status: Complete<DataStoreStatus> } {
  return structuredClone({ apiVersion: 'loam.dev/v1alpha1', kind: 'DataStore', metadata: { name, namespace }, spec, status });
}
