import { describe, expect, it } from 'vitest';
import { OidIndex, wordsFromHex, hexFromWords } from '../dist/storage/oid-index.js';
import { newOid } from '@loam/sdk';

describe('OidIndex', () => {
  it('agrees with a Map under random inserts, replaces and deletes (through several grows)', () => {
    const idx = new OidIndex();
    const model = new Map<string, number>();
    const oids: string[] = [];
    let seed = 12345;
    const rnd = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
    for (let i = 0; i < 60_000; i++) {
      const op = rnd();
      if (op < 0.6 || oids.length === 0) {
        const oid = newOid(1);
        oids.push(oid);
        idx.set(wordsFromHex(oid), { segment: 1, offset: i, length: 10, version: 1, dataset: 1 });
        model.set(oid, i);
      } else if (op < 0.8) {
        const oid = oids[Math.floor(rnd() * oids.length)];
        if (model.has(oid)) {
          const prev = idx.set(wordsFromHex(oid), { segment: 2, offset: i, length: 20, version: 2, dataset: 1 });
          expect(prev).toBeDefined();
          model.set(oid, i);
        }
      } else {
        const oid = oids[Math.floor(rnd() * oids.length)];
        const removed = idx.delete(wordsFromHex(oid));
        expect(removed !== undefined).toBe(model.has(oid));
        model.delete(oid);
      }
    }
    expect(idx.size).toBe(model.size);
    for (const oid of oids) {
      const loc = idx.get(wordsFromHex(oid));
      expect(loc?.offset).toBe(model.get(oid));
    }
    let n = 0;
    idx.forEach((w, loc) => {
      n++;
      expect(model.get(hexFromWords(w))).toBe(loc.offset);
    });
    expect(n).toBe(model.size);
  });

  it('stays under 100 bytes per entry', () => {
    const idx = new OidIndex();
    for (let i = 0; i < 200_000; i++) idx.set(wordsFromHex(newOid(1)), { segment: 1, offset: i, length: 1, version: 1, dataset: 1 });
    expect(idx.memoryBytes / idx.size).toBeLessThan(100);
  });
});
