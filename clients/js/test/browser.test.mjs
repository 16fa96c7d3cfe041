// The module in a real browser (headless Chromium), imported the way the web console will
// import it — `/console/streamedge.js`, same origin as the node — without any change:
// the stream WebSocket (with a token the node refuses at the upgrade, which a browser can
// only learn through the REST probe), the localStorage outbox, WHIP publish and WHEP play.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, test } from 'node:test';

import { connect, createClient } from '../src/streamedge.js';
import { chromiumBin, ConsoleFront, isExpired, mintToken, openBrowser, record, startNode, tokenSource, waitFor } from '../test-support/harness.mjs';

const read = (rel) => fs.readFileSync(new URL(rel, import.meta.url));

let node;
let front;
let browser;

before(async () => {
  if (!chromiumBin()) return;
  node = await startNode({
    STREAMEDGE_AUTH__LEEWAY: '0s',
    STREAMEDGE_MEDIA__ENABLED: 'true',
  });
  front = await new ConsoleFront(node.api, {
    '/console/streamedge.js': { type: 'text/javascript', body: read('../src/streamedge.js') },
    '/console/page.html': { type: 'text/html', body: read('../test-support/browser-page.html') },
  }).start();
});

after(async () => {
  await browser?.close();
  await front?.close();
  await node?.dispose();
});

test('the module works unchanged in a browser: chat, token refresh, localStorage outbox, WHIP, WHEP', { timeout: 120_000 }, async (t) => {
  const bin = chromiumBin();
  if (!bin) {
    t.skip('no Chromium (set CHROMIUM_BIN; scripts/test installs it)');
    return;
  }
  const sellerToken = await mintToken('seller-w', { role: 'seller' });
  const seller = createClient({ baseUrl: node.baseUrl, getToken: () => sellerToken });
  const stream = (await seller.createStream({ title: 'browser' })).id;
  const observer = connect(stream, { baseUrl: node.baseUrl, getToken: tokenSource('observer-w'), storage: null });
  const seen = record(observer);
  await observer.ready();

  const expired = await mintToken('viewer-w', { ttl: '1s' });
  await waitFor(() => isExpired(expired), 'the token to expire', 5_000);
  const fresh = await mintToken('viewer-w');
  const query = new URLSearchParams({ stream, expired, fresh, seller: sellerToken });
  browser = openBrowser(bin, `${front.origin}/console/page.html?${query}`);
  const r = await front.nextReport(100_000);
  observer.close();

  assert.equal(r.ok, true, `the page failed after ${JSON.stringify(r.steps)}: ${r.error}`);
  assert.deepEqual(r.calls, [false, true], 'one forced refresh after the refused upgrade');
  assert.deepEqual(r.statuses.filter((s) => s !== 'connecting'), ['offline', 'open', 'closed']);
  assert.deepEqual(
    seen.message.filter((m) => m.body === 'hello from a browser').map((m) => m.seq),
    [r.seq],
    'the browser\'s message was published once',
  );
  assert.deepEqual(r.stored, ['queued in localStorage']);
  assert.equal(r.closedCode, 'closed');
  assert.equal(r.left, 0, 'close({discard: true}) emptied the outbox');
  assert.ok(r.frames > 0, 'the WHEP player decoded video');
  assert.deepEqual(r.maxLayer, ['mid', 'low'], 'the player\'s layer cap, from play() and setMaxLayer()');
  assert.equal(r.srcObject, true, 'the video element shows the stream');
  assert.match(r.whip, new RegExp(`^${front.origin}/v1/streams/${stream}/whip/`));
  assert.match(r.whep, new RegExp(`^${front.origin}/v1/streams/${stream}/whep/`));
  assert.equal(r.isError, true);
  // stop() deleted the WHIP resource: the node paused the session it had started.
  assert.equal((await seller.getStream(stream)).state, 'paused');
});
