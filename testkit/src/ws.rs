//! WebSocket clients for the stream endpoint: connecting with the `streamedge.v1`
//! subprotocol, reading JSON frames and close codes, sending text.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// A client WebSocket to a node.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a stream WebSocket offering the `streamedge.v1` subprotocol.
pub async fn ws_connect(url: &str) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", "streamedge.v1".parse().unwrap());
    let (ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket connect");
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap()),
        Some("streamedge.v1")
    );
    ws
}

/// The next text frame as JSON, skipping pings and the periodic `viewers` frames
/// (use [`next_of_type`] to wait for those), failing after `limit`.
pub async fn next_json(ws: &mut Ws, limit: Duration) -> serde_json::Value {
    loop {
        let v = next_any_json(ws, limit).await;
        if v["type"] != "viewers" {
            return v;
        }
    }
}

/// The next frame of type `kind`, skipping others, failing after `limit`.
pub async fn next_of_type(ws: &mut Ws, kind: &str, limit: Duration) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let v = next_any_json(ws, left).await;
        if v["type"] == kind {
            return v;
        }
    }
}

/// The next text frame as JSON (skipping pings), failing after `limit`.
pub async fn next_any_json(ws: &mut Ws, limit: Duration) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("timed out waiting for a frame")
            .expect("connection ended")
            .expect("websocket error");
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).expect("server sent JSON"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Reads until the close frame and returns its code (skipping other frames).
pub async fn close_code(ws: &mut Ws, limit: Duration) -> u16 {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("timed out waiting for close")
        {
            Some(Ok(Message::Close(Some(f)))) => return f.code.into(),
            Some(Ok(Message::Close(None))) => panic!("close frame without a code"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("connection failed before a close frame: {e}"),
            None => panic!("connection ended without a close frame"),
        }
    }
}

/// Sends a `ping` frame and returns the next frame (as [`next_json`]: the `pong`, when
/// the connection is healthy).
pub async fn ping(ws: &mut Ws, limit: Duration) -> serde_json::Value {
    send_text(ws, r#"{"type":"ping"}"#).await;
    next_json(ws, limit).await
}

/// Sends one text frame.
pub async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::Text(text.into())).await.unwrap();
}

/// A TCP connection to `addr` from the loopback address `from` (any of 127.0.0.0/8), so a
/// test can play several client IPs.
pub async fn tcp_from(from: std::net::IpAddr, addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::new(from, 0)).unwrap();
    socket.connect(addr).await.expect("tcp connect")
}

/// A refused WebSocket upgrade: status, `Retry-After` and the problem body.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: serde_json::Value,
}

/// Opens a stream WebSocket from the loopback address `from` with extra request headers;
/// `Err` with the answer when the node refuses the upgrade.
pub async fn ws_connect_from(
    from: std::net::IpAddr,
    addr: std::net::SocketAddr,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, Refused> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Error;
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", "streamedge.v1".parse().unwrap());
    for (k, v) in headers {
        req.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let tcp = tcp_from(from, addr).await;
    match tokio_tungstenite::client_async(req, tokio_tungstenite::MaybeTlsStream::Plain(tcp)).await
    {
        Ok((ws, _)) => Ok(ws),
        Err(Error::Http(resp)) => Err(Refused {
            status: resp.status().as_u16(),
            retry_after: resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string()),
            body: resp
                .body()
                .as_ref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(serde_json::Value::Null),
        }),
        Err(e) => panic!("websocket connect from {from}: {e}"),
    }
}
