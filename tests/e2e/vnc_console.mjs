// Browser end-to-end: a real headless Chromium opens a ringside console link
// to a real Xvnc and must show its desktop colour; the link must not work a
// second time; the VNC password must appear in no byte the browser receives.
// env: RINGSIDE_URL RINGSIDE_KEY VNC_PORT VNC_PASSWORD COLOUR OUT_DIR
import { createRequire } from 'node:module';
import fs from 'node:fs';
const require = createRequire(new URL('../../www/package.json', import.meta.url));
const { chromium } = require('playwright-core');
import os from 'node:os';
import path from 'node:path';

const env = (k, d) => process.env[k] ?? d;
const base = env('RINGSIDE_URL');
const key = env('RINGSIDE_KEY');
const vncPort = Number(env('VNC_PORT'));
const password = env('VNC_PASSWORD');
const colour = env('COLOUR', '#2e8b57');
const outDir = env('OUT_DIR', fs.mkdtempSync(path.join(os.tmpdir(), 'rs-e2e-')));
const want = [1, 3, 5].map((i) => parseInt(colour.slice(i, i + 2), 16));

let passed = 0, failed = 0;
function check(name, ok, detail = '') {
  if (ok) { passed++; console.log(`ok   ${name}`); } else { failed++; console.log(`FAIL ${name} ${detail}`); }
}

async function createConsole() {
  const r = await fetch(`${base}/api/v1/consoles`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ kind: 'vnc', host: '127.0.0.1', port: vncPort, password, label: 'e2e' }),
  });
  const body = await r.json();
  check('API answers 201 with token, url, expires_at, expires_in', r.status === 201 &&
    body.token && body.url && body.expires_at && body.expires_in > 0, JSON.stringify(body));
  return body;
}

const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'rs-chromium-'));
const ctx = await chromium.launchPersistentContext(profile, {
  executablePath: '/usr/bin/chromium', headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  ignoreHTTPSErrors: true,
});
const received = []; // every byte the browser got: bodies and WebSocket frames
const pwBytes = Buffer.from(password);
try {
  const { url } = await createConsole();
  const scheme = env('EXPECT_SCHEME', 'http');
  check(`console link is ${scheme}://`, url.startsWith(`${scheme}://`), url);
  const page = await ctx.newPage();
  const wsUrls = [];
  page.on('response', async (resp) => {
    try { received.push(Buffer.from(await resp.body())); } catch { /* redirects, 101 */ }
  });
  page.on('websocket', (ws) => {
    wsUrls.push(ws.url());
    ws.on('framereceived', (f) => received.push(Buffer.from(f.payload)));
  });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(url);
  await page.waitForFunction(() => document.body.dataset.state !== 'connecting', null, { timeout: 15000 });
  const state = await page.evaluate(() => document.body.dataset.state);
  check(`WebSocket is ${scheme === 'https' ? 'wss' : 'ws'}://`,
    wsUrls.length > 0 && wsUrls[0].startsWith(scheme === 'https' ? 'wss://' : 'ws://'), wsUrls.join(' '));
  check('console connects', state === 'connected', `state=${state} reason=${await page.evaluate(() => document.body.dataset.reason)}`);
  // The framebuffer arrives just after connect: poll the canvas centre.
  let px = null;
  for (let i = 0; i < 50; i++) {
    px = await page.evaluate(() => {
      const c = document.querySelector('#screen canvas');
      if (!c || !c.width) return null;
      const d = c.getContext('2d').getImageData(c.width >> 1, c.height >> 1, 1, 1).data;
      return [d[0], d[1], d[2]];
    });
    if (px && px.every((v, j) => Math.abs(v - want[j]) <= 6)) break;
    await page.waitForTimeout(100);
  }
  check(`canvas shows the desktop colour ${colour}`, px && px.every((v, j) => Math.abs(v - want[j]) <= 6), JSON.stringify(px));
  await page.screenshot({ path: path.join(outDir, 'console.png') });
  // ringside checks every RFB message the browser sends: noVNC's input must
  // pass — pointer moves, buttons and wheel, keys, the type-text form, Ctrl-Alt-Del.
  const box = await page.locator('#screen canvas').boundingBox();
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  await page.mouse.down();
  await page.mouse.up();
  await page.mouse.click(box.x + 10, box.y + 10, { button: 'right' });
  await page.mouse.wheel(0, 120);
  await page.keyboard.type('ringside e2e');
  await page.keyboard.press('Enter');
  await page.fill('#typetext', 'typed text');
  await page.click('#typesend');
  await page.click('#cad');
  await page.waitForTimeout(1000);
  const after = await page.evaluate(() => document.body.dataset.state);
  check('input (pointer, wheel, keys, type text, Ctrl-Alt-Del) keeps the console connected',
    after === 'connected', `state=${after} reason=${await page.evaluate(() => document.body.dataset.reason)}`);
  check('no script errors on the page', errors.length === 0, errors.join('; '));

  const again = await ctx.newPage();
  await again.goto(url);
  // While the first tab holds the console the link still serves the console
  // page (a reload must find it); this tab's WebSocket, without that tab's
  // resume secret, is what gets refused: wait for the page to settle.
  await again.waitForFunction(() => !['connecting', 'reconnecting'].includes(document.body.dataset.state),
    null, { timeout: 10000 });
  const expiredText = await again.textContent('body');
  check('the same link a second time (another tab) shows the expired/used page',
    /expired or was already used/.test(expiredText), expiredText.slice(0, 120));
  check('... and the first tab keeps its console', (await page.evaluate(() => document.body.dataset.state)) === 'connected');
  await again.screenshot({ path: path.join(outDir, 'expired.png') });

  received.push(Buffer.from(await page.content()));
  const leaked = received.some((b) => b.indexOf(pwBytes) >= 0);
  check(`the VNC password is in none of ${received.length} responses/frames sent to the browser`, !leaked);
} catch (e) {
  check('e2e run', false, String(e && e.stack || e));
} finally {
  await ctx.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
console.log(`e2e: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
