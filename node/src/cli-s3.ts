import { Command, InvalidArgumentError as CliArgError } from 'commander';
import { sizeFromEnv } from './size.js';
import type { S3ObjectStoreOptions } from './storage/s3-object-store.js';

/** `5s`, `500ms`, `2m`, `1h`, or plain milliseconds. */
export function parseDuration(v: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/.exec(v.trim());
  if (!m) throw new CliArgError(`not a duration: ${v} (examples: 5s, 500ms, 2m)`);
  const mult = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? 'ms') as 'ms' | 's' | 'm' | 'h'];
  const ms = Math.round(Number(m[1]) * mult);
  if (ms < 100) throw new CliArgError(`${v} is too short: at least 100ms`);
  return ms;
}

export interface S3CliOpts {
  s3Endpoint?: string;
  s3Bucket?: string;
  s3Prefix: string;
  s3Region?: string;
  uploadInterval: number;
  diskCacheSize?: number;
  nodeName?: string;
}

const NODE_NAME = /^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$/;

/** The S3 tier's flags, for `loam node` and `loam dev` (LOAM_S3_* in the environment alike). */
export function s3Options(cmd: Command, parseSize: (v: string) => number): Command {
  const env = process.env;
  return cmd
    .option('--s3-endpoint <url>', 'S3 endpoint for a non-AWS store (path-style addressing) [LOAM_S3_ENDPOINT]', env.LOAM_S3_ENDPOINT)
    .option('--s3-bucket <bucket>', 'keep durable blocks in this S3 bucket (local disk becomes a cache); without it everything stays local [LOAM_S3_BUCKET]', env.LOAM_S3_BUCKET)
    .option('--s3-prefix <prefix>', 'key prefix of this DataStore in the bucket [LOAM_S3_PREFIX]', env.LOAM_S3_PREFIX ?? '')
    .option('--s3-region <region>', 'S3 region [LOAM_S3_REGION] (default: the AWS configuration\'s, else us-east-1)', env.LOAM_S3_REGION)
    .option('--upload-interval <duration>', 'the longest a durable write exists only on local disk before it is uploaded [LOAM_UPLOAD_INTERVAL]', parseDuration, parseDuration(env.LOAM_UPLOAD_INTERVAL ?? '5s'))
    .option('--disk-cache-size <size>', 'bound on local bytes of segments already in S3, least recently read evicted first: bytes, a Kubernetes quantity (10Gi) or 10GiB [LOAM_DISK_CACHE_SIZE] (default: no bound)', parseSize, sizeFromEnv('LOAM_DISK_CACHE_SIZE'))
    .option('--node-name <name>', 'a stable identity that does not live in the data directory (in Kubernetes: the pod name) [LOAM_NODE_NAME]', (v) => {
      if (!NODE_NAME.test(v)) throw new CliArgError(`not a node name: ${JSON.stringify(v)} (letters, digits, '.', '_', '-'; at most 253)`);
      return v;
    }, env.LOAM_NODE_NAME);
}

/** The node's S3 tier from the flags, or undefined when no bucket is given. */
export function s3FromOpts(opts: S3CliOpts): { config: S3ObjectStoreOptions; uploadIntervalMs: number; diskCacheBytes?: number } | undefined {
  if (!opts.s3Bucket) {
    if (opts.s3Endpoint) throw new CliArgError('--s3-endpoint needs --s3-bucket');
    return undefined;
  }
  const prefix = opts.s3Prefix && !opts.s3Prefix.endsWith('/') ? `${opts.s3Prefix}/` : opts.s3Prefix;
  return { config: { bucket: opts.s3Bucket, prefix, endpoint: opts.s3Endpoint, region: opts.s3Region }, uploadIntervalMs: opts.uploadInterval, diskCacheBytes: opts.diskCacheSize };
}
