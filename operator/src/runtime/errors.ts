/** Kubernetes API errors as the runtime sees them: client-node 1.x throws ApiException with `code`, its Watch errors carry `statusCode`. */
import { ApiException } from '@kubernetes/client-node';

/** The HTTP status of an API error, or undefined for anything else (a network error, a bug). */
export function apiErrorCode(e: unknown): number | undefined {
  if (e instanceof ApiException) return e.code;
  const o = e as { code?: unknown; statusCode?: unknown } | null;
  if (o && typeof o.statusCode === 'number') return o.statusCode;
  if (o && typeof o.code === 'number') return o.code;
  return undefined;
}

/** A log-friendly form of an error: its message, and the API status and reason when there is one. */
export function describeError(e: unknown): { message: string; code?: number; reason?: string } {
  const code = apiErrorCode(e);
  let reason: string | undefined;
  if (e instanceof ApiException) {
    const body = (typeof e.body === 'string' ? safeJson(e.body) : e.body) as { reason?: string; message?: string } | undefined;
    reason = body?.reason;
    if (body?.message) return { message: body.message, code, reason };
  }
  const message = e instanceof Error ? e.message : String(e);
  return { message, ...(code !== undefined ? { code } : {}), ...(reason ? { reason } : {}) };
}

function safeJson(s: string): unknown {
  try {
    return JSON.parse(s);
  } catch {
    return undefined;
  }
}
