// Runs the benchmarks in sequence and prints one result line per benchmark on stdout.
//   node bench/run.mjs                 all of them
//   node bench/run.mjs persist get     only those (by file name, or a prefix of it)
// Exits 0 when every benchmark ran, whether or not it met its target (the line says PASS or
// FAIL); exits 1 when a benchmark crashed. BENCH_VERBOSE=1 prints progress notes on stderr.
import os from 'node:os';
import { cleanupAll, now, cpuSnapshot, foreignCpuShare } from './lib.mjs';

const ALL = ['persist', 'get', 'group-commit', 'save', 'restart', 'cluster-get', 'cluster-persist', 'cluster-move', 'cluster-tx', 's3-put', 's3-upload', 's3-writes', 's3-get', 's3-restore', 'operator'];

const wanted = process.argv.slice(2);
const unknown = wanted.filter((w) => !ALL.some((b) => b.startsWith(w)));
if (unknown.length) {
  process.stderr.write(`bench: unknown benchmark ${unknown.join(', ')} (have: ${ALL.join(', ')})\n`);
  process.exit(2);
}
const selected = wanted.length ? ALL.filter((b) => wanted.some((w) => b.startsWith(w))) : ALL;

let crashed = 0;
const t0 = now();
for (const file of selected) {
  const started = now();
  const cpu0 = cpuSnapshot();
  try {
    const mod = await import(`./${file}.mjs`);
    const out = await mod.run();
    for (const line of [out].flat()) if (line) process.stdout.write(`${line}\n`);
  } catch (e) {
    crashed++;
    process.stdout.write(`${file}: CRASH ${e?.message?.split('\n')[0] ?? e}\n`);
    process.stderr.write(`${e?.stack ?? e}\n`);
  } finally {
    await cleanupAll();
  }
  if (process.env.BENCH_VERBOSE) process.stderr.write(`  (${file} took ${((now() - started) / 1000).toFixed(1)} s)\n`);
  // Other processes busy meanwhile make every figure noisier (the ratios less so).
  const foreign = foreignCpuShare(cpu0, cpuSnapshot());
  if (foreign !== undefined && foreign > 0.1) {
    process.stderr.write(`  warning: other processes used ${(foreign * 100).toFixed(0)}% of the ${os.cpus().length} CPUs during ${file}; its absolute figures are unreliable\n`);
  }
}
process.stderr.write(`bench: ${selected.length} benchmark(s) in ${((now() - t0) / 1000).toFixed(1)} s${crashed ? `, ${crashed} crashed` : ''}\n`);
process.exit(crashed ? 1 : 0);
