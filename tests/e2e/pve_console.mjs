// Browser end-to-end against the Proxmox VE simulator: a real headless
// Chromium opens a QEMU console (noVNC → ringside → simulator → Xvnc) and
// must show the desktop colour, then an LXC terminal (xterm.js → ringside →
// simulator → a real PTY) and must see a command's output. No Proxmox
// secret may appear in any byte the browser receives.
// env: RINGSIDE_URL (API base) RINGSIDE_KEY CLUSTER COLOUR EXPECT_SCHEME
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
const require = createRequire(new URL('../../www/package.json', import.meta.url));
const { chromium } = require('playwright-core');

const env = (k, d) => process.env[k] ?? d;
const base = env('RINGSIDE_URL');
const key = env('RINGSIDE_KEY');
const cluster = env('CLUSTER', 'lab');
const colour = env('COLOUR', '#2e8b57');
const scheme = env('EXPECT_SCHEME', 'https');
const want = [1, 3, 5].map((i) => parseInt(colour.slice(i, i + 2), 16));
const secrets = [/PVE:[^ ]*:[0-9A-F]{8}::/, /PVEVNC:[0-9A-F]{8}::/, /PVEAuthCookie/, /PVEAPIToken/];

let passed = 0, failed = 0;
function check(name, ok, detail = '') {
  if (ok) { passed++; console.log(`ok   ${name}`); } else { failed++; console.log(`FAIL ${name} ${detail}`); }
}

async function createConsole(body) {
  const r = await fetch(`${base}/api/v1/consoles`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  const j = await r.json();
  check(`API 201 for ${body.console || 'vnc'} console`, r.status === 201 && j.url, JSON.stringify(j));
  check(`console link is ${scheme}://`, (j.url || '').startsWith(`${scheme}://`), j.url);
  return j.url;
}

const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'rs-chromium-'));
const ctx = await chromium.launchPersistentContext(profile, {
  executablePath: '/usr/bin/chromium', headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  ignoreHTTPSErrors: true,
});
const received = [];
function watch(page) {
  page.on('response', async (resp) => {
    try { received.push(Buffer.from(await resp.body())); } catch { /* 101 */ }
  });
  page.on('websocket', (ws) => ws.on('framereceived', (f) => received.push(Buffer.from(f.payload))));
}
try {
  // QEMU VM 100: the desktop colour.
  const vncUrl = await createConsole({ cluster, node: 'pve1', vmid: 100, type: 'qemu' });
  const page = await ctx.newPage();
  watch(page);
  await page.goto(vncUrl);
  await page.waitForFunction(() => document.body.dataset.state !== 'connecting', null, { timeout: 20000 });
  const state = await page.evaluate(() => document.body.dataset.state);
  check('QEMU console connects', state === 'connected',
    `state=${state} reason=${await page.evaluate(() => document.body.dataset.reason)}`);
  let px = null;
  for (let i = 0; i < 50; i++) {
    px = await page.evaluate(() => {
      const c = document.querySelector('#screen canvas');
      if (!c || !c.width) return null;
      const d = c.getContext('2d').getImageData(c.width >> 1, c.height >> 1, 1, 1).data;
      return [d[0], d[1], d[2]];
    });
    if (px && px.every((v, k) => Math.abs(v - want[k]) <= 8)) break;
    await page.waitForTimeout(100);
  }
  check(`QEMU canvas shows ${colour}`, px && px.every((v, k) => Math.abs(v - want[k]) <= 8), JSON.stringify(px));
  await page.close();

  // LXC CT 200: a terminal runs a command.
  const termUrl = await createConsole({ cluster, vmid: 200, type: 'lxc', console: 'term' });
  const tpage = await ctx.newPage();
  watch(tpage);
  const errors = [];
  tpage.on('pageerror', (e) => errors.push(String(e)));
  await tpage.goto(termUrl);
  await tpage.waitForFunction(() => document.body.dataset.state !== 'connecting', null, { timeout: 20000 });
  const tstate = await tpage.evaluate(() => document.body.dataset.state);
  check('LXC terminal connects', tstate === 'connected', `state=${tstate}`);
  await tpage.click('#screen');
  await tpage.keyboard.type('echo ringside-$((6*7))\n');
  let text = '';
  for (let i = 0; i < 60; i++) {
    text = await tpage.evaluate(() => {
      const b = window.ringsideTerm.buffer.active;
      const out = [];
      for (let y = 0; y < b.length; y++) out.push(b.getLine(y).translateToString(true));
      return out.join('\n');
    });
    if (/^ringside-42$/m.test(text)) break;
    await tpage.waitForTimeout(100);
  }
  check('the terminal shows the command output', /^ringside-42$/m.test(text), JSON.stringify(text.slice(-300)));
  check('no script errors on the terminal page', errors.length === 0, errors.join('; '));
  await tpage.close();

  const all = Buffer.concat(received).toString('latin1');
  check(`no Proxmox secret in ${received.length} responses/frames`,
    !secrets.some((re) => re.test(all)), secrets.filter((re) => re.test(all)).join(' '));
} catch (e) {
  check('no exception', false, e.stack);
} finally {
  await ctx.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
console.log(`e2e: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
