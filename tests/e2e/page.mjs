// The console page as customers and panels meet it, in a real headless
// Chromium against ringside and a real Xvnc.
//
// MODE=embed: a panel page on another origin frames the console.
//   - a parent on an origin not in console.frame_ancestors: the browser
//     blocks the frame (no WebSocket, the link stays unused);
//   - the allowed parent: the console works inside the iframe, the parent
//     receives the state messages, its commands work, while the same
//     commands from a third-origin frame inside that parent are ignored;
//   - branding in the frame: German texts (the browser's Accept-Language),
//     the title, the logo, the accent colour.
//   env: RINGSIDE_URL RINGSIDE_KEY VNC_PORT VNC_PASSWORD ALLOWED_ORIGIN OTHER_ORIGIN
//        TITLE ACCENT
// MODE=reconnect: the page's side of resume, against ringside's.
//   - the WebSocket carries ?resume=<32 random bytes, base64url>, kept in
//     sessionStorage under rs-resume:<token>;
//   - a dropped connection (the test's TCP proxy resets it, then refuses
//     connections for a while): "reconnecting…", tries after the back-off
//     with the same secret, and once the network is back the same console
//     resumes (`ringside ctl sessions`: one session, detached meanwhile;
//     ringside_console_resumes_total{outcome="resumed"}; the desktop shows);
//   - dropped again and ended by an operator while detached: the retry is
//     refused — the expired screen with the support link, no more tries;
//   - a console closed by an operator (1000): "disconnected", no reconnect.
//   env: RINGSIDE_URL RINGSIDE_KEY VNC_PORT VNC_PASSWORD COLOUR RINGSIDE_BIN CTL_SOCK
//        SUPPORT_URL METRICS_URL
// MODE=codes: what each close code does, against a scripted RFB server
//   (Playwright's WebSocket routing), so each code can be sent at will:
//   1001 → reconnecting, then a successful try → connected again; 4001 →
//   "replaced", final; 1011 → failed with the reason; 1000 → ended; and the
//   back-off's schedule and 30 s limit.
//   env: RINGSIDE_URL RINGSIDE_KEY VNC_PORT VNC_PASSWORD
// MODE=term: the same drop on the xterm.js page (a Proxmox LXC terminal):
//   "reconnecting…", a try with the same secret, connected again on the same
//   shell (a variable set before the drop is still set).
//   env: RINGSIDE_URL RINGSIDE_KEY CLUSTER METRICS_URL
import { createRequire } from 'node:module';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
const require = createRequire(new URL('../../www/package.json', import.meta.url));
const { chromium } = require('playwright-core');

const env = (k, d) => process.env[k] ?? d;
const mode = env('MODE');
const base = env('RINGSIDE_URL');
const key = env('RINGSIDE_KEY');

let passed = 0, failed = 0;
function check(name, ok, detail = '') {
  if (ok) { passed++; console.log(`ok   ${name}`); } else { failed++; console.log(`FAIL ${name} ${detail}`); }
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function createConsole(spec) {
  const r = await fetch(`${base}/api/v1/consoles`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(spec || { kind: 'vnc', host: '127.0.0.1', port: Number(env('VNC_PORT')),
      password: env('VNC_PASSWORD'), label: 'page-e2e' }),
  });
  const body = await r.json();
  if (r.status !== 201) throw new Error(`API: ${r.status} ${JSON.stringify(body)}`);
  return body;
}

// Wait until fn() is truthy (polling), or give up after ms.
async function until(fn, ms = 10000, step = 25) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v || Date.now() > end) return v;
    await sleep(step);
  }
}

// The sum of a Prometheus family's series whose labels contain <labels>.
async function metric(name, labels) {
  const text = await (await fetch(env('METRICS_URL'))).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    const m = line.match(/^([a-z_]+)(\{[^}]*\})? (\S+)$/);
    if (m && m[1] === name && (m[2] || '').includes(labels)) sum += Number(m[3]);
  }
  return sum;
}

// The middle pixel of noVNC's canvas, and whether it has the desktop's colour.
const pixel = (page) => page.evaluate(() => {
  const c = document.querySelector('#screen canvas');
  if (!c || !c.width) return null;
  const d = c.getContext('2d').getImageData(c.width >> 1, c.height >> 1, 1, 1).data;
  return [d[0], d[1], d[2]];
});
async function screenShows(page, ms = 5000) {
  const colour = env('COLOUR', '#2e8b57');
  const want = [1, 3, 5].map((i) => parseInt(colour.slice(i, i + 2), 16));
  return !!(await until(async () => {
    const px = await pixel(page);
    return px && px.every((v, k) => Math.abs(v - want[k]) <= 8);
  }, ms, 100));
}

// xterm.js's buffer as text (the page exposes its Terminal as window.ringsideTerm).
const termText = (page) => page.evaluate(() => {
  const b = window.ringsideTerm.buffer.active;
  const out = [];
  for (let y = 0; y < b.length; y++) out.push(b.getLine(y).translateToString(true));
  return out.join('\n');
});
const termShows = async (page, re, ms = 6000) => !!(await until(async () => re.test(await termText(page)), ms, 100));

// Listens on host:port (another loopback address = another origin); closed at the end.
function listen(server, host, port) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}

const servers = [];

// A panel page: the console in an iframe, every message it receives kept in
// window.msgs; with ?evil=<url> a second, third-origin frame next to it.
function parentPage(consoleUrl, evilUrl) {
  const consoleOrigin = new URL(consoleUrl).origin;
  return `<!DOCTYPE html><html><body>
<iframe id="console" name="console" src="${consoleUrl}" allow="fullscreen" width="900" height="600"></iframe>
${evilUrl ? `<iframe id="evil" name="evil" src="${evilUrl}" width="50" height="50"></iframe>` : ''}
<script>
window.msgs = [];
addEventListener('message', (e) => { msgs.push({ origin: e.origin, data: e.data }); });
window.send = (m) => document.getElementById('console').contentWindow.postMessage(m, ${JSON.stringify(consoleOrigin)});
</script></body></html>`;
}

// A third-origin frame inside the panel that tries to command the console.
const EVIL_PAGE = `<!DOCTYPE html><html><body><script>
window.msgs = [];
addEventListener('message', (e) => { msgs.push({ origin: e.origin, data: e.data }); });
window.fire = () => {
  const c = parent.frames.console;
  c.postMessage({ type: 'ringside.command', command: 'ctrl-alt-del', id: 'evil-cad' }, '*');
  c.postMessage({ type: 'ringside.command', command: 'type', text: 'evil', id: 'evil-type' }, '*');
};
</script></body></html>`;

function panelServer(host, port) {
  const srv = http.createServer((req, res) => {
    const u = new URL(req.url, `http://${host}:${port}`);
    res.setHeader('Content-Type', 'text/html; charset=utf-8');
    if (u.pathname === '/evil') return res.end(EVIL_PAGE);
    if (u.pathname !== '/parent') { res.statusCode = 404; return res.end(); }
    return res.end(parentPage(u.searchParams.get('src'), u.searchParams.get('evil')));
  });
  servers.push(srv);
  return listen(srv, host, port);
}

function hasKeysym(frames, sym) {
  const b = Buffer.from([0, 0, (sym >> 8) & 255, sym & 255]);
  return frames.some((f) => Buffer.isBuffer(f) && f.indexOf(b) >= 0);
}

async function embed() {
  const allowed = new URL(env('ALLOWED_ORIGIN'));
  const other = new URL(env('OTHER_ORIGIN'));
  await panelServer(allowed.hostname, Number(allowed.port));
  await panelServer(other.hostname, Number(other.port));
  const { url } = await createConsole();
  const consoleOrigin = new URL(url).origin;

  // 1. Another origin frames the console: blocked by the browser.
  const blocked = await ctx.newPage();
  const blockedWs = [];
  blocked.on('websocket', (ws) => blockedWs.push(ws.url()));
  await blocked.goto(`${other.origin}/parent?src=${encodeURIComponent(url)}`);
  await sleep(1500);
  const bf = blocked.frames().find((f) => f !== blocked.mainFrame());
  let bstate = null;
  try { bstate = await bf.evaluate(() => document.body && document.body.dataset.state); } catch { /* error page */ }
  check('a parent on another origin: the browser refuses to show the console in its frame',
    bstate !== 'connecting' && bstate !== 'connected', `frame url=${bf && bf.url()} state=${bstate}`);
  check('... and no WebSocket was opened (the link stays unused)', blockedWs.length === 0, blockedWs.join(' '));
  check('... and the parent got no state message',
    (await blocked.evaluate(() => window.msgs.length)) === 0);
  await blocked.close();

  // 2. The allowed origin frames the same link: it works.
  const page = await ctx.newPage();
  const sent = [];
  const wsUrls = [];
  page.on('websocket', (ws) => {
    wsUrls.push(ws.url());
    ws.on('framesent', (f) => sent.push(Buffer.isBuffer(f.payload) ? f.payload : Buffer.from(f.payload)));
  });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${allowed.origin}/parent?src=${encodeURIComponent(url)}&evil=${encodeURIComponent(`${other.origin}/evil`)}`);
  const msgsWith = async (pred) => (await page.evaluate(() => window.msgs)).filter(pred);
  const states = async () => (await msgsWith((m) => m.data && m.data.type === 'ringside.state')).map((m) => m.data.state);
  await until(async () => (await states()).includes('connected'), 20000);
  const st = await states();
  check('an allowed parent: the console connects inside its iframe and the parent hears "connecting", then "connected"',
    st[0] === 'connecting' && st.includes('connected'), JSON.stringify(st));
  const all = await page.evaluate(() => window.msgs);
  check('every message the parent got comes from the console\'s origin',
    all.length > 0 && all.every((m) => m.origin === consoleOrigin), JSON.stringify(all));
  const frame = page.frame({ name: 'console' });
  check('the frame\'s page is connected', (await frame.evaluate(() => document.body.dataset.state)) === 'connected');

  // Branding, in German (the browser's Accept-Language is de-DE).
  const b = await frame.evaluate(() => ({
    lang: document.documentElement.lang,
    status: document.getElementById('status').textContent,
    cad: document.getElementById('cad').textContent,
    title: document.title,
    brand: document.querySelector('#brand span') && document.querySelector('#brand span').textContent,
    logo: document.querySelector('#brand img') && document.querySelector('#brand img').naturalWidth,
    accent: getComputedStyle(document.getElementById('bar')).borderBottomColor,
  }));
  check('texts in German for a de-DE browser', b.lang === 'de' && b.status === 'Verbunden' && b.cad === 'Strg-Alt-Entf', JSON.stringify(b));
  check('console.title in the toolbar and the window title',
    b.brand === env('TITLE') && b.title.includes(env('TITLE')), JSON.stringify(b));
  check('console.logo is shown (loaded from ringside, allowed by the CSP)', b.logo > 0, JSON.stringify(b));
  const acc = env('ACCENT');
  const rgb = `rgb(${parseInt(acc.slice(1, 3), 16)}, ${parseInt(acc.slice(3, 5), 16)}, ${parseInt(acc.slice(5, 7), 16)})`;
  check('console.accent_colour colours the toolbar', b.accent === rgb, `${b.accent} != ${rgb}`);

  // 3. Commands from a third-origin frame inside the panel: ignored.
  await sleep(300);
  const before = sent.length;
  const evil = page.frame({ name: 'evil' });
  await evil.evaluate(() => window.fire());
  await sleep(1000);
  check('commands from another origin are ignored: no key reaches the console',
    !hasKeysym(sent.slice(before), 0xffe3) && !hasKeysym(sent.slice(before), 0x65), `${sent.length - before} frames`);
  check('... and get no answer', (await evil.evaluate(() => window.msgs.length)) === 0 &&
    (await msgsWith((m) => m.data && m.data.type === 'ringside.result')).length === 0);

  // 4. Commands from the allowed parent work.
  const mark = sent.length;
  await page.evaluate(() => window.send({ type: 'ringside.command', command: 'ctrl-alt-del', id: 1 }));
  const r1 = await until(async () => (await msgsWith((m) => m.data && m.data.type === 'ringside.result' && m.data.id === 1))[0], 5000);
  check('Ctrl-Alt-Del from the allowed parent: answered ok', r1 && r1.data.ok === true, JSON.stringify(r1));
  await until(async () => hasKeysym(sent.slice(mark), 0xffff), 3000);
  check('... and Control_L, Alt_L, Delete went to the console', hasKeysym(sent.slice(mark), 0xffe3) &&
    hasKeysym(sent.slice(mark), 0xffe9) && hasKeysym(sent.slice(mark), 0xffff), `${sent.length - mark} frames`);
  const mark2 = sent.length;
  await page.evaluate(() => window.send({ type: 'ringside.command', command: 'type', text: 'xyz', id: 2 }));
  const r2 = await until(async () => (await msgsWith((m) => m.data && m.data.type === 'ringside.result' && m.data.id === 2))[0], 5000);
  await until(async () => hasKeysym(sent.slice(mark2), 0x7a), 3000);
  check('"type" from the allowed parent: answered ok and the keys went out',
    r2 && r2.data.ok === true && hasKeysym(sent.slice(mark2), 0x78) && hasKeysym(sent.slice(mark2), 0x7a), JSON.stringify(r2));
  await page.evaluate(() => window.send({ type: 'ringside.command', command: 'fullscreen', id: 4 }));
  const r4 = await until(async () => (await msgsWith((m) => m.data && m.data.type === 'ringside.result' && m.data.id === 4))[0], 5000);
  // Headless Chromium may refuse full screen without a user gesture: either answer will do.
  check('"fullscreen" is answered', r4 && typeof r4.data.ok === 'boolean', JSON.stringify(r4));
  await page.evaluate(() => window.send({ type: 'ringside.command', command: 'reboot', id: 3 }));
  const r3 = await until(async () => (await msgsWith((m) => m.data && m.data.type === 'ringside.result' && m.data.id === 3))[0], 5000);
  check('an unknown command is answered with ok=false and the reason',
    r3 && r3.data.ok === false && /unknown/.test(r3.data.error), JSON.stringify(r3));
  check('the console stays connected', (await frame.evaluate(() => document.body.dataset.state)) === 'connected');
  check('one WebSocket, carrying a resume secret', wsUrls.length === 1 && /\?resume=[A-Za-z0-9_-]{43}$/.test(wsUrls[0]), wsUrls.join(' '));
  check('no script errors', errors.length === 0, errors.join('; '));
  await page.close();
}

// A TCP proxy in front of ringside whose connections the test can cut.
async function proxy(target) {
  const socks = new Set();
  const ctl = { refuse: false };
  const srv = net.createServer((c) => {
    if (ctl.refuse) { c.resetAndDestroy(); return; } // the network is down
    const u = net.connect(Number(target.port), target.hostname);
    socks.add(c);
    socks.add(u);
    c.pipe(u);
    u.pipe(c);
    const end = () => { socks.delete(c); socks.delete(u); c.destroy(); u.destroy(); };
    c.on('error', end); u.on('error', end); c.on('close', end); u.on('close', end);
  });
  servers.push(srv);
  await listen(srv, '127.0.0.1', 0);
  ctl.port = srv.address().port;
  ctl.cut = () => { for (const s of socks) s.resetAndDestroy(); socks.clear(); };
  return ctl;
}

async function reconnect() {
  const p = await proxy(new URL(base));
  const { url, token } = await createConsole();
  const viaProxy = url.replace(new URL(url).origin, `http://127.0.0.1:${p.port}`);
  const page = await ctx.newPage();
  const wsOpened = [];
  page.on('websocket', (ws) => wsOpened.push({ url: ws.url(), t: Date.now() }));
  await page.goto(viaProxy);
  await until(() => page.evaluate(() => document.body.dataset.state !== 'connecting'), 15000);
  check('console connects', (await page.evaluate(() => document.body.dataset.state)) === 'connected');
  const secret = await page.evaluate((t) => sessionStorage.getItem(`rs-resume:${t}`), token);
  check('a 32-byte base64url resume secret in sessionStorage under rs-resume:<token>',
    /^[A-Za-z0-9_-]{43}$/.test(secret || ''), secret);
  check('the WebSocket URL carries it', wsOpened.length === 1 && wsOpened[0].url.endsWith(`/ws/${token}?resume=${secret}`),
    JSON.stringify(wsOpened));

  // The network drops and stays down for a while: the page says so and
  // keeps trying by itself (ringside unreachable: not a refusal); when the
  // network is back, a try with the same secret resumes the same console.
  const ctl = (...a) => execFileSync(env('RINGSIDE_BIN'), ['ctl', '--socket', env('CTL_SOCK'), ...a], { encoding: 'utf8' });
  // Session ids are 64-bit: read them as BigInt, not through JSON numbers.
  const sessions = () => [...ctl('sessions', 'page-e2e', '--json').matchAll(/"id":\s*(\d+)[^}]*?"state":\s*"(\w+)"/g)]
    .map((m) => ({ id: BigInt(m[1]), state: m[2] }));
  const tCut = Date.now();
  p.refuse = true;
  p.cut();
  const seen = await until(() => page.evaluate(() => document.body.dataset.state === 'reconnecting' &&
    document.getElementById('status').textContent), 5000, 10);
  check('after a drop the page shows "Reconnecting…"', seen === 'Reconnecting…', String(seen));
  await until(() => wsOpened.length >= 3, 4000);
  const during = await page.evaluate(() => document.body.dataset.state);
  check('while the network is down it keeps trying (0.5 s, then 1 s later) and stays "reconnecting"',
    wsOpened.length >= 3 && during === 'reconnecting', JSON.stringify({ n: wsOpened.length, during }));
  const waiting = sessions();
  check('meanwhile ringside holds the console, detached', waiting.length === 1 && waiting[0].state === 'detached',
    JSON.stringify(waiting, (k, v) => typeof v === 'bigint' ? String(v) : v));
  p.refuse = false;
  await until(() => page.evaluate(() => document.body.dataset.state === 'connected'), 10000);
  const retry = wsOpened[1];
  check('it tried again after the back-off (>= 0.4 s), with the same resume secret',
    retry && retry.t - tCut >= 400 && retry.url === wsOpened[0].url, JSON.stringify({ retry, tCut }));
  const back = await page.evaluate(() => ({ state: document.body.dataset.state,
    status: document.getElementById('status').textContent }));
  check('network back: the page resumes by itself and is "Connected" again',
    back.state === 'connected' && back.status === 'Connected', JSON.stringify(back));
  const after = sessions();
  check('... on the same console: still one session, attached (not detached)',
    after.length === 1 && after[0].state !== 'detached', JSON.stringify(after, (k, v) => typeof v === 'bigint' ? String(v) : v));
  check('... counted as resumed: ringside_console_resumes_total{outcome="resumed"} 1',
    (await metric('ringside_console_resumes_total', 'outcome="resumed"')) === 1);
  check('... and no second console was opened: ringside_consoles_opened_total 1',
    (await metric('ringside_consoles_opened_total', '')) === 1, String(await metric('ringside_consoles_opened_total', '')));
  check('... the screen shows the desktop again', await screenShows(page), JSON.stringify(await pixel(page)));
  check('every try carried the same secret', wsOpened.every((w) => w.url === wsOpened[0].url), JSON.stringify(wsOpened));

  // Dropped again, and while it waits an operator ends the detached
  // console: the next try is refused — the expired screen, final.
  const n0 = wsOpened.length;
  p.refuse = true;
  p.cut();
  const det = await until(() => { const s = sessions(); return s.length === 1 && s[0].state === 'detached' && s[0]; }, 5000);
  check('dropped again: detached', !!det);
  if (det) ctl('kill', det.id.toString(16));
  p.refuse = false;
  await until(() => page.evaluate(() => document.body.dataset.state === 'failed'), 10000);
  const end = await page.evaluate(() => ({
    state: document.body.dataset.state, reason: document.body.dataset.reason,
    title: document.getElementById('otitle').textContent,
    support: document.querySelector('a.support:not([hidden])') && document.querySelector('a.support').href,
  }));
  check('the console ended while detached: the retry is refused, the expired screen',
    end.reason === 'expired' && /expired or was already used/.test(end.title) && wsOpened.length > n0, JSON.stringify(end));
  check('... with console.support_url as a link', end.support === env('SUPPORT_URL'), JSON.stringify(end));
  const tries = wsOpened.length;
  check('no more tries after the refusal', (await sleep(1200), wsOpened.length === tries), String(wsOpened.length));
  check('every try carried the same secret', wsOpened.every((w) => w.url === wsOpened[0].url), JSON.stringify(wsOpened));
  await page.close();

  // An operator closes the console (1000): ended, no reconnect.
  const second = await createConsole();
  const p2 = await ctx.newPage();
  const opened2 = [];
  p2.on('websocket', (ws) => opened2.push(ws.url()));
  await p2.goto(second.url);
  await until(() => p2.evaluate(() => document.body.dataset.state === 'connected'), 15000);
  const ids = sessions().map((x) => x.id);
  check('one live session to close', ids.length === 1, String(ids));
  ctl('kill', ids[ids.length - 1].toString(16));
  await until(() => p2.evaluate(() => document.body.dataset.state !== 'connected'), 5000);
  await sleep(1500);
  const k = await p2.evaluate(() => ({ state: document.body.dataset.state, reason: document.body.dataset.reason,
    text: document.getElementById('otext').textContent }));
  check('closed by an operator: "disconnected" with the server\'s reason, no reconnect',
    k.state === 'disconnected' && k.reason === 'closed' && /operator/.test(k.text) && opened2.length === 1,
    JSON.stringify({ k, opened2 }));
  await p2.close();
}

async function termReconnect() {
  const p = await proxy(new URL(base));
  const { url, token } = await createConsole({ cluster: env('CLUSTER'), vmid: 200, type: 'lxc',
    console: 'term' });
  const page = await ctx.newPage();
  const wsOpened = [];
  page.on('websocket', (ws) => wsOpened.push({ url: ws.url(), t: Date.now() }));
  await page.goto(url.replace(new URL(url).origin, `http://127.0.0.1:${p.port}`));
  await until(() => page.evaluate(() => document.body.dataset.state !== 'connecting'), 20000);
  check('terminal connects', (await page.evaluate(() => document.body.dataset.state)) === 'connected');
  const secret = await page.evaluate((t) => sessionStorage.getItem(`rs-resume:${t}`), token);
  check('its WebSocket carries the resume secret from sessionStorage',
    /^[A-Za-z0-9_-]{43}$/.test(secret || '') && wsOpened[0].url.endsWith(`?resume=${secret}`),
    JSON.stringify({ secret, wsOpened }));
  // A shell variable, set before the drop.
  const mark = Math.random().toString(36).slice(2, 10);
  await page.click('#screen');
  await page.keyboard.type(`RS_KEPT=kept-${mark}; echo s''et-$RS_KEPT\n`);
  check('a variable is set in the shell', await termShows(page, new RegExp(`^set-kept-${mark}$`, 'm')));
  const tCut = Date.now();
  p.cut();
  const seen = await until(() => page.evaluate(() => document.body.dataset.state === 'reconnecting' &&
    document.getElementById('status').textContent), 5000, 10);
  check('after a drop the terminal page shows "Reconnecting…"', seen === 'Reconnecting…', String(seen));
  await until(() => page.evaluate(() => document.body.dataset.state === 'connected'), 10000);
  const retry = wsOpened[1];
  check('it tried again after the back-off with the same secret',
    retry && retry.t - tCut >= 400 && retry.url === wsOpened[0].url, JSON.stringify(wsOpened));
  check('... and the terminal is connected again', (await page.evaluate(() => document.body.dataset.state)) === 'connected');
  await page.click('#screen');
  await page.keyboard.type('echo g\'\'ot-$RS_KEPT\n');
  check('the same shell: the variable set before the drop is still set',
    await termShows(page, new RegExp(`^got-kept-${mark}$`, 'm')), JSON.stringify((await termText(page)).slice(-300)));
  check('counted as resumed: ringside_console_resumes_total{outcome="resumed"} 1',
    (await metric('ringside_console_resumes_total', 'outcome="resumed"')) === 1);
  check('one console opened, one WebSocket per try', (await metric('ringside_consoles_opened_total', '')) === 1 &&
    wsOpened.length === 2, JSON.stringify(wsOpened));
  await page.close();
}

// A scripted RFB 3.8 server (security None) behind a routed WebSocket:
// after ServerInit it waits <holdMs> and closes with <close> (or stays).
function fakeRfb(ws, { holdMs = 300, close = null } = {}) {
  let stage = 'version';
  let buf = Buffer.alloc(0);
  const need = { version: 12, security: 1, init: 1 };
  ws.onMessage((m) => {
    buf = Buffer.concat([buf, Buffer.isBuffer(m) ? m : Buffer.from(m, 'latin1')]);
    while (need[stage] && buf.length >= need[stage]) {
      buf = buf.subarray(need[stage]);
      if (stage === 'version') { ws.send(Buffer.from([1, 1])); stage = 'security'; }
      else if (stage === 'security') { ws.send(Buffer.from([0, 0, 0, 0])); stage = 'init'; }
      else if (stage === 'init') {
        const name = Buffer.from('fake');
        const si = Buffer.alloc(24);
        si.writeUInt16BE(64, 0); si.writeUInt16BE(48, 2);
        Buffer.from([32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]).copy(si, 4);
        si.writeUInt32BE(name.length, 20);
        ws.send(Buffer.concat([si, name]));
        stage = 'normal';
        if (close) setTimeout(() => ws.close(close), holdMs);
      }
    }
    if (stage === 'normal') buf = Buffer.alloc(0);
  });
  ws.send(Buffer.from('RFB 003.008\n'));
}

async function closeCodes() {
  const page = await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  const state = () => page.evaluate(() => ({ state: document.body.dataset.state,
    reason: document.body.dataset.reason, status: document.getElementById('status').textContent,
    text: document.getElementById('otext').textContent }));
  let plan = [];
  const conns = [];
  await page.routeWebSocket(/\/ws\//, (ws) => {
    conns.push({ url: ws.url(), t: Date.now() });
    fakeRfb(ws, plan.shift() || {});
  });
  // Playwright's stand-in WebSocket is a subclass whose methods sit one
  // prototype further up than a real WebSocket's; noVNC looks for them on
  // the first prototype. Copy them there (test-only; runs after Playwright's).
  await page.addInitScript(() => {
    const P = window.WebSocket.prototype;
    for (const k of ['send', 'close', 'binaryType', 'onerror', 'onmessage', 'onopen']) {
      if (Object.getOwnPropertyNames(P).includes(k)) continue;
      for (let q = Object.getPrototypeOf(P); q; q = Object.getPrototypeOf(q)) {
        const d = Object.getOwnPropertyDescriptor(q, k);
        if (d) { Object.defineProperty(P, k, d); break; }
      }
    }
  });

  // 1001 (going away): reconnect; the try succeeds (as a resume will): connected again.
  plan = [{ close: { code: 1001, reason: 'restarting' } },
    { close: { code: 4001, reason: 'replaced by another window' }, holdMs: 1200 }];
  await page.goto((await createConsole()).url);
  await until(async () => (await state()).state === 'connected', 10000);
  check('a scripted server: the page connects', (await state()).state === 'connected', JSON.stringify(await state()));
  const r = await until(async () => { const s = await state(); return s.state === 'reconnecting' && s; }, 5000, 10);
  check('1001: "Reconnecting…"', r && r.status === 'Reconnecting…', JSON.stringify(r));
  await until(async () => conns.length === 2 && (await state()).state === 'connected', 5000);
  check('... a new try after the back-off, same URL and secret, and connected again',
    conns.length === 2 && conns[1].url === conns[0].url && (await state()).state === 'connected',
    JSON.stringify({ conns, s: await state() }));
  // 4001: another window took over: final, with the server's reason.
  await until(async () => (await state()).state === 'disconnected', 5000);
  await sleep(1500);
  const s4001 = await state();
  check('4001: "disconnected", the reason shown, no reconnect',
    s4001.reason === 'replaced' && s4001.text === 'replaced by another window' && conns.length === 2,
    JSON.stringify({ s4001, n: conns.length }));

  // 1011 with a reason: failed, final.
  plan = [{ close: { code: 1011, reason: 'connection to the console target lost' } }];
  conns.length = 0;
  await page.goto((await createConsole()).url);
  await until(async () => (await state()).state === 'failed', 10000);
  await sleep(1200);
  const s1011 = await state();
  check('1011: "failed" with the reason, no reconnect',
    s1011.text === 'connection to the console target lost' && conns.length === 1, JSON.stringify(s1011));

  // 1000: ended.
  plan = [{ close: { code: 1000, reason: 'the console target closed the connection' } }];
  conns.length = 0;
  await page.goto((await createConsole()).url);
  await until(async () => (await state()).state === 'disconnected', 10000);
  await sleep(1200);
  const s1000 = await state();
  check('1000: "disconnected", ended, no reconnect',
    s1000.reason === 'closed' && /target closed/.test(s1000.text) && conns.length === 1, JSON.stringify(s1000));

  // The back-off: tries at +0.5, +1.5, +3.5, +7.5, +15.5, +23.5 s, then gives up.
  const sched = await page.evaluate(async () => {
    const { Backoff, closeKind } = await import('/static/ringside.js');
    let now = 1000;
    const b = new Backoff(30000, () => now);
    const at = [];
    for (;;) {
      const d = b.next();
      if (d < 0) break;
      now += d;
      at.push(now - 1000);
    }
    return { at, kinds: [1000, 1001, 1005, 1006, 1008, 1011, 1012, 4001, 4002].map(closeKind) };
  });
  check('back-off: 0.5, 1, 2, 4, 8, 8 s, giving up 30 s after the drop',
    JSON.stringify(sched.at) === JSON.stringify([500, 1500, 3500, 7500, 15500, 23500]), JSON.stringify(sched.at));
  check('close codes: 1000/1005 end, 1001/1006/1012 retry, 4001 replaced, 1008/1011/4xxx fail',
    JSON.stringify(sched.kinds) === JSON.stringify(['ended', 'retry', 'ended', 'retry', 'failed',
      'failed', 'retry', 'replaced', 'failed']), JSON.stringify(sched.kinds));
  check('no script errors', errors.length === 0, errors.join('; '));
  await page.close();
}

const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'rs-chromium-'));
const ctx = await chromium.launchPersistentContext(profile, {
  executablePath: '/usr/bin/chromium', headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  locale: mode === 'embed' ? 'de-DE' : 'en-US',
});
try {
  if (mode === 'embed') await embed();
  else if (mode === 'reconnect') await reconnect();
  else if (mode === 'term') await termReconnect();
  else if (mode === 'codes') await closeCodes();
  else throw new Error(`MODE=${mode}?`);
} catch (e) {
  check('e2e run', false, String(e && e.stack || e));
} finally {
  for (const s of servers) s.close();
  await ctx.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
console.log(`e2e: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
