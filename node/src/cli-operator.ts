/**
 * `loam operator`: the Kubernetes operator (its runtime is @loam/operator's; this is its flags).
 * The flag names are a contract the Helm chart is written against; docs/operator-runtime.md
 * lists them.
 */
import { Command, InvalidArgumentError as CliArgError, Option } from 'commander';
import { createLogger, LOG_LEVELS } from './logger.js';
import { parseDuration } from './cli-s3.js';
import type { LevelWithSilent } from 'pino';

interface OperatorFlags {
  namespace?: string;
  metricsListen: string;
  leaderElect: boolean;
  leaderElectionNamespace: string;
  leaderElectionId: string;
  resync: number;
  workers: number;
  image: string;
  kubeconfig?: string;
  logLevel: LevelWithSilent;
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

// An empty value (a chart that renders `value: ""` for "unset") means the default, not an error.
function dnsName(what: string, re: RegExp) {
  return (v: string) => {
    if (v === '') return undefined;
    if (!re.test(v)) throw new CliArgError(`not a ${what}: ${JSON.stringify(v)}`);
    return v;
  };
}

const DEFAULT_METRICS_LISTEN = '0.0.0.0:8080';
const DEFAULT_IMAGE = 'ghcr.io/loam-dev/loam:0.1.0';

function hostPort(v: string): string {
  if (v === '') return DEFAULT_METRICS_LISTEN;
  if (!/^(\[[0-9a-fA-F:]+\]|[^:\s[\]]+):(\d{1,5})$/.test(v.trim()) || Number(v.trim().split(':').pop()) > 65535) throw new CliArgError(`not HOST:PORT: ${v} (example: 0.0.0.0:8080)`);
  return v.trim();
}

/** Registers `loam operator` on the program. */
export function operatorCommand(program: Command): Command {
  return program
    .command('operator')
    .description('run the Kubernetes operator: reconciles DataStore resources (loam.dev/v1alpha1) into storage node StatefulSets')
    .addOption(new Option('--namespace <ns>', 'watch only this namespace (default: all namespaces)').env('LOAM_OPERATOR_NAMESPACE').argParser(dnsName('namespace', DNS_LABEL)))
    .addOption(new Option('--metrics-listen <host:port>', 'address of /metrics, /healthz and /readyz').env('LOAM_OPERATOR_METRICS_LISTEN').default(DEFAULT_METRICS_LISTEN).argParser(hostPort))
    .option('--no-leader-elect', 'do not elect a leader through a Lease: run as the only replica')
    .addOption(new Option('--leader-election-namespace <ns>', 'namespace of the leader election Lease').default(process.env.POD_NAMESPACE || 'default', 'env POD_NAMESPACE, else default').argParser(dnsName('namespace', DNS_LABEL)))
    .option('--leader-election-id <name>', 'name of the leader election Lease', dnsName('Lease name', DNS_SUBDOMAIN), 'loam-operator')
    .addOption(new Option('--resync <duration>', 'period of the full list of DataStores, besides the watches (e.g. 30s, 5m)').default(30_000, '30s').argParser(parseDuration))
    .option('--workers <n>', 'DataStores reconciled at once', (v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1 || n > 64) throw new CliArgError(`--workers takes 1 to 64, got ${v}`);
      return n;
    }, 4)
    .addOption(new Option('--image <image>', 'the node image a DataStore without spec.image runs (the operator\'s own)').env('LOAM_OPERATOR_IMAGE').default(DEFAULT_IMAGE).argParser((v) => v.trim() || DEFAULT_IMAGE))
    .option('--kubeconfig <path>', 'kubeconfig file (default: KUBECONFIG, ~/.kube/config, else the pod\'s service account; LOAM_SERVICEACCOUNT_DIR names its directory)')
    .addOption(new Option('--log-level <level>', 'log level').choices(LOG_LEVELS).default(process.env.LOAM_LOG_LEVEL ?? 'info'))
    .action(async (flags: OperatorFlags) => {
      // One logger for the whole `loam` binary (its base names the component, so no child with another).
      const log = createLogger(flags.logLevel);
      // An empty --leader-election-namespace or --leader-election-id (see dnsName) falls back to its default.
      flags.leaderElectionNamespace ||= process.env.POD_NAMESPACE || 'default';
      flags.leaderElectionId ||= 'loam-operator';
      const { runOperator } = await import('@loam/operator');
      let running: Awaited<ReturnType<typeof runOperator>>;
      try {
        running = await runOperator({
          namespace: flags.namespace,
          metricsListen: flags.metricsListen,
          leaderElect: flags.leaderElect,
          leaderElectionNamespace: flags.leaderElectionNamespace,
          leaderElectionId: flags.leaderElectionId,
          resyncMs: flags.resync,
          workers: flags.workers,
          image: flags.image,
          kubeconfig: flags.kubeconfig,
        }, log);
      } catch (e) {
        log.fatal({ err: e }, 'failed to start');
        process.stderr.write(`loam: ${(e as Error).message}\n`);
        process.exit(1);
      }
      process.stderr.write(`loam operator: /metrics, /healthz and /readyz on http://${running.handle.metricsAddress}\n`);
      // A long-running controller logs a stray rejection (client-node's ListWatch drops the promise
      // of its own restart, e.g. when a rotated token file cannot be read) instead of crashing into a
      // restart loop: watches are restarted and every DataStore is listed again each resync anyway.
      process.on('unhandledRejection', (e: unknown) => log.error({ err: e }, 'unhandled rejection (continuing)'));
      let signals = 0;
      const shutdown = (signal: string) => {
        if (++signals > 1) process.exit(130);
        log.info({ signal }, 'stopping');
        running.close().then(
          () => process.exit(0),
          (e: unknown) => {
            log.error({ err: e }, 'stop failed');
            process.exit(1);
          },
        );
      };
      process.on('SIGINT', () => shutdown('SIGINT'));
      process.on('SIGTERM', () => shutdown('SIGTERM'));
    });
}
