/*
 * What the browser remembers for this page (language, mute): localStorage,
 * which can throw (disabled storage, some kiosk modes) — never let that stop
 * the page.
 */

export const LANG_KEY = 'campusgw.lang';
// Until when the sound is muted (epoch ms): a mute always ends by itself.
export const MUTE_KEY = 'campusgw.mutedUntil';

export const prefs = {
  get(key) {
    try { return window.localStorage.getItem(key); } catch { return null; }
  },
  set(key, value) {
    try { window.localStorage.setItem(key, value); } catch { /* not remembered */ }
  },
};
