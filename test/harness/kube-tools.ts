/**
 * The Go programs of a Kubernetes test cluster, built from modules with `ensureGoTool` (tools.ts)
 * and cached in `~/.cache/loam-tools/<name>-<version>/bin` (see /work/shared/TEST-COMPONENTS.md):
 *
 * - `KUBE_ETCD`: etcd 3.6.16 for the control plane only, in a directory of its own
 *   (`kube-etcd-v3.6.16/bin/etcd`) that is never put on PATH, so it cannot be confused with the
 *   Debian etcd 3.4 that Loam's own metadata tests use (test/harness/etcd.ts finds that one).
 * - `KUBERNETES`: kube-apiserver, kube-controller-manager, kube-scheduler and kubectl v1.37.2 from
 *   one wrapper module (one `go build`, version-stamped).
 * - `KWOK`: kwok v0.8.0 for fake Nodes, and `ensureKwokStages()` for its stage config, which the
 *   release ships only inside its module.
 * - `HELM`: helm v3.22.0.
 *
 * `ensureKubeTools()` builds whatever is missing, one build at a time (they share two cores), and
 * resolves at once when everything is cached. A build that fails throws with its log.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ensureGoTool, toolBin, toolDir, type GoTool } from './tools.js';

export const KUBE_VERSION = 'v1.37.2';
/** The staging modules (k8s.io/api, client-go, ...) are released as v0.<minor>.<patch>. */
const KUBE_STAGING_VERSION = KUBE_VERSION.replace(/^v1\./, 'v0.');
export const KUBE_ETCD_VERSION = 'v3.6.16';
export const KWOK_VERSION = 'v0.8.0';
export const HELM_VERSION = 'v3.22.0';

/** Runs `go args` (outside any module) and returns stdout; throws with stderr on failure. */
function go(args: string[], timeoutMs = 10 * 60_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('go', args, {
      cwd: os.tmpdir(),
      env: { ...process.env, GOWORK: 'off' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-8192)));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`go ${args.join(' ')}: ${String(e)} (needs a working \`go\`)`));
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`go ${args.join(' ')} exited ${code}; needs the Go module proxy\n${out.slice(-4096)}${err}`));
    });
  });
}

interface Downloaded {
  Path: string;
  Version: string;
  GoMod: string;
  Dir: string;
  Error?: string;
}

/** `go mod download -json module@version`: the module's go.mod file and source directory in the module cache. */
async function download(moduleAtVersion: string): Promise<Downloaded> {
  const info = JSON.parse(await go(['mod', 'download', '-json', moduleAtVersion])) as Downloaded;
  if (info.Error) throw new Error(`go mod download ${moduleAtVersion}: ${info.Error}`);
  return info;
}

/**
 * The `go` and `godebug` lines of a dependency's go.mod, for the wrapper's own go.mod: the binaries
 * then get the language version and GODEBUG defaults their release was built with. (A `toolchain`
 * line is not copied: etcd asks for a newer patch release of Go than this machine has, and Go would
 * try to download it.)
 */
function goDirectives(goModText: string): string {
  return goModText
    .split('\n')
    .filter((l) => /^go \d/.test(l) || /^godebug\s/.test(l))
    .join('\n');
}

/**
 * The staging replaces of a k8s.io/kubernetes release: every `k8s.io/X => ./staging/src/k8s.io/X`
 * in its go.mod (inside a `replace ( ... )` block or as single `replace` lines) becomes
 * `k8s.io/X => k8s.io/X <staging version>`. Exported for the harness test.
 */
export function stagingReplaces(kubernetesGoMod: string, stagingVersion: string): string[] {
  const out: string[] = [];
  for (const m of kubernetesGoMod.matchAll(/^\s*(?:replace\s+)?(k8s\.io\/[\w.-]+)\s+=>\s+\.\/staging\/src\/(k8s\.io\/[\w.-]+)\s*$/gm)) {
    if (m[1] !== m[2]) throw new Error(`unexpected staging replace ${m[0].trim()}`);
    out.push(`${m[1]} => ${m[1]} ${stagingVersion}`);
  }
  return out;
}

export const KUBE_ETCD: GoTool = {
  name: 'kube-etcd',
  version: KUBE_ETCD_VERSION,
  bins: ['etcd', 'etcdctl'],
  wrapper: {
    async goMod() {
      const server = await download(`go.etcd.io/etcd/server/v3@${KUBE_ETCD_VERSION}`);
      return [
        'module loamtools/kube-etcd',
        '',
        goDirectives(fs.readFileSync(server.GoMod, 'utf8')),
        '',
        'require (',
        `\tgo.etcd.io/etcd/server/v3 ${KUBE_ETCD_VERSION}`,
        `\tgo.etcd.io/etcd/etcdctl/v3 ${KUBE_ETCD_VERSION}`,
        ')',
        '',
      ].join('\n');
    },
    packages: ['go.etcd.io/etcd/server/v3', 'go.etcd.io/etcd/etcdctl/v3'],
    names: { 'go.etcd.io/etcd/server/v3': 'etcd', 'go.etcd.io/etcd/etcdctl/v3': 'etcdctl' },
  },
  timeoutMs: 20 * 60_000,
};

const [, kubeMajor, kubeMinor] = /^v(\d+)\.(\d+)\./.exec(KUBE_VERSION)!;
const kubeStamp = (pkg: string) =>
  [`gitVersion=${KUBE_VERSION}`, `gitMajor=${kubeMajor}`, `gitMinor=${kubeMinor}`, 'gitTreeState=clean'].map((kv) => `-X ${pkg}.${kv}`).join(' ');

export const KUBERNETES: GoTool = {
  name: 'kubernetes',
  version: KUBE_VERSION,
  bins: ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kubectl'],
  wrapper: {
    async goMod() {
      const k8s = await download(`k8s.io/kubernetes@${KUBE_VERSION}`);
      const text = fs.readFileSync(k8s.GoMod, 'utf8');
      const replaces = stagingReplaces(text, KUBE_STAGING_VERSION);
      if (replaces.length < 20) throw new Error(`found only ${replaces.length} staging replaces in ${k8s.GoMod}: has its format changed?`);
      return [
        'module loamtools/kubernetes',
        '',
        goDirectives(text),
        '',
        `require k8s.io/kubernetes ${KUBE_VERSION}`,
        '',
        `// The staging replaces of k8s.io/kubernetes ${KUBE_VERSION}'s own go.mod, each pointed at its release.`,
        'replace (',
        ...replaces.map((r) => `\t${r}`),
        ')',
        '',
      ].join('\n');
    },
    packages: ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kubectl'].map((c) => `k8s.io/kubernetes/cmd/${c}`),
  },
  // Without the stamps kubectl (and helm's view of the server) would report v0.0.0. `-s -w` as in
  // Kubernetes' own release builds: no DWARF, so the four links take ~20 s instead of ~70 s here,
  // 350 MB instead of 500 MB on disk (stack traces still work).
  ldflags: `-s -w ${kubeStamp('k8s.io/component-base/version')} ${kubeStamp('k8s.io/client-go/pkg/version')}`,
  // ~6.5 min and 2.8 GB on two cores when nothing else builds; leave room for a busy machine.
  timeoutMs: 45 * 60_000,
};

export const KWOK: GoTool = {
  name: 'kwok',
  version: KWOK_VERSION,
  bins: ['kwok'],
  install: [`sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}`],
};

export const HELM: GoTool = {
  name: 'helm',
  version: HELM_VERSION,
  bins: ['helm'],
  install: [`helm.sh/helm/v3/cmd/helm@${HELM_VERSION}`],
  // Otherwise `helm version` says v3.22 (the source's default), without the patch number.
  ldflags: `-X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}`,
};

export interface KwokStages {
  /** node/fast + node/heartbeat-with-lease: Nodes become Ready and stay so; Pods are bound and stay Pending. */
  nodes: string;
  /** The node stages plus pod/fast: every bound Pod becomes Running and Ready at once. */
  nodesAndPods: string;
}

const STAGE_SETS = { nodes: ['node/fast', 'node/heartbeat-with-lease'], nodesAndPods: ['node/fast', 'node/heartbeat-with-lease', 'pod/fast'] };

/**
 * kwok's stage config files. kwok exits with "no stages found" without one, and the release's stage
 * files cannot be downloaded here, but the same YAML is in the module (`kustomize/stage/...`): the
 * resources each kustomization.yaml lists, concatenated. Written once into the cache
 * (`kwok-stages-<version>/`), atomically, so parallel workers never see half a file.
 */
let stagesEnsured: Promise<KwokStages> | undefined;
export function ensureKwokStages(): Promise<KwokStages> {
  stagesEnsured ??= (async () => {
    const dir = toolDir({ name: 'kwok-stages', version: KWOK_VERSION });
    const files: KwokStages = { nodes: path.join(dir, 'nodes.yaml'), nodesAndPods: path.join(dir, 'nodes-and-pods.yaml') };
    if (Object.values(files).every((f) => fs.existsSync(f))) return files;
    const mod = await download(`sigs.k8s.io/kwok@${KWOK_VERSION}`);
    fs.mkdirSync(dir, { recursive: true });
    for (const [key, sets] of Object.entries(STAGE_SETS) as [keyof KwokStages, string[]][]) {
      const docs: string[] = [];
      for (const set of sets) {
        const base = path.join(mod.Dir, 'kustomize', 'stage', set);
        const kustomization = fs.readFileSync(path.join(base, 'kustomization.yaml'), 'utf8');
        const resources = /^resources:\s*\n((?:\s*-\s*\S+\s*\n?)+)/m.exec(kustomization)?.[1];
        if (!resources) throw new Error(`no resources in ${base}/kustomization.yaml`);
        for (const r of resources.split('\n').map((l) => l.replace(/^\s*-\s*/, '').trim()).filter(Boolean)) {
          docs.push(`# ${set}/${r} from sigs.k8s.io/kwok@${KWOK_VERSION}\n${fs.readFileSync(path.join(base, r), 'utf8').trim()}\n`);
        }
      }
      const tmp = `${files[key]}.${process.pid}.tmp`;
      fs.writeFileSync(tmp, docs.join('---\n'));
      fs.renameSync(tmp, files[key]);
    }
    return files;
  })();
  stagesEnsured.catch(() => undefined);
  return stagesEnsured;
}

export interface KubeTools {
  etcd: string;
  etcdctl: string;
  kubeApiserver: string;
  kubeControllerManager: string;
  kubeScheduler: string;
  kubectl: string;
  kwok: string;
  helm: string;
  kwokStages: KwokStages;
}

/** The paths of every Kubernetes test component, building the missing ones first (one after another). */
export async function ensureKubeTools(): Promise<KubeTools> {
  for (const t of [KUBE_ETCD, KUBERNETES, KWOK, HELM]) await ensureGoTool(t);
  return {
    etcd: toolBin(KUBE_ETCD, 'etcd'),
    etcdctl: toolBin(KUBE_ETCD, 'etcdctl'),
    kubeApiserver: toolBin(KUBERNETES, 'kube-apiserver'),
    kubeControllerManager: toolBin(KUBERNETES, 'kube-controller-manager'),
    kubeScheduler: toolBin(KUBERNETES, 'kube-scheduler'),
    kubectl: toolBin(KUBERNETES, 'kubectl'),
    kwok: toolBin(KWOK, 'kwok'),
    helm: toolBin(HELM, 'helm'),
    kwokStages: await ensureKwokStages(),
  };
}
