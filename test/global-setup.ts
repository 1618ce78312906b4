import { ensureEtcd } from './harness/etcd.js';
import { ensureGoTool, VERSITYGW } from './harness/tools.js';

/**
 * Installs the real components tests need once, before any test runs, so an install or a build
 * never spends a test's own timeout: etcd from Debian's etcd-server, and versitygw (the S3
 * server) built from its Go module into the tools cache (a cold build takes a minute or two; a
 * warm cache costs a few stat calls). It fails loudly when it cannot.
 */
export default async function setup(): Promise<void> {
  await Promise.all([ensureEtcd(), ensureGoTool(VERSITYGW)]);
}
