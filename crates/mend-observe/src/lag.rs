//! How late mend's own event loop runs: a probe that times out while mend itself was not scheduled (a
//! loaded machine, a task that blocked a worker) says nothing about the replica.
//!
//! [`start`] spawns a task that sleeps [`TICK`] at a time and records how late each wake-up came; a probe
//! asks [`worst_during`] for the worst lateness while it waited, counting a stretch without any tick as
//! lag too (the monitor itself was not run). Without a monitor (tests of single modules) there is no
//! judgement.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How often the monitor wakes up.
pub const TICK: Duration = Duration::from_millis(50);
/// How long ticks are kept: longer than any probe's timeout is sensible.
const KEPT: Duration = Duration::from_secs(120);

/// The ticks of the last [`KEPT`]: when each came and how late.
static TICKS: Mutex<VecDeque<(Instant, Duration)>> = Mutex::new(VecDeque::new());

/// Starts the monitor on the current runtime; the task ends with the runtime.
pub fn start() -> tokio::task::JoinHandle<()> {
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
    let ticks = TICKS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let last = ticks.back()?.0;
    // A monitor that stopped ticking long before `to`, with no runtime to run it, is gone (a test's
    // runtime ended): no judgement.
    if to.saturating_duration_since(last) > KEPT {
        return None;
    }
    let mut worst = Duration::ZERO;
    let mut previous = from;
    for &(at, late) in ticks.iter().filter(|(at, _)| *at >= from && *at <= to) {
        worst = worst.max(late).max(at.saturating_duration_since(previous).saturating_sub(TICK));
        previous = at;
    }
    Some(worst.max(to.saturating_duration_since(previous).saturating_sub(TICK)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_stretch_without_ticks_counts_as_lag() {
        let base = Instant::now();
        let at = |ms: u64| base + Duration::from_millis(ms);
        record(at(50), Duration::ZERO);
        record(at(100), Duration::ZERO);
        record(at(150), Duration::from_millis(3));
        assert_eq!(worst_during(at(50), at(150)), Some(Duration::from_millis(3)));
        // Nothing ticked from 150 to 900 ms: 700 ms late beyond the tick.
        record(at(900), Duration::from_millis(700));
        assert_eq!(worst_during(at(100), at(900)), Some(Duration::from_millis(700)));
        // The wait went on past the last tick, which is lag too.
        assert_eq!(worst_during(at(900), at(1500)), Some(Duration::from_millis(550)));
    }
}
