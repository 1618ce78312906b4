import { META_KEYS, type MetaStore } from '../meta/meta-store.js';
import type { Logger } from '../logger.js';

/** How often a node checks that no later start of its identity has taken over. */
const CHECK_EVERY_MS = 1_000;

/**
 * Generations fence a node's earlier lives. Each start of a node identity takes the next
 * generation from the metadata store by compare-and-set (`generations/ID`), so two processes
 * with one identity (a second start on a copy of the volume, a zombie pod after a failover)
 * never hold the same one. The S3 tier writes its generation into every key, and a node whose
 * generation was superseded stops: no more uploads, deletes or acknowledged writes.
 */
export class Generation {
  private timer?: NodeJS.Timeout;
  private fenced = false;

  private constructor(private readonly meta: MetaStore, readonly id: string, readonly value: number, private readonly log: Logger) {}

  /** Takes the next generation of `id`, at least `atLeast` (what S3 already shows of earlier lives). */
  static async acquire(meta: MetaStore, id: string, log: Logger, atLeast = 1): Promise<Generation> {
    const key = META_KEYS.generation(id);
    for (let attempt = 0; attempt < 100; attempt++) {
      const cur = await meta.get(key);
      const prev = cur === undefined ? 0 : Number(cur);
      if (!Number.isSafeInteger(prev) || prev < 0) throw new Error(`generation of node ${id} in the metadata store is malformed: ${cur}`);
      const next = Math.max(prev + 1, atLeast);
      if (await meta.compareAndSet(key, cur, String(next))) {
        log.info({ generation: next }, 'took a new generation');
        return new Generation(meta, id, next, log);
      }
    }
    throw new Error(`could not take a generation for node ${id}: too many concurrent starts`);
  }

  /** True while no later start has taken over; false (for good) once one has. */
  async current(): Promise<boolean> {
    if (this.fenced) return false;
    const now = Number(await this.meta.get(META_KEYS.generation(this.id)));
    if (now > this.value) {
      this.fenced = true;
      this.log.error({ generation: this.value, current: now }, 'fenced: a later start of this node took over (generation superseded); this process stops uploading, deleting and acknowledging writes');
    }
    return !this.fenced;
  }

  get isFenced(): boolean {
    return this.fenced;
  }

  /** Checks every second (errors reaching the store are not a verdict); calls `onFenced` once. */
  watch(onFenced: () => void): void {
    this.timer = setInterval(() => {
      void this.current().then((ok) => {
        if (!ok) {
          this.stop();
          onFenced();
        }
      }, () => undefined);
    }, CHECK_EVERY_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
