//! Values in the configuration that are more than a number or a string: IP networks
//! (`server.trusted_proxies`) and port ranges (`media.udp_port_range`).

use std::net::IpAddr;

use ipnet::IpNet;

/// An IP network (`10.0.0.0/8`, `fd00::/8`) or a single address (`192.168.1.5`).
pub fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// Parses `"50000-50999"` (inclusive). Empty: no range (ephemeral ports).
pub fn parse_port_range(s: &str) -> Result<Option<(u16, u16)>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let (lo, hi) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?} is not FIRST-LAST (e.g. \"50000-50999\")"))?;
    let lo: u16 = lo
        .trim()
        .parse()
        .map_err(|_| format!("{lo:?} is not a port number"))?;
    let hi: u16 = hi
        .trim()
        .parse()
        .map_err(|_| format!("{hi:?} is not a port number"))?;
    if lo == 0 || hi < lo {
        return Err(format!("{s:?}: FIRST must be at least 1 and at most LAST"));
    }
    Ok(Some((lo, hi)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(parse_net("10.0.0.0/8").unwrap().contains(&ip("10.9.8.7")));
        assert!(!parse_net("10.0.0.0/8").unwrap().contains(&ip("11.0.0.1")));
        assert!(parse_net(" 192.168.1.5 ")
            .unwrap()
            .contains(&ip("192.168.1.5")));
        assert!(parse_net("0.0.0.0/0").unwrap().contains(&ip("8.8.8.8")));
        assert!(parse_net("fd00::/8").unwrap().contains(&ip("fd12::1")));
        assert!(parse_net("10.0.0.0/33").is_none());
        assert!(parse_net("nonsense").is_none());
        assert!(parse_net("10.0.0.0/x").is_none());
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("").unwrap(), None);
        assert_eq!(
            parse_port_range("50000-50010").unwrap(),
            Some((50000, 50010))
        );
        assert_eq!(parse_port_range(" 7 - 7 ").unwrap(), Some((7, 7)));
        for bad in ["x", "1-", "0-5", "9-8", "1-70000"] {
            assert!(parse_port_range(bad).is_err(), "{bad}");
        }
    }
}
