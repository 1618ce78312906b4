import { crc32 } from 'node:zlib';

/**
 * Log record framing. Every record is
 *   [u32 bodyLength][u32 crc32(body)][body]
 * and every body starts with [u8 type][u8 flags]. A batch (one commit) is a run of records whose
 * last one has FLAG_END; recovery applies a batch only when it has read that last record, so a
 * torn write never applies half a commit. All integers little-endian.
 */
export const FRAME_HEADER = 8;
export const FLAG_END = 1;
/** On a Put: 16 bytes after the state hold the oid this object is a version of. */
export const FLAG_ORIGIN = 2;
/** A frame larger than this is garbage (a torn or corrupted length), never a record. */
export const MAX_FRAME_BODY = 256 * 1024 * 1024;

// A plain object, not a const enum: const enums vanish under per-file transpilers.
export const RecordType = { Put: 1, Delete: 2, AliasSet: 3, AliasDelete: 4, Dataset: 5, Forward: 6, Directory: 7, Prepare: 8, Decided: 9, Replicas: 10, ReplicaOf: 11, Outcome: 13, Installing: 14 } as const;
export type RecordType = (typeof RecordType)[keyof typeof RecordType];

export interface PutRecord {
  type: typeof RecordType.Put;
  dataset: number;
  oid: Buffer; // 16 bytes
  version: number;
  className: string;
  state: Buffer;
  /** The object this one is a version of (newVersion), 16 bytes. */
  origin?: Buffer;
}
export interface DeleteRecord {
  type: typeof RecordType.Delete;
  dataset: number;
  oid: Buffer;
  version: number;
}
export interface AliasSetRecord {
  type: typeof RecordType.AliasSet;
  dataset: number;
  oid: Buffer;
  alias: string;
}
export interface AliasDeleteRecord {
  type: typeof RecordType.AliasDelete;
  dataset: number;
  alias: string;
}
export interface DatasetRecord {
  type: typeof RecordType.Dataset;
  dataset: number;
  name: string;
}
/** This node moved the object to `node` (0: the pointer is no longer needed). */
export interface ForwardRecord {
  type: typeof RecordType.Forward;
  dataset: number;
  oid: Buffer;
  node: number;
}
/** Home-directory entry: where an object homed here lives (master 0: back to the default). */
export interface DirectoryRecord {
  type: typeof RecordType.Directory;
  dataset: number;
  oid: Buffer;
  master: number;
  replicas: number[];
}
/**
 * A prepared part of a distributed transaction: the records to apply if it commits (as frames),
 * and every oid it locks until the decision.
 */
export interface PrepareRecord {
  type: typeof RecordType.Prepare;
  dataset: number;
  txid: Buffer; // 16 bytes
  coordinator: number;
  locked: Buffer[]; // 16-byte oids
  body: Buffer; // frames of the records to apply (encodeBatch output)
}
/** The decision reached this node: with `commit`, the same batch carries the applied records. */
export interface DecidedRecord {
  type: typeof RecordType.Decided;
  dataset: number;
  txid: Buffer;
  commit: boolean;
}
/** On a master: the nodes that hold replicas of an object (empty: none). */
export interface ReplicasRecord {
  type: typeof RecordType.Replicas;
  dataset: number;
  oid: Buffer;
  nodes: number[];
}
/** On a replica node: this copy is a replica of the object mastered by `master` (0: not any more). */
export interface ReplicaOfRecord {
  type: typeof RecordType.ReplicaOf;
  dataset: number;
  oid: Buffer;
  master: number;
}
/** A copy installed by a move from `source`, not a master copy until activated (0: activated or dropped). */
export interface InstallingRecord {
  type: typeof RecordType.Installing;
  dataset: number;
  oid: Buffer;
  source: number;
}
/**
 * The outcome of a commit (by its client-chosen commit id) or of a finished two-phase part (by
 * its txid), written in the same batch as what it describes, so remembering it costs no extra
 * fsync: a retry of the same id is answered with it instead of being applied again.
 */
export interface OutcomeRecord {
  type: typeof RecordType.Outcome;
  dataset: number;
  id: Buffer; // 16 bytes
  /** When it was decided (ms since the epoch): outcomes are kept for a while, then forgotten. */
  at: number;
  ok: boolean;
  versions: number[];
}
export type LogRecord = PutRecord | DeleteRecord | AliasSetRecord | AliasDeleteRecord | DatasetRecord | ForwardRecord | DirectoryRecord
  | PrepareRecord | DecidedRecord | ReplicasRecord | ReplicaOfRecord | OutcomeRecord | InstallingRecord;

function bodySize(r: LogRecord): number {
  switch (r.type) {
    case RecordType.Put:
      return 2 + 2 + 16 + 8 + 2 + Buffer.byteLength(r.className) + 4 + r.state.length + (r.origin ? 16 : 0);
    case RecordType.Delete:
      return 2 + 2 + 16 + 8;
    case RecordType.AliasSet:
      return 2 + 2 + 16 + 2 + Buffer.byteLength(r.alias);
    case RecordType.AliasDelete:
      return 2 + 2 + 2 + Buffer.byteLength(r.alias);
    case RecordType.Dataset:
      return 2 + 2 + 2 + Buffer.byteLength(r.name);
    case RecordType.Forward:
      return 2 + 2 + 16 + 2;
    case RecordType.Directory:
      return 2 + 2 + 16 + 2 + 2 + 2 * r.replicas.length;
    case RecordType.Prepare:
      return 2 + 2 + 16 + 2 + 4 + 16 * r.locked.length + 4 + r.body.length;
    case RecordType.Decided:
      return 2 + 2 + 16 + 1;
    case RecordType.Replicas:
      return 2 + 2 + 16 + 2 + 2 * r.nodes.length;
    case RecordType.ReplicaOf:
      return 2 + 2 + 16 + 2;
    case RecordType.Outcome:
      return 2 + 2 + 16 + 8 + 1 + 4 + 8 * r.versions.length;
    case RecordType.Installing:
      return 2 + 2 + 16 + 2;
  }
}

export function frameSize(r: LogRecord): number {
  return FRAME_HEADER + bodySize(r);
}

/** Writes `r` framed at `buf[pos]`; returns the position after it. */
export function writeFrame(buf: Buffer, pos: number, r: LogRecord, flags: number): number {
  const start = pos;
  let p = pos + FRAME_HEADER;
  p = buf.writeUInt8(r.type, p);
  p = buf.writeUInt8(flags | (r.type === RecordType.Put && r.origin ? FLAG_ORIGIN : 0), p);
  p = buf.writeUInt16LE(r.dataset, p);
  switch (r.type) {
    case RecordType.Put:
      p += r.oid.copy(buf, p);
      p = buf.writeDoubleLE(r.version, p);
      p = buf.writeUInt16LE(Buffer.byteLength(r.className), p);
      p += buf.write(r.className, p);
      p = buf.writeUInt32LE(r.state.length, p);
      p += r.state.copy(buf, p);
      if (r.origin) p += r.origin.copy(buf, p);
      break;
    case RecordType.Delete:
      p += r.oid.copy(buf, p);
      p = buf.writeDoubleLE(r.version, p);
      break;
    case RecordType.AliasSet:
      p += r.oid.copy(buf, p);
      p = buf.writeUInt16LE(Buffer.byteLength(r.alias), p);
      p += buf.write(r.alias, p);
      break;
    case RecordType.AliasDelete:
      p = buf.writeUInt16LE(Buffer.byteLength(r.alias), p);
      p += buf.write(r.alias, p);
      break;
    case RecordType.Dataset:
      p = buf.writeUInt16LE(Buffer.byteLength(r.name), p);
      p += buf.write(r.name, p);
      break;
    case RecordType.Forward:
      p += r.oid.copy(buf, p);
      p = buf.writeUInt16LE(r.node, p);
      break;
    case RecordType.Directory:
      p += r.oid.copy(buf, p);
      p = buf.writeUInt16LE(r.master, p);
      p = buf.writeUInt16LE(r.replicas.length, p);
      for (const n of r.replicas) p = buf.writeUInt16LE(n, p);
      break;
    case RecordType.Prepare:
      p += r.txid.copy(buf, p);
      p = buf.writeUInt16LE(r.coordinator, p);
      p = buf.writeUInt32LE(r.locked.length, p);
      for (const o of r.locked) p += o.copy(buf, p);
      p = buf.writeUInt32LE(r.body.length, p);
      p += r.body.copy(buf, p);
      break;
    case RecordType.Decided:
      p += r.txid.copy(buf, p);
      p = buf.writeUInt8(r.commit ? 1 : 0, p);
      break;
    case RecordType.Replicas:
      p += r.oid.copy(buf, p);
      p = buf.writeUInt16LE(r.nodes.length, p);
      for (const n of r.nodes) p = buf.writeUInt16LE(n, p);
      break;
    case RecordType.ReplicaOf:
      p += r.oid.copy(buf, p);
      p = buf.writeUInt16LE(r.master, p);
      break;
    case RecordType.Installing:
      p += r.oid.copy(buf, p);
      p = buf.writeUInt16LE(r.source, p);
      break;
    case RecordType.Outcome:
      p += r.id.copy(buf, p);
      p = buf.writeDoubleLE(r.at, p);
      p = buf.writeUInt8(r.ok ? 1 : 0, p);
      p = buf.writeUInt32LE(r.versions.length, p);
      for (const v of r.versions) p = buf.writeDoubleLE(v, p);
      break;
  }
  const bodyLen = p - start - FRAME_HEADER;
  buf.writeUInt32LE(bodyLen, start);
  buf.writeUInt32LE(crc32(buf.subarray(start + FRAME_HEADER, p)), start + 4);
  return p;
}

/** Encodes a batch as contiguous frames, the last one flagged END. Returns the buffer and frame offsets. */
export function encodeBatch(records: LogRecord[]): { buf: Buffer; offsets: number[]; sizes: number[] } {
  if (records.length === 0) throw new Error('invariant: empty batch');
  const sizes = records.map(frameSize);
  const buf = Buffer.allocUnsafe(sizes.reduce((a, b) => a + b, 0));
  const offsets: number[] = new Array(records.length);
  let pos = 0;
  for (let i = 0; i < records.length; i++) {
    offsets[i] = pos;
    pos = writeFrame(buf, pos, records[i], i === records.length - 1 ? FLAG_END : 0);
  }
  if (pos !== buf.length) throw new Error(`invariant: batch encoded to ${pos} of ${buf.length} bytes`);
  return { buf, offsets, sizes };
}

export type FrameCheck =
  | { ok: true; size: number }
  | { ok: false; reason: 'short-header' | 'short-body' | 'bad-length' | 'bad-checksum' };

/** Checks the frame at `buf[pos]` without decoding it. */
export function checkFrame(buf: Buffer, pos: number): FrameCheck {
  if (pos + FRAME_HEADER > buf.length) return { ok: false, reason: 'short-header' };
  const len = buf.readUInt32LE(pos);
  if (len < 4 || len > MAX_FRAME_BODY) return { ok: false, reason: 'bad-length' };
  if (pos + FRAME_HEADER + len > buf.length) return { ok: false, reason: 'short-body' };
  const sum = buf.readUInt32LE(pos + 4);
  if (crc32(buf.subarray(pos + FRAME_HEADER, pos + FRAME_HEADER + len)) !== sum) return { ok: false, reason: 'bad-checksum' };
  return { ok: true, size: FRAME_HEADER + len };
}

/**
 * The group marker: the first frame of every group write (the batches that share one write and
 * one sync). It is not a record and applies nothing; recovery counts the markers after a damaged
 * frame to tell a torn tail (damage only within the groups that may have been in flight at a
 * crash) from corruption (damage followed by later, complete groups). Every marker is the same
 * 16 bytes, so a scan for them is one native indexOf.
 */
export const GROUP_MARKER_TYPE = 12;
export const GROUP_MARKER: Buffer = (() => {
  const b = Buffer.alloc(FRAME_HEADER + 8);
  b.writeUInt32LE(8, 0);
  b.writeUInt8(GROUP_MARKER_TYPE, FRAME_HEADER);
  b.writeUInt8(FLAG_END, FRAME_HEADER + 1);
  b.writeUInt16LE(0, FRAME_HEADER + 2);
  b.write('LOAM', FRAME_HEADER + 4, 'latin1');
  b.writeUInt32LE(crc32(b.subarray(FRAME_HEADER)), 4);
  return b;
})();

export function isGroupMarker(buf: Buffer, pos: number): boolean {
  return pos + GROUP_MARKER.length <= buf.length && buf.compare(GROUP_MARKER, 0, GROUP_MARKER.length, pos, pos + GROUP_MARKER.length) === 0;
}

/** How many group markers start after `from` (exclusive). */
export function countGroupMarkers(buf: Buffer, from: number): number {
  let n = 0;
  for (let at = buf.indexOf(GROUP_MARKER, from + 1); at >= 0; at = buf.indexOf(GROUP_MARKER, at + 1)) n++;
  return n;
}

export function frameFlags(buf: Buffer, pos: number): number {
  return buf.readUInt8(pos + FRAME_HEADER + 1);
}

export function frameType(buf: Buffer, pos: number): RecordType {
  return buf.readUInt8(pos + FRAME_HEADER) as RecordType;
}

/** Decodes a frame already checked by checkFrame. Buffers in the result are views into `buf`. */
export function decodeFrame(buf: Buffer, pos: number): LogRecord {
  let p = pos + FRAME_HEADER;
  const type = buf.readUInt8(p) as RecordType;
  const flags = buf.readUInt8(p + 1);
  p += 2;
  const dataset = buf.readUInt16LE(p);
  p += 2;
  switch (type) {
    case RecordType.Put: {
      const oid = buf.subarray(p, p + 16);
      p += 16;
      const version = buf.readDoubleLE(p);
      p += 8;
      const cl = buf.readUInt16LE(p);
      p += 2;
      const className = buf.toString('utf8', p, p + cl);
      p += cl;
      const sl = buf.readUInt32LE(p);
      p += 4;
      const state = buf.subarray(p, p + sl);
      const origin = flags & FLAG_ORIGIN ? buf.subarray(p + sl, p + sl + 16) : undefined;
      return { type, dataset, oid, version, className, state, ...(origin ? { origin } : {}) };
    }
    case RecordType.Delete:
      return { type, dataset, oid: buf.subarray(p, p + 16), version: buf.readDoubleLE(p + 16) };
    case RecordType.AliasSet: {
      const oid = buf.subarray(p, p + 16);
      const al = buf.readUInt16LE(p + 16);
      return { type, dataset, oid, alias: buf.toString('utf8', p + 18, p + 18 + al) };
    }
    case RecordType.AliasDelete: {
      const al = buf.readUInt16LE(p);
      return { type, dataset, alias: buf.toString('utf8', p + 2, p + 2 + al) };
    }
    case RecordType.Dataset: {
      const nl = buf.readUInt16LE(p);
      return { type, dataset, name: buf.toString('utf8', p + 2, p + 2 + nl) };
    }
    case RecordType.Forward:
      return { type, dataset, oid: buf.subarray(p, p + 16), node: buf.readUInt16LE(p + 16) };
    case RecordType.Directory: {
      const oid = buf.subarray(p, p + 16);
      const master = buf.readUInt16LE(p + 16);
      const n = buf.readUInt16LE(p + 18);
      const replicas: number[] = [];
      for (let i = 0; i < n; i++) replicas.push(buf.readUInt16LE(p + 20 + 2 * i));
      return { type, dataset, oid, master, replicas };
    }
    case RecordType.Prepare: {
      const txid = buf.subarray(p, p + 16);
      const coordinator = buf.readUInt16LE(p + 16);
      const n = buf.readUInt32LE(p + 18);
      let q = p + 22;
      const locked: Buffer[] = [];
      for (let i = 0; i < n; i++, q += 16) locked.push(buf.subarray(q, q + 16));
      const bl = buf.readUInt32LE(q);
      return { type, dataset, txid, coordinator, locked, body: buf.subarray(q + 4, q + 4 + bl) };
    }
    case RecordType.Decided:
      return { type, dataset, txid: buf.subarray(p, p + 16), commit: buf.readUInt8(p + 16) === 1 };
    case RecordType.Replicas: {
      const n = buf.readUInt16LE(p + 16);
      const nodes: number[] = [];
      for (let i = 0; i < n; i++) nodes.push(buf.readUInt16LE(p + 18 + 2 * i));
      return { type, dataset, oid: buf.subarray(p, p + 16), nodes };
    }
    case RecordType.ReplicaOf:
      return { type, dataset, oid: buf.subarray(p, p + 16), master: buf.readUInt16LE(p + 16) };
    case RecordType.Installing:
      return { type, dataset, oid: buf.subarray(p, p + 16), source: buf.readUInt16LE(p + 16) };
    case RecordType.Outcome: {
      const n = buf.readUInt32LE(p + 25);
      const versions: number[] = [];
      for (let i = 0; i < n; i++) versions.push(buf.readDoubleLE(p + 29 + 8 * i));
      return { type, dataset, id: buf.subarray(p, p + 16), at: buf.readDoubleLE(p + 16), ok: buf.readUInt8(p + 24) === 1, versions };
    }
    default:
      throw new Error(`unknown record type ${type} at offset ${pos}`);
  }
}

/** Marks a frame as the end of its batch (keeping its other flags) and fixes its checksum (compaction copies). */
export function setEndFlag(frame: Buffer): void {
  frame.writeUInt8(frame.readUInt8(FRAME_HEADER + 1) | FLAG_END, FRAME_HEADER + 1);
  frame.writeUInt32LE(crc32(frame.subarray(FRAME_HEADER)), 4);
}

/** Decodes a run of frames (a Prepare record's body) back into records. */
export function decodeFrames(buf: Buffer): LogRecord[] {
  const out: LogRecord[] = [];
  for (let pos = 0; pos < buf.length;) {
    const c = checkFrame(buf, pos);
    if (!c.ok) throw new Error(`damaged frame inside a prepared transaction at ${pos} (${c.reason})`);
    out.push(decodeFrame(buf, pos));
    pos += c.size;
  }
  return out;
}
