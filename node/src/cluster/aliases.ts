import { AliasExistsError } from '@loam/sdk/wire';
import { META_KEYS, type MetaStore } from '../meta/meta-store.js';

/** A reservation older than this whose commit never confirmed it may be taken over. */
export const STALE_ALIAS_MS = 30_000;

interface AliasValue {
  oid: string;
  pending?: boolean;
  at?: number;
}

/**
 * Reserves an alias in the metadata store for a commit (first writer wins). A reservation left
 * `pending` by a commit whose node died before confirming it is settled once it is stale: if its
 * object exists the commit happened (the alias is confirmed: AliasExists), else it is taken over.
 * `exists` tells whether an object exists (asked of its node).
 */
export async function reserveAlias(
  meta: MetaStore,
  dataset: string,
  alias: string,
  oid: string,
  exists: (oid: string) => Promise<boolean>,
  now = Date.now(),
): Promise<{ key: string; value: string }> {
  const key = META_KEYS.alias(dataset, alias);
  const value = JSON.stringify({ oid, pending: true, at: now } satisfies AliasValue);
  for (let round = 0; round < 3; round++) {
    const r = await meta.createIfAbsent(key, value);
    if (r.created) return { key, value };
    let current: AliasValue | undefined;
    try {
      current = JSON.parse(r.value) as AliasValue;
    } catch {
      current = undefined;
    }
    // Already naming this object (a retried commit's own reservation, or the same alias set
    // twice): the commit can go on, and confirming it again changes nothing.
    if (current?.oid === oid) return { key, value: r.value };
    const stale = current?.pending === true && typeof current.at === 'number' && now - current.at > STALE_ALIAS_MS;
    if (!current || !stale) break;
    if (await exists(current.oid)) {
      await meta.compareAndSet(key, r.value, JSON.stringify({ oid: current.oid }));
      break;
    }
    if (await meta.compareAndSet(key, r.value, value)) return { key, value };
  }
  throw new AliasExistsError(`alias ${JSON.stringify(alias)} already exists in dataset ${dataset}`, { alias, dataset });
}
