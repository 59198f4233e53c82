import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryStorage, OffsetTracker, WebStorage, compareOffsets } from '../../src/offsets.js';

class FakeStorage implements Storage {
  private readonly map = new Map<string, string>();
  get length(): number {
    return this.map.size;
  }
  clear(): void {
    this.map.clear();
  }
  getItem(key: string): string | null {
    return this.map.get(key) ?? null;
  }
  key(i: number): string | null {
    return [...this.map.keys()][i] ?? null;
  }
  removeItem(key: string): void {
    this.map.delete(key);
  }
  setItem(key: string, value: string): void {
    this.map.set(key, value);
  }
}

describe('compareOffsets', () => {
  it('compares both parts as integers, not as text', () => {
    assert.ok(compareOffsets('9-0', '10-0')! < 0);
    assert.ok(compareOffsets('1700000000000-9', '1700000000000-10')! < 0);
    assert.ok(compareOffsets('1700000000001-0', '1700000000000-99')! > 0);
    assert.equal(compareOffsets('5-3', '5-3'), 0);
    assert.equal(compareOffsets('05-3', '5-03'), 0);
  });

  it('orders sequence numbers beyond 2^53 exactly', () => {
    assert.ok(compareOffsets('1-18446744073709551614', '1-18446744073709551615')! < 0);
  });

  it('returns null when no order can be known', () => {
    assert.equal(compareOffsets('abc', '1-0'), null);
    assert.equal(compareOffsets('1-0', '1-0-0'), null);
    assert.equal(compareOffsets('x', 'x'), 0);
  });
});

describe('OffsetTracker', () => {
  it('accepts newer offsets and drops duplicates and older ones', () => {
    const t = new OffsetTracker(new MemoryStorage());
    assert.equal(t.accept('user.1', '10-0'), true);
    assert.equal(t.accept('user.1', '10-0'), false);
    assert.equal(t.accept('user.1', '9-5'), false);
    assert.equal(t.accept('user.1', '10-1'), true);
    assert.equal(t.accept('user.2', '1-0'), true, 'topics are independent');
    assert.deepEqual(t.snapshot(), { 'user.1': '10-1', 'user.2': '1-0' });
  });

  it('always accepts frames without an offset (history off)', () => {
    const t = new OffsetTracker(new MemoryStorage());
    assert.equal(t.accept('user.1', undefined), true);
    assert.equal(t.accept('user.1', undefined), true);
    assert.deepEqual(t.snapshot(), {});
  });

  it('treats unordered offsets as opaque: only an identical one is a duplicate', () => {
    const t = new OffsetTracker(new MemoryStorage());
    assert.equal(t.accept('t', 'opaque-a'), true);
    assert.equal(t.accept('t', 'opaque-a'), false);
    assert.equal(t.accept('t', 'opaque-b'), true);
  });

  it('seeds only topics not seen yet', () => {
    const t = new OffsetTracker(new MemoryStorage());
    t.accept('user.1', '5-0');
    t.seed({ 'user.1': '9-0', broadcast: '7-0' });
    assert.deepEqual(t.snapshot(), { 'user.1': '5-0', broadcast: '7-0' });
    assert.equal(t.accept('broadcast', '7-0'), false, 'the seeded offset was already out before we came');
  });

  it('discards the offsets of another user', () => {
    const t = new OffsetTracker(new MemoryStorage());
    t.setOwner('1');
    t.accept('user.1', '5-0');
    t.setOwner('1');
    assert.deepEqual(t.snapshot(), { 'user.1': '5-0' });
    t.setOwner('2');
    assert.deepEqual(t.snapshot(), {});
  });

  it('persists to web storage and resumes from it', () => {
    const storage = new FakeStorage();
    const a = new OffsetTracker(new WebStorage(storage, 'k'));
    a.setOwner('42');
    a.accept('user.42', '3-1');
    const b = new OffsetTracker(new WebStorage(storage, 'k'));
    assert.equal(b.owner, '42');
    assert.equal(b.get('user.42'), '3-1');
    b.reset();
    assert.equal(storage.getItem('k'), null);
  });

  it('ignores a corrupt or foreign stored entry, and survives a throwing storage', () => {
    const storage = new FakeStorage();
    storage.setItem('k', '{not json');
    assert.deepEqual(new OffsetTracker(new WebStorage(storage, 'k')).snapshot(), {});
    storage.setItem('k', JSON.stringify({ user: 1, offsets: { a: 2 } }));
    assert.deepEqual(new OffsetTracker(new WebStorage(storage, 'k')).snapshot(), {});
    const broken = new FakeStorage();
    broken.setItem = () => {
      throw new Error('QuotaExceededError');
    };
    const t = new OffsetTracker(new WebStorage(broken, 'k'));
    assert.equal(t.accept('user.1', '1-0'), true);
    assert.equal(t.accept('user.1', '1-0'), false, 'memory still de-duplicates');
  });
});
