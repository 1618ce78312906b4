/**
 * Cluster-wide metadata: members with leases, node numbers, home-directory owners, aliases,
 * datasets and transaction decisions. Small, linearizable, compare-and-set. etcd in a cluster;
 * an embedded store for `loam dev`, so both run the same node code.
 * Keys are relative to the store's prefix (e.g. /loam/NAME).
 */
export interface MetaLease {
  readonly id: string;
  /** Revokes the lease: every key written with it disappears. */
  revoke(): Promise<void>;
  /** Called when keepalives failed long enough that the lease may have expired. */
  onLost(fn: (err: Error) => void): void;
  /**
   * A time (ms since the epoch, this process's clock) before which the lease is certainly still
   * alive in the store: the send time of the last grant or keepalive the store acknowledged,
   * plus the TTL it granted. The store expires a lease only after that (its clock runs from
   * when it processed the request, later than the send), so anything this node may do only
   * while its keys exist (serve replica copies) is safe until then, less a margin for clock rates.
   */
  validUntil(): number;
}

export interface MetaStore {
  readonly kind: 'etcd' | 'embedded';
  get(key: string): Promise<string | undefined>;
  /** Every key under `prefix` (keys returned relative to the store, like the arguments). */
  list(prefix: string): Promise<Map<string, string>>;
  put(key: string, value: string, lease?: MetaLease): Promise<void>;
  /** Creates key=value only if the key is absent: the first writer decides. Returns what is stored now. */
  createIfAbsent(key: string, value: string, lease?: MetaLease): Promise<{ created: boolean; value: string }>;
  /** Sets (or with `value` undefined, deletes) key only if it now holds `expected` (undefined: absent). */
  compareAndSet(key: string, expected: string | undefined, value: string | undefined): Promise<boolean>;
  delete(key: string): Promise<void>;
  /** Deletes several keys (in as few round trips as the store allows; not atomic as a whole). */
  deleteMany(keys: string[]): Promise<void>;
  lease(ttlSeconds: number): Promise<MetaLease>;
  close(): Promise<void>;
}

export const META_KEYS = {
  /** node number -> node id: who owns a number (numbers are never reused). */
  nodeNumber: (n: number) => `nodes/${n}`,
  nodeNumbers: 'nodes/',
  /** node id -> member JSON, leased: present while the node is alive. */
  member: (id: string) => `members/${id}`,
  members: 'members/',
  /** home node number -> id of the node that serves that home directory (after a drain). */
  home: (n: number) => `homes/${n}`,
  homes: 'homes/',
  dataset: (name: string) => `datasets/${name}`,
  datasets: 'datasets/',
  alias: (dataset: string, alias: string) => `aliases/${dataset}/${alias}`,
  aliases: (dataset: string) => `aliases/${dataset}/`,
  decision: (txid: string) => `tx/${txid}`,
  /** node id -> the generation of its latest start (a decimal number; see cluster/generation.ts). */
  generation: (id: string) => `generations/${id}`,
} as const;
