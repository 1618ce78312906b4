import { describe, expect, it } from 'vitest';
import { Persistent, registerModel, encodeValue, decodeValue, CODEC_V1, Ref, InternalError } from '@loam/sdk';

class Thing extends Persistent {
  name = 'thing';
}
registerModel(Thing, 'CodecTest.Thing');

const noRefs = { refFor: () => { throw new Error('no refs expected'); } };
const noStubs = { stubFor: () => { throw new Error('no stubs expected'); } };

function roundTrip<T>(v: T): T {
  return decodeValue(encodeValue(v, noRefs), noStubs) as T;
}

describe('codec', () => {
  it('round-trips every supported value type', () => {
    const value = {
      str: 'héllo ✓', int: 42, neg: -7, float: 3.25, big: 2n ** 80n, small: 5n, negBig: -(2n ** 70n),
      bool: true, nul: null, undef: undefined, date: new Date('2026-01-02T03:04:05.678Z'),
      map: new Map<unknown, unknown>([[1, 'one'], ['k', { nested: [1, 2] }]]), set: new Set([1, 'a', 2n]),
      buf: Buffer.from([0, 1, 255]), u8: new Uint8Array([9, 8]), f64: new Float64Array([1.5, -2]), i32: new Int32Array([-1, 7]),
      arr: [1, undefined, 'x', [null]], deep: { a: { b: { c: { d: 'e' } } } }, nan: NaN, inf: -Infinity,
    };
    const out = roundTrip(value);
    expect(out).toEqual(value);
    expect(out.big).toBe(2n ** 80n);
    expect(typeof out.small).toBe('bigint');
    expect(out.map).toBeInstanceOf(Map);
    expect(out.set).toBeInstanceOf(Set);
    expect(out.date).toBeInstanceOf(Date);
    expect(Buffer.isBuffer(out.buf)).toBe(true);
    expect(out.f64).toBeInstanceOf(Float64Array);
    expect('undef' in out).toBe(true);
  });

  it('keeps cycles and shared sub-objects', () => {
    const shared = { n: 1 };
    const a: Record<string, unknown> = { shared, again: shared };
    a.self = a;
    const out = roundTrip(a) as Record<string, unknown>;
    expect(out.self).toBe(out);
    expect(out.shared).toBe(out.again);
  });

  it('writes persistent objects as references and reads them back as stubs', () => {
    const t = new Thing();
    const enc = encodeValue({ x: t, y: [t] }, { refFor: () => ({ oid: 'ab'.repeat(16), className: 'CodecTest.Thing' }) });
    const seen: string[] = [];
    const stub = new Thing();
    const out = decodeValue(enc, { stubFor: (oid, cls) => { seen.push(`${oid}:${cls}`); return stub; } }) as { x: Thing; y: Thing[] };
    expect(out.x).toBe(stub);
    expect(out.y[0]).toBe(stub);
    expect(seen).toEqual([`${'ab'.repeat(16)}:CodecTest.Thing`]);
  });

  it('keeps Ref values as Ref instances', () => {
    const r = Ref.parse(`loam://127.0.0.1:7480/default/${'0'.repeat(32)}`);
    const out = roundTrip({ r }) as { r: Ref };
    expect(out.r).toBeInstanceOf(Ref);
    expect(out.r.toString()).toBe(r.toString());
  });

  it('starts with a format byte and refuses a format it does not know', () => {
    const enc = encodeValue({ a: 1 }, noRefs);
    expect(enc[0]).toBe(CODEC_V1);
    const future = Buffer.from(enc);
    future[0] = 99;
    expect(() => decodeValue(future, noStubs)).toThrow(InternalError);
    expect(() => decodeValue(future, noStubs)).toThrow(/format 99/);
  });
});
