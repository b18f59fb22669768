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
  active: [],          // top-level open alarms, derived by nest(); groups carry `members`
  activeLoaded: false,
  activeAt: null,
  suppressions: [],
  devices: [],
  deviceCounts: null,  // the server's per-kind counts (used while the list is empty)
  devicesAt: null,
  deviceIndex: new Map(), // "site/id" -> device, for the marks on alarm rows
  buses: [],
  routes: [],
  zones: [],
  badWeather: false,
  busReport: null,
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

// Why the page fetched everything, counted for the browser tests: the alarm
// list is fetched only at boot, when the stream (re)opens or lagged, and by
// the slow poll — never for an alarm event or an action. Counts only.
const refetches = { boot: 0, reconnect: 0, lagged: 0, poll: 0 };
window.__campusgwRefetches = refetches;

/** Fetches every part afresh; `why` is one of `refetches`' keys. */
export function refreshAll(why) {
  if (why in refetches) refetches[why] += 1;
  refreshActive();
  refreshSuppressions();
  refreshDevices();
  refreshBuses();
}

// ---------------------------------------------------------------------
// Open alarms. The stream's `alarm` events are the source of truth: each is
// applied once, here, to a flat map of the open alarms (as the server keeps
// them), and `state.active` is derived from it the way GET /api/alarms
// nests them — flood members in their group, covered alarms under their
// cover. The list is fetched only to start again from the server's word.

let open = new Map(); // id -> alarm (flat: no `members`, no `covers`)
// Ids closed since the last fetch: an id does not open again while the
// gateway runs, so a late action answer cannot bring a closed alarm back.
// Forgotten at every fetch: a gateway whose store was wiped numbers its
// alarms from 1 again, and a new alarm must never be taken for a closed one.
const closed = new Set();
const CLOSED_CAP = 5000;
// Changes taken while the list is being fetched, applied again over the
// answer (which may predate them); null when no fetch is under way.
let replay = null;
const REPLAY_CAP = 10000;

let activeInFlight = false;
let activeAgain = false;

/** The server's time of an alarm's last change, 0 when it says none. */
const updatedAt = (a) => ms(a.updated_at) || 0;

/** The alarm without the nesting of a list answer. */
function flat(a) {
  const { members, covers, ...rest } = a;
  return rest;
}

/**
 * Takes one changed alarm; false when it is older than what is known (an
 * action's answer that arrives after a later stream event) or closed.
 */
function take(c) {
  if (!c || typeof c.id !== 'number' || closed.has(c.id)) return false;
  const known = open.get(c.id);
  if (known && updatedAt(c) < updatedAt(known)) return false;
  if (c.state === 'cleared') {
    open.delete(c.id);
    closed.add(c.id);
    if (closed.size > CLOSED_CAP) closed.delete(closed.values().next().value);
  } else {
    open.set(c.id, flat(c));
  }
  return true;
}

/** `state.active` from the flat map, nested as the server nests the list. */
function nest() {
  const members = new Map(); // group id -> members
  const covers = new Map();  // cover id -> covered alarms
  const add = (m, k, a) => { if (m.has(k)) m.get(k).push(a); else m.set(k, [a]); };
  // As the server nests (web/api.rs nest): an alarm goes under an open
  // group, or under an open cover that is itself a row; otherwise it is a
  // row of its own, so no open alarm is ever left where no row shows it.
  const groupOf = (a) => (a.group != null && open.get(a.group)?.is_group ? a.group : null);
  const isRowCover = (c) => !!c && !c.is_group && groupOf(c) == null
    && !(c.inhibited_by != null && open.has(c.inhibited_by));
  const top = [];
  for (const a of open.values()) {
    const g = groupOf(a);
    if (g != null) add(members, g, a);
    else if (!a.is_group && a.inhibited_by != null && isRowCover(open.get(a.inhibited_by))) add(covers, a.inhibited_by, a);
    else top.push(a);
  }
  state.active = top.map((a) => {
    const v = { ...a };
    if (a.is_group) v.members = members.get(a.id) || [];
    if (covers.has(a.id)) v.covers = covers.get(a.id);
    return v;
  });
}

/** Fetches the open alarms and starts again from them. */
export async function refreshActive() {
  if (!state.me) return;
  if (activeInFlight) { activeAgain = true; return; }
  activeInFlight = true;
  replay = [];
  try {
    const data = await api('/api/alarms?state=active');
    if (!state.me) return;
    const list = Array.isArray(data && data.alarms) ? data.alarms : [];
    const initial = !state.activeLoaded;
    const next = new Map();
    closed.clear();
    for (const a of list) {
      for (const x of [a, ...(a.members || []), ...(a.covers || [])]) {
        if (typeof x.id !== 'number') continue;
        // A change the stream brought after the server took this answer stays.
        const known = open.get(x.id);
        next.set(x.id, known && updatedAt(known) > updatedAt(x) ? known : flat(x));
      }
    }
    open = next;
    // Changes since the request went out; those the answer already has are
    // not older than it, so taking them again changes nothing.
    for (const c of replay) take(c);
    nest();
    state.activeLoaded = true;
    state.activeAt = Date.now();
    emit('alarms', { changed: state.active, silent: initial, prune: true });
  } catch { /* shown by the banner; retried on reconnect or poll */ }
  finally {
    replay = null;
    activeInFlight = false;
    if (activeAgain) { activeAgain = false; refreshActive(); }
  }
}

/**
 * Applies alarms the server says changed (stream events, action answers),
 * each once; the list is not fetched for them.
 */
export function applyAlarms(changed) {
  if (replay) {
    if (replay.length + changed.length <= REPLAY_CAP) replay.push(...changed);
    else activeAgain = true; // too much to replay: fetch once more after this one
  }
  const taken = changed.filter(take);
  if (!taken.length) return;
  nest();
  // Members too: an alarm joining a flood group is announced like any new one.
  emit('alarms', { changed: taken, silent: !state.activeLoaded, prune: false });
}

/** Forgets the alarms (signed out). */
export function resetAlarms() {
  open = new Map();
  closed.clear();
  state.active = [];
  state.activeLoaded = false;
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
    state.buses = (Array.isArray(data && data.buses) ? data.buses : []).map(busCompliance);
    // The route file's routes and zones, WGS-84 [lon, lat] → the drawing's [lat, lon].
    const flip = (c) => (Array.isArray(c) ? c.map(([lon, lat]) => [lat, lon]) : []);
    state.routes = (Array.isArray(data && data.routes) ? data.routes : []).map((r) => ({
      id: r.route_id, name: null, corridor_m: r.corridor_m, points: flip(r.coordinates),
      stops: Array.isArray(r.stops) ? r.stops : [],
    }));
    state.zones = (Array.isArray(data && data.zones) ? data.zones : []).map((z) => ({
      zone: z.zone, limit: z.speed_limit_kmh, points: flip(z.coordinates),
    }));
    state.badWeather = !!(data && data.bad_weather);
    state.busesAt = Date.now();
    emit('buses');
  } catch { /* retried later */ }
  try {
    // The day's report (local date of the school): what the transport officer signs off.
    state.busReport = await api('/api/reports/bus');
    emit('buses');
  } catch { state.busReport = null; }
}

/** The checker's view of a bus → the page's compliance: ok, or the episodes going on. */
function busCompliance(b) {
  const c = b && b.compliance;
  if (!c) return { ...b, compliance: null };
  const open = Array.isArray(c.open) ? c.open : [];
  return {
    ...b,
    compliance: {
      state: open.length ? open[0] : (c.trip ? 'ok' : 'idle'),
      open,
      trip: c.trip || null,
      detail: c.trip ? c.trip.route : null,
    },
  };
}
