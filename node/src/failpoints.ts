/**
 * Test-only failure points, like etcd's gofail. `LOAM_FAILPOINTS=name[,name]` makes the process
 * kill itself (SIGKILL: no cleanup, no flush) when it reaches a named point, so tests can crash a
 * node at an exact step of a protocol; `name:pause=MS` makes an async point wait MS ms instead,
 * to hold a race window open. Unset in production: each check is one Map lookup.
 */
const armed = new Map<string, { pauseMs?: number }>();
for (const item of (process.env.LOAM_FAILPOINTS ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
  const [name, action] = item.split(':');
  const pause = /^pause=(\d+)$/.exec(action ?? '');
  armed.set(name, pause ? { pauseMs: Number(pause[1]) } : {});
}

export const FAILPOINTS = [
  'coordinator-after-prepare',
  'coordinator-after-decision',
  'participant-after-prepare',
  'participant-before-commit',
  'replicate-after-copy',
  'move-after-install',
  'move-before-activate',
  'commit-after-alias-reserve',
] as const;
export type Failpoint = (typeof FAILPOINTS)[number];

export function failpoint(name: Failpoint): void {
  const fp = armed.size === 0 ? undefined : armed.get(name);
  if (!fp) return;
  process.stderr.write(`failpoint ${name}: killing the process\n`);
  process.kill(process.pid, 'SIGKILL');
}

/** An async point: kills like failpoint(), or with `:pause=MS` waits that long. */
export async function failpointAsync(name: Failpoint): Promise<void> {
  const fp = armed.size === 0 ? undefined : armed.get(name);
  if (!fp) return;
  if (fp.pauseMs === undefined) return failpoint(name);
  await new Promise((r) => setTimeout(r, fp.pauseMs));
}
