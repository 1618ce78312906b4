import {
  Etcd3, EtcdAuthenticationFailedError, EtcdInvalidAuthTokenError, EtcdPermissionDeniedError, GRPCUnauthenticatedError, type Lease, type Namespace,
} from 'etcd3';
import { LoamError, UnavailableError } from '@loam/sdk/wire';
import type { MetaLease, MetaStore } from './meta-store.js';

/** etcd user name and password (etcd's own auth: the client trades them for a token). */
export interface EtcdCredentials {
  username: string;
  password: string;
}

/**
 * etcd refused the credentials (or, with auth enabled, their absence) or this user's access to
 * the prefix: retrying cannot help, so a node does not wait for it as for an unreachable etcd.
 */
export class EtcdAccessError extends LoamError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('FAILED_PRECONDITION', message, {}, options);
  }
}

/** True for etcd's answers that mean "not with these credentials", as opposed to "not reachable". */
function isAccessDenied(e: unknown): boolean {
  if (e instanceof EtcdAuthenticationFailedError || e instanceof EtcdPermissionDeniedError || e instanceof EtcdInvalidAuthTokenError || e instanceof GRPCUnauthenticatedError) return true;
  // Auth enabled and no credentials given: etcd 3.4 says "user name is empty" (INVALID_ARGUMENT).
  return /user name is empty|authentication failed|permission denied|invalid auth token|user name not found/i.test((e as Error)?.message ?? '');
}

/** MetaStore on etcd v3. Every call has a deadline; an unreachable etcd is an UnavailableError. */
export class EtcdMetaStore implements MetaStore {
  readonly kind = 'etcd' as const;
  private readonly client: Etcd3;
  private readonly ns: Namespace;
  private readonly leases = new Set<Lease>();
  private readonly timeoutMs: number;

  constructor(endpoints: string[], prefix: string, opts: { timeoutMs?: number; credentials?: EtcdCredentials } = {}) {
    if (endpoints.length === 0) throw new Error('no etcd endpoints');
    this.timeoutMs = opts.timeoutMs ?? 5000;
    const attemptMs = Math.max(200, Math.floor(this.timeoutMs / 3));
    this.client = new Etcd3({
      hosts: endpoints,
      // grpc-js backs off up to 120 s before reconnecting to a member that was down, and waits for
      // a re-resolution after a connection drops: a node must notice a restarted member quickly.
      grpcOptions: {
        'grpc.initial_reconnect_backoff_ms': 100,
        'grpc.max_reconnect_backoff_ms': 1000,
        'grpc.dns_min_time_between_resolutions_ms': 200,
      },
      // A deadline per attempt (etcd3 recomputes it on each of its retries), so that a call that
      // picked a member which just died is retried on a live one instead of using up all the time.
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + attemptMs }),
      // The token exchange gets a deadline too: a hung etcd must not hold the first call forever.
      ...(opts.credentials ? { auth: { ...opts.credentials, callOptions: () => ({ deadline: Date.now() + attemptMs }) } } : {}),
    });
    this.ns = this.client.namespace(prefix.endsWith('/') ? prefix : `${prefix}/`);
  }

  /**
   * One read under the prefix, at start: throws EtcdAccessError when etcd refuses the
   * credentials or the prefix (a node would otherwise retry forever as if etcd were down);
   * false when etcd does not answer within `timeoutMs` (a node may start before etcd does).
   */
  async checkAccess(timeoutMs = this.timeoutMs): Promise<boolean> {
    try {
      await this.ns.get('members/').options({ deadline: Date.now() + timeoutMs }).string();
      return true;
    } catch (e) {
      if (isAccessDenied(e)) {
        throw new EtcdAccessError(`etcd refused access: ${(e as Error).message} (check --etcd-username and the password in LOAM_ETCD_PASSWORD or --etcd-password-file, and that the user's role may read and write this prefix)`, { cause: e });
      }
      return false;
    }
  }

  private async run<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      throw new UnavailableError(`metadata store (etcd) ${what} failed: ${(e as Error).message}`, {}, { cause: e });
    }
  }

  get(key: string): Promise<string | undefined> {
    return this.run('get', async () => (await this.ns.get(key).string()) ?? undefined);
  }

  list(prefix: string): Promise<Map<string, string>> {
    return this.run('list', async () => new Map(Object.entries(await this.ns.getAll().prefix(prefix).strings())));
  }

  put(key: string, value: string, lease?: MetaLease): Promise<void> {
    return this.run('put', async () => {
      const b = this.ns.put(key).value(value);
      if (lease) b.lease(lease.id);
      await b.exec();
    });
  }

  createIfAbsent(key: string, value: string, lease?: MetaLease): Promise<{ created: boolean; value: string }> {
    return this.run('create', async () => {
      const put = this.ns.put(key).value(value);
      if (lease) put.lease(lease.id);
      const res = await this.ns.if(key, 'Create', '==', 0).then(put).else(this.ns.get(key)).commit();
      if (res.succeeded) return { created: true, value };
      const kv = res.responses[0]?.response_range?.kvs?.[0];
      return { created: false, value: kv ? kv.value.toString() : '' };
    });
  }

  compareAndSet(key: string, expected: string | undefined, value: string | undefined): Promise<boolean> {
    return this.run('compare-and-set', async () => {
      const cmp = expected === undefined ? this.ns.if(key, 'Create', '==', 0) : this.ns.if(key, 'Value', '==', expected);
      const op = value === undefined ? this.ns.delete().key(key) : this.ns.put(key).value(value);
      const res = await cmp.then(op).commit();
      return res.succeeded;
    });
  }

  delete(key: string): Promise<void> {
    return this.run('delete', async () => {
      await this.ns.delete().key(key).exec();
    });
  }

  deleteMany(keys: string[]): Promise<void> {
    return this.run('delete', async () => {
      // One etcd transaction per chunk (etcd caps operations per transaction at 128); its
      // comparison always holds, so every delete runs.
      for (let i = 0; i < keys.length; i += 100) {
        const chunk = keys.slice(i, i + 100);
        await this.ns.if(chunk[0], 'Version', '>', -1).then(...chunk.map((k) => this.ns.delete().key(k))).commit();
      }
    });
  }

  lease(ttlSeconds: number): Promise<MetaLease> {
    return this.run('lease', async () => {
      const grantSent = Date.now();
      const l = this.ns.lease(ttlSeconds, { autoKeepAlive: true });
      // A lease that cannot reach etcd must not crash the node with an unhandled 'lost' event.
      const lostHandlers: ((e: Error) => void)[] = [];
      let validUntil = 0;
      let lost = false;
      l.on('lost', (err) => {
        lost = true;
        this.leases.delete(l);
        for (const fn of lostHandlers) fn(err);
      });
      // Keepalives go out on one stream and are answered in order: each answer renews the lease
      // from the send time of the oldest keepalive still unanswered (a conservative pairing).
      const sent: number[] = [];
      l.on('keepaliveFired', () => void sent.push(Date.now()));
      l.on('keepaliveEstablished', () => void (sent.length = 0));
      l.on('keepaliveFailed', () => void (sent.length = 0));
      l.on('keepaliveSucceeded', (res) => {
        const at = sent.shift();
        const ttl = Number(res.TTL);
        if (at !== undefined && ttl > 0) validUntil = Math.max(validUntil, at + ttl * 1000);
      });
      const id = await l.grant();
      validUntil = Math.max(validUntil, grantSent + ttlSeconds * 1000);
      this.leases.add(l);
      return {
        id,
        validUntil: () => (lost ? 0 : validUntil),
        revoke: async () => {
          this.leases.delete(l);
          await l.revoke().catch(() => l.release());
        },
        onLost: (fn: (e: Error) => void) => void lostHandlers.push(fn),
      };
    });
  }

  async close(): Promise<void> {
    // etcd3 keeps leases alive after close(): revoke (or at least release) them first.
    for (const l of [...this.leases]) await l.revoke().catch(() => l.release());
    this.leases.clear();
    this.client.close();
  }
}
