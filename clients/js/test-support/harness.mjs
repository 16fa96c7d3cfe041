// Test harness for the client's tests: a real streamedge node as a child process, tokens
// minted by its binary, a private Redis, a TCP proxy that drops connections on demand
// (a real network fault, not a mock), and small waiting helpers.
//
// Lives outside test/ because `node --test test/` runs every module under test/.

import { spawn, execFile } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const HOW_TO_RUN =
  'run the tests as `cd clients/js && STREAMEDGE_BIN=/path/to/streamedge REDIS_URL=redis://127.0.0.1:6379 npm test` ' +
  '(clients/js/README.md, "Tests")';

/** The node binary, from STREAMEDGE_BIN (required). */
export function nodeBin() {
  const bin = process.env.STREAMEDGE_BIN;
  if (!bin) throw new Error(`STREAMEDGE_BIN is not set: ${HOW_TO_RUN}`);
  if (!fs.existsSync(bin)) throw new Error(`STREAMEDGE_BIN=${bin} does not exist: ${HOW_TO_RUN}`);
  return bin;
}

/** The Redis the test command started, from REDIS_URL (required by the tests that need one). */
export function redisUrl() {
  const url = process.env.REDIS_URL;
  if (!url) throw new Error(`REDIS_URL is not set (this test restarts a node and needs shared state that outlives it): ${HOW_TO_RUN}`);
  return url;
}

/**
 * The environment for the node binary: ours, without any inherited STREAMEDGE_* variable
 * (the node reads every STREAMEDGE_* name as a config key, STREAMEDGE_BIN included, and
 * refuses unknown ones) and without RUST_LOG.
 */
function childEnv(extra) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('STREAMEDGE_') && k !== 'RUST_LOG') env[k] = v;
  }
  return { ...env, ...extra };
}

function canBind(port) {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/**
 * A free loopback port. Tried first below Linux's ephemeral range (32768+), so a port a
 * restarted node takes back is not handed to an outgoing connection meanwhile; port 0
 * (any free port) otherwise.
 */
export async function freePort() {
  for (let i = 0; i < 40; i++) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    if (await canBind(port)) return port;
  }
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const running = new Set();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/** A node process (`serve --dev`) on fixed loopback ports; restartable on the same ports. */
export class NodeProcess {
  constructor({ env = {}, api, admin }) {
    this.api = api;
    this.admin = admin;
    this.env = env;
    this.child = null;
    this.stderr = '';
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'streamedge-js-'));
  }

  get baseUrl() {
    return `http://127.0.0.1:${this.api}`;
  }

  get adminUrl() {
    return `http://127.0.0.1:${this.admin}`;
  }

  async start() {
    const env = childEnv({
      STREAMEDGE_SERVER__LISTEN: `127.0.0.1:${this.api}`,
      STREAMEDGE_SERVER__ADMIN_LISTEN: `127.0.0.1:${this.admin}`,
      STREAMEDGE_SERVER__DRAIN_DELAY: '0s',
      STREAMEDGE_SERVER__DRAIN_SPREAD: '0s',
      STREAMEDGE_ADMISSION__IP_CONNECTIONS: '0',
      STREAMEDGE_ADMISSION__IP_CONNECTS_PER_SEC: '0',
      STREAMEDGE_ADMISSION__USER_WEBSOCKETS: '0',
      STREAMEDGE_LOG__LEVEL: 'warn',
      ...this.env,
    });
    const child = spawn(nodeBin(), ['serve', '--dev'], { env, cwd: this.dir, stdio: ['ignore', 'ignore', 'pipe'] });
    this.child = child;
    running.add(child);
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    this.exited.then(() => running.delete(child));
    child.stderr.on('data', (d) => {
      this.stderr = (this.stderr + d).slice(-8000);
    });
    await this.#waitReady(child);
  }

  async #waitReady(child) {
    const deadline = Date.now() + 20_000;
    let exited = null;
    this.exited.then((e) => (exited = e));
    while (Date.now() < deadline) {
      if (exited) throw new Error(`streamedge exited (${JSON.stringify(exited)}) before ready:\n${this.stderr}`);
      try {
        const res = await fetch(`${this.adminUrl}/readyz`);
        await res.arrayBuffer();
        if (res.status === 200) return;
      } catch {
        // not listening yet
      }
      await sleep(50);
    }
    child.kill('SIGKILL');
    throw new Error(`streamedge not ready within 20 s:\n${this.stderr}`);
  }

  /** Stops the process (`SIGTERM` drains: WebSockets close with 1012), waiting for it. */
  async stop(signal = 'SIGKILL') {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    child.kill(signal);
    let timer;
    const timeout = new Promise((resolve) => {
      timer = setTimeout(() => resolve('timeout'), 15_000);
    });
    const outcome = await Promise.race([this.exited, timeout]);
    clearTimeout(timer);
    if (outcome === 'timeout') {
      child.kill('SIGKILL');
      await this.exited;
    }
  }

  /** Stops and removes its working directory. */
  async dispose() {
    await this.stop('SIGKILL');
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Starts a node on free ports (embedded backend unless `env` names a Redis). */
export async function startNode(env = {}) {
  const node = new NodeProcess({ env, api: await freePort(), admin: await freePort() });
  await node.start();
  return node;
}

/** An access token from `streamedge token mint --dev`. */
export function mintToken(user, { role = 'buyer', ttl = '1h' } = {}) {
  return new Promise((resolve, reject) => {
    execFile(
      nodeBin(),
      ['token', 'mint', '--dev', '--user', user, '--role', role, '--ttl', ttl],
      { env: childEnv({}) },
      (err, stdout, stderr) => (err ? reject(new Error(`token mint: ${err.message} ${stderr}`)) : resolve(stdout.trim())),
    );
  });
}

/** Whether the node refuses `token` as expired by now (it does once `exp < now`, in seconds). */
export function isExpired(token) {
  const { exp } = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString());
  return Date.now() >= (exp + 1) * 1000 + 200;
}

/**
 * A `getToken` as an app writes it: returns the current token, and mints a new one when
 * asked to force a refresh. `calls` records every call's options.
 */
export function tokenSource(user, { role = 'buyer', ttl = '1h', first } = {}) {
  let current = first ?? null;
  const source = async ({ force = false } = {}) => {
    source.calls.push({ force });
    if (force || !current) current = await mintToken(user, { role, ttl: source.refreshTtl ?? ttl });
    return current;
  };
  source.calls = [];
  return source;
}

/** A Storage-like object (what `localStorage` is in a browser), kept in memory. */
export class MemoryStorage {
  #map = new Map();
  get length() {
    return this.#map.size;
  }
  key(i) {
    return [...this.#map.keys()][i] ?? null;
  }
  getItem(k) {
    return this.#map.has(k) ? this.#map.get(k) : null;
  }
  setItem(k, v) {
    this.#map.set(k, String(v));
  }
  removeItem(k) {
    this.#map.delete(k);
  }
  clear() {
    this.#map.clear();
  }
}

/** Polls `check` until it returns a truthy value; fails after `ms` with `what`. */
export async function waitFor(check, what, ms = 15_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
}

/** Records a connection's events: `rec.message`, `rec.connection`, … arrays. */
export function record(conn, types = ['message', 'connection', 'state', 'viewers', 'deleted', 'error', 'ack']) {
  const rec = {};
  for (const t of types) {
    rec[t] = [];
    conn.on(t, (v) => rec[t].push(v));
  }
  return rec;
}

/**
 * A TCP proxy in front of the node: `drop()` cuts every connection through it (a phone
 * losing its network), `down` refuses new ones, `blackholeDownstream()` silently drops
 * what the node sends (an ack lost in flight).
 */
export class TcpProxy {
  #server;
  #pairs = new Set();
  down = false;
  #blackhole = false;

  constructor(targetPort) {
    this.targetPort = targetPort;
  }

  async start() {
    this.port = await freePort();
    this.#server = net.createServer((client) => this.#accept(client));
    await new Promise((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(this.port, '127.0.0.1', resolve);
    });
    return this;
  }

  get baseUrl() {
    return `http://127.0.0.1:${this.port}`;
  }

  #accept(client) {
    if (this.down) {
      client.destroy();
      return;
    }
    const upstream = net.connect(this.targetPort, '127.0.0.1');
    const pair = { client, upstream };
    this.#pairs.add(pair);
    const end = () => {
      this.#pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('data', (d) => upstream.write(d));
    const down = { mode: 'head', buf: Buffer.alloc(0) };
    upstream.on('data', (d) => {
      if (this.#blackhole) return;
      if (down.mode === 'raw') {
        client.write(d);
        return;
      }
      down.buf = Buffer.concat([down.buf, d]);
      if (down.mode === 'head') {
        const end = down.buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = down.buf.subarray(0, end + 4);
        client.write(head);
        down.buf = down.buf.subarray(end + 4);
        // A WebSocket's frames are followed one by one; anything else passes as it comes.
        down.mode = head.toString('latin1').startsWith('HTTP/1.1 101') ? 'frames' : 'raw';
        if (down.mode === 'raw') {
          if (down.buf.length) client.write(down.buf);
          down.buf = Buffer.alloc(0);
          return;
        }
      }
      for (let frame = serverFrame(down.buf); frame; frame = serverFrame(down.buf)) {
        const bytes = down.buf.subarray(0, frame.size);
        down.buf = down.buf.subarray(frame.size);
        if (this.dropFrame && frame.opcode === 1 && this.dropFrame(frame.payload.toString())) {
          this.dropFrame = null; // once
          continue;
        }
        client.write(bytes);
      }
    });
    for (const s of [client, upstream]) {
      s.on('error', end);
      s.on('close', end);
    }
  }

  /**
   * `dropFrame(text) → boolean`: the first text frame from the node it matches is lost
   * (once) while the connection carries on — a hole in the live feed.
   */
  dropFrame = null;

  blackholeDownstream() {
    this.#blackhole = true;
  }

  /** Cuts every open connection (and ends the blackhole for the next ones). */
  drop() {
    for (const { client, upstream } of this.#pairs) {
      client.resetAndDestroy?.() ?? client.destroy();
      upstream.destroy();
    }
    this.#pairs.clear();
    this.#blackhole = false;
  }

  get connections() {
    return this.#pairs.size;
  }

  async close() {
    this.drop();
    await new Promise((resolve) => this.#server?.close(() => resolve()) ?? resolve());
  }
}

/** The first whole WebSocket frame (unmasked, as a server sends them) in `buf`, or null. */
function serverFrame(buf) {
  if (buf.length < 2) return null;
  let len = buf[1] & 0x7f;
  let offset = 2;
  if (len === 126) {
    if (buf.length < 4) return null;
    len = buf.readUInt16BE(2);
    offset = 4;
  } else if (len === 127) {
    if (buf.length < 10) return null;
    len = Number(buf.readBigUInt64BE(2));
    offset = 10;
  }
  if (buf[1] & 0x80) offset += 4; // masked: not from a server, but keep the framing
  if (buf.length < offset + len) return null;
  return { opcode: buf[0] & 0x0f, size: offset + len, payload: buf.subarray(offset, offset + len) };
}

/**
 * A same-origin front for browser tests, as the node will serve its web console: `files`
 * (path → {type, body}) are served from here, `POST /report` bodies are collected, and
 * every other request — WebSocket upgrades included — is passed to the node.
 */
export class ConsoleFront {
  #server;
  reports = [];
  #waiters = [];

  constructor(nodePort, files) {
    this.nodePort = nodePort;
    this.files = files;
  }

  async start() {
    this.port = await freePort();
    this.#server = http.createServer((req, res) => this.#request(req, res));
    this.#server.on('upgrade', (req, socket, head) => this.#upgrade(req, socket, head));
    await new Promise((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(this.port, '127.0.0.1', resolve);
    });
    return this;
  }

  get origin() {
    return `http://127.0.0.1:${this.port}`;
  }

  /** The next report (a parsed JSON body), within `ms`. */
  nextReport(ms = 60_000) {
    if (this.reports.length) return Promise.resolve(this.reports.shift());
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no report from the browser within ${ms} ms`)), ms);
      this.#waiters.push((r) => {
        clearTimeout(timer);
        resolve(r);
      });
    });
  }

  #request(req, res) {
    const path = req.url.split('?')[0];
    const file = this.files[path];
    if (req.method === 'GET' && file) {
      res.writeHead(200, { 'content-type': file.type, 'cache-control': 'no-store' });
      res.end(file.body);
      return;
    }
    if (req.method === 'POST' && path === '/report') {
      let body = '';
      req.on('data', (d) => (body += d));
      req.on('end', () => {
        res.end();
        const report = JSON.parse(body);
        const waiter = this.#waiters.shift();
        if (waiter) waiter(report);
        else this.reports.push(report);
      });
      return;
    }
    if (path === '/favicon.ico') {
      res.writeHead(404).end();
      return;
    }
    const upstream = http.request(
      { host: '127.0.0.1', port: this.nodePort, method: req.method, path: req.url, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode, up.headers);
        up.pipe(res);
      },
    );
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  }

  #upgrade(req, socket, head) {
    const upstream = net.connect(this.nodePort, '127.0.0.1', () => {
      const lines = [`${req.method} ${req.url} HTTP/1.1`];
      for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
      upstream.write(`${lines.join('\r\n')}\r\n\r\n`);
      if (head?.length) upstream.write(head);
      socket.pipe(upstream).pipe(socket);
    });
    const end = () => {
      socket.destroy();
      upstream.destroy();
    };
    socket.on('error', end);
    upstream.on('error', end);
    socket.on('close', end);
    upstream.on('close', end);
  }

  async close() {
    this.#server?.closeAllConnections?.();
    await new Promise((resolve) => (this.#server ? this.#server.close(() => resolve()) : resolve()));
  }
}

/** Kills the process group led by `child` (a process this harness started). */
function killGroup(child, signal) {
  try {
    process.kill(-child.pid, signal);
  } catch {
    child.kill(signal);
  }
}

/** The Chromium to drive: CHROMIUM_BIN, or `chromium` on the PATH; null when neither. */
export function chromiumBin() {
  if (process.env.CHROMIUM_BIN) return process.env.CHROMIUM_BIN;
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    for (const name of ['chromium', 'chromium-browser']) {
      const p = path.join(dir, name);
      if (fs.existsSync(p)) return p;
    }
  }
  return null;
}

/** A headless Chromium (fake camera and microphone) showing `url`; `close()` kills it. */
export function openBrowser(bin, url) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'streamedge-js-chromium-'));
  const child = spawn(
    bin,
    [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--use-fake-device-for-media-stream',
      '--use-fake-ui-for-media-stream',
      '--autoplay-policy=no-user-gesture-required',
      // Real host candidates instead of mDNS names the node cannot resolve.
      '--disable-features=WebRtcHideLocalIpsWithMdns',
      '--remote-debugging-port=0',
      `--user-data-dir=${dir}`,
      url,
    ],
    // Its own process group, so closing it ends its helper processes too.
    { stdio: 'ignore', detached: true },
  );
  const group = { kill: (sig) => killGroup(child, sig) };
  running.add(group);
  const exited = new Promise((resolve) => child.once('exit', resolve));
  return {
    async close() {
      killGroup(child, 'SIGKILL');
      await exited;
      running.delete(group);
      // Helpers may still be writing their profile for a moment.
      fs.rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
    },
  };
}

export { sleep };
