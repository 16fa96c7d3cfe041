//! Per-client-IP limits on this node: concurrent connections and the rate of new ones.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::Refusal;
use crate::config::AdmissionConfig;

/// Addresses a node remembers the connection rate of before it forgets those whose
/// allowance has fully come back.
const RATE_KEYS: usize = 100_000;

/// The per-IP limits of one node (one listener).
pub struct IpLimits {
    max_connections: u32,
    per_sec: f64,
    burst: u32,
    start: Instant,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Open connections per client.
    open: HashMap<IpAddr, u32>,
    /// GCRA theoretical arrival time (µs since `start`) per client.
    tat: HashMap<IpAddr, u64>,
}

/// Holds one of a client's connection slots until dropped.
pub struct IpGuard {
    limits: Arc<IpLimits>,
    client: IpAddr,
}

impl Drop for IpGuard {
    fn drop(&mut self) {
        let mut st = self.limits.state.lock().expect("admission lock");
        if let Some(n) = st.open.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                st.open.remove(&self.client);
            }
        }
    }
}

/// The unit a limit counts: an IPv4 address, or the /64 of an IPv6 one (IPv4-mapped IPv6
/// addresses count as IPv4).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl IpLimits {
    pub fn new(cfg: &AdmissionConfig) -> Arc<Self> {
        Arc::new(Self {
            max_connections: cfg.ip_connections,
            per_sec: cfg.ip_connects_per_sec,
            burst: cfg.ip_connects_burst,
            start: Instant::now(),
            state: Mutex::new(State::default()),
        })
    }

    /// Admits a new connection from `ip`: within its rate and its concurrent connections.
    /// The slot is held until the guard is dropped.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<IpGuard, Refusal> {
        let client = client_key(ip);
        let mut st = self.state.lock().expect("admission lock");
        if self.max_connections > 0
            && st.open.get(&client).copied().unwrap_or(0) >= self.max_connections
        {
            return Err(Refusal::IpConnections);
        }
        if self.per_sec > 0.0 {
            let now_us = self.start.elapsed().as_micros() as u64;
            let (decision, tat) = crate::store::gcra(
                now_us,
                st.tat.get(&client).copied(),
                self.per_sec,
                self.burst,
            );
            match tat {
                Some(t) => {
                    if st.tat.len() >= RATE_KEYS {
                        // A TAT in the past is the same as no entry.
                        st.tat.retain(|_, t| *t > now_us);
                    }
                    st.tat.insert(client, t);
                }
                None => {
                    return Err(Refusal::IpRate {
                        retry_after_secs: decision.retry_after.as_secs_f64().ceil() as u64,
                    })
                }
            }
        }
        *st.open.entry(client).or_insert(0) += 1;
        Ok(IpGuard {
            limits: self.clone(),
            client,
        })
    }

    /// Connections `ip` holds now.
    pub fn open(&self, ip: IpAddr) -> u32 {
        let st = self.state.lock().expect("admission lock");
        st.open.get(&client_key(ip)).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(conns: u32, per_sec: f64, burst: u32) -> Arc<IpLimits> {
        IpLimits::new(&AdmissionConfig {
            ip_connections: conns,
            ip_connects_per_sec: per_sec,
            ip_connects_burst: burst,
            ..AdmissionConfig::default()
        })
    }

    #[test]
    fn concurrent_connections_are_capped_per_client_and_released_on_drop() {
        let l = limits(2, 0.0, 0);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let g1 = l.admit(a).unwrap();
        let _g2 = l.admit(a).unwrap();
        assert_eq!(l.admit(a).err(), Some(Refusal::IpConnections));
        // Another client is not affected.
        let _g3 = l.admit(b).unwrap();
        drop(g1);
        assert_eq!(l.open(a), 1);
        let _g4 = l.admit(a).unwrap();
    }

    #[test]
    fn the_connection_rate_allows_a_burst_then_refuses_with_a_retry_time() {
        let l = limits(0, 1.0, 3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let guards: Vec<IpGuard> = (0..3).map(|_| l.admit(a).unwrap()).collect();
        match l.admit(a) {
            Err(Refusal::IpRate { retry_after_secs }) => assert_eq!(retry_after_secs, 1),
            other => panic!("{:?}", other.map(|_| ())),
        }
        drop(guards);
        // Closing connections does not give back the rate.
        assert!(l.admit(a).is_err());
    }

    #[test]
    fn ipv6_clients_count_per_64_and_mapped_ipv4_as_ipv4() {
        let l = limits(1, 0.0, 0);
        let x: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let y: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let z: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _g = l.admit(x).unwrap();
        assert!(l.admit(y).is_err(), "same /64");
        let _h = l.admit(z).unwrap();
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        let _i = l.admit(v4).unwrap();
        assert!(l.admit(mapped).is_err());
    }
}
