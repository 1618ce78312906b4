import { describe, expect, it } from 'vitest';
import { Persistent, registerModel, encodeValue, decodeValue, DEFAULT_LIMITS, LimitExceededError, CODEC_V1, Ref } from '@loam/sdk';

class Leaf extends Persistent {
  x = 1;
}
registerModel(Leaf, 'DepthTest.Leaf');
class Plain {
  constructor(public inner: unknown) {}
}

const MAX = DEFAULT_LIMITS.maxDepth;
const leafRef = new Leaf();
const refs = { refFor: () => ({ oid: 'ab'.repeat(16), className: 'DepthTest.Leaf' }) };
const stubs = { stubFor: () => leafRef };

/** `levels` containers of one kind, each holding the next; the innermost holds 7. */
function nest(levels: number, kind: string): unknown {
  let v: unknown = 7;
  for (let i = 0; i < levels; i++) {
    switch (kind) {
      case 'object': v = { a: v, pad: 'p' }; break;
      case 'class instance': v = new Plain(v); break;
      case 'array': v = [1, v]; break;
      case 'Map value': v = new Map([['k', v]]); break;
      case 'Map key': v = new Map([[v, 'v']]); break;
      case 'Set': v = new Set([v]); break;
      case 'Error cause': v = new Error('e', { cause: v }); break;
      default: throw new Error(kind);
    }
  }
  return v;
}

/** The error a function throws (fails the test when it does not throw). */
function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  throw new Error('expected a throw');
}

function expectDepthError(e: unknown): void {
  expect(e).toBeInstanceOf(LimitExceededError);
  expect((e as LimitExceededError).limit).toBe('maxDepth');
  expect((e as LimitExceededError).code).toBe('LIMIT_EXCEEDED');
}

/** A hand-made state: `levels` one-element arrays around 1 (what no encoder of ours writes past the limit). */
function deepArrays(levels: number, { truncated = false } = {}): Buffer {
  const b = Buffer.alloc(levels + 2, 0x91);
  b[0] = CODEC_V1;
  b[levels + 1] = 0x01;
  return truncated ? b.subarray(0, levels + 1) : b;
}

describe('nesting depth limit (Limits.maxDepth)', () => {
  it('is a documented default, well below where the codec would overflow the stack', () => {
    expect(MAX).toBe(512);
    // msgpackr's deepest frames per level are a Set's: about 700 levels fit on a default stack.
    expect(MAX).toBeLessThan(700);
  });

  it.each(['object', 'class instance', 'array', 'Map value', 'Map key', 'Set', 'Error cause'])('%s: exactly maxDepth levels round-trip, one more is refused on encode', (kind) => {
    const ok = nest(MAX, kind);
    const enc = encodeValue(ok, refs);
    const back = decodeValue(enc, stubs);
    expect(kind === 'class instance' ? JSON.stringify(back) : back).toEqual(kind === 'class instance' ? JSON.stringify(ok) : ok);
    expectDepthError(thrown(() => encodeValue(nest(MAX + 1, kind), refs)));
  });

  it('counts levels, not values: wide and reference-holding values at the limit are fine', () => {
    let v: unknown = { refs: [leafRef, Ref.parse(`loam://127.0.0.1:7480/default/${'0'.repeat(32)}`)], when: new Date(0), n: 10n ** 30n, u: undefined, bytes: new Uint8Array(3) };
    // MAX - 2 wrappers around it: the innermost array (refs) is at level MAX.
    for (let i = 0; i < MAX - 2; i++) v = { next: v, wide: Array.from({ length: 5 }, (_, j) => j) };
    const out = decodeValue(encodeValue(v, refs), stubs) as { next: unknown };
    expect(out.next).toBeDefined();
    expectDepthError(thrown(() => encodeValue({ deeper: v }, refs)));
  });

  it('far deeper than the stack takes is a LimitExceededError, not a RangeError, and the codec keeps working', () => {
    expectDepthError(thrown(() => encodeValue(nest(100_000, 'object'), refs)));
    expectDepthError(thrown(() => encodeValue(nest(100_000, 'Set'), refs)));
    expect(decodeValue(encodeValue({ a: [1, { b: 2 }] }, refs), stubs)).toEqual({ a: [1, { b: 2 }] });
  });

  it('a cycle or a shared sub-object is written once, so it adds no depth', () => {
    const shared = nest(MAX - 2, 'object');
    const v: Record<string, unknown> = { a: { s: shared }, b: { s: shared } };
    v.self = v;
    const out = decodeValue(encodeValue(v, refs), stubs) as Record<string, { s: unknown }>;
    expect(out.self).toBe(out);
    expect(out.a.s).toBe(out.b.s);
  });

  it('decoding refuses a state deeper than maxDepth before decoding it', () => {
    expect(decodeValue(deepArrays(MAX), stubs)).toBeInstanceOf(Array);
    expectDepthError(thrown(() => decodeValue(deepArrays(MAX + 1), stubs)));
    expectDepthError(thrown(() => decodeValue(deepArrays(1_000_000), stubs)));
  });

  it('decoding a deep state it cannot frame (here truncated) is still a LimitExceededError, and the codec keeps working', () => {
    expectDepthError(thrown(() => decodeValue(deepArrays(200_000, { truncated: true }), stubs)));
    expect(decodeValue(encodeValue({ ok: new Set([1]) }, refs), stubs)).toEqual({ ok: new Set([1]) });
  });

  it('a caller may pass a lower maxDepth', () => {
    expect(decodeValue(encodeValue(nest(3, 'array'), refs, 3), stubs, 3)).toEqual(nest(3, 'array'));
    // Small values skip the byte scan (each level takes a byte), so this one is padded past 4 bytes.
    expectDepthError(thrown(() => encodeValue({ a: [[['deep enough']]] }, refs, 3)));
    expectDepthError(thrown(() => decodeValue(encodeValue({ a: [[['deep enough']]] }, refs), stubs, 3)));
  });

  it('measures exactly what was written, for random values of known depth (seeded)', () => {
    let seed = 42;
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const made: object[] = [];
    // Builds a value whose deepest container is at `depth` levels; shared picks reuse earlier ones.
    const build = (level: number, depth: number): unknown => {
      if (level > depth) return [7, 'leaf', 3.5, null, new Date(1), 5n, undefined, leafRef][rnd(8)];
      const width = 1 + rnd(3);
      const kids = () => Array.from({ length: width }, (_, i) => (i === 0 || rnd(3) === 0 ? build(level + 1, i === 0 ? depth : level + rnd(depth - level + 1)) : made.length && rnd(4) === 0 ? made[rnd(made.length)] : rnd(100)));
      let v: object;
      switch (rnd(5)) {
        case 0: v = kids(); break;
        case 1: { const o: Record<string, unknown> = {}; kids().forEach((k, i) => (o[`k${rnd(150)}_${i}`] = k)); v = o; break; }
        case 2: v = new Map(kids().map((k, i) => [i, k])); break;
        case 3: v = new Set(kids()); break;
        default: v = new Plain(build(level + 1, depth)); break;
      }
      made.push(v);
      return v;
    };
    for (let i = 0; i < 60; i++) {
      made.length = 0; // only this value's earlier parts are written as pointers
      const depth = 2 + rnd(40);
      const v = build(1, depth);
      const enc = encodeValue(v, refs, depth);
      decodeValue(enc, stubs, depth);
      expectDepthError(thrown(() => encodeValue(v, refs, depth - 1)));
      expectDepthError(thrown(() => decodeValue(enc, stubs, depth - 1)));
    }
  });
});
