/**
 * Go programs the tests need (versitygw, the Kubernetes control plane, kwok, helm, etcd 3.6),
 * built from Go modules with the machine's `go` and cached: nothing here downloads a prebuilt
 * binary, because that does not work on these machines.
 *
 * Cache: `LOAM_TOOLS_DIR`, default `~/.cache/loam-tools`, one directory per tool and version
 * (`<name>-<version>/bin/...`), complete once its `.done` file exists. A run that finds every
 * tool done costs a few stat calls. Builds are serialized per tool across processes (vitest
 * workers, parallel CI steps) with a lock file, and a failed build throws with the build's log:
 * a suite whose tool is missing fails loudly, never skips.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readOr, tryExclusiveFile } from './ports.js';

export const TOOLS_DIR = process.env.LOAM_TOOLS_DIR ?? path.join(os.homedir(), '.cache', 'loam-tools');

export interface GoTool {
  /** Directory name and what errors call it, e.g. `versitygw`. */
  name: string;
  version: string;
  /** The binaries the build leaves in `bin/` (checked after the build). */
  bins: string[];
  /** `go install` targets (`module/cmd/x@version`): for modules without `replace` directives. */
  install?: string[];
  /**
   * A wrapper module (for modules whose go.mod has `replace` directives, which `go install`
   * refuses): `goMod(dir)` returns the wrapper's go.mod text (it may read the module cache, e.g. to
   * copy a release's replace list), then `go mod tidy` and `go build -o bin/` of `packages` in one
   * command, so they share one compile. A package named in `names` is built on its own as
   * `bin/<name>` instead (Go would call `go.etcd.io/etcd/server/v3`'s binary `server`); its
   * compiled dependencies come from the build cache, so only its link is extra.
   */
  wrapper?: { goMod: (workDir: string) => Promise<string> | string; packages: string[]; names?: Record<string, string> };
  /** `-ldflags` for the build (version stamps). */
  ldflags?: string;
  /** How long a cold build may take before it counts as failed (default 20 min). */
  timeoutMs?: number;
}

export function toolDir(tool: Pick<GoTool, 'name' | 'version'>): string {
  return path.join(TOOLS_DIR, `${tool.name}-${tool.version}`);
}

/** Path of `bin` of `tool`, once `ensureGoTool(tool)` resolved. */
export function toolBin(tool: Pick<GoTool, 'name' | 'version'>, bin: string): string {
  return path.join(toolDir(tool), 'bin', bin);
}

const building = new Map<string, Promise<string>>();

/** Resolves to the tool's `bin` directory, building it first when the cache lacks it. */
export function ensureGoTool(tool: GoTool): Promise<string> {
  const key = `${tool.name}-${tool.version}`;
  let p = building.get(key);
  if (!p) {
    p = ensure(tool);
    building.set(key, p); // cached, failure included: later callers fail at once with the same log
  }
  return p;
}

function isDone(tool: GoTool): boolean {
  const dir = toolDir(tool);
  return fs.existsSync(path.join(dir, '.done')) && tool.bins.every((b) => fs.existsSync(path.join(dir, 'bin', b)));
}

async function ensure(tool: GoTool): Promise<string> {
  const dir = toolDir(tool);
  const bin = path.join(dir, 'bin');
  if (isDone(tool)) return bin;
  const lock = path.join(TOOLS_DIR, `${tool.name}-${tool.version}.lock`);
  const deadline = Date.now() + (tool.timeoutMs ?? 20 * 60_000) + 60_000;
  while (!tryExclusiveFile(lock)) {
    if (isDone(tool)) return bin;
    if (Date.now() > deadline) throw new Error(`${tool.name} ${tool.version}: another process holds ${lock} and did not finish the build`);
    await new Promise((r) => setTimeout(r, 500));
  }
  try {
    if (isDone(tool)) return bin; // built by the process that held the lock before us
    await build(tool, dir);
    const missing = tool.bins.filter((b) => !fs.existsSync(path.join(bin, b)));
    if (missing.length) throw new Error(`${tool.name} ${tool.version}: the build left no ${missing.join(', ')} in ${bin}`);
    fs.writeFileSync(path.join(dir, '.done'), `${new Date().toISOString()}\n`);
    return bin;
  } finally {
    if (readOr(lock, '') === String(process.pid)) fs.rmSync(lock, { force: true });
  }
}

async function build(tool: GoTool, dir: string): Promise<void> {
  fs.rmSync(dir, { recursive: true, force: true });
  const bin = path.join(dir, 'bin');
  fs.mkdirSync(bin, { recursive: true });
  const timeoutMs = tool.timeoutMs ?? 20 * 60_000;
  const ldflags = tool.ldflags ? [`-ldflags=${tool.ldflags}`] : [];
  // -p 2: these machines have 2 cores; a Kubernetes build at full width needs ~2.8 GB.
  const env = { ...process.env, GOBIN: bin, CGO_ENABLED: process.env.CGO_ENABLED ?? '0', GOFLAGS: `${process.env.GOFLAGS ?? ''} -buildvcs=false`.trim() };
  let log = '';
  const step = async (args: string[], cwd?: string) => {
    log += `$ go ${args.join(' ')}\n`;
    const r = await run('go', args, env, cwd ?? dir, timeoutMs);
    log += r.out;
    if (r.code !== 0) {
      throw new Error(`building ${tool.name} ${tool.version} failed (go ${args[0]} exit ${r.code}); needs a working \`go\` and the Go module proxy\n${log.slice(-8 * 1024)}`);
    }
  };
  if (tool.install) await step(['install', '-p', '2', '-trimpath', ...ldflags, ...tool.install]);
  if (tool.wrapper) {
    const { packages, names = {} } = tool.wrapper;
    const work = path.join(dir, 'src');
    fs.mkdirSync(work, { recursive: true });
    // tools.go imports the packages so that `go mod tidy` keeps their modules and fills go.sum. Its
    // build tag keeps it out of every build; the builds themselves get no tag (a `tools` tag would
    // also apply to the dependencies, some of which have tools.go files of their own).
    fs.writeFileSync(path.join(work, 'tools.go'), `//go:build tools\n\npackage tools\n\nimport (\n${packages.map((p) => `\t_ "${p}"`).join('\n')}\n)\n`);
    fs.writeFileSync(path.join(work, 'go.mod'), await tool.wrapper.goMod(work));
    await step(['mod', 'tidy'], work);
    const together = packages.filter((p) => !names[p]);
    if (together.length) await step(['build', '-p', '2', '-trimpath', ...ldflags, '-o', `${bin}/`, ...together], work);
    for (const p of packages.filter((q) => names[q])) await step(['build', '-p', '2', '-trimpath', ...ldflags, '-o', path.join(bin, names[p]!), p], work);
  }
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv, cwd: string, timeoutMs: number): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    let out = '';
    let child;
    try {
      child = spawn(cmd, args, { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
      resolve({ code: 127, out: String(e) });
      return;
    }
    const keep = (d: Buffer) => {
      out = (out + d.toString()).slice(-64 * 1024);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    const timer = setTimeout(() => {
      out += `\n(killed after ${timeoutMs} ms)`;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      resolve({ code: 127, out: `${out}\n${String(e)}` });
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 1, out });
    });
  });
}

/** versitygw, the S3 server of the tests (Apache-2.0). */
export const VERSITYGW: GoTool = {
  name: 'versitygw',
  version: 'v1.8.0',
  bins: ['versitygw'],
  install: ['github.com/versity/versitygw/cmd/versitygw@v1.8.0'],
};
