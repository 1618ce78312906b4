/**
 * The README's "On Kubernetes" block, run line by line as written, on a real control plane
 * (kube-apiserver, controller-manager, scheduler, kwok Nodes) with the kubelet harness running
 * every Pod as a real process: helm installs the chart, whose Deployment runs `loam operator`;
 * the operator turns examples/datastore-minimal.yaml into a managed etcd and three `loam node`s,
 * which find each other by cluster DNS names (the harness's hosts files). Each command must exit
 * 0; `kubectl wait ... --for=condition=Ready` is itself the check that the DataStore comes up.
 * Only `kubectl` and `helm` are put on PATH (the cached builds), and `loam` from this checkout's
 * node_modules/.bin, which is what `npm install` links.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { ensureKubeTools } from '../harness/kube-tools.js';
import { kubeSetup } from '../harness/kube-suite.js';
import { startKube, type KubeCluster } from '../harness/kube.js';
import { startKubelet, type Kubelet } from '../harness/kubelet.js';
import { ROOT, tempDir } from '../harness/node-process.js';
import { pollUntil } from '../harness/wait.js';

const execFileP = promisify(execFile);
const README = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');

/** The shell lines of the first ```sh block after the "## On Kubernetes" heading, trailing comments cut. */
function kubeBlock(): string[] {
  const section = README.split(/^## On Kubernetes\n/m)[1];
  if (!section) throw new Error('README has no "## On Kubernetes" section');
  const block = /```sh\n([\s\S]*?)```/.exec(section.split(/^## /m)[0]!);
  if (!block) throw new Error('README\'s "On Kubernetes" section has no sh block');
  return block[1]!
    .split('\n')
    .map((l) => l.replace(/\s+#\s.*$/, '').trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
}

const commands = kubeBlock();

let cluster: KubeCluster;
let kubelet: Kubelet;
let env: NodeJS.ProcessEnv;

kubeSetup(async () => {
  const tools = await ensureKubeTools(); // found again: the kube project's global setup built them
  cluster = await startKube({ kwok: true, nodes: 3 });
  kubelet = await startKubelet(cluster);
  const home = tempDir('loam-readme-kube-');
  const bins = [path.dirname(tools.kubectl), path.dirname(tools.helm), path.join(ROOT, 'node_modules/.bin'), path.dirname(process.execPath)];
  env = {
    PATH: [...new Set(bins), process.env.PATH ?? ''].join(path.delimiter),
    HOME: home, // helm's and kubectl's caches and config go here, not into the real home
    KUBECONFIG: cluster.kubeconfig,
  };
}, 240_000);

afterAll(async () => {
  await kubelet?.stop();
  await cluster?.stop();
});

const detail = () =>
  `--- kubelet harness ---\n${kubelet.log().slice(-4000)}\n${kubelet
    .pods()
    .map((p) => `--- ${p.name} ---\n${p.logs.slice(-2500)}`)
    .join('\n')}`;

async function sh(command: string, timeoutMs: number): Promise<{ code: number; out: string }> {
  try {
    const r = await execFileP('sh', ['-c', command], { cwd: ROOT, env, timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 });
    return { code: 0, out: `${r.stdout}${r.stderr}` };
  } catch (e) {
    const x = e as { code?: unknown; stdout?: string; stderr?: string };
    return { code: typeof x.code === 'number' ? x.code : 1, out: `${x.stdout ?? ''}${x.stderr ?? ''}${String(e)}` };
  }
}

describe('the README on Kubernetes, as written', () => {
  it('shows helm install, a DataStore applied, waited for, listed, scaled, its status and its deletion', () => {
    expect(commands[0]).toMatch(/^helm install loam charts\/loam /);
    expect(commands).toContain('kubectl apply -f examples/datastore-minimal.yaml');
    expect(commands.some((c) => c.startsWith('kubectl wait datastore/minimal --for=condition=Ready'))).toBe(true);
    expect(commands).toContain('loam status --datastore minimal');
  });

  it('every command exits 0, in order; the DataStore goes Ready, scales to 4, and is deleted', async () => {
    for (const command of commands) {
      const r = await sh(command, 600_000);
      expect(r.code, `${command}\n${r.out}\n${detail()}`).toBe(0);
      if (command.startsWith('kubectl get lds')) expect(r.out).toMatch(/^minimal\s+3\s+3\s+Running\s/m);
      if (command.startsWith('kubectl scale')) {
        // The operator follows: a fourth node joins and the DataStore is Ready with it.
        await pollUntil(
          async () => {
            const ds = await cluster.request('GET', '/apis/loam.dev/v1alpha1/namespaces/default/datastores/minimal');
            const st = (ds.body as { status?: { readyNodes?: number; phase?: string } }).status;
            return st?.readyNodes === 4 && st.phase === 'Running';
          },
          'the DataStore Running with 4 ready nodes',
          300_000,
          { detail },
        );
      }
      if (command === 'loam status --datastore minimal') {
        expect(r.out).toMatch(/minimal/);
        expect(r.out.match(/\bready\b/gi)?.length ?? 0).toBeGreaterThanOrEqual(4);
      }
    }
    // Deleted: the DataStore is gone (its finalizer ran) and so are its node Pods; Retain keeps the PVCs.
    await pollUntil(async () => (await cluster.request('GET', '/apis/loam.dev/v1alpha1/namespaces/default/datastores/minimal')).status === 404, 'the DataStore deleted', 120_000, { detail });
    const pvcs = (await cluster.request('GET', '/api/v1/namespaces/default/persistentvolumeclaims')).body as { items: unknown[] };
    expect(pvcs.items.length).toBeGreaterThanOrEqual(4);
  }, 1_200_000);
});
