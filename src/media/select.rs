//! Per-viewer layer selection (pure, time passed in): the viewer's estimated bandwidth —
//! from its REMB and the loss in its receiver reports — picks one of the publisher's
//! layers, with hysteresis so the choice does not flap.
//!
//! - Down: the estimate stays under 0.85× the current layer's bitrate for 2 s (at once
//!   when the cap drops or the layer stops arriving).
//! - Up: the estimate stays over 1.3× the next layer's bitrate for 4 s (then to the
//!   highest layer it has that room for); or, since a
//!   receiver's estimate rarely grows far past what it receives, a probe: no loss and an
//!   estimate at least 1.4× the current layer for a hold-off (8 s, doubled after each
//!   probe that had to come back down within 10 s, up to 64 s).
//! - No estimate yet: the highest layer the cap allows.

use std::time::{Duration, Instant};

const DOWN_FACTOR: f64 = 0.85;
const DOWN_AFTER: Duration = Duration::from_secs(2);
const UP_FACTOR: f64 = 1.3;
const UP_AFTER: Duration = Duration::from_secs(4);
const PROBE_FACTOR: f64 = 1.4;
const PROBE_FIRST: Duration = Duration::from_secs(8);
const PROBE_MAX: Duration = Duration::from_secs(64);
const PROBE_FAILS_WITHIN: Duration = Duration::from_secs(10);
/// Loss (fraction) over which the loss-based estimate backs off, and under which it grows.
const LOSS_HIGH: f64 = 0.10;
const LOSS_LOW: f64 = 0.02;

/// The viewer's bandwidth estimate: the lower of its last REMB and a loss-based estimate
/// (GCC's loss controller: back off by half the loss over 10 %, grow 8 % per report
/// under 2 %).
#[derive(Debug, Default, Clone)]
pub struct Estimator {
    remb: Option<f64>,
    loss_based: Option<f64>,
    /// The last reported loss fraction.
    pub loss: Option<f64>,
}

impl Estimator {
    pub fn remb(&mut self, bps: f64) {
        self.remb = Some(bps.max(0.0));
    }

    /// A receiver report's `fraction_lost` (/256) while receiving `rate` bit/s.
    pub fn loss(&mut self, fraction_lost: u8, rate: f64) {
        let loss = f64::from(fraction_lost) / 256.0;
        self.loss = Some(loss);
        if loss > LOSS_HIGH {
            let base = self.loss_based.unwrap_or(rate).min(rate.max(1.0));
            self.loss_based = Some(base * (1.0 - 0.5 * loss));
        } else if loss < LOSS_LOW {
            if let Some(b) = self.loss_based {
                // Far above anything received: no longer a limit.
                self.loss_based = (b * 1.08 < 4.0 * rate.max(1.0)).then_some(b * 1.08);
            }
        }
    }

    pub fn estimate(&self) -> Option<f64> {
        match (self.remb, self.loss_based) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The hysteresis state of one viewer's layer choice.
#[derive(Debug)]
pub struct Selector {
    down_since: Option<Instant>,
    up_since: Option<Instant>,
    probe_since: Option<Instant>,
    probe_wait: Duration,
    last_probe: Option<Instant>,
}

impl Default for Selector {
    fn default() -> Self {
        Selector {
            down_since: None,
            up_since: None,
            probe_since: None,
            probe_wait: PROBE_FIRST,
            last_probe: None,
        }
    }
}

impl Selector {
    /// The layer to watch, of `rates` (bit/s of each layer, ranked low to high; 0 for a
    /// layer not arriving), given the current one, the cap (highest index allowed), the
    /// estimate and the last loss fraction.
    pub fn decide(
        &mut self,
        now: Instant,
        rates: &[f64],
        current: Option<usize>,
        cap: usize,
        estimate: Option<f64>,
        loss: Option<f64>,
    ) -> usize {
        if rates.is_empty() {
            return 0;
        }
        let top = cap.min(rates.len() - 1);
        let live = |i: usize| rates[i] > 0.0;
        // The highest live layer at or under `i` (the lowest layer if none is live).
        let live_at_or_under = |i: usize| (0..=i).rev().find(|&j| live(j)).unwrap_or(0);
        let Some(est) = estimate else {
            self.reset();
            return live_at_or_under(top);
        };
        let fit = |budget: f64| {
            (0..=top)
                .rev()
                .find(|&j| live(j) && rates[j] <= budget)
                .unwrap_or_else(|| (0..=top).find(|&j| live(j)).unwrap_or(0))
        };
        let Some(cur) = current else {
            self.reset();
            return fit(est);
        };
        if cur > top || !live(cur) {
            self.reset();
            return live_at_or_under(top.min(cur));
        }
        // Down.
        if est < DOWN_FACTOR * rates[cur] && cur > 0 {
            self.up_since = None;
            self.probe_since = None;
            let since = *self.down_since.get_or_insert(now);
            if now.duration_since(since) >= DOWN_AFTER {
                self.down_since = None;
                if self
                    .last_probe
                    .is_some_and(|p| now.duration_since(p) < PROBE_FAILS_WITHIN)
                {
                    self.probe_wait = (self.probe_wait * 2).min(PROBE_MAX);
                }
                self.last_probe = None;
                return fit(DOWN_FACTOR * est).min(cur - 1);
            }
            return cur;
        }
        self.down_since = None;
        // Up: the next live layer above.
        let Some(next) = (cur + 1..=top).find(|&j| live(j)) else {
            self.up_since = None;
            self.probe_since = None;
            return cur;
        };
        if est > UP_FACTOR * rates[next] {
            let since = *self.up_since.get_or_insert(now);
            if now.duration_since(since) >= UP_AFTER {
                self.reset();
                // As high as the estimate has room for, not just one step.
                return (next..=top)
                    .rev()
                    .find(|&j| live(j) && est > UP_FACTOR * rates[j])
                    .unwrap_or(next);
            }
        } else {
            self.up_since = None;
        }
        let clean = loss.is_some_and(|l| l < LOSS_LOW);
        if clean && est >= PROBE_FACTOR * rates[cur] {
            let since = *self.probe_since.get_or_insert(now);
            if now.duration_since(since) >= self.probe_wait {
                self.reset();
                self.last_probe = Some(now);
                return next;
            }
        } else {
            self.probe_since = None;
        }
        cur
    }

    fn reset(&mut self) {
        self.down_since = None;
        self.up_since = None;
        self.probe_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATES: [f64; 3] = [150_000.0, 600_000.0, 2_500_000.0];

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn without_an_estimate_the_highest_allowed_layer() {
        let mut s = Selector::default();
        let t = Instant::now();
        assert_eq!(s.decide(t, &RATES, None, 2, None, None), 2);
        assert_eq!(s.decide(t, &RATES, Some(2), 1, None, None), 1);
        // The top layer stopped arriving.
        assert_eq!(s.decide(t, &[1.0, 2.0, 0.0], Some(2), 2, None, None), 1);
        assert_eq!(s.decide(t, &[], None, 2, None, None), 0);
    }

    #[test]
    fn a_first_estimate_picks_the_layer_that_fits() {
        let mut s = Selector::default();
        let t = Instant::now();
        assert_eq!(s.decide(t, &RATES, None, 2, Some(200_000.0), None), 0);
        assert_eq!(s.decide(t, &RATES, None, 2, Some(1_000_000.0), None), 1);
        assert_eq!(s.decide(t, &RATES, None, 2, Some(50_000.0), None), 0);
    }

    #[test]
    fn going_down_takes_two_seconds_of_a_low_estimate() {
        let mut s = Selector::default();
        let t = Instant::now();
        let low = Some(300_000.0);
        assert_eq!(s.decide(t, &RATES, Some(2), 2, low, None), 2);
        assert_eq!(s.decide(t + secs(1.0), &RATES, Some(2), 2, low, None), 2);
        // A good report in between restarts the wait.
        assert_eq!(
            s.decide(t + secs(1.5), &RATES, Some(2), 2, Some(3e6), None),
            2
        );
        assert_eq!(s.decide(t + secs(2.0), &RATES, Some(2), 2, low, None), 2);
        assert_eq!(s.decide(t + secs(4.0), &RATES, Some(2), 2, low, None), 0);
    }

    #[test]
    fn going_up_takes_four_seconds_of_room_for_the_next_layer() {
        let mut s = Selector::default();
        let t = Instant::now();
        let room = Some(1_000_000.0);
        assert_eq!(s.decide(t, &RATES, Some(0), 2, room, None), 0);
        assert_eq!(s.decide(t + secs(3.9), &RATES, Some(0), 2, room, None), 0);
        assert_eq!(s.decide(t + secs(4.0), &RATES, Some(0), 2, room, None), 1);
        // Not enough for the top layer: stays.
        assert_eq!(s.decide(t + secs(20.0), &RATES, Some(1), 2, room, None), 1);
        // Room for the top layer: straight there.
        let mut s = Selector::default();
        let plenty = Some(4e6);
        assert_eq!(s.decide(t, &RATES, Some(0), 2, plenty, None), 0);
        assert_eq!(s.decide(t + secs(4.0), &RATES, Some(0), 2, plenty, None), 2);
        // Unless capped.
        let mut s = Selector::default();
        assert_eq!(s.decide(t, &RATES, Some(0), 1, plenty, None), 0);
        assert_eq!(s.decide(t + secs(4.0), &RATES, Some(0), 1, plenty, None), 1);
        // The cap holds it down whatever the estimate.
        let mut s = Selector::default();
        for i in 0..20 {
            assert_eq!(
                s.decide(t + secs(i as f64), &RATES, Some(0), 0, Some(1e9), Some(0.0)),
                0
            );
        }
    }

    #[test]
    fn probing_up_backs_off_after_a_failed_probe() {
        let mut s = Selector::default();
        let t = Instant::now();
        // An estimate at 1.5x the low layer, no loss: a probe after 8 s.
        let est = Some(225_000.0);
        assert_eq!(s.decide(t, &RATES, Some(0), 2, est, Some(0.0)), 0);
        assert_eq!(
            s.decide(t + secs(7.0), &RATES, Some(0), 2, est, Some(0.0)),
            0
        );
        assert_eq!(
            s.decide(t + secs(8.0), &RATES, Some(0), 2, est, Some(0.0)),
            1
        );
        // The mid layer does not fit: back down 2 s later.
        assert_eq!(
            s.decide(t + secs(9.0), &RATES, Some(1), 2, est, Some(0.0)),
            1
        );
        assert_eq!(
            s.decide(t + secs(11.0), &RATES, Some(1), 2, est, Some(0.0)),
            0
        );
        // The next probe waits 16 s.
        assert_eq!(
            s.decide(t + secs(12.0), &RATES, Some(0), 2, est, Some(0.0)),
            0
        );
        assert_eq!(
            s.decide(t + secs(27.0), &RATES, Some(0), 2, est, Some(0.0)),
            0
        );
        assert_eq!(
            s.decide(t + secs(28.0), &RATES, Some(0), 2, est, Some(0.0)),
            1
        );
        // With loss, no probe.
        let mut s = Selector::default();
        for i in 0..30 {
            assert_eq!(
                s.decide(t + secs(i as f64), &RATES, Some(0), 2, est, Some(0.05)),
                0
            );
        }
    }

    #[test]
    fn loss_lowers_the_estimate_and_its_absence_lifts_it() {
        let mut e = Estimator::default();
        assert_eq!(e.estimate(), None);
        e.loss(0, 1e6);
        assert_eq!(e.estimate(), None);
        // 25 % loss at 1 Mbit/s.
        e.loss(64, 1e6);
        assert!((e.estimate().unwrap() - 875_000.0).abs() < 1.0);
        e.remb(500_000.0);
        assert_eq!(e.estimate(), Some(500_000.0));
        e.remb(5e6);
        e.loss(0, 1e6);
        assert!((e.estimate().unwrap() - 945_000.0).abs() < 1.0);
        for _ in 0..100 {
            e.loss(0, 1e6);
        }
        // The loss-based limit lifts; REMB remains.
        assert_eq!(e.estimate(), Some(5e6));
    }
}
