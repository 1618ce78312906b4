/** wiring.ts: the reconcile and node admin are loaded when built; their stand-ins throw a clear "not built". */
import { describe, expect, it } from 'vitest';
import { loadWiring, NodeAdminNotBuilt, NotBuiltError, reconcileNotBuilt } from '../src/runtime/wiring.js';

describe('wiring', () => {
  it('the stand-ins throw NotBuiltError naming what is missing', async () => {
    await expect(reconcileNotBuilt({} as never, { namespace: 'a', name: 'b' })).rejects.toThrow(NotBuiltError);
    await expect(reconcileNotBuilt({} as never, { namespace: 'a', name: 'b' })).rejects.toThrow(/reconcile not built/);
    const admin = new NodeAdminNotBuilt();
    await expect(admin.status({ address: '127.0.0.1:1' })).rejects.toThrow(/node admin not built/);
    await expect(admin.startDrain({ address: '127.0.0.1:1' }, 1, 'op')).rejects.toThrow(NotBuiltError);
    await admin.close();
  });

  it('loads what this build has, and lists what it lacks', async () => {
    const w = await loadWiring();
    expect(typeof w.reconciler).toBe('function');
    expect(typeof w.admin.status).toBe('function');
    // Whatever is listed missing is served by its stand-in, and only that.
    expect(w.missing.includes('reconcile')).toBe(w.reconciler === reconcileNotBuilt);
    expect(w.missing.includes('node admin')).toBe(w.admin instanceof NodeAdminNotBuilt);
    await w.admin.close();
  });
});
