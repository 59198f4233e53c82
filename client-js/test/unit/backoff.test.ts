import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fullJitterDelay } from '../../src/backoff.js';

describe('fullJitterDelay', () => {
  it('draws from [0, base * 2^n)', () => {
    assert.equal(fullJitterDelay(0, 500, 20_000, () => 0), 0);
    assert.equal(fullJitterDelay(0, 500, 20_000, () => 0.5), 250);
    assert.equal(fullJitterDelay(3, 500, 20_000, () => 0.5), 2000);
    assert.ok(fullJitterDelay(3, 500, 20_000, () => 0.999999) < 4000);
  });

  it('never exceeds the cap, however many attempts', () => {
    for (const attempt of [6, 10, 31, 1000, Number.MAX_SAFE_INTEGER]) {
      const d = fullJitterDelay(attempt, 500, 20_000, () => 0.9999999);
      assert.ok(d < 20_000 && d >= 19_000, `attempt ${attempt} gave ${d}`);
    }
  });

  it('treats negative or fractional attempts sanely and clamps a bad random source', () => {
    assert.equal(fullJitterDelay(-5, 500, 20_000, () => 0.5), 250);
    assert.equal(fullJitterDelay(1.7, 500, 20_000, () => 0.5), 500);
    assert.ok(fullJitterDelay(0, 500, 20_000, () => 1) < 500);
    assert.equal(fullJitterDelay(0, 500, 20_000, () => -1), 0);
  });

  it('spreads delays over the window (full jitter, not equal jitter)', () => {
    const samples = Array.from({ length: 2000 }, () => fullJitterDelay(4, 100, 20_000));
    assert.ok(Math.min(...samples) < 160, 'some retries come almost at once');
    assert.ok(Math.max(...samples) > 1440, 'some use nearly the whole 1600 ms window');
    assert.ok(samples.every((d) => Number.isInteger(d) && d >= 0 && d < 1600));
  });
});
