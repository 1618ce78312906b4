// npm run chaos -- [--seed N] [--time-budget SECONDS] [--history-dir DIR]
//
// The long chaos run: test/chaos.test.ts with LOAM_CHAOS_LONG=1 (vitest runs the TypeScript and
// test/setup.ts cleans up every etcd member, node and temp dir, even on failure). It measures the
// fault-free throughput of the bank workload against single-node commits, then runs the bank
// workload (without and with replicas) and the register workload under the nemesis, sharing the
// time budget, and prints the seed, the budget and the figures: operations (ok / failed /
// unknown), faults injected by kind, anomalies found by kind.
// Also read from the environment: LOAM_CHAOS_SEED, LOAM_CHAOS_TIME_BUDGET, LOAM_CHAOS_HISTORY_DIR.
// Exit status: 0 no anomaly, 1 anomalies found, 2 the run itself failed.
import { spawn } from 'node:child_process';
import { randomInt } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function usage(msg) {
  process.stderr.write(`chaos: ${msg}\nusage: npm run chaos -- [--seed N] [--time-budget SECONDS] [--history-dir DIR]\n`);
  process.exit(2);
}

const opts = {};
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const m = /^--(seed|time-budget|history-dir)(?:=(.*))?$/.exec(argv[i]);
  if (!m) usage(`unknown argument ${argv[i]}`);
  const value = m[2] ?? argv[++i];
  if (value === undefined) usage(`--${m[1]} needs a value`);
  opts[m[1]] = value;
}
const seedText = opts.seed ?? process.env.LOAM_CHAOS_SEED ?? String(randomInt(1, 2 ** 31 - 1));
const budgetText = opts['time-budget'] ?? process.env.LOAM_CHAOS_TIME_BUDGET ?? '300';
if (!/^\d+$/.test(seedText)) usage(`the seed must be a non-negative integer, not ${seedText}`);
if (!/^\d+$/.test(budgetText) || Number(budgetText) < 60) usage(`the time budget must be at least 60 seconds, not ${budgetText}`);
const seed = Number(seedText);
const budget = Number(budgetText);
const historyDir = opts['history-dir'] ?? process.env.LOAM_CHAOS_HISTORY_DIR;

const reportFile = path.join(os.tmpdir(), `loam-chaos-report-${process.pid}.json`);
process.stdout.write(`chaos: seed ${seed}, time budget ${budget} s${historyDir ? `, histories in ${historyDir}` : ''}\n`);

const t0 = Date.now();
const vitest = spawn(process.execPath, [path.join(ROOT, 'node_modules/vitest/vitest.mjs'), 'run', 'test/chaos.test.ts', '--reporter=default'], {
  cwd: ROOT,
  stdio: 'inherit',
  env: {
    ...process.env,
    LOAM_CHAOS_LONG: '1',
    LOAM_CHAOS_SEED: String(seed),
    LOAM_CHAOS_TIME_BUDGET: String(budget),
    LOAM_CHAOS_REPORT: reportFile,
    ...(historyDir ? { LOAM_CHAOS_HISTORY_DIR: path.resolve(historyDir) } : {}),
  },
});
// Ctrl-C reaches vitest too (same process group); wait for it to clean up rather than die first.
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => vitest.kill(sig));
const code = await new Promise((resolve) => vitest.once('exit', (c, s) => resolve(c ?? (s ? 128 : 1))));

let report;
try {
  report = JSON.parse(fs.readFileSync(reportFile, 'utf8'));
} catch {
  report = undefined;
} finally {
  fs.rmSync(reportFile, { force: true });
}

const add = (into, from) => {
  for (const [k, v] of Object.entries(from)) into[k] = (into[k] ?? 0) + v;
  return into;
};
const fmt = (counts) => Object.entries(counts).sort().map(([k, v]) => `${k} ${v}`).join(', ') || 'none';
const out = [];
out.push('', '================ chaos figures ================');
out.push(`seed ${seed}, time budget ${budget} s, ran ${((Date.now() - t0) / 1000).toFixed(0)} s`);
if (!report) {
  out.push('no report: the run failed before its first figure (see the output above)');
  process.stdout.write(`${out.join('\n')}\n`);
  process.exit(2);
}
const tp = report.throughput;
if (tp) {
  out.push(`throughput without faults (bank, 6 accounts, 4 clients; medians of ${tp.rounds.length} alternating rounds):`);
  out.push(`  accounts on three nodes: ${tp.crossNodeTps.toFixed(1)} transfers/s; all on one node (single-node commits): ${tp.singleNodeTps.toFixed(1)}/s; ratio ${tp.ratio.toFixed(2)}`);
}
const ops = { ok: 0, fail: 0, unknown: 0 };
const faults = {};
const anomalies = {};
for (const [i, r] of report.results.entries()) {
  out.push(...report.lines[i]);
  add(ops, r.ops);
  add(faults, r.faults);
  add(anomalies, Object.fromEntries(Object.entries(r.anomalies.reduce((m, a) => ((m[a.kind] = (m[a.kind] ?? 0) + 1), m), {}))));
}
out.push('total:');
out.push(`  operations: ${ops.ok} ok, ${ops.fail} failed, ${ops.unknown} unknown`);
out.push(`  faults injected: ${fmt(faults)}`);
out.push(`  anomalies found: ${fmt(anomalies)}`);
if (report.results.length < 3) out.push(`  (only ${report.results.length} of 3 workloads finished: see the output above)`);
process.stdout.write(`${out.join('\n')}\n`);
const found = Object.keys(anomalies).length > 0;
process.exit(found ? 1 : code === 0 && report.results.length === 3 ? 0 : 2);
