//! The series diagnosis reads: raw points of a service's metrics, and what kind of quantity each is.

use mend_types::{Timestamp, Unit};

use crate::Component;

/// What a metric measures, as far as diagnosis cares: it decides which way trouble propagates along a
/// call (latency and errors travel from callee to caller, load from caller to callee) and which rule of
/// the decision procedure reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MetricClass {
    /// Time to answer: `*_duration_seconds*`, `*latency*`.
    Latency,
    /// Failed requests: `*error*`, `*5xx*`, `*fail*`.
    Errors,
    /// Volume of work or traffic: requests, bytes sent and received.
    Traffic,
    /// Processor use.
    Cpu,
    /// Memory use.
    Memory,
    /// Open file descriptors.
    FileDescriptors,
    /// Disk space or disk use.
    Disk,
    /// Anything else.
    Other,
}

impl MetricClass {
    /// The class of a metric by the words in its name (Prometheus naming conventions and cAdvisor's).
    pub fn of_metric(name: &str) -> Self {
        let name = name.to_ascii_lowercase();
        let has = |words: &[&str]| words.iter().any(|word| name.contains(word));
        if has(&["duration", "latency", "response_time", "_seconds_bucket", "rtt"]) {
            Self::Latency
        } else if has(&["error", "5xx", "fail", "exception"]) {
            Self::Errors
        } else if has(&["open_fds", "file_descriptors", "_fds"]) {
            Self::FileDescriptors
        } else if has(&["filesystem", "disk", "fs_"]) {
            Self::Disk
        } else if has(&["memory", "_rss", "resident", "heap", "working_set"]) {
            Self::Memory
        } else if has(&["cpu"]) {
            Self::Cpu
        } else if has(&["request", "network", "bytes", "packets", "throughput", "qps", "calls"]) {
            Self::Traffic
        } else {
            Self::Other
        }
    }

    /// Whether it measures the component's own resources (CPU, memory, file descriptors, disk): a move
    /// there is the component's own doing, not what its dependencies did to it.
    pub fn is_own_resource(self) -> bool {
        matches!(self, Self::Cpu | Self::Memory | Self::FileDescriptors | Self::Disk)
    }

    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Latency => "latency",
            Self::Errors => "errors",
            Self::Traffic => "traffic",
            Self::Cpu => "cpu",
            Self::Memory => "memory",
            Self::FileDescriptors => "file_descriptors",
            Self::Disk => "disk",
            Self::Other => "other",
        }
    }
}

/// One series of one component, with its points in time order: what the series store holds.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesInput {
    /// The component (service) it belongs to.
    pub component: Component,
    /// The replica or pod within the component, when the series is per instance.
    pub instance: Option<String>,
    /// The metric name.
    pub metric: String,
    /// Points in increasing time order.
    pub points: Vec<(Timestamp, f64)>,
}

impl SeriesInput {
    /// The metric's class.
    pub fn class(&self) -> MetricClass {
        MetricClass::of_metric(&self.metric)
    }

    /// The unit values are written in for people.
    pub fn unit(&self) -> Unit {
        Unit::of_metric(&self.metric)
    }

    /// `metric` or `metric of instance`, for people.
    pub fn describe(&self) -> String {
        match &self.instance {
            Some(instance) => format!("{} of {instance}", self.metric),
            None => self.metric.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_come_from_the_metric_name() {
        let cases = [
            ("http_request_duration_seconds_bucket", MetricClass::Latency),
            ("mend_proxy_request_duration_seconds", MetricClass::Latency),
            ("mend_proxy_errors_total", MetricClass::Errors),
            ("http_requests_total", MetricClass::Traffic),
            ("network_receive_bytes_per_second", MetricClass::Traffic),
            ("cpu_usage_cores", MetricClass::Cpu),
            ("memory_working_set_bytes", MetricClass::Memory),
            ("mend_replica_resident_memory_bytes", MetricClass::Memory),
            ("process_open_fds", MetricClass::FileDescriptors),
            ("node_filesystem_avail_bytes", MetricClass::Disk),
            ("queue_depth", MetricClass::Other),
        ];
        for (name, class) in cases {
            assert_eq!(MetricClass::of_metric(name), class, "{name}");
        }
    }
}
