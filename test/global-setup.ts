import { ensureEtcd } from './harness/etcd.js';
import { HELM } from './harness/kube-tools.js';
import { ensureGoTool, VERSITYGW } from './harness/tools.js';

/**
 * Installs the real components tests need once, before any test runs, so an install or a build
 * never spends a test's own timeout: etcd from Debian's etcd-server, and versitygw (the S3
 * server) and helm (test/deploy-drift.test.ts renders the chart with it) built from their Go
 * modules into the tools cache (a cold build takes a minute or two each; a warm cache costs a few
 * stat calls). It fails loudly when it cannot.
 */
export default async function setup(): Promise<void> {
  // The two Go builds one after the other: two cores.
  await Promise.all([ensureEtcd(), ensureGoTool(VERSITYGW).then(() => ensureGoTool(HELM))]);
}
