// The stream WebSocket against a real node: exactly-once ordered delivery across a lost
// network, an idempotent retry after a lost ack, token refresh after a 401 at the upgrade.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { connect, createClient } from '../src/streamedge.js';
import { mintToken, record, sleep, startNode, TcpProxy, isExpired, tokenSource, waitFor } from '../test-support/harness.mjs';

const FAST = { baseMs: 50, capMs: 500, resetAfterMs: 10_000 };

let node;
let proxy;
let seller;
const open = [];

before(async () => {
  node = await startNode({
    STREAMEDGE_CHAT__USER_PER_SEC: '0', // the tests send faster than a person
    STREAMEDGE_AUTH__LEEWAY: '0s', // so a token expires when its exp says
  });
  proxy = await new TcpProxy(node.api).start();
  seller = createClient({ baseUrl: node.baseUrl, getToken: tokenSource('seller-1', { role: 'seller' }) });
});

after(async () => {
  for (const c of open) c.close();
  await proxy?.close();
  await node?.dispose();
});

function track(conn) {
  open.push(conn);
  return conn;
}

async function newStream(title) {
  return (await seller.createStream({ title })).id;
}

test('every message arrives once and in order while another client sends through a lost network', { timeout: 60_000 }, async () => {
  const stream = await newStream('gap-free');
  const viewer = track(connect(stream, { baseUrl: proxy.baseUrl, getToken: tokenSource('viewer-1'), storage: null, backoff: FAST }));
  const rec = record(viewer);
  await viewer.ready();
  const sender = track(connect(stream, { baseUrl: node.baseUrl, getToken: tokenSource('sender-1'), storage: null }));
  await sender.ready();

  const total = 120;
  const acks = [];
  for (let i = 0; i < total; i++) {
    acks.push(sender.send(`m${i}`));
    if (i === 40) {
      // The viewer's network goes away for a while; the sender keeps going.
      proxy.drop();
      proxy.down = true;
    }
    if (i === 80) proxy.down = false;
    await sleep(5);
  }
  const seqs = await Promise.all(acks);
  await waitFor(() => rec.message.length >= total, `the viewer to get ${total} messages (has ${rec.message.length})`);
  await sleep(200); // a duplicate would show up now

  assert.deepEqual(
    rec.message.map((m) => m.body),
    Array.from({ length: total }, (_, i) => `m${i}`),
  );
  const got = rec.message.map((m) => m.seq);
  assert.deepEqual(got, seqs, 'the viewer saw each acknowledged seq, in order');
  for (let i = 1; i < got.length; i++) assert.equal(got[i], got[i - 1] + 1, 'no gap in seq');
  const statuses = rec.connection.map((e) => e.status);
  assert.ok(statuses.includes('offline'), 'the viewer went offline');
  const resumed = rec.connection.filter((e) => e.status === 'resumed').at(-1);
  assert.ok(resumed, 'and came back resumed');
  assert.ok(resumed.last_seq > resumed.since_seq, 'with messages it had missed');
  assert.equal(viewer.lastSeq, seqs.at(-1));
});

test('a message lost from the live feed is fetched again before anything after it', { timeout: 30_000 }, async () => {
  const stream = await newStream('hole');
  const viewer = track(connect(stream, { baseUrl: proxy.baseUrl, getToken: tokenSource('viewer-h'), storage: null, backoff: FAST }));
  const rec = record(viewer);
  await viewer.ready();
  const sender = track(connect(stream, { baseUrl: node.baseUrl, getToken: tokenSource('sender-h'), storage: null }));
  await sender.ready();

  proxy.dropFrame = (text) => text.includes('"body":"lost on the way"');
  const seqs = [];
  for (const body of ['before', 'lost on the way', 'after', 'later']) seqs.push(await sender.send(body));
  await waitFor(() => rec.message.length >= 4, `the viewer to get 4 messages (has ${rec.message.length})`);
  await sleep(200); // a duplicate would show up now

  assert.equal(proxy.dropFrame, null, 'the frame was dropped');
  assert.deepEqual(
    rec.message.map((m) => m.seq),
    seqs,
  );
  assert.deepEqual(
    rec.message.map((m) => m.body),
    ['before', 'lost on the way', 'after', 'later'],
  );
  assert.deepEqual(
    rec.connection.map((e) => e.status),
    ['connecting', 'open'],
    'rewound on the open socket, without reconnecting',
  );
});

test('a send whose ack was lost is retried with the same client_msg_id and published once', { timeout: 30_000 }, async () => {
  const stream = await newStream('lost ack');
  const observer = track(connect(stream, { baseUrl: node.baseUrl, getToken: tokenSource('observer-2'), storage: null }));
  const seen = record(observer);
  await observer.ready();
  const sender = track(connect(stream, { baseUrl: proxy.baseUrl, getToken: tokenSource('sender-2'), storage: null, backoff: FAST }));
  const mine = record(sender);
  await sender.ready();

  proxy.blackholeDownstream(); // the node's answers are lost from here on
  const acked = sender.send('only once');
  await waitFor(() => seen.message.some((m) => m.body === 'only once'), 'the message to be published');
  const [published] = seen.message.filter((m) => m.body === 'only once');
  proxy.drop(); // the sender never saw the ack: it reconnects and retries

  const seq = await acked;
  assert.equal(seq, published.seq, 'the retry got the original seq');
  assert.equal(await sender.send('afterwards'), seq + 1, 'nothing was published twice in between');
  await waitFor(() => seen.message.some((m) => m.body === 'afterwards'), 'the next message');
  assert.deepEqual(
    seen.message.map((m) => m.body),
    ['only once', 'afterwards'],
  );
  assert.equal(mine.message.filter((m) => m.body === 'only once').length, 1, 'the sender saw its message once');
  assert.equal(mine.message.find((m) => m.body === 'only once').client_msg_id, published.client_msg_id);
});

test('a token refused at the upgrade is refreshed through getToken({force: true})', { timeout: 30_000 }, async () => {
  const stream = await newStream('token refresh');
  const shortLived = await mintToken('viewer-3', { ttl: '2s' });
  const getToken = tokenSource('viewer-3', { first: shortLived });
  const viewer = track(connect(stream, { baseUrl: proxy.baseUrl, getToken, storage: null, backoff: FAST }));
  const rec = record(viewer);
  await viewer.ready();
  // An open connection outlives its token; the next upgrade does not.
  await waitFor(() => isExpired(shortLived), 'the token to expire', 5_000);
  proxy.drop();

  await waitFor(() => rec.connection.some((e) => e.status === 'resumed'), 'the viewer to resume');
  assert.deepEqual(
    getToken.calls.filter((c) => c.force).length,
    1,
    'one forced refresh after the 401',
  );
  const sender = track(connect(stream, { baseUrl: node.baseUrl, getToken: tokenSource('sender-3'), storage: null }));
  const seq = await sender.send('still here');
  await waitFor(() => rec.message.some((m) => m.seq === seq), 'the message on the refreshed connection');
  assert.equal(viewer.status, 'open');
});

test('a token still refused after a refresh stops the connection with the node\'s code', { timeout: 30_000 }, async () => {
  const stream = await newStream('refused');
  const expired = await mintToken('viewer-4', { ttl: '1s' });
  await waitFor(() => isExpired(expired), 'the token to expire', 5_000);
  const calls = [];
  const viewer = track(
    connect(stream, {
      baseUrl: node.baseUrl,
      getToken: async (o) => (calls.push(o), expired), // an app whose refresh is broken
      storage: null,
      backoff: FAST,
    }),
  );
  const rec = record(viewer);
  const pending = viewer.send('never').catch((e) => e);
  await assert.rejects(viewer.ready(), (e) => e.code === 'token_expired' && e.status === 401);
  assert.equal(viewer.status, 'closed');
  assert.deepEqual(
    calls.map((c) => c.force),
    [false, true],
    'one refresh, no retry loop',
  );
  assert.equal(rec.error.at(-1).code, 'token_expired');
  assert.equal((await pending).code, 'token_expired');
});

test('a stream that does not exist closes the connection with stream_not_found', { timeout: 30_000 }, async () => {
  const viewer = track(
    connect(crypto.randomUUID(), { baseUrl: node.baseUrl, getToken: tokenSource('viewer-5'), storage: null, backoff: FAST }),
  );
  await assert.rejects(viewer.ready(), (e) => e.code === 'stream_not_found' && e.status === 404);
  assert.equal(viewer.status, 'closed');
});

test('chat errors reject the send with the node\'s code, and the connection stays open', { timeout: 30_000 }, async () => {
  const stream = await newStream('errors');
  const viewer = track(connect(stream, { baseUrl: node.baseUrl, getToken: tokenSource('viewer-6'), storage: null }));
  await viewer.ready();
  await assert.rejects(viewer.send('   '), (e) => e.code === 'empty_body' && typeof e.clientMsgId === 'string');
  await assert.rejects(viewer.send('two\nlines'), (e) => e.code === 'invalid_body');
  await assert.rejects(viewer.send('x'.repeat(20_000)), (e) => e.code === 'body_too_long');
  assert.equal(typeof (await viewer.send('fine')), 'number');
  assert.equal(viewer.pending.length, 0);
});
