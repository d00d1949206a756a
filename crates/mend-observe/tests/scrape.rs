//! Scraping a real HTTP server on loopback into the series store.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use mend_config::HttpTarget;
use mend_observe::scrape::{ScrapeFailure, ScrapeJob, ScrapeStats, Scraper};
use mend_observe::series::{Limits, SeriesStore};
use mend_types::{Event, EventKind, EventSink, SystemClock, Timestamp};

#[derive(Default)]
struct Recorder(Mutex<Vec<Event>>);

impl EventSink for Recorder {
    fn emit(&self, event: Event) {
        self.0.lock().expect("lock").push(event);
    }
}

impl Recorder {
    fn kinds(&self) -> Vec<EventKind> {
        self.0.lock().expect("lock").iter().map(|e| e.kind).collect()
    }
}

/// What the fake exporter answers: status, content type, body.
type Answer = Arc<Mutex<(u16, &'static str, String)>>;

fn exporter() -> (u16, Answer) {
    exporter_on(TcpListener::bind("127.0.0.1:0").expect("bind loopback"))
}

fn exporter_on(listener: TcpListener) -> (u16, Answer) {
    let port = listener.local_addr().expect("addr").port();
    let answer: Answer = Arc::new(Mutex::new((200, "text/plain; version=0.0.4", String::new())));
    let serving = answer.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0_u8; 4096];
            let _ = stream.read(&mut request);
            let (status, content_type, body) = serving.lock().expect("lock").clone();
            let response = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    (port, answer)
}

fn scraper(port: u16, max_series: usize, store: &Arc<RwLock<SeriesStore>>, events: &Arc<Recorder>) -> Scraper {
    Scraper::new(
        job(port, max_series, Duration::ZERO),
        store.clone(),
        events.clone(),
        Arc::new(SystemClock),
        Arc::new(ScrapeStats::default()),
    )
}

fn job(port: u16, max_series: usize, startup_grace: Duration) -> ScrapeJob {
    ScrapeJob {
        name: "web[0]".into(),
        target: HttpTarget::parse(&format!("http://127.0.0.1:{port}/metrics")).expect("url"),
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(2),
        labels: vec![("service".into(), "web".into()), ("replica".into(), "0".into())],
        max_series,
        sample_limit: 50_000,
        service: mend_types::ServiceName::new("web").ok(),
        replica: Some(0),
        startup_grace,
    }
}

/// A port where connections are refused until the returned socket listens: bound, not listening, so
/// that no other test takes it meanwhile.
fn refusing_port() -> (u16, tokio::net::TcpSocket) {
    let holder = tokio::net::TcpSocket::new_v4().expect("socket");
    holder.bind("127.0.0.1:0".parse().expect("address")).expect("bind");
    (holder.local_addr().expect("addr").port(), holder)
}

/// A clock that moves only when told.
struct ManualClock {
    start: std::time::Instant,
    elapsed: Mutex<Duration>,
}

impl ManualClock {
    fn new() -> Arc<Self> {
        Arc::new(Self { start: mend_types::Clock::now(&SystemClock), elapsed: Mutex::new(Duration::ZERO) })
    }

    fn advance(&self, by: Duration) {
        *self.elapsed.lock().expect("lock") += by;
    }
}

impl mend_types::Clock for ManualClock {
    fn now(&self) -> std::time::Instant {
        self.start + *self.elapsed.lock().expect("lock")
    }

    fn wall(&self) -> Timestamp {
        Timestamp::from_millis(1_700_000_000_000).saturating_add(*self.elapsed.lock().expect("lock"))
    }
}

fn latest(store: &Arc<RwLock<SeriesStore>>, name: &str, pairs: &[(&str, &str)]) -> Option<f64> {
    let mut store = store.write().expect("lock");
    let labels = store.labels(name, pairs);
    store.latest(&labels).map(|point| point.value)
}

const GOOD: &str = "# TYPE requests_total counter\nrequests_total{code=\"200\"} 7\nrequests_total{code=\"500\"} 1\n# TYPE temp gauge\ntemp 21.5\n";

#[tokio::test]
async fn scrapes_into_the_store_with_target_labels_and_keeps_data_on_a_malformed_body() {
    let (port, answer) = exporter();
    answer.lock().expect("lock").2 = GOOD.to_owned();
    let store = Arc::new(RwLock::new(SeriesStore::new(Limits::default())));
    let events = Arc::new(Recorder::default());
    let mut scraper = scraper(port, 100, &store, &events);
    let report = scraper.scrape_once().await.expect("scrape works");
    assert_eq!(report.samples, 3);
    let web = [("service", "web"), ("replica", "0")];
    assert_eq!(latest(&store, "requests_total", &[("code", "500"), ("service", "web"), ("replica", "0")]), Some(1.0));
    assert_eq!(latest(&store, "temp", &web), Some(21.5));
    assert_eq!(latest(&store, "up", &web), Some(1.0));
    assert_eq!(latest(&store, "scrape_samples_scraped", &web), Some(3.0));

    // A malformed exposition: nothing appended, one event naming the line, the old data stays.
    answer.lock().expect("lock").2 = "temp 22\nrequests_total{code=\"200\" 8\n".to_owned();
    let failure = scraper.scrape_once().await.expect_err("malformed");
    assert!(matches!(&failure, ScrapeFailure::Malformed { line: 2, .. }), "{failure:?}");
    assert_eq!(latest(&store, "temp", &web), Some(21.5), "no partial scrape");
    assert_eq!(latest(&store, "up", &web), Some(0.0));
    let _ = scraper.scrape_once().await;
    assert_eq!(events.kinds(), [EventKind::ScrapeFailed], "one event per failure reason, not per scrape");
    let event = events.0.lock().expect("lock")[0].clone();
    assert!(
        event.message.starts_with("scraping web[0] failed: malformed exposition at line 2, column"),
        "{}",
        event.message
    );
    assert_eq!(event.details["line"], 2);

    answer.lock().expect("lock").2 = GOOD.replace("21.5", "23");
    scraper.scrape_once().await.expect("recovered");
    assert_eq!(latest(&store, "temp", &web), Some(23.0));
    assert_eq!(events.kinds(), [EventKind::ScrapeFailed, EventKind::ScrapeRecovered]);

    answer.lock().expect("lock").0 = 503;
    assert_eq!(scraper.scrape_once().await.expect_err("status"), ScrapeFailure::Status(503));
}

#[tokio::test]
async fn openmetrics_timestamps_and_clashing_labels_follow_prometheus() {
    let (port, answer) = exporter();
    *answer.lock().expect("lock") = (
        200,
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        "# TYPE jobs gauge\njobs{service=\"other\"} 4 1700000000.5\n# EOF\n".to_owned(),
    );
    let store = Arc::new(RwLock::new(SeriesStore::new(Limits::default())));
    let events = Arc::new(Recorder::default());
    scraper(port, 100, &store, &events).scrape_once().await.expect("scrape works");
    let mut store = store.write().expect("lock");
    let labels = store.labels("jobs", &[("exported_service", "other"), ("service", "web"), ("replica", "0")]);
    let point = store.latest(&labels).expect("series with exported_service");
    assert_eq!((point.at, point.value), (Timestamp::from_millis(1_700_000_000_500), 4.0));
}

#[tokio::test]
async fn a_cardinality_explosion_is_capped_per_target() {
    let (port, answer) = exporter();
    let body: String = (0..50).map(|idx| format!("user_requests{{user=\"u{idx}\"}} 1\n")).collect();
    answer.lock().expect("lock").2 = body;
    let store = Arc::new(RwLock::new(SeriesStore::new(Limits::default())));
    let events = Arc::new(Recorder::default());
    let mut scraper = scraper(port, 10, &store, &events);
    let report = scraper.scrape_once().await.expect("scrape works");
    assert_eq!((report.samples, report.dropped_series), (10, 40));
    let report = scraper.scrape_once().await.expect("scrape works");
    assert_eq!((report.samples, report.dropped_series), (10, 40), "known series keep flowing");
    assert_eq!(events.kinds(), [EventKind::SeriesDropped], "at most one event a minute");
    // The store holds the 10 series plus the synthetic up/duration/samples series.
    assert_eq!(store.read().expect("lock").len(), 13);
}

#[tokio::test]
async fn an_unreachable_target_fails_with_one_event() {
    let (port, _holder) = refusing_port();
    let store = Arc::new(RwLock::new(SeriesStore::new(Limits::default())));
    let events = Arc::new(Recorder::default());
    let mut scraper = scraper(port, 10, &store, &events);
    for _ in 0..3 {
        let failure = scraper.scrape_once().await.expect_err("nothing listens");
        assert!(matches!(&failure, ScrapeFailure::Unreachable(reason) if reason.contains("refused")), "{failure:?}");
    }
    assert_eq!(events.kinds(), [EventKind::ScrapeFailed]);
    assert_eq!(latest(&store, "up", &[("service", "web"), ("replica", "0")]), Some(0.0));
}

/// A replica's first scrapes come before it listens: that is no event (`up` still says 0), but a
/// failure once it was scraped is.
#[tokio::test]
async fn a_replica_not_listening_yet_is_no_event_and_a_later_failure_is() {
    let (port, holder) = refusing_port();
    let store = Arc::new(RwLock::new(SeriesStore::new(Limits::default())));
    let events = Arc::new(Recorder::default());
    let stats = Arc::new(ScrapeStats::default());
    let mut scraper = Scraper::new(
        job(port, 10, Duration::from_secs(3600)),
        store.clone(),
        events.clone(),
        ManualClock::new(),
        stats.clone(),
    );
    for _ in 0..3 {
        let failure = scraper.scrape_once().await.expect_err("nothing listens yet");
        assert!(matches!(&failure, ScrapeFailure::Unreachable(reason) if reason.contains("refused")), "{failure:?}");
    }
    assert_eq!(events.kinds(), [], "no event before the replica listens");
    assert_eq!(stats.failed.load(std::sync::atomic::Ordering::Relaxed), 3, "the failures still count");
    assert_eq!(latest(&store, "up", &[("service", "web"), ("replica", "0")]), Some(0.0));

    let listener = holder.listen(16).expect("listen").into_std().expect("std listener");
    listener.set_nonblocking(false).expect("blocking");
    let (_, answer) = exporter_on(listener);
    answer.lock().expect("lock").2 = GOOD.to_owned();
    scraper.scrape_once().await.expect("it listens now");
    *answer.lock().expect("lock") = (500, "text/plain", String::new());
    scraper.scrape_once().await.expect_err("status 500");
    assert_eq!(events.kinds(), [EventKind::ScrapeFailed], "a failure after a first scrape is an event");
}

/// A target that never answers is reported once its grace is over, or as soon as it is settled (its
/// replica is ready).
#[tokio::test]
async fn the_start_up_grace_ends_by_itself_or_when_settled() {
    let (port, _holder) = refusing_port();
    let store = Arc::new(RwLock::new(SeriesStore::new(Limits::default())));
    let grace = Duration::from_secs(30);
    let new_scraper = |clock: Arc<ManualClock>, events: &Arc<Recorder>| {
        Scraper::new(job(port, 10, grace), store.clone(), events.clone(), clock, Arc::new(ScrapeStats::default()))
    };

    let clock = ManualClock::new();
    let events = Arc::new(Recorder::default());
    let mut scraper = new_scraper(clock.clone(), &events);
    scraper.scrape_once().await.expect_err("nothing listens");
    clock.advance(grace - Duration::from_secs(1));
    scraper.scrape_once().await.expect_err("nothing listens");
    assert_eq!(events.kinds(), [], "within the grace");
    clock.advance(Duration::from_secs(1));
    scraper.scrape_once().await.expect_err("nothing listens");
    assert_eq!(events.kinds(), [EventKind::ScrapeFailed], "the grace is over");

    // Settled through the handle of a running scraper, as the replica's runner does when it is ready
    // (its clock stands still: the grace never ends by itself).
    let events = Arc::new(Recorder::default());
    let stats = Arc::new(ScrapeStats::default());
    let job = ScrapeJob { interval: Duration::from_millis(20), ..job(port, 10, grace) };
    let handle = Scraper::new(job, store.clone(), events.clone(), ManualClock::new(), stats.clone()).spawn();
    let failed = || stats.failed.load(std::sync::atomic::Ordering::Relaxed);
    let eventually = async |what: &str, done: &dyn Fn() -> bool| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    eventually("two failed scrapes", &|| failed() >= 2).await;
    assert_eq!(events.kinds(), [], "within the grace");
    handle.settle();
    let before = failed();
    eventually("a scrape after the settle", &|| failed() > before).await;
    eventually("the failure event", &|| !events.kinds().is_empty()).await;
    assert_eq!(events.kinds(), [EventKind::ScrapeFailed], "settled: failures are events at once");
    handle.stop(Timestamp::from_millis(0));
}

/// Prometheus' staleness: a series that leaves the exposition, or whose target stops answering or
/// is no longer scraped, ends with a staleness marker (a malformed answer keeps the old values);
/// series with their own timestamps are left alone; a target no longer scraped loses `up` too.
#[tokio::test]
async fn vanished_series_and_targets_end_with_staleness_markers() {
    use mend_observe::series::is_stale_marker;
    let (port, answer) = exporter();
    answer.lock().expect("lock").2 = format!("{GOOD}stamped 1 1700000000000\n");
    let store = Arc::new(RwLock::new(SeriesStore::new(Limits::default())));
    let events = Arc::new(Recorder::default());
    let mut scraper = scraper(port, 100, &store, &events);
    scraper.scrape_once().await.expect("scrape works");
    let web = [("service", "web"), ("replica", "0")];
    let code = |code: &'static str| [("code", code), ("service", "web"), ("replica", "0")];

    // The 500 series leaves the exposition: it is marked stale, the others go on.
    answer.lock().expect("lock").2 = "requests_total{code=\"200\"} 8\ntemp 22\n".to_owned();
    scraper.scrape_once().await.expect("scrape works");
    assert!(latest(&store, "requests_total", &code("500")).is_some_and(is_stale_marker));
    assert_eq!(latest(&store, "requests_total", &code("200")), Some(8.0));
    assert_eq!(latest(&store, "stamped", &web), Some(1.0), "own timestamp: never marked");

    // Malformed: the previous values stay current.
    answer.lock().expect("lock").2 = "temp{\n".to_owned();
    scraper.scrape_once().await.expect_err("malformed");
    assert_eq!(latest(&store, "temp", &web), Some(22.0));

    // The target answers 500: everything it exposed is stale; `up` says why.
    *answer.lock().expect("lock") = (500, "text/plain", "requests_total{code=\"200\"} 8\ntemp 22\n".to_owned());
    scraper.scrape_once().await.expect_err("status");
    assert!(latest(&store, "temp", &web).is_some_and(is_stale_marker));
    assert!(latest(&store, "requests_total", &code("200")).is_some_and(is_stale_marker));
    assert_eq!(latest(&store, "up", &web), Some(0.0));

    // Back, then the scraper is dropped (its replica stopped): stale again.
    answer.lock().expect("lock").0 = 200;
    scraper.scrape_once().await.expect("scrape works");
    assert_eq!(latest(&store, "temp", &web), Some(22.0));
    drop(scraper);
    assert!(latest(&store, "temp", &web).is_some_and(is_stale_marker));
    assert!(latest(&store, "up", &web).is_some_and(is_stale_marker), "a target no longer scraped is gone, up too");

    // A query sees the series end at once rather than after the 5-minute lookback.
    let query = mend_query::Query::parse("temp").expect("valid");
    let now = SystemClockNow::millis();
    let value = query.eval_instant(&*store.read().expect("lock"), now, &mend_query::EvalOptions::default());
    assert!(matches!(value, Ok(mend_query::Value::Vector(samples)) if samples.is_empty()));
}

struct SystemClockNow;

impl SystemClockNow {
    fn millis() -> i64 {
        use mend_types::Clock;
        SystemClock.wall().as_millis()
    }
}
