// A hand-written WebSocket broadcast relay: the baseline a small team would write in an
// afternoon. Clients join a room named by the URL path; every message received from a
// client is sent to every other client in the same room. No history, no ordering or
// delivery guarantees beyond TCP, no auth. Used by scripts/bench-peers only.
'use strict';

const http = require('node:http');
const { WebSocketServer, WebSocket } = require('ws');

const port = Number(process.env.PORT || 8090);
const host = process.env.HOST || '127.0.0.1';

const rooms = new Map(); // path -> Set<WebSocket>
const server = http.createServer((req, res) => {
  res.writeHead(req.url === '/health' ? 200 : 404).end();
});
const wss = new WebSocketServer({ server, perMessageDeflate: false, maxPayload: 64 * 1024 });

wss.on('connection', (ws, req) => {
  const room = req.url || '/';
  let members = rooms.get(room);
  if (!members) rooms.set(room, (members = new Set()));
  members.add(ws);
  ws.on('message', (data, isBinary) => {
    for (const peer of members) {
      if (peer !== ws && peer.readyState === WebSocket.OPEN) peer.send(data, { binary: isBinary });
    }
  });
  ws.on('close', () => {
    members.delete(ws);
    if (members.size === 0) rooms.delete(room);
  });
  ws.on('error', () => ws.terminate());
});

server.listen(port, host, () => console.log(`node-ws relay listening on ${host}:${port}`));
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0));
