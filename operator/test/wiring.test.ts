import { describe, expect, it } from 'vitest';
import { LoamNodeAdmin } from '../src/admin/node-admin.js';
import { reconcileDataStore } from '../src/controller/reconcile.js';
import { loadWiring } from '../src/runtime/wiring.js';

describe('loam operator wiring', () => {
  it('runs the real reconcile and node admin', async () => {
    const w = await loadWiring();
    expect(w.reconciler).toBe(reconcileDataStore);
    expect(w.admin).toBeInstanceOf(LoamNodeAdmin);
    await w.admin.close();
  });
});
