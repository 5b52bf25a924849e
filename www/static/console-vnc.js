// ringside console page: noVNC over /ws/<token>. The token is single-use:
// it is spent by the WebSocket upgrade, not by loading this page.
import RFB from '/static/novnc/core/rfb.js';
import KeyTable from '/static/novnc/core/input/keysym.js';
import keysyms from '/static/novnc/core/input/keysymdef.js';

const $ = (id) => document.getElementById(id);
const token = decodeURIComponent(location.pathname.split('/').filter(Boolean).pop() || '');
const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws/${encodeURIComponent(token)}`;

let rfb = null;
let connected = false;
let failure = null;

function setState(state, title, text, reason) {
  document.body.dataset.state = state;
  if (reason !== undefined) document.body.dataset.reason = reason;
  const st = $('status');
  st.className = `status ${state}`;
  st.textContent = { connecting: 'Connecting…', connected: 'Connected',
    disconnected: 'Disconnected', failed: 'Failed' }[state] || state;
  const ov = $('overlay');
  if (state === 'connected') { ov.hidden = true; } else {
    ov.hidden = false;
    $('otitle').textContent = title;
    $('otext').textContent = text;
    $('reload').hidden = state === 'connecting';
  }
  const live = state === 'connected';
  $('cad').disabled = !live;
  $('typesend').disabled = !live;
}

function connect() {
  setState('connecting', 'Connecting to the console…', 'This takes a moment.');
  try {
    rfb = new RFB($('screen'), wsUrl, { wsProtocols: ['binary'] });
  } catch (e) {
    setState('failed', 'Could not start the console', String(e.message || e), String(e));
    return;
  }
  rfb.scaleViewport = $('scale').checked;
  rfb.resizeSession = false;
  rfb.focusOnClick = true;
  rfb.addEventListener('connect', () => {
    connected = true;
    setState('connected');
    rfb.focus();
  });
  rfb.addEventListener('securityfailure', (e) => {
    failure = (e.detail && e.detail.reason) || 'The console could not be opened.';
  });
  rfb.addEventListener('disconnect', (e) => {
    const clean = e.detail && e.detail.clean;
    if (failure) {
      setState('failed', 'The console could not be opened', failure, failure);
    } else if (!connected) {
      setState('failed', 'Could not connect',
        'The console link may have expired or already been used. Open the console again from your control panel.',
        'refused');
    } else {
      setState('disconnected', 'The console was disconnected',
        clean ? 'The session ended.' : 'The connection was lost.', clean ? 'closed' : 'lost');
    }
  });
  rfb.addEventListener('desktopname', (e) => {
    if (e.detail && e.detail.name) document.title = `${e.detail.name} — Console`;
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

$('typeform').addEventListener('submit', (e) => {
  e.preventDefault();
  if (!rfb || !connected) return;
  typeText($('typetext').value);
  $('typetext').value = '';
  rfb.focus();
});
$('typeshow').addEventListener('click', () => {
  const t = $('typetext');
  t.type = t.type === 'password' ? 'text' : 'password';
});
$('cad').addEventListener('click', () => { if (rfb) { rfb.sendCtrlAltDel(); rfb.focus(); } });
$('scale').addEventListener('change', () => { if (rfb) rfb.scaleViewport = $('scale').checked; });
$('fullscreen').addEventListener('click', () => {
  if (document.fullscreenElement) document.exitFullscreen();
  else document.documentElement.requestFullscreen().catch(() => {});
});
$('reload').addEventListener('click', () => location.reload());

connect();
