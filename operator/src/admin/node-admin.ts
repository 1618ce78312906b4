/**
 * The operator's NodeAdmin over @loam/sdk: the only way the operator talks to storage nodes
 * (their client gRPC service, at the Pod's IP). One Client per address, kept between reconciles
 * so a resync costs one Status call per node, not a new HTTP/2 connection each time.
 */
import { connect, DeadlineExceededError, LoamError, NodeDrainedError, UnavailableError, type Client } from '@loam/sdk';
import type { NodeAddress, NodeAdmin, NodeAdminStatus } from '../controller/contract.js';

export interface LoamNodeAdminOptions {
  /** Deadline of every call the operator makes to a node, ms (default 10 s). */
  deadlineMs?: number;
  /** How long connecting to a node may take, ms (default 5 s). */
  connectTimeoutMs?: number;
  /** How long startDrain waits for the drain to show as begun, ms (default 15 s). */
  drainStartTimeoutMs?: number;
  /** The dataset the admin connection says hello with (any existing one will do; default "default"). */
  dataset?: string;
}

/** How often startDrain looks at Status while waiting for the drain to begin. */
const DRAIN_POLL_MS = 100;

export class DrainNotStartedError extends LoamError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('UNAVAILABLE', message, {}, options);
  }
}

export class LoamNodeAdmin implements NodeAdmin {
  private readonly clients = new Map<string, Promise<Client>>();
  private readonly deadlineMs: number;
  private readonly connectTimeoutMs: number;
  private readonly drainStartTimeoutMs: number;
  private readonly dataset: string;
  private closed = false;

  constructor(opts: LoamNodeAdminOptions = {}) {
    this.deadlineMs = opts.deadlineMs ?? 10_000;
    this.connectTimeoutMs = opts.connectTimeoutMs ?? 5_000;
    this.drainStartTimeoutMs = opts.drainStartTimeoutMs ?? 15_000;
    this.dataset = opts.dataset ?? 'default';
  }

  /**
   * The cached Client of `address`. A failed connect is not cached (the Pod may not be up yet);
   * a connected Client survives the node's restarts (the sdk's channels reconnect within ~1 s).
   */
  private client(address: string): Promise<Client> {
    if (this.closed) return Promise.reject(new LoamError('UNAVAILABLE', 'the node admin is closed'));
    let c = this.clients.get(address);
    if (!c) {
      c = connect(`loam://${address}/${this.dataset}`, { deadlineMs: this.deadlineMs, connectTimeoutMs: this.connectTimeoutMs });
      this.clients.set(address, c);
      c.catch(() => {
        if (this.clients.get(address) === c) this.clients.delete(address);
      });
    }
    return c;
  }

  /**
   * Runs `fn` on the Client of `address`. When the node is unreachable the Client is dropped and
   * closed: Pod IPs come and go, and a Client kept for every address ever seen would pile up.
   */
  private async use<T>(address: string, fn: (c: Client) => Promise<T>): Promise<T> {
    const p = this.client(address);
    const c = await p;
    try {
      return await fn(c);
    } catch (e) {
      if (e instanceof UnavailableError && !(e instanceof NodeDrainedError) && this.clients.get(address) === p) {
        this.clients.delete(address);
        void c.close();
      }
      throw e;
    }
  }

  async status(via: NodeAddress, timeoutMs = this.deadlineMs): Promise<NodeAdminStatus[]> {
    const all = await this.use(via.address, (c) => c.status({ timeoutMs }));
    // Unreachable members are left out: the caller compares with the Pods it expects, and a node
    // it cannot see is not one it may count as empty.
    return all.flatMap((s) => s.reachable ? [{
      id: s.id, number: s.number, state: s.state, objects: s.objects,
      draining: s.draining && { objectsLeft: s.draining.objectsLeft, objectsTotal: s.draining.objectsTotal },
      s3: s.s3 && { backlogBytes: s.s3.backlogBytes, generation: s.s3.generation, fenced: s.s3.fenced },
    }] : []);
  }

  /**
   * The Drain RPC returns only when the drain ends (minutes for a full node). So it is sent and
   * not awaited: the node runs the drain to the end whatever becomes of the call, and a later
   * startDrain with the same opId joins it. This returns once Status shows the node draining or
   * drained, or throws what the Drain call failed with first (the only node, no such node ...).
   */
  async startDrain(via: NodeAddress, number: number, opId: string): Promise<void> {
    return this.use(via.address, (c) => this.startDrainWith(c, number, opId));
  }

  private async startDrainWith(c: Client, number: number, opId: string): Promise<void> {
    const deadline = Date.now() + this.drainStartTimeoutMs;
    let failed: unknown;
    let done = false;
    // Its deadline only ends the wait for the answer, not the drain; after we return nobody
    // awaits it, so its error is kept here and never left unhandled.
    void c.drain(number, { opId, timeoutMs: this.drainStartTimeoutMs }).then(
      () => void (done = true),
      (e: unknown) => void (failed = e),
    );
    for (;;) {
      if (done) return;
      if (failed !== undefined && !(failed instanceof DeadlineExceededError)) throw failed;
      const left = deadline - Date.now();
      if (left <= 0) throw new DrainNotStartedError(`the drain of node ${number} did not begin within ${this.drainStartTimeoutMs} ms`, { cause: failed });
      const me = (await c.status({ timeoutMs: Math.min(this.deadlineMs, left) })).find((s) => s.number === number);
      if (me?.reachable && (me.draining !== null || me.state === 'drained')) return;
      await new Promise((r) => setTimeout(r, DRAIN_POLL_MS));
    }
  }

  /**
   * Stops the drain of node `number` at its next safe point and makes it a ready member again;
   * also the way back for a node that finished draining (a scale-down undone, or a Pod of a
   * scaled-down ordinal back with its old volume: it comes back drained). Waits for the move in
   * flight, so its deadline is the longer drain one. Throws FailedPreconditionError (from
   * @loam/sdk) when the node cannot safely be made ready yet (retry later).
   */
  async cancelDrain(via: NodeAddress, number: number): Promise<void> {
    await this.use(via.address, (c) => c.cancelDrain(number, { timeoutMs: Math.max(this.deadlineMs, this.drainStartTimeoutMs) * 4 }));
  }

  async close(): Promise<void> {
    this.closed = true;
    const all = [...this.clients.values()];
    this.clients.clear();
    await Promise.all(all.map(async (p) => (await p.catch(() => undefined))?.close()));
  }
}
