/**
 * Model-based property test of the storage engine: random sequences of operations run against a
 * real Engine in a temp dir and, alongside, against a model made of plain Maps. After every step
 * (and after every restart, crash and compaction) every key the model knows is compared.
 *
 * Operations: commits (creates, updates, deletes, reads, aliases; some must fail with a typed
 * error and change nothing), several calls at once (sharing group commits), moveOut / install,
 * installReplicas / dropReplicas, setReplicas, setDirectory, clearForwards, prepare / finish,
 * compaction (also meeting a failing file call), segment rolls (1-4 KiB segments), clean
 * restarts, a full disk (ENOSPC mid-write), and crashes: FaultyFiles.crashAtByte(k), after which
 * the directory is reopened on plain files. A call refused by a crash or a full disk may or may
 * not be in the log afterwards (the model keeps both possibilities, ordered as the log is, and
 * takes whichever the reopened engine holds); every call that resolved must be there.
 *
 * Replay a failure:  LOAM_PROP_SEED=<seed> LOAM_PROP_PATH=<path> npx vitest run node/test/engine-model.test.ts
 *                    (LOAM_PROP_TRACE=1 prints each step as it runs)
 * More runs:         LOAM_PROP_RUNS=2000 (default 100; LOAM_PROP_OPS: max ops per run, default 40)
 * Is it reaching things: LOAM_PROP_STATS=1 prints how each kind of call ended
 * Also: LOAM_PROP_TIME_MS (budget for runs and shrinking), LOAM_PROP_TMP (where data dirs go)
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { afterAll, describe, it } from 'vitest';
import fc from 'fast-check';
import { Engine, type CommitInput, type CompactionResult, type StoredObject } from '../dist/storage/engine.js';
import { LocalFiles } from '../dist/storage/segment-files.js';
import { FaultyFiles, type Fault } from '../dist/storage/faulty-files.js';
import {
  newTxid, oidHomeNode, AliasExistsError, AlreadyExistsError, InvalidArgumentError, NotFoundError, ReadConflictError,
  UnavailableError, WriteConflictError,
} from '@loam/sdk';

// ---------------------------------------------------------------- the universe of keys

const DS = ['default', 'ds2'] as const;
/**
 * Deterministic oids (replays must name the same keys): o0-o3 homed on this node (1), o4-o5 on
 * node 2; o6-o9 are "cold" filler objects that only `fill` writes, so some old segments stay
 * mostly live and are not compacted while newer ones are (what a dropped tombstone needs to show).
 */
const N_HOT = 6;
const OIDS = Array.from({ length: 10 }, (_, i) => `000${i < 4 || i >= N_HOT ? 1 : 2}` + '0'.repeat(27) + i.toString(16));
const ALIASES = ['a0', 'a1', 'a2'];
/**
 * Oids are global but each lives in one dataset: commits of a dataset mostly name oids of its own
 * pool; o3 is in both pools, so a dataset sometimes meets an object of the other one.
 */
const POOLS = [[0, 1, 2, 3, 4, 0], [5, 5, 3]];
const pooled = (ds: number, o: number) => OIDS[POOLS[ds][o % POOLS[ds].length]];
/** Fixed time base for txids: wait-die order (and so the run) is the same on every replay. */
const TX_BASE = 1_700_000_000_000;

const envInt = (name: string, dflt: number): number => {
  const v = process.env[name];
  return v === undefined || v === '' ? dflt : Number(v);
};
const RUNS = envInt('LOAM_PROP_RUNS', 100);
const MAX_OPS = envInt('LOAM_PROP_OPS', 40);
const SEED = process.env.LOAM_PROP_SEED ? Number(process.env.LOAM_PROP_SEED) : undefined;
const PATH = process.env.LOAM_PROP_PATH || undefined;
/** Runs and shrinking stop after this long (a failure is reported with the smallest case found so far). */
const TIME_MS = envInt('LOAM_PROP_TIME_MS', Math.max(90_000, RUNS * 1_000));
/** One run takes well under a second; one that takes this long is stuck. */
const RUN_TIMEOUT_MS = 10_000;
/**
 * Where runs keep their data: tmpfs when there is one. Crashes are simulated above the file
 * system (FaultyFiles), so a real disk's syncs would only make the runs slower (about half the
 * time here), not test more. LOAM_PROP_TMP overrides.
 */
const TMP = process.env.LOAM_PROP_TMP || (fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir());
/** LOAM_PROP_STATS=1 prints how often each operation ran and how it ended (is the test reaching what it should?). */
const STATS = process.env.LOAM_PROP_STATS === '1';
const stats = new Map<string, number>();
const count = (k: string) => {
  if (STATS) stats.set(k, (stats.get(k) ?? 0) + 1);
};

// ---------------------------------------------------------------- the model

interface Obj { ds: number; version: number; className: string; state: string; origin: string }
type Effect = { kind: 'put'; oid: string; obj: Obj } | { kind: 'del'; oid: string };
interface PreparedPart { coordinator: number; ds: number; effects: Effect[]; versions: number[]; locked: string[] }

/** What the engine should hold, in the engine's own record-level terms. */
class Model {
  objects = new Map<string, Obj>();
  aliases = new Map<string, string>(); // `${ds}/${alias}` -> oid
  forwards = new Map<string, number>();
  directory = new Map<string, { master: number; replicas: number[] }>();
  replicaSets = new Map<string, number[]>();
  replicaOf = new Map<string, number>();
  prepared = new Map<string, PreparedPart>();
  /** Not compared: the highest version each oid ever had here, so installs bring plausible versions. */
  lastVersion = new Map<string, number>();

  clone(): Model {
    const m = new Model();
    m.objects = new Map(this.objects);
    m.aliases = new Map(this.aliases);
    m.forwards = new Map(this.forwards);
    m.directory = new Map(this.directory);
    m.replicaSets = new Map(this.replicaSets);
    m.replicaOf = new Map(this.replicaOf);
    m.prepared = new Map(this.prepared);
    m.lastVersion = new Map(this.lastVersion);
    return m;
  }

  lockHolder(oid: string): string | undefined {
    for (const [txid, p] of this.prepared) if (p.locked.includes(oid)) return txid;
    return undefined;
  }

  put(oid: string, obj: Obj): void {
    this.objects.set(oid, obj);
    this.lastVersion.set(oid, Math.max(this.lastVersion.get(oid) ?? 0, obj.version));
  }

  /** A Delete record: the object goes, and with it the mark of being a replica copy. */
  del(oid: string): void {
    this.objects.delete(oid);
    this.replicaOf.delete(oid);
  }

  applyEffects(effects: Effect[]): void {
    for (const e of effects) (e.kind === 'put' ? this.put(e.oid, e.obj) : this.del(e.oid));
  }

  /** The version an object has in `ds` as a client of that dataset sees it (0: none). */
  versionIn(oid: string, ds: number): number {
    const o = this.objects.get(oid);
    return o && o.ds === ds ? o.version : 0;
  }
}

// ---------------------------------------------------------------- generated operations

type Ver = 'ok' | 'bad';
interface Touch { o: number; k: 'w' | 'd' | 'r'; v: Ver; size: number; origin: boolean }
interface AliasOp { set: boolean; a: number; o: number }
type SubOp =
  | { t: 'commit'; ds: number; touches: Touch[]; aliases: AliasOp[] }
  | { t: 'moveOut'; os: number[]; stale: boolean; target: number }
  | { t: 'install'; ds: number; os: number[]; bump: number; replicas: number[] }
  | { t: 'installReplicas'; ds: number; os: number[]; master: number; delta: number }
  | { t: 'dropReplicas'; ds: number; os: number[] }
  | { t: 'setReplicas'; ds: number; o: number; nodes: number[] }
  | { t: 'setDirectory'; entries: { o: number; master: number; replicas: number[] }[] }
  | { t: 'clearForwards'; os: number[] }
  | { t: 'prepare'; ds: number; touches: Touch[]; coordinator: number; withAlias: boolean }
  | { t: 'reprepare'; i: number }
  | { t: 'finish'; i: number; commit: boolean; unknown: boolean }
  | { t: 'compact'; all: boolean }
  | { t: 'fill'; o: number; size: number };
/** crash: the process dies at byte k of what is written from now on (`then`: a group issued at once). */
type Op = SubOp | { t: 'group'; ops: SubOp[] } | { t: 'restart' } | { t: 'crash'; k: number; then: SubOp[] }
  /** diskFull: the next `on` call fails with ENOSPC, `partial` bytes of a write reaching the file. */
  | { t: 'diskFull'; on: 'write' | 'create'; partial: number; then: SubOp[] }
  | { t: 'compactFault'; on: 'replace' | 'remove' | 'readWhole'; all: boolean };

const oidIdx = fc.nat({ max: N_HOT - 1 });
const dsIdx = fc.oneof({ arbitrary: fc.constant(0), weight: 5 }, { arbitrary: fc.constant(1), weight: 1 });
const node = fc.constantFrom(2, 3, 4);
const touchArb: fc.Arbitrary<Touch> = fc.record({
  o: oidIdx,
  k: fc.constantFrom('w', 'w', 'd', 'r') as fc.Arbitrary<Touch['k']>,
  v: fc.oneof({ arbitrary: fc.constant('ok'), weight: 8 }, { arbitrary: fc.constant('bad'), weight: 1 }) as fc.Arbitrary<Ver>,
  // Mostly small objects, some large enough to fill a small segment quickly.
  size: fc.oneof({ arbitrary: fc.nat({ max: 120 }), weight: 3 }, { arbitrary: fc.nat({ max: 1500 }), weight: 1 }),
  origin: fc.boolean(),
});
// Rarely empty: an empty commit is only one of the invalid cases.
const touches = fc.oneof(
  { weight: 1, arbitrary: fc.constant<Touch[]>([]) },
  { weight: 12, arbitrary: fc.uniqueArray(touchArb, { selector: (t) => t.o, minLength: 1, maxLength: 3 }) },
);
const aliasOp: fc.Arbitrary<AliasOp> = fc.record({ set: fc.boolean(), a: fc.nat({ max: ALIASES.length - 1 }), o: oidIdx });
const oidSet = (max: number) => fc.uniqueArray(oidIdx, { minLength: 1, maxLength: max });

/** Writes that should all succeed (fresh state written to every object of the pool it names). */
const cleanCommit: fc.Arbitrary<SubOp> = fc.record({
  t: fc.constant('commit' as const),
  ds: dsIdx,
  touches: fc.uniqueArray(fc.record({ o: oidIdx, k: fc.constant('w' as const), v: fc.constant('ok' as const), size: fc.nat({ max: 200 }), origin: fc.constant(false) }), { selector: (t) => t.o, minLength: 1, maxLength: 2 }),
  aliases: fc.constant<AliasOp[]>([]),
});
/** Mostly false: `weight` in `1 + weight`. */
const rarely = (weight: number) => fc.oneof({ weight, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) });
const commitArb = fc.record({
  t: fc.constant('commit' as const),
  ds: dsIdx,
  touches,
  aliases: fc.oneof(
    { weight: 4, arbitrary: fc.constant<AliasOp[]>([]) },
    { weight: 2, arbitrary: fc.array(aliasOp, { minLength: 1, maxLength: 1 }) },
    { weight: 1, arbitrary: fc.array(aliasOp, { minLength: 2, maxLength: 2 }) },
  ),
});
const subOpArb: fc.Arbitrary<SubOp> = fc.oneof(
  { weight: 12, arbitrary: commitArb },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('moveOut' as const), os: oidSet(2), stale: rarely(5), target: node }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('install' as const), ds: dsIdx, os: oidSet(2), bump: fc.nat({ max: 2 }), replicas: fc.array(node, { maxLength: 2 }) }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('installReplicas' as const), ds: dsIdx, os: oidSet(2), master: node, delta: fc.integer({ min: -1, max: 2 }) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('dropReplicas' as const), ds: dsIdx, os: oidSet(3) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('setReplicas' as const), ds: dsIdx, o: oidIdx, nodes: fc.array(node, { maxLength: 3 }) }) },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant('setDirectory' as const),
      entries: fc.uniqueArray(fc.record({ o: oidIdx, master: fc.constantFrom(1, 2, 3), replicas: fc.uniqueArray(node, { maxLength: 2 }) }), { selector: (e) => e.o, minLength: 1, maxLength: 2 }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('clearForwards' as const), os: oidSet(3) }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant('prepare' as const), ds: dsIdx, touches, coordinator: node, withAlias: rarely(12) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('reprepare' as const), i: fc.nat({ max: 3 }) }) },
  { weight: 4, arbitrary: fc.record({ t: fc.constant('finish' as const), i: fc.nat({ max: 3 }), commit: fc.boolean(), unknown: rarely(8) }) },
  { weight: 4, arbitrary: fc.record({ t: fc.constant('compact' as const), all: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('fill' as const), o: fc.nat({ max: OIDS.length - N_HOT - 1 }), size: fc.integer({ min: 200, max: 1500 }) }) },
);
/** What runs right after a fault is armed: calls at once, often plain writes (so the fault meets several). */
const burst = (min: number, max: number) => fc.array(fc.oneof(cleanCommit, subOpArb), { minLength: min, maxLength: max });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 10, arbitrary: subOpArb },
  // Several calls at once share group commits (two writes in flight, the rest queued into the
  // next): only then can a crash keep a batch whose call was already refused.
  { weight: 3, arbitrary: fc.record({ t: fc.constant('group' as const), ops: fc.array(subOpArb, { minLength: 2, maxLength: 6 }) }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('restart' as const) }) },
  // Most crash points fall inside the next write or two; some several writes later.
  { weight: 1, arbitrary: fc.record({ t: fc.constant('crash' as const), k: fc.oneof(fc.nat({ max: 250 }), fc.nat({ max: 4000 })), then: fc.constant<SubOp[]>([]) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('crash' as const), k: fc.nat({ max: 700 }), then: burst(3, 6) }) },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant('diskFull' as const),
      on: fc.constantFrom('write', 'write', 'create') as fc.Arbitrary<'write' | 'create'>,
      partial: fc.nat({ max: 400 }),
      then: fc.oneof(fc.constant<SubOp[]>([]), burst(2, 5)),
    }),
  },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('compactFault' as const), on: fc.constantFrom('replace', 'remove', 'readWhole') as fc.Arbitrary<'replace' | 'remove' | 'readWhole'>, all: fc.boolean() }) },
);
const scenarioArb = fc.record({
  ops: fc.array(opArb, { minLength: 5, maxLength: MAX_OPS, size: 'max' }),
  segBytes: fc.constantFrom(1024, 1024, 2048, 4096),
  // A 1-byte cache stores nothing: every read goes to the segment files (rewritten ones too).
  noCache: fc.boolean(),
});

// ---------------------------------------------------------------- plans: an op resolved against the model

type ErrClass = abstract new (...args: never[]) => Error;
interface Plan {
  desc: string;
  /** 'cp' (commit, prepare): validated against in-flight state, so they may share keys in a group. */
  kind: 'cp' | 'other' | 'compact';
  keys: string[];
  /** Calls the engine synchronously up to its append, so a group's appends go in call order. */
  run(e: Engine): Promise<unknown>;
  /** Non-empty: the call must reject with one of these, changing nothing. */
  errors: Set<ErrClass>;
  /** What the call resolves with (undefined: not checked). */
  result?: unknown;
  /** Whether success appends a batch (decides what a crash may have lost). */
  writes: boolean;
  apply(m: Model): void;
}

interface Ctx { seq: number; tx: number }

function stateFor(ctx: Ctx, size: number): { className: string; state: string } {
  const n = ctx.seq++;
  return { className: `C${n % 3}`, state: `s${n}:` + 'x'.repeat(size) };
}

const uniq = <T>(xs: T[]): T[] => [...new Set(xs)];
/** A replica set as the engine documents storing it: each node once, ascending. */
const nodeSet = (nodes: number[]): number[] => uniq(nodes).sort((a, b) => a - b);
/** Txids carry their creation order first: t<n> is the n-th made in this run. */
const txLabel = (txid: string) => `t${parseInt(txid.slice(0, 12), 16) - TX_BASE}`;

/** The commit input of generated touches ('ok': the version a reader of `ds` saw; 'bad': another). */
function buildInput(m: Model, ctx: Ctx, ds: number, ts: Touch[]): CommitInput {
  const writes: NonNullable<CommitInput['writes']> = [];
  const deletes: NonNullable<CommitInput['deletes']> = [];
  const reads: NonNullable<CommitInput['reads']> = [];
  const seen = new Set<string>();
  for (const t of ts) {
    const oid = pooled(ds, t.o);
    if (seen.has(oid)) continue; // two touches landed on one oid: keep the first
    seen.add(oid);
    const have = m.versionIn(oid, ds);
    const write = (expectedVersion: number) => {
      const { className, state } = stateFor(ctx, t.size);
      writes.push({ oid, className, state: Buffer.from(state), expectedVersion, ...(t.origin ? { origin: pooled(ds, t.o + 1) } : {}) });
    };
    if (t.k === 'w' || (t.k === 'd' && t.v === 'ok' && have === 0)) {
      write(t.v === 'ok' ? have : have > 0 ? (t.size % 2 ? have + 1 : 0) : 1);
    } else if (t.k === 'd') {
      deletes.push({ oid, expectedVersion: t.v === 'ok' ? have : have + 1 });
    } else {
      reads.push({ oid, version: t.v === 'ok' ? have : have + 1 });
    }
  }
  return { dataset: DS[ds], writes, deletes, reads };
}

/**
 * The model's judgement of a commit (or a prepare's validation): every typed error its problems
 * justify (the engine must throw one of them), or the effects and versions of success.
 */
function judge(m: Model, ds: number, input: CommitInput, forPrepare: boolean): { errors: Set<ErrClass>; effects: Effect[]; versions: number[]; aliasFx: [string, string | null][] } {
  const errors = new Set<ErrClass>();
  const writes = input.writes ?? [], deletes = input.deletes ?? [], reads = input.reads ?? [];
  const aliasSets = input.aliasSets ?? [], aliasDeletes = input.aliasDeletes ?? [];
  if (writes.length + deletes.length + reads.length + aliasSets.length + aliasDeletes.length === 0) errors.add(InvalidArgumentError);
  if (forPrepare && aliasSets.length + aliasDeletes.length > 0) errors.add(InvalidArgumentError);
  const names = [...aliasSets.map((a) => a.alias), ...aliasDeletes];
  if (new Set(names).size !== names.length) errors.add(InvalidArgumentError);
  const touched = [...writes.map((w) => w.oid), ...deletes.map((d) => d.oid)];
  if (new Set(touched).size !== touched.length) errors.add(InvalidArgumentError); // an object written twice
  for (const oid of touched) if (m.lockHolder(oid)) errors.add(WriteConflictError);
  for (const r of reads) if (m.lockHolder(r.oid)) errors.add(ReadConflictError);
  const effects: Effect[] = [];
  const versions: number[] = [];
  for (const w of writes) {
    const cur = m.objects.get(w.oid);
    if (cur && cur.ds !== ds) errors.add(NotFoundError);
    else if (w.expectedVersion === 0 && cur) errors.add(AlreadyExistsError);
    else if (w.expectedVersion !== 0 && (cur?.version ?? 0) !== w.expectedVersion) errors.add(WriteConflictError);
    const version = (cur?.version ?? 0) + 1;
    versions.push(version);
    effects.push({ kind: 'put', oid: w.oid, obj: { ds, version, className: w.className, state: w.state.toString(), origin: w.origin ?? '' } });
  }
  for (const d of deletes) {
    const cur = m.objects.get(d.oid);
    if ((cur?.version ?? 0) !== d.expectedVersion || (cur && cur.ds !== ds)) errors.add(WriteConflictError);
    effects.push({ kind: 'del', oid: d.oid });
  }
  // A read of an object the commit also writes is covered by the write's check.
  for (const r of reads) if (!touched.includes(r.oid) && m.versionIn(r.oid, ds) !== r.version) errors.add(ReadConflictError);
  const created = new Set(writes.filter((w) => w.expectedVersion === 0).map((w) => w.oid));
  const deleted = new Set(deletes.map((d) => d.oid));
  const aliasFx: [string, string | null][] = [];
  for (const a of aliasSets) {
    const key = `${ds}/${a.alias}`;
    if (m.aliases.has(key)) errors.add(AliasExistsError);
    const exists = (created.has(a.oid) || m.versionIn(a.oid, ds) !== 0) && !deleted.has(a.oid);
    if (!exists) errors.add(NotFoundError);
    aliasFx.push([key, a.oid]);
  }
  for (const alias of aliasDeletes) {
    const key = `${ds}/${alias}`;
    if (!m.aliases.has(key)) errors.add(NotFoundError);
    aliasFx.push([key, null]);
  }
  return { errors, effects, versions, aliasFx };
}

const none = new Set<ErrClass>();
const obj = (o: StoredObject): Obj => ({ ds: 0, version: o.version, className: o.className, state: o.state.toString(), origin: o.origin });

/** Resolves a generated op against the model's current state; undefined: nothing to do here. */
function plan(m: Model, ctx: Ctx, op: SubOp): Plan | undefined {
  switch (op.t) {
    case 'commit': {
      const input = buildInput(m, ctx, op.ds, op.touches);
      input.aliasSets = op.aliases.filter((a) => a.set).map((a) => ({ alias: ALIASES[a.a], oid: pooled(op.ds, a.o) }));
      // Deletes mostly name an alias that exists (else the commit is only one more NotFound).
      const existing = ALIASES.filter((a) => m.aliases.has(`${op.ds}/${a}`));
      input.aliasDeletes = op.aliases.filter((a) => !a.set).map((a) => (existing.length > 0 && a.o !== 0 ? existing[a.a % existing.length] : ALIASES[a.a]));
      const j = judge(m, op.ds, input, false);
      const nRecords = j.effects.length + j.aliasFx.length;
      return {
        desc: `commit ${describeInput(input)}`,
        kind: 'cp',
        keys: [...touchedKeys(input), ...input.aliasSets.map((a) => a.oid), ...j.aliasFx.map(([k]) => `alias:${k}`)],
        run: (e) => e.commit(input),
        errors: j.errors,
        result: j.versions,
        writes: nRecords > 0,
        apply: (mm) => {
          mm.applyEffects(j.effects);
          for (const [k, v] of j.aliasFx) (v === null ? mm.aliases.delete(k) : mm.aliases.set(k, v));
        },
      };
    }
    case 'prepare': {
      const input = buildInput(m, ctx, op.ds, op.touches);
      if (op.withAlias) input.aliasSets = [{ alias: ALIASES[0], oid: OIDS[0] }];
      const j = judge(m, op.ds, input, true);
      const txid = newTxid(TX_BASE + ctx.tx++);
      const locked = uniq(touchedKeys(input));
      return {
        desc: `prepare ${txLabel(txid)} coord=${op.coordinator} ${describeInput(input)}`,
        kind: 'cp',
        keys: [...locked, `tx:${txid}`],
        run: (e) => e.prepare(txid, op.coordinator, input),
        errors: j.errors,
        result: j.versions,
        writes: true,
        apply: (mm) => {
          mm.prepared.set(txid, { coordinator: op.coordinator, ds: op.ds, effects: j.effects, versions: j.versions, locked });
        },
      };
    }
    case 'reprepare': {
      const txids = [...m.prepared.keys()].sort();
      if (txids.length === 0) return undefined;
      const txid = txids[op.i % txids.length];
      const p = m.prepared.get(txid)!;
      // A duplicate prepare answers what the first did, whatever it carries.
      return {
        desc: `re-prepare ${txLabel(txid)}`, kind: 'other', keys: [`tx:${txid}`],
        run: (e) => e.prepare(txid, p.coordinator, { dataset: DS[p.ds] }),
        errors: none, result: p.versions, writes: false, apply: () => undefined,
      };
    }
    case 'finish': {
      const txids = [...m.prepared.keys()].sort();
      if (op.unknown || txids.length === 0) {
        const txid = newTxid(TX_BASE + ctx.tx++);
        return {
          desc: `finish unknown ${txLabel(txid)} ${op.commit ? 'commit' : 'abort'}`, kind: 'other', keys: [`tx:${txid}`],
          run: (e) => e.finish(txid, op.commit), errors: none, result: { dataset: '', oids: [] }, writes: false, apply: () => undefined,
        };
      }
      const txid = txids[op.i % txids.length];
      const p = m.prepared.get(txid)!;
      return {
        desc: `finish ${txLabel(txid)} ${op.commit ? 'commit' : 'abort'}`,
        kind: 'other',
        keys: [`tx:${txid}`, ...p.locked],
        run: (e) => e.finish(txid, op.commit),
        errors: none,
        result: { dataset: DS[p.ds], oids: op.commit ? p.effects.map((x) => x.oid) : [] },
        writes: true,
        apply: (mm) => {
          if (op.commit) mm.applyEffects(p.effects);
          mm.prepared.delete(txid);
        },
      };
    }
    case 'moveOut': {
      const present = uniq(op.os.map((i) => OIDS[i])).filter((o) => m.objects.has(o));
      if (present.length === 0) return undefined;
      const ds = m.objects.get(present[0])!.ds;
      const oids = present.filter((o) => m.objects.get(o)!.ds === ds);
      const items = oids.map((oid, i) => ({ oid, version: m.objects.get(oid)!.version + (op.stale && i === 0 ? 1 : 0) }));
      const errors = new Set<ErrClass>();
      if (op.stale || oids.some((o) => m.lockHolder(o))) errors.add(WriteConflictError);
      return {
        desc: `moveOut ${DS[ds]} ${JSON.stringify(items.map((x) => [short(x.oid), x.version]))} -> ${op.target}`,
        kind: 'other', keys: oids,
        run: (e) => e.moveOut(DS[ds], items, op.target),
        errors, writes: true,
        apply: (mm) => {
          for (const oid of oids) {
            mm.del(oid);
            mm.forwards.set(oid, op.target);
            mm.replicaSets.delete(oid); // the set travels with the object
          }
        },
      };
    }
    case 'install': {
      // Objects arrive that are not mastered here: absent (moved away, or never here) or a replica copy.
      const cand = uniq(op.os.map((i) => OIDS[i])).filter((o) => (!m.objects.has(o) || m.replicaOf.has(o)) && !m.lockHolder(o));
      if (cand.length === 0) return undefined;
      const ds = m.objects.get(cand[0])?.ds ?? op.ds;
      const oids = cand.filter((o) => (m.objects.get(o)?.ds ?? ds) === ds);
      const objects: StoredObject[] = oids.map((oid) => {
        const version = Math.max(1, Math.max(m.lastVersion.get(oid) ?? 0, m.objects.get(oid)?.version ?? 0) + op.bump);
        const { className, state } = stateFor(ctx, 20);
        return { oid, className, state: Buffer.from(state), version, origin: '' };
      });
      const sets = new Map(oids.map((o) => [o, op.replicas]));
      const nodes = nodeSet(op.replicas);
      return {
        desc: `install ${DS[ds]} ${JSON.stringify(objects.map((o) => [short(o.oid), o.version]))} replicas=${JSON.stringify(op.replicas)}`,
        kind: 'other', keys: oids,
        run: (e) => e.install(DS[ds], objects, sets),
        errors: none, writes: true,
        apply: (mm) => {
          for (const o of objects) {
            mm.put(o.oid, { ...obj(o), ds });
            mm.forwards.delete(o.oid);
            mm.replicaOf.delete(o.oid); // the copy becomes the master copy
            if (nodes.length === 0) mm.replicaSets.delete(o.oid);
            else mm.replicaSets.set(o.oid, nodes);
          }
        },
      };
    }
    case 'installReplicas': {
      const cand = uniq(op.os.map((i) => OIDS[i])).filter((o) => (!m.objects.has(o) || m.replicaOf.has(o)) && !m.lockHolder(o));
      if (cand.length === 0) return undefined;
      const ds = m.objects.get(cand[0])?.ds ?? op.ds;
      const oids = cand.filter((o) => (m.objects.get(o)?.ds ?? ds) === ds);
      const objects: StoredObject[] = oids.map((oid) => {
        const cur = m.objects.get(oid)?.version;
        // Updates may arrive out of order: a copy's version may also go down (then it is not taken).
        const version = cur !== undefined ? Math.max(1, cur + op.delta) : Math.max(1, (m.lastVersion.get(oid) ?? 0) + Math.max(1, op.delta));
        const { className, state } = stateFor(ctx, 20);
        return { oid, className, state: Buffer.from(state), version, origin: '' };
      });
      let writes = false;
      for (const o of objects) {
        const newer = (m.objects.get(o.oid)?.version ?? 0) < o.version;
        if (newer || (m.replicaOf.has(o.oid) && m.replicaOf.get(o.oid) !== op.master)) writes = true;
      }
      return {
        desc: `installReplicas ${DS[ds]} master=${op.master} ${JSON.stringify(objects.map((o) => [short(o.oid), o.version]))}`,
        kind: 'other', keys: oids,
        run: (e) => e.installReplicas(DS[ds], op.master, objects),
        errors: none, writes,
        apply: (mm) => {
          for (const o of objects) {
            const newer = (mm.objects.get(o.oid)?.version ?? 0) < o.version;
            if (newer) {
              mm.put(o.oid, { ...obj(o), ds });
              mm.replicaOf.set(o.oid, op.master);
            } else if (mm.replicaOf.has(o.oid)) {
              mm.replicaOf.set(o.oid, op.master); // a new master after a move
            }
          }
        },
      };
    }
    case 'dropReplicas': {
      const oids = uniq(op.os.map((i) => OIDS[i])).filter((o) => !m.lockHolder(o));
      if (oids.length === 0) return undefined;
      const copies = oids.filter((o) => m.replicaOf.has(o));
      return {
        desc: `dropReplicas ${DS[op.ds]} ${JSON.stringify(oids.map(short))}`, kind: 'other', keys: oids,
        run: (e) => e.dropReplicas(DS[op.ds], oids),
        errors: none, writes: copies.length > 0,
        apply: (mm) => { for (const o of copies) mm.del(o); }, // master copies listed are left alone
      };
    }
    case 'setReplicas': {
      const oid = OIDS[op.o];
      const nodes = nodeSet(op.nodes);
      return {
        desc: `setReplicas ${short(oid)} ${JSON.stringify(op.nodes)}`, kind: 'other', keys: [oid],
        run: (e) => e.setReplicas(DS[op.ds], oid, op.nodes),
        errors: none, writes: true,
        apply: (mm) => (nodes.length === 0 ? mm.replicaSets.delete(oid) : mm.replicaSets.set(oid, nodes)),
      };
    }
    case 'setDirectory': {
      const entries = op.entries.map((x) => ({ oid: OIDS[x.o], master: x.master, replicas: x.replicas }));
      return {
        desc: `setDirectory ${JSON.stringify(entries.map((x) => [short(x.oid), x.master, x.replicas]))}`, kind: 'other', keys: entries.map((x) => x.oid),
        run: (e) => e.setDirectory(entries),
        errors: none, writes: true,
        apply: (mm) => {
          for (const x of entries) {
            // "On its home node, no replicas" is the default: the entry is removed.
            if (x.master === oidHomeNode(x.oid) && x.replicas.length === 0) mm.directory.delete(x.oid);
            else mm.directory.set(x.oid, { master: x.master, replicas: x.replicas });
          }
        },
      };
    }
    case 'clearForwards': {
      const oids = uniq(op.os.map((i) => OIDS[i]));
      return {
        desc: `clearForwards ${JSON.stringify(oids.map(short))}`, kind: 'other', keys: oids,
        run: (e) => e.clearForwards(oids),
        errors: none, writes: oids.some((o) => m.forwards.has(o)),
        apply: (mm) => { for (const o of oids) mm.forwards.delete(o); },
      };
    }
    case 'fill': {
      const oid = OIDS[N_HOT + op.o];
      const { className, state } = stateFor(ctx, op.size);
      const input: CommitInput = { dataset: DS[0], writes: [{ oid, className, state: Buffer.from(state), expectedVersion: m.versionIn(oid, 0) }] };
      const j = judge(m, 0, input, false);
      return {
        desc: `fill ${short(oid)}@${m.versionIn(oid, 0)}(${op.size}b)`, kind: 'cp', keys: [oid],
        run: (e) => e.commit(input), errors: j.errors, result: j.versions, writes: true, apply: (mm) => mm.applyEffects(j.effects),
      };
    }
    case 'compact':
      return {
        desc: `compact${op.all ? ' all' : ''}`, kind: 'compact', keys: [],
        run: (e) => e.compact({ all: op.all }), errors: none, writes: false, apply: () => undefined,
      };
  }
}

function touchedKeys(input: CommitInput): string[] {
  return [...(input.writes ?? []).map((w) => w.oid), ...(input.deletes ?? []).map((d) => d.oid), ...(input.reads ?? []).map((r) => r.oid)];
}
const short = (oid: string) => `o${parseInt(oid.slice(-1), 16)}`;
function describeInput(input: CommitInput): string {
  const parts: string[] = [input.dataset];
  for (const w of input.writes ?? []) parts.push(`w ${short(w.oid)}@${w.expectedVersion}(${w.state.length}b${w.origin ? ` origin ${short(w.origin)}` : ''})`);
  for (const d of input.deletes ?? []) parts.push(`d ${short(d.oid)}@${d.expectedVersion}`);
  for (const r of input.reads ?? []) parts.push(`r ${short(r.oid)}@${r.version}`);
  for (const a of input.aliasSets ?? []) parts.push(`alias ${a.alias}=${short(a.oid)}`);
  for (const a of input.aliasDeletes ?? []) parts.push(`unalias ${a}`);
  return parts.join(' ');
}

// ---------------------------------------------------------------- snapshots: everything both sides can say

type Snap = Record<string, unknown>;
const byOid = (a: { oid: string }, b: { oid: string }) => (a.oid < b.oid ? -1 : a.oid > b.oid ? 1 : 0);

async function engineSnap(e: Engine): Promise<Snap> {
  const s: Snap = {};
  for (const ds of DS) {
    const got = await e.get(ds, OIDS);
    const objects: Record<string, unknown> = {};
    for (const o of got.objects) objects[o.oid] = { className: o.className, state: o.state.toString(), version: o.version, origin: o.origin };
    s[`${ds}: objects`] = objects;
    s[`${ds}: missing`] = [...got.missing].sort();
    s[`${ds}: listAliases`] = e.listAliases(ds);
    s[`${ds}: getAlias`] = ALIASES.map((a) => {
      try {
        return e.getAlias(ds, a);
      } catch (err) {
        if (err instanceof NotFoundError) return null;
        throw err;
      }
    });
    s[`${ds}: oidsIn`] = e.oidsIn(ds).sort();
    s[`${ds}: replicaCopiesIn`] = e.replicaCopiesIn(ds).sort(byOid);
  }
  for (const oid of OIDS) {
    s[short(oid)] = {
      holds: e.holds(oid), masters: e.masters(oid), forward: e.forwardOf(oid) ?? null, directory: e.directoryOf(oid) ?? null,
      replicas: e.replicasOf(oid), replicaOf: e.replicaMasterOf(oid) ?? null, lockedBy: e.lockedBy(oid) ?? null,
    };
  }
  s.pendingForwards = e.pendingForwards().sort(byOid);
  s.directoryEntries = e.directoryEntries().sort(byOid);
  s.prepared = e.preparedTransactions().map(({ txid, coordinator }) => ({ txid, coordinator })).sort((a, b) => (a.txid < b.txid ? -1 : 1));
  const st = e.stats();
  s.counts = { objects: st.objects, aliases: st.aliases, datasets: st.datasets };
  s.datasets = e.listDatasets();
  return s;
}

function modelSnap(m: Model): Snap {
  const s: Snap = {};
  for (const [i, ds] of DS.entries()) {
    const objects: Record<string, unknown> = {};
    for (const oid of OIDS) {
      const o = m.objects.get(oid);
      if (o && o.ds === i) objects[oid] = { className: o.className, state: o.state, version: o.version, origin: o.origin };
    }
    s[`${ds}: objects`] = objects;
    s[`${ds}: missing`] = OIDS.filter((o) => m.objects.get(o)?.ds !== i).sort();
    const aliases = ALIASES.map((a) => m.aliases.get(`${i}/${a}`) ?? null);
    s[`${ds}: listAliases`] = ALIASES.flatMap((a, k) => (aliases[k] === null ? [] : [{ alias: a, oid: aliases[k] }]));
    s[`${ds}: getAlias`] = aliases;
    s[`${ds}: oidsIn`] = OIDS.filter((o) => m.objects.get(o)?.ds === i && !m.replicaOf.has(o)).sort();
    s[`${ds}: replicaCopiesIn`] = OIDS.filter((o) => m.objects.get(o)?.ds === i && m.replicaOf.has(o)).map((oid) => ({ oid, master: m.replicaOf.get(oid)! })).sort(byOid);
  }
  for (const oid of OIDS) {
    s[short(oid)] = {
      holds: m.objects.has(oid), masters: m.objects.has(oid) && !m.replicaOf.has(oid), forward: m.forwards.get(oid) ?? null,
      directory: m.directory.get(oid) ?? null, replicas: m.replicaSets.get(oid) ?? [], replicaOf: m.replicaOf.get(oid) ?? null,
      lockedBy: m.lockHolder(oid) ?? null,
    };
  }
  s.pendingForwards = [...m.forwards].map(([oid, n]) => ({ oid, node: n })).sort(byOid);
  s.directoryEntries = [...m.directory].map(([oid, d]) => ({ oid, ...d })).sort(byOid);
  s.prepared = [...m.prepared].map(([txid, p]) => ({ txid, coordinator: p.coordinator })).sort((a, b) => (a.txid < b.txid ? -1 : 1));
  s.counts = { objects: m.objects.size, aliases: m.aliases.size, datasets: DS.length };
  s.datasets = [...DS].sort();
  return s;
}

/** For messages only: padding prints as x*<length>, the pool's oids as o<i>. */
const show = (v: unknown) => (JSON.stringify(v) ?? 'undefined').replace(/x{8,}/g, (m) => `x*${m.length}`).replace(/000[12]0{27}([0-9a-f])/g, 'o$1');

function diffSnap(actual: Snap, expected: Snap): string[] {
  const out: string[] = [];
  for (const k of new Set([...Object.keys(actual), ...Object.keys(expected)])) {
    if (!isDeepStrictEqual(actual[k], expected[k])) out.push(`  ${k}:\n    engine ${show(actual[k])}\n    model  ${show(expected[k])}`);
  }
  return out;
}

// ---------------------------------------------------------------- one run

class Failure extends Error {}

/** What a run did, for the failure message; LOAM_PROP_TRACE=1 also prints it as it goes (a replay that hangs). */
class Trace {
  private readonly lines: string[] = [];
  push(...lines: string[]): void {
    for (const l of lines) {
      if (l === '') continue;
      if (process.env.LOAM_PROP_TRACE === '1') console.log(l);
      this.lines.push(l);
    }
  }
  text(): string {
    return this.lines.join('\n');
  }
}

interface RunOpts { segBytes: number; noCache: boolean }

class Run {
  model = new Model();
  engine!: Engine;
  files?: FaultyFiles;
  /** Writes refused by a full disk whose bytes may still be in the log tail (until the next append cuts it, or a restart reads it). */
  ghosts: Plan[] = [];
  /** A full-disk fault is injected and has not fired yet. */
  diskFullArmed?: Fault;
  readonly ctx: Ctx = { seq: 0, tx: 0 };
  readonly trace = new Trace();

  constructor(readonly dir: string, readonly opts: RunOpts) {}

  async open(faulty: boolean): Promise<void> {
    this.files = faulty ? new FaultyFiles(new LocalFiles(path.join(this.dir, 'log'))) : undefined;
    this.diskFullArmed = undefined;
    this.engine = await Engine.open({
      dir: this.dir,
      compactionIntervalMs: 0, // compaction runs only as a generated op
      maxSegmentBytes: this.opts.segBytes,
      cacheBytes: this.opts.noCache ? 1 : undefined,
      lockWaitMs: 0, // a commit meeting a prepared lock conflicts at once instead of waiting
      // No probe timer writing on its own schedule: the next append lifts a full-disk block, and
      // every byte written comes from a generated op (so crash points replay exactly).
      probeIntervalMs: 1e9,
      ...(this.files ? { files: this.files } : {}),
    });
  }

  async check(where: string): Promise<void> {
    const d = diffSnap(await engineSnap(this.engine), modelSnap(this.model));
    if (d.length > 0) throw new Failure(`engine and model differ ${where}:\n${d.join('\n')}`);
  }

  async restart(): Promise<void> {
    await this.engine.close();
    await this.open(true);
    // A clean close leaves whole groups only, except what a full disk refused.
    if (this.engine.recovery.truncatedBytes > 0 && this.ghosts.length === 0) {
      throw new Failure(`a clean restart cut ${this.engine.recovery.truncatedBytes} bytes of torn tail (${this.engine.recovery.truncatedReason})`);
    }
    await this.settle([], 'after a clean restart');
  }

  async exec(op: Op): Promise<void> {
    if (op.t === 'restart') {
      this.trace.push('restart');
      return this.restart();
    }
    if (op.t === 'crash' || op.t === 'diskFull') {
      if (!this.files) await this.restart(); // after a crash the engine runs on plain files
      if (op.t === 'crash') {
        this.files!.crashAtByte(op.k);
        this.trace.push(`arm crash at byte +${op.k}`);
      } else {
        this.diskFullArmed = { op: op.on, code: 'ENOSPC', times: 1, partialBytes: op.partial };
        this.files!.inject(this.diskFullArmed);
        this.trace.push(`arm ENOSPC at the next ${op.on} (${op.partial} bytes reach the file)`);
      }
      if (op.then.length > 0) await this.exec({ t: 'group', ops: op.then });
      return;
    }
    if (op.t === 'compactFault') return this.compactFault(op);
    const subs = op.t === 'group' ? op.ops : [op];
    // Each plan is judged against the model as if the ones before it in the group succeeded:
    // the engine validates against writes still in flight, in call order.
    const spec = this.model.clone();
    const plans: Plan[] = [];
    const otherKeys = new Set<string>();
    const allKeys = new Set<string>();
    for (const s of subs) {
      const p = plan(spec, this.ctx, s);
      if (!p) continue;
      if (op.t === 'group') {
        // Placement maps and finish are not validated against in-flight writes: only commits and
        // prepares may share keys with other calls of a group.
        const against = p.kind === 'other' ? allKeys : otherKeys;
        if (p.keys.some((k) => against.has(k))) continue;
        for (const k of p.keys) {
          allKeys.add(k);
          if (p.kind === 'other') otherKeys.add(k);
        }
      }
      plans.push(p);
      if (p.errors.size === 0) p.apply(spec);
    }
    if (plans.length === 0) return;
    this.trace.push(op.t === 'group' ? `group of ${plans.length}:` : '');
    // An append after a full disk first cuts the log back to its acknowledged end: what the
    // refused writes left in the tail is gone once a write is issued.
    if (plans.some((p) => p.writes && p.errors.size === 0)) this.ghosts = [];
    const calls = plans.map((p) => {
      try {
        return p.run(this.engine);
      } catch (e) {
        return Promise.reject(e); // a synchronous throw counts as a rejection
      }
    });
    // Issued in the same tick as the calls: nothing of theirs is durable yet, so readers must see
    // the state before the step (an in-flight write is validated against, never read).
    // (Reads run synchronously within get(); a crash at byte 0 may already have killed the files.)
    const readable = !this.files?.dead;
    const before = readable ? Promise.all(DS.map((ds) => this.engine.get(ds, OIDS))) : Promise.resolve([]);
    const aliasesBefore = DS.map((ds) => this.engine.listAliases(ds));
    const outcomes = await Promise.allSettled(calls);
    const seen = await before;
    const expected = modelSnap(this.model);
    if (readable) DS.forEach((ds, i) => {
      const got = Object.fromEntries(seen[i].objects.map((o) => [o.oid, { className: o.className, state: o.state.toString(), version: o.version, origin: o.origin }]));
      const d = diffSnap({ objects: got, aliases: aliasesBefore[i] }, { objects: expected[`${ds}: objects`], aliases: expected[`${ds}: listAliases`] });
      if (d.length > 0) throw new Failure(`reads during the step saw writes still in flight (${ds}):\n${d.join('\n')}`);
    });
    const crashed = this.files?.dead ?? false;
    // The log stays refused after a full disk until an append lifts it (steps that write nothing leave it so).
    const diskFull = !crashed && this.engine.writeBlock?.reason === 'ENOSPC' && this.engine.writeBlock.recoverable;
    if (this.engine.writeBlock && !crashed && !diskFull) throw new Failure(`writes refused without a fault: ${this.engine.writeBlock.message}`);
    const lines: string[] = [];
    // Writing plans predicted to succeed, in call order: under a crash or a full disk, a prefix
    // of them resolves, the rest reject, and the log may keep a prefix of those (the batches
    // that reached the file whole).
    const uncertain: Plan[] = [];
    const confirmed = this.model.clone();
    for (let i = 0; i < plans.length; i++) {
      const p = plans[i];
      const o = outcomes[i];
      const got = o.status === 'fulfilled' ? `ok ${show(o.value)}` : `rejected ${(o.reason as Error).constructor.name}: ${(o.reason as Error).message}`;
      lines.push(`${op.t === 'group' ? '  ' : ''}${p.desc} => ${got}`);
      count(`${p.desc.split(' ')[0]} ${o.status === 'fulfilled' ? 'ok' : (o.reason as Error).constructor.name}${op.t === 'group' ? ' (group)' : ''}`);
      const fail = (why: string) => {
        this.trace.push(...lines);
        return new Failure(`${p.desc}: ${why}; got ${got}`);
      };
      if (p.kind === 'compact') {
        if (o.status === 'rejected' && !crashed) throw fail('compaction failed');
        if (o.status === 'fulfilled') checkCompaction(o.value as CompactionResult, fail);
        continue;
      }
      if (p.errors.size > 0) {
        if (o.status === 'fulfilled') throw fail(`expected a rejection (${[...p.errors].map((c) => c.name).join(' or ')})`);
        if (![...p.errors].some((c) => o.reason instanceof c)) throw fail(`expected ${[...p.errors].map((c) => c.name).join(' or ')}`);
        continue;
      }
      if (o.status === 'fulfilled') {
        if (uncertain.length > 0 && p.writes) throw fail('resolved after an earlier write was refused: acknowledgements out of log order');
        if (p.result !== undefined && !isDeepStrictEqual(o.value, p.result)) throw fail(`expected ${JSON.stringify(p.result)}`);
        p.apply(confirmed);
        continue;
      }
      if (!(crashed || diskFull) || !p.writes) throw fail('expected success');
      if (!(o.reason instanceof UnavailableError)) throw fail('a write refused by the disk must fail as UnavailableError');
      uncertain.push(p);
    }
    this.trace.push(...lines);
    if (crashed) return this.recoverFromCrash(confirmed, uncertain);
    if (uncertain.length > 0) {
      // Refused writes are not visible (the engine applies a batch once durable), but may come
      // back at a restart if their bytes reached the file whole.
      this.diskFullArmed = undefined;
      this.model = confirmed;
      this.ghosts = uncertain;
      count(`full disk refused ${uncertain.length} write(s)`);
      await this.check('after a full disk refused writes');
      return;
    }
    this.model = spec;
    await this.check('after this step');
  }

  /** A compaction meeting a failing file call (no space for the rewrite, a failed remove or read) may fail, and must change nothing. */
  private async compactFault(op: Extract<Op, { t: 'compactFault' }>): Promise<void> {
    if (!this.files) await this.restart();
    const files = this.files!;
    files.inject({ op: op.on, code: op.on === 'replace' ? 'ENOSPC' : 'EIO', times: 1 });
    const r = await this.engine.compact({ all: op.all }).then((v) => `ok ${JSON.stringify(v)}`, (e: Error) => `rejected ${e.message}`);
    this.trace.push(`compact${op.all ? ' all' : ''} with one failing ${op.on} => ${r}`);
    count(`compaction with a failing ${op.on}: ${r.split(' ')[0]}`);
    files.clear();
    if (this.diskFullArmed) files.inject(this.diskFullArmed); // still waiting for its write
    await this.check('after a compaction that met a file fault');
  }

  /** The process died mid-write: reopen on plain files and find which allowed outcome the log kept. */
  private async recoverFromCrash(confirmed: Model, uncertain: Plan[]): Promise<void> {
    this.model = confirmed;
    // close() writes nothing (every file call would fail now): it waits for the groups already
    // settled and closes the descriptors, so awaiting it cannot hang and leaks nothing.
    await this.engine.close();
    await this.open(false);
    this.trace.push(`  crashed; reopened on plain files, ${this.engine.recovery.truncatedBytes} bytes of torn tail cut`);
    const match = await this.settle(uncertain, 'after the crash');
    count(`crash: kept ${match} of ${uncertain.length} uncertain; ${this.engine.recovery.truncatedBytes > 0 ? 'torn tail cut' : 'no torn tail'}`);
  }

  /**
   * After a reopen: the engine must hold the model with some prefix of `uncertain` (and of the
   * ghosts a full disk left) applied; the model becomes that one.
   */
  async settle(uncertain: Plan[], where: string): Promise<number> {
    const maybe = [...this.ghosts, ...uncertain];
    const hadGhosts = this.ghosts.length > 0;
    this.ghosts = [];
    const candidates = [this.model];
    for (const p of maybe) {
      const next = candidates[candidates.length - 1].clone();
      p.apply(next);
      candidates.push(next);
    }
    const actual = await engineSnap(this.engine);
    const match = candidates.findIndex((c) => isDeepStrictEqual(actual, modelSnap(c)));
    if (maybe.length > 0) this.trace.push(`  the log kept ${match < 0 ? '?' : match} of ${maybe.length} write(s) that were refused`);
    if (hadGhosts) count(`restart after a full disk: kept ${match} of ${maybe.length} refused`);
    if (match < 0) {
      if (candidates.length === 1) throw new Failure(`engine and model differ ${where}:\n${diffSnap(actual, modelSnap(this.model)).join('\n')}`);
      const diffs = candidates.map((c, i) => `candidate ${i} (first ${i} refused writes applied):\n${diffSnap(actual, modelSnap(c)).join('\n')}`);
      throw new Failure(`${where} the engine holds none of the allowed states:\n${diffs.join('\n')}`);
    }
    this.model = candidates[match];
    return match;
  }
}

/** What a compaction reports must add up: it only ever drops bytes. */
function checkCompaction(r: CompactionResult, fail: (why: string) => Error): void {
  count(`compactions that rewrote ${r.segments >= 3 ? '3+' : r.segments} segments`);
  if (r.bytesAfter > r.bytesBefore || (r.segments === 0 && r.bytesBefore !== 0)) throw fail('compaction grew the log');
}

async function runScenario(s: { ops: Op[]; segBytes: number; noCache: boolean }): Promise<void> {
  const dir = fs.mkdtempSync(path.join(TMP, 'loam-model-'));
  const run = new Run(dir, s);
  try {
    await run.open(true);
    await run.engine.createDataset('ds2');
    for (const op of s.ops) await run.exec(op);
    count(`segments at the end: ${run.engine.stats().segments}`);
    count(`runs of ${Math.floor(s.ops.length / 10) * 10}-${Math.floor(s.ops.length / 10) * 10 + 9} ops`);
    run.trace.push('final restart');
    await run.engine.close();
    await run.open(false);
    await run.settle([], 'after the final restart');
  } catch (e) {
    const err = e as Error;
    err.message += `\n\nseg=${s.segBytes} noCache=${s.noCache}; trace:\n${run.trace.text()}`;
    throw err;
  } finally {
    await run.engine?.close().catch(() => undefined);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Open descriptors of this process (Linux): crashed engines must not leave theirs behind. */
const openFds = (): number => fs.readdirSync('/proc/self/fd').length;

describe('engine against a model', () => {
  afterAll(() => {
    if (STATS) console.log([...stats].sort().map(([k, v]) => `${String(v).padStart(6)} ${k}`).join('\n'));
  });
  it(`random operation sequences, restarts and crashes agree with the model (${RUNS} runs)`, async () => {
    const fdsBefore = openFds();
    await fc.assert(fc.asyncProperty(scenarioArb, runScenario), {
      numRuns: RUNS,
      // Interrupted runs fail: a property that did not get through its runs has not passed.
      // A run that hangs (a promise the engine never settles) fails by itself, so it shrinks.
      plugins: [fc.interruptAfterTimeLimit(TIME_MS, { failOnInterrupt: true }), fc.timeout(RUN_TIMEOUT_MS)],
      ...(SEED !== undefined ? { seed: SEED } : {}),
      ...(PATH !== undefined ? { path: PATH, endOnFailure: true } : {}),
    });
    // Every run opens engines on several segments (more after each crash): a handful of
    // descriptors of the runner's own may come and go, a leak would be dozens.
    const leaked = openFds() - fdsBefore;
    if (leaked > 4) throw new Error(`${leaked} file descriptors left open after ${RUNS} runs`);
  }, TIME_MS + 30_000);
});
