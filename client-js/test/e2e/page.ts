// The page the end-to-end tests drive: the shipped IIFE bundle plus a recorder of what happens.
export const TEST_PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>hub-client e2e</title><link rel="icon" href="data:,"></head>
<body>
<script src="/hub-client.js"></script>
<script>
  'use strict';
  const { HubClient, jsonCodec, msgpackCodec } = window.NotificationHub;
  const t = (window.t = { notes: [], states: [], connected: [], gaps: [], errors: [], closes: [], inbound: [], outbound: [], sockets: [], tokenCalls: 0 });

  // A WebSocket that records the type of every frame each way (and is what the client gets injected).
  class RecordingWebSocket extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      t.sockets.push(this);
      this.addEventListener('message', (ev) => {
        try { t.inbound.push(this.codec().decode(ev.data).type); } catch (e) { t.inbound.push('undecodable'); }
      });
    }
    codec() { return this.protocol === 'hub.v1.msgpack' ? msgpackCodec : jsonCodec; }
    send(data) {
      const frame = this.codec().decode(data);
      t.outbound.push(frame.type === 'connect' ? { type: 'connect', since: frame.since || null } : { type: frame.type });
      super.send(data);
    }
  }

  window.start = (opts) => {
    const client = new HubClient({
      url: opts.url,
      protocol: opts.protocol || 'json',
      storage: opts.storage || 'memory',
      refreshLeadMs: opts.refreshLeadMs ?? 30000,
      reconnectBaseMs: 200,
      reconnectMaxMs: 2000,
      WebSocket: RecordingWebSocket,
      transport: opts.transport || 'auto',
      sseFallbackAfter: opts.sseFallbackAfter ?? 2,
      getToken: async () => { t.tokenCalls++; return window.e2eToken(opts.user); },
    });
    client.on('notification', (n) => t.notes.push(n));
    client.on('state', (s) => t.states.push(s.state));
    client.on('connected', (c) => t.connected.push(c));
    client.on('gap', (g) => t.gaps.push(g.topics));
    client.on('error', (e) => t.errors.push({ kind: e.kind, code: e.code, message: e.message, fatal: e.fatal }));
    client.on('disconnected', (d) => t.closes.push(d));
    window.client = client;
    client.connect();
  };

  /** Kills the current socket under the client (as a network blip would), without telling it. */
  window.dropSocket = () => t.sockets[t.sockets.length - 1].close(4999, 'e2e drop');
</script>
</body></html>`;
