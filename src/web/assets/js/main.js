/*
 * Campus Gateway — the security room's status page: boot, sign-in and
 * sign-out, and the wiring between the store, the stream and the views.
 *
 * Plain JavaScript modules, no framework, no build step: the binary embeds
 * these files and serves them as they are. The page is watched all day on a
 * wall screen and used from a desk PC, so:
 *   - the live state comes from one Server-Sent Events stream, each event
 *     applied once to the store; whenever the stream (re)connects or says it
 *     lagged, everything is fetched again, and a slow poll backs that up, so
 *     the screen never silently goes stale;
 *   - every piece of server data reaches the DOM through textContent or
 *     setAttribute, never innerHTML: alarm messages and device names come from
 *     the field and must not be able to inject markup;
 *   - the CSP forbids inline handlers and styles, so everything is wired here
 *     with addEventListener and styled with classes.
 */

import { t, lang, setLang } from './i18n.js';
import { $, h, clear, fmtClock, fmtDuration, fmtAgo, toast } from './dom.js';
import { api, configureApi } from './api.js';
import { state, canAct, on, refreshAll, resetAlarms } from './store.js';
import { connectStream, stopStream, setConnected } from './live.js';
import {
  initSound, updateSoundNotice, updateMuteButton, toggleMute, onSoundHint, annunciate, soundTick,
  renderBanner, bannerAlarm, dismissBanner, updateTitle, flashTick, noticeNewAlarms,
} from './annunciator.js';
import { openAck, openDetail, fillDialogSelects, wireDialogs } from './dialogs.js';
import { renderAlarms, renderSuppressions, resetRows } from './views/alarms.js';
import { renderDevices } from './views/devices.js';
import { renderBuses } from './views/buses.js';
import { loadHistory, renderHistory, fillHistorySelects, wireHistory } from './views/history.js';

/** The alarm list and everything that follows from it: title, banner, sound. */
function showAlarms() {
  renderAlarms();
  updateTitle();
  renderBanner();
  annunciate();
}

on('alarms', ({ changed, silent, prune }) => {
  noticeNewAlarms(changed, { silent, prune });
  showAlarms();
});
on('suppressions', renderSuppressions);
on('devices', () => {
  renderDevices();
  // The marks of alarms from undeclared devices may have changed.
  if (state.activeLoaded) showAlarms();
});
on('buses', renderBuses);

configureApi({ current: () => state.me, lost: () => sessionLost() });

function applyStaticLabels() {
  document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
  for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll('[data-i18n-placeholder]')) {
    el.setAttribute('placeholder', t(el.dataset.i18nPlaceholder));
  }
  for (const opt of document.querySelectorAll('#lang-switch .lang-opt')) {
    opt.classList.toggle('current', opt.dataset.lang === lang);
  }
  $('lang-switch').setAttribute('aria-label', lang === 'zh' ? 'Switch to English' : '切换到中文');
  fillHistorySelects();
  fillDialogSelects();
  updateMuteButton();
  updateTitle();
}

function setLanguage(next) {
  setLang(next);
  applyStaticLabels();
  renderAll();
}

async function boot() {
  applyStaticLabels();
  wireControls();
  startClock();
  initSound();
  try {
    const me = await api('/api/me');
    showApp(me);
  } catch (err) {
    if (err.status === 401) {
      showLogin();
    } else {
      // Server unreachable or failing: say so and try again shortly.
      showLogin(t('conn.unreachable'));
      setTimeout(retryBoot, 5000);
    }
  }
}

async function retryBoot() {
  if (state.me) return;
  try {
    showApp(await api('/api/me'));
  } catch (err) {
    if (err.status === 401) showLoginError(null);
    else setTimeout(retryBoot, 5000);
  }
}

function showLogin(message) {
  state.me = null;
  stopStream();
  document.body.classList.add('signed-out');
  document.body.classList.remove('signed-in', 'can-act');
  $('app').hidden = true;
  $('login-view').hidden = false;
  setConnected(true);
  resetData();
  showLoginError(message || null);
  updateTitle();
  renderBanner();
  updateSoundNotice();
  $('login-password').value = '';
  (($('login-username').value ? $('login-password') : $('login-username'))).focus();
}

function showLoginError(message) {
  const el = $('login-error');
  el.textContent = message || '';
  el.hidden = !message;
}

function resetData() {
  resetAlarms();
  state.suppressions = [];
  state.devices = [];
  state.deviceIndex = new Map();
  state.buses = [];
  state.routes = [];
  state.history = [];
  state.expanded.clear();
  state.lastState.clear();
  resetRows();
}

function showApp(me) {
  state.me = me;
  state.sessionLost = false;
  document.body.classList.remove('signed-out');
  document.body.classList.add('signed-in');
  document.body.classList.toggle('can-act', canAct());
  $('login-view').hidden = true;
  $('app').hidden = false;
  $('user-name').textContent = me.user;
  $('user-role').textContent = t(`role.${me.role}`);
  $('user-role').dataset.role = me.role;
  for (const el of document.querySelectorAll('.only-operator')) el.hidden = !canAct();
  renderAll();
  refreshAll('boot');
  connectStream();
  loadHistory();
  refreshDuty();
}

/** Who is on duty now, per team, in the top bar; a team with nobody is marked. */
async function refreshDuty() {
  let teams = [];
  try {
    teams = (await api('/api/duty')).teams || [];
  } catch {
    return;
  }
  const el = $('duty');
  clear(el);
  if (!teams.length) return;
  el.append(h('span', { class: 'duty-label' }, t('duty.label')));
  for (const d of teams) {
    const who = d.gap ? t('duty.nobody') : d.people.map((p) => p.name).join('、');
    el.append(h('span', { class: d.gap ? 'duty-team gap' : 'duty-team', 'data-testid': 'duty-team', 'data-team': d.team }, `${d.name || d.team}：${who}`));
  }
}

function sessionLost() {
  showLogin(t('auth.expired'));
  // Nobody sees alarms on the sign-in form: that sounds until someone signs in.
  state.sessionLost = true;
  updateSoundNotice();
  annunciate();
}

async function onLoginSubmit(ev) {
  ev.preventDefault();
  const username = $('login-username').value.trim();
  const password = $('login-password').value;
  if (!username || !password) {
    showLoginError(t('auth.missing'));
    return;
  }
  const button = $('login-submit');
  button.disabled = true;
  button.textContent = t('auth.signingIn');
  try {
    const me = await api('/api/login', { method: 'POST', body: { username, password } });
    $('login-password').value = '';
    showLoginError(null);
    showApp(me);
  } catch (err) {
    let message = err.message;
    // The translated 429 names the wait; a server text without it gets it added.
    if (err.status === 429 && err.data && err.data.retry_after_s && !/\d/.test(message)) {
      message += t('auth.retryIn', { n: Math.ceil(err.data.retry_after_s) });
    }
    showLoginError(message);
    $('login-password').select();
  } finally {
    button.disabled = false;
    button.textContent = t('auth.submit');
  }
}

async function onLogout() {
  try {
    await api('/api/logout', { method: 'POST', body: {} });
  } catch (err) {
    if (err.status !== 401) { toast(err.message); return; }
  }
  $('login-username').value = '';
  state.sessionLost = false;
  showLogin();
}

function startClock() {
  const tick = () => { $('clock').textContent = fmtClock(new Date()); };
  tick();
  setInterval(tick, 1000);
  setInterval(flashTick, 1000);
  setInterval(soundTick, 1000);
  setInterval(updateAges, 10000);
  // A slow full refresh backs the stream up (a proxy that silently drops
  // events would otherwise leave the wall screen stale).
  setInterval(() => { if (state.me) { refreshAll('poll'); refreshDuty(); } }, 60000);
}

function updateAges() {
  const now = Date.now();
  for (const el of document.querySelectorAll('.js-duration[data-from]')) {
    const from = Number(el.dataset.from);
    const to = el.dataset.to ? Number(el.dataset.to) : now;
    el.textContent = fmtDuration(to - from);
  }
  for (const el of document.querySelectorAll('.js-remaining[data-until]')) {
    el.textContent = fmtDuration(Number(el.dataset.until) - now);
  }
  for (const el of document.querySelectorAll('.js-ago[data-at]')) el.textContent = fmtAgo(Number(el.dataset.at));
}

function renderAll() {
  if (!state.me) return;
  $('user-role').textContent = t(`role.${state.me.role}`);
  resetRows();
  showAlarms();
  renderSuppressions();
  renderDevices();
  renderBuses();
  renderHistory();
  updateSoundNotice();
  renderBanner();
  if (!$('connection-banner').hidden) {
    $('connection-detail').textContent = t('conn.since', { t: fmtClock(new Date(state.lostSince || Date.now())) });
  }
}

// ---------------------------------------------------------------------
// Wiring.

function wireControls() {
  $('login-form').addEventListener('submit', onLoginSubmit);
  $('logout-button').addEventListener('click', onLogout);
  $('lang-switch').addEventListener('click', () => setLanguage(lang === 'zh' ? 'en' : 'zh'));
  $('mute-toggle').addEventListener('click', toggleMute);
  $('sound-hint').addEventListener('click', onSoundHint);
  $('alarm-banner-open').addEventListener('click', () => { const a = bannerAlarm(); if (a) openDetail(a.id); });
  $('alarm-banner-ack').addEventListener('click', () => { const a = bannerAlarm(); if (a) openAck(a); });
  $('alarm-banner-dismiss').addEventListener('click', dismissBanner);
  wireDialogs();
  wireHistory();
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
else boot();
