/** The operator's metrics (metrics.ts) and its /metrics /healthz /readyz server (http.ts), without an API server. */
import { afterEach, describe, expect, it } from 'vitest';
import { OperatorMetrics } from '../src/runtime/metrics.js';
import { startHealthServer, type HealthServer } from '../src/runtime/http.js';
import { parseKey, parseListen, InvalidListenAddressError } from '../src/runtime/operator.js';

let server: HealthServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

async function get(p: string): Promise<{ status: number; text: string; type: string | null }> {
  const res = await fetch(`http://${server!.address}${p}`, { signal: AbortSignal.timeout(5000) });
  return { status: res.status, text: await res.text(), type: res.headers.get('content-type') };
}

describe('operator metrics and health', () => {
  it('serves the reconcile, queue and leader metrics with the process defaults, and counts what it is told', async () => {
    const m = new OperatorMetrics();
    server = await startHealthServer({ host: '127.0.0.1', port: 0, registry: m.registry, notReady: () => undefined });
    const before = await get('/metrics');
    expect(before.status).toBe(200);
    expect(before.type).toContain('text/plain');
    // Both result series exist at 0 from the start.
    expect(before.text).toContain('loam_operator_reconciles_total{result="success"} 0');
    expect(before.text).toContain('loam_operator_reconciles_total{result="error"} 0');
    expect(before.text).toContain('loam_operator_leader 0');
    expect(before.text).toContain('loam_operator_queue_depth 0');
    expect(before.text).toContain('loam_operator_process_cpu_seconds_total');
    m.observeReconcile(true, 12);
    m.observeReconcile(false, 3000);
    m.observeReconcile(false, 4);
    m.queueDepth.set(7);
    m.leader.set(1);
    const after = (await get('/metrics')).text;
    expect(after).toContain('loam_operator_reconciles_total{result="success"} 1');
    expect(after).toContain('loam_operator_reconciles_total{result="error"} 2');
    expect(after).toContain('loam_operator_reconcile_errors_total 2');
    expect(after).toContain('loam_operator_reconcile_duration_seconds_count 3');
    expect(after).toContain('loam_operator_reconcile_duration_seconds_bucket{le="0.005"} 1');
    expect(after).toContain('loam_operator_reconcile_duration_seconds_bucket{le="2.5"} 2');
    expect(after).toContain('loam_operator_queue_depth 7');
    expect(after).toContain('loam_operator_leader 1');
  });

  it('/healthz is always ok; /readyz says why not until ready; other paths are 404', async () => {
    let why: string | undefined = 'watches not synced yet: DataStore';
    server = await startHealthServer({ host: '127.0.0.1', port: 0, registry: new OperatorMetrics().registry, notReady: () => why });
    expect(await get('/healthz')).toMatchObject({ status: 200, text: 'ok\n' });
    expect(await get('/readyz')).toMatchObject({ status: 503, text: 'not ready: watches not synced yet: DataStore\n' });
    why = undefined;
    expect(await get('/readyz')).toMatchObject({ status: 200, text: 'ok\n' });
    expect((await get('/nope')).status).toBe(404);
    expect(server.port).toBeGreaterThan(0);
  });

  it('fails clearly when the address is taken', async () => {
    server = await startHealthServer({ host: '127.0.0.1', port: 0, registry: new OperatorMetrics().registry, notReady: () => undefined });
    await expect(startHealthServer({ host: '127.0.0.1', port: server.port, registry: new OperatorMetrics().registry, notReady: () => undefined })).rejects.toThrow(/EADDRINUSE/);
  });
});

describe('parsing', () => {
  it('parses HOST:PORT listen addresses and rejects others', () => {
    expect(parseListen('0.0.0.0:8080')).toEqual({ host: '0.0.0.0', port: 8080 });
    expect(parseListen('[::]:9090')).toEqual({ host: '::', port: 9090 });
    expect(parseListen('localhost:0')).toEqual({ host: 'localhost', port: 0 });
    for (const bad of ['8080', 'host:', 'host:70000', ':80', 'a b:1']) expect(() => parseListen(bad)).toThrow(InvalidListenAddressError);
  });

  it('splits a key at its first slash', () => {
    expect(parseKey('ns/name')).toEqual({ namespace: 'ns', name: 'name' });
  });
});
