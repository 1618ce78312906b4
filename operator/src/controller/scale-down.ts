/**
 * How many replicas the node StatefulSet should have in this pass, and the drain calls that go
 * with it. Level-triggered: everything follows from spec.nodes, the StatefulSet's replicas, the
 * Pods and the nodes' own Status answers, so a pass can stop anywhere and the next resumes.
 *
 * - Scale-up (spec.nodes >= replicas): replicas = spec.nodes at once.
 * - Scale-down (spec.nodes < replicas): one node at a time, the highest ordinal. Its drain is
 *   started (op id deterministic per DataStore, Pod and generation: a repeated pass joins the same
 *   drain, a later scale-down after a cancel starts a new one); while it runs replicas stay; once
 *   the node reports `drained` and holds no object (or it never joined the cluster) replicas
 *   shrink by one; a node that joined once and is now unreachable is waited for.
 * - A node being drained whose ordinal is below spec.nodes again (nodes raised during a drain):
 *   its drain is cancelled.
 * - Without the nodes' Status (no node reachable) nothing shrinks: waiting is safe, guessing is not.
 */
import type { NodeAdminStatus } from './contract.js';

export interface ScaleInput {
  /** spec.nodes. */
  desired: number;
  /** The live StatefulSet's spec.replicas (undefined: no StatefulSet yet). */
  replicas: number | undefined;
  /** The StatefulSet's name (Pods are `<set>-<i>`, which are also the node ids). */
  setName: string;
  uid: string;
  generation: number;
  /** The nodes' Status answers; undefined when none could be had. */
  nodes: NodeAdminStatus[] | undefined;
  /** A rollout is in progress: a scale-down waits for it (one disruption at a time). */
  rolling: boolean;
  /**
   * Pods known to have joined the cluster (a backend number in an earlier status). The nodes'
   * Status leaves unreachable members out, so a node missing from it is empty only if it never
   * joined; one that did may just be down, with its objects on its volume.
   */
  joined: ReadonlySet<string>;
}

export interface ScalePlan {
  replicas: number;
  /** Start (or join) this drain. */
  drain?: { pod: string; number: number; opId: string };
  /** Cancel the drains of these node numbers. */
  cancel: { pod: string; number: number }[];
  /** The Pod being drained or waited on in a scale-down. */
  scalingDown?: { pod: string; objectsLeft?: number; objectsTotal?: number; waiting: string };
  /** Replicas shrink in this pass (the drained node is empty). */
  shrinking?: string;
}

const ordinal = (setName: string, id: string): number | undefined => {
  if (!id.startsWith(`${setName}-`)) return undefined;
  const rest = id.slice(setName.length + 1);
  return /^(0|[1-9]\d*)$/.test(rest) ? Number(rest) : undefined;
};

export function planScale(i: ScaleInput): ScalePlan {
  const cancel = (i.nodes ?? [])
    .filter((n) => {
      const o = ordinal(i.setName, n.id);
      return o !== undefined && o < i.desired && (n.draining !== null || n.state === 'drained');
    })
    .map((n) => ({ pod: n.id, number: n.number }));
  if (i.replicas === undefined || i.desired >= i.replicas) return { replicas: i.desired, cancel };
  const pod = `${i.setName}-${i.replicas - 1}`;
  if (i.rolling) return { replicas: i.replicas, cancel, scalingDown: { pod, waiting: 'the rollout in progress to finish' } };
  if (!i.nodes) return { replicas: i.replicas, cancel, scalingDown: { pod, waiting: 'the nodes\' status (no node answered)' } };
  const node = i.nodes.find((n) => n.id === pod);
  if (!node && i.joined.has(pod)) return { replicas: i.replicas, cancel, scalingDown: { pod, waiting: 'it to be reachable (it joined the cluster, its objects may be on its volume)' } };
  if (!node || (node.state === 'drained' && node.objects === 0 && node.draining === null)) {
    return { replicas: i.replicas - 1, cancel, shrinking: pod };
  }
  if (node.draining) {
    return { replicas: i.replicas, cancel, scalingDown: { pod, objectsLeft: node.draining.objectsLeft, objectsTotal: node.draining.objectsTotal, waiting: 'its drain to finish' } };
  }
  if (node.state === 'drained') {
    return { replicas: i.replicas, cancel, scalingDown: { pod, waiting: `its last ${node.objects} objects to leave` } };
  }
  return {
    replicas: i.replicas,
    cancel,
    drain: { pod, number: node.number, opId: `scale-down/${i.uid}/${pod}/${i.generation}` },
    scalingDown: { pod, objectsLeft: node.objects, waiting: 'its drain to start' },
  };
}
