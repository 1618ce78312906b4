/**
 * Jepsen-style checks against real `loam node` processes on a real 3-member etcd, with faults
 * (test/chaos/: workloads, nemesis, checkers). `npm test` runs the bounded version: the bank
 * workload with replicas and the register workload, ~20 s each with a few faults, seed
 * LOAM_CHAOS_SEED (default 1). `npm run chaos -- --seed N --time-budget S` (scripts/chaos.mjs)
 * runs this file with LOAM_CHAOS_LONG=1: the fault-free throughput comparison, then both bank
 * variants and the register workload sharing the budget, and writes the figures to
 * LOAM_CHAOS_REPORT for the script to print.
 *
 * A test fails when its checker finds an anomaly; the message names each one with the operations
 * and faults that show it, and the seed that reproduces the schedule.
 */
import fs from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { startEtcd, type EtcdCluster } from './harness/etcd.js';
import { bankThroughput, bankWorkload, describeResult, registerWorkload, type Throughput, type WorkloadResult } from './chaos/runs.js';

const LONG = process.env.LOAM_CHAOS_LONG === '1';
const SEED = Number(process.env.LOAM_CHAOS_SEED ?? 1);
const BUDGET_S = Number(process.env.LOAM_CHAOS_TIME_BUDGET ?? 300);
// `npm test` runs the bounded bank workload with replicas and the bounded register workload
// (npm run chaos runs the long version of both).
const BOUNDED = !LONG;
const BOUNDED_RUN_MS = 20_000;

const log = (line: string) => console.log(line);
/** One line per anomaly kind (count and first example): the assertion's message stays readable; describeResult printed more. */
const anomalyLines = (r: WorkloadResult) => {
  const byKind = new Map<string, string[]>();
  for (const a of r.anomalies) byKind.set(a.kind, [...(byKind.get(a.kind) ?? []), a.message]);
  return [...byKind].map(([kind, msgs]) => `${r.name}: ${kind} x${msgs.length}, e.g. ${msgs[0]}`);
};

let etcd: EtcdCluster;
beforeAll(async () => {
  if (!BOUNDED && !LONG) return; // nothing here runs: no etcd to start
  if (!Number.isInteger(SEED)) throw new Error(`LOAM_CHAOS_SEED must be an integer, not ${process.env.LOAM_CHAOS_SEED}`);
  etcd = await startEtcd({ members: 3 }); // stopped by test/setup.ts, even on failure
  log(`chaos: seed ${SEED}${LONG ? `, time budget ${BUDGET_S} s` : ' (LOAM_CHAOS_SEED to change it)'}`);
});

describe.runIf(BOUNDED)('chaos, bounded (seeded faults while a workload runs; anomalies fail the test)', () => {
  it('bank with a replica of every account: balances conserved, every transfer applied as acknowledged, reads strictly serializable', async () => {
    const r = await bankWorkload({ etcd, seed: SEED, durationMs: BOUNDED_RUN_MS, replicas: true, log });
    log(describeResult(r, 10).join('\n'));
    expect(r.ops.ok).toBeGreaterThan(0);
    expect(Object.values(r.faults).reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
    expect(anomalyLines(r), `seed ${SEED}`).toEqual([]);
  }, 240_000);

  it('registers under moves and replication: no lost write, no stale or phantom read from the master or a replica', async () => {
    const r = await registerWorkload({ etcd, seed: SEED, durationMs: BOUNDED_RUN_MS, log });
    log(describeResult(r, 10).join('\n'));
    expect(r.ops.ok).toBeGreaterThan(0);
    expect(Object.values(r.faults).reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
    expect(anomalyLines(r), `seed ${SEED}`).toEqual([]);
  }, 240_000);
});

describe.runIf(LONG)('chaos, long (npm run chaos)', () => {
  it(`runs every workload within the time budget and reports its figures`, async () => {
    const t0 = Date.now();
    const results: WorkloadResult[] = [];
    const report = () => {
      if (!process.env.LOAM_CHAOS_REPORT) return;
      fs.writeFileSync(process.env.LOAM_CHAOS_REPORT, JSON.stringify({
        seed: SEED, budgetS: BUDGET_S, wallS: (Date.now() - t0) / 1000, throughput, results,
        lines: results.map((r) => describeResult(r, 5)),
      }));
    };
    // About 5% of the budget (3 to 10 s a phase, 3 rounds of two phases) for the throughput figure.
    const roundMs = Math.round(Math.min(10_000, Math.max(3_000, BUDGET_S * 1000 * 0.05 / 6)));
    const throughput: Throughput = await bankThroughput({ etcd, seed: SEED, roundMs, rounds: 3, log });
    log(`throughput without faults: cross-node bank ${throughput.crossNodeTps.toFixed(1)} transfers/s, ` +
      `single-node ${throughput.singleNodeTps.toFixed(1)}/s, ratio ${throughput.ratio.toFixed(2)}`);
    report();
    // What is left, less each workload's own start, heal and final read (about 10 s), shared 3:3:4.
    const leftMs = BUDGET_S * 1000 - (Date.now() - t0) - 3 * 10_000;
    const share = (f: number) => Math.max(10_000, Math.round(leftMs * f));
    for (const run of [
      () => bankWorkload({ etcd, seed: SEED, durationMs: share(0.3), replicas: false, log }),
      () => bankWorkload({ etcd, seed: SEED, durationMs: share(0.3), replicas: true, log }),
      () => registerWorkload({ etcd, seed: SEED, durationMs: share(0.4), log }),
    ]) {
      const r = await run();
      results.push(r);
      log(describeResult(r, 5).join('\n'));
      report();
    }
    expect(results.flatMap(anomalyLines), `seed ${SEED}`).toEqual([]);
  }, (BUDGET_S + 900) * 1000);
});
