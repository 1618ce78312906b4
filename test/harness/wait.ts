/** Waiting on a condition with a deadline: how every harness and test synchronizes (never a fixed sleep). */
export interface WaitOptions {
  /** Poll interval (default 50 ms). */
  everyMs?: number;
  /** More to say on a timeout (e.g. the output tail of the processes waited on). */
  detail?: () => string;
  /** A reason to stop waiting at once (a process died), checked before each poll. */
  gaveUp?: () => string | undefined;
}

/** Polls `fn` until it returns a truthy value (which it resolves with), `gaveUp` says why not, or `timeoutMs` pass. */
export async function pollUntil<T>(fn: () => T | Promise<T>, what: string, timeoutMs: number, opts: WaitOptions = {}): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    const why = opts.gaveUp?.();
    if (why) throw new Error(`gave up waiting for ${what}: ${why}`);
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}${opts.detail ? `\n${opts.detail()}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, opts.everyMs ?? 50));
  }
}
