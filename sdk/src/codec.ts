import { Packr, addExtension, RESERVE_START_SPACE, RESET_BUFFER_MODE } from 'msgpackr';
import { InternalError } from './errors.js';
import { Persistent, fieldsOf } from './model.js';
import { Ref } from './ref.js';

/**
 * Object state codec. State is [format byte][MessagePack (msgpackr, structured clone)] of the
 * object's own fields. Structured clone keeps cycles and shared sub-objects, Map, Set, Date,
 * BigInt, Buffer, typed arrays and undefined. A reference to another persistent object is an
 * extension holding its oid and class name, so loading yields a stub, never a copy.
 * The format byte lets data written today be read by tomorrow's codec.
 */
export const CODEC_V1 = 1;
const EXT_PERSISTENT_REF = 0x4c; // 'L'
const EXT_LOAM_REF = 0x4d; // 'M'

export interface EncodeHooks {
  /** The oid and class of a referenced object, assigning an oid (and queueing a create) if it has none. */
  refFor(obj: Persistent): { oid: string; className: string };
}
export interface DecodeHooks {
  /** The instance for a referenced oid: the identity map's, or a new stub. */
  stubFor(oid: string, className: string): Persistent;
}

// msgpackr extensions are process-wide and packing is synchronous, so the hooks of the one
// encode or decode under way are kept here for the extension callbacks.
let encodeHooks: EncodeHooks | undefined;
let decodeHooks: DecodeHooks | undefined;

addExtension({
  Class: Persistent,
  type: EXT_PERSISTENT_REF,
  pack(obj: Persistent): Buffer {
    if (!encodeHooks) throw new InternalError('a persistent object was encoded outside of a Loam client');
    const { oid, className } = encodeHooks.refFor(obj);
    const buf = Buffer.allocUnsafe(16 + Buffer.byteLength(className));
    buf.write(oid, 0, 'hex');
    buf.write(className, 16, 'utf8');
    return buf;
  },
  unpack(buf: Uint8Array): Persistent {
    const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
    if (!decodeHooks) throw new InternalError('a persistent reference was decoded outside of a Loam client');
    return decodeHooks.stubFor(b.toString('hex', 0, 16), b.toString('utf8', 16));
  },
});

addExtension({
  Class: Ref,
  type: EXT_LOAM_REF,
  pack: (ref: Ref) => Buffer.from(ref.toString(), 'utf8'),
  unpack: (buf: Uint8Array) => Ref.parse(Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength).toString('utf8')),
});

const packr = new Packr({
  structuredClone: true,
  useRecords: true,
  useBigIntExtension: true,
  copyBuffers: true,
});

/** Encodes the fields of `obj` (not the object as a reference). */
export function encodeState(obj: Persistent, hooks: EncodeHooks): Buffer {
  return encodeValue(fieldsOf(obj), hooks);
}

export function encodeValue(value: unknown, hooks: EncodeHooks): Buffer {
  const prev = encodeHooks;
  encodeHooks = hooks;
  try {
    // One reserved byte for the format, and msgpackr's buffer reused for the next encode (so the
    // result is copied out once; nothing else keeps a slice of that buffer alive).
    const packed = packr.pack(value, RESERVE_START_SPACE | 1 | RESET_BUFFER_MODE);
    const out = Buffer.allocUnsafe(packed.length);
    packed.copy(out);
    out[0] = CODEC_V1;
    return out;
  } finally {
    encodeHooks = prev;
  }
}

export function decodeState(state: Buffer, hooks: DecodeHooks): Record<string, unknown> {
  return decodeValue(state, hooks) as Record<string, unknown>;
}

export function decodeValue(state: Buffer, hooks: DecodeHooks): unknown {
  if (state.length === 0) return {};
  if (state[0] !== CODEC_V1) {
    throw new InternalError(`object state has codec format ${state[0]}; this SDK reads format ${CODEC_V1} (upgrade @loam/sdk)`);
  }
  const prev = decodeHooks;
  decodeHooks = hooks;
  try {
    return packr.unpack(state.subarray(1));
  } finally {
    decodeHooks = prev;
  }
}
