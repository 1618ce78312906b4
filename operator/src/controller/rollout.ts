/**
 * The node StatefulSet's RollingUpdate partition in this pass: an image or config change rolls
 * one node at a time, highest ordinal first, each waiting for the previous Pod to be Ready on the
 * new revision and its node back as `ready` in the nodes' own Status (a Ready Pod alone says the
 * process serves; the Status says it rejoined the cluster).
 *
 * - No StatefulSet yet, or no Pod Ready: partition 0 (nothing serves that a gradual roll would protect).
 * - The template changes in this pass: partition = replicas - 1 (only the highest ordinal moves).
 * - A rollout in progress (some Pod not on the update revision): when every Pod at or above the
 *   partition is updated, Ready and its node ready, the partition moves down by one; else it stays.
 * - Every Pod updated: partition 0; the roll is over once each is Ready and its node ready.
 * - The StatefulSet's currentRevision is its update revision: no roll, whatever Pods are missing.
 */
import type { NodeAdminStatus } from './contract.js';

export interface RolloutPod {
  name: string;
  ordinal: number;
  ready: boolean;
  revision: string | undefined;
}

export interface RolloutInput {
  /** The live StatefulSet (undefined: none yet). */
  live: { templateHash: string | undefined; partition: number; updateRevision: string | undefined; currentRevision?: string; statusCurrent: boolean } | undefined;
  desiredTemplateHash: string;
  /** The replicas this pass applies. */
  replicas: number;
  pods: RolloutPod[];
  nodes: NodeAdminStatus[] | undefined;
}

export interface RolloutPlan {
  partition: number;
  rolling: boolean;
  /** Pods on the new revision, of `replicas`. */
  updated: number;
  /** What the rollout waits for, when it waits. */
  waiting?: string;
}

export function planRollout(i: RolloutInput): RolloutPlan {
  if (!i.live) return { partition: 0, rolling: false, updated: 0 };
  // No node serves: there is nothing a one-at-a-time roll protects, and gating on Pods that never
  // became Ready (a bad image being fixed) would hold the fix back. Every Pod takes the new template.
  if (!i.pods.some((p) => p.ordinal < i.replicas && p.ready)) return { partition: 0, rolling: false, updated: 0 };
  if (i.live.templateHash !== i.desiredTemplateHash) {
    return { partition: Math.max(0, i.replicas - 1), rolling: i.pods.length > 0, updated: 0, waiting: 'the StatefulSet to take the new template' };
  }
  // The StatefulSet controller has not yet seen the last template: its revisions say nothing yet.
  if (!i.live.statusCurrent || !i.live.updateRevision) return { partition: i.live.partition, rolling: i.live.partition > 0, updated: 0, waiting: 'the StatefulSet controller' };
  const rev = i.live.updateRevision;
  const inSet = i.pods.filter((p) => p.ordinal < i.replicas);
  const updated = inSet.filter((p) => p.revision === rev).length;
  // The StatefulSet has called the roll complete (its currentRevision moves to the update
  // revision once every Pod it has is updated and Ready): a Pod that crashes, is deleted or is
  // still to be made for a scale-up afterwards is no roll (a missing one is made on the update
  // revision); the phase says what it is instead.
  if (i.live.currentRevision === rev) return { partition: 0, rolling: false, updated };
  if (inSet.length === i.replicas && updated === i.replicas) {
    // Every Pod on the new template: the roll ends when the last one is back, Ready and in the
    // cluster (or when the StatefulSet calls it complete, above).
    const last = inSet.find((p) => !p.ready || i.nodes?.find((n) => n.id === p.name)?.state !== 'ready');
    return last ? { partition: 0, rolling: true, updated, waiting: `${last.name} to be Ready and rejoin the cluster` } : { partition: 0, rolling: false, updated };
  }
  const partition = Math.min(i.live.partition, Math.max(0, i.replicas - 1));
  for (let o = partition; o < i.replicas; o++) {
    const name = inSet.find((p) => p.ordinal === o);
    if (!name || name.revision !== rev) return { partition, rolling: true, updated, waiting: `node ${o} to be replaced` };
    if (!name.ready) return { partition, rolling: true, updated, waiting: `${name.name} to be Ready` };
    const node = i.nodes?.find((n) => n.id === name.name);
    if (!node || node.state !== 'ready') return { partition, rolling: true, updated, waiting: `${name.name} to rejoin the cluster` };
  }
  return { partition: Math.max(0, partition - 1), rolling: true, updated };
}
