import { describe, expect, it } from 'vitest';
import { Ref, parseUrl, InvalidArgumentError, isOid, newOid, oidHomeNode } from '@loam/sdk';

const OID = '0001' + 'a'.repeat(28);

describe('refs, urls and oids', () => {
  it('formats and parses refs', () => {
    const r = new Ref('10.0.0.1', 7480, 'default', OID);
    expect(r.toString()).toBe(`loam://10.0.0.1:7480/default/${OID}`);
    expect(Ref.parse(r.toString())).toEqual(r);
    expect(JSON.stringify({ r })).toBe(JSON.stringify({ r: r.toString() }));
    expect(Ref.parse('loam://[::1]:1/ds/' + OID).host).toBe('[::1]');
  });

  it.each([
    '', 'http://x:1/default/' + OID, 'loam://x/default/' + OID, 'loam://x:99999/default/' + OID,
    'loam://x:1/default/' + OID.toUpperCase(), 'loam://x:1/default/' + OID.slice(1), 'loam://x:1//' + OID, 'loam://x:1/default/' + OID + '/extra',
  ])('rejects the malformed ref %j with InvalidArgumentError', (s) => {
    expect(() => Ref.parse(s)).toThrow(InvalidArgumentError);
  });

  it('parses connection urls with defaults', () => {
    expect(parseUrl('loam://h:1/ds')).toEqual({ host: 'h', port: 1, dataset: 'ds' });
    expect(parseUrl('loam://h')).toEqual({ host: 'h', port: 7480, dataset: 'default' });
    expect(() => parseUrl('h:1')).toThrow(InvalidArgumentError);
  });

  it('makes unique oids that carry their home node', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 10_000; i++) {
      const o = newOid(513);
      expect(isOid(o)).toBe(true);
      seen.add(o);
    }
    expect(seen.size).toBe(10_000);
    expect(oidHomeNode(newOid(513))).toBe(513);
    expect(() => newOid(70_000)).toThrow(InvalidArgumentError);
  });
});
