#!/usr/bin/env node
import { Command, InvalidArgumentError as CliArgError, Option } from 'commander';
import { LoamNode } from './server.js';
import path from 'node:path';
import { createLogger, LOG_LEVELS, type Logger } from './logger.js';
import { EtcdMetaStore } from './meta/etcd-meta-store.js';
import { etcdAuthOptions, etcdCredentials, type EtcdCliOpts } from './cli-etcd.js';
import { EmbeddedMetaStore } from './meta/embedded-meta-store.js';
import type { MetaStore } from './meta/meta-store.js';
import { SERVER_VERSION } from './store-service.js';
import { ClusterSecret } from './cluster/peer-auth.js';
import type { LevelWithSilent } from 'pino';
import { parseDuration, s3FromOpts, s3Options, type S3CliOpts } from './cli-s3.js';
import { statusCommand } from './cli-status.js';
import { parseSize, sizeFromEnv } from './size.js';
import { operatorCommand } from './cli-operator.js';

function parsePort(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new CliArgError(`not a port: ${v}`);
  return n;
}

const program = new Command('loam')
  .description('Loam: a persistent object store for TypeScript')
  .version(SERVER_VERSION, '-v, --version')
  .showHelpAfterError();

/**
 * Where `loam dev --nodes N` puts the first metrics port: node i serves metrics on it + i. The
 * default (7481) lies inside the client ports 7480..7480+N-1 of several nodes, so then the
 * metrics ports start right after them (7483.. for 3 nodes).
 */
function devMetricsPort(clientPort: number, nodes: number, metricsPort: number): number {
  const overlaps = clientPort !== 0 && metricsPort < clientPort + nodes && metricsPort + nodes > clientPort;
  return overlaps ? clientPort + nodes : metricsPort;
}

function parseHostPort(v: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:]+\]|[^:\s]+):(\d{1,5})$/.exec(v.trim());
  if (!m || Number(m[2]) > 65535) throw new CliArgError(`not HOST:PORT: ${v}`);
  return { host: m[1].replace(/^\[|\]$/g, ''), port: Number(m[2]) };
}

function parseEndpoints(v: string): string[] {
  const list = v.split(',').map((s) => s.trim()).filter(Boolean).map((s) => (/^https?:\/\//.test(s) ? s : `http://${s}`));
  if (list.length === 0) throw new CliArgError(`no etcd endpoint in ${JSON.stringify(v)}`);
  return list;
}

interface CommonOpts {
  metricsPort: number;
  metrics: boolean;
  cacheSize: number;
  logLevel: LevelWithSilent;
}

function common(cmd: Command, defaultMetricsPort: number): Command {
  return s3Options(cmd, parseSize)
    .option('--metrics-port <port>', 'Prometheus /metrics port (0 picks a free one)', parsePort, Number(process.env.LOAM_METRICS_PORT ?? defaultMetricsPort))
    .option('--no-metrics', 'do not serve /metrics')
    .option('--cache-size <size>', 'object cache memory bound (per node): bytes, a Kubernetes quantity (64Mi, 1Gi, 500M) or 64MiB [LOAM_CACHE_SIZE]', parseSize, sizeFromEnv('LOAM_CACHE_SIZE', '64MiB'))
    .addOption(new Option('--log-level <level>', 'log level').choices(LOG_LEVELS).default(process.env.LOAM_LOG_LEVEL ?? 'info'));
}

/**
 * How a stop on SIGTERM is bounded: calls in flight get STOP_GRACE_MS to finish (new ones are
 * refused from the signal on), the S3 tier FLUSH_ON_STOP_MS (server.ts) to upload what was
 * acknowledged; whatever still hangs after STOP_BOUND_MS (etcd or a disk not answering) ends
 * the process anyway, failed. Below a Pod's terminationGracePeriodSeconds (the operator sets
 * 60 s; the default 30 s is enough too), so the kubelet's SIGKILL never cuts a flush short.
 */
const STOP_GRACE_MS = 5_000;
const STOP_BOUND_MS = 25_000;
const STOP_HELP = `
On SIGTERM (or SIGINT) the node stops taking new calls at once (health NOT_SERVING, its gRPC
ports refuse new calls), lets calls in flight finish for up to ${STOP_GRACE_MS / 1000} s, leaves the
cluster, uploads what it acknowledged to S3 for up to 10 s (with an S3 tier), closes its log and
exits 0. It exits within ${STOP_BOUND_MS / 1000} s whatever happens (exit 1 if something hung): set
terminationGracePeriodSeconds to ${STOP_BOUND_MS / 1000 + 5} or more (the operator sets 60). A second
signal exits at once.`;

/** Runs until SIGINT/SIGTERM, then stops every node cleanly (a second signal exits at once). */
function serveUntilSignal(log: Logger, nodes: LoamNode[], cleanup: () => Promise<void> = async () => undefined): void {
  let signals = 0;
  const shutdown = (sig: string) => {
    if (++signals > 1) process.exit(130);
    log.info({ signal: sig, boundMs: STOP_BOUND_MS }, 'stopping');
    setTimeout(() => {
      log.error({ ms: STOP_BOUND_MS }, 'stop did not finish in time: exiting anyway');
      process.exit(1);
    }, STOP_BOUND_MS).unref();
    Promise.all(nodes.map((n) => n.stop(STOP_GRACE_MS))).then(cleanup).then(
      () => process.exit(0),
      (e) => {
        log.error({ err: e }, 'stop failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGTERM', () => shutdown('SIGTERM'));
}

/**
 * Tuning for tests and benchmarks, from the environment only (not flags: the defaults are what
 * a deployment wants): LOAM_SEGMENT_SIZE (log segment size, e.g. 4MiB) and
 * LOAM_COMPACTION_INTERVAL (e.g. 500ms; 0 turns the timer off).
 */
function tuning(): { maxSegmentBytes?: number; compactionIntervalMs?: number } {
  const env = process.env;
  return {
    ...(env.LOAM_SEGMENT_SIZE ? { maxSegmentBytes: parseSize(env.LOAM_SEGMENT_SIZE) } : {}),
    ...(env.LOAM_COMPACTION_INTERVAL ? { compactionIntervalMs: env.LOAM_COMPACTION_INTERVAL === '0' ? 0 : parseDuration(env.LOAM_COMPACTION_INTERVAL) } : {}),
  };
}

function fail(log: Logger, e: unknown): never {
  log.fatal({ err: e }, 'failed to start');
  process.stderr.write(`loam: ${(e as Error).message}\n`);
  process.exit(1);
}

common(
  etcdAuthOptions(program
    .command('dev')
    .description('run a local DataStore in one process: embedded metadata (or --etcd), data on local disk')
    .option('--data <dir>', 'data directory', process.env.LOAM_DATA ?? './.loam-data')
    .option('--host <host>', 'address to listen on', process.env.LOAM_HOST ?? '127.0.0.1')
    .option('--port <port>', 'gRPC port of the first node (0 picks free ones); node i listens on port+i-1', parsePort, Number(process.env.LOAM_PORT ?? 7480))
    .option('--nodes <n>', 'number of nodes (a cluster when more than 1)', (v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1 || n > 16) throw new CliArgError(`--nodes takes 1 to 16, got ${v}`);
      return n;
    }, 1)
    .option('--etcd <urls>', 'keep cluster metadata in this etcd (comma-separated endpoints) instead of embedded', process.env.LOAM_ETCD)
    .option('--prefix <prefix>', 'etcd key prefix of this DataStore', process.env.LOAM_PREFIX ?? '/loam/dev')
    .option('--cluster-secret-file <path>', 'secret the nodes prove membership with (default: a random one for this process) [LOAM_CLUSTER_SECRET_FILE]', process.env.LOAM_CLUSTER_SECRET_FILE)),
  7481,
).action(async (opts: CommonOpts & S3CliOpts & EtcdCliOpts & { data: string; host: string; port: number; nodes: number; etcd?: string; prefix: string; clusterSecretFile?: string }) => {
  const log = createLogger(opts.logLevel);
  const clustered = opts.nodes > 1 || opts.etcd !== undefined;
  let meta: MetaStore | undefined;
  let secret: ClusterSecret | undefined;
  const nodes: LoamNode[] = [];
  try {
    if (opts.nodeName && opts.nodes > 1) throw new Error('--node-name names one node: it does not go with --nodes');
    const s3 = s3FromOpts(opts);
    if (clustered) {
      // Every node of a dev cluster runs in this process, so a random secret suffices; a file is
      // only needed for nodes elsewhere to join the same prefix.
      secret = opts.clusterSecretFile ? ClusterSecret.fromFile(opts.clusterSecretFile) : ClusterSecret.random();
      const credentials = etcdCredentials(opts);
      if (credentials && !opts.etcd) throw new Error('--etcd-username needs --etcd');
      if (opts.etcd) {
        const etcd = (meta = new EtcdMetaStore(parseEndpoints(opts.etcd), opts.prefix, { credentials }));
        await etcd.checkAccess(); // wrong credentials: fail now, not retry forever
      } else {
        meta = new EmbeddedMetaStore(path.join(opts.data, 'meta.jsonl'));
      }
    }
    for (let i = 0; i < opts.nodes; i++) {
      nodes.push(await LoamNode.start({
        dataDir: clustered ? path.join(opts.data, `node-${i + 1}`) : opts.data,
        host: opts.host,
        port: opts.port === 0 ? 0 : opts.port + i,
        // Free ports: port+1 is the next node's client port, and the member record says where.
        peerPort: 0,
        clusterSecret: secret,
        metricsPort: !opts.metrics ? -1 : opts.metricsPort === 0 ? 0 : devMetricsPort(opts.port, opts.nodes, opts.metricsPort) + i,
        cacheBytes: opts.cacheSize,
        nodeName: opts.nodeName,
        s3,
        ...tuning(),
        logger: opts.nodes > 1 ? log.child({ node: i + 1 }) : log,
        meta,
        onFatal: () => void Promise.all(nodes.map((n) => n.stop())).then(() => meta?.close()).catch(() => undefined).finally(() => process.exit(1)),
      }));
    }
  } catch (e) {
    for (const n of nodes) await n.stop().catch(() => undefined);
    await meta?.close().catch(() => undefined);
    fail(log, e);
  }
  const endpoints = nodes.map((n) => n.endpoint);
  log.info({
    endpoint: endpoints.join(','), endpoints, metricsPort: nodes[0].metricsPort, metricsPorts: nodes.map((n) => n.metricsPort),
    ...(clustered ? { peerAddresses: nodes.map((n) => n.peerAddress) } : {}),
    dataDir: opts.data, nodeId: nodes[0].identity.id, meta: meta?.kind ?? 'node-log',
  }, 'ready');
  process.stderr.write(`Loam is running at ${endpoints.join(',')}  (data in ${opts.data}; Ctrl-C stops it)\n`);
  serveUntilSignal(log, nodes, async () => meta?.close());
});

common(
  etcdAuthOptions(program
    .command('node')
    .description('run one node of a cluster whose metadata lives in etcd (what the operator\'s pods run)')
    .option('--etcd <urls>', 'etcd endpoints, comma-separated [LOAM_ETCD]', process.env.LOAM_ETCD)
    .option('--prefix <prefix>', 'etcd key prefix of this DataStore, e.g. /loam/NAME [LOAM_PREFIX]', process.env.LOAM_PREFIX)
    .option('--listen <host:port>', 'client gRPC address to listen on (the client API and health) [LOAM_LISTEN]', process.env.LOAM_LISTEN ?? '0.0.0.0:7480')
    .option('--advertise <host:port>', 'client address, as clients and redirects name it [LOAM_ADVERTISE] (default: the listen address)', process.env.LOAM_ADVERTISE)
    .option('--peer-listen <host:port>', 'address the node-to-node service listens on [LOAM_PEER_LISTEN] (default: the listen host, its port + 1; port 0 when that is 0)', process.env.LOAM_PEER_LISTEN)
    .option('--peer-advertise <host:port>', 'address other nodes use for it [LOAM_PEER_ADVERTISE] (default: the peer port on the peer-listen host, or on the advertise host if that is 0.0.0.0)', process.env.LOAM_PEER_ADVERTISE)
    .option('--cluster-secret-file <path>', 'file holding the secret every node of this cluster shares, at least 16 bytes [LOAM_CLUSTER_SECRET_FILE] (required)', process.env.LOAM_CLUSTER_SECRET_FILE)
    .option('--data <dir>', 'data directory [LOAM_DATA]', process.env.LOAM_DATA ?? '/var/lib/loam')
    .addHelpText('after', STOP_HELP)),
  9464,
).action(async (opts: CommonOpts & S3CliOpts & EtcdCliOpts & { etcd?: string; prefix?: string; listen: string; advertise?: string; peerListen?: string; peerAdvertise?: string; clusterSecretFile?: string; data: string }) => {
  const log = createLogger(opts.logLevel);
  if (!opts.etcd) fail(log, new Error('--etcd (or LOAM_ETCD) is required: a cluster node keeps its metadata in etcd'));
  if (!opts.prefix || !opts.prefix.startsWith('/')) fail(log, new Error('--prefix (or LOAM_PREFIX) is required, like /loam/NAME'));
  // No secret, no node: without one the peer port would let anyone who reaches it install
  // objects, switch masters and decide transactions. There is no "run open" mode.
  if (!opts.clusterSecretFile) {
    fail(log, new Error('--cluster-secret-file (or LOAM_CLUSTER_SECRET_FILE) is required: the nodes of a cluster prove to each other with this shared secret that they belong to it. Make one (openssl rand -base64 32 > cluster-secret), give every node the same file, and keep it from clients'));
  }
  let node: LoamNode;
  let meta: MetaStore | undefined;
  try {
    const secret = ClusterSecret.fromFile(opts.clusterSecretFile!);
    const listen = parseHostPort(opts.listen);
    const advertise = opts.advertise ? parseHostPort(opts.advertise) : undefined;
    const peerListen = opts.peerListen ? parseHostPort(opts.peerListen) : { host: listen.host, port: listen.port === 0 ? 0 : listen.port + 1 };
    if (peerListen.port > 65535) throw new Error(`--listen port ${listen.port} leaves no default peer port: give --peer-listen`);
    if (peerListen.port !== 0 && peerListen.port === listen.port && peerListen.host === listen.host) throw new Error(`--peer-listen ${opts.peerListen} is the client port: the node-to-node service needs a port of its own`);
    const peerAdvertise = opts.peerAdvertise ? parseHostPort(opts.peerAdvertise) : undefined;
    const etcd = (meta = new EtcdMetaStore(parseEndpoints(opts.etcd!), opts.prefix!, { credentials: etcdCredentials(opts) }));
    // Refused credentials end the start here with the reason; an etcd that does not answer yet
    // does not (the node starts and joins once it does, as before).
    if (!(await etcd.checkAccess())) log.warn({ etcd: opts.etcd }, 'etcd does not answer yet; starting anyway and joining once it does');
    node = await LoamNode.start({
      dataDir: opts.data,
      host: listen.host,
      port: listen.port,
      advertise: advertise ? `${advertise.host}:${advertise.port}` : undefined,
      peerHost: peerListen.host,
      peerPort: peerListen.port,
      peerAdvertise: peerAdvertise ? (peerAdvertise.host.includes(':') ? `[${peerAdvertise.host}]:${peerAdvertise.port}` : `${peerAdvertise.host}:${peerAdvertise.port}`) : undefined,
      clusterSecret: secret,
      metricsPort: opts.metrics ? opts.metricsPort : -1,
      cacheBytes: opts.cacheSize,
      nodeName: opts.nodeName,
      s3: s3FromOpts(opts),
      ...tuning(),
      logger: log,
      meta,
      // The node has stopped itself (its number belongs to another node): exit, failed.
      onFatal: () => void meta?.close().catch(() => undefined).finally(() => process.exit(1)),
    });
  } catch (e) {
    await meta?.close().catch(() => undefined);
    fail(log, e);
  }
  log.info({
    endpoint: node.endpoint, peerAddress: node.peerAddress, peerPort: node.peerPort, metricsPort: node.metricsPort, dataDir: opts.data, nodeId: node.identity.id, number: node.identity.number,
    registered: node.membership?.registered ?? false,
  }, 'ready');
  serveUntilSignal(log, [node], async () => meta?.close());
});

program
  .command('drain')
  .description('move everything a node masters to the other nodes and hand its home directory over')
  .argument('<backend>', 'the node to drain: its number, id or host:port')
  .option('--cancel', 'instead: stop a drain of the node at a safe point (or undo a finished one): it becomes a ready member again', false)
  .option('--url <url>', 'any node of the DataStore, loam://host:port[/dataset] [LOAM_URL]', process.env.LOAM_URL ?? 'loam://127.0.0.1:7480/default')
  .option('--timeout <seconds>', 'give up after this long', (v) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new CliArgError(`not a number of seconds: ${v}`);
    return n;
  }, 600)
  .action(async (backend: string, opts: { url: string; timeout: number; cancel: boolean }) => {
    const { connect } = await import('@loam/sdk');
    const client = await connect(opts.url, { connectTimeoutMs: 10_000 });
    try {
      const which = /^\d+$/.test(backend) ? Number(backend) : backend;
      if (opts.cancel) {
        const res = await client.cancelDrain(which, { timeoutMs: opts.timeout * 1000 });
        process.stdout.write(res.stopped || res.undrained
          ? `node ${backend} is a ready member again${res.stopped ? ' (its running drain was stopped; what it moved stays where it went)' : ' (its drain was undone)'}\n`
          : `node ${backend} was not being drained: nothing to cancel\n`);
        return;
      }
      const t0 = Date.now();
      const res = await client.drain(which, { timeoutMs: opts.timeout * 1000 });
      process.stdout.write(`drained node ${backend}: moved ${res.moved} objects in ${((Date.now() - t0) / 1000).toFixed(1)} s; node ${res.homeSuccessor} serves its home directory now\n`);
    } finally {
      await client.close();
    }
  });

program
  .command('flush')
  .description('wait until everything the DataStore acknowledged so far is in S3, on every node')
  .option('--url <url>', 'any node of the DataStore, loam://host:port[/dataset] [LOAM_URL]', process.env.LOAM_URL ?? 'loam://127.0.0.1:7480/default')
  .option('--timeout <seconds>', 'give up after this long', (v) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new CliArgError(`not a number of seconds: ${v}`);
    return n;
  }, 120)
  .action(async (opts: { url: string; timeout: number }) => {
    const { connect } = await import('@loam/sdk');
    const client = await connect(opts.url, { connectTimeoutMs: 10_000 });
    try {
      const t0 = Date.now();
      const res = await client.flush({ timeoutMs: opts.timeout * 1000 });
      const secs = ((Date.now() - t0) / 1000).toFixed(1);
      process.stdout.write(res.s3 === 0
        ? `no node of this DataStore has S3 configured: everything acknowledged is on the nodes' disks (${res.nodes} nodes)\n`
        : `flushed: everything acknowledged is in S3 (${res.s3} of ${res.nodes} nodes use S3) in ${secs} s\n`);
    } finally {
      await client.close();
    }
  });

statusCommand(program);
operatorCommand(program);

program
  .command('repair')
  .description('find the intact batches of a damaged log (a node refused to start on it); --apply keeps them')
  .requiredOption('--data <dir>', 'the node\'s data directory [LOAM_DATA]', process.env.LOAM_DATA)
  .option('--apply', 'replace each damaged segment by its intact batches (the original is copied to log/damaged/ first)', false)
  .action(async (opts: { data: string; apply: boolean }) => {
    const { planRepair, applyRepair, formatRepair } = await import('./storage/repair.js');
    const { lockDataDir } = await import('./data-dir.js');
    const dir = path.resolve(opts.data);
    const unlock = lockDataDir(dir); // no node may run on it meanwhile
    try {
      const report = opts.apply ? await applyRepair(dir) : (await planRepair(dir)).report;
      process.stdout.write(formatRepair(report, opts.apply) + '\n');
    } finally {
      unlock();
    }
  });

program.parseAsync(process.argv).catch((e: Error) => {
  process.stderr.write(`loam: ${e.message}\n`);
  process.exit(1);
});
