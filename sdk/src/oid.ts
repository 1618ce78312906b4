import { randomBytes } from 'node:crypto';
import { InvalidArgumentError } from './errors.js';

/**
 * An oid is 128 bits, printed as 32 lowercase hex digits:
 *   [home node number: 16 bits][creation time in ms: 48 bits][random: 64 bits]
 * The home node number lets any process find the node that holds an object's directory without
 * asking a central service; time-then-random keeps oids unique across uncoordinated writers.
 */
export const OID_HEX_LENGTH = 32;
export const OID_BYTES = 16;
export const MAX_NODE_NUMBER = 0xffff;
const OID_RE = /^[0-9a-f]{32}$/;

export function isOid(value: unknown): boolean {
  return typeof value === 'string' && OID_RE.test(value);
}

export function assertOid(value: unknown, what = 'oid'): string {
  if (!isOid(value)) {
    throw new InvalidArgumentError(`malformed ${what}: ${JSON.stringify(value)?.slice(0, 80)} (expected 32 lowercase hex digits)`);
  }
  return value as string;
}

/** Reused pool of random bytes: one crypto call serves 512 oids. */
let pool = Buffer.alloc(0);
let poolPos = 0;

export function newOid(homeNode: number): string {
  if (!Number.isInteger(homeNode) || homeNode < 0 || homeNode > MAX_NODE_NUMBER) {
    throw new InvalidArgumentError(`node number out of range: ${homeNode}`);
  }
  if (poolPos + 8 > pool.length) {
    pool = randomBytes(8 * 512);
    poolPos = 0;
  }
  const rnd = pool.toString('hex', poolPos, poolPos + 8);
  poolPos += 8;
  return homeNode.toString(16).padStart(4, '0') + Date.now().toString(16).padStart(12, '0').slice(-12) + rnd;
}

/** The node number an oid was created on. */
export function oidHomeNode(oid: string): number {
  return parseInt(assertOid(oid).slice(0, 4), 16);
}

/**
 * A distributed transaction's id: [creation time in ms: 48 bits][random: 80 bits]. Nodes order
 * transactions by it for wait-die deadlock prevention (an older, smaller id may wait for a
 * younger one, never the reverse), so time comes first.
 */
export function newTxid(now = Date.now()): string {
  const b = randomBytes(16);
  b.writeUIntBE(now, 0, 6);
  return b.toString('hex');
}
