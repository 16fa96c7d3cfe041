//! Scraping the node's Prometheus endpoint over plain HTTP/1.0.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Fetches `/metrics` from the node's admin listener.
pub async fn scrape(admin: SocketAddr) -> anyhow::Result<String> {
    let mut tcp = tokio::net::TcpStream::connect(admin).await?;
    tcp.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {admin}\r\n\r\n").as_bytes())
        .await?;
    let mut body = Vec::new();
    tcp.read_to_end(&mut body).await?;
    let text = String::from_utf8_lossy(&body).into_owned();
    let start = text.find("\r\n\r\n").map(|i| i + 4).unwrap_or(0);
    Ok(text[start..].to_string())
}

/// The value of an unlabelled sample.
pub fn value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
