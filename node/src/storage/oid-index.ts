/**
 * The in-memory index: oid -> location of the object's newest record. An open-addressing hash
 * table over typed arrays (linear probing, backward-shift deletion, no tombstones), because a
 * JS Map of string keys costs well over 100 bytes per entry and this must stay near 40 bytes a
 * slot for millions of objects. A slot whose segment is 0 is empty (segment ids start at 1).
 */
export interface Location {
  segment: number;
  offset: number;
  length: number;
  version: number;
  dataset: number;
}

const MIN_CAPACITY = 1024;
const MAX_LOAD = 0.75;
/** Typed arrays are indexed by int32 and each key takes 4 words. */
const MAX_CAPACITY = 2 ** 28;

export class OidIndex {
  private cap = 0;
  private mask = 0;
  private count = 0;
  private keys!: Uint32Array; // 4 words per slot
  private seg!: Uint32Array;
  private off!: Uint32Array;
  private len!: Uint32Array;
  private ver!: Float64Array;
  private ds!: Uint16Array;

  constructor(initialCapacity = MIN_CAPACITY) {
    let cap = MIN_CAPACITY;
    while (cap < initialCapacity) cap *= 2;
    this.alloc(cap);
  }

  get size(): number {
    return this.count;
  }

  /** Bytes held by the table's arrays. */
  get memoryBytes(): number {
    return this.keys.byteLength + this.seg.byteLength + this.off.byteLength + this.len.byteLength + this.ver.byteLength + this.ds.byteLength;
  }

  /** Grows once to hold `count` entries (a checkpoint load knows its count: no rehash per doubling). */
  reserve(count: number): void {
    let cap = this.cap;
    while (count > cap * MAX_LOAD) cap *= 2;
    if (cap === this.cap) return;
    const old = { keys: this.keys, seg: this.seg, off: this.off, len: this.len, ver: this.ver, ds: this.ds, cap: this.cap };
    this.alloc(cap);
    this.rehash(old);
  }

  private alloc(cap: number): void {
    if (cap > MAX_CAPACITY) throw new Error(`oid index is full: ${this.count} objects (limit ${MAX_CAPACITY * MAX_LOAD})`);
    this.cap = cap;
    this.mask = cap - 1;
    this.keys = new Uint32Array(cap * 4);
    this.seg = new Uint32Array(cap);
    this.off = new Uint32Array(cap);
    this.len = new Uint32Array(cap);
    this.ver = new Float64Array(cap);
    this.ds = new Uint16Array(cap);
  }

  private static hash(a: number, b: number, c: number, d: number): number {
    // The oid's last 64 bits are random; mixing all four words still guards against weak writers.
    let h = Math.imul(a ^ 0x9e3779b9, 0x85ebca6b);
    h = Math.imul(h ^ b ^ (h >>> 13), 0xc2b2ae35);
    h = Math.imul(h ^ c ^ (h >>> 16), 0x85ebca6b);
    h = Math.imul(h ^ d ^ (h >>> 13), 0xc2b2ae35);
    return (h ^ (h >>> 16)) >>> 0;
  }

  private find(a: number, b: number, c: number, d: number): number {
    let i = OidIndex.hash(a, b, c, d) & this.mask;
    for (;;) {
      if (this.seg[i] === 0) return -1 - i; // empty slot: not present, insert here
      const k = i * 4;
      if (this.keys[k] === a && this.keys[k + 1] === b && this.keys[k + 2] === c && this.keys[k + 3] === d) return i;
      i = (i + 1) & this.mask;
    }
  }

  get(w: OidWords): Location | undefined {
    const i = this.find(w[0], w[1], w[2], w[3]);
    if (i < 0) return undefined;
    return { segment: this.seg[i], offset: this.off[i], length: this.len[i], version: this.ver[i], dataset: this.ds[i] };
  }

  /** Version of the object, or 0 when absent (cheaper than get on the validation path). */
  version(w: OidWords): number {
    const i = this.find(w[0], w[1], w[2], w[3]);
    return i < 0 ? 0 : this.ver[i];
  }

  /** Inserts or replaces; returns the previous location's segment and length (for live-byte accounting). */
  set(w: OidWords, loc: Location): { segment: number; length: number } | undefined {
    if (loc.segment === 0) throw new Error('invariant: segment 0 is the empty marker');
    let i = this.find(w[0], w[1], w[2], w[3]);
    let prev: { segment: number; length: number } | undefined;
    if (i >= 0) {
      prev = { segment: this.seg[i], length: this.len[i] };
    } else {
      if ((this.count + 1) > this.cap * MAX_LOAD) {
        this.grow();
        i = this.find(w[0], w[1], w[2], w[3]);
      }
      i = -1 - i;
      const k = i * 4;
      this.keys[k] = w[0];
      this.keys[k + 1] = w[1];
      this.keys[k + 2] = w[2];
      this.keys[k + 3] = w[3];
      this.count++;
    }
    this.seg[i] = loc.segment;
    this.off[i] = loc.offset;
    this.len[i] = loc.length;
    this.ver[i] = loc.version;
    this.ds[i] = loc.dataset;
    return prev;
  }

  /** Removes the oid; returns its last location, if it was present. */
  delete(w: OidWords): Location | undefined {
    let i = this.find(w[0], w[1], w[2], w[3]);
    if (i < 0) return undefined;
    const removed = { segment: this.seg[i], offset: this.off[i], length: this.len[i], version: this.ver[i], dataset: this.ds[i] };
    // Backward-shift deletion keeps every probe chain unbroken without tombstones.
    let j = i;
    for (;;) {
      j = (j + 1) & this.mask;
      if (this.seg[j] === 0) break;
      const k = j * 4;
      const home = OidIndex.hash(this.keys[k], this.keys[k + 1], this.keys[k + 2], this.keys[k + 3]) & this.mask;
      // Move j into the hole at i if its home is not cyclically within (i, j].
      const between = i <= j ? home > i && home <= j : home > i || home <= j;
      if (!between) {
        this.copySlot(j, i);
        i = j;
      }
    }
    this.seg[i] = 0;
    this.count--;
    return removed;
  }

  private copySlot(from: number, to: number): void {
    this.keys.copyWithin(to * 4, from * 4, from * 4 + 4);
    this.seg[to] = this.seg[from];
    this.off[to] = this.off[from];
    this.len[to] = this.len[from];
    this.ver[to] = this.ver[from];
    this.ds[to] = this.ds[from];
  }

  private grow(): void {
    const old = { keys: this.keys, seg: this.seg, off: this.off, len: this.len, ver: this.ver, ds: this.ds, cap: this.cap };
    this.alloc(this.cap * 2);
    this.rehash(old);
  }

  private rehash({ keys, seg, off, len, ver, ds, cap }: { keys: Uint32Array; seg: Uint32Array; off: Uint32Array; len: Uint32Array; ver: Float64Array; ds: Uint16Array; cap: number }): void {
    for (let i = 0; i < cap; i++) {
      if (seg[i] === 0) continue;
      const k = i * 4;
      const j = -1 - this.find(keys[k], keys[k + 1], keys[k + 2], keys[k + 3]);
      this.keys[j * 4] = keys[k];
      this.keys[j * 4 + 1] = keys[k + 1];
      this.keys[j * 4 + 2] = keys[k + 2];
      this.keys[j * 4 + 3] = keys[k + 3];
      this.seg[j] = seg[i];
      this.off[j] = off[i];
      this.len[j] = len[i];
      this.ver[j] = ver[i];
      this.ds[j] = ds[i];
    }
  }

  /**
   * Every entry as columns of `size` rows (order unspecified): the index checkpoint takes this in
   * one synchronous step, so it is a tight loop over the typed arrays (tens of ms a million).
   */
  columns(): IndexColumns {
    const n = this.count;
    const out: IndexColumns = { keys: new Uint32Array(n * 4), seg: new Uint32Array(n), off: new Uint32Array(n), len: new Uint32Array(n), ver: new Float64Array(n), ds: new Uint16Array(n) };
    const { keys, seg, off, len, ver, ds } = this;
    let j = 0;
    for (let i = 0; i < this.cap; i++) {
      if (seg[i] === 0) continue;
      const k = i * 4;
      const o = j * 4;
      out.keys[o] = keys[k];
      out.keys[o + 1] = keys[k + 1];
      out.keys[o + 2] = keys[k + 2];
      out.keys[o + 3] = keys[k + 3];
      out.seg[j] = seg[i];
      out.off[j] = off[i];
      out.len[j] = len[i];
      out.ver[j] = ver[i];
      out.ds[j] = ds[i];
      j++;
    }
    return out;
  }

  /** Inserts rows of `columns` (a checkpoint load), with `segment` mapping their segment column. */
  setColumns(c: IndexColumns, segment: (s: number) => number): void {
    this.reserve(this.count + c.seg.length);
    for (let j = 0; j < c.seg.length; j++) {
      const k = j * 4;
      this.set([c.keys[k], c.keys[k + 1], c.keys[k + 2], c.keys[k + 3]], { segment: segment(c.seg[j]), offset: c.off[j], length: c.len[j], version: c.ver[j], dataset: c.ds[j] });
    }
  }

  /** Visits every entry (order unspecified). */
  forEach(fn: (w: OidWords, loc: Location) => void): void {
    for (let i = 0; i < this.cap; i++) {
      if (this.seg[i] === 0) continue;
      const k = i * 4;
      fn([this.keys[k], this.keys[k + 1], this.keys[k + 2], this.keys[k + 3]],
        { segment: this.seg[i], offset: this.off[i], length: this.len[i], version: this.ver[i], dataset: this.ds[i] });
    }
  }
}

export type OidWords = [number, number, number, number];

/** The index as columns (`keys`: four words a row). */
export interface IndexColumns {
  keys: Uint32Array;
  seg: Uint32Array;
  off: Uint32Array;
  len: Uint32Array;
  ver: Float64Array;
  ds: Uint16Array;
}

export function wordsFromHex(oid: string): OidWords {
  return [
    parseInt(oid.slice(0, 8), 16) >>> 0,
    parseInt(oid.slice(8, 16), 16) >>> 0,
    parseInt(oid.slice(16, 24), 16) >>> 0,
    parseInt(oid.slice(24, 32), 16) >>> 0,
  ];
}

export function wordsFromBytes(b: Buffer): OidWords {
  return [b.readUInt32BE(0), b.readUInt32BE(4), b.readUInt32BE(8), b.readUInt32BE(12)];
}

export function hexFromWords(w: OidWords): string {
  return w.map((x) => x.toString(16).padStart(8, '0')).join('');
}

export function bytesFromHex(oid: string): Buffer {
  return Buffer.from(oid, 'hex');
}
