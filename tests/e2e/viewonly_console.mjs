// Browser end-to-end for view-only links: a real headless Chromium opens a
// view-only console and an ordinary one on the same fake VNC server (run by
// tests/integration/test_viewonly.py, which records what the server receives),
// checks the screen follows the server's updates, and types and clicks on
// both. The Python side then checks that no input of the view-only console
// reached the server (and that the ordinary console's did: the check works).
// env: RINGSIDE_URL RINGSIDE_KEY VNC_PORT
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
const require = createRequire(new URL('../../www/package.json', import.meta.url));
const { chromium } = require('playwright-core');

const base = process.env.RINGSIDE_URL;
const key = process.env.RINGSIDE_KEY;
const vncPort = Number(process.env.VNC_PORT);
// The fake server's two screens: the first frame, then one 1.5 s later.
const FIRST = [200, 30, 30], SECOND = [30, 30, 200];

let passed = 0, failed = 0;
function check(name, ok, detail = '') {
  if (ok) { passed++; console.log(`ok   ${name}`); } else { failed++; console.log(`FAIL ${name} ${detail}`); }
}

async function pixel(page) {
  return page.evaluate(() => {
    const c = document.querySelector('#screen canvas');
    if (!c || !c.width) return null;
    const d = c.getContext('2d').getImageData(c.width >> 1, c.height >> 1, 1, 1).data;
    return [d[0], d[1], d[2]];
  });
}

async function waitColour(page, want) {
  let px = null;
  for (let i = 0; i < 60; i++) {
    px = await pixel(page);
    if (px && px.every((v, j) => Math.abs(v - want[j]) <= 6)) return [true, px];
    await page.waitForTimeout(100);
  }
  return [false, px];
}

const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'rs-chromium-'));
const ctx = await chromium.launchPersistentContext(profile, {
  executablePath: '/usr/bin/chromium', headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
// TERM_CLUSTER set: a view-only Proxmox terminal (CT 200) instead, whose
// "shell" (test_viewonly.py's recorder) prints tick-N lines and records input.
async function terminal(cluster) {
  const r = await fetch(`${base}/api/v1/consoles`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ cluster, node: 'pve1', vmid: 200, type: 'lxc', console: 'term', view_only: true }),
  });
  const { url } = await r.json();
  check('terminal: view-only link issued', r.status === 201 && !!url, String(r.status));
  const page = await ctx.newPage();
  await page.goto(url);
  await page.waitForFunction(() => document.body.dataset.state !== 'connecting', null, { timeout: 20000 });
  check('terminal: connects', await page.evaluate(() => document.body.dataset.state) === 'connected');
  const ticks = () => page.evaluate(() => {
    const b = window.ringsideTerm.buffer.active;
    let n = 0;
    for (let y = 0; y < b.length; y++) if (/tick-\d+/.test(b.getLine(y).translateToString(true))) n++;
    return n;
  });
  let before = 0;
  for (let i = 0; i < 50 && before < 3; i++) { before = await ticks(); await page.waitForTimeout(100); }
  check('terminal: shows the shell\'s output', before >= 3, String(before));
  await page.click('#screen');
  await page.keyboard.type('touch /tmp/never\n');
  await page.setViewportSize({ width: 700, height: 400 }); // the page would resize the terminal
  await page.waitForTimeout(800);
  check('terminal: output keeps coming', await ticks() > before);
  check('terminal: still connected after typing',
    await page.evaluate(() => document.body.dataset.state) === 'connected');
  await page.close();
}

try {
  if (process.env.TERM_CLUSTER) await terminal(process.env.TERM_CLUSTER);
  for (const viewOnly of process.env.TERM_CLUSTER ? [] : [true, false]) {
    const tag = viewOnly ? 'view-only' : 'ordinary';
    const r = await fetch(`${base}/api/v1/consoles`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ kind: 'vnc', host: '127.0.0.1', port: vncPort, view_only: viewOnly, label: tag }),
    });
    const { url } = await r.json();
    check(`${tag}: link issued`, r.status === 201 && !!url, String(r.status));
    const page = await ctx.newPage();
    await page.goto(url);
    await page.waitForFunction(() => document.body.dataset.state !== 'connecting', null, { timeout: 15000 });
    check(`${tag}: console connects`, await page.evaluate(() => document.body.dataset.state) === 'connected');
    let [ok, px] = await waitColour(page, FIRST);
    check(`${tag}: canvas shows the first screen`, ok, JSON.stringify(px));
    [ok, px] = await waitColour(page, SECOND);
    check(`${tag}: canvas follows the server's update`, ok, JSON.stringify(px));
    const box = await page.locator('#screen canvas').boundingBox();
    await page.mouse.click(box.x + box.width / 2, box.y + box.height / 2);
    await page.keyboard.type('secret');
    await page.keyboard.press('Enter');
    await page.waitForTimeout(500);
    check(`${tag}: still connected after typing`,
      await page.evaluate(() => document.body.dataset.state) === 'connected');
    await page.close();
  }
} catch (e) {
  check('e2e run', false, String(e && e.stack || e));
} finally {
  await ctx.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
console.log(`e2e: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
