/**
 * The one place that names the real reconcile and node admin client for `loam operator`, so a
 * test or another build can start the runtime with its own (startOperator takes both).
 */
import { LoamNodeAdmin } from '../admin/node-admin.js';
import type { NodeAdmin, Reconciler } from '../controller/contract.js';
import { reconcileDataStore } from '../controller/reconcile.js';

export interface Wiring {
  reconciler: Reconciler;
  admin: NodeAdmin;
}

export async function loadWiring(): Promise<Wiring> {
  return { reconciler: reconcileDataStore, admin: new LoamNodeAdmin() };
}
