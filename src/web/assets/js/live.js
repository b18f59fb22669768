/*
 * The live event stream (`/api/stream`). EventSource reconnects by itself
 * after a network error; after an HTTP error (session ended, proxy 502) it
 * gives up, so then the session is checked and a new stream opened.
 */

import { t } from './i18n.js';
import { $, fmtClock, later } from './dom.js';
import { api, sessionLost } from './api.js';
import { state, refreshAll, refreshBuses, mergeAlarms, scheduleActiveRefetch } from './store.js';
import { onDeviceEvent } from './views/devices.js';
import { onBusEvent } from './views/buses.js';

let stream = null;
let streamRetry = null;

export function connectStream() {
  stopStream();
  const es = new EventSource('/api/stream');
  stream = es;
  es.addEventListener('open', () => {
    if (stream !== es) return;
    setConnected(true);
    // Whatever happened while we were away (or before the stream was up)
    // is fetched afresh; the stream carries only changes.
    refreshAll();
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
  es.addEventListener('lagged', () => refreshAll());
  es.addEventListener('alarm', (e) => {
    const data = parse(e.data);
    if (data && data.alarm) {
      mergeAlarms([data.alarm]);
      if (data.alarm.kind === 'bus') later('bus-refetch', refreshBuses, 1000);
    }
    scheduleActiveRefetch();
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
