// A node restart: the node drains (SIGTERM → close 1012), is down for a while, and comes
// back on the same address over the same Redis. Clients reconnect at once after 1012,
// back off while it is down, resume with since_seq, and lose nothing: messages sent
// while it was down go out from the outbox afterwards, each once and in order.
//
// Needs REDIS_URL: the embedded backend lives in the node's process and dies with it.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';

import { connect, createClient } from '../src/streamedge.js';
import { freePort, MemoryStorage, NodeProcess, record, redisUrl, sleep, tokenSource, waitFor } from '../test-support/harness.mjs';

const FAST = { baseMs: 100, capMs: 1_000, resetAfterMs: 10_000 };

let node;
const open = [];

before(async () => {
  node = new NodeProcess({
    api: await freePort(),
    admin: await freePort(),
    env: {
      STREAMEDGE_REDIS__URL: redisUrl(),
      STREAMEDGE_REDIS__KEY_PREFIX: `se-js-${randomUUID()}:`,
      STREAMEDGE_CHAT__USER_PER_SEC: '0',
    },
  });
  await node.start();
});

after(async () => {
  for (const c of open) c.close();
  await node?.dispose();
});

test('clients resume across a node restart without losing or repeating a message', { timeout: 60_000 }, async () => {
  const seller = createClient({ baseUrl: node.baseUrl, getToken: tokenSource('seller-r', { role: 'seller' }) });
  const stream = (await seller.createStream({ title: 'restart' })).id;
  await seller.startSession(stream);

  const viewer = connect(stream, { baseUrl: node.baseUrl, getToken: tokenSource('viewer-r'), storage: null, backoff: FAST });
  const sender = connect(stream, { baseUrl: node.baseUrl, getToken: tokenSource('sender-r'), storage: new MemoryStorage(), backoff: FAST });
  open.push(viewer, sender);
  const rec = record(viewer);
  const sent = record(sender);
  await Promise.all([viewer.ready(), sender.ready()]);

  const before = [];
  for (let i = 0; i < 5; i++) before.push(await sender.send(`before ${i}`));

  await node.stop('SIGTERM'); // drains: every WebSocket closes with 1012, then the process exits
  await waitFor(() => sender.status === 'offline' || sender.status === 'connecting', 'the sender to notice');
  const during = [0, 1, 2].map((i) => sender.send(`during ${i}`));
  await sleep(300); // down for a while: a few failed attempts
  await node.start(); // same address, same Redis

  const seqs = [...before, ...(await Promise.all(during))];
  await waitFor(() => rec.message.length >= 8, `the viewer to get 8 messages (has ${rec.message.length})`);
  await sleep(200); // a duplicate would show up now
  assert.deepEqual(
    rec.message.map((m) => m.body),
    ['before 0', 'before 1', 'before 2', 'before 3', 'before 4', 'during 0', 'during 1', 'during 2'],
  );
  assert.deepEqual(
    rec.message.map((m) => m.seq),
    seqs,
  );

  for (const events of [rec.connection, sent.connection]) {
    const closed = events.find((e) => e.status === 'offline' && e.code === 1012);
    assert.ok(closed, 'the drain closed the socket with 1012');
    assert.equal(closed.delay, 0, 'and the client reconnected at once');
    assert.ok(
      events.some((e) => e.status === 'offline' && e.code !== 1012 && e.delay >= 0),
      'then backed off while the node was down',
    );
    assert.equal(events.at(-1).status, 'resumed');
  }
  assert.equal(viewer.state.state, 'live', 'the stream state came back with the welcome');
});
