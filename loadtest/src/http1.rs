//! A minimal HTTP/1.1 keep-alive client for load generation: one request at a time per
//! connection, responses framed by `Content-Length`. Cheap enough that the generator does
//! not need more CPU than the node it measures.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Conn {
    tcp: TcpStream,
    buf: Vec<u8>,
}

pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Serialises a request with a JSON (or empty) body.
pub fn request(method: &str, host: SocketAddr, path: &str, bearer: &str, body: &str) -> Vec<u8> {
    let mut r =
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {bearer}\r\n");
    if !body.is_empty() {
        r.push_str("Content-Type: application/json\r\n");
    }
    r.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    r.into_bytes()
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        Ok(Self {
            tcp,
            buf: Vec::with_capacity(4096),
        })
    }

    pub async fn send(&mut self, req: &[u8]) -> std::io::Result<Response> {
        self.tcp.write_all(req).await?;
        self.response().await
    }

    /// Writes `reqs` already concatenated (HTTP/1.1 pipelining: one write, several
    /// requests in flight) and reads their `n` responses, in order.
    pub async fn send_pipelined(
        &mut self,
        reqs: &[u8],
        n: usize,
        mut on_response: impl FnMut(Response),
    ) -> std::io::Result<()> {
        self.tcp.write_all(reqs).await?;
        for _ in 0..n {
            on_response(self.response().await?);
        }
        Ok(())
    }

    /// Reads the next response.
    async fn response(&mut self) -> std::io::Result<Response> {
        loop {
            if let Some((status, head_len, body_len)) = parse_head(&self.buf)? {
                if self.buf.len() >= head_len + body_len {
                    let body = self.buf[head_len..head_len + body_len].to_vec();
                    self.buf.drain(..head_len + body_len);
                    return Ok(Response { status, body });
                }
            }
            let mut chunk = [0u8; 8192];
            let n = self.tcp.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn parse_head(buf: &[u8]) -> std::io::Result<Option<(u16, usize, usize)>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end])
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad head"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad status"))?;
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    Ok(Some((status, end + 4, len)))
}
