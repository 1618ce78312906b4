/**
 * The DataStore's status from what one pass observed: phase, the Ready/Progressing/Degraded
 * conditions (metav1.Condition: lastTransitionTime kept while a condition's status stays), ready
 * nodes, per-node state, endpoint and the scale subresource's selector. A pure function, so the
 * reconcile can compare it with the live status and write only a change.
 */
import type { Condition, ConditionStatus, DataStore, DataStoreNodeStatus, DataStorePhase, DataStoreStatus } from '../crd/types.js';
import { canonicalJson, clientEndpoint, CLIENT_PORT, selectorLabels, selectorString } from '../children/index.js';
import type { NodeAdminStatus } from './contract.js';

export interface ObservedPod {
  name: string;
  ordinal: number;
  ready: boolean;
  ip: string | undefined;
  /** Its PVC is no older than the Pod: the volume was lost and made anew with the Pod. */
  freshVolume?: boolean;
}

export interface Observation {
  /** spec.nodes. */
  desired: number;
  pods: ObservedPod[];
  /**
   * The node Pods the StatefulSet should have now (`<set>-0` .. `<set>-<replicas-1>`). One of them
   * whose Pod is missing (deleted, not yet made again) keeps its entry in status.nodes if it had
   * joined: not ready, with its backend number, which is the only record that it joined (the
   * scale-down and the phase tell a node that is down from one that is new by it).
   */
  members?: string[];
  /** The nodes' Status answers (undefined: none could be had). */
  nodes: NodeAdminStatus[] | undefined;
  rolling?: { updated: number; replicas: number; waiting?: string };
  scalingDown?: { pod: string; objectsLeft?: number; objectsTotal?: number; waiting: string };
  deleting?: string;
  /** An error of this pass (it will be retried): Degraded with its message. */
  error?: string;
  now: Date;
}

/** Per-node state: each Pod (and each member whose Pod is missing, if it had joined), with what its node says about itself. */
export function nodeStatuses(o: Observation, prev: DataStoreNodeStatus[] = []): DataStoreNodeStatus[] {
  const gone = (o.members ?? []).flatMap((name, ordinal): ObservedPod[] => {
    if (o.pods.some((p) => p.name === name)) return [];
    return prev.some((x) => x.name === name && x.backend !== undefined) ? [{ name, ordinal, ready: false, ip: undefined }] : [];
  });
  return [...o.pods, ...gone]
    .sort((a, b) => a.ordinal - b.ordinal)
    .map((p) => {
      const n = o.nodes?.find((x) => x.id === p.name);
      const s: DataStoreNodeStatus = { name: p.name, ready: p.ready && (o.nodes === undefined || n?.state === 'ready') };
      if (n) {
        s.backend = n.number;
        s.draining = n.draining !== null;
        s.objects = n.objects;
        s.uploadBacklogBytes = n.s3?.backlogBytes ?? 0;
      } else {
        // Out of sight (down, restarting): it keeps its number, which also says it joined once.
        const old = prev.find((x) => x.name === p.name)?.backend;
        if (old !== undefined) s.backend = old;
      }
      if (p.ip) s.endpoint = `loam://${p.ip}:${CLIENT_PORT}`;
      return s;
    });
}

function condition(prev: Condition[] | undefined, type: string, status: ConditionStatus, reason: string, message: string, generation: number | undefined, now: Date): Condition {
  const old = prev?.find((c) => c.type === type);
  return {
    type,
    status,
    ...(generation !== undefined ? { observedGeneration: generation } : {}),
    lastTransitionTime: old && old.status === status ? old.lastTransitionTime : now.toISOString().replace(/\.\d{3}Z$/, 'Z'),
    reason,
    message,
  };
}

export function computeStatus(ds: DataStore, o: Observation): DataStoreStatus {
  const prev = ds.status;
  const nodes = nodeStatuses(o, prev?.nodes);
  const readyNodes = nodes.filter((n) => n.ready).length;
  // A node with a backend number has joined the cluster once (status.nodes keeps the number while
  // the node is out of sight): not Ready, it is recovering; without one, it is joining.
  const joined = new Set(nodes.filter((n) => n.backend !== undefined).map((n) => n.name));
  // Pending lasts until the DataStore first runs; after that, missing nodes are joining or down.
  // (A scale-down waiting before any node ever ran, Scaling, does not count as having run.)
  const wasRunning = ['Running', 'Upgrading', 'Degraded', 'Restoring'].includes(prev?.phase ?? '')
    || (prev?.phase === 'Scaling' && (prev.nodes ?? []).some((n) => n.backend !== undefined))
    || prev?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') === true;
  const notReady = nodes.filter((n) => !n.ready);
  const missing = Math.max(0, o.desired - nodes.length);
  const joining = notReady.filter((n) => !joined.has(n.name)).length + missing;

  let phase: DataStorePhase;
  let progress: { reason: string; message: string } | undefined;
  let blind: string | undefined;
  if (o.deleting) {
    phase = 'Deleting';
    progress = { reason: 'Deleting', message: o.deleting };
  } else if (o.rolling) {
    phase = 'Upgrading';
    progress = { reason: 'RollingUpdate', message: `${o.rolling.updated} of ${o.rolling.replicas} nodes updated${o.rolling.waiting ? `; waiting for ${o.rolling.waiting}` : ''}` };
  } else if (o.scalingDown) {
    const s = o.scalingDown;
    phase = 'Scaling';
    progress = { reason: 'Draining', message: `scaling down to ${o.desired}: ${s.pod}${s.objectsLeft !== undefined ? ` has ${s.objectsLeft}${s.objectsTotal ? ` of ${s.objectsTotal}` : ''} objects left` : ''}; waiting for ${s.waiting}` };
  } else if (o.nodes === undefined && readyNodes > 0) {
    // Pods Ready, yet no node answers the status call: what the cluster thinks is unknown.
    phase = 'Degraded';
    blind = `${readyNodes} of ${o.desired} node Pods Ready, but none answered the status call`;
  } else if (readyNodes >= o.desired && notReady.length === 0) {
    phase = 'Running';
  } else if (!wasRunning) {
    phase = 'Pending';
    progress = { reason: 'Creating', message: `${readyNodes} of ${o.desired} nodes Ready` };
  } else if (joining > 0) {
    phase = 'Scaling';
    progress = { reason: 'NodesJoining', message: `${joining} new node${joining === 1 ? '' : 's'} joining; ${readyNodes} of ${o.desired} nodes Ready` };
  } else if (ds.spec.s3 && notReady.some((n) => o.pods.find((p) => p.name === n.name)?.freshVolume)) {
    // A node that had joined, back on a new, empty volume: it restores its log from S3 at start.
    const restoring = notReady.filter((n) => o.pods.find((p) => p.name === n.name)?.freshVolume).map((n) => n.name);
    phase = 'Restoring';
    progress = { reason: 'RestoringFromS3', message: `${restoring.join(', ')} lost ${restoring.length === 1 ? 'its volume and is' : 'their volumes and are'} restoring from S3; ${readyNodes} of ${o.desired} nodes Ready` };
  } else {
    phase = 'Degraded';
    progress = { reason: 'NodesRecovering', message: `${notReady.map((n) => n.name).join(', ')} not Ready (the StatefulSet restarts them); ${readyNodes} of ${o.desired} nodes Ready` };
  }

  const gen = ds.metadata.generation;
  const allReady = phase !== 'Deleting' && readyNodes >= o.desired && notReady.length === 0 && o.nodes !== undefined;
  const conditions: Condition[] = [
    allReady
      ? condition(prev?.conditions, 'Ready', 'True', 'AllNodesReady', `${readyNodes} of ${o.desired} nodes Ready`, gen, o.now)
      : condition(prev?.conditions, 'Ready', 'False', o.nodes === undefined && readyNodes > 0 ? 'NodeStatusUnavailable' : 'NodesNotReady', `${readyNodes} of ${o.desired} nodes Ready${o.nodes === undefined && readyNodes > 0 ? '; no node answered the status call' : ''}`, gen, o.now),
    progress
      ? condition(prev?.conditions, 'Progressing', 'True', progress.reason, progress.message, gen, o.now)
      : condition(prev?.conditions, 'Progressing', 'False', 'Stable', 'nothing in progress', gen, o.now),
    o.error
      ? condition(prev?.conditions, 'Degraded', 'True', 'ReconcileError', o.error.slice(0, 1000), gen, o.now)
      : blind
        ? condition(prev?.conditions, 'Degraded', 'True', 'NodeStatusUnavailable', blind, gen, o.now)
        : phase === 'Degraded'
        ? condition(prev?.conditions, 'Degraded', 'True', 'NodesNotReady', progress!.message, gen, o.now)
        : condition(prev?.conditions, 'Degraded', 'False', 'AsExpected', 'no error', gen, o.now),
  ];
  return {
    phase,
    conditions,
    ...(gen !== undefined ? { observedGeneration: gen } : {}),
    readyNodes,
    nodes,
    endpoint: clientEndpoint(ds),
    selector: selectorString(selectorLabels(ds, 'node')),
  };
}

/** Whether two statuses say the same (field order aside). */
export function sameStatus(a: DataStoreStatus | undefined, b: DataStoreStatus | undefined): boolean {
  return canonicalJson(a ?? {}) === canonicalJson(b ?? {});
}
