// The REST helpers against a real node: streams and cursors, the session lifecycle (and
// its `state` events on a connection), RTC tokens renewed before they expire, history
// pages, moderation as a chatting buyer sees it, viewers, exports, problem+json errors.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { ApiError, connect, createClient, StreamedgeError } from '../src/streamedge.js';
import { record, startNode, tokenSource, waitFor } from '../test-support/harness.mjs';

let node;
const open = [];

before(async () => {
  node = await startNode({
    STREAMEDGE_CHAT__USER_PER_SEC: '0',
    STREAMEDGE_AGORA__TOKEN_TTL: '5s', // short enough to watch a renewal
    STREAMEDGE_AGORA__PRIVILEGE_TTL: '5s',
  });
});

after(async () => {
  for (const c of open) c.close();
  await node?.dispose();
});

function client(user, role = 'buyer') {
  return createClient({ baseUrl: node.baseUrl, getToken: tokenSource(user, { role }) });
}

function watch(stream, user) {
  const conn = connect(stream, { baseUrl: node.baseUrl, getToken: tokenSource(user), storage: null });
  open.push(conn);
  return conn;
}

test('streams: create (safe retry with an id), get, browse live streams across pages', { timeout: 30_000 }, async () => {
  const seller = client('seller-a', 'seller');
  const id = crypto.randomUUID();
  const made = await seller.createStream({ title: 'Sneaker drop', id });
  assert.equal(made.id, id);
  assert.equal(made.state, 'idle');
  assert.equal((await seller.createStream({ title: 'Sneaker drop', id })).id, id, 'a retry returns the same stream');
  assert.equal((await seller.getStream(id)).title, 'Sneaker drop');

  const live = [id];
  for (const title of ['two', 'three']) live.push((await seller.createStream({ title })).id);
  for (const s of live) await seller.startSession(s);

  const page = await seller.listStreams({ state: 'live', limit: 1 });
  assert.equal(page.streams.length, 1);
  assert.ok(page.next_cursor, 'a cursor to the next page');
  const all = [];
  for await (const s of seller.liveStreams({ limit: 1 })) all.push(s.id);
  for (const s of live) assert.ok(all.includes(s), `live stream ${s} listed`);
  assert.equal(new Set(all).size, all.length, 'no stream twice across pages');
});

test('sessions: start, pause, resume, heartbeat, end, each seen as a state event', { timeout: 30_000 }, async () => {
  const seller = client('seller-b', 'seller');
  const stream = (await seller.createStream({ title: 'lifecycle' })).id;
  const viewer = watch(stream, 'viewer-b');
  const rec = record(viewer);
  await viewer.ready();
  assert.equal(viewer.state.state, 'idle');

  const started = await seller.startSession(stream);
  assert.equal(started.transition.kind, 'start');
  const sessionId = started.stream.session.id;
  assert.equal((await seller.startSession(stream)).transition, undefined, 'a repeat is a no-op');
  await seller.pauseSession(stream);
  await seller.resumeSession(stream);
  await seller.heartbeat(stream);
  await seller.endSession(stream);
  await waitFor(() => rec.state.some((s) => s.state === 'ended'), 'the end to reach the viewer');
  assert.deepEqual(
    rec.state.filter((s) => s.kind !== 'sync').map((s) => s.kind),
    ['start', 'pause', 'resume', 'end'],
  );
  const versions = rec.state.map((s) => s.version);
  assert.deepEqual(versions, [...versions].sort((a, b) => a - b), 'in version order');
  const summary = await seller.getSession(stream, sessionId);
  assert.ok(summary.ended_at, 'the session summary has ended');

  await assert.rejects(seller.pauseSession(stream), (e) => e instanceof ApiError && e.status === 409 && e.code === 'invalid_transition');
});

test('rtc tokens: cached while fresh, renewed ahead of expires_at', { timeout: 30_000 }, async () => {
  const seller = client('seller-c', 'seller');
  const stream = (await seller.createStream({ title: 'rtc' })).id;
  const buyer = client('buyer-c');
  const first = await buyer.rtcToken(stream);
  assert.match(first.token, /^007/);
  assert.equal(first.role, 'subscriber');
  assert.equal(await buyer.rtcToken(stream), first, 'cached while fresh');
  assert.equal((await seller.rtcToken(stream)).role, 'publisher');

  const tokens = [];
  const errors = [];
  const keeper = buyer.keepRtcToken(stream, (t) => tokens.push({ t, at: Date.now() }), { onError: (e) => errors.push(e) });
  try {
    await waitFor(() => tokens.length >= 3, 'two renewals', 20_000);
  } finally {
    keeper.stop();
  }
  assert.deepEqual(errors, []);
  for (let i = 1; i < tokens.length; i++) {
    const previous = tokens[i - 1].t;
    assert.ok(tokens[i].at < Date.parse(previous.expires_at), `renewal ${i} came before the previous token expired`);
    assert.ok(Date.parse(tokens[i].t.expires_at) > Date.parse(previous.expires_at), 'with a later expiry');
  }
});

test('history pages, newest first, back to the start', { timeout: 30_000 }, async () => {
  const seller = client('seller-d', 'seller');
  const stream = (await seller.createStream({ title: 'history' })).id;
  const conn = watch(stream, 'buyer-d');
  await conn.ready();
  const seqs = [];
  for (let i = 0; i < 5; i++) seqs.push(await conn.send(`h${i}`));

  const page = await seller.messages(stream, { limit: 2 });
  assert.deepEqual(page.messages.map((m) => m.body), ['h4', 'h3']);
  assert.equal(page.next_before_seq, seqs[3]);
  const older = await seller.messages(stream, { beforeSeq: page.next_before_seq, limit: 2 });
  assert.deepEqual(older.messages.map((m) => m.body), ['h2', 'h1']);
  const pages = [];
  for await (const p of seller.history(stream, { limit: 2 })) pages.push(p.map((m) => m.seq));
  assert.deepEqual(pages.flat(), [...seqs].reverse());
});

test('moderation: delete, ban, timeout, unban, slow mode, as the buyer sees them', { timeout: 30_000 }, async () => {
  const seller = client('seller-e', 'seller');
  const stream = (await seller.createStream({ title: 'moderation' })).id;
  await seller.startSession(stream);
  const buyer = watch(stream, 'buyer-e');
  const rec = record(buyer);
  await buyer.ready();

  const rude = await buyer.send('rude');
  await seller.deleteMessage(stream, rude);
  await waitFor(() => rec.deleted.some((d) => d.seq === rude), 'the deleted event');
  assert.deepEqual((await seller.messages(stream)).messages, [], 'gone from history');

  assert.deepEqual(await seller.ban(stream, 'buyer-e'), { user_id: 'buyer-e' });
  await assert.rejects(buyer.send('let me in'), (e) => e instanceof StreamedgeError && e.code === 'banned');
  await assert.rejects(client('buyer-e').rtcToken(stream), (e) => e.status === 403 && e.code === 'banned');
  await seller.unban(stream, 'buyer-e');
  assert.equal(typeof (await buyer.send('sorry')), 'number');
  await assert.rejects(seller.unban(stream, 'buyer-e'), (e) => e.status === 404 && e.code === 'ban_not_found');

  assert.deepEqual(await seller.timeout(stream, 'buyer-e', 600), { user_id: 'buyer-e', expires_in_secs: 600 });
  await assert.rejects(buyer.send('still?'), (e) => e.code === 'banned');
  await seller.unban(stream, 'buyer-e');

  assert.deepEqual(await seller.setSlowMode(stream, 60), { slow_mode_secs: 60 });
  assert.equal(typeof (await buyer.send('one')), 'number');
  await assert.rejects(buyer.send('two'), (e) => e.code === 'slow_mode');
  await seller.setSlowMode(stream, 0);
  assert.equal(typeof (await buyer.send('two')), 'number');
  assert.equal(buyer.status, 'open', 'refused sends leave the connection open');

  await assert.rejects(client('buyer-e').ban(stream, 'someone'), (e) => e.status === 403 && e.code === 'not_owner');
});

test('viewers and the session export', { timeout: 30_000 }, async () => {
  const seller = client('seller-f', 'seller');
  const stream = (await seller.createStream({ title: 'export' })).id;
  const session = (await seller.startSession(stream)).stream.session.id;
  const buyer = watch(stream, 'buyer-f');
  await buyer.ready();
  await buyer.send('hello, seller');

  await waitFor(async () => (await seller.viewers(stream)).viewers.includes('buyer-f'), 'the buyer in the viewer list');
  const json = await seller.exportSession(stream, session);
  assert.equal(json.summary.session_id, session);
  assert.deepEqual(json.messages.map((m) => m.body), ['hello, seller']);
  const csv = await seller.exportSession(stream, session, { format: 'csv' });
  assert.match(csv, /^seq,id,user_id,sent_at,deleted,body\r\n/);
  assert.match(csv, /buyer-f/);
});

test('errors carry status, code, detail and Retry-After from problem+json', { timeout: 30_000 }, async () => {
  const buyer = client('buyer-g');
  const missing = await buyer.getStream(crypto.randomUUID()).catch((e) => e);
  assert.ok(missing instanceof ApiError);
  assert.equal(missing.status, 404);
  assert.equal(missing.code, 'stream_not_found');
  assert.equal(typeof missing.detail, 'string');
  await assert.rejects(buyer.createStream({ title: 'nope' }), (e) => e.status === 403 && e.code === 'seller_required');

  // POST /v1/streams allows a burst of 5 per user (rate_limit.streams_write).
  const eager = client('seller-g', 'seller');
  let limited;
  for (let i = 0; i < 20 && !limited; i++) {
    limited = await eager.createStream({ title: `burst ${i}` }).then(() => null, (e) => e);
  }
  assert.ok(limited, 'the burst was refused at some point');
  assert.equal(limited.status, 429);
  assert.equal(limited.code, 'rate_limited');
  assert.ok(limited.retryAfter >= 1, 'with Retry-After in seconds');
});
