import fs from 'node:fs';
import { Command, InvalidArgumentError as CliArgError } from 'commander';
import type { EtcdCredentials } from './meta/etcd-meta-store.js';

export interface EtcdCliOpts {
  etcdUsername?: string;
  etcdPasswordFile?: string;
}

/**
 * etcd auth flags for `loam node` and `loam dev --etcd`. The password is never a flag value (it
 * would show in `ps` and in the Pod spec): it comes from LOAM_ETCD_PASSWORD (the operator sets
 * it from the DataStore's etcd.credentialsSecret) or from a file.
 */
export function etcdAuthOptions(cmd: Command): Command {
  return cmd
    .option('--etcd-username <name>', 'etcd user, when etcd has auth enabled [LOAM_ETCD_USERNAME]; the password comes from LOAM_ETCD_PASSWORD or --etcd-password-file', process.env.LOAM_ETCD_USERNAME)
    .option('--etcd-password-file <path>', 'file holding the etcd user\'s password (a trailing newline is ignored); instead of LOAM_ETCD_PASSWORD');
}

/** The credentials the flags and environment give, or undefined for none; throws when half given. */
export function etcdCredentials(opts: EtcdCliOpts, env: NodeJS.ProcessEnv = process.env): EtcdCredentials | undefined {
  const fromEnv = env.LOAM_ETCD_PASSWORD;
  if (opts.etcdPasswordFile !== undefined && fromEnv !== undefined) {
    throw new CliArgError('the etcd password is given twice (LOAM_ETCD_PASSWORD and --etcd-password-file): give one');
  }
  let password = fromEnv;
  if (opts.etcdPasswordFile !== undefined) {
    try {
      password = fs.readFileSync(opts.etcdPasswordFile, 'utf8').replace(/\r?\n$/, '');
    } catch (e) {
      throw new CliArgError(`cannot read --etcd-password-file ${opts.etcdPasswordFile}: ${(e as Error).message}`);
    }
  }
  const username = opts.etcdUsername || undefined;
  if (!username && password === undefined) return undefined;
  if (!username) throw new CliArgError('an etcd password is given but no user: add --etcd-username (or LOAM_ETCD_USERNAME)');
  if (password === undefined || password === '') throw new CliArgError(`etcd user ${username} has no password: set LOAM_ETCD_PASSWORD or --etcd-password-file`);
  return { username, password };
}
