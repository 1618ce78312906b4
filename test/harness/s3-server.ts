/**
 * A real S3 server for tests: versitygw (Apache-2.0) serving a temp directory through its posix
 * backend (never a mock). See shared/TEST-COMPONENTS.md for its flags and quirks.
 *
 * - `startS3()` builds versitygw into the tools cache if it is missing (test/global-setup.ts
 *   does that before any test runs), starts it on a loopback port reserved through ports.ts,
 *   waits until it answers HTTP (any answer: an anonymous `GET /` is 403), creates a bucket and
 *   resolves with the endpoint, bucket, keys and directory.
 * - `kill()` takes the server down (an outage: data and port kept), `restart()` brings it back
 *   on the same directory and port, `freeze()`/`thaw()` make it hang and go on (SIGSTOP and
 *   SIGCONT), `stop()` tears it down for good (process, directory, port).
 * - `corrupt(key, offset)` overwrites bytes of the object's file in place. versitygw keeps the
 *   stored ETag, so a GET serves the damaged bytes: what checksum tests need.
 * - `cleanupS3()` (test/setup.ts runs it after every file) stops whatever a test left running.
 *   A worker that died without it leaves a record that the next `startS3()` reaps.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readOr, releasePorts, reservePorts } from './ports.js';
import { Children, reapDeadOwners, writeLeftoverRecord } from './leftovers.js';
import { pollUntil } from './wait.js';
import { ensureGoTool, VERSITYGW } from './tools.js';

export interface S3Server {
  /** `http://127.0.0.1:PORT` (path-style addressing). */
  endpoint: string;
  port: number;
  bucket: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** versitygw's posix root: the object `key` of `bucket` is the file `dir/bucket/key`. */
  dir: string;
  /** The file that holds `key` (of this server's bucket, or `bucket`). */
  objectPath(key: string, bucket?: string): string;
  /** True while the server process runs. */
  running(): boolean;
  /** Tail of what the server printed (all its runs), bounded. */
  output(): string;
  /** Takes the server down (SIGKILL unless told otherwise) and waits for it to exit. Data and port are kept. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /**
   * Freezes the server (SIGSTOP): connections are accepted by the kernel but nothing answers, as
   * with a hung server or a black-holed network. Resolves once every thread of it has stopped
   * (a signal is delivered asynchronously: a request sent right after `kill` could still be
   * served). `thaw()` (SIGCONT) lets it go on.
   */
  freeze(): Promise<void>;
  thaw(): Promise<void>;
  /** Starts the server again on the same directory and port (kills it first if it runs); resolves once it answers. */
  restart(): Promise<void>;
  /**
   * Overwrites bytes of the object's file in place, from `offset`: with `bytes` when given a
   * buffer, else flips (XOR 0xff) `bytes` bytes (default 1). The file keeps its size.
   */
  corrupt(key: string, offset: number, bytes?: Buffer | number): void;
  /** Kills the server, removes its directory and releases its port. Safe to call twice. */
  stop(): Promise<void>;
}

const REGISTRY = path.join(os.tmpdir(), 'loam-s3', 'servers');
const OUTPUT_LIMIT = 64 * 1024;
const ERROR_TAIL = 6 * 1024;
const READY_TIMEOUT_MS = 15_000;

async function answersHttp(endpoint: string): Promise<boolean> {
  try {
    const res = await fetch(endpoint, { signal: AbortSignal.timeout(1000) });
    await res.arrayBuffer();
    return true; // any status: the server is up
  } catch {
    return false;
  }
}

/** Our environment minus what versitygw reads as its own settings (VGW_*, ROOT_ACCESS_KEY*, ROOT_SECRET*). */
function serverEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^(VGW_|ROOT_ACCESS_KEY|ROOT_SECRET)/.test(k)) env[k] = v;
  return env;
}

/** The state letter (R, S, T, ...) of every thread of `pid`, from /proc (Linux). */
function threadStates(pid: number): string[] {
  let tids: string[];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return [];
  }
  // The state follows the command name, which is in parentheses and may contain spaces.
  return tids.map((t) => /\) (\S)/.exec(readOr(`/proc/${pid}/task/${t}/stat`, ''))?.[1] ?? '?').filter((s) => s !== '?');
}

// ---------------------------------------------------------------------------------------------------------
// leftovers of workers that died without cleaning up

const live = new Set<Server>();
const children = new Children();

class Server implements S3Server {
  readonly endpoint: string;
  readonly region = 'us-east-1';
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private buf = '';
  private stopped = false;
  private readonly record: string;

  constructor(
    private readonly bin: string,
    readonly port: number,
    readonly dir: string,
    readonly bucket: string,
    readonly accessKeyId: string,
    readonly secretAccessKey: string,
  ) {
    this.endpoint = `http://127.0.0.1:${port}`;
    this.record = path.join(REGISTRY, `${path.basename(dir)}.json`);
  }

  objectPath(key: string, bucket = this.bucket): string {
    return path.join(this.dir, bucket, key);
  }

  running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  output(): string {
    return this.buf;
  }

  private append(s: string): void {
    this.buf += s;
    if (this.buf.length > OUTPUT_LIMIT) this.buf = this.buf.slice(-OUTPUT_LIMIT);
  }

  private tail(): string {
    return `--- versitygw on ${this.port} (dir ${this.dir}) output, last ${ERROR_TAIL} chars ---\n${this.buf.slice(-ERROR_TAIL)}`;
  }

  private writeRecord(): void {
    writeLeftoverRecord(this.record, { dir: this.dir, pids: this.child?.pid ? [this.child.pid] : [], ports: [this.port] });
  }

  /** Spawns the server and resolves once it answers HTTP; rejects with its output if it exits first. */
  async spawnAndWait(): Promise<void> {
    if (this.stopped) throw new Error('this S3 server was stopped');
    if (this.running()) throw new Error(`versitygw on ${this.port} is already running`);
    this.append(`\n=== start ${new Date().toISOString()} ===\n`);
    const args = ['--access', this.accessKeyId, '--secret', this.secretAccessKey, '--port', `127.0.0.1:${this.port}`, '--region', this.region, '--quiet', '--keep-alive', 'posix', this.dir];
    const child = spawn(this.bin, args, { env: serverEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    children.add(child);
    child.stdout!.on('data', (d) => this.append(String(d)));
    child.stderr!.on('data', (d) => this.append(String(d)));
    let exitNote: string | undefined;
    this.exited = new Promise<void>((resolve) => {
      child.once('error', (e) => {
        exitNote = `spawn error: ${String(e)}`;
        this.append(`\n[${exitNote}]\n`);
        children.delete(child);
        resolve();
      });
      child.once('exit', (code, signal) => {
        exitNote = `exited code=${code} signal=${signal}`;
        this.append(`\n=== ${exitNote} ===\n`);
        children.delete(child);
        resolve();
      });
    });
    this.writeRecord();
    try {
      await pollUntil(() => answersHttp(this.endpoint), `versitygw on ${this.endpoint} to answer`, READY_TIMEOUT_MS, { everyMs: 25, gaveUp: () => (this.child === child ? exitNote : 'killed meanwhile') });
    } catch (e) {
      throw new Error(`${(e as Error).message}\n${this.tail()}`);
    }
  }

  async createBucket(): Promise<void> {
    // Loaded here, not at the top: test/setup.ts imports this file in every test file.
    const { CreateBucketCommand, S3Client } = await import('@aws-sdk/client-s3');
    const client = new S3Client({
      endpoint: this.endpoint,
      region: this.region,
      forcePathStyle: true,
      credentials: { accessKeyId: this.accessKeyId, secretAccessKey: this.secretAccessKey },
      maxAttempts: 1,
    });
    try {
      await client.send(new CreateBucketCommand({ Bucket: this.bucket }), { abortSignal: AbortSignal.timeout(10_000) });
    } catch (e) {
      throw new Error(`creating bucket ${this.bucket} on versitygw failed: ${String(e)}\n${this.tail()}`);
    } finally {
      client.destroy();
    }
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const child = this.child;
    if (!child || !this.running()) return;
    child.kill(signal);
    if (signal !== 'SIGKILL') child.kill('SIGCONT'); // a frozen server handles nothing else
    let t: NodeJS.Timeout | undefined;
    const late = await Promise.race([this.exited.then(() => false), new Promise<boolean>((r) => (t = setTimeout(() => r(true), 10_000)))]);
    clearTimeout(t);
    if (!late) return;
    this.append(`\n[harness: no exit 10 s after ${signal}, sending SIGKILL]\n`);
    child.kill('SIGKILL');
    await this.exited;
  }

  async freeze(): Promise<void> {
    const child = this.child;
    if (!child || !this.running()) throw new Error(`versitygw on ${this.port} is not running`);
    child.kill('SIGSTOP');
    await pollUntil(async () => threadStates(child.pid!).every((s) => s === 'T'), `versitygw (pid ${child.pid}) to stop`, 5_000, { everyMs: 25, gaveUp: () => (this.running() ? undefined : 'it exited') });
  }

  async thaw(): Promise<void> {
    const child = this.child;
    if (!child || !this.running()) return;
    child.kill('SIGCONT');
    await pollUntil(async () => !threadStates(child.pid!).includes('T'), `versitygw (pid ${child.pid}) to go on`, 5_000, { everyMs: 25, gaveUp: () => (this.running() ? undefined : 'it exited') });
  }

  async restart(): Promise<void> {
    await this.kill();
    await this.spawnAndWait();
  }

  corrupt(key: string, offset: number, bytes: Buffer | number = 1): void {
    const file = this.objectPath(key);
    const fd = fs.openSync(file, 'r+');
    try {
      const size = fs.fstatSync(fd).size;
      const n = typeof bytes === 'number' ? bytes : bytes.length;
      if (!Number.isInteger(offset) || offset < 0 || n < 1 || offset + n > size) {
        throw new RangeError(`corrupt ${key}: bytes ${offset}..${offset + n} are outside its ${size}-byte file`);
      }
      let data: Buffer;
      if (typeof bytes === 'number') {
        data = Buffer.alloc(n);
        fs.readSync(fd, data, 0, n, offset);
        for (let i = 0; i < n; i++) data[i] = data[i]! ^ 0xff;
      } else {
        data = bytes;
      }
      fs.writeSync(fd, data, 0, n, offset);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    live.delete(this);
    try {
      await this.kill();
    } finally {
      fs.rmSync(this.dir, { recursive: true, force: true });
      releasePorts([this.port]);
      fs.rmSync(this.record, { force: true });
    }
  }
}

/**
 * Starts versitygw on a reserved loopback port with a fresh temp directory and a new bucket
 * (`bucket`, default `loam-test-<random>`: 3-63 characters, as on AWS). Rejects with the
 * server's output if it does not come up, leaving nothing behind.
 */
export async function startS3(opts: { bucket?: string; accessKeyId?: string; secretAccessKey?: string } = {}): Promise<S3Server> {
  const bucket = opts.bucket ?? `loam-test-${randomBytes(6).toString('hex')}`;
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) throw new Error(`bucket name ${bucket} is not a valid S3 bucket name (3-63 lowercase letters, digits, '.', '-')`);
  const bin = path.join(await ensureGoTool(VERSITYGW), 'versitygw');
  reapDeadOwners(REGISTRY);
  for (let attempt = 1; ; attempt++) {
    const [port] = await reservePorts(1);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'loam-s3-'));
    const server = new Server(bin, port!, dir, bucket, opts.accessKeyId ?? 'loamtestaccess', opts.secretAccessKey ?? 'loamtestsecret0123456789');
    live.add(server);
    try {
      await server.spawnAndWait();
      await server.createBucket();
      return server;
    } catch (e) {
      const clash = /address already in use/i.test(server.output());
      await server.stop().catch(() => undefined);
      // A port we found free was taken by something outside this harness before versitygw bound it.
      if (clash && attempt < 3) continue;
      throw e;
    }
  }
}

/** Stops every S3 server this process started and has not stopped yet (test/setup.ts runs it after each file). */
export async function cleanupS3(): Promise<void> {
  const errors: unknown[] = [];
  for (const s of [...live]) await s.stop().catch((e: unknown) => void errors.push(e));
  if (errors.length) throw errors[0];
}

/** The keys versitygw holds under `prefix` of its bucket (each S3 object is a file), sorted. */
export function s3ObjectsUnder(s3: Pick<S3Server, 'dir' | 'bucket'>, prefix: string): string[] {
  const root = `${s3.dir}/${s3.bucket}/${prefix}`;
  if (!fs.existsSync(root)) return [];
  return (fs.readdirSync(root, { recursive: true }) as string[]).filter((f) => fs.statSync(`${root}/${f}`).isFile()).sort();
}
