import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, ROOT, startNode, tempDir, type NodeProcess } from './harness/node-process.js';
import { releasePorts, reservePortBlock } from './harness/ports.js';

describe('loam command', () => {
  it('--help and --version', () => {
    const help = execFileSync(process.execPath, [CLI, '--help'], { encoding: 'utf8' });
    expect(help).toMatch(/dev \[options\]/);
    const devHelp = execFileSync(process.execPath, [CLI, 'dev', '--help'], { encoding: 'utf8' });
    for (const flag of ['--data', '--port', '--metrics-port', '--log-level', '--cache-size']) expect(devHelp).toContain(flag);
    const version = execFileSync(process.execPath, [CLI, '--version'], { encoding: 'utf8' }).trim();
    expect(version).toBe(JSON.parse(fs.readFileSync(path.join(ROOT, 'node/package.json'), 'utf8')).version);
  });

  it('rejects bad flags with a clear message and a non-zero exit', () => {
    const r = spawnSync(process.execPath, [CLI, 'dev', '--port', 'abc'], { encoding: 'utf8' });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/not a port: abc/);
    const lvl = spawnSync(process.execPath, [CLI, 'dev', '--log-level', 'loud'], { encoding: 'utf8' });
    expect(lvl.status).not.toBe(0);
    expect(lvl.stderr).toMatch(/Allowed choices/);
  });
});

describe('loam dev --nodes 3 on the default port layout', () => {
  it('puts the metrics ports after the client ports (the default metrics port is node 2\'s client port)', async () => {
    // The defaults are --port 7480 --metrics-port 7481; the same layout on a free base port.
    const base = await reservePortBlock(6);
    const ports = Array.from({ length: 6 }, (_, i) => base + i);
    const node = await startNode({ args: ['--nodes', '3', '--port', String(base), '--metrics-port', String(base + 1)] })
      .catch((e: Error) => e)
      .finally(() => releasePorts(ports));
    // Before: node 1's metrics took base+1, and node 2 could not listen there ("address in use").
    if (node instanceof Error) throw node; // its whole message, not the matcher's first line
    const n: NodeProcess = node;
    try {
      const ready = n.logs.find((l) => l.msg === 'ready')!;
      expect(ready.metricsPorts).toEqual([base + 3, base + 4, base + 5]);
      expect((ready.endpoints as string[]).length).toBe(3);
    } finally {
      await n.stop();
    }
  });
});

describe('metrics and logs', () => {
  let node: NodeProcess;
  beforeAll(async () => {
    node = await startNode({ args: ['--log-level', 'debug'] });
  });
  afterAll(async () => {
    await node?.stop();
  });

  it('serves Prometheus metrics with requests, commits, fsync, objects and cache figures', async () => {
    const { connect, Persistent, registerModel } = await import('@loam/sdk');
    class M extends Persistent {
      x = 1;
    }
    registerModel(M, 'Cli.M');
    const c = await connect(node.url);
    const m = await c.persist(new M());
    await c.get(m.$oid!);
    await c.close();
    const res = await fetch(`http://127.0.0.1:${node.metricsPort}/metrics`);
    expect(res.status).toBe(200);
    const body = await res.text();
    expect(body).toMatch(/loam_requests_total\{method="Commit",outcome="ok"\} [1-9]/);
    expect(body).toMatch(/loam_request_duration_seconds_bucket\{le="[^"]+",method="Get",outcome="ok"\}/);
    expect(body).toMatch(/loam_commits_total\{outcome="ok"\} [1-9]/);
    expect(body).toMatch(/loam_fsync_duration_seconds_count [1-9]/);
    expect(body).toMatch(/loam_objects [1-9]/);
    expect(body).toMatch(/loam_disk_bytes [1-9]/);
    expect(body).toMatch(/loam_cache_hits_total [1-9]/);
    expect(body).toContain('loam_cache_misses_total');
    expect(body).toContain('loam_conflicts_total');
  });

  it('logs one JSON object a line with a level', () => {
    expect(node.logs.length).toBeGreaterThan(1);
    for (const l of node.logs) {
      expect(l.raw).toBeUndefined();
      expect(typeof l.level).toBe('number');
    }
  });
});

describe('packaging', () => {
  it('@loam/sdk imports from plain Node ESM JavaScript', () => {
    const dir = tempDir();
    const file = path.join(ROOT, `.esm-check-${process.pid}.mjs`);
    fs.writeFileSync(file, "import { connect, Persistent, registerModel, Ref, NotFoundError, WriteConflictError } from '@loam/sdk';\n" +
      "class A extends Persistent {}\nregisterModel(A, 'EsmCheck.A');\nconsole.log(typeof connect, typeof Ref.parse, new NotFoundError('x') instanceof Error, typeof WriteConflictError);\n");
    try {
      const out = execFileSync(process.execPath, [file], { encoding: 'utf8', cwd: dir });
      expect(out.trim()).toBe('function function true function');
    } finally {
      fs.rmSync(file, { force: true });
    }
    expect(fs.existsSync(path.join(ROOT, 'sdk/dist/index.d.ts'))).toBe(true);
  });
});
