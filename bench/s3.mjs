// Raw S3 baselines for the S3 benchmarks: a real versitygw (the tests' S3 server) as a child
// process, and bare @aws-sdk/client-s3 PUT and ranged GET with the same client settings as
// Loam's S3ObjectStore (path-style, checksums WHEN_REQUIRED both ways, keep-alive, the same
// socket limit), so a ratio against them measures Loam's own cost and not a checksum setting.
//
//   const s3 = await startVersitygw();                       // stopped by cleanupAll()
//   const raw = rawS3(s3);                                   // { client, put(key, body), rangedGet(key, offset, length), deleteAll(prefix) }
//   const mibps = await putThroughput((key, body) => raw.put(key, body), { size, concurrency, count, prefix });
//   const ms = await rangedGetMs((off, len) => raw.rangedGet(key, off, len), { objectSize, length, count });
//
// versitygw comes from the tools cache that test/harness/tools.ts fills
// (LOAM_TOOLS_DIR, default ~/.cache/loam-tools/versitygw-v1.8.0/bin/versitygw); when it is not
// there yet, it is built the same way (`go install`, same cache layout and lock file).
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CreateBucketCommand, DeleteObjectsCommand, GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { s3ClientConfig } from '../node/dist/storage/s3-object-store.js';
import { freePort, now, onCleanup, tempDir, note } from './lib.mjs';

// Same as S3ObjectStore: the pinned SDK's "needs Node 22 later" notice is noise here.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

export const VERSITYGW_VERSION = 'v1.8.0';
const TOOLS_DIR = process.env.LOAM_TOOLS_DIR ?? path.join(os.homedir(), '.cache', 'loam-tools');
const TOOL_DIR = path.join(TOOLS_DIR, `versitygw-${VERSITYGW_VERSION}`);
const BIN = path.join(TOOL_DIR, 'bin', 'versitygw');
const MODULE = `github.com/versity/versitygw/cmd/versitygw@${VERSITYGW_VERSION}`;

/** The client settings S3ObjectStore uses (its own s3ClientConfig), for both sides of a ratio. */
export function clientConfig(s3, { maxSockets } = {}) {
  return s3ClientConfig({
    endpoint: s3.endpoint,
    region: s3.region,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
    maxSockets,
  });
}

// ------------------------------------------------------------------ the server

function pidAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return e.code === 'EPERM';
  }
}

function built() {
  return fs.existsSync(path.join(TOOL_DIR, '.done')) && fs.existsSync(BIN);
}

/** versitygw's path, built into the tools cache first when missing (as tools.ts does). */
export async function versitygwBinary() {
  if (built()) return BIN;
  const lock = path.join(TOOLS_DIR, `versitygw-${VERSITYGW_VERSION}.lock`);
  fs.mkdirSync(TOOLS_DIR, { recursive: true });
  const deadline = Date.now() + 25 * 60_000;
  for (;;) {
    try {
      fs.writeFileSync(lock, String(process.pid), { flag: 'wx' });
      break;
    } catch (e) {
      if (e.code !== 'EEXIST') throw e;
    }
    if (built()) return BIN;
    const holder = Number(fs.readFileSync(lock, 'utf8') || 0);
    if (holder && !pidAlive(holder)) fs.rmSync(lock, { force: true });
    else if (Date.now() > deadline) throw new Error(`another process holds ${lock} and did not finish building versitygw`);
    else await new Promise((r) => setTimeout(r, 500));
  }
  try {
    if (built()) return BIN;
    note(`building versitygw ${VERSITYGW_VERSION} with go install (a minute or two, once)`);
    fs.rmSync(TOOL_DIR, { recursive: true, force: true });
    fs.mkdirSync(path.dirname(BIN), { recursive: true });
    const env = { ...process.env, GOBIN: path.dirname(BIN), CGO_ENABLED: process.env.CGO_ENABLED ?? '0', GOFLAGS: `${process.env.GOFLAGS ?? ''} -buildvcs=false`.trim() };
    const { code, out } = await new Promise((resolve) => {
      let out = '';
      const child = spawn('go', ['install', '-p', '2', '-trimpath', MODULE], { env, cwd: TOOL_DIR, stdio: ['ignore', 'pipe', 'pipe'] });
      child.stdout.on('data', (d) => (out = (out + d).slice(-16384)));
      child.stderr.on('data', (d) => (out = (out + d).slice(-16384)));
      child.once('error', (e) => resolve({ code: 127, out: `${out}\n${e}` }));
      child.once('close', (c) => resolve({ code: c ?? 1, out }));
    });
    if (code !== 0 || !fs.existsSync(BIN)) throw new Error(`go install ${MODULE} failed (exit ${code}); needs go and the Go module proxy\n${out}`);
    fs.writeFileSync(path.join(TOOL_DIR, '.done'), `${new Date().toISOString()}\n`);
    return BIN;
  } finally {
    if (fs.readFileSync(lock, 'utf8') === String(process.pid)) fs.rmSync(lock, { force: true });
  }
}

const children = new Set();
process.on('exit', () => {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {
      // gone
    }
  }
});

/**
 * Starts versitygw on a free loopback port with a temp directory (the flags of
 * test/harness/s3-server.ts) and creates a bucket; cleanupAll() kills it and removes the directory.
 */
export async function startVersitygw({ timeoutMs = 15_000 } = {}) {
  const bin = await versitygwBinary();
  const dir = tempDir('loam-bench-s3-');
  const port = await freePort();
  const s3 = {
    endpoint: `http://127.0.0.1:${port}`,
    region: 'us-east-1',
    bucket: `loam-bench-${randomBytes(4).toString('hex')}`,
    accessKeyId: 'loambenchaccess',
    secretAccessKey: 'loambenchsecret0123456789',
    dir,
  };
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^(VGW_|ROOT_ACCESS_KEY|ROOT_SECRET)/.test(k)) env[k] = v;
  const child = spawn(bin, ['--access', s3.accessKeyId, '--secret', s3.secretAccessKey, '--port', `127.0.0.1:${port}`, '--region', s3.region, '--quiet', '--keep-alive', 'posix', dir], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let output = '';
  child.stdout.on('data', (d) => (output = (output + d).slice(-16384)));
  child.stderr.on('data', (d) => (output = (output + d).slice(-16384)));
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => {
    children.delete(child);
    resolve(code ?? signal);
  }));
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGKILL');
    await exited;
  };
  onCleanup(stop);
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`versitygw exited before answering: ${output}`);
    try {
      const res = await fetch(s3.endpoint, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      break; // any HTTP answer
    } catch {
      if (Date.now() > end) throw new Error(`versitygw did not answer within ${timeoutMs} ms: ${output}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }
  const client = new S3Client(clientConfig(s3));
  try {
    await client.send(new CreateBucketCommand({ Bucket: s3.bucket }));
  } finally {
    client.destroy();
  }
  return { ...s3, pid: child.pid, stop };
}

// ------------------------------------------------------------------ raw operations

/** Bare @aws-sdk/client-s3 calls on `s3`'s bucket, with the settings of clientConfig(). */
export function rawS3(s3, opts = {}) {
  const client = new S3Client(clientConfig(s3, opts));
  onCleanup(() => client.destroy());
  const Bucket = s3.bucket;
  return {
    client,
    /** PutObject of the whole body (no condition, no checksum). */
    async put(key, body) {
      await client.send(new PutObjectCommand({ Bucket, Key: key, Body: body, ContentLength: body.length }));
    },
    /** GetObject of bytes [offset, offset + length), read whole. */
    async rangedGet(key, offset, length) {
      const out = await client.send(new GetObjectCommand({ Bucket, Key: key, Range: `bytes=${offset}-${offset + length - 1}` }));
      return Buffer.from(await out.Body.transformToByteArray());
    },
    /** Deletes every key under `prefix` (untimed housekeeping between rounds). */
    async deleteAll(prefix) {
      let token;
      do {
        const out = await client.send(new ListObjectsV2Command({ Bucket, Prefix: prefix, ContinuationToken: token }));
        const keys = (out.Contents ?? []).map((o) => ({ Key: o.Key }));
        if (keys.length) await client.send(new DeleteObjectsCommand({ Bucket, Delete: { Objects: keys, Quiet: true } }));
        token = out.IsTruncated ? out.NextContinuationToken : undefined;
      } while (token);
    },
  };
}

// ------------------------------------------------------------------ measurements

/**
 * MiB/s of `count` PUTs of `size`-byte bodies, `concurrency` in flight, through `put(key, body)`;
 * keys `${prefix}${i}`. The bodies are made before the clock starts (a few distinct ones, reused).
 */
export async function putThroughput(put, { size, concurrency, count, prefix }) {
  const bodies = Array.from({ length: Math.min(4, count) }, () => randomBytes(size));
  let next = 0;
  const t0 = now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (let i = next++; i < count; i = next++) await put(`${prefix}${i}`, bodies[i % bodies.length]);
    }),
  );
  const s = (now() - t0) / 1000;
  return (count * size) / (1024 * 1024) / s;
}

/** Mean ms of `count` sequential ranged reads of `length` bytes at random offsets of an `objectSize`-byte object. */
export async function rangedGetMs(get, { objectSize, length, count }) {
  const offsets = Array.from({ length: count }, () => Math.floor(Math.random() * (objectSize - length)));
  const t0 = now();
  for (const off of offsets) {
    const b = await get(off, length);
    if (b.length !== length) throw new Error(`ranged get returned ${b.length} of ${length} bytes`);
  }
  return (now() - t0) / count;
}

// ------------------------------------------------------------------ nodes with the S3 tier

/**
 * What `startNode` needs for a node with the S3 tier on `s3`'s bucket: the CLI flags
 * (`--s3-endpoint --s3-bucket --s3-prefix --s3-region --upload-interval --node-name`) and the
 * credentials in the child's environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, as the SDK
 * resolves them). Spread into startNode: `startNode({ dataDir, ...s3Node(s3, { prefix, nodeName }) })`.
 */
export function s3Node(s3, { prefix, nodeName, uploadInterval = '5s', args = [] }) {
  return {
    args: [
      '--s3-endpoint', s3.endpoint, '--s3-bucket', s3.bucket, '--s3-prefix', prefix, '--s3-region', s3.region,
      '--upload-interval', uploadInterval, ...(nodeName ? ['--node-name', nodeName] : []), ...args,
    ],
    env: { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
  };
}

/**
 * MiB/s of PUTs of one body per entry of `sizes` (bytes), `concurrency` in flight (a pool: the
 * next starts as soon as one ends), through `put(key, body)`; keys `${prefix}${i}`. Bodies are
 * slices of a few random buffers made before the clock starts.
 */
export async function putSizesThroughput(put, { sizes, concurrency, prefix }) {
  const max = Math.max(...sizes);
  const pool = Array.from({ length: Math.min(concurrency, sizes.length) }, () => randomBytes(max));
  let next = 0;
  const t0 = now();
  await Promise.all(
    pool.map(async (buf) => {
      for (let i = next++; i < sizes.length; i = next++) await put(`${prefix}${i}`, buf.subarray(0, sizes[i]));
    }),
  );
  const s = (now() - t0) / 1000;
  return sizes.reduce((a, b) => a + b, 0) / (1024 * 1024) / s;
}
