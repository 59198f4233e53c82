/**
 * Offsets are strings `<milliseconds>-<sequence>` (docs/protocol.md §5). They are
 * ordered by comparing both numbers as integers; apart from that order the
 * client treats them as opaque.
 */
const OFFSET_RE = /^(\d+)-(\d+)$/;

/** Compares two non-negative decimal integers given as digit strings, of any size. */
function compareDigits(a: string, b: string): number {
  const x = a.replace(/^0+(?=\d)/, '');
  const y = b.replace(/^0+(?=\d)/, '');
  if (x.length !== y.length) return x.length < y.length ? -1 : 1;
  return x < y ? -1 : x > y ? 1 : 0;
}

/**
 * Orders two offsets.
 *
 * @returns a negative number, 0 or a positive number as `a` is before, equal
 *   to or after `b`; `null` when either is not of the `<ms>-<seq>` form and
 *   they are not the same string (no order can be known).
 */
export function compareOffsets(a: string, b: string): number | null {
  if (a === b) return 0;
  const ma = OFFSET_RE.exec(a);
  const mb = OFFSET_RE.exec(b);
  if (!ma || !mb) return null;
  return compareDigits(ma[1]!, mb[1]!) || compareDigits(ma[2]!, mb[2]!);
}

/** Where the last offset seen per topic is kept between connections. */
export interface OffsetStorage {
  load(): StoredOffsets | null;
  save(value: StoredOffsets): void;
  clear(): void;
}

/** What is persisted: whose offsets they are, and the last offset per topic. */
export interface StoredOffsets {
  user: string | null;
  offsets: Record<string, string>;
}

/** Keeps offsets for the life of the client object only. */
export class MemoryStorage implements OffsetStorage {
  private value: StoredOffsets | null = null;
  load(): StoredOffsets | null {
    return this.value ? { user: this.value.user, offsets: { ...this.value.offsets } } : null;
  }
  save(value: StoredOffsets): void {
    this.value = { user: value.user, offsets: { ...value.offsets } };
  }
  clear(): void {
    this.value = null;
  }
}

/**
 * Keeps offsets in a Web Storage object (sessionStorage: one per tab, kept
 * across a reload) so a reloaded page resumes where it was. Storage failures
 * (quota, privacy mode, a corrupt entry) degrade to "nothing stored".
 */
export class WebStorage implements OffsetStorage {
  constructor(
    private readonly storage: Storage,
    private readonly key: string,
  ) {}

  load(): StoredOffsets | null {
    try {
      const raw = this.storage.getItem(this.key);
      if (!raw) return null;
      const parsed: unknown = JSON.parse(raw);
      if (!isStoredOffsets(parsed)) return null;
      return parsed;
    } catch {
      return null;
    }
  }

  save(value: StoredOffsets): void {
    try {
      this.storage.setItem(this.key, JSON.stringify(value));
    } catch {
      // Quota exceeded or storage disabled: recovery then works within this page only.
    }
  }

  clear(): void {
    try {
      this.storage.removeItem(this.key);
    } catch {
      // ignore: see save()
    }
  }
}

function isStoredOffsets(v: unknown): v is StoredOffsets {
  if (typeof v !== 'object' || v === null) return false;
  const o = v as { user?: unknown; offsets?: unknown };
  if (!(o.user === null || typeof o.user === 'string')) return false;
  if (typeof o.offsets !== 'object' || o.offsets === null) return false;
  return Object.values(o.offsets).every((x) => typeof x === 'string');
}

/**
 * The last offset seen per topic, with de-duplication.
 *
 * A notification whose offset is not after the topic's last one is a
 * duplicate (a replay overlapping the live stream, or a redelivery) and is
 * dropped. Notifications without an offset (history off on the hub) are
 * always accepted.
 */
export class OffsetTracker {
  private user: string | null = null;
  private offsets: Record<string, string> = {};

  constructor(private readonly storage: OffsetStorage) {
    const stored = storage.load();
    if (stored) {
      this.user = stored.user;
      this.offsets = { ...stored.offsets };
    }
  }

  /** The user the stored offsets belong to, if known. */
  get owner(): string | null {
    return this.user;
  }

  /** A copy of the last offset per topic. */
  snapshot(): Record<string, string> {
    return { ...this.offsets };
  }

  /** The last offset seen on a topic, if any. */
  get(topic: string): string | undefined {
    return this.offsets[topic];
  }

  /**
   * Declares whose offsets these are. A different user than the stored one
   * (another login in the same tab) discards the stored offsets.
   */
  setOwner(user: string): void {
    if (this.user !== null && this.user !== user) this.offsets = {};
    if (this.user !== user) {
      this.user = user;
      this.persist();
    }
  }

  /**
   * Takes the hub's latest offsets at connect time as the resume point for
   * topics that have none yet: what came before was not for this client.
   */
  seed(latest: Record<string, string>): void {
    let changed = false;
    for (const [topic, offset] of Object.entries(latest)) {
      if (typeof offset !== 'string' || this.offsets[topic] !== undefined) continue;
      this.offsets[topic] = offset;
      changed = true;
    }
    if (changed) this.persist();
  }

  /**
   * Records a notification's offset.
   *
   * @returns true when the notification is new and must be delivered, false
   *   when it is a duplicate (its offset is not after the last one seen).
   */
  accept(topic: string, offset: string | undefined | null): boolean {
    if (offset === undefined || offset === null || offset === '') return true;
    const last = this.offsets[topic];
    if (last !== undefined) {
      const order = compareOffsets(offset, last);
      // Unordered (opaque) offsets: only an identical one is known to be a duplicate.
      if (order === null ? offset === last : order <= 0) return false;
    }
    this.offsets[topic] = offset;
    this.persist();
    return true;
  }

  /** Forgets everything (and the stored copy). */
  reset(): void {
    this.user = null;
    this.offsets = {};
    this.storage.clear();
  }

  private persist(): void {
    this.storage.save({ user: this.user, offsets: this.offsets });
  }
}
