/**
 * A KubeApi that injects API errors on chosen calls, for tests (the operator's counterpart of a
 * failing object store): each rule matches calls by verb, kind and name and fails the next
 * `times` of them, either before the call reaches the API server (`when: 'before'`, the default)
 * or after it took effect with the answer lost (`when: 'after'`, what a timeout can leave behind).
 * Every call is recorded, so a test can also count the writes a reconcile made.
 */
import { KubeApiError, refOf, type ApiVerb, type JsonPatchOp, type KubeApi, type KubeObj, type ObjectRef } from './kube-api.js';

export type InjectedError = 500 | 409 | 'timeout';

export interface FailureRule {
  verb?: ApiVerb;
  kind?: string;
  name?: string;
  /** How many matching calls fail (default 1). */
  times?: number;
  error: InjectedError;
  when?: 'before' | 'after';
}

export interface RecordedCall {
  verb: ApiVerb;
  kind: string;
  name?: string;
  /** The error injected, if any. */
  injected?: InjectedError;
}

export const WRITE_VERBS: readonly ApiVerb[] = ['apply', 'create', 'patch', 'delete'];

export class FailingKubeApi implements KubeApi {
  readonly calls: RecordedCall[] = [];
  private rules: (FailureRule & { left: number })[] = [];

  constructor(private readonly inner: KubeApi) {}

  /** Adds a rule; rules are checked in the order added. */
  fail(rule: FailureRule): this {
    this.rules.push({ ...rule, left: rule.times ?? 1 });
    return this;
  }

  clearRules(): void {
    this.rules = [];
  }

  /** Rules that have not fired as often as asked. */
  pendingRules(): FailureRule[] {
    return this.rules.filter((r) => r.left > 0);
  }

  writes(): RecordedCall[] {
    return this.calls.filter((c) => WRITE_VERBS.includes(c.verb));
  }

  get<T extends KubeObj>(ref: ObjectRef): Promise<T | undefined> {
    return this.run('get', ref.kind, ref.name, () => this.inner.get<T>(ref));
  }
  apply<T extends KubeObj>(obj: KubeObj, opts?: { subresource?: 'status' }): Promise<T> {
    return this.run('apply', obj.kind, obj.metadata.name, () => this.inner.apply<T>(obj, opts));
  }
  create<T extends KubeObj>(obj: KubeObj): Promise<T> {
    return this.run('create', obj.kind, obj.metadata.name, () => this.inner.create<T>(obj));
  }
  patch<T extends KubeObj>(ref: ObjectRef, patch: JsonPatchOp[] | Record<string, unknown>, opts?: { subresource?: 'status' }): Promise<T> {
    return this.run('patch', ref.kind, ref.name, () => this.inner.patch<T>(ref, patch, opts));
  }
  delete(ref: ObjectRef, opts?: { propagationPolicy?: 'Background' | 'Foreground' | 'Orphan'; uid?: string }): Promise<boolean> {
    return this.run('delete', ref.kind, ref.name, () => this.inner.delete(ref, opts));
  }
  list<T extends KubeObj>(apiVersion: string, kind: string, namespace: string, labelSelector?: string): Promise<T[]> {
    return this.run('list', kind, undefined, () => this.inner.list<T>(apiVersion, kind, namespace, labelSelector));
  }

  private async run<T>(verb: ApiVerb, kind: string, name: string | undefined, fn: () => Promise<T>): Promise<T> {
    const rule = this.rules.find((r) => r.left > 0 && (!r.verb || r.verb === verb) && (!r.kind || r.kind === kind) && (!r.name || r.name === name));
    const call: RecordedCall = { verb, kind, ...(name ? { name } : {}) };
    this.calls.push(call);
    if (!rule) return fn();
    rule.left--;
    call.injected = rule.error;
    const path = `${verb} ${kind}${name ? `/${name}` : ''}`;
    const err = rule.error === 'timeout'
      ? new KubeApiError(verb, path, 0, 'Timeout', 'injected: no answer')
      : rule.error === 409
        ? new KubeApiError(verb, path, 409, 'Conflict', 'injected: the object has been modified')
        : new KubeApiError(verb, path, 500, 'InternalError', 'injected: internal error');
    if (rule.when === 'after') await fn();
    throw err;
  }
}

export { refOf };
