/** How long a finished operation's outcome is remembered for a retry with the same id. */
const KEEP_MS = 10 * 60_000;
const MAX_KEPT = 10_000;

/**
 * Recent long operations (move, replicate, drain) by the id the client chose: a retry of a
 * running one waits for it, a retry of a finished one gets its outcome, so an operation sent
 * again after a timeout never runs twice at once (a drain re-sent while the first was stuck
 * used to run beside it). In memory: after a restart the operation is simply run again, which
 * is safe because each step is idempotent (objects already moved are skipped).
 */
export class Operations {
  private readonly ops = new Map<string, { result: Promise<unknown>; doneAt?: number }>();

  run<T>(kind: string, opId: string, fn: () => Promise<T>): Promise<T> {
    if (!opId) return fn();
    const key = `${kind}/${opId}`;
    this.expire();
    const known = this.ops.get(key);
    if (known) return known.result as Promise<T>;
    const entry: { result: Promise<T>; doneAt?: number } = { result: fn() };
    const finished = () => void (entry.doneAt = Date.now());
    entry.result.then(finished, finished);
    this.ops.set(key, entry);
    return entry.result;
  }

  /** Forgets every operation of `kind`: a later call with the same id runs it anew (a drain after a cancel). */
  forget(kind: string): void {
    for (const k of this.ops.keys()) if (k.startsWith(`${kind}/`)) this.ops.delete(k);
  }

  private expire(now = Date.now()): void {
    // Oldest first (insertion order); running operations are kept, and there are few of them.
    for (const [k, e] of this.ops) {
      if (e.doneAt === undefined) continue;
      if (now - e.doneAt < KEEP_MS && this.ops.size <= MAX_KEPT) break;
      this.ops.delete(k);
    }
  }
}
