/** The fields of Pods, StatefulSets and PVCs that the reconcile reads (as the API server sends them). */
import type { KubeObj } from './kube-api.js';

export interface PodObj extends KubeObj {
  metadata: KubeObj['metadata'] & { deletionTimestamp?: string; creationTimestamp?: string };
  status?: {
    phase?: string;
    podIP?: string;
    conditions?: { type: string; status: string; lastTransitionTime?: string }[];
    containerStatuses?: { name: string; ready?: boolean; restartCount?: number }[];
  };
}

export interface StatefulSetObj extends KubeObj {
  metadata: KubeObj['metadata'] & { generation?: number };
  spec: {
    replicas?: number;
    updateStrategy?: { rollingUpdate?: { partition?: number } };
    volumeClaimTemplates?: { spec?: { resources?: { requests?: { storage?: string } } } }[];
  };
  status?: { observedGeneration?: number; replicas?: number; readyReplicas?: number; currentRevision?: string; updateRevision?: string; updatedReplicas?: number };
}

export function podReady(p: PodObj): boolean {
  return !p.metadata.deletionTimestamp && p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') === true;
}

/** The ordinal of a StatefulSet Pod `<set>-<i>`, or undefined for another name. */
export function ordinalOf(setName: string, podName: string | undefined): number | undefined {
  if (!podName?.startsWith(`${setName}-`)) return undefined;
  const rest = podName.slice(setName.length + 1);
  return /^(0|[1-9]\d*)$/.test(rest) ? Number(rest) : undefined;
}

/**
 * Whether `pod` is on a volume made anew with it: its data claim is no older than the Pod (the
 * StatefulSet made both: the old claim was deleted). Timestamps have a one-second resolution and
 * the claim is made just before the Pod, so the first Pod of every ordinal matches too; it is the
 * caller's business that the node had joined before. A Pod whose container has restarted is not
 * taken as one: the process that restarted has had that volume since its first start (a crash, or
 * a restore that failed, not one in progress).
 */
export function onNewVolume(pod: PodObj | undefined, claim: { metadata: { creationTimestamp?: string } } | undefined): boolean {
  const podAt = Date.parse(pod?.metadata.creationTimestamp ?? '');
  const claimAt = Date.parse(claim?.metadata.creationTimestamp ?? '');
  if (!Number.isFinite(podAt) || !Number.isFinite(claimAt) || claimAt < podAt - 1000) return false;
  return (pod!.status?.containerStatuses ?? []).every((c) => (c.restartCount ?? 0) === 0);
}

export const REVISION_LABEL = 'controller-revision-hash';
