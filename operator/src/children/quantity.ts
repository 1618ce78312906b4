/**
 * Kubernetes resource quantities (`10Gi`, `500M`, `1.5Gi`, `64Mi`, `1e3`) in bytes: the node's
 * size flags take plain byte counts, so the operator converts rather than relying on a node
 * version that parses quantities.
 */

export class QuantityError extends Error {
  constructor(readonly value: string) {
    super(`not a Kubernetes quantity: ${JSON.stringify(value)} (examples: 10Gi, 500M, 64Mi)`);
    this.name = 'QuantityError';
  }
}

const BINARY: Record<string, number> = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60 };
const DECIMAL: Record<string, number> = { n: 1e-9, u: 1e-6, m: 1e-3, '': 1, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18 };

/** A quantity's value as a number (fractions kept: `500m` is 0.5). */
export function parseQuantity(q: string | number): number {
  if (typeof q === 'number') {
    if (!Number.isFinite(q)) throw new QuantityError(String(q));
    return q;
  }
  const m = /^([+-]?(?:\d+(?:\.\d*)?|\.\d+))(?:(Ki|Mi|Gi|Ti|Pi|Ei)|([eE][+-]?\d+)|(n|u|m|k|M|G|T|P|E)?)$/.exec(q.trim());
  if (!m) throw new QuantityError(q);
  const n = Number(m[1]);
  if (m[2]) return n * BINARY[m[2]]!;
  if (m[3]) return n * 10 ** Number(m[3].slice(1));
  return n * DECIMAL[m[4] ?? '']!;
}

/** A quantity in whole bytes (rounded up, as Kubernetes rounds a quantity to an integer). */
export function quantityBytes(q: string | number): number {
  const v = parseQuantity(q);
  if (v < 0) throw new QuantityError(String(q));
  return Math.ceil(v);
}

/**
 * The share of a node's volume its S3 disk cache may fill (`--disk-cache-size`): the rest is
 * headroom for what the cache does not count (the log tail and segments not yet uploaded,
 * which grow while S3 is slow or unreachable).
 */
export const DISK_CACHE_SHARE = 0.75;

/** `--disk-cache-size` for a volume of `storageSize`. */
export function diskCacheBytes(storageSize: string | number): number {
  return Math.floor(quantityBytes(storageSize) * DISK_CACHE_SHARE);
}
