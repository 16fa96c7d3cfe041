//! The client's IP address for rate limiting: the TCP peer, or — when the peer is a
//! trusted proxy (`server.trusted_proxies`) — the right-most `X-Forwarded-For` entry that
//! is not itself a trusted proxy. Entries a client wrote itself (left of the proxies' own)
//! are never believed.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// See the module documentation.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().parse::<IpAddr>().ok())
        .collect::<Option<Vec<_>>>()
        .unwrap_or_default();
    for hop in hops.into_iter().rev() {
        let hop = canonical(hop);
        client = hop;
        if !is_trusted(&hop) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().unwrap());
        h
    }

    #[test]
    fn ipv4_mapped_peers_are_matched_as_ipv4() {
        let trusted = [crate::config::parse_net("10.0.0.0/8").unwrap()];
        let h = xff("198.51.100.7");
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.1"), &h, &trusted),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_ip(ip("::ffff:203.0.113.9"), &h, &trusted),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_claims() {
        let trusted = [crate::config::parse_net("10.0.0.0/8").unwrap()];
        assert_eq!(
            client_ip(ip("203.0.113.9"), &xff("1.1.1.1"), &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(ip("203.0.113.9"), &xff("1.1.1.1"), &[]),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn trusted_proxy_chain_yields_rightmost_untrusted() {
        let trusted = [crate::config::parse_net("10.0.0.0/8").unwrap()];
        // The client forged "6.6.6.6"; the proxies appended the real client and themselves.
        let h = xff("6.6.6.6, 198.51.100.7, 10.0.0.2");
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("198.51.100.7"));
        // No header: the proxy itself.
        assert_eq!(
            client_ip(ip("10.0.0.1"), &HeaderMap::new(), &trusted),
            ip("10.0.0.1")
        );
        // Garbage header: not believed.
        assert_eq!(
            client_ip(ip("10.0.0.1"), &xff("x, y"), &trusted),
            ip("10.0.0.1")
        );
    }
}
