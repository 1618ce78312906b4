/**
 * Leader election through a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it:
 * get, then create or update with the read resourceVersion as the compare-and-swap, so two
 * candidates can never both believe they won the same round.
 *
 * - A lease held by another is taken over only once it has gone unrenewed for its
 *   leaseDurationSeconds, measured on our own clock from when we last saw it change (never from
 *   its renewTime: clocks of two pods may disagree).
 * - The leader renews every `renewIntervalMs`; if no renew has succeeded for `renewDeadlineMs`
 *   (under the lease duration) it stops leading at once, before another candidate can take the
 *   lease over, so two leaders never reconcile at the same time.
 * - stop() releases a held lease (holder cleared, duration 1 s), so a successor need not wait out
 *   the whole lease.
 */
import os from 'node:os';
import { CoordinationV1Api, V1MicroTime, type KubeConfig, type V1Lease } from '@kubernetes/client-node';
import { apiErrorCode, describeError } from './errors.js';
import type { RuntimeLog } from './log.js';

export interface LeaderElectionOptions {
  /** The Lease's namespace. */
  namespace: string;
  /** The Lease's name. */
  name: string;
  /** This candidate's identity (default: env POD_NAME, else hostname + pid). */
  identity?: string;
  /** Default 15. */
  leaseDurationSeconds?: number;
  /** How often the leader renews (default 5 s). */
  renewIntervalMs?: number;
  /** The leader steps down when no renew succeeded for this long (default 10 s; under the lease duration). */
  renewDeadlineMs?: number;
  /** How often a candidate tries to acquire (default 2 s). */
  retryIntervalMs?: number;
}

export interface LeaderCallbacks {
  onStartedLeading(): void;
  onStoppedLeading(): void;
}

export function defaultIdentity(): string {
  return process.env.POD_NAME || `${os.hostname()}-${process.pid}`;
}

type Attempt = 'leader' | 'follower' | 'error';

export class LeaderElector {
  readonly identity: string;
  private readonly api: CoordinationV1Api;
  private readonly durationS: number;
  private readonly renewMs: number;
  private readonly deadlineMs: number;
  private readonly retryMs: number;
  private leading = false;
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;
  private deadlineTimer: NodeJS.Timeout | undefined;
  private tick: Promise<void> = Promise.resolve();
  /** The lease record as we last saw it, and when (our clock): for the expiry of another's lease. */
  private observed: { key: string; at: number } | undefined;

  constructor(
    kc: KubeConfig,
    private readonly opts: LeaderElectionOptions,
    private readonly callbacks: LeaderCallbacks,
    private readonly log: RuntimeLog,
  ) {
    this.api = kc.makeApiClient(CoordinationV1Api);
    this.identity = opts.identity ?? defaultIdentity();
    this.durationS = opts.leaseDurationSeconds ?? 15;
    this.renewMs = opts.renewIntervalMs ?? 5000;
    this.deadlineMs = opts.renewDeadlineMs ?? 10_000;
    this.retryMs = opts.retryIntervalMs ?? 2000;
    if (this.deadlineMs >= this.durationS * 1000) throw new RangeError(`renewDeadlineMs (${this.deadlineMs}) must be under the lease duration (${this.durationS} s)`);
    if (this.renewMs >= this.deadlineMs) throw new RangeError(`renewIntervalMs (${this.renewMs}) must be under renewDeadlineMs (${this.deadlineMs})`);
  }

  get isLeader(): boolean {
    return this.leading;
  }

  start(): void {
    this.schedule(0);
  }

  /** Stops campaigning; a leader stops leading and releases the lease (best effort). */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearTimeout(this.timer);
    await this.tick;
    this.stepDown('stopping');
    // Even when not leading: a round that was acquiring as stop() began may have won the lease.
    await this.release();
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.tick = this.round().catch((e: unknown) => this.log.error({ err: describeError(e) }, 'leader election round failed'));
    }, ms);
  }

  private async round(): Promise<void> {
    if (this.stopped) return;
    const startedAt = Date.now();
    // A renew that hangs must not outlive the deadline: its late success would be unsafe to count.
    const result = await withTimeout(this.tryAcquireOrRenew(startedAt), Math.max(1000, this.renewMs), 'error' as Attempt);
    if (this.stopped) return;
    if (result === 'leader') {
      this.renewed(startedAt);
      this.schedule(this.renewMs);
      return;
    }
    if (result === 'follower' && this.leading) this.stepDown('another candidate holds the lease');
    // An error leaves a leader leading until its renew deadline (the deadline timer ends it).
    this.schedule(this.leading ? Math.min(this.retryMs, this.renewMs) : jitter(this.retryMs));
  }

  private renewed(at: number): void {
    clearTimeout(this.deadlineTimer);
    const left = at + this.deadlineMs - Date.now();
    this.deadlineTimer = setTimeout(() => this.stepDown(`no renew succeeded for ${this.deadlineMs} ms`), Math.max(0, left));
    if (!this.leading) {
      this.leading = true;
      this.log.info({ identity: this.identity, lease: `${this.opts.namespace}/${this.opts.name}` }, 'became the leader');
      this.callbacks.onStartedLeading();
    }
  }

  private stepDown(why: string): void {
    clearTimeout(this.deadlineTimer);
    if (!this.leading) return;
    this.leading = false;
    this.log.warn({ identity: this.identity, reason: why }, 'stopped leading');
    this.callbacks.onStoppedLeading();
  }

  private async tryAcquireOrRenew(now: number): Promise<Attempt> {
    const { namespace, name } = this.opts;
    const nowTime = new V1MicroTime(now);
    let lease: V1Lease;
    try {
      lease = await this.api.readNamespacedLease({ name, namespace });
    } catch (e) {
      if (apiErrorCode(e) !== 404) {
        this.log.warn({ err: describeError(e) }, 'reading the leader lease failed');
        return 'error';
      }
      try {
        await this.api.createNamespacedLease({
          namespace,
          body: {
            apiVersion: 'coordination.k8s.io/v1',
            kind: 'Lease',
            metadata: { name, namespace },
            spec: { holderIdentity: this.identity, leaseDurationSeconds: this.durationS, acquireTime: nowTime, renewTime: nowTime, leaseTransitions: 0 },
          },
        });
        return 'leader';
      } catch (e2) {
        if (apiErrorCode(e2) === 409) return 'follower'; // another candidate created it first
        this.log.warn({ err: describeError(e2) }, 'creating the leader lease failed');
        return 'error';
      }
    }
    const spec = lease.spec ?? {};
    const holder = spec.holderIdentity ?? '';
    const key = `${holder}|${String(spec.renewTime ?? '')}|${spec.leaseDurationSeconds ?? ''}`;
    if (this.observed?.key !== key) this.observed = { key, at: Date.now() };
    const mine = holder === this.identity;
    const durationMs = (spec.leaseDurationSeconds ?? this.durationS) * 1000;
    if (holder !== '' && !mine && Date.now() < this.observed.at + durationMs) return 'follower';
    const body: V1Lease = {
      ...lease,
      spec: {
        ...spec,
        holderIdentity: this.identity,
        leaseDurationSeconds: this.durationS,
        renewTime: nowTime,
        acquireTime: mine ? spec.acquireTime : nowTime,
        leaseTransitions: mine ? (spec.leaseTransitions ?? 0) : (spec.leaseTransitions ?? 0) + 1,
      },
    };
    try {
      // The read resourceVersion rides along in metadata: a write by anyone since makes this a 409.
      await this.api.replaceNamespacedLease({ name, namespace, body });
      if (!mine) this.log.info({ previous: holder || null, transitions: body.spec!.leaseTransitions }, 'acquired the leader lease');
      return 'leader';
    } catch (e) {
      if (apiErrorCode(e) === 409) return 'follower';
      this.log.warn({ err: describeError(e) }, 'updating the leader lease failed');
      return 'error';
    }
  }

  private async release(): Promise<void> {
    const { namespace, name } = this.opts;
    try {
      const lease = await this.api.readNamespacedLease({ name, namespace });
      if (lease.spec?.holderIdentity !== this.identity) return;
      await this.api.replaceNamespacedLease({
        name,
        namespace,
        body: { ...lease, spec: { ...lease.spec, holderIdentity: undefined, leaseDurationSeconds: 1, renewTime: new V1MicroTime(Date.now()) } },
      });
      this.log.info({ identity: this.identity }, 'released the leader lease');
    } catch (e) {
      // Not fatal: the successor waits out the lease duration instead.
      this.log.warn({ err: describeError(e) }, 'releasing the leader lease failed');
    }
  }
}

function jitter(ms: number): number {
  return Math.round(ms * (1 + Math.random() * 0.2));
}

async function withTimeout<T>(p: Promise<T>, ms: number, onTimeout: T): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<T>((resolve) => (t = setTimeout(() => resolve(onTimeout), ms)))]);
  } finally {
    clearTimeout(t);
  }
}
