/*
 * What the page knows: the signed-in user, the open alarms, zones, devices,
 * buses and history, how alarms rank, and the fetches that fill it. The
 * store touches no element: whoever shows a part subscribes with `on(part,
 * fn)` and is called after it changed ('alarms' with what changed,
 * 'suppressions', 'devices', 'buses').
 */

import { api } from './api.js';
import { ms, sevRank } from './dom.js';

const listeners = new Map(); // part -> [fn]

/** Calls `fn(detail)` whenever `part` changed. */
export function on(part, fn) {
  if (!listeners.has(part)) listeners.set(part, []);
  listeners.get(part).push(fn);
}

function emit(part, detail) {
  for (const fn of listeners.get(part) || []) fn(detail);
}

export const state = {
  me: null,
  active: [],          // top-level open alarms; groups carry `members`
  activeLoaded: false,
  activeAt: null,
  suppressions: [],
  devices: [],
  deviceCounts: null,  // the server's per-kind counts (used while the list is empty)
  devicesAt: null,
  deviceIndex: new Map(), // "site/id" -> device, for the marks on alarm rows
  buses: [],
  routes: [],
  busesAt: null,
  history: [],
  historyFetched: 0,
  historyLimit: 200,
  expanded: new Set(), // flood groups opened by the user
  lastState: new Map(), // alarm id -> state at the last look (new-critical detection)
  connected: true,
  lostSince: null,
  sessionLost: false, // signed out by the server, not by the user: sounds like a lost connection
};

export const canAct = () => !!state.me && (state.me.role === 'operator' || state.me.role === 'admin');

export const isQuiet = (a) => a.state === 'shelved' || !!a.suppressed;
export const needsAck = (a) => a.state === 'unacked' || a.state === 'cleared_unacked';

/**
 * What needs a person first: unacknowledged active alarms, then
 * acknowledged active ones (being handled), then cleared ones still
 * waiting for acknowledgement (over, but nobody has seen them).
 */
function stateRank(a) {
  switch (a.state) {
    case 'unacked': return 0;
    case 'acked': return 1;
    case 'cleared_unacked': return 2;
    default: return 3;
  }
}

/** By state (above), then critical first, then newest first. */
export function byUrgency(a, b) {
  return stateRank(a) - stateRank(b) || sevRank(a.severity) - sevRank(b.severity) ||
    (ms(b.raised_at) || 0) - (ms(a.raised_at) || 0) || b.id - a.id;
}

/**
 * A device that is not in the configuration: its place is unknown and its
 * messages may be spoofed. The alarm says so itself (`declared`); for an
 * alarm without the field the device list answers. Unknown is not marked.
 */
export function isUndeclared(a) {
  if (a.declared === false) return true;
  if (a.declared !== undefined || !a.device || a.device === '*') return false;
  const d = state.deviceIndex.get(`${a.site}/${a.device}`);
  return !!d && d.declared === false;
}

/** Top-level alarms with the members of flood groups in place of the groups that list them. */
export function flatAlarms(list) {
  const out = [];
  for (const a of list) {
    if (a.is_group && Array.isArray(a.members) && a.members.length) out.push(...a.members);
    else out.push(a);
  }
  return out;
}

/**
 * 首警, the first alarm of the current incident. The incident is what is
 * burning and not yet handled: the unacknowledged, active, unsuppressed
 * alarms of the highest severity among them; its first alarm is the
 * earliest raised of those (a fire's first detector is where it started).
 * The severity keeps last week's low battery from being pinned above a
 * fire; an old unacknowledged alarm of that severity does count: until
 * someone acknowledges it, the incident it began is not handled. Members of
 * flood groups count, group rows do not (they have no place of their own).
 */
export function firstAlarm(main) {
  const burning = flatAlarms(main).filter((a) => !isQuiet(a) && !a.is_group && a.state === 'unacked' && a.active !== false);
  if (!burning.length) return null;
  const top = Math.min(...burning.map((a) => sevRank(a.severity)));
  return burning.filter((a) => sevRank(a.severity) === top)
    .sort((a, b) => (ms(a.raised_at) || 0) - (ms(b.raised_at) || 0) || a.id - b.id)[0];
}

// ---------------------------------------------------------------------
// Fetching. Each refresher swallows network errors: the banner already
// says the connection is down, and the next reconnect fetches again.

export function refreshAll() {
  refreshActive();
  refreshSuppressions();
  refreshDevices();
  refreshBuses();
}

let activeInFlight = false;
let activeAgain = false;

export async function refreshActive() {
  if (!state.me) return;
  if (activeInFlight) { activeAgain = true; return; }
  activeInFlight = true;
  try {
    const data = await api('/api/alarms?state=active');
    if (!state.me) return;
    const list = Array.isArray(data && data.alarms) ? data.alarms : [];
    const initial = !state.activeLoaded;
    state.active = list;
    state.activeLoaded = true;
    state.activeAt = Date.now();
    emit('alarms', { changed: list, silent: initial, prune: true });
  } catch { /* shown by the banner; retried on reconnect or poll */ }
  finally {
    activeInFlight = false;
    lastActiveFetch = Date.now();
    if (activeAgain) { activeAgain = false; scheduleActiveRefetch(); }
  }
}

// Alarm events can come in bursts (a flood): refetch at most four times a
// second, and always once more after the last event.
let activeTimer = null;
let lastActiveFetch = 0;

export function scheduleActiveRefetch() {
  if (activeTimer) return;
  const wait = Math.max(0, lastActiveFetch + 250 - Date.now());
  activeTimer = setTimeout(() => { activeTimer = null; refreshActive(); }, wait);
}

export async function refreshSuppressions() {
  if (!state.me) return;
  try {
    const data = await api('/api/suppressions');
    state.suppressions = Array.isArray(data && data.suppressions) ? data.suppressions : [];
    emit('suppressions');
  } catch { /* retried later */ }
}

export async function refreshDevices() {
  if (!state.me) return;
  try {
    const data = await api('/api/devices');
    state.devices = Array.isArray(data && data.devices) ? data.devices : [];
    state.deviceIndex = new Map(state.devices.map((d) => [`${d.site}/${d.id}`, d]));
    state.deviceCounts = (data && data.counts) || null;
    state.devicesAt = Date.now();
    emit('devices');
  } catch { /* retried later */ }
}

export async function refreshBuses() {
  if (!state.me) return;
  try {
    const data = await api('/api/buses');
    state.buses = Array.isArray(data && data.buses) ? data.buses : [];
    state.routes = Array.isArray(data && data.routes) ? data.routes : [];
    state.busesAt = Date.now();
    emit('buses');
  } catch { /* retried later */ }
}

/** Applies alarms the server says changed (action answers, stream events). */
export function mergeAlarms(changed) {
  for (const c of changed) {
    // Covered by another alarm of the same device: kept in that one's row.
    const cover = c.inhibited_by != null ? state.active.find((a) => a.id === c.inhibited_by) : null;
    if (cover) {
      const covers = (cover.covers = cover.covers || []);
      const i = covers.findIndex((m) => m.id === c.id);
      if (c.state === 'cleared') { if (i >= 0) covers.splice(i, 1); }
      else if (i >= 0) covers[i] = c;
      else covers.push(c);
      const at = state.active.findIndex((a) => a.id === c.id);
      if (at >= 0) state.active.splice(at, 1);
      continue;
    }
    const top = state.active.findIndex((a) => a.id === c.id);
    if (top >= 0) {
      // Cleared alarms leave the list; one just folded into a flood group
      // reappears inside it with the refetch that follows every change.
      if (c.state === 'cleared' || (c.group !== null && c.group !== undefined)) state.active.splice(top, 1);
      else state.active[top] = { ...c, members: c.members || state.active[top].members, covers: c.covers || state.active[top].covers };
      continue;
    }
    if (c.group !== null && c.group !== undefined) {
      const g = state.active.find((a) => a.id === c.group);
      if (g && Array.isArray(g.members)) {
        const i = g.members.findIndex((m) => m.id === c.id);
        if (c.state === 'cleared') { if (i >= 0) g.members.splice(i, 1); }
        else if (i >= 0) g.members[i] = c;
        else g.members.push(c);
      }
      continue;
    }
    if (c.state !== 'cleared') state.active.push(c.is_group && !c.members ? { ...c, members: [] } : c);
  }
  // Members too: an alarm joining a flood group is announced like any new one.
  emit('alarms', { changed, silent: !state.activeLoaded, prune: false });
}
