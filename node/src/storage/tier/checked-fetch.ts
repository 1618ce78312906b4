import zlib from 'node:zlib';
import type { ObjectStore } from '../object-store.js';
import type { ManifestSegment } from './manifest.js';

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
