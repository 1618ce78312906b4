#!/usr/bin/env node
import { Command, InvalidArgumentError as CliArgError, Option } from 'commander';
import { LoamNode } from './server.js';
import { createLogger, LOG_LEVELS } from './logger.js';
import { SERVER_VERSION } from './store-service.js';
import type { LevelWithSilent } from 'pino';

function parsePort(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new CliArgError(`not a port: ${v}`);
  return n;
}

function parseSize(v: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(b|kib|kb|mib|mb|gib|gb)?$/i.exec(v.trim());
  if (!m) throw new CliArgError(`not a size: ${v} (examples: 65536, 64MiB, 1GiB)`);
  const unit = (m[2] ?? 'b').toLowerCase();
  const mult = unit.startsWith('k') ? 1024 : unit.startsWith('m') ? 1024 ** 2 : unit.startsWith('g') ? 1024 ** 3 : 1;
  return Math.floor(Number(m[1]) * mult);
}

const program = new Command('loam')
  .description('Loam: a persistent object store for TypeScript')
  .version(SERVER_VERSION, '-v, --version')
  .showHelpAfterError();

program
  .command('dev')
  .description('run a local DataStore in one process: embedded metadata, data on local disk')
  .option('--data <dir>', 'data directory', process.env.LOAM_DATA ?? './.loam-data')
  .option('--host <host>', 'address to listen on', process.env.LOAM_HOST ?? '127.0.0.1')
  .option('--port <port>', 'gRPC port (0 picks a free one)', parsePort, Number(process.env.LOAM_PORT ?? 7480))
  .option('--metrics-port <port>', 'Prometheus /metrics port (0 picks a free one)', parsePort, Number(process.env.LOAM_METRICS_PORT ?? 7481))
  .option('--no-metrics', 'do not serve /metrics')
  .option('--cache-size <size>', 'object cache memory bound', parseSize, parseSize(process.env.LOAM_CACHE_SIZE ?? '64MiB'))
  .addOption(new Option('--log-level <level>', 'log level').choices(LOG_LEVELS).default(process.env.LOAM_LOG_LEVEL ?? 'info'))
  .action(async (opts: { data: string; host: string; port: number; metricsPort: number; metrics: boolean; cacheSize: number; logLevel: LevelWithSilent }) => {
    const log = createLogger(opts.logLevel);
    let node: LoamNode;
    try {
      node = await LoamNode.start({
        dataDir: opts.data,
        host: opts.host,
        port: opts.port,
        metricsPort: opts.metrics ? opts.metricsPort : -1,
        cacheBytes: opts.cacheSize,
        logger: log,
      });
    } catch (e) {
      log.fatal({ err: e }, 'failed to start');
      process.stderr.write(`loam: ${(e as Error).message}\n`);
      process.exit(1);
    }
    log.info({ endpoint: node.endpoint, metricsPort: node.metricsPort, dataDir: opts.data, nodeId: node.identity.id }, 'ready');
    process.stderr.write(`Loam is running at ${node.endpoint}  (data in ${opts.data}; Ctrl-C stops it)\n`);
    let signals = 0;
    const shutdown = (sig: string) => {
      if (++signals > 1) process.exit(130); // a second Ctrl-C does not wait
      log.info({ signal: sig }, 'stopping');
      node.stop().then(
        () => process.exit(0),
        (e) => {
          log.error({ err: e }, 'stop failed');
          process.exit(1);
        },
      );
    };
    process.on('SIGINT', () => shutdown('SIGINT'));
    process.on('SIGTERM', () => shutdown('SIGTERM'));
  });

program.parseAsync(process.argv).catch((e: Error) => {
  process.stderr.write(`loam: ${e.message}\n`);
  process.exit(1);
});
