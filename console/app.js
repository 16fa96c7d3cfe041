// The streamedge web console: sellers go live and moderate, buyers watch and chat. Built
// only on the client library (/console/streamedge.js, clients/js/ in the repository) and
// the node's own API; served by the node when console.enabled is true.

import { createClient } from '/console/streamedge.js';

const TOKEN_KEY = 'streamedge:console:token';
const DEV_KEY = 'streamedge:console:dev-login';
const $ = (sel, root = document) => root.querySelector(sel);
const view = $('#view');

// ------------------------------------------------------------------------------ sign-in

/** The signed-in user from the token's claims (display only; the node verifies). */
function claims(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(decodeURIComponent(escape(atob(part))));
  } catch {
    return null;
  }
}

function session() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const c = token && claims(token);
  if (!c) return null;
  const role = c.app_metadata?.role === 'seller' ? 'seller' : 'buyer';
  return { token, user: c.sub, role, exp: c.exp };
}

async function devLogin(user, role) {
  const res = await fetch('/v1/dev/login', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ user_id: user, role }),
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.detail || body.title || `sign-in failed (${res.status})`);
  sessionStorage.setItem(TOKEN_KEY, body.access_token);
  sessionStorage.setItem(DEV_KEY, JSON.stringify({ user, role }));
  return body.access_token;
}

/** The library's token source: a development login signs in again when asked to. */
async function getToken({ force } = {}) {
  const s = session();
  const dev = JSON.parse(sessionStorage.getItem(DEV_KEY) || 'null');
  if (force || !s || s.exp * 1000 < Date.now() + 30_000) {
    if (dev) return devLogin(dev.user, dev.role);
    if (force) {
      sessionStorage.removeItem(TOKEN_KEY);
      toast('Your access token expired: sign in again.');
      location.hash = '#/';
    }
  }
  return s?.token ?? '';
}

const client = createClient({ baseUrl: location.origin, getToken });
window.streamedgeConsole = { client, connection: null };

// -------------------------------------------------------------------------------- helpers

function toast(text) {
  const t = $('#toast');
  t.textContent = text;
  t.hidden = !text;
  clearTimeout(toast.timer);
  if (text) toast.timer = setTimeout(() => (t.hidden = true), 6000);
}

function render(id) {
  view.replaceChildren($(`#${id}`).content.cloneNode(true));
  view.className = id === 't-stream' ? 'stream' : '';
}

function el(tag, props = {}, ...children) {
  const e = Object.assign(document.createElement(tag), props);
  e.append(...children);
  return e;
}

const STATE_TEXT = {
  idle: 'Not live yet — the seller has not started.',
  paused: 'The seller paused the stream — stay tuned.',
  ended: 'The stream has ended.',
};

/** Words for a refused send, by the protocol's error code. */
function sendErrorText(e) {
  const known = {
    banned: 'You are banned from this chat.',
    slow_mode: 'Slow mode is on: wait a little before your next message.',
    rate_limited: 'You are sending too fast.',
    stream_ended: 'The stream has ended.',
    empty_body: 'Write something first.',
    body_too_long: 'That message is too long.',
    invalid_body: 'Line breaks and control characters are not allowed.',
    forbidden: 'Guests cannot chat.',
  };
  return known[e.code] ?? `Not sent: ${e.message} (${e.code})`;
}

// ---------------------------------------------------------------------------------- views

function showSignIn() {
  render('t-signin');
  $('#dev-login').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    try {
      await devLogin(String(f.get('user')).trim(), String(f.get('role')));
      route();
    } catch (e) {
      toast(e.message);
    }
  });
  $('#token-login').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const token = String(new FormData(ev.target).get('token')).trim();
    if (!claims(token)) return toast('That is not an access token (a JWT).');
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.removeItem(DEV_KEY);
    route();
  });
}

async function showHome(me) {
  render('t-home');
  if (me.role === 'seller') {
    $('#seller-tools').hidden = false;
    $('#create-stream').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      try {
        const s = await client.createStream({ title: new FormData(ev.target).get('title') });
        location.hash = `#/sell/${s.id}`;
      } catch (e) {
        toast(e.detail || e.message);
      }
    });
  }
  $('#watch-by-id').addEventListener('submit', (ev) => {
    ev.preventDefault();
    location.hash = `#/watch/${String(new FormData(ev.target).get('id')).trim()}`;
  });
  try {
    const page = await client.listStreams({ limit: 100 });
    const live = page.streams.filter((s) => s.state === 'live' || s.state === 'paused');
    const mine = page.streams.filter((s) => s.owner_id === me.user && s.state !== 'ended');
    const item = (s, href) =>
      el('li', {}, el('a', { href, textContent: s.title }), el('span', { className: `pill ${s.state}`, textContent: s.state }));
    $('#live-streams').replaceChildren(
      ...(live.length ? live.map((s) => item(s, `#/watch/${s.id}`)) : [el('li', { className: 'hint', textContent: 'Nobody is live right now.' })]),
    );
    $('#my-streams').replaceChildren(...mine.map((s) => item(s, `#/sell/${s.id}`)));
  } catch (e) {
    toast(e.detail || e.message);
  }
}

/** The stream page, for its seller (`studio`) or a buyer. */
async function showStream(me, id, studio) {
  render('t-stream');
  let stream;
  try {
    stream = await client.getStream(id);
  } catch (e) {
    view.replaceChildren(el('section', { className: 'card' }, el('h1', { textContent: e.detail || e.message })));
    return;
  }
  const seller = studio && stream.owner_id === me.user;
  $('#title').textContent = stream.title;
  const video = $('#video');
  let media = null; // the WHIP or WHEP handle
  let sessionId = stream.session?.id ?? null;
  let state = stream.state;

  const conn = client.connect(id);
  window.streamedgeConsole.connection = conn;
  const leave = () => {
    conn.close();
    media?.stop().catch(() => {});
    window.removeEventListener('hashchange', leave);
  };
  window.addEventListener('hashchange', leave);

  // State: the pill, the banner over the video, the seller's buttons, the buyer's player.
  const setState = (s) => {
    state = s;
    const pill = $('#state');
    pill.textContent = s;
    pill.className = `pill ${s}`;
    const banner = $('#state-banner');
    banner.textContent = seller ? (s === 'ended' ? STATE_TEXT.ended : '') : (STATE_TEXT[s] ?? '');
    banner.hidden = !banner.textContent;
    banner.dataset.state = s;
    if (seller) {
      $('#go-live').disabled = s === 'ended' || !!media;
      $('#pause').disabled = s !== 'live';
      $('#resume').disabled = s !== 'paused';
      $('#end').disabled = s === 'ended' || s === 'idle';
      $('#export').disabled = !sessionId;
    } else if (s === 'live') {
      startPlaying();
    }
  };
  const setViewers = (v) => {
    if (!v) return;
    $('#viewers-current').textContent = v.current;
    $('#viewers-peak').textContent = v.peak;
  };
  setViewers(stream.viewers);

  // Buyers: play through WHEP while live; retry until the seller's media arrives.
  let playing = false;
  async function startPlaying() {
    if (playing || seller) return;
    playing = true;
    while (state === 'live' && !media && conn.status !== 'closed') {
      try {
        media = await client.play(id, video);
        media.pc.addEventListener('connectionstatechange', () => {
          if (['failed', 'closed'].includes(media?.pc.connectionState)) {
            media = null;
            playing = false;
            if (state === 'live') setTimeout(startPlaying, 1000);
          }
        });
      } catch (e) {
        if (e.code !== 'not_publishing' && e.code !== 'media_disabled') console.warn('play:', e.code ?? e.message);
        if (e.code === 'media_disabled') break;
        await new Promise((r) => setTimeout(r, 2000));
      }
    }
    playing = false;
  }

  // Chat.
  const list = $('#messages');
  const addMessage = (m) => {
    const li = el(
      'li',
      { className: m.user === me.user ? 'mine' : '' },
      el('span', { className: 'user', textContent: m.user }),
      el('span', { className: 'text', textContent: m.body }),
    );
    li.dataset.seq = m.seq;
    li.dataset.user = m.user;
    if (seller) {
      const mod = el('span', { className: 'mod' });
      const del = el('button', { className: 'small', textContent: 'Delete', title: 'Delete this message' });
      del.dataset.action = 'delete';
      del.onclick = () => client.deleteMessage(id, m.seq).catch((e) => toast(e.detail || e.message));
      mod.append(del);
      if (m.user !== me.user) {
        const timeout = el('button', { className: 'small', textContent: 'Time out 10 min' });
        timeout.dataset.action = 'timeout';
        timeout.onclick = () =>
          client.timeout(id, m.user, 600).then(() => toast(`${m.user} is timed out for 10 minutes.`), (e) => toast(e.detail || e.message));
        const ban = el('button', { className: 'small', textContent: 'Ban' });
        ban.dataset.action = 'ban';
        ban.onclick = () => client.ban(id, m.user).then(() => toast(`${m.user} is banned.`), (e) => toast(e.detail || e.message));
        mod.append(timeout, ban);
      }
      li.prepend(mod);
    }
    const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 40;
    list.append(li);
    if (atBottom) list.scrollTop = list.scrollHeight;
  };
  conn.on('welcome', (w) => {
    sessionId = w.session_id ?? sessionId;
    setViewers(w.viewers);
    setState(w.state);
  });
  conn.on('state', (s) => {
    sessionId = s.session_id ?? sessionId;
    setState(s.state);
  });
  conn.on('viewers', setViewers);
  conn.on('message', addMessage);
  conn.on('deleted', (d) => {
    const li = list.querySelector(`li[data-seq="${d.seq}"]`);
    if (!li) return;
    li.classList.add('deleted');
    li.querySelector('.text').textContent = 'message deleted';
    li.querySelector('.mod')?.remove();
  });
  conn.on('connection', (c) => {
    $('#offline').hidden = !(c.status === 'offline' || (c.status === 'connecting' && c.attempt > 0));
    if (c.status === 'closed' && c.error) toast(`Disconnected: ${c.error.message}`);
  });
  conn.on('error', (e) => console.warn('stream connection:', e.code, e.message));

  $('#send').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const input = $('#body');
    const body = input.value;
    if (!body.trim()) return;
    input.value = '';
    const err = $('#send-error');
    err.hidden = true;
    conn.send(body).catch((e) => {
      err.textContent = sendErrorText(e);
      err.dataset.code = e.code;
      err.hidden = false;
    });
  });

  if (!seller) return;

  // The seller's studio.
  $('#controls').hidden = false;
  $('#go-live').onclick = async () => {
    $('#go-live').disabled = true;
    try {
      const camera = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
      video.srcObject = camera;
      media = await client.publish(id, camera);
    } catch (e) {
      $('#go-live').disabled = false;
      toast(`Could not go live: ${e.detail || e.message}`);
    }
  };
  const command = (name) => async () => {
    try {
      await client.sessionCommand(id, name);
      if (name === 'end') {
        await media?.stop().catch(() => {});
        media = null;
      }
    } catch (e) {
      toast(e.detail || e.message);
    }
  };
  $('#pause').onclick = command('pause');
  $('#resume').onclick = command('resume');
  $('#end').onclick = command('end');
  $('#set-slow-mode').onclick = () =>
    client
      .setSlowMode(id, Number($('#slow-mode').value) || 0)
      .then(() => toast('Slow mode updated.'), (e) => toast(e.detail || e.message));
  $('#export').onclick = async () => {
    try {
      const csv = await client.exportSession(id, sessionId, { format: 'csv' });
      const blob = csv instanceof Blob ? csv : new Blob([typeof csv === 'string' ? csv : JSON.stringify(csv)], { type: 'text/csv' });
      const a = el('a', { href: URL.createObjectURL(blob), download: `transcript-${id}-${sessionId}.csv` });
      a.click();
      URL.revokeObjectURL(a.href);
    } catch (e) {
      toast(e.detail || e.message);
    }
  };
  setState(state);
}

// --------------------------------------------------------------------------------- router

function route() {
  const me = session();
  $('#who').textContent = me ? `${me.user} · ${me.role}` : '';
  $('#signout').hidden = !me;
  $('#offline').hidden = true;
  if (!me) return showSignIn();
  const [, page, id] = location.hash.replace(/^#\/?/, '#/').split('/');
  if (page === 'sell' && id) return showStream(me, id, true);
  if (page === 'watch' && id) return showStream(me, id, false);
  return showHome(me);
}

$('#signout').onclick = () => {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(DEV_KEY);
  location.hash = '#/';
  route();
};
window.addEventListener('hashchange', route);
route();
