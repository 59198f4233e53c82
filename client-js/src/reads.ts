/**
 * Read state (docs/protocol.md §9): per topic, a cursor ("everything up to this
 * offset is read") plus single read marks after it, kept by the hub and synced
 * to every tab and device of the user through `read` frames.
 *
 * `ReadTracker` is pure (no socket, no timers): the client feeds it the
 * `connected` frame, each new notification and each `read` frame, and it keeps
 * the unread count per topic and answers whether a notification is read.
 */
import { compareOffsets } from './offsets.js';
import type { ConnectedFrame, ReadFrame, ReadRequestFrame } from './frames.js';

/** The most offsets one `read` frame may carry (the hub closes with 4002 past it). */
export const MAX_READ_OFFSETS = 100;

/** What to mark read: everything up to `upTo` and/or single `offsets` (topic: the user's own). */
export interface MarkReadOptions {
  topic?: string;
  upTo?: string;
  offsets?: string[];
}

/** The `unread` event: the count of one topic changed; `counts` holds every known topic. */
export interface UnreadEvent {
  topic: string;
  unread: number;
  counts: Record<string, number>;
}

/** A topic's read state as the last `read` frame said. */
export interface ReadMarks {
  upTo: string;
  offsets: string[];
}

export class ReadTracker {
  private counts: Record<string, number> = {};
  private marks = new Map<string, ReadMarks>();
  /** Offsets counted in `connected.unread`: a notification at or below is already counted. */
  private counted: Record<string, string> = {};
  private enabled = false;

  /** Whether the hub keeps read state (its `connected` frame carried `unread`). */
  get supported(): boolean {
    return this.enabled;
  }

  /** Unread count per topic. */
  get unread(): Record<string, number> {
    return { ...this.counts };
  }

  /** Takes a `connected` frame; returns the topics whose count it set. */
  connected(frame: ConnectedFrame): string[] {
    const unread = frame.unread;
    this.enabled = !!unread && typeof unread === 'object';
    if (!this.enabled || !unread) return [];
    this.counts = {};
    for (const [topic, n] of Object.entries(unread)) if (typeof n === 'number') this.counts[topic] = n;
    this.counted = { ...(frame.offsets ?? {}) };
    return Object.keys(this.counts);
  }

  /** A new notification arrived; returns true when it raised its topic's unread count. */
  notified(topic: string, offset: string | undefined): boolean {
    if (!this.enabled || offset === undefined || !(topic in this.counts)) return false;
    const before = this.counted[topic];
    if (before !== undefined && (compareOffsets(offset, before) ?? 1) <= 0) return false; // counted already
    if (this.isRead(topic, offset)) return false;
    this.counts[topic] = (this.counts[topic] ?? 0) + 1;
    return true;
  }

  /** Takes a `read` frame (the hub's word: its count replaces ours). */
  read(frame: ReadFrame): void {
    this.counts[frame.topic] = frame.unread;
    this.marks.set(frame.topic, { upTo: frame.up_to, offsets: [...frame.offsets] });
  }

  /** Whether the notification at `offset` of `topic` is known to be read. */
  isRead(topic: string, offset: string | undefined): boolean {
    const marks = this.marks.get(topic);
    if (!marks || offset === undefined) return false;
    return (compareOffsets(offset, marks.upTo) ?? 1) <= 0 || marks.offsets.includes(offset);
  }

  /** The `read` frame asking the hub to mark `options`; throws TypeError for bad input. */
  request(options: MarkReadOptions, ownTopic: string | null): ReadRequestFrame {
    const topic = options.topic ?? ownTopic;
    if (typeof topic !== 'string' || topic === '') throw new TypeError('markRead: expected a topic (not connected yet?)');
    const frame: ReadRequestFrame = { type: 'read', topic };
    if (options.upTo !== undefined) frame.up_to = options.upTo;
    if (options.offsets !== undefined) {
      if (!Array.isArray(options.offsets) || options.offsets.length > MAX_READ_OFFSETS) {
        throw new TypeError(`markRead: expected at most ${MAX_READ_OFFSETS} offsets`);
      }
      if (options.offsets.length > 0) frame.offsets = [...options.offsets];
    }
    if (frame.up_to === undefined && frame.offsets === undefined) throw new TypeError('markRead: expected upTo or offsets');
    return frame;
  }
}
