import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it, mock } from 'node:test';
import { HubClient } from '../../src/client.js';
import type { HubClientError, HubClientOptions, HubNotification, WebSocketConstructor } from '../../src/types.js';

// Compile-time check: the browser's WebSocket is a valid `WebSocket` option as it is.
export const browserWebSocketFits = (ws: typeof WebSocket): WebSocketConstructor => ws;
import { FakeSocket, fakeJwt, flush, notification } from './fake-ws.js';

const T0 = 1_700_000_000_000;

interface Harness {
  client: HubClient;
  tokens: string[];
  states: string[];
  notes: HubNotification[];
  errors: HubClientError[];
  gaps: string[][];
}

function makeClient(opts: Partial<HubClientOptions> = {}, tokenTtlS = 3600): Harness {
  const tokens: string[] = [];
  const client = new HubClient({
    url: 'ws://hub.test/ws',
    getToken: async () => {
      const token = fakeJwt({ sub: '42', exp: Math.floor(Date.now() / 1000) + tokenTtlS, n: tokens.length });
      tokens.push(token);
      return token;
    },
    WebSocket: FakeSocket,
    watchBrowser: false,
    random: () => 0.5,
    ...opts,
  });
  const h: Harness = { client, tokens, states: [], notes: [], errors: [], gaps: [] };
  client.on('state', (s) => h.states.push(s.state));
  client.on('notification', (n) => h.notes.push(n));
  client.on('error', (e) => h.errors.push(e));
  client.on('gap', (g) => h.gaps.push(g.topics));
  return h;
}

/** connect() and complete the handshake of the socket it opens. */
async function connected(h: Harness, extra: Record<string, unknown> = {}): Promise<FakeSocket> {
  if (h.client.state === 'disconnected') h.client.connect();
  await flush();
  const ws = FakeSocket.last;
  ws.handshake(extra);
  assert.equal(h.client.state, 'connected');
  return ws;
}

beforeEach(() => {
  FakeSocket.reset();
  mock.timers.enable({ apis: ['setTimeout', 'Date'], now: T0 });
});

afterEach(() => {
  mock.timers.reset();
});

describe('HubClient handshake', () => {
  it('sends the token in the first frame and reports connected', async () => {
    const h = makeClient();
    let connectedFrame: unknown = null;
    h.client.on('connected', (f) => (connectedFrame = f));
    h.client.connect();
    assert.equal(h.client.state, 'connecting');
    await flush();
    const ws = FakeSocket.last;
    assert.equal(ws.url, 'ws://hub.test/ws');
    assert.deepEqual(ws.protocols, ['hub.v1.json']);
    assert.equal(ws.binaryType, 'arraybuffer');
    ws.accept();
    assert.deepEqual(ws.sent, [{ type: 'connect', token: h.tokens[0] }], 'no since on a first connect');
    ws.push({ type: 'connected', conn_id: 'c1', user: '42', topics: ['user.42'], replica: 'r1', ping_interval: 25, recovered: true, offsets: {} });
    assert.equal(h.client.state, 'connected');
    assert.deepEqual(h.states, ['connecting', 'connected']);
    assert.equal((connectedFrame as { conn_id: string }).conn_id, 'c1');
    assert.equal(h.client.connection?.replica, 'r1');
  });

  it('answers ping with pong', async () => {
    const h = makeClient();
    const ws = await connected(h);
    ws.push({ type: 'ping' });
    assert.deepEqual(ws.sent.at(-1), { type: 'pong' });
  });

  it('speaks msgpack when asked, in binary frames', async () => {
    const h = makeClient({ protocol: 'msgpack' });
    h.client.connect();
    await flush();
    const ws = FakeSocket.last;
    assert.deepEqual(ws.protocols, ['hub.v1.msgpack']);
    ws.handshake();
    assert.ok(ws.raw[0] instanceof Uint8Array, 'connect frame is binary');
    assert.equal(ws.sent[0]!['type'], 'connect');
    ws.push(notification('1-0', { hello: 'msgpack' }));
    assert.deepEqual(h.notes[0]?.data, { hello: 'msgpack' });
    ws.push({ type: 'ping' });
    assert.ok(ws.raw.at(-1) instanceof Uint8Array);
  });

  it('ignores unknown frame types and reports unreadable ones without dropping the socket', async () => {
    const h = makeClient();
    const ws = await connected(h);
    ws.push({ type: 'future-thing', x: 1 });
    ws.pushRaw('{oops');
    assert.equal(h.errors.length, 1);
    assert.equal(h.errors[0]?.kind, 'protocol');
    assert.equal(h.client.state, 'connected');
    assert.equal(ws.closedByClient, null);
  });

  it('gives up on a handshake that never completes, and retries', async () => {
    const h = makeClient({ connectTimeoutMs: 5000 });
    h.client.connect();
    await flush();
    FakeSocket.last.accept(); // but no `connected` frame
    mock.timers.tick(5000);
    assert.equal(h.errors[0]?.kind, 'timeout');
    assert.notEqual(FakeSocket.last.closedByClient, null);
    assert.equal(h.client.state, 'connecting');
    mock.timers.tick(250); // attempt 0, random 0.5 of a 500 ms window
    await flush();
    assert.equal(FakeSocket.instances.length, 2);
  });
});

describe('HubClient delivery and recovery', () => {
  it('drops duplicates by offset and delivers frames without offset as they come', async () => {
    const h = makeClient();
    const ws = await connected(h);
    for (const off of ['1-0', '1-1', '1-1', '1-0', '2-0']) ws.push(notification(off, { off }));
    ws.push(notification(undefined, { plain: 1 }));
    ws.push(notification(undefined, { plain: 2 }));
    assert.deepEqual(
      h.notes.map((n) => n.data),
      [{ off: '1-0' }, { off: '1-1' }, { off: '2-0' }, { plain: 1 }, { plain: 2 }],
    );
    assert.equal('type' in h.notes[0]!, false, 'the app gets the notification, not the frame');
    assert.deepEqual(Object.keys(h.notes[0]!).sort(), ['data', 'id', 'offset', 'topic', 'ts']);
  });

  it('resumes with since = last offset per topic, seeding unseen topics from connected.offsets', async () => {
    const h = makeClient();
    const ws = await connected(h, { topics: ['user.42', 'broadcast'], offsets: { 'user.42': '5-0', broadcast: '9-0' } });
    ws.push(notification('6-0'));
    ws.push(notification('5-0'));
    assert.equal(h.notes.length, 1, 'offsets at or before connected.offsets are not new');
    ws.serverClose(1006);
    assert.equal(h.client.state, 'connecting');
    mock.timers.tick(250);
    await flush();
    const ws2 = FakeSocket.last;
    assert.notEqual(ws2, ws);
    ws2.accept();
    assert.equal(ws2.sent[0]!['type'], 'connect');
    // broadcast is not in the token's topics claim, so it is not asked for
    assert.deepEqual(ws2.sent[0]!['since'], { 'user.42': '6-0' });
    ws2.push({ type: 'connected', conn_id: 'c2', user: '42', topics: ['user.42'], replica: 'r2', ping_interval: 25, recovered: true, offsets: { 'user.42': '8-0' } });
    ws2.push(notification('6-0')); // replay overlapping what we had
    ws2.push(notification('7-0'));
    ws2.push(notification('8-0'));
    ws2.push(notification('7-0')); // live duplicate of the replay
    assert.deepEqual(h.notes.map((n) => n.offset), ['6-0', '7-0', '8-0']);
    assert.deepEqual(h.gaps, []);
  });

  it('sends since for granted topics in the token', async () => {
    const h = makeClient({
      getToken: () => fakeJwt({ sub: '42', exp: Math.floor(Date.now() / 1000) + 3600, topics: ['broadcast'] }),
    });
    const ws = await connected(h, { topics: ['user.42', 'broadcast'], offsets: { 'user.42': '5-0', broadcast: '9-0' } });
    ws.serverClose(1006);
    mock.timers.tick(250);
    await flush();
    FakeSocket.last.accept();
    assert.deepEqual(FakeSocket.last.sent[0]!['since'], { 'user.42': '5-0', broadcast: '9-0' });
  });

  it('emits gap when the hub could not recover, only if it was asked to', async () => {
    const h = makeClient();
    const ws = await connected(h, { recovered: false, offsets: { 'user.42': '5-0' } });
    assert.deepEqual(h.gaps, [], 'nothing was asked on the first connect');
    ws.serverClose(1006);
    mock.timers.tick(250);
    await flush();
    FakeSocket.last.handshake({ recovered: false });
    assert.deepEqual(h.gaps, [['user.42']]);
  });

  it('reports a gap after a reconnect when the hub keeps no history (no offsets to resume from)', async () => {
    const h = makeClient();
    const ws = await connected(h, { offsets: {} });
    ws.push(notification(undefined, { a: 1 }));
    ws.serverClose(1006);
    mock.timers.tick(250);
    await flush();
    FakeSocket.last.accept();
    assert.equal(FakeSocket.last.sent[0]!['since'], undefined);
    FakeSocket.last.push({ type: 'connected', conn_id: 'c2', user: '42', topics: ['user.42'], replica: 'r', ping_interval: 25, recovered: true, offsets: {} });
    assert.deepEqual(h.gaps, [['user.42']]);
  });

  it('forgets another user\'s offsets when the token is for someone else', async () => {
    let sub = '42';
    const h = makeClient({ getToken: () => fakeJwt({ sub, exp: Math.floor(Date.now() / 1000) + 3600 }) });
    const ws = await connected(h, { offsets: { 'user.42': '5-0' } });
    ws.serverClose(1006);
    sub = '43';
    mock.timers.tick(250);
    await flush();
    FakeSocket.last.accept();
    assert.equal(FakeSocket.last.sent[0]!['since'], undefined);
  });

  it('after 4002 on a connect with since, resumes without since and reports a gap', async () => {
    const h = makeClient();
    const ws = await connected(h, { offsets: { 'user.42': '5-0' } });
    ws.serverClose(1006);
    mock.timers.tick(250);
    await flush();
    FakeSocket.last.accept();
    assert.ok(FakeSocket.last.sent[0]!['since']);
    FakeSocket.last.push({ type: 'error', code: 4002, message: "bad 'since' entry" });
    FakeSocket.last.serverClose(4002);
    mock.timers.tick(500);
    await flush();
    FakeSocket.last.accept();
    assert.equal(FakeSocket.last.sent[0]!['since'], undefined);
    FakeSocket.last.push({ type: 'connected', conn_id: 'c', user: '42', topics: [], replica: 'r', ping_interval: 25, recovered: true, offsets: {} });
    assert.deepEqual(h.gaps, [['user.42']]);
  });
});

describe('HubClient close-code policy', () => {
  it('1012: reconnects at once (once), then backs off', async () => {
    const h = makeClient();
    const ws = await connected(h);
    ws.serverClose(1012, 'restarting');
    mock.timers.tick(0);
    await flush();
    assert.equal(FakeSocket.instances.length, 2, 'reconnected without delay');
    FakeSocket.last.handshake();
    FakeSocket.last.serverClose(1012);
    mock.timers.tick(0);
    await flush();
    assert.equal(FakeSocket.instances.length, 2, 'a second 1012 before a stable uptime waits');
    mock.timers.tick(250);
    await flush();
    assert.equal(FakeSocket.instances.length, 3);
  });

  it('1013 and 4008: back off from a wider window', async () => {
    for (const code of [1013, 4008]) {
      FakeSocket.reset();
      const h = makeClient();
      const delays: (number | null)[] = [];
      h.client.on('disconnected', (d) => delays.push(d.delayMs));
      const ws = await connected(h);
      ws.serverClose(code);
      assert.equal(delays[0], 2000, `${code}: half of base*2^3`); // random 0.5 of 4000
      mock.timers.tick(1999);
      await flush();
      assert.equal(FakeSocket.instances.length, 1);
      mock.timers.tick(1);
      await flush();
      assert.equal(FakeSocket.instances.length, 2);
      h.client.disconnect();
    }
  });

  it('4001 and 4009: fetch a new token and reconnect', async () => {
    for (const code of [4001, 4009]) {
      FakeSocket.reset();
      const h = makeClient();
      const ws = await connected(h);
      assert.equal(h.tokens.length, 1);
      ws.push({ type: 'error', code, message: 'token' });
      ws.serverClose(code);
      mock.timers.tick(0);
      await flush();
      assert.equal(h.tokens.length, 2, 'getToken called again');
      FakeSocket.last.accept();
      assert.equal(FakeSocket.last.sent[0]!['token'], h.tokens[1]);
      h.client.disconnect();
    }
  });

  it('4003: stops, reports a fatal error and does not reconnect', async () => {
    const h = makeClient();
    const ws = await connected(h);
    ws.push({ type: 'error', code: 4003, message: 'topic not allowed: team.9' });
    ws.serverClose(4003);
    assert.equal(h.client.state, 'disconnected');
    const fatal = h.errors.find((e) => e.fatal);
    assert.ok(fatal, 'a fatal error was emitted');
    assert.equal(fatal.code, 4003);
    assert.match(fatal.message, /topic not allowed: team\.9/);
    mock.timers.tick(60_000);
    await flush();
    assert.equal(FakeSocket.instances.length, 1);
  });

  it('backoff grows across failed attempts and resets only after a stable uptime', async () => {
    const h = makeClient({ minUptimeMs: 5000 });
    const delays: (number | null)[] = [];
    h.client.on('disconnected', (d) => delays.push(d.delayMs));
    let ws = await connected(h);
    for (let i = 0; i < 4; i++) {
      ws.serverClose(1006);
      mock.timers.tick(delays.at(-1)!);
      await flush();
      ws = FakeSocket.last;
      ws.handshake();
      mock.timers.tick(1000); // up, but not long enough
    }
    assert.deepEqual(delays, [250, 500, 1000, 2000]);
    mock.timers.tick(4000); // now stable
    ws.serverClose(1006);
    assert.equal(delays.at(-1), 250);
  });

  it('caps the backoff window', async () => {
    const h = makeClient({ reconnectMaxMs: 3000, getToken: () => Promise.reject(new Error('auth server down')) });
    const delays: (number | null)[] = [];
    h.client.on('disconnected', (d) => delays.push(d.delayMs));
    h.client.connect();
    for (let i = 0; i < 8; i++) {
      await flush();
      mock.timers.tick(delays.at(-1) ?? 0);
    }
    assert.deepEqual(delays.slice(0, 8), [250, 500, 1000, 1500, 1500, 1500, 1500, 1500]);
    assert.ok(h.errors.every((e) => e.kind === 'token' && /auth server down/.test(e.message)));
    assert.equal(FakeSocket.instances.length, 0);
  });

  it('disconnect() closes with 1000, stops reconnecting and leaves no timer behind', async () => {
    const h = makeClient();
    const ws = await connected(h);
    h.client.disconnect();
    assert.deepEqual(ws.closedByClient, { code: 1000, reason: 'client disconnect' });
    assert.equal(h.client.state, 'disconnected');
    ws.serverClose(1000); // a late close event must not revive anything
    mock.timers.tick(120_000);
    await flush();
    assert.equal(FakeSocket.instances.length, 1);
    assert.deepEqual(h.states, ['connecting', 'connected', 'disconnected']);
  });

  it('disconnect() during getToken() does not open a socket afterwards', async () => {
    let release!: (t: string) => void;
    const h = makeClient({ getToken: () => new Promise<string>((r) => (release = r)) });
    h.client.connect();
    h.client.disconnect();
    release(fakeJwt({ sub: '42', exp: 2e9 }));
    await flush();
    assert.equal(FakeSocket.instances.length, 0);
  });
});

describe('HubClient watchdog', () => {
  it('drops a socket that is silent for 2 ping intervals and reconnects', async () => {
    const h = makeClient();
    const ws = await connected(h, { ping_interval: 10 });
    mock.timers.tick(15_000);
    ws.push({ type: 'ping' }); // heard at 15 s: deadline moves to 35 s
    mock.timers.tick(19_999);
    assert.equal(ws.closedByClient, null);
    mock.timers.tick(1);
    assert.equal((ws.closedByClient as { code?: number } | null)?.code, 4000);
    assert.equal(h.client.state, 'connecting');
    assert.ok(h.errors.some((e) => e.kind === 'timeout'));
    mock.timers.tick(250);
    await flush();
    assert.equal(FakeSocket.instances.length, 2);
  });

  it('any frame counts as a sign of life', async () => {
    const h = makeClient();
    const ws = await connected(h, { ping_interval: 10 });
    for (let i = 0; i < 10; i++) {
      mock.timers.tick(15_000);
      ws.push(notification(`${i + 1}-0`));
    }
    assert.equal(ws.closedByClient, null);
    assert.equal(h.notes.length, 10);
  });
});

describe('HubClient token refresh', () => {
  it('sends a refresh frame with a fresh token before exp, on the same socket', async () => {
    const h = makeClient({ refreshLeadMs: 30_000 }, 120);
    const ws = await connected(h, { ping_interval: 3600 });
    mock.timers.tick(89_999);
    await flush();
    assert.equal(h.tokens.length, 1);
    mock.timers.tick(1);
    await flush();
    assert.equal(h.tokens.length, 2);
    assert.deepEqual(ws.sent.at(-1), { type: 'refresh', token: h.tokens[1] });
    assert.equal(FakeSocket.instances.length, 1, 'no reconnect');
    // and again, from the new token's exp
    mock.timers.tick(90_000);
    await flush();
    assert.deepEqual(ws.sent.at(-1), { type: 'refresh', token: h.tokens[2] });
  });

  it('refreshes a short-lived token at half its life', async () => {
    const h = makeClient({ refreshLeadMs: 30_000 }, 10);
    const ws = await connected(h, { ping_interval: 3600 });
    mock.timers.tick(5000);
    await flush();
    assert.equal(ws.sent.at(-1)?.['type'], 'refresh');
  });

  it('reports a failed refresh and keeps the connection', async () => {
    let fail = false;
    const h = makeClient({
      refreshLeadMs: 30_000,
      getToken: () => (fail ? Promise.reject(new Error('nope')) : fakeJwt({ sub: '42', exp: Math.floor(Date.now() / 1000) + 120 })),
    });
    const ws = await connected(h, { ping_interval: 3600 });
    fail = true;
    mock.timers.tick(90_000);
    await flush();
    assert.equal(h.errors[0]?.kind, 'token');
    assert.match(h.errors[0]!.message, /token refresh failed: nope/);
    assert.equal(h.client.state, 'connected');
    assert.equal(ws.closedByClient, null);
  });

  it('does not refresh after the socket is gone', async () => {
    const h = makeClient({ refreshLeadMs: 30_000 }, 120);
    const ws = await connected(h, { ping_interval: 3600 });
    h.client.disconnect();
    mock.timers.tick(200_000);
    await flush();
    assert.equal(h.tokens.length, 1);
    assert.equal(ws.sent.filter((f) => f['type'] === 'refresh').length, 0);
  });
});

describe('HubClient browser signals', () => {
  const g = globalThis as unknown as Record<string, unknown>;
  let win: EventTarget;
  let doc: EventTarget & { visibilityState: string };
  let online = true;

  beforeEach(() => {
    win = new EventTarget();
    doc = Object.assign(new EventTarget(), { visibilityState: 'visible' });
    online = true;
    g['window'] = win;
    g['document'] = doc;
    Object.defineProperty(globalThis, 'navigator', { value: { get onLine() { return online; } }, configurable: true, writable: true });
  });

  afterEach(() => {
    delete g['window'];
    delete g['document'];
  });

  it('offline drops the socket and waits; online reconnects at once', async () => {
    const h = makeClient({ watchBrowser: true });
    const ws = await connected(h, { ping_interval: 3600 });
    online = false;
    win.dispatchEvent(new Event('offline'));
    assert.notEqual(ws.closedByClient, null);
    assert.equal(h.client.state, 'connecting');
    mock.timers.tick(60_000);
    await flush();
    assert.equal(FakeSocket.instances.length, 1, 'no attempt while offline');
    online = true;
    win.dispatchEvent(new Event('online'));
    await flush();
    assert.equal(FakeSocket.instances.length, 2);
    h.client.disconnect();
  });

  it('does not start connecting while the browser is offline', async () => {
    online = false;
    const h = makeClient({ watchBrowser: true });
    h.client.connect();
    await flush();
    assert.equal(FakeSocket.instances.length, 0);
    online = true;
    win.dispatchEvent(new Event('online'));
    await flush();
    assert.equal(FakeSocket.instances.length, 1);
    h.client.disconnect();
  });

  it('a page becoming visible cuts a pending backoff short', async () => {
    const h = makeClient({ watchBrowser: true, random: () => 0.99 });
    const ws = await connected(h, { ping_interval: 3600 });
    ws.serverClose(1006);
    doc.visibilityState = 'visible';
    doc.dispatchEvent(new Event('visibilitychange'));
    await flush();
    assert.equal(FakeSocket.instances.length, 2);
    h.client.disconnect();
  });

  it('disconnect() removes the listeners', async () => {
    const h = makeClient({ watchBrowser: true });
    await connected(h, { ping_interval: 3600 });
    h.client.disconnect();
    win.dispatchEvent(new Event('online'));
    await flush();
    assert.equal(FakeSocket.instances.length, 1);
  });
});

describe('HubClient options', () => {
  it('refuses bad options with a clear message', () => {
    assert.throws(() => new HubClient({} as HubClientOptions), /expected options \{url/);
    assert.throws(
      () => new HubClient({ url: 'ws://x', getToken: () => 't', protocol: 'xml' as 'json' }),
      /expected protocol 'json' or 'msgpack', got xml/,
    );
  });

  it('reports a missing WebSocket implementation as an error, not a throw', async () => {
    const h = makeClient({ WebSocket: undefined as never });
    // node 20 has no global WebSocket
    if ((globalThis as { WebSocket?: unknown }).WebSocket) return;
    h.client.connect();
    await flush();
    assert.equal(h.errors[0]?.kind, 'transport');
    h.client.disconnect();
  });
});
