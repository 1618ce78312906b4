/** The children builders: pure functions of a DataStore, checked field by field where a field is a contract. */
import { describe, expect, it } from 'vitest';
import type { DataStore } from '../src/crd/types.js';
import {
  buildClientService, buildClusterSecret, buildConfigMap, buildEtcdClientService, buildEtcdPeerService, buildEtcdStatefulSet, buildPdb,
  buildPeerService, buildServiceAccount, buildStatefulSet, canonicalJson, CONFIG_HASH_ANNOTATION, configHash, diskCacheBytes, hashOf, parseQuantity,
  quantityBytes, QuantityError, selectorString, clientEndpoint, etcdEndpoints, etcdPrefix, s3Prefix,
} from '../src/children/index.js';

function ds(spec: DataStore['spec'] = {}, name = 'store'): DataStore {
  return { apiVersion: 'loam.dev/v1alpha1', kind: 'DataStore', metadata: { name, namespace: 'ns1', uid: 'uid-1', generation: 1 }, spec };
}
const params = { replicas: 3, partition: 0, defaultImage: 'loam:op' };
type Any = any; // eslint-disable-line @typescript-eslint/no-explicit-any

describe('quantity', () => {
  it('parses binary, decimal and exponent suffixes to bytes', () => {
    expect(quantityBytes('10Gi')).toBe(10 * 2 ** 30);
    expect(quantityBytes('64Mi')).toBe(64 * 2 ** 20);
    expect(quantityBytes('1.5Gi')).toBe(1.5 * 2 ** 30);
    expect(quantityBytes('500M')).toBe(500e6);
    expect(quantityBytes('2k')).toBe(2000);
    expect(quantityBytes('1e3')).toBe(1000);
    expect(quantityBytes('123')).toBe(123);
    expect(quantityBytes(4096)).toBe(4096);
    expect(parseQuantity('500m')).toBe(0.5);
    expect(quantityBytes('500m')).toBe(1); // rounded up to a whole byte
  });
  it('rejects what is not a quantity with a typed error', () => {
    for (const bad of ['', 'Gi', '10GiB', '10 g', 'ten', '-1Gi']) expect(() => quantityBytes(bad), bad).toThrow(QuantityError);
  });
  it('leaves headroom on the volume for the disk cache', () => {
    expect(diskCacheBytes('10Gi')).toBe(Math.floor(10 * 2 ** 30 * 0.75));
    expect(diskCacheBytes('10Gi')).toBeLessThan(quantityBytes('10Gi'));
  });
});

describe('labels and owner references', () => {
  it('every child carries the standard labels and one controller owner reference', () => {
    const d = ds({ s3: { bucket: 'b1' } });
    const children = [buildConfigMap(d), buildPeerService(d), buildClientService(d), buildStatefulSet(d, params), buildPdb(d), buildServiceAccount(d), buildClusterSecret(d), buildEtcdStatefulSet(d), buildEtcdClientService(d), buildEtcdPeerService(d)];
    for (const c of children) {
      expect(c.metadata.namespace).toBe('ns1');
      expect(c.metadata.ownerReferences).toEqual([{ apiVersion: 'loam.dev/v1alpha1', kind: 'DataStore', name: 'store', uid: 'uid-1', controller: true, blockOwnerDeletion: true }]);
      expect(c.metadata.labels).toMatchObject({ 'app.kubernetes.io/name': 'loam', 'app.kubernetes.io/instance': 'store', 'app.kubernetes.io/managed-by': 'loam-operator', 'app.kubernetes.io/part-of': 'loam' });
      expect(['node', 'etcd']).toContain(c.metadata.labels['app.kubernetes.io/component']);
    }
    expect(new Set(children.map((c) => `${c.kind}/${c.metadata.name}`)).size).toBe(children.length);
  });
  it('a DataStore without a uid cannot own children', () => {
    const d = ds();
    delete d.metadata.uid;
    expect(() => buildConfigMap(d)).toThrow(/uid/);
  });
  it('selector strings are sorted and stable; hashes ignore key order', () => {
    expect(selectorString({ b: '2', a: '1' })).toBe('a=1,b=2');
    expect(canonicalJson({ b: 1, a: [{ d: 1, c: 2 }] })).toBe('{"a":[{"c":2,"d":1}],"b":1}');
    expect(hashOf({ a: 1, b: 2 })).toBe(hashOf({ b: 2, a: 1 }));
    expect(hashOf({ a: 1 })).not.toBe(hashOf({ a: 2 }));
  });
});

describe('ConfigMap', () => {
  it('configures a node without S3: etcd of the managed etcd, the default prefix, cache size in bytes', () => {
    const d = ds({ cacheSize: '128Mi' });
    expect(buildConfigMap(d).data).toEqual({
      LOAM_ETCD: 'http://store-etcd.ns1.svc:2379',
      LOAM_PREFIX: '/loam/ns1/store',
      LOAM_DATA: '/var/lib/loam',
      LOAM_CLUSTER_SECRET_FILE: '/etc/loam/cluster-secret/secret',
      LOAM_CACHE_SIZE: String(128 * 2 ** 20),
      LOAM_METRICS_PORT: '9464',
    });
  });
  it('configures an external etcd and the S3 tier', () => {
    const d = ds({ storage: { size: '8Gi' }, etcd: { endpoints: ['10.0.0.1:2379', 'http://10.0.0.2:2379'], prefix: '/x/y' }, s3: { bucket: 'bkt', endpoint: 'http://s3:7070', region: 'eu-west-1', uploadInterval: '2s' } });
    expect(buildConfigMap(d).data).toMatchObject({
      LOAM_ETCD: '10.0.0.1:2379,http://10.0.0.2:2379',
      LOAM_PREFIX: '/x/y',
      LOAM_S3_BUCKET: 'bkt',
      LOAM_S3_PREFIX: 'ns1/store/',
      LOAM_S3_ENDPOINT: 'http://s3:7070',
      LOAM_S3_REGION: 'eu-west-1',
      LOAM_UPLOAD_INTERVAL: '2s',
      LOAM_DISK_CACHE_SIZE: String(diskCacheBytes('8Gi')),
    });
    expect(etcdEndpoints(d)).toEqual(['10.0.0.1:2379', 'http://10.0.0.2:2379']);
    expect(etcdPrefix(d)).toBe('/x/y');
    expect(s3Prefix(ds({ s3: { bucket: 'b', prefix: 'p/' } }))).toBe('p/');
    expect(clientEndpoint(d)).toBe('loam://store.ns1.svc:7480');
  });
});

describe('Services', () => {
  it('the peer Service is headless and publishes not-ready addresses; the client Service is a ClusterIP', () => {
    const d = ds();
    const peer = buildPeerService(d);
    expect(peer.metadata.name).toBe('store-nodes');
    expect(peer.spec).toMatchObject({ clusterIP: 'None', publishNotReadyAddresses: true });
    expect(peer.spec.ports.map((p) => p.port)).toEqual([7480, 7481, 9464]);
    const client = buildClientService(d);
    expect(client.metadata.name).toBe('store');
    expect(client.spec.type).toBe('ClusterIP');
    expect(client.spec.ports).toEqual([{ name: 'grpc', port: 7480, targetPort: 'grpc', protocol: 'TCP', appProtocol: 'grpc' }]);
    expect(client.spec.selector).toEqual({ 'app.kubernetes.io/name': 'loam', 'app.kubernetes.io/instance': 'store', 'app.kubernetes.io/component': 'node', 'app.kubernetes.io/managed-by': 'loam-operator' });
  });
});

describe('StatefulSet', () => {
  it('runs loam node named after its Pod, on its Pod IP, with a claim per Pod', () => {
    const s = buildStatefulSet(ds(), params);
    const pod = s.spec.template.spec as Any;
    const c = pod.containers[0];
    expect(s.metadata.name).toBe('store');
    expect(s.spec.serviceName).toBe('store-nodes');
    expect(s.spec.replicas).toBe(3);
    expect(c.image).toBe('loam:op');
    expect(c.args).toEqual(['node', '--node-name', '$(POD_NAME)', '--listen', '$(POD_IP):7480', '--advertise', '$(POD_IP):7480', '--peer-listen', '$(POD_IP):7481', '--peer-advertise', '$(POD_IP):7481']);
    expect(c.env.slice(0, 2)).toEqual([
      { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
      { name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
    ]);
    expect(c.envFrom).toEqual([{ configMapRef: { name: 'store-config' } }]);
    expect(c.readinessProbe.grpc).toEqual({ port: 7480 });
    expect(pod.terminationGracePeriodSeconds).toBe(60);
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true });
    expect(c.securityContext).toMatchObject({ readOnlyRootFilesystem: true, allowPrivilegeEscalation: false });
    expect(c.volumeMounts).toContainEqual({ name: 'data', mountPath: '/var/lib/loam' });
    expect(s.spec.volumeClaimTemplates[0]).toMatchObject({ metadata: { name: 'data' }, spec: { resources: { requests: { storage: '10Gi' } } } });
    expect(s.spec.persistentVolumeClaimRetentionPolicy).toEqual({ whenDeleted: 'Retain', whenScaled: 'Retain' });
    expect(s.spec.updateStrategy).toEqual({ type: 'RollingUpdate', rollingUpdate: { partition: 0 } });
    expect(pod.volumes).toContainEqual({ name: 'cluster-secret', secret: { secretName: 'store-cluster-secret', defaultMode: 0o440 } });
  });
  it('takes credentials from the Secrets the spec names', () => {
    const c = (buildStatefulSet(ds({ etcd: { endpoints: ['e:2379'], credentialsSecret: 'etcd-creds' }, s3: { bucket: 'bkt', credentialsSecret: 's3-creds' } }), params).spec.template.spec as Any).containers[0];
    expect(c.env.slice(2)).toEqual([
      { name: 'LOAM_ETCD_USERNAME', valueFrom: { secretKeyRef: { name: 'etcd-creds', key: 'username' } } },
      { name: 'LOAM_ETCD_PASSWORD', valueFrom: { secretKeyRef: { name: 'etcd-creds', key: 'password' } } },
      { name: 'AWS_ACCESS_KEY_ID', valueFrom: { secretKeyRef: { name: 's3-creds', key: 'accessKeyId' } } },
      { name: 'AWS_SECRET_ACCESS_KEY', valueFrom: { secretKeyRef: { name: 's3-creds', key: 'secretAccessKey' } } },
      { name: 'AWS_SESSION_TOKEN', valueFrom: { secretKeyRef: { name: 's3-creds', key: 'sessionToken', optional: true } } },
    ]);
    const bare = (buildStatefulSet(ds(), params).spec.template.spec as Any).containers[0];
    expect(bare.env.map((e: Any) => e.name)).toEqual(['POD_NAME', 'POD_IP']);
  });
  it('merges the podTemplate and keeps the operator labels', () => {
    const s = buildStatefulSet(ds({
      image: 'loam:pinned', resources: { limits: { memory: '1Gi' } }, storage: { size: '5Gi', storageClassName: 'fast' },
      podTemplate: { labels: { team: 'a' }, annotations: { note: 'x' }, nodeSelector: { disk: 'ssd' }, tolerations: [{ key: 'k', operator: 'Exists' }], priorityClassName: 'high', securityContext: { runAsUser: 1000 }, affinity: { podAntiAffinity: {} }, topologySpreadConstraints: [{ maxSkew: 1 }] },
    }), params);
    const pod = s.spec.template.spec as Any;
    expect(s.spec.template.metadata.labels).toMatchObject({ team: 'a', 'app.kubernetes.io/instance': 'store' });
    expect(s.spec.template.metadata.annotations).toMatchObject({ note: 'x' });
    expect(pod).toMatchObject({ nodeSelector: { disk: 'ssd' }, tolerations: [{ key: 'k', operator: 'Exists' }], priorityClassName: 'high', affinity: { podAntiAffinity: {} }, topologySpreadConstraints: [{ maxSkew: 1 }] });
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 1000 });
    expect(pod.containers[0].image).toBe('loam:pinned');
    expect(pod.containers[0].resources).toEqual({ limits: { memory: '1Gi' } });
    expect(s.spec.volumeClaimTemplates[0]).toMatchObject({ spec: { storageClassName: 'fast', resources: { requests: { storage: '5Gi' } } } });
    expect(buildStatefulSet(ds({ storage: { size: '9Gi' } }), { ...params, claimSize: '5Gi' }).spec.volumeClaimTemplates[0]).toMatchObject({ spec: { resources: { requests: { storage: '5Gi' } } } });
  });
  it('a config change changes the Pod template (config hash), an unrelated one does not', () => {
    const a = buildStatefulSet(ds({ cacheSize: '64Mi' }), params);
    const b = buildStatefulSet(ds({ cacheSize: '128Mi' }), params);
    expect(a.spec.template.metadata.annotations[CONFIG_HASH_ANNOTATION]).toBe(configHash(ds({ cacheSize: '64Mi' })));
    expect(a.spec.template.metadata.annotations[CONFIG_HASH_ANNOTATION]).not.toBe(b.spec.template.metadata.annotations[CONFIG_HASH_ANNOTATION]);
    expect(hashOf(buildStatefulSet(ds({ nodes: 3 }), params).spec.template)).toBe(hashOf(buildStatefulSet(ds({ nodes: 5 }), { ...params, replicas: 5 }).spec.template));
  });
});

describe('the other children', () => {
  it('PodDisruptionBudget allows one node down', () => {
    expect(buildPdb(ds()).spec).toEqual({ maxUnavailable: 1, selector: { matchLabels: buildClientService(ds()).spec.selector } });
  });
  it('the ServiceAccount mounts no token', () => {
    expect(buildServiceAccount(ds()).automountServiceAccountToken).toBe(false);
  });
  it('the cluster Secret holds 32 random bytes as base64 text, differently each time it is built', () => {
    const a = buildClusterSecret(ds());
    const text = Buffer.from(a.data.secret!, 'base64').toString('utf8');
    expect(Buffer.from(text, 'base64')).toHaveLength(32);
    expect(a.immutable).toBe(true);
    expect(buildClusterSecret(ds()).data.secret).not.toBe(a.data.secret);
  });
  it('managed etcd: members, image, a static initial cluster of per-Pod DNS names', () => {
    const s = buildEtcdStatefulSet(ds({ etcd: { managed: { members: 5 } } }));
    const c = (s.spec.template.spec as Any).containers[0];
    expect(s.metadata.name).toBe('store-etcd');
    expect(s.spec.replicas).toBe(5);
    expect(s.spec.serviceName).toBe('store-etcd-peer');
    expect(c.image).toContain('etcd');
    const env = Object.fromEntries(c.env.filter((e: Any) => 'value' in e).map((e: Any) => [e.name, e.value]));
    expect(env.ETCD_INITIAL_CLUSTER.split(',')).toHaveLength(5);
    expect(env.ETCD_INITIAL_CLUSTER).toContain('store-etcd-0=http://store-etcd-0.store-etcd-peer.ns1.svc:2380');
    expect(env.ETCD_LISTEN_CLIENT_URLS).toBe('http://$(POD_IP):2379');
    expect(buildEtcdPeerService(ds()).spec).toMatchObject({ clusterIP: 'None', publishNotReadyAddresses: true });
    expect(buildEtcdClientService(ds()).metadata.name).toBe('store-etcd');
    expect(buildEtcdStatefulSet(ds()).spec.replicas).toBe(3);
  });
});
