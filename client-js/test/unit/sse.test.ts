// The SSE transport and the automatic fallback, with a fake WebSocket and a fake fetch (the test plays the hub).
import assert from 'node:assert/strict';
import { beforeEach, describe, it } from 'node:test';
import { HubClient } from '../../src/client.js';
import { SseTransport, defaultSseUrl, eventId } from '../../src/sse-transport.js';
import type { RawFrame } from '../../src/frames.js';
import { FakeSocket, fakeJwt } from './fake-ws.js';

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

describe('HubClient transport choice', () => {
  it("'auto' falls back to SSE after two failed upgrades; the app sees the same events", async () => {
    const hub = new FakeSseHub();
    const client = new HubClient({
      url: 'ws://hub.test/ws',
      getToken: token,
      WebSocket: FakeSocket,
      fetch: hub.fetch,
      watchBrowser: false,
      reconnectBaseMs: 1,
      reconnectMaxMs: 2,
    });
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
