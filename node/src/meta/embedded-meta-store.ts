import fs from 'node:fs';
import path from 'node:path';
import type { MetaLease, MetaStore } from './meta-store.js';

/**
 * MetaStore for `loam dev`: all nodes of a local cluster run in one process and share one of
 * these. Durable keys go to an append-only JSON-lines file (fsync per change, compacted on
 * open); leased keys live only in memory, like an etcd lease whose holder died with the process.
 */
export class EmbeddedMetaStore implements MetaStore {
  readonly kind = 'embedded' as const;
  private readonly data = new Map<string, { value: string; lease?: string }>();
  private readonly leases = new Map<string, { timer?: NodeJS.Timeout; lost: ((e: Error) => void)[] }>();
  private fd?: number;
  private nextLease = 1;

  constructor(file?: string) {
    if (!file) return;
    fs.mkdirSync(path.dirname(file), { recursive: true });
    if (fs.existsSync(file)) {
      for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
        if (!line) continue;
        let op: { k: string; v?: string };
        try {
          op = JSON.parse(line) as { k: string; v?: string };
        } catch {
          break; // a torn last line: everything before it was fsynced whole
        }
        if (op.v === undefined) this.data.delete(op.k);
        else this.data.set(op.k, { value: op.v });
      }
    }
    const tmp = `${file}.tmp`;
    fs.writeFileSync(tmp, [...this.data].map(([k, v]) => JSON.stringify({ k, v: v.value }) + '\n').join(''));
    const tfd = fs.openSync(tmp, 'r');
    fs.fsyncSync(tfd);
    fs.closeSync(tfd);
    fs.renameSync(tmp, file);
    this.fd = fs.openSync(file, 'a');
  }

  private persist(key: string, value: string | undefined): void {
    if (this.fd === undefined) return;
    fs.writeSync(this.fd, JSON.stringify({ k: key, v: value }) + '\n');
    fs.fsyncSync(this.fd);
  }

  private set(key: string, value: string | undefined, lease?: MetaLease): void {
    const prev = this.data.get(key);
    if (value === undefined) this.data.delete(key);
    else this.data.set(key, { value, lease: lease?.id });
    const durable = value === undefined ? !prev?.lease : !lease; // leased keys never reach the file
    if (durable) this.persist(key, value);
  }

  async get(key: string): Promise<string | undefined> {
    return this.data.get(key)?.value;
  }

  async list(prefix: string): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    for (const [k, v] of this.data) if (k.startsWith(prefix)) out.set(k, v.value);
    return out;
  }

  async put(key: string, value: string, lease?: MetaLease): Promise<void> {
    this.set(key, value, lease);
  }

  async createIfAbsent(key: string, value: string, lease?: MetaLease): Promise<{ created: boolean; value: string }> {
    const cur = this.data.get(key);
    if (cur) return { created: false, value: cur.value };
    this.set(key, value, lease);
    return { created: true, value };
  }

  async compareAndSet(key: string, expected: string | undefined, value: string | undefined): Promise<boolean> {
    if (this.data.get(key)?.value !== expected) return false;
    this.set(key, value);
    return true;
  }

  async delete(key: string): Promise<void> {
    if (this.data.has(key)) this.set(key, undefined);
  }

  async deleteMany(keys: string[]): Promise<void> {
    for (const k of keys) await this.delete(k);
  }

  async lease(ttlSeconds: number): Promise<MetaLease> {
    const id = String(this.nextLease++);
    this.leases.set(id, { lost: [] });
    void ttlSeconds; // in-process holders cannot silently die: the lease lives until revoked
    return {
      id,
      revoke: async () => {
        this.leases.delete(id);
        for (const [k, v] of this.data) if (v.lease === id) this.data.delete(k);
      },
      onLost: (fn) => void this.leases.get(id)?.lost.push(fn),
      // In-process: the lease lives exactly as long as this process, which does the serving.
      validUntil: () => (this.leases.has(id) ? Number.POSITIVE_INFINITY : 0),
    };
  }

  async close(): Promise<void> {
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
  }
}
