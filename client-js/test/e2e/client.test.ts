// HubClient in headless Chromium against a real hub process.
// Runs on the embedded backend by default; HUB_E2E_DISTRIBUTED=1 runs the same scenarios
// (and the replica-crash one below) against RabbitMQ + Redis.
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import {
  DISTRIBUTED,
  PageProblems,
  WEBSOCKET_REFUSED,
  launchBrowser,
  mintToken,
  preflight,
  publish,
  publishAmqp,
  startHub,
  startPageServer,
  until,
} from './harness.js';
import type { HubProcess, PageServer } from './harness.js';

const skip = preflight();

interface Note {
  id: string;
  topic: string;
  offset?: string;
  ts: number;
  data: { n?: number; [k: string]: unknown };
}

interface StartOptions {
  url: string;
  user: string;
  protocol?: 'json' | 'msgpack';
  storage?: 'memory' | 'session';
  refreshLeadMs?: number;
}

let browser: Browser;
let pages: PageServer;
let hub: HubProcess;
const contexts: BrowserContext[] = [];
/** Page errors and unexpected console errors fail the test they happen in. */
const problems = new PageProblems();
let userSeq = 0;

/** A fresh user id per scenario, so scenarios sharing a hub don't see each other's notifications. */
function newUser(): string {
  return `e2e${process.pid}x${Date.now() % 100000}x${userSeq++}`;
}

async function openPage(opts: Omit<StartOptions, 'url'> & { url?: string; tokenTtlS?: number }, context?: BrowserContext): Promise<Page> {
  const ctx = context ?? (await browser.newContext());
  if (!context) contexts.push(ctx);
  const page = await ctx.newPage();
  problems.watch(page);
  if (!context) await ctx.exposeFunction('e2eToken', (user: string) => mintToken(user, opts.tokenTtlS ?? 60));
  await page.goto(pages.url);
  const start: StartOptions = { url: opts.url ?? hub.ws, user: opts.user };
  if (opts.protocol) start.protocol = opts.protocol;
  if (opts.storage) start.storage = opts.storage;
  if (opts.refreshLeadMs !== undefined) start.refreshLeadMs = opts.refreshLeadMs;
  await page.evaluate((o) => (window as unknown as { start(o: StartOptions): void }).start(o), start);
  return page;
}

function recorder<T>(page: Page, key: string): Promise<T> {
  return page.evaluate((k) => (window as unknown as { t: Record<string, unknown> }).t[k], key) as Promise<T>;
}

async function waitConnected(page: Page, count = 1): Promise<void> {
  await page.waitForFunction((n) => (window as unknown as { t: { connected: unknown[] } }).t.connected.length >= n && (window as unknown as { client: { state: string } }).client.state === 'connected', count, { timeout: 15_000 });
}

async function waitNotes(page: Page, count: number, timeout = 15_000): Promise<Note[]> {
  await page
    .waitForFunction((n) => (window as unknown as { t: { notes: unknown[] } }).t.notes.length >= n, count, { timeout })
    .catch(async (err: Error) => {
      const got = await recorder<Note[]>(page, 'notes');
      throw new Error(`expected ${count} notifications, got ${got.length}: ${JSON.stringify(got.map((n) => n.data))}\n${err.message}`);
    });
  return recorder<Note[]>(page, 'notes');
}

async function publishSeries(target: HubProcess, user: string, from: number, to: number): Promise<void> {
  for (let n = from; n <= to; n++) await publish(target, user, { n, sent_at: Date.now() });
}

function numbers(notes: Note[]): number[] {
  return notes.map((x) => x.data.n as number);
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

describe(`HubClient in Chromium (${DISTRIBUTED ? 'distributed' : 'embedded'} backend)`, { skip }, () => {
before(async () => {
  [browser, pages] = await Promise.all([launchBrowser(), startPageServer()]);
});

afterEach(async () => {
  // A test's pages end with it (a page left open would keep reconnecting into later tests).
  await Promise.all(contexts.splice(0).map((c) => c.close().catch(() => undefined)));
  problems.assertClean();
});

after(async () => {
  await browser?.close();
  await pages?.close();
});

describe('against a running hub', () => {
  before(async () => {
    hub = await startHub();
  });

  after(async () => {
    await hub?.stop('SIGTERM');
  });

  for (const protocol of ['json', 'msgpack'] as const) {
    it(`receives notifications published over HTTP, in order (${protocol})`, async () => {
      const user = newUser();
      const page = await openPage({ user, protocol });
      await waitConnected(page);
      const connected = (await recorder<{ user: string; topics: string[]; ping_interval: number }[]>(page, 'connected'))[0]!;
      assert.equal(connected.user, user);
      assert.deepEqual(connected.topics, [`user.${user}`]);
      const negotiated = await page.evaluate(() => (window as unknown as { t: { sockets: WebSocket[] } }).t.sockets[0]!.protocol);
      assert.equal(negotiated, `hub.v1.${protocol}`);

      const payload = { n: 1, text: 'héllo ✓', nested: { list: [1, 2.5, null, true], big: 2 ** 40 }, sent_at: Date.now() };
      const answer = await publish(hub, user, payload);
      await publishSeries(hub, user, 2, 5);
      const notes = await waitNotes(page, 5);
      assert.deepEqual(numbers(notes), [1, 2, 3, 4, 5]);
      assert.deepEqual(notes[0]!.data, payload);
      assert.equal(notes[0]!.id, answer.id);
      assert.equal(notes[0]!.topic, `user.${user}`);
      if (answer.offset) assert.equal(notes[0]!.offset, answer.offset);
      assert.ok(Math.abs(notes[0]!.ts - Date.now()) < 60_000, 'ts is epoch milliseconds');
      // The outbound side spoke the protocol: connect first, nothing but pongs/refreshes after.
      const outbound = await recorder<{ type: string }[]>(page, 'outbound');
      assert.equal(outbound[0]!.type, 'connect');
      assert.ok(outbound.slice(1).every((f) => f.type === 'pong' || f.type === 'refresh'));
    });
  }

  // AMQP publishing exists on the distributed backend only (npm test runs both backends).
  if (DISTRIBUTED) it('receives notifications published over AMQP by a backend (hub publish), in order', async () => {
    const user = newUser();
    const page = await openPage({ user });
    await waitConnected(page);
    for (let n = 1; n <= 3; n++) await publishAmqp(user, { n, via: 'amqp', sent_at: Date.now() });
    const notes = await waitNotes(page, 3);
    assert.deepEqual(numbers(notes), [1, 2, 3]);
    assert.equal(notes[0]!.data['via'], 'amqp');
    assert.ok(notes.every((x) => typeof x.offset === 'string'), 'sequenced: every notification has an offset');
  });

  it('answers pings, so the hub keeps the connection (HUB_PING_INTERVAL=2)', async () => {
    const user = newUser();
    const page = await openPage({ user });
    await waitConnected(page);
    await page.waitForFunction(() => (window as unknown as { t: { outbound: { type: string }[] } }).t.outbound.filter((f) => f.type === 'pong').length >= 2, undefined, { timeout: 10_000 });
    const inbound = await recorder<string[]>(page, 'inbound');
    assert.ok(inbound.filter((x) => x === 'ping').length >= 2);
    assert.equal((await recorder<unknown[]>(page, 'connected')).length, 1, 'never reconnected');
    await publishSeries(hub, user, 1, 1);
    await waitNotes(page, 1);
  });

  it('after a dropped socket, resumes with since and gets what was published meanwhile exactly once, in order', async () => {
    const user = newUser();
    const page = await openPage({ user });
    await waitConnected(page);
    await publishSeries(hub, user, 1, 3);
    await waitNotes(page, 3);
    // Take the browser off the network: the client drops its socket and waits for `online`.
    const ctx = page.context();
    await ctx.setOffline(true);
    await page.waitForFunction(() => (window as unknown as { client: { state: string } }).client.state !== 'connected', undefined, { timeout: 10_000 });
    await publishSeries(hub, user, 4, 8);
    await ctx.setOffline(false);
    await waitConnected(page, 2);
    await publishSeries(hub, user, 9, 10);
    const notes = await waitNotes(page, 10);
    assert.deepEqual(numbers(notes), range(1, 10));
    const connects = (await recorder<{ type: string; since: Record<string, string> | null }[]>(page, 'outbound')).filter((f) => f.type === 'connect');
    assert.equal(connects.length, 2);
    assert.equal(connects[0]!.since, null);
    assert.deepEqual(connects[1]!.since, { [`user.${user}`]: notes[2]!.offset });
    const connected = await recorder<{ recovered: boolean }[]>(page, 'connected');
    assert.equal(connected[1]!.recovered, true);
    assert.deepEqual(await recorder<unknown[]>(page, 'gaps'), []);
    // And a socket killed under the client (no offline event) is recovered the same way.
    await page.evaluate(() => (window as unknown as { dropSocket(): void }).dropSocket());
    await publishSeries(hub, user, 11, 12);
    await waitConnected(page, 3);
    assert.deepEqual(numbers(await waitNotes(page, 12)), range(1, 12));
  });

  it('refreshes its token in-band and outlives the first token', async () => {
    const user = newUser();
    // A 4 s token, refreshed at half its life: several refreshes happen within a few seconds.
    const page = await openPage({ user, tokenTtlS: 4 });
    await waitConnected(page);
    const firstConn = (await recorder<{ conn_id: string }[]>(page, 'connected'))[0]!.conn_id;
    await page.waitForFunction(() => (window as unknown as { t: { outbound: { type: string }[] } }).t.outbound.filter((f) => f.type === 'refresh').length >= 3, undefined, { timeout: 15_000 });
    // More than 4 s have passed since the first token was minted: it has expired by now.
    await publishSeries(hub, user, 1, 2);
    assert.deepEqual(numbers(await waitNotes(page, 2)), [1, 2]);
    const connected = await recorder<{ conn_id: string }[]>(page, 'connected');
    assert.deepEqual(connected.map((c) => c.conn_id), [firstConn], 'the same connection throughout');
    assert.deepEqual(await recorder<unknown[]>(page, 'closes'), []);
    assert.ok((await recorder<number>(page, 'tokenCalls')) >= 4);
  });

  it('a page reload resumes from sessionStorage', async () => {
    const user = newUser();
    const page = await openPage({ user, storage: 'session' });
    await waitConnected(page);
    await publishSeries(hub, user, 1, 3);
    await waitNotes(page, 3);
    await page.reload();
    await publishSeries(hub, user, 4, 6); // published while the page is gone
    await page.evaluate((o) => (window as unknown as { start(o: StartOptions): void }).start(o), { url: hub.ws, user, storage: 'session' as const });
    await waitConnected(page);
    const notes = await waitNotes(page, 3);
    assert.deepEqual(numbers(notes), [4, 5, 6], 'only what was missed, once');
    const connect = (await recorder<{ type: string; since: Record<string, string> | null }[]>(page, 'outbound'))[0]!;
    assert.ok(connect.since?.[`user.${user}`], 'the reloaded page sent since');
  });

  it('after a refused token (4001), fetches a fresh one and reconnects', async () => {
    const user = newUser();
    const ctx = await browser.newContext();
    contexts.push(ctx);
    let calls = 0;
    // First token is garbage (4001), the next ones are good.
    await ctx.exposeFunction('e2eToken', (u: string) => (calls++ === 0 ? 'not-a-jwt' : mintToken(u, 60)));
    const page = await openPage({ user }, ctx);
    await waitConnected(page);
    const closes = await recorder<{ code: number; reconnect: boolean }[]>(page, 'closes');
    assert.equal(closes[0]?.code, 4001);
    assert.equal(closes[0]?.reconnect, true);
    assert.ok(calls >= 2);
  });
});

describe('against a hub with history off (HUB_HISTORY_SIZE=0)', () => {
  let bare: HubProcess;

  before(async () => {
    bare = await startHub({ HUB_HISTORY_SIZE: '0' });
  });

  after(async () => {
    await bare?.stop('SIGTERM');
  });

  it('delivers frames without offset as they come, and reports a gap after a reconnect', async () => {
    const user = newUser();
    const page = await openPage({ user, url: bare.ws });
    await waitConnected(page);
    await publishSeries(bare, user, 1, 3);
    const notes = await waitNotes(page, 3);
    assert.deepEqual(numbers(notes), [1, 2, 3]);
    assert.ok(notes.every((n) => n.offset === undefined || n.offset === null), 'no offsets without history');
    await page.evaluate(() => (window as unknown as { dropSocket(): void }).dropSocket());
    await waitConnected(page, 2);
    await page.waitForFunction(() => (window as unknown as { t: { gaps: unknown[] } }).t.gaps.length === 1, undefined, { timeout: 5000 });
    assert.deepEqual(await recorder<string[][]>(page, 'gaps'), [[`user.${user}`]]);
    await publishSeries(bare, user, 4, 4);
    assert.deepEqual(numbers(await waitNotes(page, 4)), [1, 2, 3, 4]);
  });
});

// A crash of the hub process: the client reconnects to the restarted hub on the same port.
describe('across a hub crash and restart', () => {
  let own: HubProcess;
  let other: HubProcess | null = null;

  before(async () => {
    own = await startHub();
    // With the distributed backend a second replica stays up to take publishes while `own` is down.
    if (DISTRIBUTED) other = await startHub();
  });

  after(async () => {
    await own?.stop('SIGTERM');
    await other?.stop('SIGTERM');
  });

  it('SIGTERM: the hub closes with 1012 and the client reconnects at once to the restarted hub', async () => {
    problems.expect(WEBSOCKET_REFUSED); // the draining hub refuses (403), then nothing listens
    const user = newUser();
    const page = await openPage({ user, url: own.ws });
    await waitConnected(page);
    await publishSeries(own, user, 1, 2);
    await waitNotes(page, 2);
    await own.stop('SIGTERM');
    const closes = await until('a close event', async () => (await recorder<{ code: number; delayMs: number }[]>(page, 'closes'))[0]);
    assert.equal(closes.code, 1012, 'a draining hub closes with 1012');
    assert.equal(closes.delayMs, 0, '1012 means reconnect at once');
    await own.restart();
    await waitConnected(page, 2);
    await publishSeries(own, user, 3, 4);
    assert.deepEqual(numbers(await waitNotes(page, 4)), [1, 2, 3, 4]);
  });

  it('SIGKILL: reconnects with backoff and gets everything published after the restart exactly once, in order', async () => {
    problems.expect(WEBSOCKET_REFUSED); // nothing listens until the restart
    const user = newUser();
    const page = await openPage({ user, url: own.ws });
    await waitConnected(page);
    await publishSeries(own, user, 1, 2);
    await waitNotes(page, 2);
    await own.stop('SIGKILL');
    await page.waitForFunction(() => (window as unknown as { client: { state: string } }).client.state === 'connecting', undefined, { timeout: 10_000 });
    if (other) {
      // Distributed: published while the page's replica is down, through another replica.
      await publishSeries(other, user, 3, 5);
    }
    await own.restart();
    // Embedded: history lived in the dead process, so only what comes after the restart can be
    // delivered. Publish right away: some of these land before the client is back (replayed
    // from `since`), some after (live); either way each arrives once, in order.
    const first = other ? 6 : 3;
    await publishSeries(own, user, first, first + 3);
    await waitConnected(page, 2);
    // A last one, once the client is surely back: anything duplicated would have come before it.
    await publishSeries(own, user, first + 4, first + 4);
    const notes = await waitNotes(page, first + 4);
    assert.deepEqual(numbers(notes), range(1, first + 4));
  });
});
});
