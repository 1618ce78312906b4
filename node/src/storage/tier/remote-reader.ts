import { LRUCache } from 'lru-cache';
import { UnavailableError } from '@loam/sdk/wire';
import type { ObjectStore } from '../object-store.js';
import type { RemoteSegments } from '../segment-log.js';
import type { Manifest, ManifestSegment } from './manifest.js';
import { fetchSegment } from './checked-fetch.js';

/** Ranged reads of evicted segments fetch whole blocks of this size: a small read-ahead. */
export const REMOTE_BLOCK_BYTES = 256 * 1024;
/** Memory for fetched blocks (an LRU, apart from the decoded-object cache). */
const BLOCK_CACHE_BYTES = 32 * 1024 * 1024;

/**
 * Reads segments that are only in S3, through the current manifest: a whole segment (checked
 * against its crc32) for replay and compaction, and byte ranges for single records, fetched as
 * aligned blocks that are kept in a bounded LRU (records carry their own checksums, which the
 * engine checks when it decodes them). Concurrent reads of one block share one GET.
 */
export class RemoteReader implements RemoteSegments {
  private manifest?: Manifest;
  private byName = new Map<string, ManifestSegment>();
  private readonly blocks = new LRUCache<string, Buffer>({ maxSize: BLOCK_CACHE_BYTES, sizeCalculation: (b) => Math.max(1, b.length) });
  private readonly inflight = new Map<string, Promise<Buffer>>();

  constructor(
    private readonly store: ObjectStore,
    private readonly hooks: { onMismatch?: (key: string) => void; onFetch?: (hit: boolean) => void } = {},
  ) {}

  /** The manifest that says what S3 holds: only segments it names are read (or evicted). */
  setManifest(m: Manifest | undefined): void {
    this.manifest = m;
    this.byName = new Map((m?.segments ?? []).map((s) => [s.name, s]));
  }

  list(): Map<string, number> {
    return new Map([...this.byName].map(([n, s]) => [n, s.size]));
  }

  has(name: string, size: number): boolean {
    return this.byName.get(name)?.size === size;
  }

  private entry(name: string): ManifestSegment {
    const s = this.byName.get(name);
    if (!s) throw new Error(`segment ${name} is neither on local disk nor named by the manifest in S3`);
    return s;
  }

  readWhole(name: string): Promise<Buffer> {
    try {
      return fetchSegment(this.store, this.entry(name), this.hooks.onMismatch);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  async read(name: string, offset: number, length: number, check?: (buf: Buffer) => boolean): Promise<Buffer> {
    const s = this.entry(name);
    if (offset + length > s.size) throw new Error(`read past the end of segment ${name} (${offset}+${length} > ${s.size})`);
    const first = Math.floor(offset / REMOTE_BLOCK_BYTES);
    const last = Math.floor((offset + length - 1) / REMOTE_BLOCK_BYTES);
    for (let attempt = 0; ; attempt++) {
      const parts: Promise<Buffer>[] = [];
      for (let b = first; b <= last; b++) parts.push(this.block(s, b));
      const blocks = await Promise.all(parts);
      const joined = blocks.length === 1 ? blocks[0] : Buffer.concat(blocks);
      const start = offset - first * REMOTE_BLOCK_BYTES;
      const out = Buffer.from(joined.subarray(start, start + length)); // a copy: cached blocks stay intact
      if (!check || check(out)) return out;
      // Damaged on the way or in S3: never served; fetched again, then refused.
      this.hooks.onMismatch?.(s.key);
      for (let b = first; b <= last; b++) this.blocks.delete(`${s.key}#${b}`);
      if (attempt >= 2) throw new UnavailableError(`a record read from S3 object ${s.key} (offset ${offset}) fails its checksum after 3 fetches: not served`);
    }
  }

  private block(s: ManifestSegment, index: number): Promise<Buffer> {
    const key = `${s.key}#${index}`;
    const hit = this.blocks.get(key);
    if (hit) {
      this.hooks.onFetch?.(true);
      return Promise.resolve(hit);
    }
    let p = this.inflight.get(key);
    if (!p) {
      this.hooks.onFetch?.(false);
      const offset = index * REMOTE_BLOCK_BYTES;
      p = this.store.get(s.key, { offset, length: Math.min(REMOTE_BLOCK_BYTES, s.size - offset) }).then((buf) => {
        this.blocks.set(key, buf);
        return buf;
      }).finally(() => this.inflight.delete(key));
      this.inflight.set(key, p);
    }
    return p;
  }
}
