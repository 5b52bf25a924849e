// ringside console page: noVNC over /ws/<token>?resume=<secret>. The token is
// single-use: it is spent by the WebSocket upgrade, not by loading this page;
// the resume secret (kept in this tab) lets the page take the console up
// again after a drop (README "The console page").
import RFB from '/static/novnc/core/rfb.js';
import KeyTable from '/static/novnc/core/input/keysym.js';
import keysyms from '/static/novnc/core/input/keysymdef.js';
import { applyBranding, Backoff, closeKind, linkToken, onCommand, postState, serverReachable,
  settings, showSupport, t, toggleFullscreen, wsUrl } from '/static/ringside.js';

const $ = (id) => document.getElementById(id);
const token = linkToken();

let rfb = null;
let connected = false; // the RFB session is up now
let everConnected = false;
let failure = null; // a security failure reported by noVNC
let lastPosted = '';
let retryTimer = null;
const viewOnly = document.body.dataset.viewOnly !== undefined; // a view-only link
const backoff = new Backoff();

// One place for every state: the page (data-state, data-reason for tests
// and styles), the toolbar, the overlay card, and the framing panel.
function setState(state, { title = '', text = '', text2 = '', reason, cause, message } = {}) {
  document.body.dataset.state = state;
  if (reason !== undefined) document.body.dataset.reason = reason;
  const st = $('status');
  st.className = `status ${state}`;
  st.textContent = t(`state.${state}`);
  const ov = $('overlay');
  if (state === 'connected') { ov.hidden = true; } else {
    ov.hidden = false;
    $('otitle').textContent = title;
    $('otext').textContent = text;
    $('otext2').textContent = text2;
    $('otext2').hidden = !text2;
    $('reload').hidden = state === 'connecting' || state === 'reconnecting' || reason === 'expired';
  }
  showSupport($('card'), state === 'failed' || state === 'disconnected');
  const live = state === 'connected';
  $('cad').disabled = !live;
  $('typesend').disabled = !live;
  const key = `${state}|${cause || ''}`;
  if (key !== lastPosted) {
    lastPosted = key;
    postState(state, cause, message);
  }
}

function showExpired() {
  setState('failed', { title: t('expired.title'), text: t('expired.text1'), text2: t('expired.text2'),
    reason: 'expired', cause: 'expired', message: t('expired.title') });
}

function scheduleRetry() {
  const delay = backoff.next();
  if (delay < 0) {
    setState('disconnected', { title: t('disconnected.console'), text: t('lost.text'),
      reason: 'lost', cause: 'lost' });
    return;
  }
  setState('reconnecting', { title: t('reconnecting.title'), text: t('reconnecting.text'),
    reason: 'reconnecting' });
  retryTimer = setTimeout(() => { retryTimer = null; connect(); }, delay);
}

async function onDisconnect(sock, info) {
  rfb = null;
  const wasConnected = connected;
  connected = false;
  if (!info.opened) {
    // The upgrade failed: refused (link used or expired, or a resume the
    // server no longer holds), or, while reconnecting, no network yet.
    if (backoff.attempt && !(await serverReachable())) return scheduleRetry();
    return showExpired();
  }
  if (failure) {
    return setState('failed', { title: t('failed.console'), text: failure, reason: failure,
      cause: 'security', message: failure });
  }
  const kind = info.code === undefined ? 'retry' : closeKind(info.code);
  if (kind === 'retry') return scheduleRetry();
  if (kind === 'replaced') {
    return setState('disconnected', { title: t('disconnected.console'),
      text: info.reason || t('replaced.text'), reason: 'replaced', cause: 'replaced',
      message: info.reason });
  }
  if (kind === 'ended' && (wasConnected || everConnected)) {
    return setState('disconnected', { title: t('disconnected.console'),
      text: info.reason || t('ended.text'), reason: 'closed', cause: 'closed', message: info.reason });
  }
  const why = info.reason || `${t('failed.text')} (${info.code})`;
  return setState('failed', { title: t('failed.console'), text: why, reason: why,
    cause: info.reason ? 'target' : `code_${info.code}`, message: why });
}

function connect() {
  if (!backoff.attempt) {
    setState('connecting', { title: t('connecting.console'), text: t('connecting.text') });
  }
  failure = null;
  const info = { opened: false, code: undefined, reason: '' };
  let sock;
  try {
    sock = new WebSocket(wsUrl(token), ['binary']);
  } catch (e) {
    setState('failed', { title: t('failed.start'), text: String(e.message || e), reason: String(e),
      cause: 'browser', message: String(e.message || e) });
    return;
  }
  // Registered before noVNC sets its handlers, so the close code is known
  // when noVNC reports the disconnect (its event carries no code).
  sock.addEventListener('open', () => { info.opened = true; });
  sock.addEventListener('close', (e) => { info.code = e.code; info.reason = e.reason; });
  try {
    rfb = new RFB($('screen'), sock);
  } catch (e) {
    setState('failed', { title: t('failed.start'), text: String(e.message || e), reason: String(e),
      cause: 'browser', message: String(e.message || e) });
    return;
  }
  window.ringsideSocket = sock; // for tests: the live WebSocket
  // A view-only link: ringside drops the input anyway; the page says so by
  // sending none and offering no input controls.
  rfb.viewOnly = viewOnly;
  rfb.scaleViewport = $('scale').checked;
  rfb.resizeSession = false;
  rfb.focusOnClick = true;
  rfb.addEventListener('connect', () => {
    connected = true;
    everConnected = true;
    backoff.reset();
    setState('connected', { reason: '' });
    rfb.focus();
  });
  rfb.addEventListener('securityfailure', (e) => {
    failure = (e.detail && e.detail.reason) || t('failed.text');
  });
  rfb.addEventListener('disconnect', () => { onDisconnect(sock, info); });
  rfb.addEventListener('desktopname', (e) => {
    if (e.detail && e.detail.name) document.title = `${e.detail.name} — ${settings.title || t('console')}`;
  });
}

// "Type text": send a string as key presses (e.g. a password into a login
// prompt), one keysym per character; newline becomes Return.
function typeText(text) {
  for (const ch of text) {
    let sym;
    if (ch === '\n') sym = KeyTable.XK_Return;
    else if (ch === '\t') sym = KeyTable.XK_Tab;
    else sym = keysyms.lookup(ch.codePointAt(0));
    if (sym) {
      rfb.sendKey(sym, null, true);
      rfb.sendKey(sym, null, false);
    }
  }
}

applyBranding('console');

if (viewOnly) {
  $('typeform').style.display = 'none';
  $('cad').style.display = 'none';
}
$('typeform').addEventListener('submit', (e) => {
  e.preventDefault();
  if (!rfb || !connected) return;
  typeText($('typetext').value);
  $('typetext').value = '';
  rfb.focus();
});
$('typeshow').addEventListener('click', () => {
  const tt = $('typetext');
  tt.type = tt.type === 'password' ? 'text' : 'password';
});
$('cad').addEventListener('click', () => { if (rfb) { rfb.sendCtrlAltDel(); rfb.focus(); } });
$('scale').addEventListener('change', () => { if (rfb) rfb.scaleViewport = $('scale').checked; });
$('fullscreen').addEventListener('click', () => { toggleFullscreen().catch(() => {}); });
$('reload').addEventListener('click', () => location.reload());

// The framing panel's commands (README "Embedding").
onCommand(async (m) => {
  if (m.command === 'fullscreen') return toggleFullscreen();
  if (m.command !== 'ctrl-alt-del' && m.command !== 'type') throw new Error('unknown command');
  if (!rfb || !connected) throw new Error('not connected');
  if (m.command === 'ctrl-alt-del') return rfb.sendCtrlAltDel();
  if (typeof m.text !== 'string' || m.text.length > 4096) throw new Error('text: a string of at most 4096 characters');
  return typeText(m.text);
});

window.addEventListener('pagehide', () => { if (retryTimer) clearTimeout(retryTimer); });

connect();
