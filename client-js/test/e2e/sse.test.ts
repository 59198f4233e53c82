// The SSE transport in headless Chromium (docs/protocol.md §10): forced with `transport: 'sse'`
// against one hub; and, with HUB_E2E_DISTRIBUTED=1, the automatic fallback through an HAProxy
// that refuses WebSocket upgrades, across a replica restart, resumed with Last-Event-ID.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import {
  API_KEY,
  DISTRIBUTED,
  PageProblems,
  REPO_DIR,
  freePort,
  launchBrowser,
  mintToken,
  preflight,
  publish,
  startHub,
  startPageServer,
  until,
} from './harness.js';
import type { HubProcess, PageServer } from './harness.js';

const skip = preflight();

interface Note {
  id: string;
  offset?: string;
  data: { n?: number };
}

let browser: Browser;
let pages: PageServer;
const contexts: BrowserContext[] = [];
const problems = new PageProblems();
let seq = 0;
const newUser = (): string => `sse${process.pid}x${Date.now() % 100000}x${seq++}`;

async function openPage(url: string, user: string, transport: 'auto' | 'sse'): Promise<{ page: Page; context: BrowserContext }> {
  const context = await browser.newContext();
  contexts.push(context);
  const page = await context.newPage();
  problems.watch(page);
  await context.exposeFunction('e2eToken', (u: string) => mintToken(u, 300));
  await page.goto(pages.url);
  await page.evaluate((o) => (window as unknown as { start(o: unknown): void }).start(o), { url, user, transport });
  return { page, context };
}

const clientState = (page: Page): Promise<{ state: string; transport: string | null }> =>
  page.evaluate(() => {
    const c = (window as unknown as { client: { state: string; transport: string | null } }).client;
    return { state: c.state, transport: c.transport };
  });

const notes = (page: Page): Promise<Note[]> => page.evaluate(() => (window as unknown as { t: { notes: Note[] } }).t.notes);

async function waitNotes(page: Page, count: number): Promise<Note[]> {
  return until(`${count} notifications in the page`, async () => {
    const got = await notes(page);
    return got.length >= count ? got : null;
  });
}

describe('SSE transport in Chromium', { skip }, () => {
  before(async () => {
    browser = await launchBrowser();
    pages = await startPageServer();
  });
  after(async () => {
    await browser?.close();
    await pages?.close();
  });
  afterEach(async () => {
    await closeContexts();
    problems.assertClean();
  });

  it("transport: 'sse' connects over SSE, receives in order, and refreshes its token by POST", async () => {
    const hub = await startHub();
    try {
      const user = newUser();
      const { page } = await openPage(hub.ws, user, 'sse');
      await until('connected over SSE', async () => {
        const s = await clientState(page);
        return s.state === 'connected' && s.transport === 'sse';
      });
      for (let n = 1; n <= 3; n++) await publish(hub, user, { n });
      const got = await waitNotes(page, 3);
      assert.deepEqual(got.map((x) => x.data.n), [1, 2, 3]);
      const sockets = await page.evaluate(() => (window as unknown as { t: { sockets: unknown[] } }).t.sockets.length);
      assert.equal(sockets, 0, 'no WebSocket was opened');
    } finally {
      await closeContexts(); // before the hub goes: a stream cut by a dying hub is a console error
      await hub.stop();
    }
  });

  if (DISTRIBUTED) {
    it('falls back to SSE behind an HAProxy refusing upgrades; after a replica restart, Last-Event-ID brings exactly what was missed', async () => {
      const a = await startHub({ HUB_REPLICA_ID: 'sse-a' });
      const b = await startHub({ HUB_REPLICA_ID: 'sse-b' });
      const lb = await startRefusingLb([a, b]);
      try {
        const user = newUser();
        const { page, context } = await openPage(lb.ws, user, 'auto');
        problems.expect(/^WebSocket connection to '[^']*' failed: Error during WebSocket handshake: Unexpected response code: 403$/);
        const lastEventIds: string[] = [];
        page.on('request', (request) => {
          if (request.url().includes('/sse?ticket=')) lastEventIds.push(request.headers()['last-event-id'] ?? '');
        });
        await until('connected over SSE through the LB', async () => {
          const s = await clientState(page);
          return s.state === 'connected' && s.transport === 'sse';
        }, 30_000);
        const wsAttempts = await page.evaluate(() => (window as unknown as { t: { sockets: unknown[] } }).t.sockets.length);
        assert.ok(wsAttempts >= 2, `expected the WebSocket to be tried first, got ${wsAttempts} attempts`);
        for (let n = 1; n <= 3; n++) await lbPublish(lb.http, user, { n });
        await waitNotes(page, 3);

        const connected = await page.evaluate(() => (window as unknown as { client: { connection: { replica: string } } }).client.connection.replica);
        const holder = connected === 'sse-a' ? a : b;
        const other = holder === a ? b : a;
        await context.setOffline(true); // the page is away while its replica restarts
        await until('the client to notice it is offline', async () => (await clientState(page)).state !== 'connected');
        await holder.stop(); // SIGKILL: no drain, no goodbye
        for (let n = 4; n <= 6; n++) await publish(other, user, { n });
        await holder.restart();
        await context.setOffline(false);
        const got = await waitNotes(page, 6).catch(async (err: Error) => {
          const t = await page.evaluate(() => {
            const r = (window as unknown as { t: Record<string, unknown> }).t;
            return { notes: r['notes'], closes: r['closes'], errors: r['errors'], states: r['states'] };
          });
          throw new Error(`${err.message}\npage: ${JSON.stringify(t)}\nLast-Event-IDs: ${JSON.stringify(lastEventIds)}`);
        });
        await until('connected over SSE again', async () => (await clientState(page)).state === 'connected');
        assert.deepEqual(got.map((x) => x.data.n), [1, 2, 3, 4, 5, 6], 'each exactly once, in order');
        const resumed = lastEventIds.at(-1) ?? '';
        assert.equal(resumed, `user.${user}:${got[2]?.offset}`, 'the reconnect resumed after the third');
        const gaps = await page.evaluate(() => (window as unknown as { t: { gaps: unknown[] } }).t.gaps.length);
        assert.equal(gaps, 0, 'recovered: no gap reported');
        await lbPublish(lb.http, user, { n: 7 });
        const last = await waitNotes(page, 7);
        assert.equal(last.length, 7);
        assert.equal((await clientState(page)).transport, 'sse');
      } finally {
        await closeContexts();
        await lb.stop();
        await a.stop();
        await b.stop();
      }
    });
  }
});

async function closeContexts(): Promise<void> {
  for (const context of contexts.splice(0)) await context.close();
}

interface Lb {
  http: string;
  ws: string;
  stop(): Promise<void>;
}

/** HAProxy with the deployment's template (docker/haproxy.cfg.template) plus one rule: WebSocket upgrades get 403. */
async function startRefusingLb(hubs: HubProcess[]): Promise<Lb> {
  const port = await freePort();
  const stats = await freePort();
  const template = readFileSync(join(REPO_DIR, 'docker', 'haproxy.cfg.template'), 'utf8');
  const config = template
    .replace('{{bind}}', `127.0.0.1:${port}`)
    .replace('{{stats_bind}}', `127.0.0.1:${stats}`)
    .replace('{{server_options}}', '')
    .replace('{{servers}}', hubs.map((h, i) => `    server hub${i + 1} 127.0.0.1:${h.port} check`).join('\n'))
    .replace('    default_backend hubs', '    # a corporate proxy: no WebSockets\n    http-request deny deny_status 403 if { hdr(upgrade) -i websocket }\n    default_backend hubs');
  const dir = mkdtempSync(join(tmpdir(), 'sse-lb-'));
  writeFileSync(join(dir, 'haproxy.cfg'), config);
  const log: string[] = [];
  const proc: ChildProcess = spawn('/usr/sbin/haproxy', ['-db', '-f', join(dir, 'haproxy.cfg')], { stdio: ['ignore', 'pipe', 'pipe'] });
  proc.stdout?.on('data', (c: Buffer) => log.push(c.toString()));
  proc.stderr?.on('data', (c: Buffer) => log.push(c.toString()));
  const http = `http://127.0.0.1:${port}`;
  await until('HAProxy to pass requests to both replicas', async () => {
    if (proc.exitCode !== null) throw new Error(`haproxy exited: ${log.join('')}`);
    const res = await fetch(`http://127.0.0.1:${stats}/stats;csv`);
    const up = (await res.text()).split('\n').filter((line) => line.startsWith('hubs,hub') && line.includes(',UP,'));
    return up.length === hubs.length;
  }, 20_000);
  return {
    http,
    ws: `ws://127.0.0.1:${port}/ws`,
    stop: async () => {
      if (proc.exitCode === null) {
        const done = new Promise((r) => proc.once('exit', r));
        proc.kill('SIGKILL');
        await done;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function lbPublish(http: string, user: string, data: unknown): Promise<void> {
  const res = await fetch(`${http}/api/publish`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${API_KEY}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ user, data }),
  });
  if (!res.ok) throw new Error(`POST /api/publish through the LB: ${res.status} ${await res.text()}`);
}
