import { execFile } from 'node:child_process';
import net from 'node:net';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, Persistent, registerModel, type Client, type NodeStatus } from '@loam/sdk';
import { CLI, startNode, tempDir, waitFor, type NodeProcess } from './harness/node-process.js';
import { clusterFixture } from './harness/cluster-fixture.js';
import { startS3, type S3Server } from './harness/s3-server.js';
import { formatAge, formatBytes, formatStatus, progressBar } from '../node/dist/cli-status.js';

class Item extends Persistent {
  constructor(public n: number) {
    super();
  }
}
registerModel(Item, 'Status.Item');

const execFileP = promisify(execFile);

/** The environment of a `loam` run: no Kubernetes context, no LOAM_URL unless given. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const k of ['LOAM_URL', 'KUBECONFIG', 'KUBERNETES_SERVICE_HOST']) delete env[k];
  return { ...env, HOME: tempDir('loam-home-'), ...extra };
}

/** Runs `loam ARGS` to its end: exit code and output, whatever the code. */
async function loam(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string; ms: number }> {
  const t0 = Date.now();
  try {
    const r = await execFileP(process.execPath, [CLI, ...args], { env: cleanEnv(env), encoding: 'utf8', timeout: 30_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr, ms: Date.now() - t0 };
  } catch (e) {
    const x = e as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof x.code === 'number' ? x.code : -1, stdout: x.stdout ?? '', stderr: x.stderr ?? '', ms: Date.now() - t0 };
  }
}

/** The table row of node `n`, split into its columns. */
function row(out: string, n: number): string[] | undefined {
  const line = out.split('\n').find((l) => new RegExp(`^\\s*${n}\\s{2,}\\S`).test(l));
  return line?.trim().split(/\s{2,}/);
}

async function json(url: string, extra: string[] = []): Promise<{ url: string; datastore: string | null; nodes: NodeStatus[] }> {
  const r = await loam(['status', '--url', url, '--json', ...extra]);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as { url: string; datastore: string | null; nodes: NodeStatus[] };
}

const endpointsOf = (n: NodeProcess) => n.logs.find((l) => l.msg === 'ready')!.endpoints as string[];

describe('loam status against loam dev --nodes 2', () => {
  let dev: NodeProcess;
  let urls: string[];
  let client: Client;
  beforeAll(async () => {
    dev = await startNode({ args: ['--nodes', '2'] });
    urls = endpointsOf(dev);
    client = await connect(urls[0]);
    for (let i = 0; i < 3; i++) await client.persist(new Item(i), { backend: 1 });
    for (let i = 0; i < 2; i++) await client.persist(new Item(i), { backend: 2 });
  });
  afterAll(async () => {
    await client?.close();
    await dev?.stop();
  });

  it('prints a table naming both nodes with their addresses, states and object counts', async () => {
    const r = await loam(['status', '--url', urls[0]]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^DataStore at ${urls[0]}: 2 nodes\n`));
    expect(r.stdout).toMatch(/^NODE\s+ADDRESS\s+STATE\s+OBJECTS\s+DISK\s+S3 BACKLOG\s+OLDEST\s+GENERATION$/m);
    const addr = (u: string) => /^loam:\/\/([^/]+)/.exec(u)![1];
    const [n1, n2] = [row(r.stdout, 1), row(r.stdout, 2)];
    expect(n1?.slice(0, 4)).toEqual(['1', addr(urls[0]), 'ready', '3']);
    expect(n2?.slice(0, 4)).toEqual(['2', addr(urls[1]), 'ready', '2']);
    // No S3 tier: its columns say so.
    expect(n1?.slice(5)).toEqual(['-', '-', '-']);
    expect(r.stdout).not.toMatch(/draining|did not answer/);
  });

  it('--json prints every node, machine-readable', async () => {
    const out = await json(urls[1]);
    expect(out.url).toBe(urls[1]);
    expect(out.datastore).toBeNull();
    expect(out.nodes.map((n) => [n.number, n.reachable, n.state, n.reachable && n.objects])).toEqual([[1, true, 'ready', 3], [2, true, 'ready', 2]]);
    for (const n of out.nodes) {
      if (!n.reachable) throw new Error('unreachable');
      expect(n.id).toMatch(/\S/);
      expect(n.diskBytes).toBeGreaterThan(0);
      expect(n.draining).toBeNull();
      expect(n.s3).toBeNull();
    }
  });

  it('reads LOAM_URL like the other commands, and fails clearly (exit 1) when no node answers', async () => {
    const r = await loam(['status'], { LOAM_URL: urls[0] });
    expect(r.code, r.stderr).toBe(0);
    expect(row(r.stdout, 2)?.[3]).toBe('2');

    const dead = await loam(['status', '--url', 'loam://127.0.0.1:1/default', '--timeout', '1']);
    expect(dead.code).toBe(1);
    expect(dead.stderr).toMatch(/^loam: cannot reach a Loam node at 127\.0\.0\.1:1/);
    expect(dead.stdout).toBe('');
    const bad = await loam(['status', '--timeout', 'soon']);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/not a number of seconds: soon/);
  });

  it('--datastore needs a Kubernetes context unless --url is given', async () => {
    // LOAM_URL does not count: it may name another DataStore than the one asked for.
    const r = await loam(['status', '--datastore', 'shop'], { LOAM_URL: urls[0] });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^loam: --datastore shop is looked up through Kubernetes, which needs a Kubernetes context, and there is none .*--url/);
    expect(r.stdout).toBe('');

    const ok = await loam(['status', '--datastore', 'shop', '--url', urls[0]]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(new RegExp(`^DataStore shop at ${urls[0]}: 2 nodes\n`));
    expect((await json(urls[0], ['--datastore', 'shop'])).datastore).toBe('shop');

    const bad = await loam(['status', '--datastore', 'Not_A_Name', '--url', urls[0]]);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/not a DataStore name/);
  });
});

describe('loam status during a drain', () => {
  let dev: NodeProcess;
  let client: Client;
  afterAll(async () => {
    await client?.close();
    await dev?.stop();
  });

  it('shows the draining node with a progress bar, then drained and empty', async () => {
    // Each move of the drain (1000 objects) waits 2.5 s between its copy and its forget: the
    // drain's middle lasts long enough to be seen.
    dev = await startNode({ args: ['--nodes', '2'], env: { LOAM_FAILPOINTS: 'move-after-install:pause=2500' } });
    const urls = endpointsOf(dev);
    client = await connect(urls[0], { deadlineMs: 60_000 });
    await Promise.all(Array.from({ length: 2500 }, (_, i) => client.persist(new Item(i), { backend: 2 })));
    const drain = client.drain(2, { timeoutMs: 60_000 });
    drain.catch(() => undefined);

    const seen = await waitFor(async () => {
      const r = await loam(['status', '--url', urls[0]]);
      const m = /^node 2 draining {2}(\[[#-]{30}\] +\d+%) {2}(\d+) of (\d+) objects moved, (\d+) left$/m.exec(r.stdout);
      return m && Number(m[2]) > 0 && Number(m[4]) > 0 ? { out: r.stdout, m } : undefined;
    }, 'loam status to show node 2 part-way through its drain', 30_000, 50);
    const [, bar, moved, total, left] = seen.m;
    expect(Number(total)).toBe(2500);
    expect(Number(moved) + Number(left)).toBe(2500);
    expect(bar).toBe(progressBar(Number(moved), 2500));
    expect(row(seen.out, 2)?.[2]).toBe('draining');
    expect(row(seen.out, 2)?.[3]).toBe(left);

    await drain;
    const after = await waitFor(async () => {
      const out = await json(urls[0]);
      const [n1, n2] = out.nodes;
      return n1.reachable && n2.reachable && n2.state === 'drained' && n2.draining === null ? [n1, n2] : undefined;
    }, 'node 2 to be reported drained');
    expect(after.map((n) => n.reachable && n.objects)).toEqual([2500, 0]);
    const r = await loam(['status', '--url', urls[0]]);
    expect(row(r.stdout, 2)?.slice(2, 4)).toEqual(['drained', '0']);
    expect(r.stdout).not.toMatch(/draining/);
  });
});

describe('loam status with a node that does not answer', () => {
  const fx = clusterFixture('status');
  let hung: net.Server;
  const sockets: net.Socket[] = [];
  beforeAll(async () => {
    // Accepts connections and never answers: a hung node, as clients see it.
    hung = net.createServer((s) => sockets.push(s));
    await new Promise<void>((r) => hung.listen(0, '127.0.0.1', r));
  });
  afterAll(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((r) => hung?.close(r));
  });

  it('lists it as unreachable, within the timeout, and reports the others', async () => {
    const port = (hung.address() as net.AddressInfo).port;
    const prefix = fx.prefix();
    const a = await fx.node(prefix);
    // Node 2 runs, but the client address it advertises leads to the server that never answers.
    await fx.node(prefix, { args: ['--advertise', `127.0.0.1:${port}`] });
    const c = await fx.client(a);
    await c.persist(new Item(1));
    await waitFor(async () => (await c.backends()).length === 2, 'both nodes in the member list');

    const r = await loam(['status', '--url', a.url, '--timeout', '2']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.ms).toBeLessThan(15_000);
    expect(r.stdout).toMatch(/^DataStore at \S+: 2 nodes, 1 not answering\n/);
    expect(row(r.stdout, 1)?.slice(2, 4)).toEqual(['ready', '1']);
    expect(row(r.stdout, 2)?.slice(1, 4)).toEqual([`127.0.0.1:${port}`, 'unreachable', '-']);
    expect(r.stdout).toMatch(new RegExp(`^node 2 \\(127\\.0\\.0\\.1:${port}\\) did not answer: .+`, 'm'));

    const out = await json(a.url, ['--timeout', '2']);
    expect(out.nodes.map((n) => [n.number, n.reachable])).toEqual([[1, true], [2, false]]);
    const n2 = out.nodes[1];
    expect(!n2.reachable && n2.error).toMatch(/\S/);

    // The SDK says the same, without throwing.
    const st = await c.status({ timeoutMs: 1_000 });
    expect(st.map((n) => n.reachable)).toEqual([true, false]);
  });
});

describe('loam status of a node with an S3 tier', () => {
  let s3: S3Server;
  let node: NodeProcess;
  let client: Client;
  beforeAll(async () => {
    s3 = await startS3();
  });
  afterAll(async () => {
    await client?.close();
    await node?.stop();
    await s3?.stop();
  });

  it('shows the upload backlog and the generation, and an empty backlog after a flush', async () => {
    node = await startNode({
      // A long upload interval: a write waits in the backlog until flushed.
      args: ['--s3-endpoint', s3.endpoint, '--s3-bucket', s3.bucket, '--s3-prefix', 'status', '--s3-region', s3.region, '--upload-interval', '1h', '--node-name', 'status-s3'],
      env: { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey },
    });
    client = await connect(node.url);
    await client.persist(new Item(7));
    const before = await waitFor(async () => {
      const n = (await json(node.url)).nodes[0];
      return n.reachable && n.s3 && n.s3.generation > 0 && n.s3.backlogBytes > 0 ? n.s3 : undefined;
    }, 'a generation and a backlog');
    expect(before.fenced).toBe(false);
    expect(before.backlogSegments).toBeGreaterThan(0);
    const r = await loam(['status', '--url', node.url]);
    expect(r.code, r.stderr).toBe(0);
    const cols = row(r.stdout, 1)!;
    expect(cols[5]).toMatch(/^\d+(\.\d)? (B|KiB|MiB)$/);
    expect(cols[6]).toMatch(/^\d+(ms|\.\ds|m\d\ds)$/);
    expect(cols[7]).toBe(String(before.generation));

    await client.flush();
    const after = (await json(node.url)).nodes[0];
    if (!after.reachable || !after.s3) throw new Error(`no S3 status: ${JSON.stringify(after)}`);
    expect(after.s3.backlogBytes).toBe(0);
    expect(after.s3.generation).toBe(before.generation);
  });
});

describe('status formatting', () => {
  it('draws progress bars that are full only when done', () => {
    expect(progressBar(0, 10, 10)).toBe('[----------]   0%');
    expect(progressBar(5, 10, 10)).toBe('[#####-----]  50%');
    expect(progressBar(999, 1000, 10)).toBe('[#########-]  99%');
    expect(progressBar(10, 10, 10)).toBe('[##########] 100%');
    expect(progressBar(0, 0, 4)).toBe('[####] 100%'); // nothing to move: done
    expect(progressBar(12, 10, 4)).toBe('[####] 100%');
    expect(progressBar(-1, 10, 4)).toBe('[----]   0%');
    expect(progressBar(1, 3)).toMatch(/^\[#{10}-{20}\]  33%$/);
  });

  it('formats sizes and ages', () => {
    expect([0, 1023, 1024, 1536, 64 * 1024 ** 2, 3 * 1024 ** 4].map(formatBytes)).toEqual(['0 B', '1023 B', '1.0 KiB', '1.5 KiB', '64.0 MiB', '3.0 TiB']);
    expect([0, 850, 4_200, 185_000, 7_620_000].map(formatAge)).toEqual(['0ms', '850ms', '4.2s', '3m05s', '2h07m']);
  });

  it('lays out nodes, drains, fencing and nodes that did not answer', () => {
    const base = { id: 'x', state: 'ready', reachable: true as const, diskBytes: 2048, draining: null, s3: null };
    const out = formatStatus([
      { ...base, number: 1, address: '10.0.0.1:7480', objects: 1200, s3: { backlogBytes: 5 * 1024 ** 2, backlogOldestMs: 3_000, backlogSegments: 1, generation: 4, fenced: false } },
      { ...base, number: 2, address: '10.0.0.2:7480', objects: 300, draining: { objectsLeft: 300, objectsTotal: 1200 }, s3: { backlogBytes: 0, backlogOldestMs: 0, backlogSegments: 0, generation: 9, fenced: true } },
      { id: 'y', number: 3, address: '10.0.0.3:7480', state: 'ready', reachable: false, error: 'deadline exceeded' },
    ], { url: 'loam://10.0.0.1:7480/default', datastore: 'shop' });
    expect(out).toBe([
      'DataStore shop at loam://10.0.0.1:7480/default: 3 nodes, 1 not answering',
      '',
      'NODE  ADDRESS        STATE        OBJECTS     DISK  S3 BACKLOG  OLDEST  GENERATION',
      '   1  10.0.0.1:7480  ready           1200  2.0 KiB     5.0 MiB  3.0s    4',
      '   2  10.0.0.2:7480  draining         300  2.0 KiB         0 B  -       9 FENCED',
      '   3  10.0.0.3:7480  unreachable        -        -           -  -       -',
      '',
      `node 2 draining  [${'#'.repeat(22)}${'-'.repeat(8)}]  75%  900 of 1200 objects moved, 300 left`,
      'node 2 is fenced: a later start of the same node identity took over; this process uploads and acknowledges nothing',
      'node 3 (10.0.0.3:7480) did not answer: deadline exceeded',
    ].join('\n'));
  });
});
