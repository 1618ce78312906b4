/**
 * The etcd the operator runs for a DataStore without etcd.endpoints: a StatefulSet of
 * `etcd.managed.members` members (`<name>-etcd-<i>`), bootstrapped as one static cluster from
 * the peer Service's per-Pod DNS names, with a PVC each. The member count is fixed at bootstrap:
 * changing it later needs etcd membership changes this operator does not make (the StatefulSet's
 * replicas follow the spec, a new member would not join).
 */
import type { DataStore, KubeObject } from '../crd/types.js';
import { DATASTORE_DEFAULTS } from '../crd/datastore.js';
import { ETCD_CLIENT_PORT, ETCD_PEER_PORT } from './config-map.js';
import { childMeta, names, selectorLabels, standardLabels } from './labels.js';
import type { StatefulSet } from './statefulset.js';

/** etcd 3.6, the release the test tooling runs. Its name contains `etcd` (the kubelet harness runs it as Debian's etcd). */
export const MANAGED_ETCD_IMAGE = 'registry.k8s.io/etcd:3.6.16-0';
export const ETCD_DATA_DIR = '/var/lib/etcd';

export function managedEtcdMembers(ds: DataStore): number {
  return ds.spec.etcd?.managed?.members ?? DATASTORE_DEFAULTS.etcdManagedMembers;
}

export function buildEtcdStatefulSet(ds: DataStore): StatefulSet {
  const members = managedEtcdMembers(ds);
  const ns = ds.metadata.namespace!;
  const sts = names.etcdStatefulSet(ds);
  const peer = `${names.etcdPeerService(ds)}.${ns}.svc`;
  const memberUrl = (m: string) => `http://${m}.${peer}:${ETCD_PEER_PORT}`;
  const initialCluster = Array.from({ length: members }, (_, i) => `${sts}-${i}=${memberUrl(`${sts}-${i}`)}`).join(',');
  const env: KubeObject[] = [
    { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
    { name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
    { name: 'ETCD_NAME', value: '$(POD_NAME)' },
    { name: 'ETCD_DATA_DIR', value: ETCD_DATA_DIR },
    { name: 'ETCD_LISTEN_CLIENT_URLS', value: `http://$(POD_IP):${ETCD_CLIENT_PORT}` },
    { name: 'ETCD_ADVERTISE_CLIENT_URLS', value: `http://$(POD_NAME).${peer}:${ETCD_CLIENT_PORT}` },
    { name: 'ETCD_LISTEN_PEER_URLS', value: `http://$(POD_IP):${ETCD_PEER_PORT}` },
    { name: 'ETCD_INITIAL_ADVERTISE_PEER_URLS', value: `http://$(POD_NAME).${peer}:${ETCD_PEER_PORT}` },
    { name: 'ETCD_INITIAL_CLUSTER', value: initialCluster },
    { name: 'ETCD_INITIAL_CLUSTER_STATE', value: 'new' },
    // The DataStore's uid: members of another DataStore's etcd never join this one.
    { name: 'ETCD_INITIAL_CLUSTER_TOKEN', value: `loam-${ds.metadata.uid}` },
  ];
  const labels = standardLabels(ds, 'etcd');
  return {
    apiVersion: 'apps/v1',
    kind: 'StatefulSet',
    metadata: childMeta(ds, sts, 'etcd'),
    spec: {
      replicas: members,
      serviceName: names.etcdPeerService(ds),
      selector: { matchLabels: selectorLabels(ds, 'etcd') },
      // Every member at once: a member waits for a majority of the initial cluster to bootstrap.
      podManagementPolicy: 'Parallel',
      updateStrategy: { type: 'RollingUpdate', rollingUpdate: { partition: 0 } },
      persistentVolumeClaimRetentionPolicy: { whenDeleted: 'Retain', whenScaled: 'Retain' },
      template: {
        metadata: { labels, annotations: {} },
        spec: {
          automountServiceAccountToken: false,
          terminationGracePeriodSeconds: 30,
          securityContext: { runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, fsGroup: 65532, seccompProfile: { type: 'RuntimeDefault' } },
          containers: [
            {
              name: 'etcd',
              image: MANAGED_ETCD_IMAGE,
              command: ['etcd'],
              env,
              ports: [
                { name: 'client', containerPort: ETCD_CLIENT_PORT, protocol: 'TCP' },
                { name: 'peer', containerPort: ETCD_PEER_PORT, protocol: 'TCP' },
              ],
              readinessProbe: { tcpSocket: { port: ETCD_CLIENT_PORT }, periodSeconds: 5 },
              volumeMounts: [{ name: 'data', mountPath: ETCD_DATA_DIR }],
              securityContext: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } },
            },
          ],
        },
      },
      volumeClaimTemplates: [
        {
          apiVersion: 'v1',
          kind: 'PersistentVolumeClaim',
          metadata: { name: 'data', labels },
          spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '1Gi' } } },
        },
      ],
    },
  };
}
