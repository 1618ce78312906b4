/**
 * The Kubernetes API calls the reconcile makes, as one small seam (so a fault injector,
 * failing-kube-api.ts, can sit between the reconcile and the API server).
 *
 * Contract:
 * - Objects are plain JSON as the API server sends them (no client-side model classes: dates stay
 *   RFC 3339 strings, unknown fields survive).
 * - `get` resolves undefined on 404; `delete` resolves false on 404 (already gone). Every other
 *   non-2xx answer rejects with a KubeApiError carrying the HTTP code and the Status reason; a call
 *   with no answer within its deadline rejects with a KubeApiError of code 0, reason `Timeout`
 *   (the call may or may not have taken effect: callers must be idempotent).
 * - `apply` is server-side apply with field manager FIELD_MANAGER and force (the operator owns the
 *   fields it sets; a conflicting manager loses them), to the object or its status subresource.
 * - `create` rejects with code 409 (reason AlreadyExists) when the object exists.
 * - No call retries: the work queue's backoff does (a retry inside would hide the level-triggered
 *   pass's own idempotence).
 *
 * Implemented over @kubernetes/client-node's KubeConfig (server, TLS and credentials of the
 * current context, exec and token plugins included) and plain HTTPS: the typed clients of 1.x
 * deserialize into model classes and reach custom resources' subresources only through the
 * generic CustomObjectsApi, while the reconcile wants one uniform path for every kind.
 */
import http from 'node:http';
import https from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import { FIELD_MANAGER } from './contract.js';

export interface ObjectRef {
  apiVersion: string;
  kind: string;
  namespace?: string;
  name: string;
}

/** A Kubernetes object as JSON. */
export interface KubeObj {
  apiVersion: string;
  kind: string;
  metadata: { name?: string; namespace?: string; uid?: string; resourceVersion?: string; generation?: number; labels?: Record<string, string>; annotations?: Record<string, string>; finalizers?: string[] };
}

export type JsonPatchOp = { op: 'add' | 'remove' | 'replace' | 'test'; path: string; value?: unknown };

export type ApiVerb = 'get' | 'apply' | 'create' | 'patch' | 'delete' | 'list';

export interface KubeApi {
  get<T extends KubeObj = KubeObj>(ref: ObjectRef): Promise<T | undefined>;
  apply<T extends KubeObj = KubeObj>(obj: KubeObj, opts?: { subresource?: 'status' }): Promise<T>;
  create<T extends KubeObj = KubeObj>(obj: KubeObj): Promise<T>;
  /** A JSON patch (RFC 6902) or a merge patch (RFC 7386). */
  patch<T extends KubeObj = KubeObj>(ref: ObjectRef, patch: JsonPatchOp[] | Record<string, unknown>, opts?: { subresource?: 'status' }): Promise<T>;
  delete(ref: ObjectRef, opts?: { propagationPolicy?: 'Background' | 'Foreground' | 'Orphan'; uid?: string }): Promise<boolean>;
  list<T extends KubeObj = KubeObj>(apiVersion: string, kind: string, namespace: string, labelSelector?: string): Promise<T[]>;
}

export class KubeApiError extends Error {
  constructor(
    readonly verb: ApiVerb,
    readonly path: string,
    /** HTTP status; 0 when there was no answer. */
    readonly code: number,
    /** The Status reason: NotFound, Conflict, AlreadyExists, Invalid, Timeout, InternalError... */
    readonly reason: string,
    message: string,
  ) {
    super(`${verb} ${path}: ${code ? `HTTP ${code} ${reason}` : reason}: ${message}`);
    this.name = 'KubeApiError';
  }
}

/** The plural resource names of the kinds the operator touches. */
const RESOURCES: Record<string, string> = {
  ConfigMap: 'configmaps',
  Secret: 'secrets',
  Service: 'services',
  ServiceAccount: 'serviceaccounts',
  Pod: 'pods',
  PersistentVolumeClaim: 'persistentvolumeclaims',
  Event: 'events',
  StatefulSet: 'statefulsets',
  PodDisruptionBudget: 'poddisruptionbudgets',
  DataStore: 'datastores',
};

export function resourcePath(apiVersion: string, kind: string, namespace?: string, name?: string, subresource?: string): string {
  const plural = RESOURCES[kind];
  if (!plural) throw new Error(`kube-api: no resource path known for kind ${kind}`);
  const base = apiVersion.includes('/') ? `/apis/${apiVersion}` : `/api/${apiVersion}`;
  return `${base}${namespace ? `/namespaces/${encodeURIComponent(namespace)}` : ''}/${plural}${name ? `/${encodeURIComponent(name)}` : ''}${subresource ? `/${subresource}` : ''}`;
}

const refOf = (o: KubeObj): ObjectRef => ({ apiVersion: o.apiVersion, kind: o.kind, namespace: o.metadata.namespace, name: o.metadata.name! });

export class HttpKubeApi implements KubeApi {
  private readonly server: string;

  constructor(
    private readonly kc: KubeConfig,
    private readonly timeoutMs = 15_000,
  ) {
    const cluster = kc.getCurrentCluster();
    if (!cluster) throw new Error('kube-api: the kubeconfig has no current cluster');
    this.server = cluster.server.replace(/\/$/, '');
  }

  async get<T extends KubeObj>(ref: ObjectRef): Promise<T | undefined> {
    const r = await this.call<T>('get', 'GET', resourcePath(ref.apiVersion, ref.kind, ref.namespace, ref.name), undefined, undefined, [404]);
    return r.code === 404 ? undefined : r.body;
  }

  async apply<T extends KubeObj>(obj: KubeObj, opts: { subresource?: 'status' } = {}): Promise<T> {
    const p = `${resourcePath(obj.apiVersion, obj.kind, obj.metadata.namespace, obj.metadata.name, opts.subresource)}?fieldManager=${FIELD_MANAGER}&force=true`;
    // JSON is YAML: the apply content type takes it as is.
    return (await this.call<T>('apply', 'PATCH', p, JSON.stringify(obj), 'application/apply-patch+yaml')).body;
  }

  async create<T extends KubeObj>(obj: KubeObj): Promise<T> {
    const p = `${resourcePath(obj.apiVersion, obj.kind, obj.metadata.namespace)}?fieldManager=${FIELD_MANAGER}`;
    return (await this.call<T>('create', 'POST', p, JSON.stringify(obj), 'application/json')).body;
  }

  async patch<T extends KubeObj>(ref: ObjectRef, patch: JsonPatchOp[] | Record<string, unknown>, opts: { subresource?: 'status' } = {}): Promise<T> {
    const p = `${resourcePath(ref.apiVersion, ref.kind, ref.namespace, ref.name, opts.subresource)}?fieldManager=${FIELD_MANAGER}`;
    const type = Array.isArray(patch) ? 'application/json-patch+json' : 'application/merge-patch+json';
    return (await this.call<T>('patch', 'PATCH', p, JSON.stringify(patch), type)).body;
  }

  async delete(ref: ObjectRef, opts: { propagationPolicy?: 'Background' | 'Foreground' | 'Orphan'; uid?: string } = {}): Promise<boolean> {
    const body = { kind: 'DeleteOptions', apiVersion: 'v1', propagationPolicy: opts.propagationPolicy ?? 'Background', ...(opts.uid ? { preconditions: { uid: opts.uid } } : {}) };
    const r = await this.call('delete', 'DELETE', resourcePath(ref.apiVersion, ref.kind, ref.namespace, ref.name), JSON.stringify(body), 'application/json', [404]);
    return r.code !== 404;
  }

  async list<T extends KubeObj>(apiVersion: string, kind: string, namespace: string, labelSelector?: string): Promise<T[]> {
    const items: T[] = [];
    let cont: string | undefined;
    do {
      const q = new URLSearchParams({ limit: '500', ...(labelSelector ? { labelSelector } : {}), ...(cont ? { continue: cont } : {}) });
      const r = await this.call<{ items: T[]; metadata?: { continue?: string } } & KubeObj>('list', 'GET', `${resourcePath(apiVersion, kind, namespace)}?${q}`);
      // A list's items have no apiVersion/kind of their own.
      for (const it of r.body.items ?? []) items.push({ ...it, apiVersion, kind });
      cont = r.body.metadata?.continue || undefined;
    } while (cont);
    return items;
  }

  private async call<T>(verb: ApiVerb, method: string, p: string, body?: string, contentType?: string, okCodes: number[] = []): Promise<{ code: number; body: T }> {
    const url = new URL(this.server + p);
    const opts: https.RequestOptions = { method, headers: { accept: 'application/json', ...(contentType ? { 'content-type': contentType } : {}) } };
    await this.kc.applyToHTTPSOptions(opts);
    const mod = url.protocol === 'http:' ? http : https;
    return new Promise((resolve, reject) => {
      const req = mod.request(url, opts, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (d: Buffer) => chunks.push(d));
        res.on('error', (e) => reject(new KubeApiError(verb, p, 0, 'ConnectionError', e.message)));
        res.on('end', () => {
          const code = res.statusCode ?? 0;
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown;
          try {
            parsed = text ? JSON.parse(text) : undefined;
          } catch {
            parsed = text;
          }
          if ((code >= 200 && code < 300) || okCodes.includes(code)) return resolve({ code, body: parsed as T });
          const st = (parsed ?? {}) as { reason?: string; message?: string };
          reject(new KubeApiError(verb, p, code, st.reason ?? 'Unknown', st.message ?? text.slice(0, 500)));
        });
      });
      req.setTimeout(this.timeoutMs, () => req.destroy(new KubeApiError(verb, p, 0, 'Timeout', `no answer within ${this.timeoutMs} ms`)));
      req.on('error', (e) => reject(e instanceof KubeApiError ? e : new KubeApiError(verb, p, 0, 'ConnectionError', e.message)));
      req.end(body);
    });
  }
}

export { refOf };
