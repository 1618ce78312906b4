/**
 * `loam operator`, minus the flag parsing (node/src/cli-operator.ts registers the command on the
 * `loam` program, which owns commander and the logger): where the Kubernetes credentials come
 * from, and the start of the runtime with the real (or stand-in) reconcile and node admin.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { AppsV1Api, CustomObjectsApi, KubeConfig } from '@kubernetes/client-node';
import { DATASTORE_GROUP, DATASTORE_PLURAL, DATASTORE_VERSION } from './crd/datastore.js';
import type { DataStore } from './crd/types.js';
import { apiErrorCode, describeError } from './runtime/errors.js';
import { kubeEventRecorder } from './controller/events.js';
import { HttpKubeApi } from './controller/kube-api.js';
import { defaultIdentity } from './runtime/leader.js';
import type { RuntimeLog } from './runtime/log.js';
import { startOperator, type OperatorHandle } from './runtime/operator.js';
import { loadWiring } from './runtime/wiring.js';

export const DEFAULT_OPERATOR_IMAGE = 'ghcr.io/loam-dev/loam:0.1.0';
export const DEFAULT_SERVICEACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

export interface OperatorCliOptions {
  namespace?: string;
  metricsListen: string;
  leaderElect: boolean;
  leaderElectionNamespace: string;
  leaderElectionId: string;
  resyncMs: number;
  workers: number;
  image: string;
  kubeconfig?: string;
}

export class KubeConfigError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'KubeConfigError';
  }
}

/**
 * The Kubernetes credentials: `--kubeconfig`, else KUBECONFIG, else ~/.kube/config, else the
 * pod's service account. The service account's files are read from LOAM_SERVICEACCOUNT_DIR when
 * set (client-node's loadFromCluster only takes a prefix before the standard path, and a test
 * harness mounts them elsewhere), else from the standard directory.
 */
export function loadKubeConfig(kubeconfig: string | undefined, env: NodeJS.ProcessEnv = process.env): { kc: KubeConfig; source: string } {
  const kc = new KubeConfig();
  try {
    if (kubeconfig) {
      kc.loadFromFile(kubeconfig);
      return { kc, source: kubeconfig };
    }
    const envFiles = (env.KUBECONFIG ?? '').split(path.delimiter).filter(Boolean);
    if (envFiles.length) {
      // KUBECONFIG may list several files, merged in order (client-node does the merge).
      const existing = envFiles.filter((f) => fs.existsSync(f));
      if (existing.length === 0) throw new KubeConfigError(`KUBECONFIG names no file that exists: ${envFiles.join(path.delimiter)}`);
      for (const [i, f] of existing.entries()) {
        if (i === 0) kc.loadFromFile(f);
        else {
          const more = new KubeConfig();
          more.loadFromFile(f);
          kc.mergeConfig(more, true);
        }
      }
      return { kc, source: existing.join(path.delimiter) };
    }
    const home = path.join(os.homedir(), '.kube', 'config');
    if (fs.existsSync(home)) {
      kc.loadFromFile(home);
      return { kc, source: home };
    }
  } catch (e) {
    if (e instanceof KubeConfigError) throw e;
    throw new KubeConfigError(`cannot load the kubeconfig: ${(e as Error).message}`, { cause: e });
  }
  return { kc: inCluster(env), source: 'in-cluster' };
}

function inCluster(env: NodeJS.ProcessEnv): KubeConfig {
  const dir = env.LOAM_SERVICEACCOUNT_DIR || DEFAULT_SERVICEACCOUNT_DIR;
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT ?? '443';
  const token = path.join(dir, 'token');
  const ca = path.join(dir, 'ca.crt');
  if (!host || !fs.existsSync(token)) {
    throw new KubeConfigError(
      `no Kubernetes credentials: no --kubeconfig, no KUBECONFIG, no ~/.kube/config, and not in a pod (${!host ? 'KUBERNETES_SERVICE_HOST is not set' : `no service account token at ${token}`}; LOAM_SERVICEACCOUNT_DIR names another directory of token, ca.crt and namespace)`,
    );
  }
  const server = `${['80', '8080', '8001'].includes(port) ? 'http' : 'https'}://${host.includes(':') ? `[${host}]` : host}:${port}`;
  const nsFile = path.join(dir, 'namespace');
  const namespace = fs.existsSync(nsFile) ? fs.readFileSync(nsFile, 'utf8').trim() : undefined;
  const kc = new KubeConfig();
  // The same shape as client-node's loadFromCluster: the token file is re-read as it rotates.
  kc.loadFromOptions({
    clusters: [{ name: 'inCluster', server, caFile: fs.existsSync(ca) ? ca : undefined, skipTLSVerify: false }],
    users: [{ name: 'inClusterUser', authProvider: { name: 'tokenFile', config: { tokenFile: token } } }],
    contexts: [{ name: 'inClusterContext', cluster: 'inCluster', user: 'inClusterUser', namespace }],
    currentContext: 'inClusterContext',
  });
  return kc;
}

/** Starts the operator as `loam operator` does; the caller stops it (and closes `admin`) on a signal. */
export async function runOperator(opts: OperatorCliOptions, log: RuntimeLog): Promise<{ handle: OperatorHandle; close(): Promise<void> }> {
  const { kc, source } = loadKubeConfig(opts.kubeconfig);
  const wiring = await loadWiring();
  const identity = defaultIdentity();
  log.info({ kubeconfig: source, server: kc.getCurrentCluster()?.server, identity }, 'loaded Kubernetes credentials');
  const handle = await startOperator({
    kc,
    reconciler: wiring.reconciler,
    namespace: opts.namespace,
    resyncMs: opts.resyncMs,
    workers: opts.workers,
    leaderElection: opts.leaderElect ? { namespace: opts.leaderElectionNamespace, name: opts.leaderElectionId, identity } : false,
    metricsListen: opts.metricsListen,
    defaultImage: opts.image,
    admin: wiring.admin,
    events: kubeEventRecorder(new HttpKubeApi(kc), log, identity),
    log,
  });
  return {
    handle,
    close: async () => {
      await handle.stop();
      await wiring.admin.close();
    },
  };
}

/** What `loam status --datastore` shows of a DataStore's StatefulSet: the progress of a rolling upgrade. */
export interface StatefulSetRollView {
  name: string;
  /** spec.replicas */
  replicas: number;
  readyReplicas: number;
  updatedReplicas: number;
  currentRevision?: string;
  updateRevision?: string;
  /** spec.updateStrategy.rollingUpdate.partition: ordinals below it are not updated yet. */
  partition?: number;
}

export class DataStoreNotFoundError extends Error {
  constructor(readonly namespace: string, readonly datastore: string, context: string) {
    super(`DataStore ${namespace}/${datastore} not found (Kubernetes context: ${context}); kubectl get lds -A lists them`);
    this.name = 'DataStoreNotFoundError';
  }
}

/**
 * `loam status --datastore NAME`'s lookup: the DataStore (with its status) and the StatefulSet of
 * its nodes (named after it), through the same credentials as `loam operator`. `namespace`
 * defaults to the context's, else `default`.
 */
export async function lookupDataStore(name: string, namespace?: string, env: NodeJS.ProcessEnv = process.env): Promise<{ ds: DataStore; statefulSet?: StatefulSetRollView; namespace: string; context: string }> {
  const { kc, source } = loadKubeConfig(undefined, env);
  const ns = namespace ?? kc.getContextObject(kc.getCurrentContext())?.namespace ?? 'default';
  let ds: DataStore;
  try {
    ds = (await kc.makeApiClient(CustomObjectsApi).getNamespacedCustomObject({ group: DATASTORE_GROUP, version: DATASTORE_VERSION, namespace: ns, plural: DATASTORE_PLURAL, name })) as DataStore;
  } catch (e) {
    if (apiErrorCode(e) === 404) throw new DataStoreNotFoundError(ns, name, source);
    throw new Error(`looking up DataStore ${ns}/${name} (Kubernetes context: ${source}): ${describeError(e).message}`, { cause: e });
  }
  let statefulSet: StatefulSetRollView | undefined;
  try {
    const sts = await kc.makeApiClient(AppsV1Api).readNamespacedStatefulSet({ namespace: ns, name });
    statefulSet = {
      name,
      replicas: sts.spec?.replicas ?? 0,
      readyReplicas: sts.status?.readyReplicas ?? 0,
      updatedReplicas: sts.status?.updatedReplicas ?? 0,
      currentRevision: sts.status?.currentRevision,
      updateRevision: sts.status?.updateRevision,
      partition: sts.spec?.updateStrategy?.rollingUpdate?.partition,
    };
  } catch (e) {
    // No StatefulSet yet (a new DataStore), or no right to read it: the DataStore's own status still shows.
    if (apiErrorCode(e) !== 404 && apiErrorCode(e) !== 403) throw new Error(`reading StatefulSet ${ns}/${name}: ${describeError(e).message}`, { cause: e });
  }
  return { ds, statefulSet, namespace: ns, context: source };
}
