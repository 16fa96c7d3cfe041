//! Opening stream WebSockets from a chosen loopback source address, so that one generator
//! can exceed the ephemeral-port range of a single source address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

pub type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Source address number `i` in 127.0.0.2 .. 127.0.0.251 (only for loopback targets).
pub fn source_addr(target: &SocketAddr, i: usize) -> Option<SocketAddr> {
    if target.ip().is_loopback() && target.is_ipv4() {
        let last = 2 + (i % 250) as u8;
        Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)),
            0,
        ))
    } else {
        None
    }
}

/// The generator's WebSocket settings. tungstenite zero-fills its whole read buffer
/// (128 KiB by default) before every socket read; with thousands of viewers each reading
/// one small frame at a time, that memset was 40 % of the generator's CPU, taken from the
/// same two cores the server under test runs on. 4 KiB holds any chat frame.
fn client_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096)
}

/// Connects from `source` (if given), sets TCP_NODELAY and upgrades to WebSocket, asking
/// for `subprotocol` if given. Errors are `kind: detail` strings (see [`error_kind`]).
pub async fn connect(
    target: SocketAddr,
    url: &str,
    source: Option<SocketAddr>,
    subprotocol: Option<&str>,
) -> Result<Ws, String> {
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    if let Some(src) = source {
        socket.bind(src).map_err(|e| format!("bind: {e}"))?;
    }
    let tcp = socket
        .connect(target)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).ok();
    let mut req = url.into_client_request().map_err(|e| format!("url: {e}"))?;
    if let Some(p) = subprotocol {
        req.headers_mut().insert(
            "sec-websocket-protocol",
            p.parse().map_err(|_| "url: bad subprotocol".to_string())?,
        );
    }
    let (ws, _) = tokio_tungstenite::client_async_with_config(req, tcp, Some(client_config()))
        .await
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(r) => format!("http {}", r.status()),
            other => format!("handshake: {other}"),
        })?;
    Ok(ws)
}

/// Connects, upgrades and waits for the node's `welcome` frame. Returns the socket and
/// the time from starting the TCP connect to receiving `welcome`.
pub async fn open(
    target: SocketAddr,
    url: &str,
    source: Option<SocketAddr>,
    timeout: Duration,
) -> Result<(Ws, Duration), String> {
    open_welcome(target, url, source, timeout)
        .await
        .map(|(ws, took, _)| (ws, took))
}

/// [`open`], also returning the `welcome` frame.
pub async fn open_welcome(
    target: SocketAddr,
    url: &str,
    source: Option<SocketAddr>,
    timeout: Duration,
) -> Result<(Ws, Duration, String), String> {
    let started = Instant::now();
    let work = async {
        let mut ws = connect(target, url, source, Some("streamedge.v1")).await?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.contains("\"welcome\"") => {
                    return Ok((ws, t.as_str().to_owned()))
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(format!("read: {e}")),
                None => return Err("closed before welcome".into()),
            }
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok((ws, welcome))) => Ok((ws, started.elapsed(), welcome)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("timeout".into()),
    }
}

/// Keeps a connection alive: reads (and so answers pings) until it closes.
pub async fn hold(mut ws: Ws) {
    while let Some(Ok(msg)) = ws.next().await {
        if let Message::Close(_) = msg {
            break;
        }
    }
}

/// Error kind for reports: the part before the first colon.
pub fn error_kind(e: &str) -> String {
    e.split(':').next().unwrap_or(e).to_string()
}

/// A Supabase-style access token for a simulated user, signed with the node's secret
/// (valid for two hours, so long runs do not outlive it).
pub fn token(secret: &str, user: &str, role: streamedge::auth::Role) -> String {
    streamedge::auth::dev::mint(
        secret.as_bytes(),
        &streamedge::auth::dev::MintRequest {
            user_id: user,
            role,
            ttl: Duration::from_secs(7200),
            audience: "authenticated",
            issuer: "",
            role_claim: "app_metadata.role",
            anonymous: false,
        },
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    )
}
