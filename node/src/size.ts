import { InvalidArgumentError as CliArgError } from 'commander';

/** Kubernetes quantity suffixes (case-sensitive, as in resource.Quantity): binary and decimal. */
const QUANTITY: Record<string, number> = {
  Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60,
  k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18,
};
/** The forms loam took before (any case; KB, MB and GB have always meant 1024-based units). */
const LEGACY: Record<string, number> = { b: 1, kib: 2 ** 10, kb: 2 ** 10, mib: 2 ** 20, mb: 2 ** 20, gib: 2 ** 30, gb: 2 ** 30 };

/**
 * A byte size: plain bytes (65536), a Kubernetes quantity (64Mi, 1Gi, 500M, 2G, 1e9: what a
 * DataStore's cacheSize holds, passed through as is), or loam's older forms (64MiB, 1GiB, 512kb).
 * Fractions are rounded down to whole bytes.
 */
export function parseSize(v: string): number {
  const s = v.trim();
  const m = /^(\d+(?:\.\d+)?|\.\d+)(?:([eE])(\d+)|\s*([A-Za-z]+))?$/.exec(s);
  const fail = (why = '') => new CliArgError(`not a size: ${JSON.stringify(v)}${why} (examples: 65536, 64Mi, 1Gi, 500M, 64MiB)`);
  if (!m) throw fail();
  let mult = 1;
  if (m[2]) mult = 10 ** Number(m[3]);
  else if (m[4]) {
    const unit = m[4];
    const q = QUANTITY[unit] ?? LEGACY[unit.toLowerCase()];
    if (q === undefined) throw fail(unit === 'm' ? ': "m" is milli in a Kubernetes quantity, not a byte unit' : `: unknown unit ${unit}`);
    mult = q;
  }
  const bytes = Math.floor(Number(m[1]) * mult);
  if (!Number.isSafeInteger(bytes)) throw fail(': too large');
  return bytes;
}

/**
 * A size from environment variable `name` (else `fallback`), read when the CLI defines its
 * options: a bad value ends the process with a one-line error naming the variable, not a stack.
 */
export function sizeFromEnv(name: string, fallback?: string): number | undefined {
  const raw = process.env[name] ?? fallback;
  if (raw === undefined || raw === '') return undefined;
  try {
    return parseSize(raw);
  } catch (e) {
    process.stderr.write(`loam: ${name}: ${(e as Error).message}\n`);
    process.exit(1);
  }
}
