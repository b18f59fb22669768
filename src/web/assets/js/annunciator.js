/*
 * Annunciation: the sound, the banner and the title flash, and noticing
 * the alarms that just started calling (which end a mute).
 */

import { t, lang } from './i18n.js';
import { $, h, svg, clear, ms, pad2, fmtDateTime, fmtAgo, alarmText, sevBadge } from './dom.js';
import { MUTE_KEY, prefs } from './prefs.js';
import { state, canAct, isQuiet, needsAck, byUrgency, isUndeclared } from './store.js';
import { placeParts } from './views/alarms.js';

// Annunciation: what makes a person look up at 3 am.
//
//  - An unacknowledged critical or high alarm (not shelved, not in a
//    drill) sounds, and keeps sounding, until it is acknowledged or the
//    sound is muted for MUTE_MINUTES; a new one ends a mute. Critical and
//    high have patterns of their own. A cleared alarm nobody acknowledged
//    still sounds: nobody has seen it.
//  - A lost event stream (the page no longer sees new alarms, for as long
//    as reconnecting fails) and an ended session sound a third pattern,
//    after a short grace for blips.
//  - A banner across the top, whatever the scroll position, names the most
//    urgent of those alarms until it is acknowledged or dismissed.
//  - Browsers keep audio locked until someone clicks or types on the page
//    (again after every reload); the page says so plainly. A kiosk started
//    with --autoplay-policy=no-user-gesture-required needs no click.
// window.__campusgwSound counts the patterns started (`plays`) and those
// the browser would not play (`blocked`), so a test can see the repeat
// without timing anything; it holds counts only.

const MUTE_MINUTES = 5;
const CONN_GRACE_MS = 5000;
const SOUNDING = ['critical', 'high'];

// Each pattern: oscillator type, gain, notes as [Hz, start s, length s],
// and how often it repeats, ms.
const PATTERNS = {
  // A fast falling two-tone, like an evacuation signal.
  critical: {
    type: 'square', gain: 0.16, every: 4000,
    notes: [[988, 0, 0.22], [740, 0.25, 0.22], [988, 0.5, 0.22], [740, 0.75, 0.22], [988, 1.0, 0.22], [740, 1.25, 0.22]],
  },
  // Two long, even beeps.
  high: { type: 'triangle', gain: 0.35, every: 8000, notes: [[784, 0, 0.45], [784, 0.7, 0.45]] },
  // Three slow steps down: the line is dead.
  connection: { type: 'sawtooth', gain: 0.12, every: 10000, notes: [[523, 0, 0.4], [392, 0.5, 0.4], [262, 1.0, 0.7]] },
};

const sound = { ctx: null, mutedUntil: Number(prefs.get(MUTE_KEY)) || 0, next: 0, turn: 0, playing: [] };
const soundHook = { plays: 0, blocked: 0, pattern: null, last: null, audio: 'none', muted: false };
window.__campusgwSound = soundHook;

export function initSound() {
  const AC = window.AudioContext || window.webkitAudioContext;
  if (AC) {
    try {
      sound.ctx = new AC();
      sound.ctx.addEventListener('statechange', () => { updateSoundNotice(); annunciate(); });
    } catch { sound.ctx = null; }
  }
  const unlock = () => {
    if (sound.ctx && sound.ctx.state !== 'running') sound.ctx.resume().then(updateSoundNotice, () => {});
  };
  document.addEventListener('pointerdown', unlock, true);
  document.addEventListener('keydown', unlock, true);
  updateSoundNotice();
  updateMuteButton();
}

const audioReady = () => !!sound.ctx && sound.ctx.state === 'running';
const mutedNow = () => Date.now() < sound.mutedUntil;

/** Says plainly when the browser will not let the page make a sound, and what to do. */
export function updateSoundNotice() {
  const el = $('sound-banner');
  const show = (!!state.me || state.sessionLost) && !audioReady();
  el.hidden = !show;
  if (!show) return;
  $('sound-banner-what').textContent = sound.ctx ? t('sound.blocked') : t('sound.none');
  $('sound-banner-how').textContent = sound.ctx ? t('sound.blockedHow') : '';
  $('sound-banner-cmd').textContent = sound.ctx ? `chromium --kiosk --autoplay-policy=no-user-gesture-required ${window.location.origin}/` : '';
  $('sound-hint').hidden = !sound.ctx;
}

export function updateMuteButton() {
  const b = $('mute-toggle');
  const muted = mutedNow();
  const left = Math.max(0, sound.mutedUntil - Date.now());
  clear(b);
  b.append(bellIcon(muted), h('span', null, muted
    ? t('sound.mutedLeft', { t: `${Math.floor(left / 60000)}:${pad2(Math.floor(left / 1000) % 60)}` })
    : t('sound.muteFor', { n: MUTE_MINUTES })));
  b.setAttribute('aria-pressed', muted ? 'true' : 'false');
  b.setAttribute('title', muted ? t('sound.toggleOff') : t('sound.toggleOn', { n: MUTE_MINUTES }));
  b.classList.toggle('is-muted', muted);
  b.dataset.muted = muted ? 'true' : 'false';
}

function bellIcon(muted) {
  const icon = svg('svg', { class: 'icon', viewBox: '0 0 24 24', 'aria-hidden': 'true' },
    svg('path', { d: 'M6 16V10a6 6 0 0 1 12 0v6l1.5 2h-15zM10 20.5a2.2 2.2 0 0 0 4 0' }));
  if (muted) icon.append(svg('path', { d: 'M3.5 3.5l17 17' }));
  return icon;
}

function setMutedUntil(until) {
  sound.mutedUntil = until;
  prefs.set(MUTE_KEY, String(until));
  soundHook.muted = mutedNow();
  updateMuteButton();
}

/** Mutes for MUTE_MINUTES, or ends the mute. */
export function toggleMute() {
  if (mutedNow()) {
    setMutedUntil(0);
    sound.next = 0;
    // Nothing to sound: a soft tone says the speakers work.
    if (!wantedPatterns().length) tone([660], 0.12, 0.12);
    annunciate();
  } else {
    setMutedUntil(Date.now() + MUTE_MINUTES * 60000);
    silence();
  }
}

export function onSoundHint() {
  if (!sound.ctx) return;
  sound.ctx.resume().then(() => {
    updateSoundNotice();
    if (!wantedPatterns().length) tone([660], 0.12, 0.12);
    annunciate();
  }, () => {});
}

/** Plays `freqs` one after another, each `len` seconds, at `gain`: the speaker check. */
function tone(freqs, len, gain) {
  if (!audioReady()) return;
  const ctx = sound.ctx;
  let at = ctx.currentTime + 0.02;
  for (const f of freqs) {
    const osc = ctx.createOscillator();
    const amp = ctx.createGain();
    osc.type = 'sine';
    osc.frequency.value = f;
    amp.gain.setValueAtTime(0.0001, at);
    amp.gain.exponentialRampToValueAtTime(gain, at + 0.015);
    amp.gain.exponentialRampToValueAtTime(0.0001, at + len);
    osc.connect(amp).connect(ctx.destination);
    osc.start(at);
    osc.stop(at + len + 0.05);
    at += len * 0.9;
  }
}

/** Starts pattern `name`; false when the browser keeps audio locked. */
function play(name) {
  if (!audioReady()) return false;
  const p = PATTERNS[name];
  const ctx = sound.ctx;
  const t0 = ctx.currentTime + 0.02;
  silence();
  for (const [f, at, len] of p.notes) {
    const osc = ctx.createOscillator();
    const amp = ctx.createGain();
    osc.type = p.type;
    osc.frequency.value = f;
    amp.gain.setValueAtTime(0.0001, t0 + at);
    amp.gain.exponentialRampToValueAtTime(p.gain, t0 + at + 0.02);
    amp.gain.setValueAtTime(p.gain, t0 + at + len * 0.7);
    amp.gain.exponentialRampToValueAtTime(0.0001, t0 + at + len);
    osc.connect(amp).connect(ctx.destination);
    osc.start(t0 + at);
    osc.stop(t0 + at + len + 0.05);
    sound.playing.push(osc);
  }
  return true;
}

/** Stops a pattern midway (acknowledged, muted). */
function silence() {
  for (const osc of sound.playing) {
    try { osc.stop(); } catch { /* already stopped */ }
  }
  sound.playing = [];
}

/**
 * The alarms that call for a person: unacknowledged critical or high ones,
 * not shelved or in a drill; a flood group's members stand for it.
 */
function callingAlarms() {
  const out = [];
  for (const a of state.active) {
    if (isQuiet(a)) continue;
    const list = a.is_group && Array.isArray(a.members) && a.members.length ? a.members : [a];
    for (const m of list) if (SOUNDING.includes(m.severity) && needsAck(m) && !isQuiet(m)) out.push(m);
  }
  return out;
}

/** The patterns wanted now, most urgent first. */
function wantedPatterns() {
  const out = [];
  if (state.me) {
    const calling = callingAlarms();
    if (calling.some((a) => a.severity === 'critical')) out.push('critical');
    else if (calling.length) out.push('high');
  }
  const lost = state.sessionLost ||
    (!!state.me && !state.connected && state.lostSince !== null && Date.now() - state.lostSince >= CONN_GRACE_MS);
  if (lost) out.push('connection');
  return out;
}

/** Starts the next pattern when one is due: every second and whenever the alarms change. */
export function annunciate() {
  const wanted = wantedPatterns();
  soundHook.pattern = wanted[0] || null;
  soundHook.muted = mutedNow();
  soundHook.audio = sound.ctx ? sound.ctx.state : 'none';
  if (!wanted.length) {
    if (sound.next) silence();
    sound.next = 0;
    return;
  }
  if (soundHook.muted || Date.now() < sound.next) return;
  // An alarm and a dead line take turns.
  const name = wanted[sound.turn++ % wanted.length];
  sound.next = Date.now() + PATTERNS[name].every;
  soundHook.last = name;
  if (play(name)) soundHook.plays += 1;
  else soundHook.blocked += 1;
}

export function soundTick() {
  if (sound.mutedUntil && !mutedNow()) setMutedUntil(0);
  else if (sound.mutedUntil) updateMuteButton();
  annunciate();
}

// The banner: alarm ids the operator closed it for. An alarm that stops
// calling (acknowledged) is forgotten, so its next raise shows again.
const dismissed = new Set();
let bannerSig = '';

export function renderBanner() {
  const el = $('alarm-banner');
  const calling = state.me ? callingAlarms() : [];
  const ids = new Set(calling.map((a) => a.id));
  for (const id of dismissed) if (!ids.has(id)) dismissed.delete(id);
  const shown = calling.filter((a) => !dismissed.has(a.id)).sort(byUrgency);
  if (!shown.length) {
    el.hidden = true;
    el.dataset.alarmId = '';
    bannerSig = '';
    return;
  }
  const a = shown[0];
  const raised = ms(a.raised_at);
  el.hidden = false;
  // Unchanged: left alone, so a screen reader does not announce it again.
  const sig = JSON.stringify([a, shown.length, lang, canAct(), isUndeclared(a)]);
  if (sig === bannerSig) return;
  bannerSig = sig;
  el.className = `alarm-banner sev-${a.severity}`;
  el.dataset.alarmId = String(a.id);
  el.dataset.severity = a.severity;
  const sev = $('alarm-banner-sev');
  clear(sev);
  sev.append(sevBadge(a.severity, { short: false }));
  $('alarm-banner-what').textContent = alarmText(a);
  const where = $('alarm-banner-where');
  clear(where);
  where.append(...placeParts(a));
  const when = $('alarm-banner-when');
  clear(when);
  when.append(fmtDateTime(raised), ' · ', h('span', { class: 'js-ago', 'data-at': raised }, fmtAgo(raised)));
  $('alarm-banner-more').textContent = shown.length > 1 ? t('banner.more', { n: shown.length - 1 }) : '';
  $('alarm-banner-ack').hidden = !canAct();
}

export function bannerAlarm() {
  const id = Number($('alarm-banner').dataset.alarmId);
  return callingAlarms().find((a) => a.id === id) || null;
}

export function dismissBanner() {
  for (const a of callingAlarms()) dismissed.add(a.id);
  renderBanner();
}

// Title flash: on while any critical alarm waits for acknowledgement.
let flashOn = false;

function unackedCritical() {
  return state.active.filter((a) => !isQuiet(a) && a.severity === 'critical' && needsAck(a)).length;
}

export function updateTitle() {
  const n = state.me ? state.active.filter((a) => !isQuiet(a)).length : 0;
  const base = `${n ? t('title.count', { n }) : ''}${t('app.title')}`;
  document.title = flashOn && unackedCritical() ? `${t('title.critical')} (${unackedCritical()})` : base;
}

export function flashTick() {
  flashOn = state.me ? !flashOn && unackedCritical() > 0 : false;
  updateTitle();
}

/**
 * Notices alarms that just started calling: a new raise, a member joining
 * a flood group, a re-raise after acknowledgement. They sound at once, and
 * end a mute (meant for the alarms that were already known).
 */
export function noticeNewAlarms(alarms, { silent = false, prune = false } = {}) {
  const all = [];
  for (const a of alarms) {
    all.push(a);
    if (Array.isArray(a.members)) all.push(...a.members);
  }
  let fresh = false;
  for (const a of all) {
    const before = state.lastState.get(a.id);
    if (!silent && SOUNDING.includes(a.severity) && a.state === 'unacked' && !isQuiet(a) && before !== 'unacked') fresh = true;
    state.lastState.set(a.id, a.state);
  }
  if (prune) {
    const ids = new Set(all.map((a) => a.id));
    for (const id of state.lastState.keys()) if (!ids.has(id)) state.lastState.delete(id);
  }
  if (fresh) {
    if (sound.mutedUntil) setMutedUntil(0);
    sound.next = 0;
    flashOn = false;
    flashTick();
  }
}
