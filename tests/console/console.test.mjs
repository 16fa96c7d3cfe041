// The web console in a real browser: Debian's Chromium (CHROMIUM_BIN) with a fake camera,
// driven by playwright-core, against the node binary (STREAMEDGE_BIN) started with --dev
// on a real Redis (REDIS_URL). A seller page goes live through WHIP; two buyer pages
// decode the video through WHEP and chat with the seller, every page showing the same
// messages in the same order; the seller bans a buyer, whose next send is refused on the
// page; one buyer's WebSocket is cut while the others keep sending, and that page
// resumes with nothing missing and nothing twice. Screenshots of every page go to
// ARTIFACTS_DIR (default target/console-test/); any console error fails the test.
// Run by scripts/test: `cd tests/console && npm ci && npm test`.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium } from 'playwright-core';

const HOW = 'run through scripts/test, which sets STREAMEDGE_BIN, CHROMIUM_BIN and REDIS_URL';
const need = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: ${HOW}`);
  return v;
};
const ARTIFACTS = process.env.ARTIFACTS_DIR ?? path.resolve('../../target/console-test');

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

let node;
let browser;
let base;
const consoleErrors = [];

before(async () => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const [api, admin] = [await freePort(), await freePort()];
  base = `http://127.0.0.1:${api}`;
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    // The node reads every STREAMEDGE_* variable as a config key.
    if (!k.startsWith('STREAMEDGE_') && k !== 'RUST_LOG') env[k] = v;
  }
  Object.assign(env, {
    STREAMEDGE_SERVER__LISTEN: `127.0.0.1:${api}`,
    STREAMEDGE_SERVER__ADMIN_LISTEN: `127.0.0.1:${admin}`,
    STREAMEDGE_SERVER__DRAIN_DELAY: '0s',
    STREAMEDGE_SERVER__DRAIN_SPREAD: '0s',
    STREAMEDGE_REDIS__URL: need('REDIS_URL'),
    STREAMEDGE_REDIS__KEY_PREFIX: `console-${process.pid}-${Date.now()}:`,
    STREAMEDGE_LOG__LEVEL: 'warn',
  });
  node = spawn(need('STREAMEDGE_BIN'), ['serve', '--dev'], { env, stdio: ['ignore', 'ignore', 'inherit'] });
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      if ((await fetch(`http://127.0.0.1:${admin}/readyz`)).ok) break;
    } catch {}
    if (Date.now() > deadline) throw new Error('the node did not become ready');
    await sleep(100);
  }
  browser = await chromium.launch({
    executablePath: need('CHROMIUM_BIN'),
    args: [
      '--no-sandbox',
      '--use-fake-device-for-media-stream',
      '--use-fake-ui-for-media-stream',
      '--autoplay-policy=no-user-gesture-required',
      // Real host candidates instead of mDNS names the node cannot resolve.
      '--disable-features=WebRtcHideLocalIpsWithMdns',
    ],
  });
});

after(async () => {
  await browser?.close().catch(() => {});
  if (node && node.exitCode === null) {
    node.kill('SIGKILL');
    await new Promise((r) => node.once('exit', r));
  }
});

/** A page in its own browser context (its own sessionStorage), signed in. */
async function signedIn(name, user, role) {
  const context = await browser.newContext({ permissions: ['camera', 'microphone'], viewport: { width: 412, height: 915 } });
  const page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error') consoleErrors.push(`${name}: ${m.text()}`);
  });
  page.on('pageerror', (e) => consoleErrors.push(`${name}: ${e.message}`));
  await page.goto(`${base}/`);
  await page.fill('#dev-login input[name=user]', user);
  await page.selectOption('#dev-login select[name=role]', role);
  await page.click('#dev-login button[type=submit]');
  await page.waitForSelector(`#who:has-text("${user}")`);
  return { name, user, page, context };
}

async function shot(p, step) {
  await p.page.screenshot({ path: path.join(ARTIFACTS, `${step}-${p.name}.png`), fullPage: true });
}

/** The chat as a page shows it: `user: body` in order, and the seqs. */
async function chat(p) {
  return p.page.$$eval('#messages li', (lis) =>
    lis.map((li) => ({ seq: Number(li.dataset.seq), line: `${li.dataset.user}: ${li.querySelector('.text').textContent}` })),
  );
}

async function send(p, body) {
  await p.page.fill('#body', body);
  await p.page.click('#send button[type=submit]');
}

async function waitForChat(p, n, ms = 20_000) {
  await p.page.waitForFunction((n) => document.querySelectorAll('#messages li').length >= n, n, { timeout: ms });
}

/** Decoded video: frames painted and a size known. */
async function waitForVideo(p) {
  await p.page.waitForFunction(
    () => {
      const v = document.querySelector('#video');
      return v && v.videoWidth > 0 && v.getVideoPlaybackQuality().totalVideoFrames > 0;
    },
    null,
    { timeout: 45_000, polling: 250 },
  );
}

test('a seller goes live, buyers watch and chat in one order, a ban shows, a cut socket resumes', async () => {
  // The seller creates a stream and goes live from the fake camera.
  const seller = await signedIn('seller', 'console-seller', 'seller');
  await seller.page.fill('#create-stream input[name=title]', 'Console test drop');
  await seller.page.click('#create-stream button[type=submit]');
  await seller.page.waitForURL(/#\/sell\//);
  const id = seller.page.url().split('#/sell/')[1];
  await seller.page.click('#go-live');
  await seller.page.waitForSelector('#state.live', { timeout: 30_000 });
  await waitForVideo(seller); // the local preview

  // Two buyers: one finds the stream in the live list, one opens it by id.
  const alice = await signedIn('buyer-alice', 'alice', 'buyer');
  await alice.page.click(`#live-streams a[href="#/watch/${id}"]`);
  const bob = await signedIn('buyer-bob', 'bob', 'buyer');
  // Bob's WebSocket goes through a route the test can cut (a forced close).
  let bobSocket = null;
  await bob.page.routeWebSocket(/\/ws/, (ws) => {
    ws.connectToServer();
    bobSocket = ws;
  });
  await bob.page.goto(`${base}/#/watch/${id}`);
  for (const b of [alice, bob]) {
    await b.page.waitForSelector('#state.live');
    await waitForVideo(b);
  }
  await seller.page.waitForFunction(() => Number(document.querySelector('#viewers-current').textContent) >= 2, null, {
    timeout: 15_000,
  });
  for (const p of [seller, alice, bob]) await shot(p, '1-live');

  // Chat from all three, interleaved: every page shows the same order.
  const senders = [seller, alice, bob];
  for (let i = 0; i < 9; i++) await send(senders[i % 3], `hello ${i}`);
  for (const p of senders) await waitForChat(p, 9);
  const [s1, a1, b1] = await Promise.all(senders.map(chat));
  assert.deepEqual(a1, s1, 'alice sees the seller’s order');
  assert.deepEqual(b1, s1, 'bob sees the seller’s order');
  assert.equal(new Set(s1.map((m) => m.line)).size, 9);
  for (const p of senders) await shot(p, '2-chat');

  // The seller bans bob from one of his messages; bob's next send is refused on his page.
  await seller.page.click('#messages li[data-user="bob"] button[data-action="ban"]');
  await seller.page.waitForSelector('#toast:has-text("bob is banned")');
  await send(bob, 'am I still here?');
  await bob.page.waitForSelector('#send-error[data-code="banned"]:not([hidden])', { timeout: 10_000 });
  assert.match(await bob.page.textContent('#send-error'), /banned/);
  await shot(bob, '3-banned');

  // Bob's socket is cut while the seller and alice keep sending: his page resumes with
  // every message once, in order.
  const before = (await chat(seller)).length;
  bobSocket.close({ code: 4001, reason: 'cut by the test' });
  for (let i = 0; i < 10; i++) {
    await send(i % 2 ? alice : seller, `during the cut ${i}`);
    await sleep(50);
  }
  for (const p of senders) await waitForChat(p, before + 10);
  await sleep(500); // anything doubled would have arrived by now
  const [s2, a2, b2] = await Promise.all(senders.map(chat));
  assert.equal(s2.length, before + 10);
  assert.deepEqual(a2, s2);
  assert.deepEqual(b2, s2, 'bob resumed with nothing missing and nothing twice');
  const seqs = b2.map((m) => m.seq);
  assert.deepEqual(seqs, [...seqs].sort((x, y) => x - y));
  assert.equal(await bob.page.isHidden('#offline'), true, 'the offline banner is gone once resumed');
  for (const p of senders) await shot(p, '4-resumed');

  // The seller ends the stream: buyers see it instead of a black screen.
  await seller.page.click('#end');
  for (const b of [alice, bob]) {
    await b.page.waitForSelector('#state-banner[data-state="ended"]:not([hidden])', { timeout: 10_000 });
    assert.match(await b.page.textContent('#state-banner'), /ended/);
  }
  for (const p of senders) await shot(p, '5-ended');

  assert.deepEqual(consoleErrors, [], 'no console errors on any page');
});
