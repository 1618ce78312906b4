/**
 * The node Services: a headless peer Service (`<name>-nodes`, the StatefulSet's serviceName:
 * stable per-Pod DNS names, published before the Pods are Ready so nodes can find each other
 * while they start) and the client Service (`<name>`, what `status.endpoint` names). Plus the
 * managed etcd's client and peer Services.
 */
import type { DataStore } from '../crd/types.js';
import { CLIENT_PORT, ETCD_CLIENT_PORT, ETCD_PEER_PORT, METRICS_PORT, PEER_PORT } from './config-map.js';
import { childMeta, names, selectorLabels, type ChildMeta, type Component } from './labels.js';

export interface Service {
  apiVersion: 'v1';
  kind: 'Service';
  metadata: ChildMeta;
  spec: {
    type?: 'ClusterIP';
    clusterIP?: 'None';
    publishNotReadyAddresses?: boolean;
    selector: Record<string, string>;
    ports: { name: string; port: number; targetPort: number | string; protocol: 'TCP'; appProtocol?: string }[];
  };
}

const port = (name: string, p: number, appProtocol?: string) => ({ name, port: p, targetPort: name, protocol: 'TCP' as const, ...(appProtocol ? { appProtocol } : {}) });

function service(ds: DataStore, name: string, component: Component, headless: boolean, ports: Service['spec']['ports']): Service {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: childMeta(ds, name, component),
    spec: {
      ...(headless ? { clusterIP: 'None' as const, publishNotReadyAddresses: true } : { type: 'ClusterIP' as const }),
      selector: selectorLabels(ds, component),
      ports,
    },
  };
}

export function buildPeerService(ds: DataStore): Service {
  return service(ds, names.peerService(ds), 'node', true, [port('grpc', CLIENT_PORT, 'grpc'), port('peer', PEER_PORT, 'grpc'), port('metrics', METRICS_PORT)]);
}

export function buildClientService(ds: DataStore): Service {
  return service(ds, names.clientService(ds), 'node', false, [port('grpc', CLIENT_PORT, 'grpc')]);
}

export function buildEtcdPeerService(ds: DataStore): Service {
  return service(ds, names.etcdPeerService(ds), 'etcd', true, [port('client', ETCD_CLIENT_PORT), port('peer', ETCD_PEER_PORT)]);
}

export function buildEtcdClientService(ds: DataStore): Service {
  return service(ds, names.etcdClientService(ds), 'etcd', false, [port('client', ETCD_CLIENT_PORT)]);
}
