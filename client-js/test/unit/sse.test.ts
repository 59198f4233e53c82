// The SSE transport and the automatic fallback, with a fake WebSocket and a fake fetch (the test plays the hub).
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it, mock } from 'node:test';
import { HubClient } from '../../src/client.js';
import { SseTransport, defaultSseUrl, eventId } from '../../src/sse-transport.js';
import type { RawFrame } from '../../src/frames.js';
import { FakeSocket, fakeJwt, flush } from './fake-ws.js';

/** A hub behind fetch: tickets, one stream at a time the test writes to, and the POSTs it got. */
class FakeSseHub {
  readonly requests: { url: string; init: RequestInit | undefined }[] = [];
  private stream: ReadableStreamDefaultController<Uint8Array> | null = null;
  ticketStatus = 200;
  ticketBody: unknown = { ticket: 't1', expires_in: 30 };

  readonly fetch = async (url: string, init?: RequestInit): Promise<Response> => {
    this.requests.push({ url, init });
    if (url.endsWith('/ticket')) return Response.json(this.ticketBody, { status: this.ticketStatus });
    if (init?.method === 'POST') return new Response(null, { status: 202 });
    const body = new ReadableStream<Uint8Array>({ start: (c) => void (this.stream = c) });
    return new Response(body, { status: 200, headers: { 'content-type': 'text/event-stream' } });
  };

  write(text: string): void {
    this.stream?.enqueue(new TextEncoder().encode(text));
  }

  event(frame: Record<string, unknown>, id?: string): void {
    this.write(`${id ? `id: ${id}\n` : ''}data: ${JSON.stringify(frame)}\n\n`);
  }
}

async function until(what: string, check: () => boolean): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const token = (): string => fakeJwt({ sub: '42', exp: Math.floor(Date.now() / 1000) + 3600 });

beforeEach(() => FakeSocket.reset());

describe('SSE helpers', () => {
  it('derives the SSE URL from the WebSocket URL', () => {
    assert.equal(defaultSseUrl('wss://hub.example.com/ws'), 'https://hub.example.com/sse');
    assert.equal(defaultSseUrl('ws://127.0.0.1:8080/prefix/ws?x=1'), 'http://127.0.0.1:8080/prefix/sse');
  });

  it('writes Last-Event-ID as sorted topic:offset pairs', () => {
    assert.equal(eventId({ 'user.42': '5-0', broadcast: '7-1' }), 'broadcast:7-1,user.42:5-0');
  });
});

describe('SseTransport', () => {
  it('turns a refused ticket into the close code the hub names', async () => {
    const hub = new FakeSseHub();
    hub.ticketStatus = 401;
    hub.ticketBody = { error: 'token expired', code: 4009 };
    const closes: [number, string][] = [];
    const t = new SseTransport('http://hub.test/sse', hub.fetch, {
      frame: () => undefined,
      unreadable: () => undefined,
      closed: (code, reason) => closes.push([code, reason]),
    });
    t.start({ type: 'connect', token: 'x' });
    await until('the close', () => closes.length > 0);
    assert.deepEqual(closes, [[4009, 'token expired']]);
  });

  it('reads events, pings, the stream event and the close; POSTs frames with the secret', async () => {
    const hub = new FakeSseHub();
    const frames: RawFrame[] = [];
    const closes: number[] = [];
    const t = new SseTransport('http://hub.test/sse', hub.fetch, {
      frame: (f) => frames.push(f),
      unreadable: () => undefined,
      closed: (code) => closes.push(code),
    });
    t.start({ type: 'connect', token: 'x', since: { 'user.42': '3-0' } });
    await until('the stream', () => hub.requests.length === 2);
    const get = hub.requests[1]!;
    assert.equal(get.url, 'http://hub.test/sse?ticket=t1');
    assert.equal((get.init?.headers as Record<string, string>)['last-event-id'], 'user.42:3-0');
    hub.write('event: hub.stream\ndata: {"stream":"abc.def","post":"/sse/abc.def","secret":"s3"}\n\n');
    hub.write(': ping\n\n');
    hub.event({ type: 'notification', topic: 'user.42', offset: '4-0', id: 'a', ts: 1, data: {} }, 'user.42:4-0');
    await until('two frames', () => frames.length === 2);
    assert.deepEqual(frames[0], { type: 'ping' });
    t.send({ type: 'pong' }); // never POSTed: a written ping is the hub's proof of life
    t.send({ type: 'refresh', token: 'y' });
    await until('the POST', () => hub.requests.length === 3);
    const post = hub.requests[2]!;
    assert.equal(post.url, 'http://hub.test/sse/abc.def');
    assert.equal((post.init?.headers as Record<string, string>)['authorization'], 'Bearer s3');
    assert.deepEqual(JSON.parse(String(post.init?.body)), { type: 'refresh', token: 'y' });
    hub.write('event: close\ndata: {"code":1012,"reason":"restart"}\n\n');
    await until('the close', () => closes.length === 1);
    assert.deepEqual(closes, [1012]);
  });
});

/** An 'auto' client on the fake hub; reconnect delays are at most 1 ms. */
function autoClient(hub: FakeSseHub, websocketRetryMs = 20_000): HubClient {
  return new HubClient({
    url: 'ws://hub.test/ws',
    getToken: token,
    WebSocket: FakeSocket,
    fetch: hub.fetch,
    watchBrowser: false,
    reconnectBaseMs: 1,
    reconnectMaxMs: 2,
    random: () => 0.5,
    websocketRetryMs, // below the 50 s watchdog of ping_interval 25: no pings needed meanwhile
  });
}

describe('HubClient transport choice', () => {
  it("'auto' falls back to SSE after two failed upgrades; the app sees the same events", async () => {
    const hub = new FakeSseHub();
    const client = autoClient(hub);
    const notes: unknown[] = [];
    client.on('notification', (n) => notes.push(n));
    client.connect();
    for (let i = 1; i <= 2; i++) {
      await until(`WebSocket attempt ${i}`, () => FakeSocket.instances.length === i);
      FakeSocket.last.serverClose(1006); // a proxy refusing the upgrade
    }
    await until('the SSE stream', () => hub.requests.length === 2);
    assert.equal(FakeSocket.instances.length, 2);
    hub.write('event: hub.stream\ndata: {"stream":"s.r","secret":"k"}\n\n');
    hub.event({ type: 'connected', conn_id: 'c', user: '42', topics: ['user.42'], replica: 'r', ping_interval: 25, recovered: true, offsets: { 'user.42': '1-0' } }, 'user.42:1-0');
    hub.event({ type: 'notification', topic: 'user.42', offset: '2-0', id: 'n2', ts: 1, data: { n: 2 } }, 'user.42:2-0');
    await until('the notification', () => notes.length === 1);
    assert.equal(client.state, 'connected');
    assert.equal(client.transport, 'sse');
    assert.deepEqual(client.offsets, { 'user.42': '2-0' });
    client.disconnect();
    assert.equal(client.transport, null);
  });

  it("'websocket' never falls back", async () => {
    const hub = new FakeSseHub();
    const client = new HubClient({ url: 'ws://hub.test/ws', getToken: token, WebSocket: FakeSocket, fetch: hub.fetch, transport: 'websocket', watchBrowser: false, reconnectBaseMs: 1, reconnectMaxMs: 2 });
    client.connect();
    for (let i = 1; i <= 4; i++) {
      await until(`WebSocket attempt ${i}`, () => FakeSocket.instances.length === i);
      FakeSocket.last.serverClose(1006);
    }
    await until('a fifth WebSocket attempt', () => FakeSocket.instances.length === 5);
    assert.equal(hub.requests.length, 0);
    client.disconnect();
  });
});

describe('HubClient transport choice, over time (fake timers)', () => {
  // setTimeout and Date are faked here, so `until` cannot poll: these tests let promise
  // callbacks and the fake fetch's stream run with flush() (setImmediate is not faked).
  beforeEach(() => mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 1_700_000_000_000 }));
  afterEach(() => mock.timers.reset());

  async function settle(what: string, check: () => boolean): Promise<void> {
    for (let i = 0; i < 200 && !check(); i++) await flush();
    if (!check()) throw new Error(`never happened: ${what}`);
  }

  const connectedFrame = { type: 'connected', conn_id: 'c', user: '42', topics: ['user.42'], replica: 'r', ping_interval: 25, recovered: true, offsets: {} };


  /**
   * Fails two fresh WebSocket attempts with 1006 and completes the SSE connection that follows.
   * Returns the (fake) time of the second failure: the fallback, when the retry timer starts.
   */
  async function fallenBackToSse(client: HubClient, hub: FakeSseHub): Promise<number> {
    client.connect();
    let fellBackAt = 0;
    for (let i = 1; i <= 2; i++) {
      await settle(`WebSocket attempt ${i}`, () => FakeSocket.instances.length === i);
      FakeSocket.last.serverClose(1006);
      fellBackAt = Date.now();
      mock.timers.tick(2);
    }
    await settle('the SSE stream', () => hub.requests.length === 2);
    hub.write('event: hub.stream\ndata: {"stream":"s.r","secret":"k"}\n\n');
    hub.event(connectedFrame);
    await settle('connected over SSE', () => client.state === 'connected');
    assert.equal(client.transport, 'sse');
    assert.equal(FakeSocket.instances.length, 2);
    return fellBackAt;
  }

  it("'auto' on SSE probes WebSocket after websocketRetryMs and moves back once the upgrade works", async () => {
    const hub = new FakeSseHub();
    const client = autoClient(hub);
    const fellBackAt = await fallenBackToSse(client, hub);
    mock.timers.tick(fellBackAt + 20_000 - 1 - Date.now());
    await flush();
    assert.equal(FakeSocket.instances.length, 2, 'no probe before websocketRetryMs');
    mock.timers.tick(1);
    assert.equal(FakeSocket.instances.length, 3, 'a probe at websocketRetryMs');
    const probe = FakeSocket.last;
    assert.deepEqual(probe.protocols, ['hub.v1.json']);
    probe.accept(); // the upgrade works now
    assert.deepEqual(probe.closedByClient, { code: 1000, reason: 'probe' });
    await settle('a real WebSocket connection', () => FakeSocket.instances.length === 4);
    assert.equal(hub.requests.length, 2, 'no new SSE stream');
    FakeSocket.last.handshake();
    assert.equal(client.state, 'connected');
    assert.equal(client.transport, 'websocket');
    client.disconnect();
  });

  it("'auto' stays on SSE when the probe fails and probes again after websocketRetryMs", async () => {
    const hub = new FakeSseHub();
    const client = autoClient(hub);
    const fellBackAt = await fallenBackToSse(client, hub);
    mock.timers.tick(fellBackAt + 20_000 - Date.now());
    assert.equal(FakeSocket.instances.length, 3, 'the first probe');
    FakeSocket.last.serverClose(1006); // still refused: the timer starts again from here
    await flush();
    assert.equal(client.state, 'connected');
    assert.equal(client.transport, 'sse');
    assert.equal(hub.requests.length, 2, 'the SSE connection was left alone');
    mock.timers.tick(19_999);
    assert.equal(FakeSocket.instances.length, 3, 'no second probe before websocketRetryMs');
    mock.timers.tick(1);
    assert.equal(FakeSocket.instances.length, 4, 'the timer was re-armed: a second probe');
    FakeSocket.last.accept();
    await settle('a real WebSocket connection', () => FakeSocket.instances.length === 5);
    FakeSocket.last.handshake();
    assert.equal(client.transport, 'websocket');
    client.disconnect();
  });

  it("'auto' keeps probing WebSocket after disconnect() and connect() on SSE", async () => {
    const hub = new FakeSseHub();
    const client = autoClient(hub);
    await fallenBackToSse(client, hub);
    client.disconnect();
    client.connect();
    await settle('the SSE stream again', () => hub.requests.length === 4);
    assert.equal(FakeSocket.instances.length, 2, 'still on SSE');
    mock.timers.tick(19_999);
    assert.equal(FakeSocket.instances.length, 2, 'no probe before websocketRetryMs');
    mock.timers.tick(1);
    assert.equal(FakeSocket.instances.length, 3, 'a probe websocketRetryMs after connect()');
    client.disconnect();
  });

  it("'auto' once WebSocket has worked needs ten times sseFallbackAfter failures in a row", async () => {
    const hub = new FakeSseHub();
    const client = autoClient(hub);
    client.connect();
    await settle('the first WebSocket', () => FakeSocket.instances.length === 1);
    FakeSocket.last.handshake(); // WebSocket works in this client
    assert.equal(client.transport, 'websocket');
    FakeSocket.last.serverClose(1006); // then the hub goes away (a restart looks the same as a proxy)
    for (let failure = 1; failure <= 20; failure++) {
      mock.timers.tick(2);
      await settle(`WebSocket attempt ${failure}`, () => FakeSocket.instances.length === 1 + failure);
      assert.equal(hub.requests.length, 0, `still WebSocket after ${failure - 1} failures`);
      FakeSocket.last.serverClose(failure % 2 === 0 ? 4000 : 1006); // 4000 (no ping) counts too
    }
    mock.timers.tick(2);
    await settle('the SSE stream after 20 failures', () => hub.requests.length === 2);
    assert.equal(FakeSocket.instances.length, 21, 'no 21st WebSocket attempt');
    hub.write('event: hub.stream\ndata: {"stream":"s.r","secret":"k"}\n\n');
    hub.event(connectedFrame);
    await settle('connected over SSE', () => client.state === 'connected');
    assert.equal(client.transport, 'sse');
    client.disconnect();
  });
});
