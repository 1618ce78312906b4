/** The nodes' PodDisruptionBudget: voluntary evictions take one node at a time, as drains and rollouts do. */
import type { DataStore } from '../crd/types.js';
import { childMeta, names, selectorLabels, type ChildMeta } from './labels.js';

export interface PodDisruptionBudget {
  apiVersion: 'policy/v1';
  kind: 'PodDisruptionBudget';
  metadata: ChildMeta;
  spec: { maxUnavailable: number; selector: { matchLabels: Record<string, string> } };
}

export function buildPdb(ds: DataStore): PodDisruptionBudget {
  return {
    apiVersion: 'policy/v1',
    kind: 'PodDisruptionBudget',
    metadata: childMeta(ds, names.pdb(ds), 'node'),
    spec: { maxUnavailable: 1, selector: { matchLabels: selectorLabels(ds, 'node') } },
  };
}
