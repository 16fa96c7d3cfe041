//! A WebSocket client that never answers anything: the handshake by hand, then raw frames
//! read off and written to the socket. For tests of what the node does to silent clients
//! and to frames a conforming client would never send.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A WebSocket client that never answers anything (a tungstenite client would answer
/// pings as soon as it reads).
pub struct RawWs {
    tcp: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl RawWs {
    pub async fn connect(addr: SocketAddr, path: &str) -> Self {
        Self::connect_with_recv_buffer(addr, path, None).await
    }

    /// Like [`RawWs::connect`], with a fixed socket receive buffer (which also turns off
    /// the kernel's receive-buffer autotuning, up to 32 MB on loopback here): a client that
    /// stops reading then pushes back on the node after kilobytes, not megabytes.
    pub async fn connect_with_recv_buffer(
        addr: SocketAddr,
        path: &str,
        recv_buffer: Option<u32>,
    ) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(n) = recv_buffer {
            socket.set_recv_buffer_size(n).unwrap();
        }
        let mut tcp = socket.connect(addr).await.unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            let n = tcp.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed during handshake");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "handshake refused: {head}"
        );
        buf.drain(..end);
        Self { tcp, buf }
    }

    /// The next text frame's payload (other frames are skipped); `None` at a close or EOF.
    pub async fn next_text(&mut self, limit: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut chunk = [0u8; 4096];
        loop {
            while let Some((opcode, payload, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                match opcode {
                    0x1 => return Some(String::from_utf8(payload).expect("utf-8 text")),
                    0x8 => return None,
                    _ => {}
                }
            }
            let n = tokio::time::timeout_at(deadline, self.tcp.read(&mut chunk))
                .await
                .expect("timed out waiting for a text frame")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads frames until a close frame (returning its code) or EOF (`None`).
    pub async fn read_until_close(&mut self, limit: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut chunk = [0u8; 4096];
        loop {
            while let Some((opcode, payload, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                if opcode == 0x8 {
                    return payload.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
                }
            }
            let n = tokio::time::timeout_at(deadline, self.tcp.read(&mut chunk))
                .await
                .expect("timed out waiting for close")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends one frame with FIN set; `masked` as a conforming client would.
    pub async fn send_frame(&mut self, opcode: u8, payload: &[u8], masked: bool) {
        self.send_fragment(true, opcode, payload, masked).await;
    }

    /// Sends one frame, with FIN set only when `fin` (a fragment of a longer message
    /// otherwise; opcode 0 continues one).
    pub async fn send_fragment(&mut self, fin: bool, opcode: u8, payload: &[u8], masked: bool) {
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => f.push(mask_bit | n as u8),
            n if n <= 0xffff => {
                f.push(mask_bit | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(mask_bit | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            let key = [0x12u8, 0x34, 0x56, 0x78];
            f.extend_from_slice(&key);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            f.extend_from_slice(payload);
        }
        self.tcp.write_all(&f).await.unwrap();
    }
}

/// One unmasked server frame: (opcode, payload, bytes used), if complete.
fn parse_server_frame(b: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if b.len() < 2 {
        return None;
    }
    let opcode = b[0] & 0x0f;
    let (len, mut at) = match b[1] & 0x7f {
        126 => (u16::from_be_bytes([*b.get(2)?, *b.get(3)?]) as usize, 4),
        127 => (
            u64::from_be_bytes(b.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    if b[1] & 0x80 != 0 {
        at += 4; // masked (not expected from a server)
    }
    let payload = b.get(at..at + len)?.to_vec();
    Some((opcode, payload, at + len))
}
