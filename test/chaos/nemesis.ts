/**
 * The nemesis: while a workload runs, injects one fault at a time on a schedule drawn from a
 * seeded RNG, heals it, waits for the cluster to have every node as a member again, pauses, and
 * goes on; stop() lets the current fault finish, then heals everything (ChaosCluster.heal).
 *
 * The schedule (kinds, targets, durations, gaps) depends on the seed only: kinds come in seeded
 * permutations of the enabled set (each kind once per round, so a short run still sees most
 * kinds), and every fault draws the same number of random values whatever its kind. Which object
 * a move takes is drawn too; where it goes depends on where the object is at that moment.
 */
import { oidHomeNode, type Client } from '@loam/sdk';
import { settlesWithin, type ChaosCluster } from './cluster.js';
import type { Clock, FaultKind, FaultRecord } from './history.js';
import { describeError } from './history.js';
import { Rng } from './rng.js';

export const TX_FAILPOINTS = ['coordinator-after-prepare', 'coordinator-after-decision', 'participant-after-prepare', 'participant-before-commit'] as const;

export interface NemesisOptions {
  cluster: ChaosCluster;
  admin: Client;
  clock: Clock;
  seed: number;
  kinds: readonly FaultKind[];
  /** Failpoints a `failpoint` fault may arm (node/src/failpoints.ts). */
  failpoints: readonly string[];
  /** Oids a move or replicate (and the replicate-after-copy failpoint) may take. */
  objects: () => readonly string[];
  /** Quiet time before each fault, ms. */
  gapMs: [number, number];
  log: (line: string) => void;
}

/** One planned fault: every random value it may need, drawn up front. */
export interface PlannedFault {
  kind: FaultKind;
  gapMs: number;
  node: number;
  member: number;
  durationMs: number;
  pauseMs: number;
  object: number;
  dest: number;
  failpoint: string;
  /**
   * What a pause does besides freezing: 0 nothing; 1 move an object onto the frozen node; 2
   * replicate one onto it; 3 move an object off it, freezing it `durationMs % 40` ms into the
   * move; 4 move an object whose home is the frozen node between two other nodes.
   */
  variant: number;
}

/** The first `count` faults the nemesis would inject with this seed (what a run prints). */
export function planFaults(seed: number, kinds: readonly FaultKind[], failpoints: readonly string[], gapMs: [number, number], count: number): PlannedFault[] {
  const plan = new Planner(seed, kinds, failpoints, gapMs);
  return Array.from({ length: count }, () => plan.next());
}

class Planner {
  private readonly rng: Rng;
  private round: FaultKind[] = [];
  private drained = false;

  constructor(seed: number, private readonly kinds: readonly FaultKind[], private readonly failpoints: readonly string[], private readonly gapMs: [number, number]) {
    this.rng = Rng.derive(seed, 'nemesis');
  }

  next(): PlannedFault {
    if (this.round.length === 0) this.round = this.rng.shuffle(this.kinds);
    let kind = this.round.shift()!;
    // A drain empties a node for good (until it restarts): once per run.
    if (kind === 'drain') {
      if (this.drained) kind = 'move';
      this.drained = true;
    }
    return {
      kind,
      gapMs: this.rng.int(this.gapMs[0], this.gapMs[1]),
      node: this.rng.int(0, 1 << 20),
      member: this.rng.int(0, 1 << 20),
      durationMs: this.rng.int(300, 2500),
      pauseMs: this.rng.int(4000, 7000), // past the 3 s member lease
      object: this.rng.int(0, 1 << 20),
      dest: this.rng.int(0, 1 << 20),
      failpoint: this.failpoints.length > 0 ? this.rng.pick(this.failpoints) : '',
      variant: this.rng.int(0, 4),
    };
  }
}

export class Nemesis {
  readonly faults: FaultRecord[] = [];
  private readonly planner: Planner;
  private stopping = false;
  private wake?: () => void;
  private loop?: Promise<void>;
  private failure: unknown;

  constructor(private readonly o: NemesisOptions) {
    this.planner = new Planner(o.seed, o.kinds, o.failpoints, o.gapMs);
  }

  start(): void {
    this.loop = this.run().catch((e: unknown) => {
      this.failure = e;
      this.o.log(`nemesis stopped by an error: ${String(e)}`);
    });
  }

  /** Lets the fault in progress finish, then heals everything; rethrows a heal that failed. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.wake?.();
    await this.loop;
    const t0 = this.o.clock.now();
    await this.o.cluster.heal(this.o.admin);
    this.o.log(`nemesis: healed everything in ${((this.o.clock.now() - t0) / 1000).toFixed(1)} s`);
    if (this.failure) throw this.failure;
  }

  /** The nemesis's own schedule: the one place a chaos run sleeps on purpose; stop() cuts it short. */
  private sleep(ms: number): Promise<void> {
    if (this.stopping) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      function done() {
        clearTimeout(t);
        resolve();
      }
      this.wake = done;
    });
  }

  /** A fixed wait that stop() does not cut short (a fault's own duration). */
  private hold(ms: number): Promise<void> {
    return new Promise((r) => setTimeout(r, ms));
  }

  private async run(): Promise<void> {
    while (!this.stopping) {
      const f = this.planner.next();
      await this.sleep(f.gapMs);
      if (this.stopping) break;
      await this.inject(f);
      try {
        await this.o.cluster.waitMembers(this.o.admin, 60_000);
      } catch (e) {
        this.o.log(`nemesis: the cluster did not get all its members back after ${f.kind}: ${String(e)}`);
      }
    }
  }

  private record(kind: FaultKind, target: string, start: number, note?: string): void {
    const end = this.o.clock.now();
    this.faults.push({ kind, target, start, end, note });
    this.o.log(`nemesis ${(start / 1000).toFixed(1)}-${(end / 1000).toFixed(1)} s: ${kind} ${target}${note ? ` (${note})` : ''}`);
  }

  private async inject(f: PlannedFault): Promise<void> {
    const { cluster, admin, clock } = this.o;
    const slots = cluster.slots;
    const i = f.node % slots.length;
    const node = slots[i];
    const start = clock.now();
    switch (f.kind) {
      case 'kill': {
        await cluster.kill(i);
        await this.hold(f.durationMs);
        await cluster.restart(i);
        this.record('kill', `node ${node.number}`, start, `kill -9, down ${f.durationMs} ms, restarted on its data dir and port`);
        return;
      }
      case 'pause': {
        // Faults come one at a time, so this is where a move or a replicate meets a frozen node.
        const action = f.variant === 0 ? undefined : await this.pickForPause(f.variant, node.number, f.object);
        let during = Promise.resolve(f.variant !== 0 && !action ? ` (no object to move or replicate for variant ${f.variant})` : '');
        const begun = clock.now(); // the freeze, or the move the freeze lands in
        if (action && f.variant === 3) {
          during = action(); // the move starts first: the freeze lands in the middle of it
          await this.hold(f.durationMs % 40);
        }
        cluster.pause(i);
        if (action && f.variant !== 3) during = action();
        await this.hold(f.pauseMs);
        cluster.resume(i);
        this.record('pause', `node ${node.number}`, begun, `SIGSTOP for ${f.pauseMs} ms${await during}, then SIGCONT`);
        return;
      }
      case 'etcd-kill': {
        const m = f.member % cluster.etcd.members.length;
        await cluster.etcd.stopMember(m, 'SIGKILL');
        await this.hold(f.durationMs + 700);
        await cluster.etcd.startMember(m);
        this.record('etcd-kill', `etcd ${cluster.etcd.members[m].name}`, start, `kill -9, down ${f.durationMs + 700} ms`);
        return;
      }
      case 'drain': {
        const res = await admin.drain(node.number, { timeoutMs: 90_000 }).then(
          (r) => `moved ${r.moved} objects, node ${r.homeSuccessor} serves its home directory`,
          (e: unknown) => `drain failed: ${describeError(e)}`,
        );
        if (!res.startsWith('drain failed')) node.drained = true;
        this.record('drain', `node ${node.number}`, start, res);
        return;
      }
      case 'move':
      case 'replicate': {
        const objects = this.o.objects();
        const oid = objects[f.object % objects.length];
        const what = `object ${f.object % objects.length}`;
        let note: string;
        try {
          const loc = await admin.locate(oid);
          const taken = new Set([loc.master.number, ...(f.kind === 'replicate' ? loc.replicas.map((r) => r.number) : [])]);
          const dests = slots.filter((s) => !taken.has(s.number) && !s.drained);
          if (dests.length === 0) {
            this.record(f.kind, what, start, `nowhere to ${f.kind} it (master ${loc.master.number}, replicas ${loc.replicas.map((r) => r.number).join(',') || 'none'})`);
            return;
          }
          const dest = dests[f.dest % dests.length].number;
          note = `${loc.master.number} -> ${dest}: `;
          note += f.kind === 'move'
            ? await admin.move(oid, dest, { timeoutMs: 60_000 }).then(() => 'moved', (e: unknown) => `failed: ${describeError(e)}`)
            : await admin.replicate(oid, dest, { timeoutMs: 60_000 }).then(() => 'replicated', (e: unknown) => `failed: ${describeError(e)}`);
        } catch (e) {
          note = `locate failed: ${describeError(e)}`;
        }
        this.record(f.kind, what, start, note);
        return;
      }
      case 'failpoint': {
        // A drained node holds nothing, so it would reach no failpoint: arm a node that serves.
        const serving = slots.filter((s) => !s.drained);
        const target = serving[f.node % serving.length] ?? node;
        await this.failpoint(f, target.index, start);
        return;
      }
    }
  }

  /** Restarts node i with a failpoint armed, waits (bounded) for it to crash there, restarts it unarmed. */
  private async failpoint(f: PlannedFault, i: number, start: number): Promise<void> {
    const { cluster } = this.o;
    const node = cluster.slots[i];
    await cluster.restart(i, f.failpoint);
    // replicate-after-copy is reached only by a replicate that this node runs as master.
    const trigger = f.failpoint === 'replicate-after-copy' ? this.replicateFrom(node.number, f.dest) : Promise.resolve('');
    const waitMs = f.pauseMs + 2000;
    const fired = await settlesWithin(cluster.exited(i), waitMs);
    const triggered = await trigger;
    await cluster.restart(i);
    this.record('failpoint', `node ${node.number}`, start, `restarted with LOAM_FAILPOINTS=${f.failpoint}${triggered}: ${fired ? 'it crashed there' : `not reached within ${waitMs} ms`}; restarted unarmed`);
  }

  /**
   * Chooses (while every node answers) what a pause of node `frozen` does meanwhile (see
   * PlannedFault.variant); the returned function starts it and says how it went.
   */
  private async pickForPause(variant: number, frozen: number, pick: number): Promise<(() => Promise<string>) | undefined> {
    const { admin, cluster } = this.o;
    const objects = this.o.objects();
    const others = cluster.slots.filter((s) => s.number !== frozen && !s.drained).map((s) => s.number);
    for (let j = 0; j < objects.length; j++) {
      const k = (pick + j) % objects.length;
      const loc = await admin.locate(objects[k]).catch(() => undefined);
      if (!loc) continue;
      const master = loc.master.number;
      let kind: 'move' | 'replicate' = 'move';
      let dest: number | undefined;
      if (variant === 1 || variant === 2) {
        kind = variant === 1 ? 'move' : 'replicate';
        if (master !== frozen && !(kind === 'replicate' && loc.replicas.some((r) => r.number === frozen))) dest = frozen;
      } else if (variant === 3) {
        if (master === frozen) dest = others[pick % Math.max(1, others.length)];
      } else if (oidHomeNode(objects[k]) === frozen && master !== frozen) {
        dest = others.find((n) => n !== master);
      }
      if (dest === undefined) continue;
      const to = dest;
      return async () => {
        const call = kind === 'move' ? admin.move(objects[k], to, { timeoutMs: 10_000 }) : admin.replicate(objects[k], to, { timeoutMs: 10_000 });
        const res = await call.then(() => 'done', (e: unknown) => describeError(e));
        return `, meanwhile ${kind} object ${k} ${master} -> ${to}${variant === 4 ? ` (its home is node ${frozen})` : ''}: ${res.slice(0, 100)}`;
      };
    }
    return undefined;
  }

  /** Replicates an object that node `master` masters to a node that has no copy yet; says which. */
  private async replicateFrom(master: number, pick: number): Promise<string> {
    const { admin, cluster } = this.o;
    const objects = this.o.objects();
    for (const [k, oid] of objects.entries()) {
      const loc = await admin.locate(oid).catch(() => undefined);
      if (!loc || loc.master.number !== master) continue;
      const taken = new Set([master, ...loc.replicas.map((r) => r.number)]);
      const dests = cluster.slots.filter((s) => !taken.has(s.number) && !s.drained);
      if (dests.length === 0) continue;
      const dest = dests[pick % dests.length].number;
      const res = await admin.replicate(oid, dest, { timeoutMs: 30_000 }).then(() => 'done', (e: unknown) => describeError(e));
      return `, then replicate object ${k} ${master} -> ${dest} (${res.slice(0, 80)})`;
    }
    return ', but it masters no object that could get another replica';
  }
}
