// A resume that reaches past the node's chat history (`resumed.recovered: false`): the
// client reads the missing messages from the REST history (which continues from
// PostgreSQL when the node persists) before going on, and reports what nobody holds.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { after, test } from 'node:test';

import { connect, createClient } from '../src/streamedge.js';
import { nodeBin, record, startNode, TcpProxy, tokenSource, waitFor } from '../test-support/harness.mjs';

const FAST = { baseMs: 50, capMs: 500, resetAfterMs: 10_000 };
const HISTORY = 5; // chat.history_size: what the node's shared state keeps per stream

const cleanup = [];
after(async () => {
  for (const f of cleanup.reverse()) await f();
});

/** A node, a proxy in front of it, a stream, a viewer through the proxy, a sender. */
async function scene(env, viewerOptions = () => ({})) {
  const node = await startNode({ STREAMEDGE_CHAT__USER_PER_SEC: '0', STREAMEDGE_CHAT__HISTORY_SIZE: String(HISTORY), ...env });
  cleanup.push(() => node.dispose());
  const proxy = await new TcpProxy(node.api).start();
  cleanup.push(() => proxy.close());
  const seller = createClient({ baseUrl: node.baseUrl, getToken: tokenSource('seller-h', { role: 'seller' }) });
  const stream = (await seller.createStream({ title: 'history' })).id;
  const viewer = connect(stream, { baseUrl: proxy.baseUrl, getToken: tokenSource('viewer-h'), storage: null, backoff: FAST, ...viewerOptions(node) });
  const sender = connect(stream, { baseUrl: node.baseUrl, getToken: tokenSource('sender-h'), storage: null });
  cleanup.push(() => (viewer.close(), sender.close()));
  const rec = record(viewer);
  await Promise.all([viewer.ready(), sender.ready()]);
  return { node, proxy, seller, stream, viewer, sender, rec };
}

test('a resume past the history delivers what is left in order and reports the lost range', { timeout: 30_000 }, async () => {
  // The viewer's REST history reads wait until the test lets them go.
  let release;
  const released = new Promise((resolve) => (release = resolve));
  const gated = (client) => ({ messages: async (...args) => (await released, client.messages(...args)) });
  const { proxy, viewer, sender, rec } = await scene({}, (node) => ({
    client: gated(createClient({ baseUrl: node.baseUrl, getToken: tokenSource('viewer-h') })),
  }));
  const first = await sender.send('seen');
  await waitFor(() => viewer.lastSeq === first, 'the viewer to see the first message');

  proxy.down = true;
  proxy.drop();
  const missed = [];
  for (let i = 0; i < 12; i++) missed.push(await sender.send(`missed ${i}`));
  proxy.down = false;
  await waitFor(() => rec.connection.some((e) => e.status === 'resumed'), 'the viewer to resume');
  // Live messages right away push the replayed ones out of the node's history while the
  // client still reads the REST history: what was replayed still counts as held.
  const live = await Promise.all([0, 1, 2].map((i) => sender.send(`live ${i}`)));
  release();

  await waitFor(() => viewer.lastSeq === Math.max(...live), 'the viewer to catch up');
  assert.equal(rec.connection.find((e) => e.status === 'resumed').recovered, false);
  const lost = rec.error.find((e) => e.code === 'history_lost');
  assert.ok(lost, 'the lost range is reported');
  assert.deepEqual(lost.body, { since_seq: first, first_seq: missed[12 - HISTORY] });
  assert.deepEqual(
    rec.message.map((m) => m.seq),
    [first, ...missed.slice(12 - HISTORY), ...live.sort((a, b) => a - b)],
    'what the node still holds, once, in order',
  );
});

test('a resume past the shared history is backfilled from PostgreSQL through the REST history', { timeout: 60_000 }, async (t) => {
  const server = process.env.DATABASE_URL;
  if (!server) {
    t.skip('DATABASE_URL is not set (scripts/test sets it): this test needs PostgreSQL');
    return;
  }
  const database = await freshDatabase(server);
  const { proxy, seller, stream, viewer, sender, rec } = await scene({ STREAMEDGE_PERSIST__DATABASE_URL: database });
  const first = await sender.send('seen');
  await waitFor(() => viewer.lastSeq === first, 'the viewer to see the first message');

  proxy.down = true;
  proxy.drop();
  const missed = [];
  for (let i = 0; i < 12; i++) missed.push(await sender.send(`missed ${i}`));
  // The oldest missed messages are only in PostgreSQL once the outbox has written them.
  await waitFor(
    async () => (await seller.messages(stream, { beforeSeq: missed[1], limit: 1 })).messages[0]?.seq === missed[0],
    'the first missed message in PostgreSQL',
  );
  proxy.down = false;
  const live = await sender.send('live');

  await waitFor(() => viewer.lastSeq === live, 'the viewer to catch up');
  assert.equal(rec.connection.find((e) => e.status === 'resumed').recovered, false, 'the node could not resume it alone');
  assert.deepEqual(
    rec.message.map((m) => m.seq),
    [first, ...missed, live],
    'every message once, in order',
  );
  assert.deepEqual(
    rec.message.map((m) => m.body),
    ['seen', ...missed.map((_, i) => `missed ${i}`), 'live'],
  );
  assert.deepEqual(
    rec.error.map((e) => e.code),
    [],
  );
});

/** A new database on the test server, migrated (with the Supabase roles shim). */
async function freshDatabase(serverUrl) {
  const name = `se_js_${randomUUID().replace(/-/g, '').slice(0, 12)}`;
  const psql = process.env.PG_BIN ? path.join(process.env.PG_BIN, 'psql') : 'psql';
  const sql = (command) => run(psql, [serverUrl, '-q', '-X', '-v', 'ON_ERROR_STOP=1', '-c', command]);
  await sql(`create database ${name}`);
  // Dropped last, once the node using it has stopped.
  cleanup.push(() => sql(`drop database if exists ${name}`));
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  await run(nodeBin(), ['migrate', '--database-url', url.toString(), '--auth-shim']);
  return url.toString();
}

function run(cmd, args) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('STREAMEDGE_')));
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { env }, (err, stdout, stderr) =>
      err ? reject(new Error(`${path.basename(cmd)} ${args[0]}: ${err.message}\n${stderr}`)) : resolve(stdout),
    );
  });
}
