/**
 * deploy/loam.yaml (the `kubectl apply -f` install) is generated from the Helm chart by
 * scripts/gen-deploy.mjs (`npm run gen:deploy`): these tests fail when the committed file differs
 * from what the generator writes now, and check what the generator promises: the Namespace, the
 * chart's CRDs, then exactly `helm template loam charts/loam --namespace loam-system`. helm is the
 * real one (v3.22.0, built with `go` and cached; test/global-setup.ts makes sure it is there). No
 * Kubernetes needed: test/kube/helm.test.ts applies the file to a real API server.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { HELM } from './harness/kube-tools.js';
import { ensureGoTool, toolBin } from './harness/tools.js';
import { ROOT, tempDir } from './harness/node-process.js';

const run = promisify(execFile);
const DEPLOY = path.join(ROOT, 'deploy/loam.yaml');
type Obj = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string> } } & Record<string, unknown>;

const docsOf = (text: string): Obj[] => parseAllDocuments(text).map((d) => d.toJS() as Obj).filter((d) => d !== null);

let helm: string;
beforeAll(async () => {
  await ensureGoTool(HELM); // global-setup built it; this only finds it
  helm = toolBin(HELM, 'helm');
}, 30 * 60_000);

describe('deploy/loam.yaml', () => {
  it('is what scripts/gen-deploy.mjs writes now (else: npm run gen:deploy)', async () => {
    const out = path.join(tempDir('loam-gen-deploy-'), 'loam.yaml');
    const r = await run(process.execPath, [path.join(ROOT, 'scripts/gen-deploy.mjs'), out], { cwd: ROOT, timeout: 120_000 });
    expect(r.stdout).toContain('wrote');
    expect(fs.readFileSync(DEPLOY, 'utf8'), 'deploy/loam.yaml is stale: run `npm run gen:deploy`').toBe(fs.readFileSync(out, 'utf8'));
  }, 150_000);

  it('holds the Namespace loam-system, the chart\'s CRDs, then the chart rendered with its defaults', async () => {
    const docs = docsOf(fs.readFileSync(DEPLOY, 'utf8'));
    expect(docs[0]).toMatchObject({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'loam-system', labels: { 'pod-security.kubernetes.io/enforce': 'restricted' } } });
    const crdFiles = fs.readdirSync(path.join(ROOT, 'charts/loam/crds')).sort();
    expect(crdFiles).toEqual(['datastores.loam.dev.yaml']);
    const crds = docs.slice(1, 1 + crdFiles.length);
    expect(crds).toEqual(crdFiles.map((f) => parse(fs.readFileSync(path.join(ROOT, 'charts/loam/crds', f), 'utf8'))));
    const home = tempDir('loam-helm-home-');
    const env = { PATH: process.env.PATH ?? '', HOME: home, HELM_CACHE_HOME: `${home}/c`, HELM_CONFIG_HOME: `${home}/f`, HELM_DATA_HOME: `${home}/d` };
    const rendered = (await run(helm, ['template', 'loam', path.join(ROOT, 'charts/loam'), '--namespace', 'loam-system'], { env })).stdout;
    const rest = docs.slice(1 + crdFiles.length);
    expect(rest).toEqual(docsOf(rendered));
    // The default install: no ServiceMonitor (its CRD may not exist), no dashboard ConfigMap.
    expect(rest.map((d) => `${d.kind}/${d.metadata.name}`)).toEqual([
      'ServiceAccount/loam-operator',
      'ClusterRole/loam-operator',
      'ClusterRoleBinding/loam-operator',
      'Role/loam-operator-leader-election',
      'RoleBinding/loam-operator-leader-election',
      'Service/loam-operator-metrics',
      'Deployment/loam-operator',
    ]);
    for (const d of rest) {
      const clusterScoped = d.kind.startsWith('Cluster');
      expect(d.metadata.namespace, `${d.kind}/${d.metadata.name}`).toBe(clusterScoped ? undefined : 'loam-system');
    }
  }, 60_000);

  it('names no helm-only machinery (hooks, tests) that kubectl apply would not run', () => {
    const text = fs.readFileSync(DEPLOY, 'utf8');
    expect(text).not.toContain('helm.sh/hook');
    expect(text).not.toMatch(/\{\{|\}\}/); // nothing left untemplated
  });
});
