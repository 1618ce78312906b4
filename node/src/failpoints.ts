/**
 * Test-only crash points, like etcd's gofail: `LOAM_FAILPOINTS=name[,name]` makes the process
 * kill itself (SIGKILL: no cleanup, no flush) when it reaches a named point, so tests can crash a
 * node at an exact step of a protocol. Unset in production: each check is one Set lookup.
 */
const armed = new Set((process.env.LOAM_FAILPOINTS ?? '').split(',').map((s) => s.trim()).filter(Boolean));

export const FAILPOINTS = [
  'coordinator-after-prepare',
  'coordinator-after-decision',
  'participant-after-prepare',
  'participant-before-commit',
] as const;
export type Failpoint = (typeof FAILPOINTS)[number];

export function failpoint(name: Failpoint): void {
  if (armed.size === 0 || !armed.has(name)) return;
  process.stderr.write(`failpoint ${name}: killing the process\n`);
  process.kill(process.pid, 'SIGKILL');
}
