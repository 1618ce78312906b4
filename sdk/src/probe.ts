import http2 from 'node:http2';
import { setTimeout as sleep } from 'node:timers/promises';
import { UnavailableError } from './errors.js';

const RETRY_FIRST_MS = 100;
const RETRY_MAX_MS = 1000;

/**
 * Waits until whatever listens at `address` (host:port) speaks HTTP/2, i.e. sends its SETTINGS,
 * before `deadline` (ms since the epoch). A refused connection is tried again with backoff (the
 * node may be starting); UnavailableError if nothing answered in time, or once `signal` aborts.
 *
 * It uses a connection of its own and destroys it in every case. A gRPC channel cannot stand in:
 * grpc-js never closes a connection whose peer accepted TCP but never answered (a hung node),
 * not even after the channel is closed, so probing with one would leak a socket per hung seed.
 */
export async function probeHttp2(address: string, deadline: number, signal: AbortSignal): Promise<void> {
  const started = Date.now();
  let reason = 'no answer';
  for (let delay = RETRY_FIRST_MS; !signal.aborted; delay = Math.min(delay * 2, RETRY_MAX_MS)) {
    const left = deadline - Date.now();
    if (left <= 0) break;
    const r = await probeOnce(address, left, signal);
    if (r === true) return;
    reason = r;
    const wait = Math.min(delay, deadline - Date.now());
    if (wait <= 0) break;
    try {
      await sleep(wait, undefined, { signal });
    } catch {
      break; // aborted
    }
  }
  throw new UnavailableError(
    signal.aborted
      ? `stopped probing ${address}: another seed answered first`
      : `cannot reach a Loam node at ${address} within ${deadline - started} ms: ${reason}`,
  );
}

/** One connection attempt: true when the peer sent HTTP/2 SETTINGS within `ms`, else why not. */
function probeOnce(address: string, ms: number, signal: AbortSignal): Promise<true | string> {
  return new Promise((resolve) => {
    const session = http2.connect(`http://${address}`);
    session.on('error', () => undefined); // reported through `finish`; later ones don't matter
    let timer: NodeJS.Timeout | undefined;
    let done = false;
    const finish = (r: true | string) => {
      if (done) return; // destroy() below emits 'close' again
      done = true;
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      session.destroy(); // closes the socket, answered or not
      resolve(r);
    };
    const onAbort = () => finish('aborted');
    timer = setTimeout(() => finish(`no HTTP/2 answer within ${ms} ms (the node accepts connections but does not respond)`), ms);
    signal.addEventListener('abort', onAbort, { once: true });
    session.once('remoteSettings', () => finish(true));
    session.once('error', (e: Error) => finish(e.message));
    session.once('close', () => finish('connection closed'));
  });
}
