import { describe, expect, it } from 'vitest';
import { LoamNodeAdmin } from '../src/admin/node-admin.js';
import { reconcileDataStore } from '../src/controller/reconcile.js';
import { loadWiring } from '../src/runtime/wiring.js';

describe('loam operator wiring', () => {
  it('runs the real reconcile and node admin, nothing missing', async () => {
    const w = await loadWiring();
    expect(w.reconciler).toBe(reconcileDataStore);
    expect(w.admin).toBeInstanceOf(LoamNodeAdmin);
    expect(w.missing).toEqual([]);
    await w.admin.close();
  });
});
