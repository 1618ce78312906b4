import os from 'node:os';
import { aliasKey, type EngineState, KINDS, type RecordKind } from '../engine-state.js';
import type { IndexColumns } from '../oid-index.js';
import { checkFrame, decodeFrame, encodeBatch, frameSize, RecordType, writeFrame, type LogRecord } from '../record.js';
import type { ObjectStore } from '../object-store.js';
import { checkpointFits, type Manifest } from './manifest.js';
import { fetchSegment } from './checked-fetch.js';

/**
 * The index checkpoint: the engine's in-memory state (engine-state.ts) after exactly the records
 * of a prefix of the log, serialized with positions that name segments by file name (a table in
 * the header) instead of by this process's handles. A restore loads it and replays only the
 * segments after it. Taken in one synchronous step at a seal boundary (the active segment empty),
 * so no commit can land between "the log up to S" and "the state"; writing it takes tens of
 * milliseconds per million objects, and it is taken rarely (see s3-tier.ts).
 *
 * Format (little-endian):
 *   "LOAMCKP1" | u32 header length | header JSON (CheckpointHeader)
 *   index:   `objects` rows as columns, each whole before the next: oid (4 u32 words) | u32 segment |
 *            u32 offset | u32 length | f64 version | u16 dataset (38 bytes a row, in the platform's
 *            byte order, `endian` in the header: a column is one copy of a typed array)
 *   records: `records` entries: u32 segment | u32 offset | u32 length | a log record frame
 *   live:    `live` entries: u32 segment | f64 bytes
 * `segment` indexes the header's `segments` (NONE: no place). The index is written as raw
 * entries (it has no record to rebuild it from); every other table (aliases, datasets, forwards,
 * home directory, replica sets and copies, installs, prepared transactions, outcomes) as the one
 * record that rebuilds its entry through the same `apply` replay uses, so the record kinds stay
 * described once. `live` holds, per segment, live bytes that no entry accounts for (dataset
 * records, whose places the state does not keep), so live bytes come back exactly.
 * Integrity is the manifest's crc32 of the whole object; decoding also checks every bound.
 */
export interface CheckpointHeader {
  format: 1;
  node: string;
  takenAt: string;
  /** Segment file names, in log order: the prefix of the log it covers. */
  segments: string[];
  objects: number;
  records: number;
  live: number;
  /** OutcomeTable.forgottenUpTo. */
  forgottenUpTo: number;
  endian: 'LE' | 'BE';
}

/** A checkpoint object that does not decode or breaks its invariants: never loaded. */
export class CheckpointError extends Error {
  constructor(readonly key: string, what: string) {
    super(`checkpoint ${key} is unusable: ${what}`);
    this.name = 'CheckpointError';
  }
}

const MAGIC = Buffer.from('LOAMCKP1', 'latin1');
const INDEX_ENTRY = 38;
const PLACE = 12;
const LIVE_ENTRY = 12;
const NONE = 0xffffffff;

export interface CheckpointSource {
  state: EngineState;
  /** The sealed segments it covers (handles, log order): every place in the state is in one of them. */
  segments: number[];
  fileName(handle: number): string;
}

export interface EncodedCheckpoint {
  names: string[];
  body: Buffer;
  objects: number;
  records: number;
}

/**
 * Frames written into 1 MiB chunks as they are made: the records rebuilt from the tables (up
 * to 500,000 outcomes) are never all alive at once, only their bytes.
 */
class ChunkWriter {
  readonly chunks: Buffer[] = [];
  private buf = Buffer.allocUnsafe(0);
  private pos = 0;
  count = 0;

  add(seg: number, offset: number, length: number, record: LogRecord): void {
    const size = PLACE + frameSize(record);
    if (this.pos + size > this.buf.length) {
      if (this.pos > 0) this.chunks.push(this.buf.subarray(0, this.pos));
      this.buf = Buffer.allocUnsafe(Math.max(CHUNK, size));
      this.pos = 0;
    }
    let p = this.buf.writeUInt32LE(seg, this.pos);
    p = this.buf.writeUInt32LE(offset, p);
    p = this.buf.writeUInt32LE(length, p);
    this.pos = writeFrame(this.buf, p, record, 0);
    this.count++;
  }

  done(): Buffer[] {
    if (this.pos > 0) this.chunks.push(this.buf.subarray(0, this.pos));
    this.pos = 0;
    return this.chunks;
  }
}

const CHUNK = 1024 * 1024;

const oidBuf = (hex: string) => Buffer.from(hex, 'hex');

/** Serializes the state (synchronously: it must not change underneath). Throws if a place is outside `segments`. */
export function encodeCheckpoint(src: CheckpointSource, node: string, takenAt = new Date().toISOString()): EncodedCheckpoint {
  const { state } = src;
  const slot = new Map<number, number>(src.segments.map((h, i) => [h, i]));
  const names = src.segments.map((h) => src.fileName(h));
  const accounted = new Float64Array(names.length);
  const slotOf = (handle: number): number => {
    const i = slot.get(handle);
    if (i === undefined) throw new Error(`invariant: the state points into segment ${handle}, which the checkpoint does not cover`);
    return i;
  };
  const records = new ChunkWriter();
  const placed = (e: { segment: number; offset: number; length: number }, record: LogRecord) => {
    const seg = slotOf(e.segment);
    accounted[seg] += e.length;
    records.add(seg, e.offset, e.length, record);
  };
  // A dataset still being created is only reserved: its record lands after the boundary, if at all.
  for (const [name, dataset] of state.datasetIds) if (!state.pendingDatasets.has(name)) records.add(NONE, 0, 0, { type: RecordType.Dataset, dataset, name });
  for (const [key, e] of state.aliases) {
    const cut = key.indexOf('\0');
    const dataset = Number(key.slice(0, cut));
    const alias = key.slice(cut + 1);
    if (aliasKey(dataset, alias) !== key) throw new Error(`invariant: alias key ${JSON.stringify(key)}`);
    placed(e, { type: RecordType.AliasSet, dataset, alias, oid: oidBuf(e.value) });
  }
  for (const [oid, e] of state.forwards) placed(e, { type: RecordType.Forward, dataset: 0, oid: oidBuf(oid), node: e.value });
  for (const [oid, e] of state.directory) placed(e, { type: RecordType.Directory, dataset: 0, oid: oidBuf(oid), master: e.value.master, replicas: e.value.replicas });
  for (const [oid, e] of state.replicaSets) placed(e, { type: RecordType.Replicas, dataset: 0, oid: oidBuf(oid), nodes: e.value });
  for (const [oid, e] of state.replicaOf) placed(e, { type: RecordType.ReplicaOf, dataset: 0, oid: oidBuf(oid), master: e.value });
  for (const [oid, e] of state.installing) placed(e, { type: RecordType.Installing, dataset: 0, oid: oidBuf(oid), source: e.value });
  for (const [txid, p] of state.prepared) {
    const body = p.records.length > 0 ? encodeBatch(p.records).buf : Buffer.alloc(0);
    placed(p, { type: RecordType.Prepare, dataset: p.dataset, txid: oidBuf(txid), coordinator: p.coordinator, locked: p.locked.map(oidBuf), body });
  }
  for (const [id, o] of state.outcomes.entries()) placed(o, { type: RecordType.Outcome, dataset: 0, id: oidBuf(id), at: o.at, ok: o.ok, versions: o.versions });

  const recordChunks = records.done();
  const objects = state.index.size;
  // Index entries account for their bytes too; what is left per segment goes in `live`.
  const cols = state.index.columns();
  let lastHandle = -1;
  let lastSlot = 0;
  for (let j = 0; j < objects; j++) {
    const h = cols.seg[j];
    if (h !== lastHandle) {
      lastSlot = slotOf(h);
      lastHandle = h;
    }
    cols.seg[j] = lastSlot;
    accounted[lastSlot] += cols.len[j];
  }
  const index = COLUMNS.map((k) => bytesOf(cols[k]));
  const live: [number, number][] = [];
  for (let i = 0; i < names.length; i++) {
    const other = (state.liveBytes.get(src.segments[i]) ?? 0) - accounted[i];
    if (other !== 0) live.push([i, other]);
  }
  const header: CheckpointHeader = {
    format: 1, node, takenAt, segments: names, objects, records: records.count, live: live.length, forgottenUpTo: state.outcomes.forgottenUpTo, endian: os.endianness(),
  };
  const head = Buffer.from(JSON.stringify(header));
  const tail = Buffer.allocUnsafe(live.length * LIVE_ENTRY);
  let q = 0;
  for (const [seg, bytes] of live) {
    q = tail.writeUInt32LE(seg, q);
    q = tail.writeDoubleLE(bytes, q);
  }
  const lead = Buffer.allocUnsafe(MAGIC.length + 4);
  MAGIC.copy(lead, 0);
  lead.writeUInt32LE(head.length, MAGIC.length);
  return { names, body: Buffer.concat([lead, head, ...index, ...recordChunks, tail]), objects, records: records.count };
}

/** The index columns in the order they are written. */
const COLUMNS = ['keys', 'seg', 'off', 'len', 'ver', 'ds'] as const;
const ROW_BYTES: Record<(typeof COLUMNS)[number], number> = { keys: 16, seg: 4, off: 4, len: 4, ver: 8, ds: 2 };

function bytesOf(a: Uint32Array | Float64Array | Uint16Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

/** Copies the index columns out of `buf` into aligned typed arrays (one memcpy each). */
function readColumns(buf: Buffer, at: number, n: number): IndexColumns {
  const out = {} as Record<(typeof COLUMNS)[number], Uint32Array | Float64Array | Uint16Array>;
  let p = at;
  for (const k of COLUMNS) {
    const bytes = n * ROW_BYTES[k];
    const arr = k === 'ver' ? new Float64Array(n) : k === 'ds' ? new Uint16Array(n) : new Uint32Array(k === 'keys' ? n * 4 : n);
    new Uint8Array(arr.buffer).set(buf.subarray(p, p + bytes));
    out[k] = arr;
    p += bytes;
  }
  return out as unknown as IndexColumns;
}

export interface DecodedCheckpoint {
  header: CheckpointHeader;
  buf: Buffer;
  index: IndexColumns;
  recordsAt: number;
  liveAt: number;
}

/** Checks the structure of a checkpoint object (every bound, every frame's checksum) without loading it. */
export function decodeCheckpoint(buf: Buffer, key: string): DecodedCheckpoint {
  const bad = (what: string) => new CheckpointError(key, what);
  if (buf.length < MAGIC.length + 4 || !buf.subarray(0, MAGIC.length).equals(MAGIC)) throw bad('not a checkpoint (magic)');
  const headLen = buf.readUInt32LE(MAGIC.length);
  const indexAt = MAGIC.length + 4 + headLen;
  if (indexAt > buf.length) throw bad('header past the end');
  let header: CheckpointHeader;
  try {
    header = JSON.parse(buf.toString('utf8', MAGIC.length + 4, indexAt)) as CheckpointHeader;
  } catch (e) {
    throw bad(`header is not JSON: ${(e as Error).message}`);
  }
  if (header?.format !== 1 || !Array.isArray(header.segments) || !header.segments.every((s) => typeof s === 'string')
    || ![header.objects, header.records, header.live].every((n) => Number.isSafeInteger(n) && n >= 0) || typeof header.forgottenUpTo !== 'number') {
    throw bad('malformed header');
  }
  if (header.endian !== os.endianness()) throw bad(`written on a ${header.endian} machine, this one is ${os.endianness()}`);
  const nseg = header.segments.length;
  const recordsAt = indexAt + header.objects * INDEX_ENTRY;
  if (recordsAt > buf.length) throw bad('index past the end');
  const index = readColumns(buf, indexAt, header.objects);
  for (let j = 0; j < index.seg.length; j++) if (index.seg[j] >= nseg) throw bad(`index entry ${j} names segment ${index.seg[j]} of ${nseg}`);
  let p = recordsAt;
  for (let i = 0; i < header.records; i++) {
    if (p + PLACE > buf.length) throw bad(`record ${i} past the end`);
    const seg = buf.readUInt32LE(p);
    if (seg !== NONE && seg >= nseg) throw bad(`record ${i} names segment ${seg} of ${nseg}`);
    const check = checkFrame(buf, p + PLACE);
    if (!check.ok) throw bad(`record ${i} at ${p}: ${check.reason}`);
    try {
      decodeFrame(buf, p + PLACE);
    } catch (e) {
      throw bad(`record ${i} at ${p}: ${(e as Error).message}`);
    }
    p += PLACE + check.size;
  }
  const liveAt = p;
  if (liveAt + header.live * LIVE_ENTRY !== buf.length) throw bad(`${buf.length - liveAt} bytes after the records, expected ${header.live * LIVE_ENTRY}`);
  for (let i = 0; i < header.live; i++) if (buf.readUInt32LE(liveAt + i * LIVE_ENTRY) >= nseg) throw bad(`live entry ${i} names a segment out of range`);
  return { header, buf, index, recordsAt, liveAt };
}

/**
 * Loads a decoded checkpoint into an empty state; `handles[i]` is the log's handle of
 * `header.segments[i]`. Records go through the same apply as replay (`recovering`).
 */
export function loadCheckpoint(state: EngineState, d: DecodedCheckpoint, handles: number[]): void {
  const { header, buf } = d;
  if (state.index.size !== 0) throw new Error('invariant: a checkpoint loads into an empty state');
  if (handles.length !== header.segments.length) throw new Error('invariant: one handle per checkpoint segment');
  const live = new Float64Array(handles.length);
  const { seg, len } = d.index;
  for (let j = 0; j < seg.length; j++) live[seg[j]] += len[j];
  state.index.setColumns(d.index, (s) => handles[s]);
  for (let i = 0; i < handles.length; i++) if (live[i] !== 0) state.liveDelta(handles[i], live[i]);
  let p = d.recordsAt;
  for (let i = 0; i < header.records; i++) {
    const seg = buf.readUInt32LE(p);
    const place = seg === NONE ? { segment: handles[0], offset: 0, length: 0 } : { segment: handles[seg], offset: buf.readUInt32LE(p + 4), length: buf.readUInt32LE(p + 8) };
    const size = checkFrame(buf, p + PLACE);
    if (!size.ok) throw new Error('invariant: checked when decoded');
    let record = decodeFrame(buf, p + PLACE);
    // A prepared transaction keeps its records (views into the body): copy, so they do not pin this buffer.
    if (record.type === RecordType.Prepare) record = { ...record, body: Buffer.from(record.body) };
    (KINDS[record.type] as RecordKind<LogRecord>).apply(state, record, place, true);
    p += PLACE + size.size;
  }
  for (let i = 0; i < header.live; i++) {
    const at = d.liveAt + i * LIVE_ENTRY;
    state.liveDelta(handles[buf.readUInt32LE(at)], buf.readDoubleLE(at + 4));
  }
  state.outcomes.forgottenUpTo = Math.max(state.outcomes.forgottenUpTo, header.forgottenUpTo);
}

/**
 * The checkpoint a manifest names, fetched (checked against the manifest's crc32, retried) and
 * decoded, with the names of the segments it covers (a prefix of the manifest's). Throws
 * CheckpointError, ChecksumMismatchError or an object-store error: the caller replays instead.
 */
export async function readCheckpoint(store: ObjectStore, manifest: Manifest, onMismatch?: (key: string) => void): Promise<DecodedCheckpoint> {
  const c = manifest.checkpoint;
  if (!c) throw new Error('invariant: the manifest names no checkpoint');
  if (!checkpointFits(c, manifest.segments)) throw new CheckpointError(c.key, 'its segments are not the manifest\'s');
  const d = decodeCheckpoint(await fetchSegment(store, c, onMismatch), c.key);
  const names = manifest.segments.slice(0, c.segments.length).map((s) => s.name);
  if (d.header.segments.length !== names.length || d.header.segments.some((n, i) => n !== names[i])) {
    throw new CheckpointError(c.key, `it covers ${d.header.segments.join(',')}, the manifest names ${names.join(',')}`);
  }
  return d;
}
