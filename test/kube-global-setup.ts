import { ensureKubeTools } from './harness/kube-tools.js';

/**
 * Builds (cold: ~12-18 min on 2 cores) or finds (warm: a few stat calls) the Kubernetes control
 * plane, kwok and helm before any kube test's timeout starts; fails loudly when it cannot.
 */
export default async function setup(): Promise<void> {
  await ensureKubeTools();
}
