/**
 * One level-triggered, idempotent pass over one DataStore (`reconcileDataStore`, the Reconciler
 * the runtime drives):
 *
 * 1. Read the DataStore; gone: nothing to do; being deleted: the finalizer's work (deletion.ts).
 * 2. Make sure it carries the finalizer.
 * 3. Apply the children that follow from the spec alone (ServiceAccount, ConfigMap, Services, PDB,
 *    a managed etcd), and create the cluster Secret once.
 * 4. Observe: the node StatefulSet, its Pods, and the nodes' own Status through a Ready Pod.
 * 5. Decide the StatefulSet's replicas (scale-down.ts: drains, one node at a time) and its
 *    rollout partition (rollout.ts), start or cancel drains, apply the StatefulSet.
 * 6. Write the status (status.ts) when it changed; record an Event at each step.
 *
 * No write when nothing changed: every applied child carries the hash of what was applied
 * (SPEC_HASH_ANNOTATION) and is applied only when the desired object hashes differently (or it
 * is missing, or has lost that annotation); the status is written only when it differs from the
 * live one; the finalizer is added only when missing; Events only mark changes. A child edited by
 * someone else keeps its edit until its desired state changes (the hash is of what the operator
 * wants, compared with what it last applied; not a diff against the live object).
 *
 * An error (from the API, a node, etcd or S3) sets the Degraded condition, records a Warning
 * Event and is rethrown for the queue to retry with backoff.
 */
import { DATASTORE_API_VERSION, DATASTORE_DEFAULTS, DATASTORE_KIND } from '../crd/datastore.js';
import type { Condition, DataStore } from '../crd/types.js';
import {
  buildClientService, buildClusterSecret, buildConfigMap, buildEtcdClientService, buildEtcdPeerService, buildEtcdStatefulSet, buildPdb,
  buildPeerService, buildServiceAccount, buildStatefulSet, CLIENT_PORT, hashOf, isManagedEtcd, names, selectorLabels, selectorString,
  SPEC_HASH_ANNOTATION, TEMPLATE_HASH_ANNOTATION,
} from '../children/index.js';
import type { NodeAdminStatus, ReconcileContext, ReconcileResult, Reconciler } from './contract.js';
import { reconcileDeletion } from './deletion.js';
import { addFinalizer, dataStoreRef } from './finalizer.js';
import { HttpKubeApi, KubeApiError, refOf, type KubeApi, type KubeObj } from './kube-api.js';
import { onNewVolume, ordinalOf, podReady, REVISION_LABEL, type PodObj, type StatefulSetObj } from './objects.js';
import { planRollout } from './rollout.js';
import { planScale } from './scale-down.js';
import { sameStatus, computeStatus, type ObservedPod } from './status.js';
import { writeStatus } from './status-write.js';

/**
 * How soon to look again while something is in progress (a drain, Pods starting, a rollout): the
 * step after a drain ends (shrinking the StatefulSet) waits for this, so it bounds what a
 * scale-down adds to the drain itself (bench/operator.mjs, operator-drain). A pass costs a few
 * GETs and one Status call; it writes only when the status changed.
 */
export const PROGRESS_REQUEUE_MS = 1_000;
/**
 * How soon to look again while Running: the nodes' objects and upload backlog change with the
 * data, and no Kubernetes event says so (the resync alone would leave them up to its period old).
 * A pass that sees the same numbers writes nothing.
 */
export const RUNNING_REQUEUE_MS = 10_000;
/** Deadline of the nodes' Status call. */
export const NODE_STATUS_TIMEOUT_MS = 5_000;

const apis = new WeakMap<object, KubeApi>();

/** The context's KubeApi: `ctx.kube`, else one over `ctx.kc` (one per KubeConfig). */
export function kubeApiOf(ctx: ReconcileContext): KubeApi {
  if (ctx.kube) return ctx.kube;
  let api = apis.get(ctx.kc);
  if (!api) apis.set(ctx.kc, (api = new HttpKubeApi(ctx.kc)));
  return api;
}

export const reconcileDataStore: Reconciler = async (ctx, key) => {
  const api = kubeApiOf(ctx);
  const ds = await api.get<DataStore & KubeObj>({ apiVersion: DATASTORE_API_VERSION, kind: DATASTORE_KIND, namespace: key.namespace, name: key.name });
  if (!ds) return {};
  try {
    if (ds.metadata.deletionTimestamp) return await reconcileDeletion(ctx, api, ds);
    return await reconcileLive(ctx, api, ds);
  } catch (e) {
    await reportError(ctx, api, ds, e);
    throw e;
  }
};

/** Applies `obj` unless what was last applied hashes the same; returns the object as it now is. */
export async function ensureApplied<T extends KubeObj>(api: KubeApi, obj: KubeObj, live?: KubeObj | null): Promise<{ obj: T; created: boolean; changed: boolean }> {
  const hash = hashOf(obj);
  const desired = { ...obj, metadata: { ...obj.metadata, annotations: { ...(obj.metadata.annotations ?? {}), [SPEC_HASH_ANNOTATION]: hash } } };
  const current = live === undefined ? await api.get<T>(refOf(obj)) : (live ?? undefined);
  if (current && current.metadata.annotations?.[SPEC_HASH_ANNOTATION] === hash) return { obj: current as T, created: false, changed: false };
  return { obj: await api.apply<T>(desired), created: !current, changed: true };
}

async function ensureClusterSecret(api: KubeApi, ds: DataStore): Promise<boolean> {
  const ref = { apiVersion: 'v1', kind: 'Secret', namespace: ds.metadata.namespace, name: names.clusterSecret(ds) };
  if (await api.get(ref)) return false;
  try {
    await api.create(buildClusterSecret(ds));
    return true;
  } catch (e) {
    // Created meanwhile (a lost answer, a second operator): never rewrite it.
    if (e instanceof KubeApiError && e.code === 409) return false;
    throw e;
  }
}

/**
 * Marks the not-Ready Pods whose data PVC is no older than the Pod itself (the StatefulSet made
 * both anew: the old volume was deleted), which with S3 means the node is restoring. Costs a
 * list of PVCs, only when some node is not Ready.
 */
async function markFreshVolumes(api: KubeApi, ds: DataStore, podObjs: PodObj[], observed: ObservedPod[], nodes: NodeAdminStatus[] | undefined): Promise<void> {
  const down = observed.filter((p) => !p.ready || (nodes !== undefined && nodes.find((n) => n.id === p.name)?.state !== 'ready'));
  if (down.length === 0) return;
  const claims = await api.list('v1', 'PersistentVolumeClaim', ds.metadata.namespace!, selectorString(selectorLabels(ds, 'node')));
  for (const p of down) {
    const pod = podObjs.find((x) => x.metadata.name === p.name);
    const claim = claims.find((c) => c.metadata.name === names.dataClaim(ds, p.ordinal)) as (KubeObj & { metadata: { creationTimestamp?: string } }) | undefined;
    if (onNewVolume(pod, claim)) p.freshVolume = true;
  }
}

/** Pods whose node has joined the cluster: a backend number now or in the last status. */
function joinedNodes(ds: DataStore, nodes: NodeAdminStatus[] | undefined): Set<string> {
  return new Set([...(ds.status?.nodes ?? []).filter((n) => n.backend !== undefined).map((n) => n.name), ...(nodes ?? []).map((n) => n.id)]);
}

/** The nodes' own Status through the first Ready Pod that answers; undefined when none does. */
async function nodesStatus(ctx: ReconcileContext, pods: ObservedPod[], avoid?: string): Promise<NodeAdminStatus[] | undefined> {
  const candidates = pods.filter((p) => p.ready && p.ip).sort((a, b) => Number(a.name === avoid) - Number(b.name === avoid) || a.ordinal - b.ordinal);
  for (const p of candidates) {
    try {
      return await ctx.admin.status({ address: `${p.ip}:${CLIENT_PORT}` }, NODE_STATUS_TIMEOUT_MS);
    } catch (e) {
      ctx.log.warn({ err: e, via: p.name }, 'node status call failed');
    }
  }
  return undefined;
}

function viaAddress(pods: ObservedPod[], avoid: string | undefined): { address: string } | undefined {
  const p = pods.filter((x) => x.ready && x.ip).sort((a, b) => Number(a.name === avoid) - Number(b.name === avoid) || a.ordinal - b.ordinal)[0];
  return p ? { address: `${p.ip}:${CLIENT_PORT}` } : undefined;
}

async function reconcileLive(ctx: ReconcileContext, api: KubeApi, fetched: DataStore): Promise<ReconcileResult> {
  const ds = await addFinalizer(api, fetched);
  const ns = ds.metadata.namespace!;
  const desired = ds.spec.nodes ?? DATASTORE_DEFAULTS.nodes;

  // Children that follow from the spec alone.
  const children: KubeObj[] = [buildServiceAccount(ds), buildConfigMap(ds), buildPeerService(ds), buildClientService(ds), buildPdb(ds)];
  if (isManagedEtcd(ds)) children.push(buildEtcdPeerService(ds), buildEtcdClientService(ds), buildEtcdStatefulSet(ds));
  for (const c of children as unknown as KubeObj[]) {
    const r = await ensureApplied(api, c);
    if (r.created) await ctx.events.normal(ds, 'Created', `created ${c.kind} ${c.metadata.name}`);
  }
  if (await ensureClusterSecret(api, ds)) await ctx.events.normal(ds, 'Created', `created the cluster Secret ${names.clusterSecret(ds)}`);

  // Observe.
  const setName = names.statefulSet(ds);
  const live = await api.get<StatefulSetObj>({ apiVersion: 'apps/v1', kind: 'StatefulSet', namespace: ns, name: setName });
  const podObjs = await api.list<PodObj>('v1', 'Pod', ns, selectorString(selectorLabels(ds, 'node')));
  const pods = podObjs
    .map((p) => ({ obj: p, ordinal: ordinalOf(setName, p.metadata.name) }))
    .filter((p): p is { obj: PodObj; ordinal: number } => p.ordinal !== undefined);
  const observed: ObservedPod[] = pods
    .filter((p) => !p.obj.metadata.deletionTimestamp || !pods.some((q) => q !== p && q.ordinal === p.ordinal))
    .map((p) => ({ name: p.obj.metadata.name!, ordinal: p.ordinal, ready: podReady(p.obj), ip: p.obj.status?.podIP }));
  const liveReplicas = live?.spec.replicas;
  const shrinkTarget = liveReplicas !== undefined && desired < liveReplicas ? names.pod(ds, liveReplicas - 1) : undefined;
  const nodes = observed.some((p) => p.ready && p.ip) ? await nodesStatus(ctx, observed, shrinkTarget) : undefined;
  if (ds.spec.s3) await markFreshVolumes(api, ds, pods.map((p) => p.obj), observed, nodes);

  // Decide.
  const draft = buildStatefulSet(ds, { replicas: desired, partition: 0, defaultImage: ctx.defaultImage });
  const templateHash = hashOf(draft.spec.template);
  const liveTemplateHash = live?.metadata.annotations?.[TEMPLATE_HASH_ANNOTATION];
  const updateRevision = live?.status?.updateRevision;
  const liveRolling = live !== undefined && (liveTemplateHash !== templateHash || (updateRevision !== undefined && pods.some((p) => p.ordinal < (liveReplicas ?? 0) && p.obj.metadata.labels?.[REVISION_LABEL] !== updateRevision)));
  const scale = planScale({ desired, replicas: liveReplicas, setName, uid: ds.metadata.uid!, generation: ds.metadata.generation ?? 0, nodes, rolling: liveRolling && pods.length > 0, joined: joinedNodes(ds, nodes) });
  const rollout = planRollout({
    live: live && {
      templateHash: liveTemplateHash,
      partition: live.spec.updateStrategy?.rollingUpdate?.partition ?? 0,
      updateRevision,
      ...(live.status?.currentRevision ? { currentRevision: live.status.currentRevision } : {}),
      statusCurrent: live.status?.observedGeneration !== undefined && live.status.observedGeneration >= (live.metadata.generation ?? 0),
    },
    desiredTemplateHash: templateHash,
    replicas: scale.replicas,
    pods: pods.map((p) => ({ name: p.obj.metadata.name!, ordinal: p.ordinal, ready: podReady(p.obj), revision: p.obj.metadata.labels?.[REVISION_LABEL] })),
    nodes,
  });

  // Act on the nodes.
  const via = viaAddress(observed, shrinkTarget);
  for (const c of scale.cancel) {
    if (!via) break;
    await ctx.admin.cancelDrain(via, c.number);
    await ctx.events.normal(ds, 'DrainCancelled', `nodes raised to ${desired}: cancelled the drain of ${c.pod} (node ${c.number})`);
  }
  if (scale.drain && via) {
    await ctx.admin.startDrain(via, scale.drain.number, scale.drain.opId);
    await ctx.events.normal(ds, 'DrainStarted', `scaling down to ${desired}: draining ${scale.drain.pod} (node ${scale.drain.number})`);
  }

  // The StatefulSet.
  const claimSize = live?.spec.volumeClaimTemplates?.[0]?.spec?.resources?.requests?.storage;
  const sts = buildStatefulSet(ds, { replicas: scale.replicas, partition: rollout.partition, defaultImage: ctx.defaultImage, ...(claimSize ? { claimSize } : {}) });
  sts.metadata.annotations = { [TEMPLATE_HASH_ANNOTATION]: templateHash };
  const applied = await ensureApplied(api, sts as unknown as KubeObj, live ?? null);
  if (applied.created) await ctx.events.normal(ds, 'Created', `created StatefulSet ${setName} with ${scale.replicas} nodes`);
  else if (applied.changed) {
    if (scale.shrinking) await ctx.events.normal(ds, 'ScaledDown', `${scale.shrinking} is drained and empty: StatefulSet ${setName} down to ${scale.replicas} nodes`);
    if (liveReplicas !== undefined && scale.replicas > liveReplicas) await ctx.events.normal(ds, 'ScaledUp', `StatefulSet ${setName} up to ${scale.replicas} nodes`);
    if (liveTemplateHash !== templateHash) await ctx.events.normal(ds, 'RolloutStarted', `the node Pod template changed: rolling ${scale.replicas} nodes, highest ordinal first`);
    else if (rollout.partition !== (live?.spec.updateStrategy?.rollingUpdate?.partition ?? 0)) await ctx.events.normal(ds, 'RolloutStep', `rolling node ${rollout.partition} (partition ${rollout.partition})`);
  }

  // Status.
  const status = computeStatus(ds, {
    desired,
    pods: observed.filter((p) => p.ordinal < scale.replicas),
    members: Array.from({ length: scale.replicas }, (_, i) => names.pod(ds, i)),
    nodes,
    ...(rollout.rolling ? { rolling: { updated: rollout.updated, replicas: scale.replicas, ...(rollout.waiting ? { waiting: rollout.waiting } : {}) } } : {}),
    ...(scale.scalingDown ? { scalingDown: scale.scalingDown } : {}),
    now: new Date(),
  });
  await writeStatus(ctx, api, ds, status);
  return { requeueAfterMs: status.phase === 'Running' ? RUNNING_REQUEUE_MS : PROGRESS_REQUEUE_MS };
}

/** The Degraded condition with the error (written only when it changed), and a Warning Event. */
async function reportError(ctx: ReconcileContext, api: KubeApi, ds: DataStore, e: unknown): Promise<void> {
  const message = e instanceof Error ? e.message : String(e);
  ctx.log.error({ err: e, datastore: `${ds.metadata.namespace}/${ds.metadata.name}` }, 'reconcile failed');
  await ctx.events.warning(ds, 'ReconcileError', message);
  try {
    const fresh = (await api.get<DataStore & KubeObj>(dataStoreRef(ds))) ?? ds;
    const prev = fresh.status?.conditions ?? [];
    const old = prev.find((c) => c.type === 'Degraded');
    const degraded: Condition = {
      type: 'Degraded',
      status: 'True',
      ...(fresh.metadata.generation !== undefined ? { observedGeneration: fresh.metadata.generation } : {}),
      lastTransitionTime: old?.status === 'True' ? old.lastTransitionTime : new Date().toISOString().replace(/\.\d{3}Z$/, 'Z'),
      reason: 'ReconcileError',
      message: message.slice(0, 1000),
    };
    const status = { ...(fresh.status ?? {}), conditions: [...prev.filter((c) => c.type !== 'Degraded'), degraded] };
    if (!sameStatus(fresh.status, status)) {
      await api.apply({ apiVersion: DATASTORE_API_VERSION, kind: DATASTORE_KIND, metadata: { name: ds.metadata.name, namespace: ds.metadata.namespace }, status } as KubeObj, { subresource: 'status' });
    }
  } catch (e2) {
    ctx.log.warn({ err: e2 }, 'could not record the error in the status');
  }
}
