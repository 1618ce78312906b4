import { describe, expect, it } from 'vitest';
import { AliasExistsError } from '@loam/sdk';
import { EmbeddedMetaStore } from '../dist/meta/embedded-meta-store.js';
import { reserveAlias, STALE_ALIAS_MS } from '../dist/cluster/aliases.js';

const A = '0001' + 'a'.repeat(28);
const B = '0001' + 'b'.repeat(28);
const key = 'aliases/default/name';

describe('alias reservations in the metadata store', () => {
  it('first writer wins; a fresh or confirmed alias is taken', async () => {
    const meta = new EmbeddedMetaStore();
    const never = async () => false;
    await reserveAlias(meta, 'default', 'name', A, never, 1000);
    await expect(reserveAlias(meta, 'default', 'name', B, never, 2000)).rejects.toBeInstanceOf(AliasExistsError);
    await meta.put(key, JSON.stringify({ oid: A }));
    await expect(reserveAlias(meta, 'default', 'name', B, never, 1000 + STALE_ALIAS_MS * 10)).rejects.toBeInstanceOf(AliasExistsError);
  });

  it('a stale reservation whose object never came is taken over', async () => {
    const meta = new EmbeddedMetaStore();
    await reserveAlias(meta, 'default', 'name', A, async () => false, 1000);
    const asked: string[] = [];
    await reserveAlias(meta, 'default', 'name', B, async (oid) => (asked.push(oid), false), 1000 + STALE_ALIAS_MS + 1);
    expect(asked).toEqual([A]);
    expect(JSON.parse((await meta.get(key))!).oid).toBe(B);
  });

  it('a stale reservation whose object exists is confirmed, not taken', async () => {
    const meta = new EmbeddedMetaStore();
    await reserveAlias(meta, 'default', 'name', A, async () => false, 1000);
    await expect(reserveAlias(meta, 'default', 'name', B, async () => true, 1000 + STALE_ALIAS_MS + 1)).rejects.toBeInstanceOf(AliasExistsError);
    expect(JSON.parse((await meta.get(key))!)).toEqual({ oid: A });
  });
});
