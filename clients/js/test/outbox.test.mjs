// The offline outbox: messages sent while offline survive a "reload" (a new Connection
// with the same storage) and are published exactly once — including one whose ack was
// lost before the reload.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { connect, createClient } from '../src/streamedge.js';
import { MemoryStorage, record, startNode, TcpProxy, tokenSource, waitFor } from '../test-support/harness.mjs';

const FAST = { baseMs: 50, capMs: 500, resetAfterMs: 10_000 };

let node;
let proxy;
let seller;
const open = [];

before(async () => {
  node = await startNode({ STREAMEDGE_CHAT__USER_PER_SEC: '0' });
  proxy = await new TcpProxy(node.api).start();
  seller = createClient({ baseUrl: node.baseUrl, getToken: tokenSource('seller-o', { role: 'seller' }) });
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

test('messages queued offline survive a reload and are published exactly once', { timeout: 30_000 }, async () => {
  const stream = (await seller.createStream({ title: 'outbox' })).id;
  const observer = track(connect(stream, { baseUrl: node.baseUrl, getToken: tokenSource('observer-o'), storage: null }));
  const seen = record(observer);
  await observer.ready();

  const storage = new MemoryStorage();
  const getToken = tokenSource('buyer-o');
  const page1 = track(connect(stream, { baseUrl: proxy.baseUrl, getToken, storage, backoff: FAST }));
  const rec1 = record(page1);
  await page1.ready();

  // m1 reaches the node but its ack is lost; then the network goes away.
  proxy.blackholeDownstream();
  const m1 = page1.send('m1').catch((e) => e);
  await waitFor(() => seen.message.some((m) => m.body === 'm1'), 'm1 to be published');
  proxy.down = true;
  proxy.drop();
  await waitFor(() => rec1.connection.some((e) => e.status === 'offline'), 'the page to notice it is offline');
  const m2 = page1.send('m2').catch((e) => e);
  const m3 = page1.send('m3').catch((e) => e);
  assert.deepEqual(
    page1.pending.map((p) => p.body),
    ['m1', 'm2', 'm3'],
  );
  const [key] = Array.from({ length: storage.length }, (_, i) => storage.key(i));
  assert.match(key, /buyer-o/, 'the outbox is kept per stream and user');
  assert.deepEqual(
    JSON.parse(storage.getItem(key)).map((i) => i.body),
    ['m1', 'm2', 'm3'],
  );

  // The page reloads: this instance goes away, its storage stays.
  page1.close();
  for (const p of [m1, m2, m3]) assert.equal((await p).code, 'closed');
  assert.equal(JSON.parse(storage.getItem(key)).length, 3, 'closing keeps the outbox');
  proxy.down = false;

  const page2 = track(connect(stream, { baseUrl: proxy.baseUrl, getToken, storage, backoff: FAST }));
  const rec2 = record(page2);
  await waitFor(() => rec2.ack.length === 3, 'the reloaded page to get acks for its three queued messages');
  assert.deepEqual(
    rec2.ack.map((a) => a.body),
    ['m1', 'm2', 'm3'],
  );
  const after = await page2.send('m4');
  await waitFor(() => seen.message.some((m) => m.seq === after), 'm4 to be published');
  assert.deepEqual(
    seen.message.map((m) => m.body),
    ['m1', 'm2', 'm3', 'm4'],
    'each message once, in the order typed',
  );
  assert.equal(rec2.ack[0].seq, seen.message[0].seq, 'the lost ack came back with the original seq');
  assert.equal(storage.getItem(key), null, 'the outbox is empty once everything is acknowledged');
});

test('a different user on the same storage does not send someone else\'s outbox', { timeout: 30_000 }, async () => {
  const stream = (await seller.createStream({ title: 'outbox users' })).id;
  const storage = new MemoryStorage();
  proxy.down = true;
  const alice = track(connect(stream, { baseUrl: proxy.baseUrl, getToken: tokenSource('alice-o'), storage, backoff: FAST }));
  const queued = alice.send('from alice').catch((e) => e);
  await waitFor(() => storage.length === 1, 'the outbox to be stored');
  alice.close();
  assert.equal((await queued).code, 'closed');
  proxy.down = false;

  const bob = track(connect(stream, { baseUrl: proxy.baseUrl, getToken: tokenSource('bob-o'), storage, backoff: FAST }));
  const rec = record(bob);
  await bob.ready();
  const seq = await bob.send('from bob');
  await waitFor(() => rec.message.some((m) => m.seq === seq), "bob's message");
  assert.deepEqual(
    rec.message.map((m) => [m.user, m.body]),
    [['bob-o', 'from bob']],
  );
  assert.equal(storage.length, 1, "alice's outbox waits for alice");
});
