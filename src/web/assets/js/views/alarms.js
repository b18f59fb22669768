/*
 * The alarm list: burning alarms first with the first alarm (首警) pinned on
 * top, flood groups that open in place, the quiet section (shelved, drill)
 * and the drill zones in force, and the severity counters in the top bar.
 */

import { t, lang } from '../i18n.js';
import {
  $, h, clear, reconcile, ms, fmtClock, fmtDuration, fmtTime, fmtNum, alarmPlace, alarmText, alarmName,
  kindLabel, sevLabel, stateLabel, sevIcon, sevBadge, SEVERITIES,
} from '../dom.js';
import { state, canAct, isQuiet, needsAck, byUrgency, isUndeclared, firstAlarm } from '../store.js';
import { openAck, openShelve, openComment, openDetail, doUnshelve, endSuppression } from '../dialogs.js';

// Rows are kept by key and rebuilt only when their alarm changed, so an
// update elsewhere in the list does not pull a button from under a click.
const rowCache = new Map(); // key -> { el, sig }

/** Forgets every row (signed out, or the language changed). */
export function resetRows() {
  rowCache.clear();
}

function cachedRow(key, alarm, extra, build) {
  const sig = JSON.stringify([alarm, extra, lang, canAct()]);
  const hit = rowCache.get(key);
  if (hit && hit.sig === sig) return hit.el;
  const el = build();
  if (hit && hit.el.contains(document.activeElement)) {
    // Keep keyboard focus on the same control of the rebuilt row.
    const id = document.activeElement.getAttribute('data-testid');
    hit.el.replaceWith(el);
    const again = id && el.querySelector(`[data-testid="${id}"]`);
    if (again) again.focus();
  }
  rowCache.set(key, { el, sig });
  return el;
}

export function renderAlarms() {
  const main = state.active.filter((a) => !isQuiet(a)).sort(byUrgency);
  const quiet = state.active.filter(isQuiet).sort(byUrgency);
  const seen = new Set();

  const rows = [];
  // The first alarm leads the list; a member of a flood group is shown
  // there on its own as well as inside its group.
  const first = firstAlarm(main);
  if (first) {
    const key = `f:${first.id}`;
    seen.add(key);
    rows.push(cachedRow(key, first, ['first', isUndeclared(first)], () => alarmRow(first, { first: true, member: first.group != null })));
  }
  for (const a of main) {
    if (first && a.id === first.id) continue;
    const open = state.expanded.has(a.id);
    const key = `a:${a.id}`;
    seen.add(key);
    rows.push(cachedRow(key, a, [open, isUndeclared(a)], () => alarmRow(a, { open })));
    if (a.is_group && open) {
      const mkey = `g:${a.id}`;
      seen.add(mkey);
      rows.push(cachedRow(mkey, a.members || [], (a.members || []).map(isUndeclared), () => groupMembers(a)));
    }
  }
  reconcile($('alarm-list'), rows);
  $('alarm-empty').hidden = !state.activeLoaded || main.length > 0;
  $('alarm-count').textContent = state.activeLoaded ? String(main.length) : '';

  const quietRows = quiet.map((a) => {
    const key = `q:${a.id}`;
    seen.add(key);
    return cachedRow(key, a, isUndeclared(a), () => alarmRow(a, { quiet: true }));
  });
  reconcile($('quiet-list'), quietRows);
  $('quiet-count').textContent = quiet.length ? String(quiet.length) : '';
  $('quiet-empty').hidden = quiet.length > 0 || state.suppressions.length > 0;

  for (const key of rowCache.keys()) if (!seen.has(key)) rowCache.delete(key);
  for (const id of state.expanded) if (!state.active.some((a) => a.id === id)) state.expanded.delete(id);

  $('alarms-updated').textContent = state.activeAt ? t('alarms.updated', { t: fmtClock(new Date(state.activeAt)) }) : '';
  renderSummary(main);
}

/** One alarm as a list row; `member` rows sit inside an opened flood group. */
function alarmRow(a, { open = false, quiet = false, member = false, first = false } = {}) {
  const classes = ['alarm-row', `sev-${a.severity}`, `state-${a.state}`];
  if (!a.active) classes.push('inactive');
  if (a.is_group) classes.push('is-group');
  if (quiet) classes.push('quiet-row');
  if (member && !first) classes.push('member-row');
  if (first) classes.push('first-alarm');

  const raised = ms(a.raised_at);
  const meta = [
    ...placeParts(a),
    h('span', { class: 'kind-tag' }, kindLabel(a.kind)),
  ];
  if (first && a.group != null) meta.push(h('span', { class: 'group-tag' }, `${t('f.group')} #${a.group}`));
  if (a.is_group) {
    meta.push(h('span', { class: 'group-tag' }, `${t('row.group')} · ${t('row.groupMembers', { n: a.count || (a.members || []).length })}`));
  } else if (a.device && a.device !== '*') {
    meta.push(h('span', { class: 'meta-device' }, a.device));
  }
  meta.push(h('span', { class: 'meta-time' }, t('row.raisedAt', { t: fmtTime(raised) })));
  if (!a.is_group && a.count > 1) meta.push(h('span', { class: 'meta-count' }, t('row.count', { n: a.count })));
  // Alarms of the same event on this device (`inhibits`): one row, their names in it.
  if (Array.isArray(a.covers) && a.covers.length) {
    meta.push(h('span', { class: 'meta-covers', 'data-testid': 'alarm-covers' }, t('row.covers', { names: a.covers.map(alarmName).join('、') })));
  }
  if (typeof a.peak === 'number' && a.peak !== a.value) meta.push(h('span', null, t('row.peak', { v: fmtNum(a.peak) })));
  if (a.acked_by) meta.push(h('span', { class: 'meta-acked' }, t('row.ackedBy', { user: a.acked_by, t: fmtTime(ms(a.acked_at)) })));
  if (a.state === 'shelved') {
    meta.push(h('span', { class: 'meta-shelved' }, t('row.shelvedUntil', { t: fmtTime(ms(a.shelved_until)) })));
    if (a.shelve_reason) meta.push(h('span', { class: 'meta-reason' }, t('row.reason', { r: a.shelve_reason })));
  }
  if (a.suppressed) meta.push(h('span', { class: 'meta-suppressed' }, t('row.suppressed', { r: a.suppressed })));

  const main = h('button', {
    type: 'button', class: 'row-main', 'data-testid': 'alarm-open', title: t('row.details'),
    onclick: () => openDetail(a.id),
  },
  first ? h('span', { class: 'first-tag', 'data-testid': 'first-alarm-tag', title: t('row.firstHint') }, t('row.first')) : null,
  h('span', { class: 'row-message', 'data-testid': 'alarm-message' }, alarmText(a)),
  h('span', { class: 'row-meta' }, meta));

  // How long: live while active; frozen at the clearing time once cleared;
  // the time left for a shelved alarm.
  let status;
  if (a.state === 'shelved' && a.shelved_until) {
    status = [h('span', { class: 'dur-label' }, t('row.remaining')),
      h('span', { class: 'duration js-remaining', 'data-until': ms(a.shelved_until), 'data-testid': 'alarm-duration' }, fmtDuration(ms(a.shelved_until) - Date.now()))];
  } else {
    const cleared = a.active ? null : ms(a.cleared_at);
    status = [h('span', { class: 'dur-label' }, t(cleared ? 'row.clearedAfter' : 'row.activeFor')),
      h('span', {
        class: 'duration js-duration', 'data-testid': 'alarm-duration',
        'data-from': raised === null ? null : raised, 'data-to': cleared,
      }, raised === null ? t('common.none') : fmtDuration((cleared || Date.now()) - raised))];
  }
  status.push(h('span', { class: `state-chip chip-${a.state}`, 'data-testid': 'alarm-state' }, stateLabel(a.state)));

  const actions = h('div', { class: 'row-actions' });
  if (a.is_group) {
    // A flood group opens and closes under its text, for viewers too.
    const n = a.count || (a.members || []).length;
    actions.append(h('button', {
      type: 'button', class: 'button subtle group-toggle', 'data-testid': 'group-toggle',
      'aria-expanded': open ? 'true' : 'false',
      onclick: () => toggleGroup(a.id),
    }, h('span', { class: 'caret', 'aria-hidden': 'true' }), open ? t('row.collapse') : t('row.expand', { n })));
  }
  if (canAct()) {
    if (needsAck(a)) {
      actions.append(h('button', { type: 'button', class: 'button primary', 'data-testid': 'ack-button', onclick: () => openAck(a) }, t('action.ack')));
    }
    if (a.state === 'shelved') {
      actions.append(h('button', { type: 'button', class: 'button', 'data-testid': 'unshelve-button', onclick: () => doUnshelve(a) }, t('action.unshelve')));
    } else if (!member) {
      actions.append(h('button', { type: 'button', class: 'button', 'data-testid': 'shelve-button', onclick: () => openShelve(a) }, t('action.shelve')));
    }
    actions.append(h('button', { type: 'button', class: 'button', 'data-testid': 'comment-button', onclick: () => openComment(a) }, t('action.comment')));
  }

  return h('li', {
    class: classes.join(' '),
    'data-testid': 'alarm-row',
    'data-alarm-id': a.id,
    'data-state': a.state,
    'data-severity': a.severity,
    'data-kind': a.kind,
    'data-active': a.active ? 'true' : 'false',
    'data-group': a.is_group ? 'true' : null,
    'data-member-of': member ? a.group : null,
    'data-first': first ? 'true' : null,
    'data-site': a.site || null,
    'data-undeclared': isUndeclared(a) ? 'true' : null,
  },
  sevBadge(a.severity),
  main,
  h('div', { class: 'row-status' }, status),
  actions);
}

/**
 * Where: the place in words, the site (a message under another school's
 * code must not pass for ours), and 未登记 for a device not in the
 * configuration.
 */
export function placeParts(a) {
  const parts = [h('span', { class: 'meta-place' }, h('span', { class: 'pin', 'aria-hidden': 'true' }), alarmPlace(a))];
  if (a.site) parts.push(h('span', { class: 'site-tag', 'data-testid': 'alarm-site', title: t('f.site') }, a.site));
  if (isUndeclared(a)) {
    parts.push(h('span', { class: 'undeclared-tag', 'data-testid': 'undeclared-tag', title: t('row.undeclaredHint') }, `⚠ ${t('row.undeclared')}`));
  }
  return parts;
}

/** The opened members of a flood group, as a list item after the group's row. */
function groupMembers(group) {
  const members = (group.members || []).slice().sort(byUrgency);
  return h('li', { class: 'group-members', 'data-testid': 'group-members', 'data-group-id': group.id },
    h('ol', { class: 'member-list' }, members.map((m) => alarmRow(m, { member: true }))));
}

function toggleGroup(id) {
  if (state.expanded.has(id)) state.expanded.delete(id);
  else state.expanded.add(id);
  renderAlarms();
}

/** Severity counters in the top bar, read from across the room. */
function renderSummary(main) {
  const box = $('summary');
  clear(box);
  if (!state.activeLoaded) return;
  for (const sev of SEVERITIES) {
    const n = main.filter((a) => a.severity === sev).length;
    box.append(h('span', { class: `sum-item sev-${sev}${n ? '' : ' zero'}`, 'data-testid': `summary-${sev}`, title: sevLabel(sev) },
      sevIcon(sev), h('span', { class: 'sum-label' }, t(`sevShort.${sev}`)), h('b', null, String(n))));
  }
  const unacked = main.filter(needsAck).length;
  box.append(h('span', { class: `sum-item sum-unacked${unacked ? '' : ' zero'}`, 'data-testid': 'summary-unacked' },
    h('span', { class: 'sum-label' }, t('alarms.unacked')), h('b', null, String(unacked))));
}

/** Drill and maintenance zones now in force. */
export function renderSuppressions() {
  const list = $('suppression-list');
  clear(list);
  for (const z of state.suppressions) {
    const zone = z.floor ? t('drill.zoneFloor', { b: z.building, f: z.floor }) : t('drill.zone', { b: z.building });
    const until = ms(z.until);
    const item = h('li', { class: 'zone-item', 'data-testid': 'suppression-item', 'data-building': z.building, 'data-floor': z.floor || '' },
      h('span', { class: 'zone-icon', 'aria-hidden': 'true' }),
      h('span', { class: 'zone-name' }, zone),
      h('span', { class: 'zone-until' }, `${t('drill.until', { t: fmtTime(until) })} · `,
        h('span', { class: 'js-remaining', 'data-until': until }, fmtDuration(until - Date.now()))),
      z.reason ? h('span', { class: 'zone-reason' }, z.reason) : null,
      z.by ? h('span', { class: 'zone-by muted' }, t('drill.by', { u: z.by })) : null);
    if (canAct()) {
      item.append(h('button', {
        type: 'button', class: 'button subtle small', 'data-testid': 'end-suppression-button',
        onclick: () => endSuppression(z),
      }, t('action.end')));
    }
    list.append(item);
  }
  const quietCount = state.active.filter(isQuiet).length;
  $('quiet-empty').hidden = quietCount > 0 || state.suppressions.length > 0;
}
