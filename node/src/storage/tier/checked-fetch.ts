import zlib from 'node:zlib';
import type { ObjectStore } from '../object-store.js';
import type { ManifestSegment } from './manifest.js';

/** A download whose bytes do not match the manifest's checksum (after retries): never used as data. */
export class ChecksumMismatchError extends Error {
  constructor(readonly key: string, expected: number, got: number) {
    super(`S3 object ${key} does not match its checksum in the manifest (crc32 ${got}, expected ${expected}): not used`);
  }
}

const CRC_SLICE = 1024 * 1024;

/**
 * CRC-32 of a whole segment, a MiB at a time with a yield between: one call over 64 MiB takes
 * tens of milliseconds, which would stall every request on the node meanwhile.
 */
export async function crc32Yielding(data: Buffer): Promise<number> {
  let crc = 0;
  for (let i = 0; i < data.length; i += CRC_SLICE) {
    if (i > 0) await new Promise((r) => setImmediate(r));
    crc = zlib.crc32(data.subarray(i, i + CRC_SLICE), crc);
  }
  return crc;
}

/** Downloads a segment (or checkpoint) and checks it against the manifest, retrying a mismatch twice. */
export async function fetchSegment(store: ObjectStore, s: Pick<ManifestSegment, 'key' | 'size' | 'crc32'>, onMismatch?: (key: string) => void): Promise<Buffer> {
  let last: ChecksumMismatchError | undefined;
  for (let attempt = 0; attempt < 3; attempt++) {
    const data = await store.get(s.key);
    const crc = await crc32Yielding(data);
    if (data.length === s.size && crc === s.crc32) return data;
    last = new ChecksumMismatchError(s.key, s.crc32, crc);
    onMismatch?.(s.key);
  }
  throw last!;
}
