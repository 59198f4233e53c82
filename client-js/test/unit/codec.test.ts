import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { encode as mpEncode } from '@msgpack/msgpack';
import { SUBPROTOCOLS, codecFor, jsonCodec, msgpackCodec } from '../../src/codec.js';
import { invalidFrameReason } from '../../src/frames.js';

describe('codecs', () => {
  it('uses the v1 subprotocol names', () => {
    assert.deepEqual(SUBPROTOCOLS, { json: 'hub.v1.json', msgpack: 'hub.v1.msgpack' });
  });

  it('JSON: encodes text frames and decodes text or UTF-8 bytes', () => {
    const wire = jsonCodec.encode({ type: 'refresh', token: 't' });
    assert.equal(typeof wire, 'string');
    assert.deepEqual(JSON.parse(wire as string), { type: 'refresh', token: 't' });
    const frame = { type: 'notification', topic: 'user.1', data: { text: 'héllo ✓' } };
    assert.deepEqual(jsonCodec.decode(JSON.stringify(frame)), frame);
    assert.deepEqual(jsonCodec.decode(new TextEncoder().encode(JSON.stringify(frame)).buffer), frame);
  });

  it('msgpack: round-trips the same maps as binary frames', () => {
    const wire = msgpackCodec.encode({ type: 'connect', token: 't', since: { 'user.1': '1-0' } });
    assert.ok(wire instanceof Uint8Array);
    assert.deepEqual(msgpackCodec.decode(wire), { type: 'connect', token: 't', since: { 'user.1': '1-0' } });
    const frame = { type: 'notification', topic: 'user.1', offset: '1-2', ts: 1_700_000_000_000, data: { n: 1, bin: new Uint8Array([1, 2]) } };
    const bytes = mpEncode(frame);
    const ab = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
    assert.deepEqual(msgpackCodec.decode(ab), frame);
  });

  it('refuses payloads that are not one map with a string type, saying what came', () => {
    assert.throws(() => jsonCodec.decode('[1,2]'), /expected a map frame, got JSON array/);
    assert.throws(() => jsonCodec.decode('{"kind":"x"}'), /string "type"/);
    assert.throws(() => jsonCodec.decode('not json'), SyntaxError);
    assert.throws(() => msgpackCodec.decode(mpEncode(5)), /expected a map frame, got msgpack number/);
    assert.throws(() => msgpackCodec.decode(42), /expected a binary frame/);
  });

  it('picks the codec of the negotiated subprotocol', () => {
    assert.equal(codecFor('hub.v1.msgpack', 'json'), msgpackCodec);
    assert.equal(codecFor('hub.v1.json', 'msgpack'), jsonCodec);
    assert.equal(codecFor('', 'msgpack'), msgpackCodec);
    assert.equal(codecFor('', 'json'), jsonCodec);
  });
});

describe('frame validation', () => {
  it('accepts the hub frames and names what is wrong otherwise', () => {
    assert.equal(invalidFrameReason({ type: 'ping' }), null);
    assert.equal(invalidFrameReason({ type: 'notification', topic: 'user.1', offset: '1-0' }), null);
    assert.equal(invalidFrameReason({ type: 'notification', topic: 'user.1' }), null);
    assert.match(invalidFrameReason({ type: 'notification', topic: 'user.1', offset: 5 })!, /expected string offset, got number/);
    assert.match(invalidFrameReason({ type: 'connected', user: '1' })!, /conn_id/);
    assert.match(invalidFrameReason({ type: 'surprise' })!, /unknown frame type/);
  });
});
