/*
 * The JSON API: same-origin calls with the CSRF token on every POST, and
 * error bodies in the page's language. The signed-in session comes from the
 * caller (`configureApi`), so this module holds no state of its own.
 */

import { DICT, lang, t } from './i18n.js';
import { stateLabel } from './dom.js';

// Requests made, per path and query: a browser test reads it to prove that
// stream events are applied without refetching. Counts only.
const fetches = {};
window.__campusgwFetches = fetches;

let session = () => null;
let onSessionLost = () => {};

/**
 * `current()` is the signed-in user (`{ csrf, … }`) or null; `lost()` is
 * called when the server says a session has ended.
 */
export function configureApi({ current, lost }) {
  session = current;
  onSessionLost = lost;
}

/** The session has ended (signed out by the server, not by the user). */
export function sessionLost() {
  onSessionLost();
}

export class ApiError extends Error {
  constructor(status, message, data) {
    super(message);
    this.status = status;
    this.data = data;
  }
}

/**
 * Same-origin JSON call. POSTs carry the CSRF token; a 401 outside sign-in
 * means the session has ended, so the sign-in form comes back.
 */
export async function api(path, { method = 'GET', body } = {}) {
  const opts = { method, credentials: 'same-origin', headers: { Accept: 'application/json' }, cache: 'no-store' };
  if (method !== 'GET') {
    opts.headers['Content-Type'] = 'application/json';
    const me = session();
    if (me && me.csrf) opts.headers['X-CSRF-Token'] = me.csrf;
    opts.body = JSON.stringify(body === undefined ? {} : body);
  }
  fetches[path] = (fetches[path] || 0) + 1;
  let res;
  try {
    res = await fetch(path, opts);
  } catch {
    throw new ApiError(0, t('err.network'));
  }
  const text = res.status === 204 ? '' : await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!res.ok) {
    const message = errorText(data, res.status);
    if (res.status === 401 && path !== '/api/login' && path !== '/api/me' && session()) sessionLost();
    throw new ApiError(res.status, message, data);
  }
  return data;
}

/**
 * An error body in the page's language: its stable `code` translated, the
 * server's English `error` for a code this page does not know yet.
 */
function errorText(data, status) {
  const detail = (data && typeof data.error === 'string' && data.error) || '';
  const code = data && typeof data.code === 'string' ? data.code : '';
  const key = `err.${code}`;
  if (!code || (DICT[lang][key] === undefined && DICT.en[key] === undefined)) {
    return detail || t('err.http', { status });
  }
  const vars = { detail: detail || code };
  if (code === 'not_allowed') {
    vars.action = DICT.en[`verb.${data.action}`] ? t(`verb.${data.action}`) : String(data.action || '');
    vars.state = DICT.en[`state.${data.state}`] ? stateLabel(data.state) : String(data.state || '');
  }
  if (code === 'slow_down') vars.n = Math.max(1, Math.ceil(Number(data.retry_after_s) || 1));
  return t(key, vars);
}
