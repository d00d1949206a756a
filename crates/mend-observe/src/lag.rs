//! How late mend's own event loop runs: a probe that times out while mend itself was not scheduled (a
//! loaded machine, a task that blocked a worker) says nothing about the replica.
//!
//! [`start`] spawns a task that sleeps [`TICK`] at a time and records how late each wake-up came; a probe
//! asks [`worst_during`] for the worst lateness while it waited, counting a stretch without any tick as
//! lag too (the monitor itself was not run). Without a monitor (tests of single modules) there is no
//! judgement.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// How often the monitor wakes up.
pub const TICK: Duration = Duration::from_millis(50);
/// How long ticks are kept: longer than any probe's timeout is sensible.
const KEPT: Duration = Duration::from_secs(120);

/// The ticks of the last [`KEPT`]: when each came and how late.
static TICKS: Mutex<VecDeque<(Instant, Duration)>> = Mutex::new(VecDeque::new());
/// Whether a monitor was started in this process.
static STARTED: AtomicBool = AtomicBool::new(false);

/// Starts the monitor on the current runtime; the task ends with the runtime.
pub fn start() -> tokio::task::JoinHandle<()> {
    STARTED.store(true, Ordering::Relaxed);
    tokio::spawn(async {
        let mut expected = Instant::now() + TICK;
        loop {
            tokio::time::sleep_until(expected).await;
            let now = Instant::now();
            record(now, now.saturating_duration_since(expected));
            expected = now + TICK;
        }
    })
}

fn record(at: Instant, late: Duration) {
    let mut ticks = TICKS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    while ticks.front().is_some_and(|(first, _)| at.saturating_duration_since(*first) > KEPT) {
        ticks.pop_front();
    }
    ticks.push_back((at, late));
}

/// The worst lateness of mend's event loop between `from` and `to`: the latest tick's lateness, or the
/// longest stretch without a tick beyond [`TICK`] (the monitor was not run meanwhile). `None` when no
/// monitor runs.
pub fn worst_during(from: Instant, to: Instant) -> Option<Duration> {
    if !STARTED.load(Ordering::Relaxed) {
        return None;
    }
    let ticks = TICKS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let last = ticks.back()?.0;
    // A monitor that stopped ticking long before `to`, with no runtime to run it, is gone (a test's
    // runtime ended): no judgement.
    if to.saturating_duration_since(last) > KEPT {
        return None;
    }
    Some(worst(&ticks, from, to))
}

/// The worst lateness within `from..=to` given the ticks: a tick's lateness counts as far as it lies
/// in the window, and so does a stretch without ticks (beyond one [`TICK`]), up to `to`.
fn worst(ticks: &VecDeque<(Instant, Duration)>, from: Instant, to: Instant) -> Duration {
    let mut worst = Duration::ZERO;
    let mut previous = from;
    for &(at, late) in ticks.iter().filter(|(at, _)| *at >= from && *at <= to) {
        let late_in_window = late.min(at.saturating_duration_since(from));
        worst = worst.max(late_in_window).max(at.saturating_duration_since(previous).saturating_sub(TICK));
        previous = at;
    }
    worst.max(to.saturating_duration_since(previous).saturating_sub(TICK))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stretch_without_ticks_counts_as_lag() {
        let base = Instant::now();
        let at = |ms: u64| base + Duration::from_millis(ms);
        let ms = Duration::from_millis;
        let mut ticks = VecDeque::from([(at(50), ms(0)), (at(100), ms(0)), (at(150), ms(3))]);
        assert_eq!(worst(&ticks, at(50), at(150)), ms(3));
        // Nothing ticked from 150 to 900 ms: the tick at 900 came 700 ms late.
        ticks.push_back((at(900), ms(700)));
        assert_eq!(worst(&ticks, at(100), at(900)), ms(700));
        // Only the part of that lateness inside the window counts.
        assert_eq!(worst(&ticks, at(600), at(900)), ms(300));
        // The wait went on past the last tick, which is lag too.
        assert_eq!(worst(&ticks, at(900), at(1500)), ms(550));
        // Regular ticks: no lag.
        let regular: VecDeque<_> = (1..=20).map(|idx| (at(idx * 50), ms(1))).collect();
        assert_eq!(worst(&regular, at(0), at(1000)), ms(1));
    }
}
