/** Callbacks for the browser signals the client follows. */
export interface BrowserSignals {
  online(): void;
  offline(): void;
  /** The page became visible again. */
  visible(): void;
}

/**
 * Listens to `online` / `offline` on window and `visibilitychange` on
 * document, where they exist (no-ops elsewhere, e.g. in node).
 */
export class BrowserWatch {
  private attached = false;
  private readonly onOnline = (): void => this.signals.online();
  private readonly onOffline = (): void => this.signals.offline();
  private readonly onVisibility = (): void => {
    if (typeof document !== 'undefined' && document.visibilityState === 'visible') this.signals.visible();
  };

  constructor(private readonly signals: BrowserSignals) {}

  /** True when the browser says it has no network. */
  isOffline(): boolean {
    return typeof navigator !== 'undefined' && navigator.onLine === false;
  }

  attach(): void {
    if (this.attached) return;
    this.attached = true;
    if (typeof window !== 'undefined' && typeof window.addEventListener === 'function') {
      window.addEventListener('online', this.onOnline);
      window.addEventListener('offline', this.onOffline);
    }
    if (typeof document !== 'undefined' && typeof document.addEventListener === 'function') {
      document.addEventListener('visibilitychange', this.onVisibility);
    }
  }

  detach(): void {
    if (!this.attached) return;
    this.attached = false;
    if (typeof window !== 'undefined' && typeof window.removeEventListener === 'function') {
      window.removeEventListener('online', this.onOnline);
      window.removeEventListener('offline', this.onOffline);
    }
    if (typeof document !== 'undefined' && typeof document.removeEventListener === 'function') {
      document.removeEventListener('visibilitychange', this.onVisibility);
    }
  }
}
