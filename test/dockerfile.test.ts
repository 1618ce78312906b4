/**
 * The Dockerfile, checked without docker (none on these machines). Statically: its stages use the Node 20
 * base the packages' engines allow, every file it copies from the build context exists and is not
 * left out by .dockerignore, the build stage gets every file `npm run build` reads, what the runtime
 * stage copies from the build stage was put there, the entrypoint is the committed `loam` launcher,
 * and the image runs as a numeric non-root user (the uid the Helm chart's securityContext expects)
 * with HOME and TMPDIR on a volume, for a read-only root filesystem. And by following it: the build
 * stage's own COPY and RUN steps (npm ci, build, prune), run in a temp dir with npm offline, then the
 * runtime stage's copies from it; `loam` from that tree runs as uid 65532 without devDependencies.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { ROOT, tempDir } from './harness/node-process.js';

interface Instruction {
  cmd: string;
  args: string;
  line: number;
}
interface Stage {
  from: string;
  name?: string;
  instructions: Instruction[];
}

/** The instructions of a Dockerfile: comments dropped, `\` continuations joined. */
function instructions(text: string): Instruction[] {
  const out: Instruction[] = [];
  let buf = '';
  let start = 0;
  text.split('\n').forEach((raw, i) => {
    const line = raw.trimEnd();
    if (!buf && (/^\s*#/.test(line) || !line.trim())) return;
    if (/^\s*#/.test(line)) return; // a comment inside a continued instruction
    if (!buf) start = i + 1;
    buf += `${buf ? ' ' : ''}${line.replace(/\\$/, '').trim()}`;
    if (!line.endsWith('\\')) {
      const m = /^(\w+)\s+(.*)$/.exec(buf)!;
      out.push({ cmd: m[1]!.toUpperCase(), args: m[2]!, line: start });
      buf = '';
    }
  });
  return out;
}

function stages(ins: Instruction[]): { args: Map<string, string>; stages: Stage[] } {
  const args = new Map<string, string>();
  const out: Stage[] = [];
  for (const i of ins) {
    if (i.cmd === 'FROM') {
      const [image, as, name] = i.args.split(/\s+/);
      const from = image!.replace(/\$\{(\w+)\}|\$(\w+)/g, (_, a: string, b: string) => args.get(a ?? b) ?? '');
      out.push({ from, name: as?.toUpperCase() === 'AS' ? name : undefined, instructions: [] });
    } else if (!out.length && i.cmd === 'ARG') {
      const [k, v] = i.args.split('=');
      args.set(k!, v ?? '');
    } else out.at(-1)?.instructions.push(i);
  }
  return { args, stages: out };
}

/** A COPY's flags, sources and destination (shell form; the JSON form is not used here). */
function copyOf(i: Instruction): { from?: string; sources: string[]; dest: string } {
  const words = i.args.split(/\s+/);
  const flags = words.filter((w) => w.startsWith('--'));
  const rest = words.filter((w) => !w.startsWith('--'));
  const from = flags.find((f) => f.startsWith('--from='))?.slice('--from='.length);
  return { from, sources: rest.slice(0, -1), dest: rest.at(-1)! };
}

/** Docker's .dockerignore matching: a pattern excludes a path when it matches it or one of its parent directories. */
function ignored(patterns: string[], file: string): boolean {
  const toRe = (p: string) =>
    new RegExp(`^${p.replace(/^\/+/, '').replace(/[.+^${}()|[\]]/g, '\\$&').replace(/\*\*\//g, '\u0000').replace(/\*\*/g, '.*').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]').replace(/\u0000/g, '(?:.*/)?')}$`);
  const parts = file.split('/');
  let out = false;
  for (const raw of patterns) {
    const neg = raw.startsWith('!');
    const re = toRe(neg ? raw.slice(1) : raw);
    for (let k = 1; k <= parts.length; k++) {
      if (re.test(parts.slice(0, k).join('/'))) {
        out = !neg;
        break;
      }
    }
  }
  return out;
}

const text = fs.readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8');
const dockerignore = fs
  .readFileSync(path.join(ROOT, '.dockerignore'), 'utf8')
  .split('\n')
  .map((l) => l.trim())
  .filter((l) => l && !l.startsWith('#'));
const { stages: all } = stages(instructions(text));
const build = all.find((s) => s.name === 'build')!;
const runtime = all.at(-1)!;
const rootPkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { workspaces: string[] };

/** Where in the build stage's /app each context path lands (WORKDIR /app, destinations relative to it). */
function contextCopies(stage: Stage): { source: string; dest: string }[] {
  return stage.instructions
    .filter((i) => i.cmd === 'COPY' && !copyOf(i).from)
    .flatMap((i) => {
      const c = copyOf(i);
      return c.sources.map((s) => ({ source: s, dest: c.dest.endsWith('/') ? path.posix.join(c.dest, path.posix.basename(s)) : c.dest }));
    });
}

describe('Dockerfile', () => {
  it('builds in one stage and runs in another, both on node:20-bookworm-slim (the engines allow Node 20)', () => {
    expect(all.length).toBeGreaterThanOrEqual(2);
    expect(build, 'a stage named build').toBeDefined();
    expect(runtime).not.toBe(build);
    for (const s of all) expect(s.from).toBe('node:20-bookworm-slim');
    for (const ws of ['.', ...rootPkg.workspaces]) {
      const engines = (JSON.parse(fs.readFileSync(path.join(ROOT, ws, 'package.json'), 'utf8')) as { engines?: { node?: string } }).engines?.node;
      expect(engines, `${ws}/package.json engines.node`).toMatch(/^>=\s*20\./);
    }
  });

  it('runs npm ci, then the build, then prunes the dev dependencies', () => {
    const runs = build.instructions.filter((i) => i.cmd === 'RUN').map((i) => i.args);
    const at = (re: RegExp) => runs.findIndex((r) => re.test(r));
    expect(at(/\bnpm ci\b/)).toBeGreaterThanOrEqual(0);
    expect(at(/\bnpm run build\b/)).toBeGreaterThan(at(/\bnpm ci\b/));
    expect(runs.join('\n')).toMatch(/npm run build[^]*npm prune --omit=dev/);
    expect(fs.existsSync(path.join(ROOT, 'package-lock.json')), 'npm ci needs the lock file').toBe(true);
  });

  it('every file it copies from the build context exists and is not left out by .dockerignore', () => {
    const copies = all.flatMap((s) => contextCopies(s));
    expect(copies.length).toBeGreaterThan(5);
    for (const { source } of copies) {
      expect(fs.existsSync(path.join(ROOT, source)), `COPY ${source}: no such file in the repository`).toBe(true);
      expect(ignored(dockerignore, source.replace(/\/$/, '')), `COPY ${source}: .dockerignore leaves it out`).toBe(false);
    }
    // ...and the matcher does exclude what it should: host dependencies and build output never enter the context.
    for (const p of ['node_modules', 'node/node_modules/x', 'sdk/dist/index.js', '.git/HEAD', 'test/kube/helm.test.ts', 'README.md', 'node/test/x.test.ts']) expect(ignored(dockerignore, p), p).toBe(true);
  });

  it('the build stage gets every file `npm run build` reads: each workspace\'s manifest, tsconfig and sources, and the tsconfig they extend', () => {
    const landed = new Set(contextCopies(build).map((c) => c.dest.replace(/^\.\//, '').replace(/\/$/, '')));
    const need = new Set(['package.json', 'package-lock.json']);
    for (const ws of rootPkg.workspaces) {
      const tsconfig = JSON.parse(fs.readFileSync(path.join(ROOT, ws, 'tsconfig.json'), 'utf8')) as { extends?: string; include?: string[] };
      need.add(`${ws}/package.json`).add(`${ws}/tsconfig.json`);
      for (const inc of tsconfig.include ?? []) need.add(`${ws}/${inc}`);
      if (tsconfig.extends) need.add(path.posix.normalize(`${ws}/${tsconfig.extends}`));
      const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, ws, 'package.json'), 'utf8')) as { bin?: Record<string, string> };
      for (const b of Object.values(pkg.bin ?? {})) need.add(path.posix.dirname(path.posix.normalize(`${ws}/${b}`)));
    }
    for (const n of need) expect(landed.has(n), `the build stage does not COPY ${n}`).toBe(true);
  });

  it('what the runtime stage copies from the build stage is there: the workspaces, node_modules, the manifests', () => {
    const fromBuild = runtime.instructions.filter((i) => i.cmd === 'COPY' && copyOf(i).from === 'build').flatMap((i) => copyOf(i).sources);
    const landed = new Set(contextCopies(build).map((c) => path.posix.join('/app', c.dest).replace(/\/$/, '')));
    for (const src of fromBuild) {
      if (src === '/app/node_modules') continue; // made by npm ci
      expect(landed.has(src) || [...landed].some((l) => l.startsWith(`${src}/`)), `COPY --from=build ${src}: the build stage puts nothing there`).toBe(true);
    }
    for (const ws of rootPkg.workspaces) expect(fromBuild, `the runtime stage needs /app/${ws} (node_modules/@loam/* link to it)`).toContain(`/app/${ws}`);
    expect(fromBuild).toContain('/app/node_modules');
  });

  it('the entrypoint is the committed loam launcher, which loads the built CLI', () => {
    const entry = runtime.instructions.filter((i) => i.cmd === 'ENTRYPOINT').at(-1)!;
    const argv = JSON.parse(entry.args) as string[];
    expect(argv).toEqual(['node', '/app/node/bin/loam.js']);
    const launcher = path.join(ROOT, argv[1]!.replace(/^\/app\//, ''));
    expect(fs.existsSync(launcher)).toBe(true);
    expect(fs.readFileSync(launcher, 'utf8')).toContain("new URL('../dist/cli.js', import.meta.url)");
    // dist/cli.js is what the build makes of node/src/cli.ts.
    const tsconfig = JSON.parse(fs.readFileSync(path.join(ROOT, 'node/tsconfig.json'), 'utf8')) as { compilerOptions: { rootDir: string; outDir: string } };
    expect(tsconfig.compilerOptions).toMatchObject({ rootDir: 'src', outDir: 'dist' });
    expect(fs.existsSync(path.join(ROOT, 'node/src/cli.ts'))).toBe(true);
  });

  it('runs as a numeric non-root user, the uid the Helm chart runs it as, with HOME and TMPDIR on a volume', () => {
    const users = runtime.instructions.filter((i) => i.cmd === 'USER');
    expect(users.length).toBeGreaterThan(0);
    const [uid, gid] = users.at(-1)!.args.split(':').map(Number);
    expect(uid).toBe(65532);
    expect(gid).toBe(65532);
    // Nothing after the last USER switches back or runs as root.
    const last = runtime.instructions.indexOf(users.at(-1)!);
    expect(runtime.instructions.slice(last + 1).map((i) => i.cmd)).not.toContain('RUN');
    const values = parse(fs.readFileSync(path.join(ROOT, 'charts/loam/values.yaml'), 'utf8')) as { podSecurityContext: { runAsUser: number; runAsNonRoot: boolean }; securityContext: { readOnlyRootFilesystem: boolean } };
    expect(values.podSecurityContext).toMatchObject({ runAsUser: uid, runAsNonRoot: true });
    expect(values.securityContext.readOnlyRootFilesystem).toBe(true);
    const env = runtime.instructions.filter((i) => i.cmd === 'ENV').map((i) => i.args).join(' ');
    expect(env).toMatch(/\bHOME=\/tmp\b/);
    expect(env).toMatch(/\bTMPDIR=\/tmp\b/);
    const volumes = runtime.instructions.filter((i) => i.cmd === 'VOLUME').flatMap((i) => JSON.parse(i.args) as string[]);
    expect(volumes).toContain('/tmp');
    expect(volumes).toContain('/var/lib/loam');
  });
});

/** Runs `cmd` (through sh, as a RUN does) and resolves with its exit code and output. */
function sh(cmd: string, cwd: string, env: NodeJS.ProcessEnv, ids: { uid?: number; gid?: number } = {}, timeoutMs = 300_000): Promise<{ code: number; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/sh', ['-c', cmd], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'], ...ids });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 1, out });
    });
  });
}

describe('following the Dockerfile without docker', () => {
  it('the build stage\'s steps build the workspaces in a clean tree; the runtime stage\'s copies of it run `loam` as uid 65532, without dev dependencies', async () => {
    const work = tempDir('loam-dockerfile-');
    const app = path.join(work, 'build', 'app'); // the build stage's /app
    fs.mkdirSync(app, { recursive: true });
    // npm offline: the packages come from the machine's npm cache (as `npm ci` in the README test does).
    const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: path.join(work, 'home'), npm_config_offline: 'true', npm_config_cache: process.env.npm_config_cache ?? path.join(process.env.HOME ?? '/root', '.npm') };
    let cwd = '/';
    const steps: string[] = [];
    for (const i of build.instructions) {
      if (i.cmd === 'WORKDIR') {
        cwd = i.args;
        expect(cwd).toBe('/app');
      } else if (i.cmd === 'ENV') {
        for (const kv of i.args.split(/\s+/)) {
          const [k, v] = kv.split('=');
          env[k!] = v;
        }
      } else if (i.cmd === 'COPY') {
        const c = copyOf(i);
        expect(c.from, 'the build stage copies only from the context').toBeUndefined();
        for (const src of c.sources) {
          const dest = path.join(app, c.dest.endsWith('/') || c.sources.length > 1 ? path.posix.join(c.dest, path.posix.basename(src)) : c.dest);
          fs.mkdirSync(path.dirname(dest), { recursive: true });
          fs.cpSync(path.join(ROOT, src), dest, { recursive: true, filter: (f) => !ignored(dockerignore, path.relative(ROOT, f)) });
        }
        steps.push(`COPY ${i.args}`);
      } else if (i.cmd === 'RUN') {
        const r = await sh(i.args, app, env);
        expect(r.code, `RUN ${i.args}\n${r.out.slice(-4000)}`).toBe(0);
        steps.push(`RUN ${i.args}`);
      } else throw new Error(`the test does not know how to follow ${i.cmd} (Dockerfile line ${i.line})`);
    }
    expect(steps.filter((s) => s.startsWith('RUN')).length).toBeGreaterThanOrEqual(2);
    expect(fs.existsSync(path.join(app, 'node/dist/cli.js'))).toBe(true);
    expect(fs.existsSync(path.join(app, 'node/src')), 'sources are removed from the image').toBe(false);

    // The runtime stage: only what it copies from the build stage.
    const rt = path.join(work, 'runtime');
    let rtCwd = '/';
    for (const i of runtime.instructions) {
      if (i.cmd === 'WORKDIR') rtCwd = i.args;
      if (i.cmd !== 'COPY') continue;
      const c = copyOf(i);
      expect(c.from).toBe('build');
      for (const src of c.sources) {
        const destIn = path.posix.resolve(rtCwd, c.dest.endsWith('/') || c.sources.length > 1 ? path.posix.join(c.dest, path.posix.basename(src)) : c.dest);
        const dest = path.join(rt, destIn);
        fs.mkdirSync(path.dirname(dest), { recursive: true });
        fs.cpSync(path.join(work, 'build', src), dest, { recursive: true, verbatimSymlinks: true });
      }
    }
    // Readable, not writable, by the image's user: root owns the tree, as `--chown=0:0` says.
    for (let d = rt; d.startsWith(work); d = path.dirname(d)) fs.chmodSync(d, 0o755);
    const nm = path.join(rt, 'app/node_modules');
    for (const dev of ['vitest', 'typescript', '@bufbuild/buf', 'ts-proto']) expect(fs.existsSync(path.join(nm, dev)), `${dev} (a devDependency) in the image`).toBe(false);
    for (const dep of ['@grpc/grpc-js', 'commander', '@kubernetes/client-node']) expect(fs.existsSync(path.join(nm, dep)), `${dep} missing from the image`).toBe(true);
    for (const ws of rootPkg.workspaces) expect(fs.realpathSync(path.join(nm, '@loam', path.basename(ws))), `node_modules/@loam/${ws} links into the image`).toBe(path.join(rt, 'app', ws));

    const entry = JSON.parse(runtime.instructions.filter((i) => i.cmd === 'ENTRYPOINT').at(-1)!.args) as string[];
    const [uid, gid] = runtime.instructions.filter((i) => i.cmd === 'USER').at(-1)!.args.split(':').map(Number);
    const rtEnv = { PATH: process.env.PATH, HOME: '/tmp', TMPDIR: '/tmp', NODE_ENV: 'production' };
    const loam = `${entry[0]} ${path.join(rt, entry[1]!)}`;
    const help = await sh(`${loam} --help`, '/', rtEnv, { uid, gid });
    expect(help.code, help.out).toBe(0);
    expect(help.out).toMatch(/^Usage: loam /m);
    expect(help.out).toMatch(/^\s+node \[options\]/m);
    expect(help.out).toMatch(/^\s+operator \[options\]/m);
    const nodeHelp = await sh(`${loam} node --help`, '/', rtEnv, { uid, gid });
    expect(nodeHelp.code, nodeHelp.out).toBe(0);
    expect(nodeHelp.out).toContain('--etcd');
    // The same image runs the operator, with the flags the Helm chart passes.
    const opHelp = await sh(`${loam} operator --help`, '/', rtEnv, { uid, gid });
    expect(opHelp.code, opHelp.out).toBe(0);
    for (const flag of ['--metrics-listen', '--leader-election-namespace', '--leader-election-id', '--no-leader-elect', '--namespace', '--resync', '--workers', '--image', '--log-level']) expect(opHelp.out, flag).toContain(flag);
  }, 600_000);
});
