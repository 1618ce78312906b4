import { ensureEtcd } from './harness/etcd.js';

/**
 * Installs the real components tests need (etcd from Debian's etcd-server) once, before any
 * test runs, so an install never spends a test's own timeout. It fails loudly when it cannot.
 */
export default async function setup(): Promise<void> {
  await ensureEtcd();
}
