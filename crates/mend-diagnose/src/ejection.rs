//! What the proxy says of an ejection, as a fact diagnosis can weigh: the answer that ended the
//! replica's run of failures, how many in a row, and what its siblings answered meanwhile. A replica
//! ejected for 5xx answers while its siblings answered without errors is a bad replica on hard facts,
//! however few of the service's requests it got (ejection and retries keep them few).

use std::fmt::Write as _;
use std::time::Duration;

use mend_types::Timestamp;

use crate::evidence::clock;

/// Largest share of a sibling's attempts answered 5xx for it to count as healthy: one in ten.
pub const HEALTHY_SIBLING_ERROR_RATIO: f64 = 0.1;

/// One sibling's attempts and 5xx answers in the window before the ejection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SiblingAnswers {
    /// The sibling replica.
    pub replica: u32,
    /// Attempts sent to it.
    pub attempts: u64,
    /// Of which answered 5xx.
    pub errors: u64,
}

/// An ejection by the service's proxy.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct EjectionFacts {
    /// The 5xx status that ended the run of failures; None when the run ended otherwise (a failed
    /// connect, a reset, a timeout) or the proxy did not say.
    pub status: Option<u16>,
    /// Failed attempts in a row that ejected it (0 when not known).
    pub in_a_row: u32,
    /// The replica's siblings in the same release, with what they answered over `window`; empty when
    /// not known.
    pub siblings: Vec<SiblingAnswers>,
    /// The window the siblings' figures cover, up to the ejection.
    pub window: Duration,
}

impl EjectionFacts {
    /// Ejected for answering 5xx (not for a failed connect, a reset or a timeout: a crash or a hang).
    pub fn for_errors(&self) -> bool {
        self.status.is_some_and(|status| (500..=599).contains(&status))
    }

    /// Whether the siblings are known to be healthy: at least one answered an attempt in the window, and
    /// each answered at most [`HEALTHY_SIBLING_ERROR_RATIO`] of its attempts with a 5xx.
    pub fn siblings_healthy(&self) -> bool {
        self.siblings.iter().any(|sibling| sibling.attempts > 0)
            && self
                .siblings
                .iter()
                .all(|sibling| sibling.errors as f64 <= HEALTHY_SIBLING_ERROR_RATIO * sibling.attempts as f64)
    }

    /// Whether it names a bad replica: ejected for its 5xx answers while its siblings answered well.
    pub fn is_bad_replica(&self) -> bool {
        self.for_errors() && self.siblings_healthy()
    }

    /// Whether the siblings are known to fail too (then the fault is not the replica's).
    pub fn siblings_failing(&self) -> bool {
        self.siblings.iter().any(|sibling| sibling.attempts > 0) && !self.siblings_healthy()
    }

    /// The ejection in words: `replica 2 answered 500 to 5 attempts in a row and was ejected at
    /// 12:00:03; replicas 0 and 1 answered 0 errors to 812 attempts in the 30s before`.
    pub fn describe(&self, replica: u32, at: Timestamp) -> String {
        let mut text = match (self.status, self.in_a_row) {
            (Some(status), n) if n > 0 => {
                format!("replica {replica} answered {status} to {n} attempts in a row and was ejected at {}", clock(at))
            }
            (None, n) if n > 0 => {
                format!("replica {replica} failed {n} attempts in a row and was ejected at {}", clock(at))
            }
            _ => format!("the proxy took replica {replica} out of rotation at {}", clock(at)),
        };
        if !self.siblings.is_empty() {
            let names: Vec<String> = self.siblings.iter().map(|sibling| sibling.replica.to_string()).collect();
            let names = match names.split_last() {
                Some((last, [])) => format!("replica {last}"),
                Some((last, rest)) => format!("replicas {} and {last}", rest.join(", ")),
                None => String::new(),
            };
            let attempts: u64 = self.siblings.iter().map(|sibling| sibling.attempts).sum();
            let errors: u64 = self.siblings.iter().map(|sibling| sibling.errors).sum();
            let _ = write!(
                text,
                "; {names} answered {errors} error{} to {attempts} attempts in the {}s before",
                if errors == 1 { "" } else { "s" },
                self.window.as_secs()
            );
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sibling(replica: u32, attempts: u64, errors: u64) -> SiblingAnswers {
        SiblingAnswers { replica, attempts, errors }
    }

    #[test]
    fn an_ejection_for_500s_beside_healthy_siblings_reads_as_a_bad_replica() {
        let at = Timestamp::from_millis(43_203_000);
        let cases: [(EjectionFacts, bool, bool, &str); 5] = [
            (
                EjectionFacts {
                    status: Some(500),
                    in_a_row: 5,
                    siblings: vec![sibling(0, 400, 0), sibling(1, 412, 0)],
                    window: Duration::from_secs(30),
                },
                true,
                false,
                "replica 2 answered 500 to 5 attempts in a row and was ejected at 12:00:03; replicas 0 and 1 answered 0 errors to 812 attempts in the 30s before",
            ),
            (
                EjectionFacts {
                    status: Some(503),
                    in_a_row: 3,
                    siblings: vec![sibling(0, 100, 1)],
                    window: Duration::from_secs(30),
                },
                true,
                false,
                "replica 2 answered 503 to 3 attempts in a row and was ejected at 12:00:03; replica 0 answered 1 error to 100 attempts in the 30s before",
            ),
            // Every replica fails: not this one's fault.
            (
                EjectionFacts {
                    status: Some(500),
                    in_a_row: 3,
                    siblings: vec![sibling(0, 100, 0), sibling(1, 100, 40)],
                    window: Duration::from_secs(30),
                },
                false,
                true,
                "replica 2 answered 500 to 3 attempts in a row and was ejected at 12:00:03; replicas 0 and 1 answered 40 errors to 200 attempts in the 30s before",
            ),
            // Siblings that got nothing say nothing.
            (
                EjectionFacts {
                    status: Some(500),
                    in_a_row: 3,
                    siblings: vec![sibling(0, 0, 0)],
                    window: Duration::from_secs(30),
                },
                false,
                false,
                "replica 2 answered 500 to 3 attempts in a row and was ejected at 12:00:03; replica 0 answered 0 errors to 0 attempts in the 30s before",
            ),
            (EjectionFacts::default(), false, false, "the proxy took replica 2 out of rotation at 12:00:03"),
        ];
        for (facts, healthy, failing, words) in cases {
            assert_eq!((facts.siblings_healthy(), facts.siblings_failing()), (healthy, failing), "{facts:?}");
            assert_eq!(facts.describe(2, at), words);
        }
    }
}
