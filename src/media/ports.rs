//! `media.udp_port_range`: the UDP ports WebRTC connections bind, for firewalls that open
//! a fixed range. Each connection leases one port (on every interface `media.udp_addr`
//! expands to) for as long as its session lives; the lease goes back when the last holder
//! drops it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

pub use crate::config::parse_port_range as parse_range;

/// The ports of `media.udp_port_range` and which of them are leased.
pub struct PortPool {
    lo: u16,
    hi: u16,
    state: Mutex<PoolState>,
}

struct PoolState {
    leased: HashSet<u16>,
    /// Where the next search starts: ports are handed out round-robin, so a port just
    /// released (whose old peer may still send to it) is the last to be reused.
    next: u16,
}

/// A leased port; returned to the pool when dropped.
pub struct PortLease {
    pub port: u16,
    pool: Arc<PortPool>,
}

impl Drop for PortLease {
    fn drop(&mut self) {
        self.pool.state.lock().unwrap().leased.remove(&self.port);
        metrics::gauge!("streamedge_media_udp_ports_leased").decrement(1.0);
    }
}

impl PortPool {
    pub fn new(lo: u16, hi: u16) -> Arc<Self> {
        Arc::new(Self {
            lo,
            hi,
            state: Mutex::new(PoolState {
                leased: HashSet::new(),
                next: lo,
            }),
        })
    }

    pub fn size(&self) -> usize {
        usize::from(self.hi - self.lo) + 1
    }

    /// Leases the next free port, or `None` when every port of the range is leased.
    pub fn lease(self: &Arc<Self>) -> Option<PortLease> {
        let mut st = self.state.lock().unwrap();
        if st.leased.len() >= self.size() {
            return None;
        }
        let mut port = st.next;
        while st.leased.contains(&port) {
            port = if port == self.hi { self.lo } else { port + 1 };
        }
        st.leased.insert(port);
        st.next = if port == self.hi { self.lo } else { port + 1 };
        metrics::gauge!("streamedge_media_udp_ports_leased").increment(1.0);
        Some(PortLease {
            port,
            pool: self.clone(),
        })
    }

    pub fn leased(&self) -> usize {
        self.state.lock().unwrap().leased.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_go_round_robin_and_come_back() {
        let pool = PortPool::new(100, 102);
        let a = pool.lease().unwrap();
        let b = pool.lease().unwrap();
        let c = pool.lease().unwrap();
        assert_eq!((a.port, b.port, c.port), (100, 101, 102));
        assert!(pool.lease().is_none(), "the range is exhausted");
        drop(b);
        assert_eq!(pool.leased(), 2);
        // The only free port is 101.
        let d = pool.lease().unwrap();
        assert_eq!(d.port, 101);
        drop(a);
        drop(c);
        // Round-robin: after 101 comes 102, not the just-freed 100.
        assert_eq!(pool.lease().unwrap().port, 102);
        assert_eq!(pool.leased(), 1);
    }
}
