/**
 * What every test file against the Kubernetes control plane shares.
 *
 * `kubeSetup(start)`: finds the tools (the kube project's global setup built them; here it costs
 * a few stat calls) and runs the file's own `start` once. When either fails, every test of the
 * file fails with that error: vitest would report the tests of a file whose beforeAll threw as
 * skipped, and a component that cannot be built or started must never look like a pass.
 *
 * `installDataStoreCrd(kube)`: applies crds/datastores.loam.dev.yaml and waits until it is
 * Established and served with its scale subresource in discovery (what kubectl resolves `lds`
 * and `kubectl scale` through).
 */
import path from 'node:path';
import { beforeAll, beforeEach } from 'vitest';
import { DATASTORE_CRD_NAME } from '@loam/operator';
import { ensureKubeTools } from './kube-tools.js';
import type { KubeCluster } from './kube.js';
import { ROOT } from './node-process.js';
import { pollUntil } from './wait.js';

export const DATASTORE_CRD_FILE = path.join(ROOT, 'crds', `${DATASTORE_CRD_NAME}.yaml`);

export function kubeSetup(start: () => Promise<void>, timeoutMs = 180_000): void {
  let error: unknown;
  beforeAll(async () => {
    try {
      await ensureKubeTools();
      await start();
    } catch (e) {
      error = e;
    }
  }, 60 * 60_000 + timeoutMs);
  beforeEach(() => {
    if (error) throw error;
  });
}

/** Returns `kubectl apply`'s output. */
export async function installDataStoreCrd(kube: KubeCluster): Promise<string> {
  const applied = (await kube.kubectl(['apply', '-f', DATASTORE_CRD_FILE])).stdout;
  await kube.kubectl(['wait', '--for=condition=Established', `crd/${DATASTORE_CRD_NAME}`, '--timeout=30s']);
  await pollUntil(
    async () => {
      const r = await kube.request('GET', '/apis/loam.dev/v1alpha1');
      const names = (r.body as { resources?: { name: string }[] }).resources?.map((x) => x.name) ?? [];
      return r.status === 200 && names.includes('datastores') && names.includes('datastores/scale');
    },
    'loam.dev/v1alpha1 datastores (and their scale subresource) in discovery',
    30_000,
    { everyMs: 100 },
  );
  return applied;
}
