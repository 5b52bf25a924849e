// ringside terminal page: xterm.js over /ws/<token>?resume=<secret>, speaking
// Proxmox's termproxy framing (ringside logs in upstream and strips
// termproxy's "OK"). Page -> ringside: "0:<bytes>:<data>" input,
// "1:<cols>:<rows>:" size, "2" keep-alive every 30 s. ringside -> page: raw
// terminal output. Reconnects after a drop like the VNC page.
/* global Terminal, FitAddon */
import { applyBranding, Backoff, closeKind, linkToken, onCommand, postState, serverReachable,
  showSupport, t, toggleFullscreen, wsUrl } from '/static/ringside.js';

const $ = (id) => document.getElementById(id);
const token = linkToken();
const enc = new TextEncoder();
let ws = null;
let connected = false;
let everConnected = false;
// A reload of a tab that held this link (its resume secret is stored): the
// 101 alone means the server took the console up again — a resumed shell
// says nothing until it prints, so waiting for output would leave the page
// on "Connecting…" with its overlay over the terminal.
const reloaded = (() => {
  try { return !!sessionStorage.getItem(`rs-resume:${token}`); } catch { return false; }
})();
let pinger = null;
let lastPosted = '';
const backoff = new Backoff();

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
  const key = `${state}|${cause || ''}`;
  if (key !== lastPosted) {
    lastPosted = key;
    postState(state, cause, message);
  }
}

applyBranding('terminal');
const term = new Terminal({ cursorBlink: true, fontSize: 14, scrollback: 5000,
  fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace' });
const fit = new FitAddon.FitAddon();
term.loadAddon(fit);
term.open($('screen'));
fit.fit();
window.ringsideTerm = term; // for tests and the curious: read-only use

function send(bytes) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(bytes);
}
function sendText(s) { send(enc.encode(s)); }
function sendBytes(data) {
  const head = enc.encode(`0:${data.length}:`);
  const msg = new Uint8Array(head.length + data.length);
  msg.set(head);
  msg.set(data, head.length);
  send(msg);
}
function sendInput(str) { sendBytes(enc.encode(str)); }
function sendSize() { sendText(`1:${term.cols}:${term.rows}:`); }

function showExpired() {
  setState('failed', { title: t('expired.title'), text: t('expired.text1'), text2: t('expired.text2'),
    reason: 'expired', cause: 'expired', message: t('expired.title') });
}

function scheduleRetry() {
  const delay = backoff.next();
  if (delay < 0) {
    setState('disconnected', { title: t('disconnected.terminal'), text: t('lost.text'),
      reason: 'lost', cause: 'lost' });
    return;
  }
  setState('reconnecting', { title: t('reconnecting.title'), text: t('reconnecting.text'),
    reason: 'reconnecting' });
  setTimeout(connect, delay);
}

async function onClose(e, opened) {
  clearInterval(pinger);
  const wasConnected = connected;
  connected = false;
  ws = null;
  if (!opened) {
    if (backoff.attempt && !(await serverReachable())) return scheduleRetry();
    return showExpired();
  }
  const kind = closeKind(e.code);
  if (kind === 'retry') return scheduleRetry();
  if (kind === 'replaced') {
    return setState('disconnected', { title: t('disconnected.terminal'),
      text: e.reason || t('replaced.text'), reason: 'replaced', cause: 'replaced', message: e.reason });
  }
  if (kind === 'ended' && (wasConnected || everConnected)) {
    return setState('disconnected', { title: t('disconnected.terminal'),
      text: e.reason || t('ended.text'), reason: 'closed', cause: 'closed', message: e.reason });
  }
  const why = e.reason || `${t('failed.text')} (${e.code})`;
  return setState('failed', { title: t('failed.terminal'), text: why, reason: why,
    cause: e.reason ? 'target' : `code_${e.code}`, message: why });
}

function up() {
  connected = true;
  everConnected = true;
  backoff.reset();
  setState('connected', { reason: '' });
  term.focus();
}

function connect() {
  if (!backoff.attempt) {
    setState('connecting', { title: t('connecting.terminal'), text: t('connecting.text') });
  }
  let opened = false;
  try {
    ws = new WebSocket(wsUrl(token), ['binary']);
  } catch (e) {
    setState('failed', { title: t('failed.start'), text: String(e.message || e), reason: String(e),
      cause: 'browser', message: String(e.message || e) });
    return;
  }
  window.ringsideSocket = ws; // for tests: the live WebSocket
  ws.binaryType = 'arraybuffer';
  ws.onopen = () => {
    opened = true;
    // A resumed terminal says nothing until the shell does: the 101 itself
    // means the server took the console up again.
    if (everConnected || reloaded) up();
    sendSize();
    pinger = setInterval(() => sendText('2'), 30000);
  };
  ws.onmessage = (e) => {
    if (!connected) up();
    term.write(new Uint8Array(e.data));
  };
  ws.onclose = (e) => { onClose(e, opened); };
}

// A view-only link: ringside drops the input anyway; the terminal takes none.
if (document.body.dataset.viewOnly !== undefined) term.options.disableStdin = true;
term.onData((d) => sendInput(d));
term.onBinary((d) => {
  const b = new Uint8Array(d.length);
  for (let i = 0; i < d.length; i++) b[i] = d.charCodeAt(i) & 255;
  sendBytes(b);
});
term.onResize(() => sendSize());
window.addEventListener('resize', () => fit.fit());
$('fullscreen').addEventListener('click', () => { toggleFullscreen().catch(() => {}); });
$('reload').addEventListener('click', () => location.reload());

onCommand(async (m) => {
  if (m.command === 'fullscreen') return toggleFullscreen();
  if (m.command === 'ctrl-alt-del') throw new Error('not available on a terminal');
  if (m.command !== 'type') throw new Error('unknown command');
  if (!connected) throw new Error('not connected');
  if (typeof m.text !== 'string' || m.text.length > 4096) throw new Error('text: a string of at most 4096 characters');
  return sendInput(m.text);
});

connect();
