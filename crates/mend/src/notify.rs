//! systemd's service notification protocol (`sd_notify`), so that mend runs as a `Type=notify` unit:
//! systemd learns when mend is ready (its API listens and the services are starting), reloading and
//! stopping, and, with `WatchdogSec=`, restarts a mend whose runtime stalls. Without `NOTIFY_SOCKET`
//! (not under systemd) every call does nothing. Replicas never see these variables (see
//! `mend_supervisor::spawn`).

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// A connection to systemd's notification socket, if mend runs under systemd.
pub(crate) struct Systemd {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Systemd {
    /// From `NOTIFY_SOCKET` (a path, or an abstract name after `@`) and `WATCHDOG_USEC`/`WATCHDOG_PID`.
    pub(crate) fn from_environment() -> Self {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|socket| {
            let address = notify_address(socket.to_str()?)?;
            Some((UnixDatagram::unbound().ok()?, address))
        });
        let watchdog = watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        Self { target, watchdog }
    }

    fn send(&self, state: &str) {
        if let Some((socket, address)) = &self.target
            && let Err(error) = socket.send_to_addr(state.as_bytes(), address)
        {
            tracing::warn!(%error, "cannot notify systemd");
        }
    }

    /// The API listens and the services are starting; `status` is shown by `systemctl status` (its first
    /// line only: the protocol is one assignment per line).
    pub(crate) fn ready(&self, status: &str) {
        let status = status.lines().next().unwrap_or_default();
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    /// A reload begins; [`Systemd::ready`] ends it.
    pub(crate) fn reloading(&self) {
        match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
            Ok(now) => {
                let micros = now.tv_sec() * 1_000_000 + now.tv_nsec() / 1_000;
                self.send(&format!("RELOADING=1\nMONOTONIC_USEC={micros}"));
            }
            Err(_) => self.send("RELOADING=1"),
        }
    }

    /// mend is stopping its services.
    pub(crate) fn stopping(&self) {
        self.send("STOPPING=1");
    }

    /// With `WatchdogSec=`: pings systemd at half the interval from the async runtime, so that a stalled
    /// runtime stops the pings and systemd restarts mend. Runs until the task is dropped.
    pub(crate) fn watchdog(self: std::sync::Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let interval = self.watchdog?;
        self.target.as_ref()?;
        Some(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval / 2);
            loop {
                ticks.tick().await;
                self.send("WATCHDOG=1");
            }
        }))
    }
}

/// The socket address in `NOTIFY_SOCKET`: a path, or `@name` for an abstract socket.
fn notify_address(socket: &str) -> Option<SocketAddr> {
    match socket.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes()).ok()
        }
        None if socket.starts_with('/') => SocketAddr::from_pathname(socket).ok(),
        None => None,
    }
}

/// The watchdog interval, when systemd asks this process (`WATCHDOG_PID`, if set, is ours) for pings.
fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    if pid.is_some_and(|pid| pid.parse::<u32>().ok() != Some(me)) {
        return None;
    }
    let micros: u64 = usec?.parse().ok()?;
    (micros > 0).then(|| Duration::from_micros(micros))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_ours_only_when_systemd_says_so() {
        assert_eq!(watchdog_interval(Some("2000000"), None, 7), Some(Duration::from_secs(2)));
        assert_eq!(watchdog_interval(Some("2000000"), Some("7"), 7), Some(Duration::from_secs(2)));
        assert_eq!(watchdog_interval(Some("2000000"), Some("8"), 7), None, "another process's watchdog");
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
    }

    #[test]
    fn messages_reach_the_notification_socket() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notify");
        let systemd_side = UnixDatagram::bind(&path).expect("bind");
        let address = notify_address(path.to_str().expect("utf-8")).expect("a path");
        let notifier = Systemd { target: Some((UnixDatagram::unbound().expect("socket"), address)), watchdog: None };
        notifier.ready("2 services\nSERVICE=injected");
        notifier.reloading();
        notifier.stopping();
        let mut buffer = [0u8; 256];
        let mut received = Vec::new();
        for _ in 0..3 {
            let n = systemd_side.recv(&mut buffer).expect("a message");
            received.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
        }
        assert_eq!(received[0], "READY=1\nSTATUS=2 services");
        assert!(received[1].starts_with("RELOADING=1\nMONOTONIC_USEC="), "{}", received[1]);
        assert_eq!(received[2], "STOPPING=1");
        assert!(notify_address("@mend-test").is_some());
        assert!(notify_address("relative").is_none());
        // Not under systemd: nothing to do, nothing fails.
        Systemd { target: None, watchdog: None }.ready("x");
    }
}
