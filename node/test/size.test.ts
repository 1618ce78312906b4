import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parseSize } from '../dist/size.js';

const CLI = path.join(path.dirname(fileURLToPath(import.meta.url)), '../dist/cli.js');

describe('parseSize: what --cache-size and --disk-cache-size take', () => {
  it('takes Kubernetes quantities, binary and decimal, as a DataStore spec holds them', () => {
    expect(parseSize('64Mi')).toBe(64 * 1024 * 1024);
    expect(parseSize('1Gi')).toBe(1024 ** 3);
    expect(parseSize('512Ki')).toBe(512 * 1024);
    expect(parseSize('2Ti')).toBe(2 * 1024 ** 4);
    expect(parseSize('500M')).toBe(500_000_000);
    expect(parseSize('2G')).toBe(2_000_000_000);
    expect(parseSize('100k')).toBe(100_000);
    expect(parseSize('1.5Gi')).toBe(1.5 * 1024 ** 3);
    expect(parseSize('1e9')).toBe(1_000_000_000);
    expect(parseSize('5E3')).toBe(5000);
  });

  it('still takes plain bytes and the older forms (KB, MB and GB are 1024-based, as before)', () => {
    expect(parseSize('65536')).toBe(65536);
    expect(parseSize(' 4096 ')).toBe(4096);
    expect(parseSize('64MiB')).toBe(64 * 1024 * 1024);
    expect(parseSize('64mib')).toBe(64 * 1024 * 1024);
    expect(parseSize('1GiB')).toBe(1024 ** 3);
    expect(parseSize('1gb')).toBe(1024 ** 3);
    expect(parseSize('512kb')).toBe(512 * 1024);
    expect(parseSize('100b')).toBe(100);
    expect(parseSize('64 MiB')).toBe(64 * 1024 * 1024);
    expect(parseSize('10.5b')).toBe(10); // whole bytes
  });

  it('refuses what is not a byte size, saying why', () => {
    expect(() => parseSize('64m')).toThrow(/milli/);
    expect(() => parseSize('1K')).toThrow(/unknown unit K/); // a Kubernetes quantity has no K
    expect(() => parseSize('64 Xi')).toThrow(/unknown unit Xi/);
    expect(() => parseSize('')).toThrow(/not a size/);
    expect(() => parseSize('-1Gi')).toThrow(/not a size/);
    expect(() => parseSize('Gi')).toThrow(/not a size/);
    expect(() => parseSize('1e400')).toThrow(/too large/);
    expect(() => parseSize('1.2.3M')).toThrow(/not a size/);
  });
});

describe('the CLI reads sizes through parseSize', () => {
  const run = (args: string[], env: Record<string, string> = {}) =>
    spawnSync(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 20_000 });

  it('from LOAM_CACHE_SIZE and LOAM_DISK_CACHE_SIZE: quantities accepted, a bad value named in one line', () => {
    expect(run(['--version'], { LOAM_CACHE_SIZE: '1Gi', LOAM_DISK_CACHE_SIZE: '10G' }).status).toBe(0);
    const bad = run(['--version'], { LOAM_CACHE_SIZE: '64m' });
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/^loam: LOAM_CACHE_SIZE: not a size: "64m": "m" is milli/);
    expect(run(['--version'], { LOAM_DISK_CACHE_SIZE: 'lots' }).stderr).toMatch(/LOAM_DISK_CACHE_SIZE: not a size/);
  });

  it('from --cache-size and --disk-cache-size', () => {
    const bad = run(['dev', '--cache-size', '64m', '--port', '0']);
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toMatch(/option '--cache-size <size>' argument '64m' is invalid.*milli/);
    expect(run(['dev', '--disk-cache-size', '1X', '--port', '0']).stderr).toMatch(/--disk-cache-size.*unknown unit X/);
  });
});
