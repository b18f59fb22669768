/*
 * The devices panel: online counts per kind, the offline, low-battery and
 * undeclared devices, kept current by the stream's `devices` events.
 */

import { t } from '../i18n.js';
import { $, h, clear, ms, fmtAgo, fmtClock, fmtTime, devicePlace, kindLabel, kindShort, later, KINDS } from '../dom.js';
import { state, refreshDevices } from '../store.js';
import { renderBuses } from './buses.js';

const LOW_BATTERY_PCT = 20;
const LIST_CAP = 40; // offline / low-battery rows shown before "N more"

export function renderDevices() {
  const devices = state.devices;
  // Counts from the list itself, so that stream updates keep them right;
  // the server's counts only stand in while the list is empty.
  const counts = {};
  for (const k of KINDS) counts[k] = { online: 0, offline: 0 };
  if (devices.length) {
    for (const d of devices) {
      const c = counts[d.kind] || (counts[d.kind] = { online: 0, offline: 0 });
      c[d.online ? 'online' : 'offline'] += 1;
    }
  } else if (state.deviceCounts) {
    for (const [k, c] of Object.entries(state.deviceCounts)) counts[k] = { online: c.online || 0, offline: c.offline || 0 };
  }

  const tiles = $('device-counts');
  clear(tiles);
  for (const [kind, c] of Object.entries(counts)) {
    const total = c.online + c.offline;
    tiles.append(h('div', {
      class: `kind-tile${c.offline ? ' has-offline' : ''}${total ? '' : ' empty'}`,
      'data-testid': 'kind-tile', 'data-kind': kind, 'data-online': c.online, 'data-offline': c.offline,
    },
    h('span', { class: 'kind-name' }, kindLabel(kind)),
    h('span', { class: 'kind-online' }, h('b', null, String(c.online)), h('span', { class: 'of' }, ` / ${total} `), t('devices.online')),
    h('span', { class: 'kind-offline' },
      total === 0 ? t('devices.noDevices') : c.offline ? [h('span', { class: 'warn-glyph', 'aria-hidden': 'true' }, '⚠'), ' ', t('devices.offlineN', { n: c.offline })] : t('devices.allOnline'))));
  }

  // Offline: smoke detectors first (a silent detector protects no one),
  // then the longest silent first.
  const offline = devices.filter((d) => !d.online).sort((a, b) =>
    (a.kind === 'smoke' ? 0 : 1) - (b.kind === 'smoke' ? 0 : 1) || (ms(a.last_seen) || 0) - (ms(b.last_seen) || 0));
  fillDeviceList($('offline-list'), offline, (d) => deviceItem(d, 'offline-device'), t('devices.noneOffline'));
  $('offline-count').textContent = String(offline.length);
  $('offline-count').classList.toggle('alert', offline.length > 0);

  const low = devices.filter(isLowBattery).sort((a, b) => a.fields.battery_pct - b.fields.battery_pct);
  fillDeviceList($('battery-list'), low, (d) => deviceItem(d, 'low-battery-device'), t('devices.noneLow'));
  $('battery-count').textContent = String(low.length);
  $('battery-count').classList.toggle('alert', low.length > 0);

  // Devices nobody declared: a spoofed gate or a detector the installer
  // forgot, either way the security room should know. Newest first.
  const undeclared = devices.filter((d) => d.declared === false).sort((a, b) => (ms(b.last_seen) || 0) - (ms(a.last_seen) || 0));
  fillDeviceList($('undeclared-list'), undeclared, (d) => deviceItem(d, 'undeclared-device'), t('devices.noneUndeclared'));
  $('undeclared-count').textContent = String(undeclared.length);
  $('undeclared-count').classList.toggle('alert', undeclared.length > 0);

  $('devices-updated').textContent = state.devicesAt ? t('alarms.updated', { t: fmtClock(new Date(state.devicesAt)) }) : '';
}

function isLowBattery(d) {
  const pct = d.fields && d.fields.battery_pct;
  return d.kind === 'smoke' && typeof pct === 'number' && pct < LOW_BATTERY_PCT;
}

function fillDeviceList(list, items, build, emptyText) {
  clear(list);
  if (!items.length) { list.append(h('li', { class: 'empty-note muted' }, emptyText)); return; }
  for (const d of items.slice(0, LIST_CAP)) list.append(build(d));
  if (items.length > LIST_CAP) list.append(h('li', { class: 'more muted' }, t('common.more', { n: items.length - LIST_CAP })));
}

function deviceItem(d, testid) {
  const seen = ms(d.last_seen);
  const place = devicePlace(d);
  const battery = isLowBattery(d) ? h('span', { class: 'battery' }, t('devices.battery', { n: Math.round(d.fields.battery_pct) })) : null;
  const undeclared = d.declared === false;
  return h('li', {
    class: `device-item${d.online ? '' : ' offline'}${undeclared ? ' undeclared' : ''}`, 'data-testid': testid,
    'data-device-id': d.id, 'data-kind': d.kind, 'data-site': d.site, 'data-undeclared': undeclared ? 'true' : null,
  },
    h('span', { class: 'kind-tag', title: kindLabel(d.kind) }, kindShort(d.kind)),
    h('span', { class: 'device-name' }, place || d.id,
      d.site ? h('span', { class: 'site-tag', title: t('f.site') }, d.site) : null,
      undeclared ? h('span', { class: 'undeclared-tag', 'data-testid': 'undeclared-tag', title: t('row.undeclaredHint') }, `⚠ ${t('row.undeclared')}`) : null),
    battery,
    h('span', { class: 'device-seen muted' },
      place ? h('span', { class: 'device-id' }, d.id) : null,
      seen === null ? t('ago.never') : [t('devices.lastSeen', { t: '' }),
        h('span', { class: 'js-ago', 'data-at': seen }, fmtAgo(seen)), ` · ${fmtTime(seen)}`]));
}

/** A `device` stream event: online state changed. */
export function onDeviceEvent(ev) {
  const d = state.devices.find((x) => x.id === ev.id && x.site === ev.site);
  if (d) {
    d.online = !!ev.online;
    if (ev.last_seen !== undefined) d.last_seen = ev.last_seen;
  } else {
    // A device never seen before: undeclared, most likely. The event has
    // no `declared`, so the list is fetched for it (and its marks).
    state.devices.push({ id: ev.id, site: ev.site, kind: ev.kind, online: !!ev.online, last_seen: ev.last_seen || null, location: null, fields: {} });
    later('devices-refetch', refreshDevices, 500);
  }
  const bus = ev.kind === 'bus' && state.buses.find((b) => b.id === ev.id && b.site === ev.site);
  if (bus) { bus.online = !!ev.online; bus.last_seen = ev.last_seen || bus.last_seen; later('buses', renderBuses, 300); }
  later('devices', renderDevices, 300);
}
