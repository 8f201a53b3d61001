//! Links: the bounded queues between stages, and how a thread waits on them.
//!
//! Every link is bounded, so a slow stage pushes back on the ones before it instead of growing a
//! queue. Three wait strategies exist:
//!
//! * [`WaitStrategy::Block`] (the default) parks the waiting thread in the kernel (a futex). It costs
//!   no CPU while waiting but a wake-up costs tens of microseconds.
//! * [`WaitStrategy::Spin`] busy-polls. A hop costs a few hundred nanoseconds, but the waiting thread
//!   burns its core. Two spinning threads that share one core starve each other: the one that holds
//!   the core spins through its whole time slice while the one that would make progress waits for it
//!   (crossbeam issue #1031 measured a 10× collapse). The builder therefore only grants `Spin` to a
//!   link whose two ends are pinned to distinct cores that no other spinning thread uses, and falls
//!   back to `Hybrid` otherwise, saying so in the report.
//! * [`WaitStrategy::Hybrid`] spins for a bounded time, then parks.
//!
//! A link with one producer thread and one consumer thread that spins or is hybrid is a lock-free
//! single-producer/single-consumer ring ([`ringbuf`]). Its parking protocol is the classic
//! "announce, re-check, park" handshake: the waiter swaps its `waiting` flag to true and checks the
//! ring again before it parks; the other side publishes into the ring and then swaps the flag back,
//! unparking the waiter if it was set. Both swaps are read-modify-writes of one flag, so one of them
//! sees the other and a wake-up is never lost; [`crossbeam_utils::sync::Parker`]'s token makes an
//! `unpark` that lands before `park` harmless. `loom` model-checks the handshake. Every other link
//! is a `crossbeam-channel` bounded channel.

use crate::sync::{fence, AtomicBool, Ordering};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use crossbeam_utils::sync::{Parker, Unparker};
use ringbuf::traits::{Consumer, Observer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};
use serde::Serialize;

/// How long a hybrid wait spins before it parks, unless told otherwise.
pub const DEFAULT_HYBRID_SPIN: Duration = Duration::from_micros(50);

/// How a thread waits on an empty (receiving) or full (sending) link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WaitStrategy {
    /// Park in the kernel at once. No CPU while waiting; a wake-up costs a futex round trip.
    #[default]
    Block,
    /// Busy-poll. Lowest latency; burns the waiting thread's core. Only granted between threads pinned
    /// to distinct, dedicated cores.
    Spin,
    /// Spin for the given time, then park.
    Hybrid(Duration),
}

impl WaitStrategy {
    /// `Hybrid` with [`DEFAULT_HYBRID_SPIN`].
    pub fn hybrid() -> Self {
        WaitStrategy::Hybrid(DEFAULT_HYBRID_SPIN)
    }

    /// Whether the waiting thread may burn CPU.
    pub fn spins(&self) -> bool {
        !matches!(self, WaitStrategy::Block)
    }
}

impl fmt::Display for WaitStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitStrategy::Block => f.write_str("block"),
            WaitStrategy::Spin => f.write_str("spin"),
            WaitStrategy::Hybrid(d) if *d == DEFAULT_HYBRID_SPIN => f.write_str("hybrid"),
            WaitStrategy::Hybrid(d) => write!(f, "hybrid({}us)", d.as_micros()),
        }
    }
}

impl Serialize for WaitStrategy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The error for an unknown wait strategy name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown wait strategy `{0}`: expected block, spin or hybrid")]
pub struct ParseWaitError(pub String);

impl FromStr for WaitStrategy {
    type Err = ParseWaitError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "block" => Ok(WaitStrategy::Block),
            "spin" => Ok(WaitStrategy::Spin),
            "hybrid" | "spin-then-park" => Ok(WaitStrategy::hybrid()),
            other => Err(ParseWaitError(other.to_string())),
        }
    }
}

/// A spin loop that yields to the kernel's timer check only every few iterations.
struct Spinner {
    started: Instant,
    budget: Option<Duration>,
    iter: u32,
}

impl Spinner {
    fn new(wait: WaitStrategy) -> Self {
        let budget = match wait {
            WaitStrategy::Block => Some(Duration::ZERO),
            WaitStrategy::Spin => None,
            WaitStrategy::Hybrid(d) => Some(d),
        };
        Spinner { started: Instant::now(), budget, iter: 0 }
    }

    /// Spins once; returns false when the spin budget is spent and the caller should park.
    #[inline]
    fn spin(&mut self) -> bool {
        match self.budget {
            None => {
                std::hint::spin_loop();
                true
            }
            Some(b) if b.is_zero() => false,
            Some(b) => {
                self.iter = self.iter.wrapping_add(1);
                if self.iter.is_multiple_of(64) && self.started.elapsed() >= b {
                    return false;
                }
                std::hint::spin_loop();
                true
            }
        }
    }
}

/// One side's "I am about to park" flag: the announce-and-re-check handshake of the module docs.
///
/// Both the announcement and the notifier's check are read-modify-writes of the same flag, so they
/// are totally ordered: either the notifier's swap comes later and sees the announcement (and
/// unparks), or it comes first, and the waiter's swap then reads from it and acquires everything the
/// notifier published before it (so the re-check sees the new item). The waiter's reset after it
/// wakes must be a read-modify-write as well: `loom` found that a plain store there breaks the
/// chain and loses a wake-up (`loom_tests::no_lost_wakeup`).
pub(crate) struct Doorbell {
    waiting: AtomicBool,
}

impl Doorbell {
    pub(crate) fn new() -> Self {
        Doorbell { waiting: AtomicBool::new(false) }
    }

    /// Waiter: parks unless `ready()` turns true after the announcement. `park` may return early
    /// (spuriously); the caller re-checks in its loop.
    pub(crate) fn wait(&self, ready: impl Fn() -> bool, park: impl FnOnce()) {
        self.waiting.swap(true, Ordering::AcqRel);
        if !ready() {
            park();
        }
        // A read-modify-write too, not a plain store: a plain store would slip between the
        // notifier's swap and the next announcement in the flag's modification order, and the next
        // announcement would then not synchronize with the notifier (loom found this).
        self.waiting.swap(false, Ordering::AcqRel);
    }

    /// Notifier: call after publishing; wakes the waiter if it announced itself.
    pub(crate) fn ring(&self, unpark: impl FnOnce()) {
        if self.waiting.swap(false, Ordering::AcqRel) {
            unpark();
        }
    }
}

pub(crate) struct RingShared {
    rx_bell: Doorbell,
    tx_bell: Doorbell,
    tx_closed: AtomicBool,
    rx_closed: AtomicBool,
    rx_unparker: Unparker,
    tx_unparker: Unparker,
}

/// The sending end of a link.
pub(crate) enum LinkTx<T> {
    Chan(Sender<T>, WaitStrategy),
    Ring { prod: HeapProd<T>, shared: Arc<RingShared>, parker: Parker, wait: WaitStrategy, _end: CloseOnDrop },
}

/// The receiving end of a link.
pub(crate) enum LinkRx<T> {
    Chan(Receiver<T>, WaitStrategy),
    Ring { cons: HeapCons<T>, shared: Arc<RingShared>, parker: Parker, wait: WaitStrategy, _end: CloseOnDrop },
}

/// Marks one end of a ring closed when that end is dropped, and wakes the other end.
pub(crate) struct CloseOnDrop {
    shared: Arc<RingShared>,
    sender: bool,
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        let s = &self.shared;
        if self.sender {
            s.tx_closed.store(true, Ordering::Release);
            fence(Ordering::SeqCst);
            s.rx_unparker.unpark();
        } else {
            s.rx_closed.store(true, Ordering::Release);
            fence(Ordering::SeqCst);
            s.tx_unparker.unpark();
        }
    }
}

/// Creates a link. `spsc` says that it will have exactly one sending and one receiving thread; a
/// spinning or hybrid SPSC link is a lock-free ring, everything else a crossbeam channel.
pub(crate) fn link<T>(capacity: usize, wait: WaitStrategy, spsc: bool) -> (LinkTx<T>, LinkRx<T>) {
    if spsc && wait.spins() && capacity > 0 {
        let (prod, cons) = HeapRb::<T>::new(capacity).split();
        let rx_parker = Parker::new();
        let tx_parker = Parker::new();
        let shared = Arc::new(RingShared {
            rx_bell: Doorbell::new(),
            tx_bell: Doorbell::new(),
            tx_closed: AtomicBool::new(false),
            rx_closed: AtomicBool::new(false),
            rx_unparker: rx_parker.unparker().clone(),
            tx_unparker: tx_parker.unparker().clone(),
        });
        (
            LinkTx::Ring {
                prod,
                shared: shared.clone(),
                parker: tx_parker,
                wait,
                _end: CloseOnDrop { shared: shared.clone(), sender: true },
            },
            LinkRx::Ring {
                cons,
                shared: shared.clone(),
                parker: rx_parker,
                wait,
                _end: CloseOnDrop { shared, sender: false },
            },
        )
    } else {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        (LinkTx::Chan(tx, wait), LinkRx::Chan(rx, wait))
    }
}

impl<T> LinkTx<T> {
    /// A second sending end, for replicated producers. Only channel links can be cloned.
    pub(crate) fn try_clone(&self) -> Option<LinkTx<T>> {
        match self {
            LinkTx::Chan(tx, w) => Some(LinkTx::Chan(tx.clone(), *w)),
            LinkTx::Ring { .. } => None,
        }
    }

    /// Sends, waiting while the link is full. Gives the value back if the receiving end is gone.
    pub(crate) fn send(&mut self, mut value: T) -> Result<(), T> {
        match self {
            LinkTx::Chan(tx, WaitStrategy::Block) => tx.send(value).map_err(|e| e.0),
            LinkTx::Chan(tx, wait) => {
                let mut spinner = Spinner::new(*wait);
                loop {
                    match tx.try_send(value) {
                        Ok(()) => return Ok(()),
                        Err(TrySendError::Disconnected(v)) => return Err(v),
                        Err(TrySendError::Full(v)) => value = v,
                    }
                    if !spinner.spin() {
                        return tx.send(value).map_err(|e| e.0);
                    }
                }
            }
            LinkTx::Ring { prod, shared, parker, wait, .. } => {
                let mut spinner = Spinner::new(*wait);
                loop {
                    match prod.try_push(value) {
                        Ok(()) => {
                            shared.rx_bell.ring(|| shared.rx_unparker.unpark());
                            return Ok(());
                        }
                        Err(v) => value = v,
                    }
                    if shared.rx_closed.load(Ordering::Acquire) {
                        return Err(value);
                    }
                    if !spinner.spin() {
                        shared
                            .tx_bell
                            .wait(|| !prod.is_full() || shared.rx_closed.load(Ordering::Acquire), || parker.park());
                        spinner = Spinner::new(*wait);
                    }
                }
            }
        }
    }
}

impl<T> LinkRx<T> {
    /// A second receiving end, for replicated consumers. Only channel links can be cloned.
    pub(crate) fn try_clone(&self) -> Option<LinkRx<T>> {
        match self {
            LinkRx::Chan(rx, w) => Some(LinkRx::Chan(rx.clone(), *w)),
            LinkRx::Ring { .. } => None,
        }
    }

    /// Receives, waiting while the link is empty. `None` once the link is empty and every sending end
    /// is gone.
    pub(crate) fn recv(&mut self) -> Option<T> {
        match self {
            LinkRx::Chan(rx, WaitStrategy::Block) => rx.recv().ok(),
            LinkRx::Chan(rx, wait) => {
                let mut spinner = Spinner::new(*wait);
                loop {
                    match rx.try_recv() {
                        Ok(v) => return Some(v),
                        Err(TryRecvError::Disconnected) => return None,
                        Err(TryRecvError::Empty) => {}
                    }
                    if !spinner.spin() {
                        return rx.recv().ok();
                    }
                }
            }
            LinkRx::Ring { cons, shared, parker, wait, .. } => {
                let mut spinner = Spinner::new(*wait);
                loop {
                    if let Some(v) = cons.try_pop() {
                        shared.tx_bell.ring(|| shared.tx_unparker.unpark());
                        return Some(v);
                    }
                    if shared.tx_closed.load(Ordering::Acquire) {
                        // The producer is gone; anything it pushed before leaving is visible now.
                        return cons.try_pop();
                    }
                    if !spinner.spin() {
                        shared
                            .rx_bell
                            .wait(|| !cons.is_empty() || shared.tx_closed.load(Ordering::Acquire), || parker.park());
                        spinner = Spinner::new(*wait);
                    }
                }
            }
        }
    }
}

/// The latency of one bare hop, measured by [`measure_hop`].
#[derive(Clone, Copy, Debug, Serialize)]
pub struct HopLatency {
    /// The wait strategy measured.
    pub wait: WaitStrategy,
    /// Median, in microseconds.
    pub p50_us: f64,
    /// 99th percentile, in microseconds.
    pub p99_us: f64,
    /// Samples taken.
    pub samples: usize,
}

/// Measures one bare hop: a producer thread sends a timestamp through a capacity-1 link of the same
/// kind the pipeline uses for a 1→1 link with `wait`, while the consumer thread waits for it. Sends
/// are spaced `gap` apart, so that a blocking consumer is asleep when each item arrives, as a
/// downstream stage is when it waits for its next frame.
pub fn measure_hop(wait: WaitStrategy, samples: usize, gap: Duration) -> HopLatency {
    let (mut tx, mut rx) = link::<Instant>(1, wait, true);
    let consumer = std::thread::Builder::new()
        .name("hop-probe".into())
        .spawn(move || {
            let mut lat = Vec::with_capacity(samples);
            while let Some(sent) = rx.recv() {
                lat.push(sent.elapsed().as_nanos() as u64);
            }
            lat
        })
        .expect("spawning the hop probe thread");
    for _ in 0..samples {
        let next = Instant::now() + gap;
        if gap >= Duration::from_micros(200) {
            std::thread::sleep(gap - Duration::from_micros(100));
        }
        while Instant::now() < next {
            std::hint::spin_loop();
        }
        if tx.send(Instant::now()).is_err() {
            break;
        }
    }
    drop(tx);
    let mut lat = consumer.join().unwrap_or_default();
    lat.sort_unstable();
    let q = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
        lat[i] as f64 / 1e3
    };
    HopLatency { wait, p50_us: q(0.5), p99_us: q(0.99), samples: lat.len() }
}

/// Model checks of the doorbell handshake: a producer publishes into a one-slot ring and rings, a
/// consumer waits with the doorbell and `loom`'s park; in every interleaving the consumer gets every
/// item and never sleeps forever (loom reports a deadlock if it would).
#[cfg(all(test, loom))]
mod loom_tests {
    use super::Doorbell;
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::sync::Arc;
    use loom::thread;

    #[test]
    fn no_lost_wakeup() {
        loom::model(|| {
            let bell = Arc::new(Doorbell::new());
            // A one-slot ring: `written` and `read` counters; the slot's value is the counter itself.
            let written = Arc::new(AtomicUsize::new(0));
            let read = Arc::new(AtomicUsize::new(0));
            let consumer = {
                let (bell, written, read) = (bell.clone(), written.clone(), read.clone());
                thread::spawn(move || {
                    let mut got = 0;
                    while got < 2 {
                        if written.load(Ordering::Acquire) > read.load(Ordering::Relaxed) {
                            read.fetch_add(1, Ordering::Release);
                            got += 1;
                            continue;
                        }
                        bell.wait(|| written.load(Ordering::Acquire) > read.load(Ordering::Relaxed), thread::park);
                    }
                    got
                })
            };
            let me = consumer.thread().clone();
            for _ in 0..2 {
                // Wait for room (one slot), then publish and ring.
                while written.load(Ordering::Relaxed) != read.load(Ordering::Acquire) {
                    thread::yield_now();
                }
                written.fetch_add(1, Ordering::Release);
                bell.ring(|| me.unpark());
            }
            assert_eq!(consumer.join().unwrap(), 2);
        });
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn roundtrip(wait: WaitStrategy, spsc: bool, cap: usize) {
        let (mut tx, mut rx) = link::<u64>(cap, wait, spsc);
        let h = std::thread::spawn(move || {
            let mut got = Vec::new();
            while let Some(v) = rx.recv() {
                got.push(v);
            }
            got
        });
        for i in 0..2_000u64 {
            tx.send(i).unwrap();
        }
        drop(tx);
        let got = h.join().unwrap();
        assert_eq!(got, (0..2_000).collect::<Vec<_>>(), "{wait:?} spsc={spsc} cap={cap}");
    }

    #[test]
    fn every_link_kind_delivers_everything_in_order_and_ends() {
        for wait in
            [WaitStrategy::Block, WaitStrategy::Spin, WaitStrategy::hybrid(), WaitStrategy::Hybrid(Duration::ZERO)]
        {
            for spsc in [true, false] {
                for cap in [1, 4] {
                    roundtrip(wait, spsc, cap);
                }
            }
        }
    }

    #[test]
    fn send_fails_once_the_receiver_is_gone() {
        for wait in [WaitStrategy::Block, WaitStrategy::Spin, WaitStrategy::Hybrid(Duration::ZERO)] {
            let (mut tx, rx) = link::<u32>(1, wait, true);
            tx.send(1).unwrap();
            let h = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                drop(rx);
            });
            // The link is full: this send waits until the receiver is dropped, then fails.
            assert_eq!(tx.send(2), Err(2), "{wait:?}");
            h.join().unwrap();
        }
    }

    #[test]
    fn parse_wait_strategy() {
        assert_eq!("block".parse::<WaitStrategy>().unwrap(), WaitStrategy::Block);
        assert_eq!("spin".parse::<WaitStrategy>().unwrap(), WaitStrategy::Spin);
        assert_eq!("hybrid".parse::<WaitStrategy>().unwrap(), WaitStrategy::hybrid());
        let e = "fast".parse::<WaitStrategy>().unwrap_err();
        assert!(e.to_string().contains("fast"));
    }
}
