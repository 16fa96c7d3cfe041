//! Protocol adapters for `chat-fanout`, so the same workload runs against streamedge and
//! against the peers it is compared with (`scripts/bench-peers`): how a viewer subscribes,
//! how a sender publishes, and how a delivered message is recognised and its send
//! timestamp and sequence read.
//!
//! - `streamedge`: the node's own WebSocket protocol; the node sequences the stream, so a
//!   viewer checks one sequence (`"seq":N`) for the whole stream.
//! - `nats`: the NATS text protocol (CONNECT/SUB/PUB/MSG/PING/PONG) over nats-server's
//!   WebSocket listener. The server coalesces many `MSG`s into one WebSocket frame, and a
//!   message may straddle frames, so viewers parse a byte stream.
//! - `ws-relay`: a plain broadcast relay (one text frame in, the same frame to everyone
//!   else on the URL path).
//! - `pusher` (alias `sockudo`): the Pusher Channels protocol 7 (sockudo speaks it). Viewers
//!   and senders connect to `/app/{key}?protocol=7` and subscribe to one private channel
//!   (signed with the app secret, as an app's auth endpoint would); senders publish client
//!   events (`client-msg`) on it, which the server fans out to every other subscriber: the
//!   same client → server → every viewer path as a streamedge `send`. (The alternative,
//!   the HTTP trigger API, would put an HTTP request per message in the measurement.)
//!
//! `open_viewer`/`decoder` and friends serve `chat-fanout`; `parse_ack`, `parse_resumed` and
//! serve streamedge's `reconnect` scenario.
//!
//! The peers do not sequence messages, so there a sender embeds its index and a counter
//! (from 1) in the body, `t<µs>:<sender>:<counter>:<padding>`, and viewers check gaps,
//! duplicates and reordering per sender.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::conn::{self, Ws};

/// The NATS subject every viewer subscribes to and every sender publishes on.
const NATS_SUBJECT: &str = "chat.fanout";
/// The room (URL path) on the relay.
const RELAY_PATH: &str = "/fanout";

/// The Pusher app the benchmark uses (`scripts/bench-peers` configures sockudo with it,
/// app id `streamedge-bench`).
const PUSHER_APP_KEY: &str = "streamedge-bench-key";
const PUSHER_APP_SECRET: &str = "streamedge-bench-secret";
/// The private channel every viewer and sender subscribes to (client events need one).
const PUSHER_CHANNEL: &str = "private-fanout";
/// The client event senders publish.
const PUSHER_EVENT: &str = "client-msg";

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// streamedge's own chat protocol (the node sequences the stream).
    Streamedge,
    /// NATS text protocol over nats-server's WebSocket listener.
    Nats,
    /// A plain WebSocket broadcast relay (scripts/bench-peers' Node `ws` relay).
    WsRelay,
    /// Pusher Channels protocol 7 (sockudo): client events on a private channel.
    #[value(alias = "sockudo")]
    Pusher,
}

/// One delivered message: which sequence it belongs to (0 for streamedge's single stream,
/// the sender's index for peers), its sequence number there, and its send time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub stream: usize,
    pub seq: u64,
    pub ts_us: u64,
}

impl Protocol {
    /// How many independent sequences a viewer checks.
    pub fn sequences(self, senders: usize) -> usize {
        match self {
            Protocol::Streamedge => 1,
            Protocol::Nats | Protocol::WsRelay | Protocol::Pusher => senders,
        }
    }

    /// Opens a viewer connection and subscribes it; returns once the subscription is in
    /// place (streamedge: `welcome`; NATS: the `PONG` after `SUB`; relay: the upgrade).
    pub async fn open_viewer(
        self,
        api: SocketAddr,
        streamedge_url: &str,
        source: Option<SocketAddr>,
    ) -> Result<Ws, String> {
        let timeout = Duration::from_secs(30);
        match self {
            Protocol::Streamedge => conn::open(api, streamedge_url, source, timeout)
                .await
                .map(|(ws, _)| ws),
            Protocol::Nats => {
                let work = async {
                    let mut ws = nats_connect(api, source).await?;
                    let sub = format!("SUB {NATS_SUBJECT} 1\r\nPING\r\n");
                    ws.send(Message::Binary(sub.into_bytes().into()))
                        .await
                        .map_err(|e| format!("sub: {e}"))?;
                    nats_wait_pong(&mut ws).await?;
                    Ok(ws)
                };
                tokio::time::timeout(timeout, work)
                    .await
                    .map_err(|_| "timeout".to_string())?
            }
            Protocol::WsRelay => {
                let url = format!("ws://{api}{RELAY_PATH}");
                tokio::time::timeout(timeout, conn::connect(api, &url, source, None))
                    .await
                    .map_err(|_| "timeout".to_string())?
            }
            Protocol::Pusher => tokio::time::timeout(timeout, pusher_subscribe(api, source))
                .await
                .map_err(|_| "timeout".to_string())?,
        }
    }

    /// Opens a sender connection (streamedge: the same URL as a viewer).
    pub async fn open_sender(self, api: SocketAddr, streamedge_url: &str) -> Result<Ws, String> {
        match self {
            Protocol::Streamedge => conn::open(api, streamedge_url, None, Duration::from_secs(30))
                .await
                .map(|(ws, _)| ws),
            Protocol::Nats => nats_connect(api, None).await,
            Protocol::WsRelay => {
                conn::connect(api, &format!("ws://{api}{RELAY_PATH}"), None, None).await
            }
            // Client events may only be sent on a channel the sender is subscribed to.
            Protocol::Pusher => pusher_subscribe(api, None).await,
        }
    }

    /// The frame sender `sender` publishes as its `counter`-th message (from 1).
    pub fn publish_frame(self, sender: usize, counter: u64, ts_us: u64, pad: &str) -> Message {
        match self {
            Protocol::Streamedge => Message::Text(
                format!(
                    r#"{{"type":"send","client_msg_id":"s{sender}-{counter}","body":"t{ts_us}:{pad}"}}"#
                )
                .into(),
            ),
            Protocol::Nats => {
                let body = format!("t{ts_us}:{sender}:{counter}:{pad}");
                Message::Binary(
                    format!("PUB {NATS_SUBJECT} {}\r\n{body}\r\n", body.len())
                        .into_bytes()
                        .into(),
                )
            }
            Protocol::WsRelay => Message::Text(format!("t{ts_us}:{sender}:{counter}:{pad}").into()),
            Protocol::Pusher => Message::Text(
                format!(
                    r#"{{"event":"{PUSHER_EVENT}","channel":"{PUSHER_CHANNEL}","data":"t{ts_us}:{sender}:{counter}:{pad}"}}"#
                )
                .into(),
            ),
        }
    }

    /// A decoder for one viewer's incoming frames.
    pub fn decoder(self) -> Decoder {
        Decoder {
            proto: self,
            buf: Vec::new(),
        }
    }
}

/// Turns a viewer's incoming frames into deliveries (and, for NATS, replies to send).
pub struct Decoder {
    proto: Protocol,
    /// NATS: bytes received but not yet parsed (a partial line or message).
    buf: Vec<u8>,
}

impl Decoder {
    /// Feeds one frame; pushes what it delivered to `out` and what must be answered to
    /// `reply` (a NATS server `PING` needs a `PONG`, or the server drops the client).
    pub fn feed(&mut self, msg: &Message, out: &mut Vec<Delivery>, reply: &mut Option<Message>) {
        match (self.proto, msg) {
            (Protocol::Streamedge, Message::Text(t)) if t.starts_with(r#"{"type":"message""#) => {
                if let Some((seq, ts_us)) = parse_streamedge(t) {
                    out.push(Delivery {
                        stream: 0,
                        seq,
                        ts_us,
                    });
                }
            }
            (Protocol::WsRelay, Message::Text(t)) => {
                if let Some(d) = parse_tagged(t.as_bytes()) {
                    out.push(d);
                }
            }
            (Protocol::Pusher, Message::Text(t)) => {
                if let Some(d) = pusher_delivery(t) {
                    out.push(d);
                } else if t.contains(r#""event":"pusher:ping""#) {
                    *reply = Some(Message::Text(r#"{"event":"pusher:pong","data":{}}"#.into()));
                }
            }
            (Protocol::Nats, Message::Binary(b)) => self.feed_nats(b, out, reply),
            (Protocol::Nats, Message::Text(t)) => self.feed_nats(t.as_bytes(), out, reply),
            _ => {}
        }
    }

    fn feed_nats(&mut self, bytes: &[u8], out: &mut Vec<Delivery>, reply: &mut Option<Message>) {
        self.buf.extend_from_slice(bytes);
        let mut pos = 0;
        while let Some((used, item)) = nats_next(&self.buf[pos..]) {
            pos += used;
            match item {
                NatsItem::Msg(payload) => {
                    if let Some(d) = parse_tagged(payload) {
                        out.push(d);
                    }
                }
                NatsItem::Ping => {
                    *reply = Some(Message::Binary(b"PONG\r\n".to_vec().into()));
                }
                NatsItem::Other => {}
            }
        }
        self.buf.drain(..pos);
    }
}

/// `"seq":N` and the timestamp at the start of `"body":"t<µs>:` in a streamedge message.
pub fn parse_streamedge(text: &str) -> Option<(u64, u64)> {
    let seq = text.split("\"seq\":").nth(1)?;
    let seq: u64 = seq[..seq.find(|c: char| !c.is_ascii_digit())?]
        .parse()
        .ok()?;
    let body = text.split("\"body\":\"t").nth(1)?;
    let ts: u64 = body[..body.find(':')?].parse().ok()?;
    Some((seq, ts))
}

/// A streamedge `resumed` frame: `{"type":"resumed","since_seq":…,"recovered":…,"last_seq":…}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resumed {
    pub since_seq: u64,
    pub recovered: bool,
    pub last_seq: u64,
}

/// Parses a `resumed` frame (rare: once per reconnect, so a full JSON parse).
pub fn parse_resumed(text: &str) -> Option<Resumed> {
    if !text.starts_with(r#"{"type":"resumed""#) {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    Some(Resumed {
        since_seq: v["since_seq"].as_u64()?,
        recovered: v["recovered"].as_bool()?,
        last_seq: v["last_seq"].as_u64()?,
    })
}

/// The `seq` of a streamedge `ack` frame (`{"type":"ack","client_msg_id":…,"seq":N}`).
pub fn parse_ack(text: &str) -> Option<u64> {
    if !text.starts_with(r#"{"type":"ack""#) {
        return None;
    }
    let seq = text.split("\"seq\":").nth(1)?;
    seq[..seq.find(|c: char| !c.is_ascii_digit()).unwrap_or(seq.len())]
        .parse()
        .ok()
}

/// A peer body `t<µs>:<sender>:<counter>:<padding>`.
fn parse_tagged(body: &[u8]) -> Option<Delivery> {
    let rest = body.strip_prefix(b"t")?;
    let mut fields = rest.splitn(4, |&b| b == b':');
    let mut num = || -> Option<u64> { std::str::from_utf8(fields.next()?).ok()?.parse().ok() };
    let ts_us = num()?;
    let stream = num()? as usize;
    let seq = num()?;
    Some(Delivery { stream, seq, ts_us })
}

/// A delivered client event: its `data` string is a tagged body.
fn pusher_delivery(text: &str) -> Option<Delivery> {
    if !text.contains(r#""event":"client-msg""#) {
        return None;
    }
    let data = text.split(r#""data":""#).nth(1)?;
    parse_tagged(&data.as_bytes()[..data.find('"')?])
}

/// `{key}:{hex HMAC-SHA256(secret, "{socket_id}:{channel}")}`: the private-channel
/// signature an app's auth endpoint returns.
fn pusher_channel_auth(socket_id: &str, channel: &str) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(PUSHER_APP_SECRET.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(format!("{socket_id}:{channel}").as_bytes());
    let sig: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{PUSHER_APP_KEY}:{sig}")
}

/// Reads Pusher protocol frames until one with `event`; `pusher:error` fails. Returns the
/// frame as JSON.
async fn pusher_wait(ws: &mut Ws, event: &str) -> Result<serde_json::Value, String> {
    loop {
        let text = match ws.next().await {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("read: {e}")),
            None => return Err(format!("closed before {event}")),
        };
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("pusher: bad frame: {e}"))?;
        match v["event"].as_str() {
            Some(e) if e == event => return Ok(v),
            Some("pusher:error") | Some("pusher:subscription_error") => {
                return Err(format!("pusher: {}", v["data"]))
            }
            _ => {}
        }
    }
}

/// Connects to a Pusher server, reads the socket id and subscribes to the private channel
/// (returns once `pusher_internal:subscription_succeeded` arrives).
async fn pusher_subscribe(api: SocketAddr, source: Option<SocketAddr>) -> Result<Ws, String> {
    let url =
        format!("ws://{api}/app/{PUSHER_APP_KEY}?protocol=7&client=streamedge-load&version=0.1");
    let mut ws = conn::connect(api, &url, source, None).await?;
    let established = pusher_wait(&mut ws, "pusher:connection_established").await?;
    // `data` is a JSON document in a string.
    let data: serde_json::Value = match &established["data"] {
        serde_json::Value::String(s) => {
            serde_json::from_str(s).map_err(|e| format!("pusher: {e}"))?
        }
        other => other.clone(),
    };
    let socket_id = data["socket_id"]
        .as_str()
        .ok_or("pusher: no socket_id")?
        .to_string();
    let subscribe = serde_json::json!({
        "event": "pusher:subscribe",
        "data": {"channel": PUSHER_CHANNEL, "auth": pusher_channel_auth(&socket_id, PUSHER_CHANNEL)},
    });
    ws.send(Message::Text(subscribe.to_string().into()))
        .await
        .map_err(|e| format!("subscribe: {e}"))?;
    pusher_wait(&mut ws, "pusher_internal:subscription_succeeded").await?;
    Ok(ws)
}

enum NatsItem<'a> {
    Msg(&'a [u8]),
    Ping,
    Other,
}

/// The next complete protocol item at the start of `buf` and the bytes it takes, or
/// `None` while it is incomplete.
fn nats_next(buf: &[u8]) -> Option<(usize, NatsItem<'_>)> {
    let eol = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = &buf[..eol];
    if let Some(args) = line.strip_prefix(b"MSG ") {
        // MSG <subject> <sid> [reply-to] <#bytes>
        let len: usize = std::str::from_utf8(args.rsplit(|&b| b == b' ').next()?)
            .ok()?
            .parse()
            .ok()?;
        let start = eol + 2;
        if buf.len() < start + len + 2 {
            return None;
        }
        return Some((start + len + 2, NatsItem::Msg(&buf[start..start + len])));
    }
    let item = if line == b"PING" {
        NatsItem::Ping
    } else {
        NatsItem::Other
    };
    Some((eol + 2, item))
}

/// Connects to nats-server's WebSocket listener: reads `INFO`, sends `CONNECT` and waits
/// for the `PONG` that confirms it.
async fn nats_connect(api: SocketAddr, source: Option<SocketAddr>) -> Result<Ws, String> {
    let mut ws = conn::connect(api, &format!("ws://{api}/"), source, None).await?;
    let connect = concat!(
        r#"CONNECT {"verbose":false,"pedantic":false,"protocol":1,"name":"streamedge-load","lang":"rust","version":"0.1.0"}"#,
        "\r\nPING\r\n"
    );
    ws.send(Message::Binary(connect.as_bytes().to_vec().into()))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    nats_wait_pong(&mut ws).await?;
    Ok(ws)
}

async fn nats_wait_pong(ws: &mut Ws) -> Result<(), String> {
    let mut buf = Vec::new();
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => buf.extend_from_slice(&b),
            Some(Ok(Message::Text(t))) => buf.extend_from_slice(t.as_bytes()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("read: {e}")),
            None => return Err("closed before PONG".into()),
        }
        while let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") {
            let line: Vec<u8> = buf.drain(..eol + 2).collect();
            if line.starts_with(b"PONG") {
                return Ok(());
            }
            if line.starts_with(b"-ERR") {
                return Err(format!("nats: {}", String::from_utf8_lossy(&line).trim()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_streamedge_message_frames() {
        let f = r#"{"type":"message","seq":42,"id":"x","user":"u","body":"t1700000000000000:xxxx","ts":"…"}"#;
        assert_eq!(parse_streamedge(f), Some((42, 1_700_000_000_000_000)));
        assert_eq!(parse_streamedge(r#"{"type":"message","seq":1}"#), None);
    }

    #[test]
    fn parses_acks_and_resumed_frames() {
        assert_eq!(
            parse_ack(r#"{"type":"ack","client_msg_id":"s1-7","seq":1234}"#),
            Some(1234)
        );
        assert_eq!(parse_ack(r#"{"type":"error","code":"x"}"#), None);
        assert_eq!(
            parse_resumed(
                r#"{"type":"resumed","since_seq":40,"recovered":false,"last_seq":42,"ref":"r1"}"#
            ),
            Some(Resumed {
                since_seq: 40,
                recovered: false,
                last_seq: 42
            })
        );
        assert_eq!(parse_resumed(r#"{"type":"resumed","since_seq":40}"#), None);
    }

    #[test]
    fn relay_body_carries_sender_and_counter() {
        let Message::Text(t) = Protocol::WsRelay.publish_frame(3, 17, 1_700_000_000_000_000, "xx")
        else {
            panic!("text frame expected")
        };
        let mut out = Vec::new();
        let mut reply = None;
        Protocol::WsRelay
            .decoder()
            .feed(&Message::Text(t), &mut out, &mut reply);
        assert_eq!(
            out,
            vec![Delivery {
                stream: 3,
                seq: 17,
                ts_us: 1_700_000_000_000_000
            }]
        );
    }

    #[test]
    fn nats_messages_split_and_batched_across_frames() {
        let m1 = "MSG chat.fanout 1 9\r\nt5:0:1:ab\r\n";
        let m2 = "MSG chat.fanout 1 9\r\nt6:1:1:cd\r\nPING\r\nMSG chat.fanout 1 9\r\nt7:0:2:ef\r\n";
        let all = format!("{m1}{m2}");
        let mut dec = Protocol::Nats.decoder();
        let mut out = Vec::new();
        // Cut the byte stream at every position: the same deliveries come out.
        for cut in 0..all.len() {
            out.clear();
            let mut reply = None;
            dec.feed(
                &Message::Binary(all.as_bytes()[..cut].to_vec().into()),
                &mut out,
                &mut reply,
            );
            dec.feed(
                &Message::Binary(all.as_bytes()[cut..].to_vec().into()),
                &mut out,
                &mut reply,
            );
            let got: Vec<_> = out.iter().map(|d| (d.stream, d.seq, d.ts_us)).collect();
            assert_eq!(got, vec![(0, 1, 5), (1, 1, 6), (0, 2, 7)], "cut at {cut}");
            assert!(reply.is_some(), "PING must be answered (cut at {cut})");
        }
        assert!(dec.buf.is_empty());
    }

    #[test]
    fn pusher_client_events_carry_sender_and_counter() {
        let Message::Text(t) = Protocol::Pusher.publish_frame(4, 11, 99, "pad") else {
            panic!("text frame expected")
        };
        let sent: serde_json::Value = serde_json::from_str(&t).unwrap();
        assert_eq!(sent["event"], "client-msg");
        assert_eq!(sent["channel"], "private-fanout");
        // As the server forwards it to the other subscribers.
        let delivered =
            r#"{"channel":"private-fanout","event":"client-msg","data":"t99:4:11:pad"}"#;
        let mut out = Vec::new();
        let mut reply = None;
        let mut dec = Protocol::Pusher.decoder();
        dec.feed(&Message::Text(delivered.into()), &mut out, &mut reply);
        assert_eq!(
            out,
            vec![Delivery {
                stream: 4,
                seq: 11,
                ts_us: 99
            }]
        );
        assert!(reply.is_none());
        dec.feed(
            &Message::Text(r#"{"event":"pusher:ping","data":{}}"#.into()),
            &mut out,
            &mut reply,
        );
        assert_eq!(out.len(), 1);
        assert!(matches!(reply, Some(Message::Text(t)) if t.contains("pusher:pong")));
    }

    #[test]
    fn pusher_channel_auth_is_key_and_hex_hmac() {
        // HMAC-SHA256("streamedge-bench-secret", "123.456:private-fanout"), computed
        // independently (Python's hmac module).
        assert_eq!(
            pusher_channel_auth("123.456", "private-fanout"),
            format!(
                "{PUSHER_APP_KEY}:31b80febc9fdbca61c18e324fd8be4dd389f2a44848e17a29813586993780790"
            )
        );
    }

    #[test]
    fn nats_publish_frame_is_a_complete_pub() {
        let Message::Binary(b) = Protocol::Nats.publish_frame(2, 9, 123, "pad") else {
            panic!("binary frame expected")
        };
        assert_eq!(&b[..], b"PUB chat.fanout 12\r\nt123:2:9:pad\r\n");
    }
}
