/*
 * The live event stream (`/api/stream`). EventSource reconnects by itself
 * after a network error; after an HTTP error (session ended, proxy 502) it
 * gives up, so then the session is checked and a new stream opened.
 */

import { t } from './i18n.js';
import { $, fmtClock, later } from './dom.js';
import { api, sessionLost } from './api.js';
import { state, refreshAll, refreshBuses, applyAlarms } from './store.js';
import { onDeviceEvent } from './views/devices.js';
import { onBusEvent } from './views/buses.js';

// Events taken, counted for the browser tests. Counts only.
const taken = { alarm: 0, lagged: 0, opened: 0 };
window.__campusgwStream = taken;

let stream = null;
let streamRetry = null;

export function connectStream() {
  stopStream();
  const es = new EventSource('/api/stream');
  stream = es;
  es.addEventListener('open', () => {
    if (stream !== es) return;
    taken.opened += 1;
    setConnected(true);
    // Whatever happened while we were away (or before the stream was up)
    // is fetched afresh; the stream carries only changes.
    refreshAll('reconnect');
  });
  es.addEventListener('error', () => {
    if (stream !== es) return;
    setConnected(false);
    if (es.readyState === EventSource.CLOSED) {
      stopStream();
      streamRetry = setTimeout(async () => {
        streamRetry = null;
        try {
          await api('/api/me');
          if (state.me) connectStream();
        } catch (err) {
          if (err.status === 401) sessionLost();
          else if (state.me) connectStream();
        }
      }, 5000);
    }
  });
  // Events were dropped for this page: only a fresh list can be trusted.
  es.addEventListener('lagged', () => { taken.lagged += 1; refreshAll('lagged'); });
  es.addEventListener('alarm', (e) => {
    const data = parse(e.data);
    if (!data || !data.alarm) return;
    taken.alarm += 1;
    // The change itself, once: a flood group's own change comes as an event
    // too (its count, places, last raise), so nothing is refetched for it.
    applyAlarms([data.alarm]);
    // A bus's compliance is in the bus list, which the event does not carry.
    if (data.alarm.kind === 'bus') later('bus-refetch', refreshBuses, 1000);
  });
  es.addEventListener('devices', (e) => { for (const d of parse(e.data) || []) onDeviceEvent(d); });
  es.addEventListener('bus', (e) => { const d = parse(e.data); if (d) onBusEvent(d); });
}

function parse(text) {
  try { return JSON.parse(text); } catch { return null; }
}

export function stopStream() {
  if (streamRetry) { clearTimeout(streamRetry); streamRetry = null; }
  if (stream) { stream.close(); stream = null; }
}

export function setConnected(ok) {
  if (ok === state.connected) return;
  state.connected = ok;
  state.lostSince = ok ? null : Date.now();
  $('connection-banner').hidden = ok;
  document.body.classList.toggle('disconnected', !ok);
  $('connection-detail').textContent = ok ? '' : t('conn.since', { t: fmtClock(new Date()) });
}
