// ringside terminal page: xterm.js over /ws/<token>, speaking Proxmox's
// termproxy framing (ringside logs in upstream and strips termproxy's "OK").
// Page -> ringside: "0:<bytes>:<data>" input, "1:<cols>:<rows>:" size, "2"
// keep-alive every 30 s. ringside -> page: raw terminal output.
/* global Terminal, FitAddon */
const $ = (id) => document.getElementById(id);
const token = decodeURIComponent(location.pathname.split('/').filter(Boolean).pop() || '');
const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws/${encodeURIComponent(token)}`;
const enc = new TextEncoder();
let ws = null;
let gotData = false;
let pinger = null;

function setState(state, title, text, reason) {
  document.body.dataset.state = state;
  if (reason !== undefined) document.body.dataset.reason = reason;
  const st = $('status');
  st.className = `status ${state}`;
  st.textContent = { connecting: 'Connecting…', connected: 'Connected',
    disconnected: 'Disconnected', failed: 'Failed' }[state] || state;
  const ov = $('overlay');
  if (state === 'connected') { ov.hidden = true; return; }
  ov.hidden = false;
  $('otitle').textContent = title;
  $('otext').textContent = text;
  $('reload').hidden = state === 'connecting';
}

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
function sendInput(str) {
  const data = enc.encode(str);
  const head = enc.encode(`0:${data.length}:`);
  const msg = new Uint8Array(head.length + data.length);
  msg.set(head);
  msg.set(data, head.length);
  send(msg);
}
function sendSize() { sendText(`1:${term.cols}:${term.rows}:`); }

function connect() {
  setState('connecting', 'Connecting to the terminal…', 'This takes a moment.');
  ws = new WebSocket(wsUrl, ['binary']);
  ws.binaryType = 'arraybuffer';
  ws.onopen = () => {
    sendSize();
    pinger = setInterval(() => sendText('2'), 30000);
  };
  ws.onmessage = (e) => {
    if (!gotData) {
      gotData = true;
      setState('connected');
      term.focus();
    }
    term.write(new Uint8Array(e.data));
  };
  ws.onclose = (e) => {
    clearInterval(pinger);
    if (e.code >= 4000 && e.code <= 4999) {
      setState('failed', 'The terminal could not be opened', e.reason || 'The console failed.', e.reason);
    } else if (!gotData) {
      setState('failed', 'Could not connect', e.reason ||
        'The console link may have expired or already been used. Open the console again from your control panel.',
        'refused');
    } else {
      setState('disconnected', 'The terminal was disconnected',
        e.code === 1000 ? 'The session ended.' : 'The connection was lost.', e.code === 1000 ? 'closed' : 'lost');
    }
  };
}

term.onData((d) => sendInput(d));
term.onBinary((d) => {
  const b = new Uint8Array(d.length);
  for (let i = 0; i < d.length; i++) b[i] = d.charCodeAt(i) & 255;
  const head = enc.encode(`0:${b.length}:`);
  const msg = new Uint8Array(head.length + b.length);
  msg.set(head);
  msg.set(b, head.length);
  send(msg);
});
term.onResize(() => sendSize());
window.addEventListener('resize', () => fit.fit());
$('fullscreen').addEventListener('click', () => {
  if (document.fullscreenElement) document.exitFullscreen();
  else document.documentElement.requestFullscreen().catch(() => {});
});
$('reload').addEventListener('click', () => location.reload());

connect();
