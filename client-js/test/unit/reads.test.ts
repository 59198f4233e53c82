import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it, mock } from 'node:test';
import { HubClient } from '../../src/client.js';
import { MAX_READ_OFFSETS, ReadTracker } from '../../src/reads.js';
import type { UnreadEvent } from '../../src/reads.js';
import { FakeSocket, fakeJwt, flush, notification } from './fake-ws.js';

beforeEach(() => {
  FakeSocket.reset();
  mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 1_700_000_000_000 });
});

afterEach(() => {
  mock.timers.reset();
});

async function connectedClient(extra: Record<string, unknown>): Promise<{ client: HubClient; ws: FakeSocket; unread: UnreadEvent[]; reads: unknown[] }> {
  const client = new HubClient({
    url: 'ws://hub.test/ws',
    getToken: async () => fakeJwt({ sub: '42', exp: Math.floor(Date.now() / 1000) + 3600 }),
    WebSocket: FakeSocket,
    watchBrowser: false,
  });
  const unread: UnreadEvent[] = [];
  const reads: unknown[] = [];
  client.on('unread', (u) => unread.push(u));
  client.on('read', (r) => reads.push(r));
  client.connect();
  await flush();
  const ws = FakeSocket.last;
  ws.handshake(extra);
  return { client, ws, unread, reads };
}

describe('read state in HubClient', () => {
  it('takes counts from connected, counts new notifications, replaces them with read frames', async () => {
    const { client, ws, unread, reads } = await connectedClient({ offsets: { 'user.42': '5-0' }, unread: { 'user.42': 2 } });
    assert.deepEqual(client.unread, { 'user.42': 2 });
    assert.deepEqual(unread.at(-1), { topic: 'user.42', unread: 2, counts: { 'user.42': 2 } });
    ws.push(notification('4-0')); // replayed, counted in connected already
    ws.push(notification('6-0'));
    assert.equal(client.unread['user.42'], 3);
    ws.push({ type: 'read', topic: 'user.42', up_to: '5-0', offsets: ['6-0'], unread: 0 });
    assert.deepEqual(reads, [{ topic: 'user.42', up_to: '5-0', offsets: ['6-0'], unread: 0 }]);
    assert.equal(client.unread['user.42'], 0);
    assert.ok(client.isRead({ topic: 'user.42', offset: '4-0' }));
    assert.ok(client.isRead({ topic: 'user.42', offset: '6-0' }));
    assert.ok(!client.isRead({ topic: 'user.42', offset: '7-0' }));
    ws.push(notification('7-0'));
    assert.equal(client.unread['user.42'], 1);
  });

  it('sends read frames for the own topic, a notification or explicit offsets', async () => {
    const { client, ws } = await connectedClient({ unread: { 'user.42': 0 } });
    assert.ok(client.markRead({ upTo: '9-0' }));
    assert.ok(client.markRead({ id: 'n', topic: 'user.42', offset: '3-1' }));
    assert.ok(client.markRead({ topic: 'team.1', offsets: ['1-0', '2-0'] }));
    const sent = ws.sent.filter((f) => f['type'] === 'read');
    assert.deepEqual(sent, [
      { type: 'read', topic: 'user.42', up_to: '9-0' },
      { type: 'read', topic: 'user.42', offsets: ['3-1'] },
      { type: 'read', topic: 'team.1', offsets: ['1-0', '2-0'] },
    ]);
    assert.throws(() => client.markRead({ offsets: new Array(MAX_READ_OFFSETS + 1).fill('1-0') }), TypeError);
    assert.throws(() => client.markRead({}), TypeError);
  });

  it('ignores malformed read frames and keeps counts empty on a hub without read state', async () => {
    const { client, ws, reads } = await connectedClient({});
    assert.deepEqual(client.unread, {});
    ws.push({ type: 'read', topic: 'user.42', up_to: 5, offsets: [], unread: 1 });
    assert.deepEqual(reads, []);
    ws.push(notification('1-0'));
    assert.deepEqual(client.unread, {});
    assert.equal(client.markRead({ upTo: '1-0' }), false, 'no read state: nothing sent');
    assert.ok(!ws.sent.some((f) => f['type'] === 'read'));
    assert.equal(new ReadTracker().supported, false);
  });
});
