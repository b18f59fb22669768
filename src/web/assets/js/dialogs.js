/*
 * The dialogs: acknowledge, shelve, comment (and unshelve, which needs
 * none), a drill or maintenance zone, and an alarm's full record with its
 * ledger entries. Their answers go into the store.
 */

import { t } from './i18n.js';
import {
  $, h, clear, ms, fmtDateTime, fmtNum, fmtMinutes, alarmPlace, alarmText, alarmName, kindLabel,
  sevLabel, stateLabel, sevBadge, toast, fillSelect,
} from './dom.js';
import { api } from './api.js';
import { isUndeclared, applyAlarms, refreshSuppressions } from './store.js';

const SHELVE_MINUTES = [15, 30, 60, 240, 480];
const DRILL_MINUTES = [30, 60, 120, 240, 480];

function summaryLine(a) {
  return `${sevLabel(a.severity)} · ${alarmText(a)} · ${alarmPlace(a)} · ${a.site || ''}`;
}

/**
 * Opens `dialog` for alarm `a`: fills its summary line, clears its error,
 * and wires its form once to `submit(form) -> Promise`.
 */
function openDialog(dialog, a) {
  const line = dialog.querySelector('[data-role="alarm-summary"]');
  if (line) {
    line.textContent = a ? summaryLine(a) : '';
    line.className = `dialog-alarm${a ? ` sev-${a.severity}` : ''}`;
  }
  setDialogError(dialog, null);
  dialog.showModal();
}

function setDialogError(dialog, message) {
  const el = dialog.querySelector('[data-role="error"]');
  if (!el) return;
  el.textContent = message || '';
  el.hidden = !message;
}

/** Runs a dialog's submit: button busy, server error shown in the dialog. */
async function submitDialog(dialog, work) {
  const button = dialog.querySelector('button[type="submit"]');
  const label = button.textContent;
  button.disabled = true;
  button.textContent = t('common.saving');
  try {
    await work();
    dialog.close();
  } catch (err) {
    setDialogError(dialog, err.message);
  } finally {
    button.disabled = false;
    button.textContent = label;
  }
}

let dialogAlarm = null; // the alarm the open action dialog is about

export function openAck(a) {
  dialogAlarm = a;
  $('ack-comment').value = '';
  openDialog($('ack-dialog'), a);
  // Enter on the primary button acknowledges at once; the comment is optional.
  $('ack-dialog').querySelector('button[type="submit"]').focus();
}

export function openShelve(a) {
  dialogAlarm = a;
  $('shelve-minutes').value = '30';
  $('shelve-reason').value = '';
  openDialog($('shelve-dialog'), a);
  $('shelve-reason').focus();
}

export function openComment(a) {
  dialogAlarm = a;
  $('comment-text').value = '';
  openDialog($('comment-dialog'), a);
  $('comment-text').focus();
}

async function alarmAction(a, verb, body) {
  const data = await api(`/api/alarms/${encodeURIComponent(a.id)}/${verb}`, { method: 'POST', body });
  // The answer holds every alarm the action changed; the stream brings the
  // same changes again, which the store takes only once.
  if (data && Array.isArray(data.alarms)) applyAlarms(data.alarms);
}

function onAckSubmit(ev) {
  ev.preventDefault();
  const a = dialogAlarm;
  const comment = $('ack-comment').value.trim();
  submitDialog($('ack-dialog'), async () => {
    await alarmAction(a, 'ack', { comment: comment || null });
    toast(t('ok.ack'), 'ok');
  });
}

function onShelveSubmit(ev) {
  ev.preventDefault();
  const a = dialogAlarm;
  const reason = $('shelve-reason').value.trim();
  if (!reason) {
    setDialogError($('shelve-dialog'), t('shelve.needReason'));
    $('shelve-reason').focus();
    return;
  }
  const minutes = Number($('shelve-minutes').value);
  submitDialog($('shelve-dialog'), async () => {
    await alarmAction(a, 'shelve', { minutes, reason });
    toast(t('ok.shelve'), 'ok');
  });
}

function onCommentSubmit(ev) {
  ev.preventDefault();
  const a = dialogAlarm;
  const text = $('comment-text').value.trim();
  if (!text) {
    setDialogError($('comment-dialog'), t('comment.needText'));
    $('comment-text').focus();
    return;
  }
  submitDialog($('comment-dialog'), async () => {
    await alarmAction(a, 'comment', { text });
    toast(t('ok.comment'), 'ok');
  });
}

export async function doUnshelve(a) {
  try {
    await alarmAction(a, 'unshelve', {});
    toast(t('ok.unshelve'), 'ok');
  } catch (err) {
    toast(err.message);
  }
}

let drillBuildings = []; // [{ building, floors }] from the last look

export async function openDrill() {
  $('drill-minutes').value = '60';
  $('drill-reason').value = '';
  fillDrillBuildings();
  openDialog($('drill-dialog'), null);
  $('drill-building').focus();
  try {
    const data = await api('/api/buildings');
    drillBuildings = Array.isArray(data && data.buildings) ? data.buildings : [];
    fillDrillBuildings();
  } catch (err) {
    setDialogError($('drill-dialog'), err.message);
  }
}

function fillDrillBuildings() {
  const select = $('drill-building');
  const keep = select.value;
  clear(select);
  if (!drillBuildings.length) select.append(h('option', { value: '' }, t('drill.noBuildings')));
  for (const b of drillBuildings) select.append(h('option', { value: b.building }, b.building));
  if (drillBuildings.some((b) => b.building === keep)) select.value = keep;
  fillDrillFloors();
}

function fillDrillFloors() {
  const select = $('drill-floor');
  const b = drillBuildings.find((x) => x.building === $('drill-building').value);
  clear(select);
  select.append(h('option', { value: '' }, t('drill.wholeBuilding')));
  for (const f of (b && Array.isArray(b.floors) ? b.floors : [])) select.append(h('option', { value: f }, f));
}

function onDrillSubmit(ev) {
  ev.preventDefault();
  const dialog = $('drill-dialog');
  const building = $('drill-building').value.trim();
  const floor = $('drill-floor').value.trim();
  const reason = $('drill-reason').value.trim();
  if (!building) { setDialogError(dialog, t('drill.needBuilding')); $('drill-building').focus(); return; }
  if (!reason) { setDialogError(dialog, t('drill.needReason')); $('drill-reason').focus(); return; }
  const minutes = Number($('drill-minutes').value);
  submitDialog(dialog, async () => {
    await api('/api/suppressions', { method: 'POST', body: { building, floor: floor || null, minutes, reason } });
    toast(t('drill.started'), 'ok');
    // A zone changes no open alarm (only those raised in it later).
    refreshSuppressions();
  });
}

export async function endSuppression(z) {
  try {
    await api('/api/suppressions/end', { method: 'POST', body: { building: z.building, floor: z.floor || null } });
    toast(t('drill.ended'), 'ok');
    refreshSuppressions();
  } catch (err) {
    toast(err.message);
  }
}

/** The alarm's full record and its ledger entries. */
export async function openDetail(id) {
  const dialog = $('detail-dialog');
  const body = $('detail-body');
  const events = $('detail-events');
  const sent = $('detail-notifications');
  clear(body);
  clear(events);
  clear(sent);
  body.append(h('p', { class: 'muted' }, t('detail.loading')));
  if (!dialog.open) dialog.showModal();
  let data;
  try {
    data = await api(`/api/alarms/${encodeURIComponent(id)}`);
  } catch (err) {
    clear(body);
    body.append(h('p', { class: 'form-error' }, err.message));
    return;
  }
  const a = data.alarm;
  clear(body);
  const rows = [
    ['f.message', alarmText(a)],
    ['f.severity', sevBadge(a.severity, { short: false })],
    ['f.state', h('span', { class: `state-chip chip-${a.state}` }, stateLabel(a.state))],
    ['f.location', alarmPlace(a)],
    ['f.kind', kindLabel(a.kind)],
    ['f.device', a.device === '*' ? null : a.device],
    ['f.rule', alarmName(a) === a.rule ? a.rule : `${alarmName(a)} (${a.rule})`],
    ['f.site', a.site],
    ['f.declared', isUndeclared(a) ? h('span', { class: 'undeclared-tag' }, `⚠ ${t('row.undeclared')} · ${t('row.undeclaredHint')}`) : null],
    ['f.raised', fmtDateTime(ms(a.raised_at))],
    ['f.cleared', a.cleared_at ? fmtDateTime(ms(a.cleared_at)) : null],
    ['f.acked', a.acked_by ? `${a.acked_by} · ${fmtDateTime(ms(a.acked_at))}` : null],
    ['f.value', typeof a.value === 'number' || typeof a.peak === 'number' ? `${fmtNum(a.value)} / ${fmtNum(a.peak)}` : null],
    ['f.count', a.count > 1 ? String(a.count) : null],
    ['f.shelved', a.state === 'shelved' ? `${fmtDateTime(ms(a.shelved_until))} · ${a.shelve_reason || ''}` : null],
    ['f.suppressed', a.suppressed],
    ['f.group', a.group !== null && a.group !== undefined ? `#${a.group}` : null],
  ];
  const dl = h('dl', { class: 'detail-grid' });
  for (const [key, value] of rows) {
    if (value === null || value === undefined || value === '') continue;
    dl.append(h('dt', null, t(key)), h('dd', null, value));
  }
  body.append(dl);
  const list = Array.isArray(data.events) ? data.events : [];
  if (!list.length) events.append(h('li', { class: 'muted' }, t('detail.noEvents')));
  for (const e of list) {
    const bits = [];
    if (e.from && e.to && e.from !== e.to) bits.push(`${stateLabel(e.from)} → ${stateLabel(e.to)}`);
    if (typeof e.value === 'number') bits.push(t('row.value', { v: fmtNum(e.value) }));
    events.append(h('li', { class: `ev ev-${e.action}`, 'data-testid': 'detail-event' },
      h('time', { class: 'ev-time' }, fmtDateTime(ms(e.at))),
      h('span', { class: 'ev-action' }, t(`ev.${e.action}`)),
      e.user ? h('span', { class: 'ev-user' }, e.user) : null,
      bits.length ? h('span', { class: 'ev-bits muted' }, bits.join(' · ')) : null,
      e.comment ? h('span', { class: 'ev-comment' }, e.comment) : null));
  }
  // Who was told, by which channel and step, and what the channel answered:
  // the security room sees at once that a message failed or nobody got one.
  const told = Array.isArray(data.notifications) ? data.notifications : [];
  if (!told.length) sent.append(h('li', { class: 'muted' }, t('detail.noNotifications')));
  for (const n of told) {
    const when = n.sent_at || n.next_at || n.created_at;
    sent.append(h('li', { class: `ev notify-${n.state}`, 'data-testid': 'detail-notification', 'data-state': n.state },
      h('time', { class: 'ev-time' }, when ? fmtDateTime(ms(when)) : ''),
      h('span', { class: 'ev-action' }, t(`notify.${n.state}`)),
      h('span', { class: 'ev-user' }, `${n.channel} · ${(n.people || []).join('、')}`),
      h('span', { class: 'ev-bits muted' }, t('notify.stepAttempts', { step: n.step + 1, n: n.attempts })),
      n.answer ? h('span', { class: 'ev-comment' }, n.answer) : null));
  }
}

/** The dialogs' duration choices, in the current language. */
export function fillDialogSelects() {
  fillSelect($('shelve-minutes'), SHELVE_MINUTES.map((n) => [String(n), fmtMinutes(n)]), '30');
  fillSelect($('drill-minutes'), DRILL_MINUTES.map((n) => [String(n), fmtMinutes(n)]), '60');
}

/** Wires the dialogs' forms, cancel buttons and shortcuts once. */
export function wireDialogs() {
  $('drill-button').addEventListener('click', openDrill);
  $('drill-building').addEventListener('change', fillDrillFloors);
  $('ack-form').addEventListener('submit', onAckSubmit);
  $('shelve-form').addEventListener('submit', onShelveSubmit);
  $('comment-form').addEventListener('submit', onCommentSubmit);
  $('drill-form').addEventListener('submit', onDrillSubmit);
  for (const dialog of document.querySelectorAll('dialog')) {
    for (const b of dialog.querySelectorAll('[data-role="cancel"]')) b.addEventListener('click', () => dialog.close());
    // A click on the backdrop (outside the box) closes it too.
    dialog.addEventListener('click', (ev) => { if (ev.target === dialog) dialog.close(); });
  }
  // Ctrl+Enter sends a comment from its textarea.
  for (const id of ['ack-comment', 'comment-text']) {
    $(id).addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); $(id).form.requestSubmit(); }
    });
  }
}
