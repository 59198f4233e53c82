// End-to-end harness: a real hub process, HS256 tokens, a loopback page server and headless Chromium.
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import type { Browser, Page } from 'playwright-core';
import { TEST_PAGE } from './page.js';

// .build/test/e2e/<file>.mjs → client-js/
export const CLIENT_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const REPO_DIR = resolve(CLIENT_DIR, '..');
export const HUB_BIN = process.env['HUB_BIN'] ?? join(REPO_DIR, '.venv', 'bin', 'hub');
export const CHROMIUM = process.env['CHROMIUM_PATH'] ?? '/usr/bin/chromium';
export const JWT_SECRET = 'e2e-secret-0123456789-0123456789-0123456789';
export const API_KEY = 'e2e-api-key';
export const DISTRIBUTED = process.env['HUB_E2E_DISTRIBUTED'] === '1';

/**
 * Checks that Chromium, the hub and the built bundle are there. A missing piece
 * is an error (never a skip), so that the suite fails, naming it, instead of
 * passing empty; `make setup` installs all three.
 */
export function preflight(): false {
  const problems: string[] = [];
  if (!existsSync(CHROMIUM)) {
    problems.push(`Chromium not found at ${CHROMIUM}: install Debian's package (apt-get update && apt-get install -y chromium) or set CHROMIUM_PATH`);
  }
  if (!existsSync(HUB_BIN)) {
    problems.push(`hub executable not found at ${HUB_BIN}: install the hub into <repo>/.venv (pip install -e .) or set HUB_BIN`);
  }
  if (!existsSync(join(CLIENT_DIR, 'dist', 'hub-client.iife.min.js'))) {
    problems.push('dist/hub-client.iife.min.js is missing: run `npm run build` first');
  }
  if (problems.length === 0) return false;
  const message = `end-to-end tests cannot run:\n  - ${problems.join('\n  - ')}`;
  throw new Error(message);
}

export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as AddressInfo;
      srv.close(() => resolvePort(port));
    });
  });
}

/** Thrown from an `until` check to stop waiting at once (e.g. the process died). */
export class GiveUp extends Error {}

/** Polls `check` until it returns a truthy value or the deadline passes; a GiveUp ends it at once. */
export async function until<T>(what: string, check: () => Promise<T> | T, timeoutMs = 15_000, everyMs = 50): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown = null;
  for (;;) {
    try {
      const v = await check();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      if (err instanceof GiveUp) throw err;
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${String(last)})` : ''}`);
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

function b64url(data: string | Buffer): string {
  return Buffer.from(data).toString('base64url');
}

/** Mints an HS256 token the hub accepts (signed with the same HUB_JWT_SECRET). */
export function mintToken(user: string, ttlS = 60, topics?: string[]): string {
  const now = Math.floor(Date.now() / 1000);
  const payload: Record<string, unknown> = { sub: user, iat: now, exp: now + ttlS };
  if (topics) payload['topics'] = topics;
  const head = `${b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))}.${b64url(JSON.stringify(payload))}`;
  return `${head}.${createHmac('sha256', JWT_SECRET).update(head).digest('base64url')}`;
}

export interface HubProcess {
  readonly port: number;
  readonly http: string;
  readonly ws: string;
  readonly logs: string[];
  /** Stops the process (SIGKILL by default: a crash) and waits for it to exit. */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Starts it again on the same port. */
  restart(): Promise<void>;
}

/** Environment for a hub; with HUB_E2E_DISTRIBUTED=1, the RabbitMQ + Redis backend. */
export function hubEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {
    HUB_JWT_SECRET: JWT_SECRET,
    HUB_API_KEY: API_KEY,
    HUB_PING_INTERVAL: '2',
    HUB_DRAIN_SECONDS: '0.5',
    HUB_LOG_LEVEL: 'warning',
    HUB_DEMO: '1',
  };
  if (DISTRIBUTED) {
    env['HUB_AMQP_URL'] = process.env['HUB_AMQP_URL'] ?? `amqp://guest:guest@127.0.0.1:5672/${privateVhost()}`;
    env['HUB_REDIS_URL'] = process.env['HUB_REDIS_URL'] ?? 'redis://127.0.0.1:6379/0';
    env['HUB_REDIS_PREFIX'] = `e2e:${process.pid}:`;
  }
  return { ...env, ...extra };
}

let vhost: string | undefined;

/**
 * A RabbitMQ vhost of this test process's own (created on first use, deleted at exit), so
 * that durable queues of other runs on the same broker can neither feed nor starve it.
 */
function privateVhost(): string {
  if (vhost === undefined) {
    const name = `e2e-${process.pid}-${Date.now() % 1_000_000}`;
    const ctl = (...args: string[]): void => {
      execFileSync('rabbitmqctl', ['-q', ...args], { stdio: 'ignore', timeout: 60_000 });
    };
    ctl('add_vhost', name);
    ctl('set_permissions', '-p', name, 'guest', '.*', '.*', '.*');
    process.on('exit', () => {
      try {
        ctl('delete_vhost', name);
      } catch {
        // best effort: a leftover vhost holds nothing but empty test queues
      }
      try {
        // this run's history and presence keys (they would expire, in a day)
        execFileSync('sh', ['-c', `redis-cli --scan --pattern 'e2e:${process.pid}:*' | xargs -r redis-cli del`], {
          stdio: 'ignore',
          timeout: 30_000,
        });
      } catch {
        // best effort, as above
      }
    });
    vhost = name;
  }
  return vhost;
}

/**
 * Publishes like a backend service would over AMQP: `hub publish` with HUB_AMQP_URL set
 * sends a confirmed, persistent message to the `notifications` exchange (routing key
 * `user.<id>`), and the sequencer takes it from there. Distributed backend only.
 */
export async function publishAmqp(user: string, data: unknown): Promise<void> {
  await new Promise<void>((resolveRun, reject) => {
    const proc = spawn(HUB_BIN, ['publish', '--user', user, JSON.stringify(data)], {
      env: { ...process.env, ...hubEnv() },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    proc.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    proc.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    proc.on('error', reject);
    proc.on('exit', (code) => (code === 0 ? resolveRun() : reject(new Error(`hub publish exited ${code}: ${output}`))));
  });
}

const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});

/** Starts `hub serve` on a free (or given) port and waits until /readyz answers 200. */
export async function startHub(extraEnv: Record<string, string> = {}, port?: number): Promise<HubProcess> {
  const p = port ?? (await freePort());
  const logs: string[] = [];
  let child: ChildProcess | null = null;

  const launch = async (): Promise<void> => {
    const proc = spawn(HUB_BIN, ['serve', '--host', '127.0.0.1', '--port', String(p)], {
      env: { ...process.env, ...hubEnv(extraEnv) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.add(proc);
    child = proc;
    const keep = (chunk: Buffer): void => {
      logs.push(...chunk.toString().split('\n').filter(Boolean));
      if (logs.length > 400) logs.splice(0, logs.length - 400);
    };
    proc.stdout?.on('data', keep);
    proc.stderr?.on('data', keep);
    let exited: number | null | undefined;
    proc.on('exit', (code) => {
      exited = code;
      children.delete(proc);
    });
    await until(
      `hub on port ${p} to be ready`,
      async () => {
        if (exited !== undefined) throw new GiveUp(`hub exited with ${exited} before it was ready`);
        const res = await fetch(`http://127.0.0.1:${p}/readyz`);
        return res.status === 200;
      },
      30_000,
      100,
    ).catch((err: Error) => {
      proc.kill('SIGKILL');
      throw new Error(`${err.message}\nhub log:\n${logs.slice(-30).join('\n')}`);
    });
  };

  const stop = async (signal: NodeJS.Signals = 'SIGKILL'): Promise<void> => {
    const proc = child as ChildProcess | null;
    child = null;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const done = new Promise<void>((r) => proc.once('exit', () => r()));
    proc.kill(signal);
    const timer = setTimeout(() => proc.kill('SIGKILL'), 15_000);
    await done;
    clearTimeout(timer);
  };

  await launch();
  return {
    port: p,
    http: `http://127.0.0.1:${p}`,
    ws: `ws://127.0.0.1:${p}/ws`,
    logs,
    stop,
    restart: launch,
  };
}

/** Publishes through the HTTP API; returns `{id, offset}`. */
export async function publish(hub: HubProcess, user: string, data: unknown): Promise<{ id: string; offset?: string }> {
  const res = await fetch(`${hub.http}/api/publish`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${API_KEY}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ user, data }),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`expected 2xx from POST /api/publish, got ${res.status}: ${text}`);
  return JSON.parse(text) as { id: string; offset?: string };
}

/**
 * What went wrong in the pages of one test: every uncaught page error and every console
 * error, except console errors the scenario expects (a test that takes the hub or the
 * network away expects Chromium's own "WebSocket connection to … failed" lines).
 * `assertClean` fails the test with what was recorded; `watch` hooks a page up.
 */
export class PageProblems {
  private readonly problems: string[] = [];
  private expected: RegExp[] = [];

  /** Console errors matching one of `patterns` are expected until the next `reset`. */
  expect(...patterns: RegExp[]): void {
    this.expected.push(...patterns);
  }

  watch(page: Page): void {
    page.on('pageerror', (err) => this.problems.push(`page error: ${err.stack ?? err.message}`));
    page.on('console', (msg) => {
      if (msg.type() !== 'error') return;
      const text = msg.text();
      if (!this.expected.some((pattern) => pattern.test(text))) this.problems.push(`console error: ${text}`);
    });
  }

  /** Throws (failing the test) when anything unexpected was recorded; then starts afresh. */
  assertClean(): void {
    const found = this.problems.splice(0);
    this.expected = [];
    if (found.length) throw new Error(`the page reported ${found.length} unexpected error(s):\n  ${found.join('\n  ')}`);
  }
}

/**
 * Chromium's console line for a WebSocket that could not connect: nothing listens (a hub
 * that is down) or the upgrade was refused with 403 (a draining hub, docs/protocol.md §8).
 */
export const WEBSOCKET_REFUSED =
  /^WebSocket connection to '[^']*' failed: (Error in connection establishment: net::ERR_CONNECTION_REFUSED|Error during WebSocket handshake: Unexpected response code: 403)$/;

export interface PageServer {
  readonly url: string;
  close(): Promise<void>;
}

/** Serves the test page and the built IIFE bundle on loopback. */
export async function startPageServer(): Promise<PageServer> {
  const bundle = readFileSync(join(CLIENT_DIR, 'dist', 'hub-client.iife.min.js'));
  const server: Server = createServer((req, res) => {
    if (req.url === '/' || req.url?.startsWith('/?')) {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
      res.end(TEST_PAGE);
    } else if (req.url === '/hub-client.js') {
      res.writeHead(200, { 'Content-Type': 'text/javascript', 'Cache-Control': 'no-store' });
      res.end(bundle);
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/`,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

export async function launchBrowser(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}
