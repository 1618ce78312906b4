// Summarizes V8 .cpuprofile files (from `node --cpu-prof`): top functions by self time, and
// self time per package / source file. For finding where a failing benchmark's time goes:
//   BENCH_NODE_FLAGS="--cpu-prof --cpu-prof-dir=/tmp/loam-prof" node bench/run.mjs save
//   node bench/prof-summary.mjs /tmp/loam-prof/*.cpuprofile [--top 25]
import fs from 'node:fs';
import path from 'node:path';

const args = process.argv.slice(2);
const topIdx = args.indexOf('--top');
const TOP = topIdx >= 0 ? Number(args.splice(topIdx, 2)[1]) : 25;
if (args.length === 0) {
  process.stderr.write('usage: node bench/prof-summary.mjs FILE.cpuprofile... [--top N]\n');
  process.exit(2);
}

function where(url) {
  if (!url) return '(native)';
  const u = url.replace(/^file:\/\//, '');
  const nm = u.lastIndexOf('node_modules/');
  if (nm >= 0) {
    const rest = u.slice(nm + 'node_modules/'.length).split('/');
    return rest[0].startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0];
  }
  if (u.startsWith('node:')) return u;
  const m = /\/(sdk|node)\/dist\/(.*)$/.exec(u);
  if (m) return `${m[1]}/${m[2]}`;
  return path.basename(u);
}

for (const file of args) {
  const prof = JSON.parse(fs.readFileSync(file, 'utf8'));
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const self = new Map();
  let total = 0;
  for (let i = 0; i < prof.samples.length; i++) {
    const dt = prof.timeDeltas[i] ?? 0;
    total += dt;
    const n = byId.get(prof.samples[i]);
    self.set(n, (self.get(n) ?? 0) + dt);
  }
  const fnTime = new Map();
  const fileTime = new Map();
  for (const [n, t] of self) {
    const cf = n.callFrame;
    const w = where(cf.url);
    const key = `${cf.functionName || '(anonymous)'}  ${w}${cf.url ? `:${cf.lineNumber + 1}` : ''}`;
    fnTime.set(key, (fnTime.get(key) ?? 0) + t);
    const fk = cf.url ? w : cf.functionName; // (idle), (garbage collector), (program)
    fileTime.set(fk, (fileTime.get(fk) ?? 0) + t);
  }
  const pct = (t) => `${((100 * t) / total).toFixed(1).padStart(5)}%`;
  const ms = (t) => `${(t / 1000).toFixed(0).padStart(6)} ms`;
  process.stdout.write(`\n== ${path.basename(file)}: ${(total / 1e6).toFixed(2)} s sampled\n-- top ${TOP} functions by self time\n`);
  for (const [k, t] of [...fnTime].sort((a, b) => b[1] - a[1]).slice(0, TOP)) process.stdout.write(`${ms(t)} ${pct(t)}  ${k}\n`);
  process.stdout.write('-- self time by package / file\n');
  for (const [k, t] of [...fileTime].sort((a, b) => b[1] - a[1]).slice(0, 15)) process.stdout.write(`${ms(t)} ${pct(t)}  ${k}\n`);

  // Inclusive (self + synchronous callees) time of Loam's own functions: what each SDK/node
  // entry point costs including the libraries it calls. A function is counted once per sample
  // even when it recurses.
  const parent = new Map();
  for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n);
  const incl = new Map();
  for (const [n, t] of self) {
    const seen = new Set();
    for (let p = n; p; p = parent.get(p.id)) {
      const cf = p.callFrame;
      if (!/\/(sdk|node)\/dist\//.test(cf.url)) continue;
      const key = `${cf.functionName || '(anonymous)'}  ${where(cf.url)}:${cf.lineNumber + 1}`;
      if (seen.has(key)) continue;
      seen.add(key);
      incl.set(key, (incl.get(key) ?? 0) + t);
    }
  }
  process.stdout.write(`-- Loam functions by inclusive time (sync callees included)\n`);
  for (const [k, t] of [...incl].sort((a, b) => b[1] - a[1]).slice(0, 15)) process.stdout.write(`${ms(t)} ${pct(t)}  ${k}\n`);
}
