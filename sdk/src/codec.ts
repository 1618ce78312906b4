import { Packr, addExtension, RESERVE_START_SPACE, RESET_BUFFER_MODE } from 'msgpackr';
import { InternalError, LimitExceededError } from './errors.js';
import { DEFAULT_LIMITS } from './limits.js';
import { encodedDepth } from './codec-depth.js';
import { Persistent, fieldsOf } from './model.js';
import { Ref } from './ref.js';

/**
 * Object state codec. State is [format byte][MessagePack (msgpackr, structured clone)] of the
 * object's own fields. Structured clone keeps cycles and shared sub-objects, Map, Set, Date,
 * BigInt, Buffer, typed arrays and undefined. A reference to another persistent object is an
 * extension holding its oid and class name, so loading yields a stub, never a copy.
 * The format byte lets data written today be read by tomorrow's codec.
 *
 * Values may nest at most `maxDepth` levels (Limits.maxDepth) both ways: msgpackr recurses, so
 * deeper ones would overflow the stack, and a node decoding a hostile state must not crash.
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
export function encodeState(obj: Persistent, hooks: EncodeHooks, maxDepth = DEFAULT_LIMITS.maxDepth): Buffer {
  return encodeValue(fieldsOf(obj), hooks, maxDepth);
}

/** Encodes `value`; LimitExceededError (limit `maxDepth`) when it nests deeper than `maxDepth`. */
export function encodeValue(value: unknown, hooks: EncodeHooks, maxDepth = DEFAULT_LIMITS.maxDepth): Buffer {
  const prev = encodeHooks;
  encodeHooks = hooks;
  let packed: Buffer;
  try {
    // One reserved byte for the format, and msgpackr's buffer reused for the next encode (so the
    // result is copied out once; nothing else keeps a slice of that buffer alive).
    packed = packr.pack(value, RESERVE_START_SPACE | 1 | RESET_BUFFER_MODE);
  } catch (e) {
    throw isStackOverflow(e) ? tooDeep(maxDepth, e) : e;
  } finally {
    encodeHooks = prev;
  }
  // Measured on what was written, as decoding will measure it. Every level takes at least one
  // byte, so only a longer encoding can be too deep: most objects skip the scan. An encoding
  // the scan cannot frame packed without overflowing, so it is accepted as it is.
  if (packed.length - 1 > maxDepth && encodedDepth(packed, 1, packed.length, maxDepth) === 'deeper') throw tooDeep(maxDepth);
  const out = Buffer.allocUnsafe(packed.length);
  packed.copy(out);
  out[0] = CODEC_V1;
  return out;
}

export function decodeState(state: Buffer, hooks: DecodeHooks, maxDepth = DEFAULT_LIMITS.maxDepth): Record<string, unknown> {
  return decodeValue(state, hooks, maxDepth) as Record<string, unknown>;
}

/** Decodes a state; LimitExceededError (limit `maxDepth`) when it nests deeper than `maxDepth`. */
export function decodeValue(state: Buffer, hooks: DecodeHooks, maxDepth = DEFAULT_LIMITS.maxDepth): unknown {
  if (state.length === 0) return {};
  if (state[0] !== CODEC_V1) {
    throw new InternalError(`object state has codec format ${state[0]}; this SDK reads format ${CODEC_V1} (upgrade @loam/sdk)`);
  }
  if (state.length - 1 > maxDepth && encodedDepth(state, 1, state.length, maxDepth) === 'deeper') throw tooDeep(maxDepth);
  const prev = decodeHooks;
  decodeHooks = hooks;
  try {
    return packr.unpack(state.subarray(1));
  } catch (e) {
    // Only a state the scan could not frame (not written by this codec) gets here deep enough
    // to overflow msgpackr's recursion; the stack has unwound and msgpackr has reset its source.
    throw isStackOverflow(e) ? tooDeep(maxDepth, e) : e;
  } finally {
    decodeHooks = prev;
  }
}

function isStackOverflow(e: unknown): boolean {
  return e instanceof RangeError && /call stack/i.test(e.message);
}

function tooDeep(maxDepth: number, cause?: unknown): LimitExceededError {
  const err = new LimitExceededError(`value nests deeper than ${maxDepth} levels (limit maxDepth)`, { limit: 'maxDepth' });
  if (cause !== undefined) Object.defineProperty(err, 'cause', { value: cause, enumerable: false });
  return err;
}
