/**
 * How deeply an encoded state nests, read from its bytes without decoding them. msgpackr (and
 * so the codec) recurses once per level, both ways: measuring the bytes lets the codec refuse a
 * too-deep value before decoding it, and measure exactly what it wrote after encoding.
 *
 * A level is a container: array, map, record (a plain or class object), and what the codec
 * writes as one (a Set, Error or RegExp is an extension marker followed by an array); a shared
 * or cyclic sub-object is written once, then pointed to, so it counts once. Knows the subset
 * of msgpackr's format this codec writes (records defined inline, structured-clone markers);
 * anything else is "unframed" and left to the decoder, which is guarded on its own.
 */

/** Extension types whose marker is followed by the value it wraps (Error, id marker, Set, RegExp). */
const WRAPS_NEXT = new Set([0x65, 0x69, 0x73, 0x78]);
/** Extension types that hold only their own data (undefined, BigInt, pointer, typed arrays, date, Loam refs). */
const DATA_ONLY = new Set([0x00, 0x42, 0x70, 0x74, 0xff, 0x4c, 0x4d]);
const EXT_RECORD = 0x72;

export type DepthVerdict = 'within' | 'deeper' | 'unframed';

/**
 * Whether the MessagePack value in `b[pos..end)` nests deeper than `maxDepth` levels (the
 * outermost container is level 1). Iterative: any depth costs no stack.
 */
export function encodedDepth(b: Uint8Array, pos: number, end: number, maxDepth: number): DepthVerdict {
  // Values still to read at each open level, top at `sp`; level 0 holds the one top-level value.
  // (Float64: a map32 header announces up to 2^33 values.)
  const left = new Float64Array(Math.min(maxDepth, end - pos) + 1);
  let sp = 0;
  left[0] = 1;
  // Records this value defined, by id (0x40-0x7f): how many values each one holds.
  let records: Int32Array | undefined;
  for (;;) {
    if (pos >= end) return 'unframed';
    const t = b[pos];
    let items = -1; // a container opening here holds this many values
    if (t < 0x80) {
      // fixint, or (0x40-0x7f) a record when this value defined one with that id
      if (t >= 0x40 && records !== undefined && records[t & 0x3f] >= 0) items = records[t & 0x3f];
      pos++;
    } else if (t >= 0xa0 && t < 0xc0) {
      pos += 1 + (t - 0xa0);
    } else if (t < 0x90) {
      items = (t - 0x80) * 2;
      pos++;
    } else if (t < 0xa0) {
      items = t - 0x90;
      pos++;
    } else if (t >= 0xe0) {
      pos++;
    } else {
      let size = 1; // header bytes
      let length = 0; // data bytes after the header
      let ext = -1;
      switch (t) {
        case 0xc0: case 0xc1: case 0xc2: case 0xc3: break;
        case 0xcc: case 0xd0: size = 2; break;
        case 0xcd: case 0xd1: size = 3; break;
        case 0xca: case 0xce: case 0xd2: size = 5; break;
        case 0xcb: case 0xcf: case 0xd3: size = 9; break;
        case 0xc4: case 0xd9: size = 2; if (pos + 2 > end) return 'unframed'; length = b[pos + 1]; break;
        case 0xc5: case 0xda: size = 3; if (pos + 3 > end) return 'unframed'; length = u16(b, pos + 1); break;
        case 0xc6: case 0xdb: size = 5; if (pos + 5 > end) return 'unframed'; length = u32(b, pos + 1); break;
        case 0xdc: size = 3; if (pos + 3 > end) return 'unframed'; items = u16(b, pos + 1); break;
        case 0xdd: size = 5; if (pos + 5 > end) return 'unframed'; items = u32(b, pos + 1); break;
        case 0xde: size = 3; if (pos + 3 > end) return 'unframed'; items = u16(b, pos + 1) * 2; break;
        case 0xdf: size = 5; if (pos + 5 > end) return 'unframed'; items = u32(b, pos + 1) * 2; break;
        case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
          size = 2; length = 1 << (t - 0xd4); break;
        case 0xc7: size = 3; if (pos + 3 > end) return 'unframed'; length = b[pos + 1]; break;
        case 0xc8: size = 4; if (pos + 4 > end) return 'unframed'; length = u16(b, pos + 1); break;
        case 0xc9: size = 6; if (pos + 6 > end) return 'unframed'; length = u32(b, pos + 1); break;
      }
      if ((t >= 0xd4 && t <= 0xd8) || (t >= 0xc7 && t <= 0xc9)) {
        if (pos + size > end) return 'unframed';
        ext = b[pos + size - 1];
      }
      if (ext === EXT_RECORD) {
        // A record definition (fixext 1: its id), then its keys as an array of strings, then
        // its values. Two-byte ids (fixext 2) are not written by this codec.
        if (t !== 0xd4 || pos + 3 > end) return 'unframed';
        const id = b[pos + 2] & 0x3f;
        const keys = readKeys(b, pos + 3, end);
        if (!keys) return 'unframed';
        pos = keys.end;
        (records ??= new Int32Array(64).fill(-1))[id] = keys.count;
        items = keys.count;
      } else {
        pos += size + length;
        if (ext >= 0) {
          if (WRAPS_NEXT.has(ext)) continue; // the value after the marker fills this slot
          if (!DATA_ONLY.has(ext)) return 'unframed';
        }
      }
    }
    if (items >= 0) {
      if (sp >= maxDepth) return 'deeper';
      if (items > 0) {
        left[sp]--;
        left[++sp] = items;
        continue;
      }
    }
    if (--left[sp] !== 0) continue;
    while (left[sp] === 0) {
      if (sp === 0) return pos <= end ? 'within' : 'unframed';
      sp--;
    }
  }
}

/** A record definition's keys: an array header and that many strings. */
function readKeys(b: Uint8Array, pos: number, end: number): { count: number; end: number } | undefined {
  if (pos >= end) return undefined;
  const t = b[pos];
  let count: number;
  if (t >= 0x90 && t < 0xa0) {
    count = t - 0x90;
    pos += 1;
  } else if (t === 0xdc && pos + 3 <= end) {
    count = u16(b, pos + 1);
    pos += 3;
  } else if (t === 0xdd && pos + 5 <= end) {
    count = u32(b, pos + 1);
    pos += 5;
  } else {
    return undefined;
  }
  for (let i = 0; i < count; i++) {
    if (pos >= end) return undefined;
    const s = b[pos];
    if (s >= 0xa0 && s < 0xc0) pos += 1 + (s - 0xa0);
    else if (s === 0xd9 && pos + 2 <= end) pos += 2 + b[pos + 1];
    else if (s === 0xda && pos + 3 <= end) pos += 3 + u16(b, pos + 1);
    else if (s === 0xdb && pos + 5 <= end) pos += 5 + u32(b, pos + 1);
    else return undefined;
  }
  return pos <= end ? { count, end: pos } : undefined;
}

function u16(b: Uint8Array, p: number): number {
  return (b[p] << 8) | b[p + 1];
}
function u32(b: Uint8Array, p: number): number {
  return b[p] * 0x1000000 + ((b[p + 1] << 16) | (b[p + 2] << 8) | b[p + 3]);
}
