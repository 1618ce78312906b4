import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, Persistent, registerModel } from '@loam/sdk';
import { ROOT, tempDir } from './harness/node-process.js';

/**
 * What a new user does: clone, install as the README says, run the `loam` commands it shows.
 * The clone is of this checkout's HEAD (commit first). Installs run offline from the npm cache,
 * so this needs no network once the cache is warm; a missing git or npm fails the test.
 */

const execFileP = promisify(execFile);
const README = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
const VERSION = JSON.parse(fs.readFileSync(path.join(ROOT, 'node/package.json'), 'utf8')).version as string;

class Note extends Persistent {
  constructor(public text: string) {
    super();
  }
}
registerModel(Note, 'ReadmeCommands.Note');

/** Every `loam ...` line in the README's shell and usage blocks (with its continuation lines). */
function readmeCommands(): string[] {
  const out: string[] = [];
  for (const [, lang, body] of README.matchAll(/```(\w*)\n([\s\S]*?)```/g)) {
    if (lang !== '' && lang !== 'sh') continue;
    let current: string | undefined;
    for (const line of body.split('\n')) {
      const code = line.replace(/\s#\s.*$/, ''); // a trailing "# comment"
      if (/^loam\s/.test(code)) out.push((current = code.trim()));
      else if (current !== undefined && /^\s+\S/.test(code)) out[out.length - 1] = (current += ` ${code.trim()}`);
      else current = undefined;
    }
  }
  return out;
}

// Without the npm_* variables of the `npm test` running this, so the clone's npm is a fresh one.
const env: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k) && k !== 'INIT_CWD'));
env.PATH = `${path.dirname(process.execPath)}${path.delimiter}${env.PATH ?? ''}`;

async function run(cmd: string, args: string[], cwd: string, timeoutMs = 20_000): Promise<{ stdout: string; stderr: string }> {
  try {
    return await execFileP(cmd, args, { cwd, env, encoding: 'utf8', timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 });
  } catch (e) {
    const x = e as { code?: unknown; signal?: unknown; stdout?: string; stderr?: string };
    throw new Error(`${cmd} ${args.join(' ')} failed (code ${String(x.code)}, signal ${String(x.signal)}):\n${x.stdout ?? ''}\n${x.stderr ?? ''}`);
  }
}

/** A fresh clone of HEAD with `install` (npm arguments) run in it. */
async function freshClone(install: string[]): Promise<string> {
  const dir = path.join(tempDir('loam-clone-'), 'loam');
  const head = (await run('git', ['rev-parse', 'HEAD'], ROOT)).stdout.trim();
  await run('git', ['clone', '--quiet', '--no-checkout', ROOT, dir], ROOT);
  await run('git', ['checkout', '--quiet', head], dir);
  await run('npm', [...install, '--offline', '--no-audit', '--no-fund'], dir, 120_000);
  return dir;
}

const children = new Set<ChildProcess>();
afterAll(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

const commands = readmeCommands();
const subcommandOf = (c: string) => /^loam\s+([a-z]\S*)/.exec(c)?.[1];

describe('the README, in a fresh clone', () => {
  let clone: string;
  let bin: string;
  beforeAll(async () => {
    clone = await freshClone(['install']); // README: npm install
    bin = path.join(clone, 'node_modules/.bin/loam');
  }, 150_000);

  it('shows loam dev, node, drain, flush, status, repair and operator, and loam --help | --version', () => {
    expect(new Set(commands.map(subcommandOf))).toEqual(new Set(['dev', 'node', 'drain', 'flush', 'status', 'repair', 'operator', undefined]));
    expect(commands).toContain('loam --help | --version');
  });

  it('npm install links the loam command; --help, --version and npx loam work', async () => {
    expect(fs.existsSync(bin), `${bin} missing after npm install`).toBe(true);
    const help = (await run(bin, ['--help'], clone)).stdout;
    for (const sub of ['dev', 'node', 'drain', 'status', 'repair', 'operator']) expect(help).toMatch(new RegExp(`^\\s+${sub}\\b`, 'm'));
    expect((await run(bin, ['--version'], clone)).stdout.trim()).toBe(VERSION);
    expect((await run('npx', ['--offline', 'loam', '--help'], clone)).stdout).toBe(help);
  });

  it.each(commands.filter((c) => subcommandOf(c)))('"%s": its subcommand has --help listing every flag the README uses', async (command) => {
    const sub = subcommandOf(command)!;
    const help = (await run(bin, [sub, '--help'], clone)).stdout;
    expect(help).toMatch(new RegExp(`^Usage: loam ${sub}\\b`, 'm'));
    const flags = [...new Set(command.match(/--[a-z][a-z0-9-]*/g) ?? [])];
    for (const flag of flags) expect(help, `loam ${sub} --help should list ${flag}`).toMatch(new RegExp(`(^|[\\s,])${flag}\\b`, 'm'));
  });

  it('loam dev --nodes 3 serves a three-node DataStore, loam drain 2 drains it, and Ctrl-C stops it with exit 0', async () => {
    expect(commands).toContain('loam dev --nodes 3');
    expect(commands.some((c) => /^loam drain 2 --url \S+$/.test(c))).toBe(true);
    // The README's command on free ports and a temp data dir, so it cannot clash with anything.
    const child = spawn(bin, ['dev', '--nodes', '3', '--port', '0', '--metrics-port', '0', '--data', tempDir()], { cwd: clone, env, stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += String(d)));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const logs: Record<string, unknown>[] = [];
    const ready = new Promise<Record<string, unknown>>((resolve, reject) => {
      readline.createInterface({ input: child.stdout! }).on('line', (line) => {
        let entry: Record<string, unknown>;
        try {
          entry = JSON.parse(line) as Record<string, unknown>;
        } catch {
          entry = { raw: line };
        }
        logs.push(entry);
        if (entry.msg === 'ready') resolve(entry);
      });
      void exited.then((code) => reject(new Error(`loam dev exited with ${code} before ready: ${stderr}`)));
      child.once('error', reject); // e.g. no such command
    });
    const entry = await within(ready, 30_000, `loam dev ready: ${stderr}`);
    const urls = entry.endpoints as string[];
    expect(urls).toHaveLength(3);

    const client = await connect(urls.join(','));
    try {
      expect((await client.backends()).map((b) => b.number)).toEqual([1, 2, 3]);
      const note = await client.persist(new Note('hello'), { backend: 2 });
      const drained = await run(bin, ['drain', '2', '--url', urls[0]], clone, 60_000);
      expect(drained.stdout).toMatch(/^drained node 2: moved 1 objects in [\d.]+ s; node \d serves its home directory now/);
      expect([1, 3]).toContain((await client.locate(note)).master.number);
      expect((await client.get<Note>(note.$oid!)).text).toBe('hello');
      expect(commands.some((c) => /^loam flush --url \S+$/.test(c))).toBe(true);
      const flushed = await run(bin, ['flush', '--url', urls[0]], clone, 30_000);
      expect(flushed.stdout).toMatch(/^no node of this DataStore has S3 configured: everything acknowledged is on the nodes' disks \(3 nodes\)/);
      expect(commands.some((c) => /^loam status --url \S+$/.test(c))).toBe(true);
      const status = await run(bin, ['status', '--url', urls[0]], clone);
      expect(status.stdout).toMatch(/^\s*2\s+\S+\s+drained\s+0\s/m);
      expect(status.stdout.split('\n').filter((l) => /^\s*[123]\s+\S+\s+(ready|drained)\s+\d+\s/.test(l))).toHaveLength(3);
    } finally {
      await client.close();
    }

    child.kill('SIGINT');
    expect(await within(exited, 20_000, 'loam dev to exit after SIGINT')).toBe(0);
    expect(logs.some((l) => l.msg === 'stopping' && l.signal === 'SIGINT')).toBe(true);
  });
});

describe('npm ci in a fresh clone', () => {
  it('links loam too, and the launcher says how to build when dist/ is missing', async () => {
    const clone = await freshClone(['ci']);
    const bin = path.join(clone, 'node_modules/.bin/loam');
    expect((await run(bin, ['--version'], clone)).stdout.trim()).toBe(VERSION);
    expect((await run('npx', ['--offline', 'loam', '--help'], clone)).stdout).toMatch(/^Usage: loam /m);

    fs.renameSync(path.join(clone, 'node/dist'), path.join(clone, 'node/dist-away'));
    const r = await execFileP(bin, ['--version'], { cwd: clone, env, encoding: 'utf8' }).then(
      () => ({ code: 0, stderr: '' }),
      (e: { code?: number; stderr?: string }) => ({ code: e.code, stderr: e.stderr ?? '' }),
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/dist\/cli\.js is missing: build it first \(npm run build/);
  }, 150_000);
});

/** `p`, or a rejection naming `what` once `ms` pass. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}
