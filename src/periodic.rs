//! Work that repeats on an interval until the node stops it: the session sweeper, the
//! viewer refresher, the shared state's health check. Missed ticks are delayed, not
//! bunched, so a slow round is never followed by a burst.

use std::time::Duration;

use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

pub struct Ticker {
    tick: Interval,
    stop: CancellationToken,
}

impl Ticker {
    /// The first tick is immediate.
    pub fn new(every: Duration, stop: CancellationToken) -> Self {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self { tick, stop }
    }

    /// Waits for the next tick; `false` once `stop` is cancelled.
    pub async fn next(&mut self) -> bool {
        tokio::select! {
            // Stopping wins over a tick that is due at the same time.
            biased;
            _ = self.stop.cancelled() => false,
            _ = self.tick.tick() => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ticks_until_stopped() {
        let stop = CancellationToken::new();
        let mut t = Ticker::new(Duration::from_millis(1), stop.clone());
        assert!(t.next().await);
        assert!(t.next().await);
        stop.cancel();
        assert!(!t.next().await);
        assert!(!t.next().await, "stays stopped");
    }
}
