import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command, InvalidArgumentError as CliArgError, Option } from 'commander';
import type { NodeStatus } from '@loam/sdk';
import type { DataStore, StatefulSetRollView } from '@loam/operator';

const DEFAULT_URL = 'loam://127.0.0.1:7480/default';
/** A DataStore is a Kubernetes object: its name is a DNS subdomain. */
const DATASTORE_NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

/** `[#######-------]  50%`: `done` of `total`, never shown full before it is. */
export function progressBar(done: number, total: number, width = 30): string {
  const fraction = total <= 0 ? 1 : Math.min(1, Math.max(0, done / total));
  const filled = Math.floor(fraction * width);
  const percent = Math.floor(fraction * 100);
  return `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${String(percent).padStart(3)}%`;
}

/** 512 B, 1.5 KiB, 64.0 MiB ... */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = n / 1024;
  let i = 0;
  for (; v >= 1024 && i < units.length - 1; i++) v /= 1024;
  return `${v.toFixed(1)} ${units[i]}`;
}

/** 850ms, 4.2s, 3m05s, 2h07m. */
export function formatAge(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`;
  const s = Math.floor(ms / 1000);
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

function table(header: string[], rows: string[][], rightAligned: Set<number>): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (rightAligned.has(i) ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join('  ').trimEnd();
  return [line(header), ...rows.map(line)];
}

/** What `loam status` prints: a line about the DataStore, a table of its nodes, then each drain's progress and each node that did not answer. */
export function formatStatus(nodes: NodeStatus[], opts: { url: string; datastore?: string }): string {
  const title = `DataStore ${opts.datastore ? `${opts.datastore} ` : ''}at ${opts.url}: ${nodes.length} node${nodes.length === 1 ? '' : 's'}`
    + (nodes.every((n) => n.reachable) ? '' : `, ${nodes.filter((n) => !n.reachable).length} not answering`);
  const rows = nodes.map((n) => {
    if (!n.reachable) return [String(n.number), n.address, 'unreachable', '-', '-', '-', '-', '-'];
    const s3 = n.s3;
    return [
      String(n.number), n.address, n.draining ? 'draining' : n.state, String(n.objects), formatBytes(n.diskBytes),
      s3 ? formatBytes(s3.backlogBytes) : '-',
      s3 && s3.backlogSegments > 0 ? formatAge(s3.backlogOldestMs) : '-',
      s3 ? (s3.generation === 0 ? 'none yet' : String(s3.generation)) + (s3.fenced ? ' FENCED' : '') : '-',
    ];
  });
  const out = [title, '', ...table(['NODE', 'ADDRESS', 'STATE', 'OBJECTS', 'DISK', 'S3 BACKLOG', 'OLDEST', 'GENERATION'], rows, new Set([0, 3, 4, 5]))];
  const notes: string[] = [];
  for (const n of nodes) {
    if (n.reachable && n.draining) {
      const { objectsLeft: left, objectsTotal: total } = n.draining;
      notes.push(`node ${n.number} draining  ${progressBar(total - left, total)}  ${total - left} of ${total} objects moved, ${left} left`);
    }
  }
  for (const n of nodes) {
    if (n.reachable && n.s3?.fenced) notes.push(`node ${n.number} is fenced: a later start of the same node identity took over; this process uploads and acknowledges nothing`);
    if (!n.reachable) notes.push(`node ${n.number} (${n.address}) did not answer: ${n.error}`);
  }
  return [...out, ...(notes.length ? ['', ...notes] : [])].join('\n');
}

/** What `loam status --datastore NAME` shows: the DataStore with its status, its StatefulSet, and (when they answer) its nodes' own status. */
export interface DataStoreView {
  namespace: string;
  ds: DataStore;
  statefulSet?: StatefulSetRollView;
  /** The nodes' own answers, for the progress of a drain (the DataStore's status says only that one runs). */
  live?: NodeStatus[];
  /** Now, for condition ages (default Date.now()). */
  now?: number;
}

/** The drains and rolling upgrade in progress, as numbers (also what --json prints). */
export function progressOf(v: DataStoreView): { drains: { node: string; backend?: number; objectsLeft: number; objectsTotal?: number }[]; roll?: { updated: number; replicas: number; currentRevision: string; updateRevision: string; partition?: number } } {
  const drains = (v.ds.status?.nodes ?? []).filter((n) => n.draining).map((n) => {
    const live = v.live?.find((l) => l.reachable && l.number === n.backend && l.draining);
    const d = live?.reachable ? live.draining : null;
    return d ? { node: n.name, backend: n.backend, objectsLeft: d.objectsLeft, objectsTotal: d.objectsTotal } : { node: n.name, backend: n.backend, objectsLeft: n.objects ?? 0 };
  });
  const s = v.statefulSet;
  const rolling = s && s.currentRevision && s.updateRevision && s.currentRevision !== s.updateRevision;
  return {
    drains,
    ...(rolling ? { roll: { updated: s.updatedReplicas, replicas: s.replicas, currentRevision: s.currentRevision!, updateRevision: s.updateRevision!, ...(s.partition !== undefined ? { partition: s.partition } : {}) } } : {}),
  };
}

/** `loam status --datastore NAME`: a line about the DataStore, its conditions, its nodes, then any drain or rolling upgrade with a progress bar. */
export function formatDataStore(v: DataStoreView): string {
  const { ds } = v;
  const st = ds.status ?? {};
  const now = v.now ?? Date.now();
  const want = ds.spec.nodes ?? 3;
  const out: string[] = [
    `DataStore ${ds.metadata.name} in ${v.namespace}: ${st.phase ?? 'no status yet'}, ${st.readyNodes ?? 0} of ${want} node${want === 1 ? '' : 's'} ready${st.endpoint ? `  (endpoint ${st.endpoint})` : ''}`,
  ];
  if (ds.metadata.generation !== undefined && st.observedGeneration !== ds.metadata.generation) {
    out.push(`the operator has not acted on the latest spec yet (generation ${ds.metadata.generation}, observed ${st.observedGeneration ?? 'none'})`);
  }
  if (ds.metadata.deletionTimestamp) out.push(`being deleted (deletionPolicy ${ds.spec.deletionPolicy ?? 'Retain'})`);
  const conds = st.conditions ?? [];
  if (conds.length) {
    const age = (t: string) => {
      const ms = now - Date.parse(t);
      return Number.isFinite(ms) ? formatAge(Math.max(0, ms)) : '-';
    };
    out.push('', ...table(['CONDITION', 'STATUS', 'REASON', 'AGE', 'MESSAGE'], conds.map((c) => [c.type, c.status, c.reason, age(c.lastTransitionTime), c.message]), new Set<number>()));
  }
  const nodes = st.nodes ?? [];
  if (nodes.length) {
    const rows = nodes.map((n) => [
      n.name,
      n.backend === undefined ? '-' : String(n.backend),
      n.ready ? 'yes' : 'no',
      n.objects === undefined ? '-' : String(n.objects),
      n.uploadBacklogBytes === undefined ? '-' : formatBytes(n.uploadBacklogBytes),
      n.draining ? 'draining' : '',
    ]);
    out.push('', ...table(['NODE', 'BACKEND', 'READY', 'OBJECTS', 'BACKLOG', ''], rows, new Set([1, 3, 4])));
  } else {
    out.push('', 'no nodes reported yet');
  }
  const p = progressOf(v);
  const notes: string[] = [];
  for (const d of p.drains) {
    notes.push(d.objectsTotal !== undefined
      ? `${d.node} draining  ${progressBar(d.objectsTotal - d.objectsLeft, d.objectsTotal)}  ${d.objectsTotal - d.objectsLeft} of ${d.objectsTotal} objects moved, ${d.objectsLeft} left`
      : `${d.node} draining: ${d.objectsLeft} objects left (the node did not answer from here, so its total is unknown; run inside the cluster or give --url for the progress)`);
  }
  if (p.roll) {
    const r = p.roll;
    notes.push(`rolling upgrade  ${progressBar(r.updated, r.replicas)}  ${r.updated} of ${r.replicas} pods updated (revision ${r.currentRevision} -> ${r.updateRevision}${r.partition !== undefined && r.partition > 0 ? `; pods from ordinal ${r.partition} up are being updated` : ''})`);
  }
  return [...out, ...(notes.length ? ['', ...notes] : [])].join('\n');
}

/** Where a kubeconfig or an in-cluster service account would give a Kubernetes context, if anywhere. */
function kubernetesContext(): string | undefined {
  if (process.env.KUBERNETES_SERVICE_HOST) return 'in-cluster';
  for (const f of (process.env.KUBECONFIG ?? '').split(path.delimiter).filter(Boolean)) if (fs.existsSync(f)) return f;
  const home = path.join(os.homedir(), '.kube', 'config');
  return fs.existsSync(home) ? home : undefined;
}

/** Registers `loam status` on the program. */
export function statusCommand(program: Command): Command {
  return program
    .command('status')
    .description('show every node of a DataStore: state, objects, S3 upload backlog and generation, and any drain in progress; with --datastore NAME, the DataStore resource through Kubernetes (phase, conditions, nodes, drains and rolling upgrades)')
    .addOption(new Option('--url <url>', 'any node of the DataStore, loam://host:port[/dataset]').env('LOAM_URL').default(DEFAULT_URL))
    .option('--datastore <name>', 'the DataStore resource to show (found through Kubernetes; without a Kubernetes context give --url)', (v) => {
      if (!DATASTORE_NAME.test(v)) throw new CliArgError(`not a DataStore name: ${JSON.stringify(v)} (lowercase letters, digits, '-' and '.')`);
      return v;
    })
    .option('--namespace <ns>', "the DataStore's namespace, with --datastore (default: the Kubernetes context's, else default)")
    .option('--json', 'print the nodes as JSON', false)
    .option('--timeout <seconds>', 'give up after this long; a node that has not answered by then is shown as unreachable', (v) => {
      const n = Number(v);
      if (!Number.isFinite(n) || n <= 0) throw new CliArgError(`not a number of seconds: ${v}`);
      return n;
    }, 10)
    .action(async (opts: { url: string; datastore?: string; namespace?: string; json: boolean; timeout: number }, cmd: Command) => {
      const { connect } = await import('@loam/sdk');
      const timeoutMs = opts.timeout * 1000;
      const deadline = Date.now() + timeoutMs;
      if (opts.datastore && cmd.getOptionValueSource('url') !== 'cli') {
        const ctx = kubernetesContext();
        if (ctx === undefined) {
          throw new Error(`--datastore ${opts.datastore} is looked up through Kubernetes, which needs a Kubernetes context, and there is none (no KUBECONFIG, no ~/.kube/config, not in a pod): give the DataStore's endpoint with --url loam://HOST:PORT instead`);
        }
        const { lookupDataStore } = await import('@loam/operator');
        const found = await withDeadline(lookupDataStore(opts.datastore, opts.namespace), timeoutMs, `looking up DataStore ${opts.datastore} (Kubernetes context: ${ctx})`);
        const view: DataStoreView = { namespace: found.namespace, ds: found.ds, statefulSet: found.statefulSet };
        // A drain's progress is only in the nodes' own status: ask a draining node, if it answers from here (inside the cluster it does).
        const via = (found.ds.status?.nodes ?? []).find((n) => n.draining && n.endpoint)?.endpoint;
        if (via) {
          const budget = Math.min(3000, Math.max(500, deadline - Date.now()));
          view.live = await connect(via, { connectTimeoutMs: budget, deadlineMs: budget })
            .then(async (c) => {
              try {
                return await c.status({ timeoutMs: budget });
              } finally {
                await c.close();
              }
            })
            .catch(() => undefined);
        }
        const st = found.ds.status ?? {};
        process.stdout.write(opts.json
          ? `${JSON.stringify({ datastore: opts.datastore, namespace: found.namespace, phase: st.phase ?? null, conditions: st.conditions ?? [], readyNodes: st.readyNodes ?? 0, endpoint: st.endpoint ?? null, nodes: st.nodes ?? [], ...progressOf(view) }, null, 2)}\n`
          : `${formatDataStore(view)}\n`);
        return;
      }
      const client = await connect(opts.url, { connectTimeoutMs: timeoutMs, deadlineMs: timeoutMs });
      try {
        const nodes = await client.status({ timeoutMs: Math.max(500, deadline - Date.now()) });
        process.stdout.write(opts.json
          ? `${JSON.stringify({ url: opts.url, datastore: opts.datastore ?? null, nodes }, null, 2)}\n`
          : `${formatStatus(nodes, { url: opts.url, datastore: opts.datastore })}\n`);
      } finally {
        await client.close();
      }
    });
}

async function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (t = setTimeout(() => reject(new Error(`${what}: no answer within ${ms / 1000} s`)), ms)))]);
  } finally {
    clearTimeout(t);
  }
}
