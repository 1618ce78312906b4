import net from 'node:net';

// Below the kernel's ephemeral range (32768-60999 on Linux), so ports that other tests get by
// listening on port 0, and outgoing connections, never land in a block handed out here.
const LOW = 20_000;
const HIGH = 32_000;

function canListen(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen({ port, host, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/**
 * A block of `count` consecutive ports that were free a moment ago, for tests of fixed port
 * layouts (where port 0 cannot stand in). Throws after `attempts` occupied blocks.
 */
export async function freePortBlock(count: number, host = '127.0.0.1', attempts = 50): Promise<number> {
  for (let i = 0; i < attempts; i++) {
    const base = LOW + Math.floor(Math.random() * (HIGH - LOW - count));
    let free = true;
    for (let p = base; p < base + count && free; p++) free = await canListen(p, host);
    if (free) return base;
  }
  throw new Error(`no block of ${count} free ports between ${LOW} and ${HIGH} after ${attempts} tries`);
}
