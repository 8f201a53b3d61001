//! Admission: what happens at the pipeline's entrance when the first queue is full, where sequence
//! numbers are given, and how the entrance closes without losing a frame.
//!
//! Frames wait in the admission queue without a sequence number. The first stage takes them out under
//! the sequencer's lock and numbers them as it does, so a frame that the policy drops never had a
//! number and the numbers have no holes. The number of live (numbered, not yet delivered) frames is
//! capped by `max_in_flight` tokens, as in oneTBB's `parallel_pipeline`: the first stage takes a token
//! before it takes a frame, and the output returns it when the frame is delivered. While no token is
//! free, frames stay in the admission queue, where the policy applies.
//!
//! Closing is race-free without blocking the closer: pushers hold a read lock on the gate while they
//! check the `closed` flag and enqueue. After `closed` is set, the first stage drains the queue and
//! ends only once it can take the write lock, that is, once no push is half-way; any push that starts
//! later sees the flag and hands its frame back.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde::Serialize;

use crate::envelope::{Envelope, Tombstone};
use crate::link::WaitStrategy;
use crate::sync;

/// What the entrance does when the admission queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Admission {
    /// Wait for room. Never drops a frame: for files.
    #[default]
    Block,
    /// Drop the oldest waiting frame to make room for the new one: the queue holds the newest
    /// `capacity` frames.
    DropOldest,
    /// The newest frame replaces every waiting one: at most one frame waits, and it is the newest.
    /// For live cameras, where a fresh frame is worth more than an old one.
    KeepLatest,
}

impl fmt::Display for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Admission::Block => "block",
            Admission::DropOldest => "drop-oldest",
            Admission::KeepLatest => "keep-latest",
        })
    }
}

impl Serialize for Admission {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The error for an unknown admission policy name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown admission policy `{0}`: expected block, drop-oldest or keep-latest")]
pub struct ParseAdmissionError(pub String);

impl FromStr for Admission {
    type Err = ParseAdmissionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "block" => Ok(Admission::Block),
            "drop-oldest" | "drop_oldest" => Ok(Admission::DropOldest),
            "keep-latest" | "keep_latest" => Ok(Admission::KeepLatest),
            other => Err(ParseAdmissionError(other.to_string())),
        }
    }
}

/// The error of [`Input::push`]: the pipeline no longer admits frames. The frame is handed back.
#[derive(PartialEq, Eq, Clone, Copy)]
pub struct PushError<T>(pub T);

impl<T> fmt::Debug for PushError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PushError(..)")
    }
}

impl<T> fmt::Display for PushError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the pipeline is closed and admits no more frames")
    }
}

impl<T> std::error::Error for PushError<T> {}

/// What waits in the admission queue: a frame (or a source error) without a sequence number yet.
pub(crate) struct Waiting<T> {
    pub(crate) item: Result<T, Tombstone>,
    pub(crate) captured_at: Instant,
    pub(crate) stream: u32,
}

/// Counters kept at the entrance.
#[derive(Default)]
pub(crate) struct EntranceCounters {
    pub(crate) offered: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) admitted: AtomicU64,
    pub(crate) source_errors: AtomicU64,
}

/// The race-free close of the entrance (see the module docs), apart from the queue it guards.
pub(crate) struct CloseLatch {
    closed: sync::AtomicBool,
    lock: sync::RwLock<()>,
}

impl CloseLatch {
    pub(crate) fn new() -> Self {
        CloseLatch { closed: sync::AtomicBool::new(false), lock: sync::RwLock::new(()) }
    }

    /// A pusher enters: `None` if closed; otherwise hold the guard while enqueueing.
    pub(crate) fn enter(&self) -> Option<sync::RwLockReadGuard<'_, ()>> {
        let guard = self.lock.read().unwrap_or_else(|e| e.into_inner());
        if self.closed.load(sync::Ordering::SeqCst) {
            None
        } else {
            Some(guard)
        }
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, sync::Ordering::SeqCst);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(sync::Ordering::SeqCst)
    }

    /// The consumer, having found the queue empty after `close`: true once no push is half-way,
    /// after which the queue gets no new item and one last look at it decides.
    pub(crate) fn quiescent(&self) -> bool {
        self.lock.try_write().is_ok()
    }
}

pub(crate) struct Gate<T> {
    policy: Admission,
    latch: CloseLatch,
    tx: Sender<Waiting<T>>,
    // A receiving end for the dropping policies, which pop waiting frames from the producer side.
    rx: Receiver<Waiting<T>>,
    // Rung after every enqueue and close: the first stage waits on it when every queue is empty.
    bell: Sender<()>,
    stream: u32,
    pub(crate) counters: Arc<EntranceCounters>,
}

/// The entrance: one gate (admission queue, policy, counters) per stream, and the bell they share.
pub(crate) struct Entrance<T> {
    pub(crate) gates: Vec<Arc<Gate<T>>>,
    rxs: Vec<Receiver<Waiting<T>>>,
    bell_rx: Receiver<()>,
}

impl<T> Entrance<T> {
    /// An entrance with `streams` gates, each with its own queue of `capacity` frames.
    pub(crate) fn new(policy: Admission, capacity: usize, streams: usize) -> Self {
        // Capacity 1, not 0: waiting on a zero-capacity channel allocates a packet per wait.
        let (bell, bell_rx) = crossbeam_channel::bounded(1);
        let mut gates = Vec::with_capacity(streams);
        let mut rxs = Vec::with_capacity(streams);
        for stream in 0..streams {
            let (tx, rx) = crossbeam_channel::bounded(capacity);
            gates.push(Arc::new(Gate {
                policy,
                latch: CloseLatch::new(),
                tx,
                rx: rx.clone(),
                bell: bell.clone(),
                stream: stream as u32,
                counters: Arc::new(EntranceCounters::default()),
            }));
            rxs.push(rx);
        }
        Entrance { gates, rxs, bell_rx }
    }

    /// The per-stream counters.
    pub(crate) fn counters(&self) -> Vec<Arc<EntranceCounters>> {
        self.gates.iter().map(|g| g.counters.clone()).collect()
    }
}

impl<T> Gate<T> {
    /// Stops admission on this stream. Never blocks.
    pub(crate) fn close(&self) {
        self.latch.close();
        let _ = self.bell.try_send(());
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.latch.is_closed()
    }

    fn push(&self, item: Result<T, Tombstone>, captured_at: Instant) -> Result<(), Result<T, Tombstone>> {
        let Some(_pushing) = self.latch.enter() else {
            return Err(item);
        };
        self.counters.offered.fetch_add(1, Ordering::Relaxed);
        let mut waiting = Waiting { item, captured_at, stream: self.stream };
        match self.policy {
            Admission::Block => {
                if let Err(e) = self.tx.send(waiting) {
                    self.counters.offered.fetch_sub(1, Ordering::Relaxed);
                    return Err(e.0.item);
                }
            }
            Admission::DropOldest => loop {
                match self.tx.try_send(waiting) {
                    Ok(()) => break,
                    Err(TrySendError::Full(w)) => {
                        waiting = w;
                        if self.rx.try_recv().is_ok() {
                            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(TrySendError::Disconnected(w)) => {
                        self.counters.offered.fetch_sub(1, Ordering::Relaxed);
                        return Err(w.item);
                    }
                }
            },
            Admission::KeepLatest => loop {
                while self.rx.try_recv().is_ok() {
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
                match self.tx.try_send(waiting) {
                    Ok(()) => break,
                    Err(TrySendError::Full(w)) => waiting = w,
                    Err(TrySendError::Disconnected(w)) => {
                        self.counters.offered.fetch_sub(1, Ordering::Relaxed);
                        return Err(w.item);
                    }
                }
            },
        }
        let _ = self.bell.try_send(());
        Ok(())
    }
}

/// A handle that admits frames into a pipeline. Cheap to clone; every clone feeds the same entrance.
///
/// Obtained from [`Pipeline::input`](crate::Pipeline::input).
pub struct Input<T> {
    pub(crate) gate: Arc<Gate<T>>,
}

impl<T> Clone for Input<T> {
    fn clone(&self) -> Self {
        Input { gate: self.gate.clone() }
    }
}

impl<T> fmt::Debug for Input<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Input").field("stream", &self.gate.stream).field("closed", &self.is_closed()).finish()
    }
}

impl<T> Input<T> {
    /// Offers a frame captured now. Under [`Admission::Block`] this waits while the admission queue
    /// is full; under the dropping policies it never waits, and drops (and counts) a waiting frame
    /// instead. Fails, handing the frame back, once the pipeline is closed.
    ///
    /// Under `Block`, push from another thread than the one that reads the outputs: a reader that
    /// stops reading to push more frames than the pipeline can hold waits for itself.
    pub fn push(&self, item: T) -> Result<(), PushError<T>> {
        self.push_at(item, Instant::now())
    }

    /// Offers a frame with its capture time.
    pub fn push_at(&self, item: T, captured_at: Instant) -> Result<(), PushError<T>> {
        match self.gate.push(Ok(item), captured_at) {
            Ok(()) => Ok(()),
            Err(Ok(item)) => Err(PushError(item)),
            Err(Err(_)) => unreachable!("an Ok item comes back as Ok"),
        }
    }

    /// Reports that the source failed to produce a frame. The failure gets a sequence number and
    /// travels as a [`Tombstone::Source`] in its slot, and is counted as an error.
    pub fn push_error(
        &self,
        error: Box<dyn std::error::Error + Send + Sync>,
        captured_at: Instant,
    ) -> Result<(), PushError<()>> {
        match self.gate.push(Err(Tombstone::Source { error: error.into() }), captured_at) {
            Ok(()) => {
                self.gate.counters.source_errors.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(_) => Err(PushError(())),
        }
    }

    /// The stream this handle feeds.
    pub fn stream(&self) -> u32 {
        self.gate.stream
    }

    /// Stops admission on this handle's stream (for every handle of it): frames already admitted
    /// drain. The output ends once every stream is closed and drained (with one stream, this is
    /// [`Pipeline::finish`](crate::Pipeline::finish)). Never blocks.
    pub fn close(&self) {
        self.gate.close();
    }

    /// Whether the pipeline has stopped admitting frames.
    pub fn is_closed(&self) -> bool {
        self.gate.is_closed()
    }
}

/// Caps live frames: a counting semaphore of `max_in_flight` tokens (a mutex and a condition
/// variable, which never allocate).
#[derive(Clone)]
pub(crate) struct Tokens(Arc<(Mutex<usize>, std::sync::Condvar)>);

impl Tokens {
    pub(crate) fn new(n: usize) -> Self {
        Tokens(Arc::new((Mutex::new(n), std::sync::Condvar::new())))
    }

    fn acquire(&self) {
        let (count, cond) = &*self.0;
        let mut c = count.lock().unwrap_or_else(|e| e.into_inner());
        while *c == 0 {
            c = cond.wait(c).unwrap_or_else(|e| e.into_inner());
        }
        *c -= 1;
    }

    pub(crate) fn release(&self) {
        let (count, cond) = &*self.0;
        *count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        cond.notify_one();
    }
}

struct SeqState {
    next: u64,
    ended: bool,
    /// The stream to look at first next time: streams are served round-robin, so that a fast camera
    /// cannot starve a slow one.
    turn: usize,
}

/// The first stage's side of the entrance: takes frames out of the admission queues, round-robin
/// over the streams, and numbers them.
pub(crate) struct Sequencer<T> {
    gates: Vec<Arc<Gate<T>>>,
    rxs: Vec<Receiver<Waiting<T>>>,
    bell_rx: Receiver<()>,
    state: Mutex<SeqState>,
    tokens: Tokens,
    wait: WaitStrategy,
}

impl<T> Sequencer<T> {
    pub(crate) fn new(entrance: &Entrance<T>, tokens: Tokens, wait: WaitStrategy) -> Self {
        Sequencer {
            gates: entrance.gates.clone(),
            rxs: entrance.rxs.clone(),
            bell_rx: entrance.bell_rx.clone(),
            state: Mutex::new(SeqState { next: 0, ended: false, turn: 0 }),
            tokens,
            wait,
        }
    }

    /// The next admitted frame, numbered; `None` once every stream is closed and drained.
    pub(crate) fn next(&self) -> Option<Envelope<T>> {
        self.tokens.acquire();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.ended {
            self.tokens.release();
            return None;
        }
        match self.take(&mut state.turn) {
            Some(w) => {
                let seq = state.next;
                state.next += 1;
                self.gates[w.stream as usize].counters.admitted.fetch_add(1, Ordering::Relaxed);
                Some(Envelope::new(seq, w.stream, w.captured_at, w.item))
            }
            None => {
                state.ended = true;
                self.tokens.release();
                None
            }
        }
    }

    /// One waiting frame, looking at the streams round-robin from `turn`.
    fn scan(&self, turn: &mut usize) -> Option<Waiting<T>> {
        let n = self.rxs.len();
        for i in 0..n {
            let k = (*turn + i) % n;
            if let Ok(w) = self.rxs[k].try_recv() {
                *turn = (k + 1) % n;
                return Some(w);
            }
        }
        None
    }

    fn take(&self, turn: &mut usize) -> Option<Waiting<T>> {
        let spin_until = match self.wait {
            WaitStrategy::Block => None,
            WaitStrategy::Spin => Some(None),
            WaitStrategy::Hybrid(d) => Some(Some(Instant::now() + d)),
        };
        loop {
            if let Some(w) = self.scan(turn) {
                return Some(w);
            }
            if self.gates.iter().all(|g| g.is_closed()) {
                // Drain: end only when no push is half-way on any stream, so that no admitted frame
                // is left behind.
                if self.gates.iter().all(|g| g.latch.quiescent()) {
                    return self.scan(turn);
                }
                sync::yield_now();
                continue;
            }
            match spin_until {
                Some(None) => std::hint::spin_loop(),
                Some(Some(t)) if Instant::now() < t => std::hint::spin_loop(),
                // Every queue was empty: wait for the bell (rung after each enqueue or close). A bell
                // left over from a frame already taken only costs one more scan.
                _ => {
                    let _ = self.bell_rx.recv();
                }
            }
        }
    }
}

/// Model check of the entrance's close: a pusher pushes two frames while another thread closes and
/// the consumer drains with the same [`CloseLatch`] protocol as [`Sequencer`]. In every interleaving,
/// every push that was accepted is consumed, and the consumer ends.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::CloseLatch;
    use loom::sync::{Arc, Mutex};
    use loom::thread;
    use std::collections::VecDeque;

    #[test]
    fn close_loses_no_accepted_frame() {
        loom::model(|| {
            let latch = Arc::new(CloseLatch::new());
            let queue = Arc::new(Mutex::new(VecDeque::new()));
            let pusher = {
                let (latch, queue) = (latch.clone(), queue.clone());
                thread::spawn(move || {
                    let mut accepted = Vec::new();
                    for i in 0..2u32 {
                        if let Some(_g) = latch.enter() {
                            queue.lock().unwrap().push_back(i);
                            accepted.push(i);
                        }
                    }
                    accepted
                })
            };
            let closer = {
                let latch = latch.clone();
                thread::spawn(move || latch.close())
            };
            let mut got = Vec::new();
            loop {
                if let Some(x) = queue.lock().unwrap().pop_front() {
                    got.push(x);
                    continue;
                }
                if latch.is_closed() && latch.quiescent() {
                    if let Some(x) = queue.lock().unwrap().pop_front() {
                        got.push(x);
                        continue;
                    }
                    break;
                }
                thread::yield_now();
            }
            closer.join().unwrap();
            assert_eq!(got, pusher.join().unwrap());
        });
    }
}
