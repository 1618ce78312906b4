/**
 * The one place that names the real reconcile and node admin client, so `loam operator` builds
 * and runs before they are merged.
 *
 * TODO(merge): once operator/src/controller/reconcile.ts (`reconcileDataStore: Reconciler`) and
 * operator/src/admin/node-admin.ts (`LoamNodeAdmin implements NodeAdmin`) are on main, replace
 * the two dynamic imports below with static ones
 *     import { reconcileDataStore } from '../controller/reconcile.js';
 *     import { LoamNodeAdmin } from '../admin/node-admin.js';
 * and delete the stand-ins. Until then the specifiers are variables, so the compiler does not
 * resolve them: a build without those modules uses the stand-ins, which throw "not built" (the
 * runtime logs, counts and requeues that like any reconcile error).
 */
import type { NodeAdmin, Reconciler } from '../controller/contract.js';

export class NotBuiltError extends Error {
  constructor(what: string) {
    super(`${what} not built: this operator was built without it (see operator/src/runtime/wiring.ts)`);
    this.name = 'NotBuiltError';
  }
}

const RECONCILE_MODULE: string = '../controller/reconcile.js';
const NODE_ADMIN_MODULE: string = '../admin/node-admin.js';

/** The module itself is absent (not one it imports: that is a broken build, and it throws). */
function missing(e: unknown, specifier: string): boolean {
  const err = e as { code?: string; message?: string } | null;
  return err?.code === 'ERR_MODULE_NOT_FOUND' && String(err.message).includes(specifier.replace(/^\.\.\//, ''));
}

export const reconcileNotBuilt: Reconciler = async () => {
  throw new NotBuiltError('reconcile');
};

export class NodeAdminNotBuilt implements NodeAdmin {
  status(): Promise<never> {
    return Promise.reject(new NotBuiltError('node admin'));
  }
  startDrain(): Promise<never> {
    return Promise.reject(new NotBuiltError('node admin'));
  }
  cancelDrain(): Promise<never> {
    return Promise.reject(new NotBuiltError('node admin'));
  }
  async close(): Promise<void> {}
}

export interface Wiring {
  reconciler: Reconciler;
  admin: NodeAdmin;
  /** What is missing from this build (empty in a complete one). */
  missing: string[];
}

export async function loadWiring(): Promise<Wiring> {
  const out: Wiring = { reconciler: reconcileNotBuilt, admin: new NodeAdminNotBuilt(), missing: [] };
  try {
    const mod = (await import(RECONCILE_MODULE)) as { reconcileDataStore?: Reconciler };
    if (typeof mod.reconcileDataStore !== 'function') throw new Error(`${RECONCILE_MODULE} has no reconcileDataStore`);
    out.reconciler = mod.reconcileDataStore;
  } catch (e) {
    if (!missing(e, RECONCILE_MODULE)) throw e;
    out.missing.push('reconcile');
  }
  try {
    const mod = (await import(NODE_ADMIN_MODULE)) as Record<string, unknown>;
    const Ctor = (mod.LoamNodeAdmin ?? mod.NodeAdmin) as (new () => NodeAdmin) | undefined;
    if (typeof Ctor !== 'function') throw new Error(`${NODE_ADMIN_MODULE} exports no LoamNodeAdmin class`);
    out.admin = new Ctor();
  } catch (e) {
    if (!missing(e, NODE_ADMIN_MODULE)) throw e;
    out.missing.push('node admin');
  }
  return out;
}
