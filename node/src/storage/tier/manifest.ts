import type { ObjectStore } from '../object-store.js';

/**
 * A node's manifest in S3: the segments a restore replays, in log order, each with the key of
 * its uploaded content, its size and checksum, and the generation that uploaded it.
 *
 * Keys (under the DataStore's S3 prefix, `P`):
 * - `P/nodes/NODE/segments/NAME.gGEN` — the content of segment file NAME as generation GEN
 *   uploaded it. A rewritten segment (compaction) has a new NAME (`ID-REV.seg`), and every start
 *   has a new GEN, so no key is ever written twice: uploads are conditional creates.
 * - `P/nodes/NODE/checkpoints/GEN-SEQ.ckpt` — an index checkpoint (tier/checkpoint.ts) that
 *   generation GEN took (SEQ counts this generation's checkpoints), never overwritten.
 * - `P/nodes/NODE/manifests/GEN-SEQ.json` (both zero-padded) — written after each upload. The
 *   current manifest is the one with the greatest key, so a fenced process (an older
 *   generation) can write manifests that are never read. A manifest names only segments whose
 *   upload completed, and only a prefix of the log: a restore never skips a segment.
 */
export interface ManifestSegment {
  /** The local file name, `NNNNNNNNNN[-R].seg`. */
  name: string;
  key: string;
  size: number;
  /** CRC-32 (zlib) of the whole content. */
  crc32: number;
  generation: number;
}

/**
 * The index checkpoint a manifest names: the engine's state after exactly the segments
 * `segments` (keys, in log order: a prefix of the log ending with the segment named `through`).
 * A manifest names it only while its own segments up to `through` are exactly those keys, so
 * everything the checkpoint points into is named by the same manifest (and kept by GC with it);
 * a rewrite of one of them (compaction) makes the next manifest leave it out.
 */
export interface ManifestCheckpoint {
  key: string;
  size: number;
  /** CRC-32 (zlib) of the whole object. */
  crc32: number;
  generation: number;
  /** The last segment (file name) it covers. */
  through: string;
  segments: string[];
  /** Objects in its index (informational). */
  objects: number;
}

export interface Manifest {
  format: 1;
  node: string;
  /** The node number this identity has in the cluster (informational: etcd is the authority). */
  number: number;
  generation: number;
  seq: number;
  writtenAt: string;
  segments: ManifestSegment[];
  checkpoint?: ManifestCheckpoint;
}

/**
 * Whether `c` describes the state after exactly these segments: the ones up to `c.through` are
 * its keys, in order. Otherwise it points into segment contents this list does not name.
 */
export function checkpointFits(c: ManifestCheckpoint, segments: readonly ManifestSegment[]): boolean {
  const through = segmentIdOf(c.through);
  const covered = segments.filter((s) => segmentIdOf(s.name) <= through);
  return covered.length === c.segments.length && covered.length > 0 && covered.every((s, i) => s.key === c.segments[i]) && covered.at(-1)!.name === c.through;
}

function segmentIdOf(name: string): number {
  return Number(name.slice(0, 10));
}

const pad = (n: number) => String(n).padStart(10, '0');

export class ManifestKeys {
  constructor(private readonly prefix: string, readonly node: string) {}

  get root(): string {
    return `${this.prefix}nodes/${this.node}/`;
  }

  get segmentsPrefix(): string {
    return `${this.root}segments/`;
  }

  get manifestsPrefix(): string {
    return `${this.root}manifests/`;
  }

  segment(name: string, generation: number): string {
    return `${this.segmentsPrefix}${name}.g${generation}`;
  }

  get checkpointsPrefix(): string {
    return `${this.root}checkpoints/`;
  }

  checkpoint(generation: number, seq: number): string {
    return `${this.checkpointsPrefix}${pad(generation)}-${pad(seq)}.ckpt`;
  }

  /** Generation and sequence of a checkpoint key, or undefined for another key. */
  parseCheckpoint(key: string): { generation: number; seq: number } | undefined {
    if (!key.startsWith(this.checkpointsPrefix)) return undefined;
    const m = /^(\d{10})-(\d{10})\.ckpt$/.exec(key.slice(this.checkpointsPrefix.length));
    return m ? { generation: Number(m[1]), seq: Number(m[2]) } : undefined;
  }

  manifest(generation: number, seq: number): string {
    return `${this.manifestsPrefix}${pad(generation)}-${pad(seq)}.json`;
  }

  /** Generation and sequence of a manifest key, or undefined for another key. */
  parseManifest(key: string): { generation: number; seq: number } | undefined {
    if (!key.startsWith(this.manifestsPrefix)) return undefined;
    const m = /^(\d{10})-(\d{10})\.json$/.exec(key.slice(this.manifestsPrefix.length));
    return m ? { generation: Number(m[1]), seq: Number(m[2]) } : undefined;
  }

  /** The generation of a segment key, or undefined for another key. */
  parseSegment(key: string): { name: string; generation: number } | undefined {
    if (!key.startsWith(this.segmentsPrefix)) return undefined;
    const m = /^(\d{10}(?:-\d+)?\.seg)\.g(\d+)$/.exec(key.slice(this.segmentsPrefix.length));
    return m ? { name: m[1], generation: Number(m[2]) } : undefined;
  }
}

/** A manifest that does not parse or breaks its invariants: never used for a restore. */
export class ManifestError extends Error {}

export function encodeManifest(m: Manifest): Buffer {
  return Buffer.from(JSON.stringify(m, null, 1));
}

export function decodeManifest(buf: Buffer, key: string): Manifest {
  let m: Manifest;
  try {
    m = JSON.parse(buf.toString('utf8')) as Manifest;
  } catch (e) {
    throw new ManifestError(`manifest ${key} is not JSON: ${(e as Error).message}`);
  }
  const bad = (what: string) => new ManifestError(`manifest ${key} is malformed: ${what}`);
  if (m?.format !== 1) throw bad(`format ${String(m?.format)}`);
  if (typeof m.node !== 'string' || !Number.isSafeInteger(m.generation) || !Number.isSafeInteger(m.seq) || !Array.isArray(m.segments)) throw bad('fields');
  let last = -1;
  for (const s of m.segments) {
    if (typeof s.name !== 'string' || typeof s.key !== 'string' || !Number.isSafeInteger(s.size) || !Number.isSafeInteger(s.crc32)) throw bad(`segment ${JSON.stringify(s)}`);
    const id = Number(s.name.slice(0, 10));
    if (!(id > last)) throw bad(`segments out of log order at ${s.name}`);
    last = id;
  }
  const c = m.checkpoint;
  if (c !== undefined) {
    if (typeof c !== 'object' || c === null || typeof c.key !== 'string' || !Number.isSafeInteger(c.size) || !Number.isSafeInteger(c.crc32)
      || !Number.isSafeInteger(c.generation) || typeof c.through !== 'string' || !Array.isArray(c.segments) || !c.segments.every((k) => typeof k === 'string')) {
      throw bad(`checkpoint ${JSON.stringify(c)}`);
    }
  }
  return m;
}

/** The current manifest (greatest key) of a node, or undefined when it has none. */
export async function latestManifest(store: ObjectStore, keys: ManifestKeys): Promise<{ key: string; manifest: Manifest } | undefined> {
  const entries = (await store.list(keys.manifestsPrefix)).filter((e) => keys.parseManifest(e.key));
  const latest = entries.at(-1);
  if (!latest) return undefined;
  return { key: latest.key, manifest: decodeManifest(await store.get(latest.key), latest.key) };
}
