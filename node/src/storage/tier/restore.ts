import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import type { ObjectStore } from '../object-store.js';
import { parseSegmentName } from '../segment-log.js';
import { latestManifest, type Manifest, type ManifestKeys, type ManifestSegment } from './manifest.js';

const RESTORING = 'RESTORING';

/** A download whose bytes do not match the manifest's checksum (after retries): never used as data. */
export class ChecksumMismatchError extends Error {
  constructor(readonly key: string, expected: number, got: number) {
    super(`S3 object ${key} does not match its checksum in the manifest (crc32 ${got}, expected ${expected}): not used`);
  }
}

/** Downloads a segment and checks it against the manifest, retrying a mismatch twice. */
export async function fetchSegment(store: ObjectStore, s: ManifestSegment, onMismatch?: (key: string) => void): Promise<Buffer> {
  let last: ChecksumMismatchError | undefined;
  for (let attempt = 0; attempt < 3; attempt++) {
    const data = await store.get(s.key);
    const crc = zlib.crc32(data);
    if (data.length === s.size && crc === s.crc32) return data;
    last = new ChecksumMismatchError(s.key, s.crc32, crc);
    onMismatch?.(s.key);
  }
  throw last!;
}

export interface RestoreReport {
  manifest: string;
  segments: number;
  bytes: number;
  ms: number;
}

/**
 * A node started on an empty log directory, with an identity and S3 location that have a
 * manifest, gets its log back from S3 before it opens: every segment the manifest names is
 * downloaded, checked and written durably (through a temporary file, renamed), then the log
 * opens as after a restart. Returns undefined when there is nothing to restore (a log is
 * there, or S3 has no manifest for this node), and the manifest it restored (or found) either way.
 */
export async function restoreIfEmpty(
  logDir: string, store: ObjectStore, keys: ManifestKeys,
  log: { info(msg: string, fields?: Record<string, unknown>): void },
  onMismatch?: (key: string) => void,
): Promise<{ report?: RestoreReport; manifest?: Manifest }> {
  fs.mkdirSync(logDir, { recursive: true });
  // A restore cut off by a crash leaves this marker: its partial log would open as a log that
  // lost its newest segments, so it is started over.
  const marker = path.join(logDir, RESTORING);
  if (fs.existsSync(marker)) {
    for (const f of fs.readdirSync(logDir)) if (parseSegmentName(f) || f.endsWith('.tmp')) fs.rmSync(path.join(logDir, f));
  }
  const hasLog = fs.readdirSync(logDir).some((f) => parseSegmentName(f));
  const found = await latestManifest(store, keys);
  if (!found) {
    if (fs.existsSync(marker)) throw new Error(`${logDir} holds a restore cut off by a crash, and S3 has no manifest for node ${keys.node} to finish it`);
    return {};
  }
  if (hasLog) return { manifest: found.manifest };
  fs.writeFileSync(marker, `${found.key}\n`);
  const t0 = Date.now();
  const { manifest } = found;
  const total = manifest.segments.reduce((n, s) => n + s.size, 0);
  log.info('restoring the log from S3', { manifest: found.key, segments: manifest.segments.length, bytes: total });
  let done = 0;
  let bytes = 0;
  let lastLog = Date.now();
  for (const s of manifest.segments) {
    const data = await fetchSegment(store, s, onMismatch);
    writeDurably(logDir, s.name, data);
    done++;
    bytes += data.length;
    if (Date.now() - lastLog > 1_000 || done === manifest.segments.length) {
      lastLog = Date.now();
      log.info('restore progress', { segments: done, of: manifest.segments.length, bytes, totalBytes: total });
    }
  }
  const dfd = fs.openSync(logDir, 'r');
  try {
    fs.fsyncSync(dfd);
  } finally {
    fs.closeSync(dfd);
  }
  fs.rmSync(marker);
  const report = { manifest: found.key, segments: done, bytes, ms: Date.now() - t0 };
  log.info('restored the log from S3', { ...report });
  return { report, manifest };
}

function writeDurably(dir: string, name: string, data: Buffer): void {
  const file = path.join(dir, name);
  const tmp = `${file}.tmp`;
  const fd = fs.openSync(tmp, 'w');
  try {
    fs.writeSync(fd, data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
}
