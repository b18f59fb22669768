/*
 * The page's building blocks: elements (h, svg, reconcile), the alarm
 * vocabulary and how values are shown (times, durations, places, labels),
 * toasts, and a coalescer for bursts of renders. Every piece of server data
 * reaches the DOM through textContent or setAttribute, never innerHTML.
 */

import { lang, t } from './i18n.js';

export const SEVERITIES = ['critical', 'high', 'medium', 'low'];
export const KINDS = ['smoke', 'gate', 'kitchen', 'labcab', 'bus'];

// ---------------------------------------------------------------------
// DOM helpers. Children are nodes or strings (strings become text nodes).

export const $ = (id) => document.getElementById(id);

export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  setProps(el, props);
  append(el, children);
  return el;
}

const SVG_NS = 'http://www.w3.org/2000/svg';

export function svg(tag, props, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setProps(el, props);
  append(el, children);
  return el;
}

function setProps(el, props) {
  if (!props) return;
  for (const [k, v] of Object.entries(props)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.setAttribute('class', v);
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false || c === '') continue;
    el.append(c instanceof Node ? c : String(c));
  }
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
}

/** Makes `list`'s children exactly `wanted`, in order, moving rather than rebuilding. */
export function reconcile(list, wanted) {
  wanted.forEach((el, i) => {
    if (list.children[i] !== el) list.insertBefore(el, list.children[i] || null);
  });
  while (list.children.length > wanted.length) list.lastElementChild.remove();
}

// ---------------------------------------------------------------------
// Formatting. Times are shown in the browser's local time (the campus's).

export const pad2 = (n) => String(n).padStart(2, '0');

export function ms(iso) {
  if (!iso) return null;
  const v = Date.parse(iso);
  return Number.isNaN(v) ? null : v;
}

function sameDay(a, b) {
  return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();
}

/** "14:03" today, "11-28 14:03" on other days. */
export function fmtTime(v) {
  if (v === null || v === undefined) return t('common.none');
  const d = new Date(v);
  const hm = `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
  return sameDay(d, new Date()) ? hm : `${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${hm}`;
}

/** "2025-11-28 14:03:22". */
export function fmtDateTime(v) {
  if (v === null || v === undefined) return t('common.none');
  const d = new Date(v);
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ` +
    `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

export function fmtClock(d) {
  return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

/** A span of time in words: "12 min" / "12分钟". */
export function fmtDuration(span) {
  if (span === null || span === undefined || !Number.isFinite(span)) return t('common.none');
  const min = Math.floor(Math.max(0, span) / 60000);
  if (min < 1) return t('dur.lt1');
  if (min < 60) return t('dur.m', { m: min });
  const hours = Math.floor(min / 60);
  if (hours < 24) return t('dur.hm', { h: hours, m: min % 60 });
  return t('dur.dh', { d: Math.floor(hours / 24), h: hours % 24 });
}

/** "just now", "45 s ago", "12 min ago". */
export function fmtAgo(v) {
  if (v === null || v === undefined) return t('ago.never');
  const span = Date.now() - v;
  if (span < 10000) return t('ago.now');
  if (span < 60000) return t('ago.s', { n: Math.floor(span / 1000) });
  return t('ago.x', { d: fmtDuration(span) });
}

export function fmtNum(v) {
  if (typeof v !== 'number' || !Number.isFinite(v)) return t('common.none');
  return Number.isInteger(v) ? String(v) : String(Math.round(v * 100) / 100);
}

export function fmtMinutes(n) {
  return n >= 60 && n % 60 === 0 ? t('hours.n', { n: n / 60 }) : t('minutes.n', { n });
}

/** A place from its parts, for when the server gave no words for it. */
export function composePlace(building, floor, room) {
  const parts = [];
  if (lang === 'zh') {
    if (building) parts.push(`${building}楼`);
    if (floor) parts.push(`${floor}层`);
    if (room) parts.push(`${room}室`);
    return parts.join(' ');
  }
  if (building) parts.push(`Building ${building}`);
  if (floor) parts.push(`floor ${floor}`);
  if (room) parts.push(`room ${room}`);
  return parts.join(', ');
}

export function alarmPlace(a) {
  return a.location || composePlace(a.building, a.floor, a.room) || (a.device && a.device !== '*' ? a.device : '') || a.site || t('common.none');
}

export function devicePlace(d) {
  const loc = d.location;
  if (!loc) return '';
  return loc.name || composePlace(loc.building, loc.floor, loc.room);
}

export const kindLabel = (k) => (KINDS.includes(k) ? t(`kind.${k}`) : k || t('common.none'));
export const kindShort = (k) => (KINDS.includes(k) ? t(`kindShort.${k}`) : k || t('common.none'));
export const sevLabel = (v) => (SEVERITIES.includes(v) ? t(`sev.${v}`) : v);
export const stateLabel = (v) => t(`state.${v}`);
export const sevRank = (v) => { const i = SEVERITIES.indexOf(v); return i < 0 ? SEVERITIES.length : i; };

/** The alarm's text in the page's language, the single-language text otherwise. */
export const alarmText = (a) => a.messages?.[lang] || a.message || alarmName(a);
/** The rule's name in the page's language, its id otherwise. */
export const alarmName = (a) => a.names?.[lang] || a.rule;


// Severity icons: a different shape per severity, so colour is never the
// only cue (colour-blind staff, a washed-out wall screen).
export function sevIcon(sev) {
  const icon = svg('svg', { class: 'sev-icon', viewBox: '0 0 24 24', 'aria-hidden': 'true' });
  const mark = (d) => svg('path', { class: 'sev-mark', d });
  switch (sev) {
    case 'critical':
      icon.append(svg('path', { class: 'sev-shape', d: 'M8 1.5h8l6.5 6.5v8L16 22.5H8L1.5 16V8z' }), mark('M12 6.5v7M12 16.8v.4'));
      break;
    case 'high':
      icon.append(svg('path', { class: 'sev-shape', d: 'M12 1.8 23 21.5H1z' }), mark('M12 8.5v6M12 17.6v.4'));
      break;
    case 'medium':
      icon.append(svg('path', { class: 'sev-shape', d: 'M12 1.5 22.5 12 12 22.5 1.5 12z' }), mark('M12 7.5v5.5M12 15.8v.4'));
      break;
    default:
      icon.append(svg('circle', { class: 'sev-shape', cx: 12, cy: 12, r: 10.5 }), mark('M12 10.5v6.5M12 7.2v.4'));
  }
  return icon;
}

export function sevBadge(sev, { short = true } = {}) {
  return h('span', { class: `sev-badge sev-${sev}`, title: sevLabel(sev) },
    sevIcon(sev), h('span', { class: 'sev-text', text: short ? t(`sevShort.${sev}`) : sevLabel(sev) }));
}
// ---------------------------------------------------------------------
// Toasts: short confirmations and errors of user actions.

export function toast(message, kind = 'error') {
  const el = h('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status', 'data-testid': 'toast' }, message);
  $('toasts').append(el);
  setTimeout(() => el.classList.add('leaving'), kind === 'error' ? 7000 : 3500);
  setTimeout(() => el.remove(), kind === 'error' ? 7600 : 4100);
}

// Coalesces bursts of stream events into one render per panel.
const pending = new Map();
export function later(name, fn, wait) {
  if (pending.has(name)) return;
  pending.set(name, setTimeout(() => { pending.delete(name); fn(); }, wait));
}

export function fillSelect(select, options, keep) {
  const value = select.options.length ? select.value : keep;
  clear(select);
  for (const [v, label] of options) select.append(h('option', { value: v }, label));
  if (options.some(([v]) => v === value)) select.value = value;
}
