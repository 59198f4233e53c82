import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decodeClaims, refreshDelay } from '../../src/jwt.js';
import { fakeJwt } from './fake-ws.js';

describe('decodeClaims', () => {
  it('reads exp, sub and topics from the base64url payload', () => {
    const token = fakeJwt({ sub: '42', exp: 1_800_000_000, topics: ['broadcast', 7], name: 'Zoë ✓ ??>' });
    assert.deepEqual(decodeClaims(token), { sub: '42', exp: 1_800_000_000, topics: ['broadcast'] });
  });

  it('accepts a numeric sub as a string', () => {
    assert.equal(decodeClaims(fakeJwt({ sub: 42 }))?.sub, '42');
  });

  it('returns null for what is not a JWT', () => {
    assert.equal(decodeClaims('opaque-token'), null);
    assert.equal(decodeClaims('a.%%%.c'), null);
    assert.equal(decodeClaims(`a.${Buffer.from('"str"').toString('base64url')}.c`), null);
  });
});

describe('refreshDelay', () => {
  const now = 1_000_000_000_000;
  it('refreshes lead ms before exp', () => {
    const token = fakeJwt({ exp: now / 1000 + 3600 });
    assert.equal(refreshDelay(token, now, 30_000), 3_570_000);
  });

  it('never earlier than half the remaining life of a short-lived token', () => {
    const token = fakeJwt({ exp: now / 1000 + 10 });
    assert.equal(refreshDelay(token, now, 30_000), 5_000);
  });

  it('is 0 for an expired token and null without exp', () => {
    assert.equal(refreshDelay(fakeJwt({ exp: now / 1000 - 5 }), now, 30_000), 0);
    assert.equal(refreshDelay(fakeJwt({ sub: '1' }), now, 30_000), null);
    assert.equal(refreshDelay('opaque', now, 30_000), null);
  });
});
