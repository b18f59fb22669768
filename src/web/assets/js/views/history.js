/*
 * The history of alarms over a date range (every state, filtered here
 * without another request) and the ledger download for that range.
 */

import { t } from '../i18n.js';
import {
  $, h, clear, ms, pad2, fmtDateTime, fmtDuration, fmtTime, alarmPlace, alarmText, alarmName, kindLabel,
  sevLabel, stateLabel, sevBadge, later, fillSelect, SEVERITIES, KINDS,
} from '../dom.js';
import { api } from '../api.js';
import { state, isUndeclared } from '../store.js';
import { openDetail } from '../dialogs.js';

/** The chosen range as instants: local midnight of `from` to the end of `to`. */
function historyRange() {
  const from = localDate($('history-from').value);
  const to = localDate($('history-to').value);
  if (!from || !to) return null;
  const end = new Date(to.getFullYear(), to.getMonth(), to.getDate() + 1);
  if (from >= end) return null;
  return { since: from.toISOString(), until: end.toISOString(), fromText: $('history-from').value, toText: $('history-to').value };
}

function localDate(value) {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value || '');
  return m ? new Date(Number(m[1]), Number(m[2]) - 1, Number(m[3])) : null;
}

function dateValue(d) {
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}`;
}

function updateLedgerLink() {
  const link = $('ledger-download');
  const range = historyRange();
  if (!range) {
    link.removeAttribute('href');
    link.setAttribute('aria-disabled', 'true');
    return;
  }
  link.setAttribute('href', `/api/reports/ledger.csv?from=${encodeURIComponent(range.since)}&to=${encodeURIComponent(range.until)}`);
  link.setAttribute('download', `ledger-${range.fromText.replace(/-/g, '')}-${range.toText.replace(/-/g, '')}.csv`);
  link.removeAttribute('aria-disabled');
}

/** The history's filter choices, in the current language. */
export function fillHistorySelects() {
  fillSelect($('history-severity'), [['', t('history.all')], ...SEVERITIES.map((v) => [v, sevLabel(v)])], '');
  fillSelect($('history-kind'), [['', t('history.all')], ...KINDS.map((v) => [v, kindLabel(v)])], '');
  // History opens on every state: an operator looking back wants the open
  // alarms of the range too (filtered to "cleared" it showed 1 of 12).
  fillSelect($('history-state'), [['', t('history.allStates')], ['cleared', t('history.clearedOnly')],
    ...['unacked', 'acked', 'cleared_unacked', 'shelved'].map((v) => [v, stateLabel(v)])], '');
}

export async function loadHistory() {
  const err = $('history-error');
  const range = historyRange();
  if (!range) {
    err.textContent = t('history.badRange');
    err.hidden = false;
    return;
  }
  err.hidden = true;
  $('history-note').textContent = t('history.loading');
  const q = `state=all&since=${encodeURIComponent(range.since)}&until=${encodeURIComponent(range.until)}&limit=${state.historyLimit}`;
  try {
    const data = await api(`/api/alarms?${q}`);
    state.history = Array.isArray(data && data.alarms) ? data.alarms : [];
    state.historyFetched = state.history.length;
    renderHistory();
  } catch (e) {
    $('history-note').textContent = '';
    err.textContent = e.message;
    err.hidden = false;
  }
}

/** Filters apply on the fetched range, so changing them needs no request. */
function filteredHistory() {
  const sev = $('history-severity').value;
  const kind = $('history-kind').value;
  const st = $('history-state').value;
  const text = $('history-text').value.trim().toLowerCase();
  return state.history.filter((a) => {
    if (sev && a.severity !== sev) return false;
    if (kind && a.kind !== kind) return false;
    if (st && a.state !== st) return false;
    if (text) {
      const hay = [a.message, ...Object.values(a.messages || {}), alarmName(a), a.location, a.device, a.rule, a.site, a.building, a.room, a.acked_by, a.shelve_reason, a.suppressed, alarmPlace(a)]
        .filter(Boolean).join(' ').toLowerCase();
      if (!hay.includes(text)) return false;
    }
    return true;
  });
}

export function renderHistory() {
  const body = $('history-body');
  clear(body);
  if (!state.me) return;
  const rows = filteredHistory();
  for (const a of rows) {
    const raised = ms(a.raised_at);
    const cleared = ms(a.cleared_at);
    body.append(h('tr', {
      class: `history-row sev-${a.severity}`, tabindex: 0,
      'data-testid': 'history-row', 'data-alarm-id': a.id, 'data-severity': a.severity, 'data-state': a.state, 'data-kind': a.kind,
      onclick: () => openDetail(a.id),
      onkeydown: (ev) => { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); openDetail(a.id); } },
    },
    h('td', null, sevBadge(a.severity)),
    h('td', { class: 'nowrap' }, fmtDateTime(raised)),
    h('td', { class: 'nowrap' }, cleared === null ? t('common.none') : fmtDateTime(cleared)),
    h('td', { class: 'nowrap' }, raised !== null && cleared !== null ? fmtDuration(cleared - raised) : t('common.none')),
    h('td', null, kindLabel(a.kind)),
    h('td', null, alarmPlace(a), a.site ? h('span', { class: 'site-tag' }, a.site) : null,
      isUndeclared(a) ? h('span', { class: 'undeclared-tag' }, t('row.undeclared')) : null),
    h('td', { class: 'msg' }, alarmText(a)),
    h('td', null, a.acked_by ? `${a.acked_by} · ${fmtTime(ms(a.acked_at))}` : t('common.none')),
    h('td', null, h('span', { class: `state-chip chip-${a.state}` }, stateLabel(a.state)))));
  }
  if (!rows.length) {
    body.append(h('tr', { class: 'empty-row' }, h('td', { colspan: 9, class: 'muted' }, t('history.empty'))));
  }
  let note = rows.length === state.historyFetched
    ? t('history.count', { n: rows.length })
    : t('history.countOf', { n: rows.length, total: state.historyFetched });
  if (state.historyFetched >= state.historyLimit) note += ` ${t('history.limit', { n: state.historyLimit })}`;
  $('history-note').textContent = note;
}

/** Sets the range to the last seven days and wires the history's controls once. */
export function wireHistory() {
  const today = new Date();
  $('history-to').value = dateValue(today);
  $('history-from').value = dateValue(new Date(today.getFullYear(), today.getMonth(), today.getDate() - 6));
  updateLedgerLink();
  $('history-form').addEventListener('submit', (ev) => { ev.preventDefault(); loadHistory(); });
  for (const id of ['history-from', 'history-to']) {
    $(id).addEventListener('change', () => { updateLedgerLink(); loadHistory(); });
  }
  for (const id of ['history-severity', 'history-kind', 'history-state']) $(id).addEventListener('change', renderHistory);
  $('history-text').addEventListener('input', () => later('history-filter', renderHistory, 200));
  $('ledger-download').addEventListener('click', (ev) => {
    if (!historyRange()) {
      ev.preventDefault();
      $('history-error').textContent = t('history.badRange');
      $('history-error').hidden = false;
    }
  });
}
