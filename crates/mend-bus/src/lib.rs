//! The stream between mend's stages: one typed, bounded, in-process bus of lifecycle [`Event`]s,
//! [`Signal`]s and [`ReplicaChange`]s.
//!
//! Publishing never blocks: runners, scrapers, proxies and the detect loop publish and go on. There are
//! two ways to listen, each with its overflow policy written where it is chosen:
//!
//! - A *tap* ([`BusBuilder::tap`]) is called inline by every publish, in publish order. It must not block;
//!   what it cannot take it drops and counts itself (the store's tap queues for its writer thread, and a
//!   full queue drops the newest and counts it). Taps keep the read-your-writes promise of the API: an
//!   event is queued for the store before `publish` returns.
//! - A *subscription* ([`Bus::subscribe`]) reads from a bounded ring (`tokio::sync::broadcast`): a
//!   subscriber that falls behind loses the *oldest* messages, and the loss is counted per subscriber
//!   ([`Subscription::lost`]) and logged.
//!
//! What must never be lost does not travel here: actions are journalled through the store's
//! acknowledged path (`mend_store::Store::journal`), not the stream.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use mend_bus::{Bus, Message};
//! use mend_types::{Event, EventKind, EventSink, Timestamp};
//! let bus = Bus::builder(16).build();
//! let mut heal = bus.subscribe("heal");
//! bus.emit(Event::new(Timestamp::from_millis(1), EventKind::Started, "started pid 7"));
//! match heal.recv().await {
//!     Some(Message::Event(event)) => assert_eq!(event.kind, EventKind::Started),
//!     other => panic!("{other:?}"),
//! }
//! # }
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mend_types::{Event, EventSink, ReplicaChange, Signal, SignalSink};
use tokio::sync::broadcast;

/// One message on the stream, shared (`Arc`): every subscriber gets the same one, and a slot of the ring
/// is two words (the ring is allocated up front).
#[derive(Clone, Debug)]
pub enum Message {
    /// A lifecycle event.
    Event(Arc<Event>),
    /// A signal transition.
    Signal(Arc<Signal>),
    /// A replica's condition changed.
    Replica(Arc<ReplicaChange>),
}

/// Something called inline by every publish. Must not block.
pub trait Tap: Send + Sync {
    /// Takes one message.
    fn take(&self, message: &Message);
}

/// A tap made of an event sink and a signal sink (the store's).
pub struct SinkTap {
    /// Takes events.
    pub events: Arc<dyn EventSink>,
    /// Takes signals.
    pub signals: Arc<dyn SignalSink>,
}

impl Tap for SinkTap {
    fn take(&self, message: &Message) {
        match message {
            Message::Event(event) => self.events.emit(Event::clone(event)),
            Message::Signal(signal) => self.signals.signal(Signal::clone(signal)),
            Message::Replica(_) => {}
        }
    }
}

/// Builds a [`Bus`] with its taps.
pub struct BusBuilder {
    capacity: usize,
    taps: Vec<(&'static str, Arc<dyn Tap>)>,
}

impl BusBuilder {
    /// Adds a tap called `name`.
    pub fn tap(mut self, name: &'static str, tap: Arc<dyn Tap>) -> Self {
        self.taps.push((name, tap));
        self
    }

    /// The bus.
    pub fn build(self) -> Arc<Bus> {
        let (sender, _) = broadcast::channel(self.capacity.max(1));
        Arc::new(Bus { sender, taps: self.taps, published: AtomicU64::new(0) })
    }
}

/// The stream.
pub struct Bus {
    sender: broadcast::Sender<Message>,
    taps: Vec<(&'static str, Arc<dyn Tap>)>,
    published: AtomicU64,
}

impl Bus {
    /// A builder for a bus whose subscribers each hold up to `capacity` messages they have not read (the
    /// ring is allocated up front: a few hundred bytes per thousand messages).
    pub fn builder(capacity: usize) -> BusBuilder {
        BusBuilder { capacity, taps: Vec::new() }
    }

    /// Publishes `message`: taps first, in order, then subscribers. Never blocks.
    pub fn publish(&self, message: Message) {
        self.published.fetch_add(1, Ordering::Relaxed);
        for (_, tap) in &self.taps {
            tap.take(&message);
        }
        // No subscriber is not an error: nothing listens yet.
        let _ = self.sender.send(message);
    }

    /// A subscription called `name` (for its loss counter and logs) that sees every message published
    /// from now on.
    pub fn subscribe(&self, name: &'static str) -> Subscription {
        Subscription { receiver: self.sender.subscribe(), name, lost: Arc::new(AtomicU64::new(0)) }
    }

    /// Messages published so far.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }
}

impl EventSink for Bus {
    fn emit(&self, event: Event) {
        self.publish(Message::Event(Arc::new(event)));
    }
}

impl SignalSink for Bus {
    fn signal(&self, signal: Signal) {
        self.publish(Message::Signal(Arc::new(signal)));
    }
}

/// One subscriber's view of the stream. Overflow: a subscriber that falls more than the bus' capacity
/// behind loses the oldest messages; [`Subscription::recv`] counts them and goes on with the oldest kept.
pub struct Subscription {
    receiver: broadcast::Receiver<Message>,
    name: &'static str,
    lost: Arc<AtomicU64>,
}

impl Subscription {
    /// The next message; None once the bus is gone.
    pub async fn recv(&mut self) -> Option<Message> {
        loop {
            match self.receiver.recv().await {
                Ok(message) => return Some(message),
                Err(broadcast::error::RecvError::Lagged(n_lost)) => self.count_lost(n_lost),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The next message if one is waiting, without waiting.
    pub fn try_recv(&mut self) -> Option<Message> {
        loop {
            match self.receiver.try_recv() {
                Ok(message) => return Some(message),
                Err(broadcast::error::TryRecvError::Lagged(n_lost)) => self.count_lost(n_lost),
                Err(_) => return None,
            }
        }
    }

    fn count_lost(&self, n_lost: u64) {
        self.lost.fetch_add(n_lost, Ordering::Relaxed);
        tracing::warn!(subscriber = self.name, n_lost, "stream subscriber fell behind: oldest messages lost");
    }

    /// Messages this subscriber lost by falling behind (shared: readable after the subscription moved).
    pub fn lost(&self) -> Arc<AtomicU64> {
        self.lost.clone()
    }

    /// The subscriber's name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use mend_types::{EventKind, Timestamp};

    use super::*;

    struct Recording(Mutex<Vec<String>>);

    impl Tap for Recording {
        fn take(&self, message: &Message) {
            if let Message::Event(event) = message {
                self.0.lock().expect("not poisoned").push(event.message.clone());
            }
        }
    }

    fn event(n: usize) -> Event {
        Event::new(Timestamp::from_millis(n as i64), EventKind::Started, format!("{n}"))
    }

    #[tokio::test]
    async fn taps_see_everything_inline_and_a_lagging_subscriber_loses_the_oldest_and_counts_them() {
        let tap = Arc::new(Recording(Mutex::new(Vec::new())));
        let bus = Bus::builder(4).tap("store", tap.clone()).build();
        let mut slow = bus.subscribe("slow");
        for n in 0..10 {
            bus.emit(event(n));
        }
        assert_eq!(tap.0.lock().expect("not poisoned").len(), 10, "a tap is called inline, nothing lost");
        let mut seen = Vec::new();
        while let Some(Message::Event(event)) = slow.try_recv() {
            seen.push(event.message.clone());
        }
        assert_eq!(seen, ["6", "7", "8", "9"], "the newest kept, the oldest lost");
        assert_eq!(slow.lost().load(Ordering::Relaxed), 6);
        assert_eq!(bus.published(), 10);
        drop(bus);
        assert!(slow.recv().await.is_none(), "the stream ends with the bus");
    }
}
