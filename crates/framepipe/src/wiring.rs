//! The threads: stage replicas, sources, fan-out forks and joins, and how they are linked.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::admission::{Input, Sequencer};
use crate::affinity::{pin_current, set_priority, Priority};
use crate::builder::{ForkPlan, JoinPlan, StagePlan};
use crate::envelope::{Envelope, StageStamp, Tombstone, MAX_STAGES};
use crate::error::BuildError;
use crate::link::{link, LinkRx, LinkTx};
use crate::metrics::Metrics;
use crate::reorder::Reorder;
use crate::source::{Pace, Source};
use crate::stage::{CancelToken, Stage, StageContext};
use crate::MAX_BRANCHES;

/// What a node reads from.
pub(crate) enum Upstream<T> {
    Entrance(Arc<Sequencer<T>>),
    Link(LinkRx<Envelope<T>>),
}

pub(crate) struct Fault {
    pub(crate) stage: String,
    pub(crate) seq: u64,
    pub(crate) message: String,
}

/// Everything the threads are built from; stages are spawned in index order.
pub(crate) struct Wiring {
    pub(crate) plans: Vec<StagePlan>,
    pub(crate) forks: Vec<ForkPlan>,
    pub(crate) joins: Vec<JoinPlan>,
    pub(crate) next_k: usize,
    pub(crate) next_fork: usize,
    pub(crate) next_join: usize,
    pub(crate) window: usize,
    pub(crate) deadline: Option<Duration>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) ready_tx: crossbeam_channel::Sender<Result<(), BuildError>>,
    pub(crate) threads: Vec<(String, JoinHandle<()>)>,
    pub(crate) fault: Arc<Mutex<Option<Fault>>>,
    pub(crate) cancel: CancelToken,
    pub(crate) close_gates: Arc<dyn Fn() + Send + Sync>,
    pub(crate) spawned: usize,
    pub(crate) spawn_error: Option<BuildError>,
}

impl Wiring {
    /// Starts a runtime thread (a fork or a join): no factory, no ready report.
    pub(crate) fn spawn_node(&mut self, name: &str, run: impl FnOnce(Arc<Metrics>) + Send + 'static) {
        let metrics = self.metrics.clone();
        let thread = name.to_string();
        match std::thread::Builder::new().name(thread.clone()).spawn(move || {
            setup_thread(&metrics, &thread, &[], Priority::Normal);
            run(metrics)
        }) {
            Ok(h) => self.threads.push((name.to_string(), h)),
            Err(error) => {
                self.spawn_error.get_or_insert(BuildError::Spawn { stage: name.to_string(), error });
            }
        }
    }
}

/// A node's input: the entrance, or a link with an optional reorder step.
pub(crate) enum StageInput<T> {
    Entrance(Arc<Sequencer<T>>),
    Link { rx: LinkRx<Envelope<T>>, reorder: Option<Reorder<T>>, leftovers: Vec<Envelope<T>> },
}

impl<T> StageInput<T> {
    pub(crate) fn link(rx: LinkRx<Envelope<T>>, reorder_window: Option<usize>) -> Self {
        StageInput::Link { rx, reorder: reorder_window.map(Reorder::new), leftovers: Vec::new() }
    }

    pub(crate) fn next(&mut self) -> Option<Envelope<T>> {
        match self {
            StageInput::Entrance(seq) => seq.next(),
            StageInput::Link { rx, reorder: None, .. } => rx.recv(),
            StageInput::Link { rx, reorder: Some(r), leftovers } => loop {
                if let Some(e) = leftovers.pop() {
                    return Some(e);
                }
                if let Some(e) = r.pop_ready() {
                    return Some(e);
                }
                match rx.recv() {
                    Some(e) => {
                        if let Some(e) = r.insert(e) {
                            return Some(e);
                        }
                    }
                    None => {
                        // Upstream ended with frames still held: a gap that the in-flight invariants
                        // rule out. Deliver them in order rather than lose them.
                        debug_assert_eq!(r.held(), 0, "upstream ended with a gap in the sequence");
                        let mut held = r.drain_held();
                        if held.is_empty() {
                            return None;
                        }
                        held.reverse();
                        *leftovers = held;
                    }
                }
            },
        }
    }
}

/// Spawns the next stage (in index order) reading from `up`; returns its output.
pub(crate) fn spawn_stage<I, S, F, E>(w: &mut Wiring, factory: Arc<F>, up: Upstream<I>) -> Upstream<S::Out>
where
    I: Send + 'static,
    S: Stage<I> + 'static,
    F: Fn(&StageContext) -> Result<S, E> + Send + Sync + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    let k = w.next_k;
    w.next_k += 1;
    let plan = w.plans[k].clone();
    let spec = plan.spec;
    let n = spec.replicas;
    let (tx, rx) = link::<Envelope<S::Out>>(plan.out_capacity, plan.out_wait, plan.out_spsc);

    let mut inputs: Vec<StageInput<I>> = Vec::with_capacity(n);
    match up {
        Upstream::Entrance(seq) => {
            for _ in 0..n {
                inputs.push(StageInput::Entrance(seq.clone()));
            }
        }
        Upstream::Link(in_rx) => {
            if n == 1 {
                inputs.push(StageInput::link(in_rx, plan.reorder.then_some(w.window)));
            } else {
                for _ in 1..n {
                    let rx = in_rx.try_clone().expect("a link into a replicated stage is a channel");
                    inputs.push(StageInput::link(rx, None));
                }
                inputs.push(StageInput::link(in_rx, None));
            }
        }
    }
    let mut txs: Vec<LinkTx<Envelope<S::Out>>> =
        (1..n).map(|_| tx.try_clone().expect("a link out of a replicated stage is a channel")).collect();
    txs.push(tx);

    let name: Arc<str> = spec.name.as_str().into();
    for (r, (input, tx)) in inputs.into_iter().zip(txs).enumerate() {
        let thread_name = if n == 1 { spec.name.clone() } else { format!("{}#{r}", spec.name) };
        let job = ReplicaJob {
            k,
            replica: r,
            ctx: StageContext { name: name.clone(), replica: r, replicas: n, cancel: w.cancel.clone() },
            pin: spec.pin.for_replica(r),
            priority: spec.priority,
            deadline: w.deadline,
            metrics: w.metrics.clone(),
            fault: w.fault.clone(),
            close_gates: w.close_gates.clone(),
            ready_tx: w.ready_tx.clone(),
            thread_name: thread_name.clone(),
        };
        let factory = factory.clone();
        match std::thread::Builder::new().name(thread_name.clone()).spawn(move || run_replica(job, factory, input, tx))
        {
            Ok(h) => {
                w.threads.push((thread_name, h));
                w.spawned += 1;
            }
            Err(error) => {
                w.spawn_error.get_or_insert(BuildError::Spawn { stage: thread_name, error });
            }
        }
    }
    Upstream::Link(rx)
}

struct ReplicaJob {
    k: usize,
    replica: usize,
    ctx: StageContext,
    pin: Vec<usize>,
    priority: Priority,
    deadline: Option<Duration>,
    metrics: Arc<Metrics>,
    fault: Arc<Mutex<Option<Fault>>>,
    close_gates: Arc<dyn Fn() + Send + Sync>,
    ready_tx: crossbeam_channel::Sender<Result<(), BuildError>>,
    thread_name: String,
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Makes the calling thread block once on a channel, so that crossbeam creates its per-thread wait
/// context now, at start-up, and not on the first frame that has to wait (it allocates).
pub fn prime_thread() {
    let (_tx, rx) = crossbeam_channel::bounded::<()>(1);
    let _ = rx.recv_timeout(Duration::from_micros(1));
}

fn setup_thread(metrics: &Metrics, thread: &str, pin: &[usize], priority: Priority) {
    prime_thread();
    if let Err(e) = pin_current(pin) {
        metrics.notice(format!("thread `{thread}`: pinning to cores {pin:?} failed ({e}); it runs unpinned"));
    }
    if let Err(e) = set_priority(priority) {
        metrics.notice(format!("thread `{thread}`: the OS refused {priority:?} ({e}); it runs at normal priority"));
    }
}

fn run_replica<I, S, F, E>(job: ReplicaJob, factory: Arc<F>, mut input: StageInput<I>, mut tx: LinkTx<Envelope<S::Out>>)
where
    S: Stage<I>,
    F: Fn(&StageContext) -> Result<S, E>,
    E: std::error::Error + Send + Sync + 'static,
{
    setup_thread(&job.metrics, &job.thread_name, &job.pin, job.priority);
    let init_error = |error: Box<dyn std::error::Error + Send + Sync>| BuildError::StageInit {
        stage: job.ctx.name.to_string(),
        replica: job.replica,
        error,
    };
    let built = catch_unwind(AssertUnwindSafe(|| -> Result<S, BuildError> {
        let mut stage = factory(&job.ctx).map_err(|e| init_error(Box::new(e)))?;
        stage.on_start().map_err(|e| init_error(Box::new(e)))?;
        Ok(stage)
    }));
    let mut stage = match built {
        Ok(Ok(s)) => {
            let _ = job.ready_tx.send(Ok(()));
            s
        }
        Ok(Err(e)) => {
            let _ = job.ready_tx.send(Err(e));
            return;
        }
        Err(p) => {
            let _ = job.ready_tx.send(Err(init_error(format!("panicked: {}", panic_message(p.as_ref())).into())));
            return;
        }
    };
    drop(job.ready_tx);

    let stage_metrics = &job.metrics.stages[job.k];
    let name = job.ctx.name.clone();
    let mut poisoned = false;
    while let Some(env) = input.next() {
        let Envelope { seq, stream, captured_at, mut stamps, stages, last_exit_ns, forked_tombstone, payload } = env;
        let enter = Instant::now();
        let enter_ns = enter.saturating_duration_since(captured_at).as_nanos() as u64;
        let mut ran = false;
        let will_run = payload.is_ok() && !poisoned;
        job.metrics.flow.enter(job.k, job.replica, enter, will_run);
        let mut counted = (0u64, 0u64, 0u64, 0u64, 0u64); // processed, errored, skipped, panicked, aborted
        let result: Result<S::Out, Tombstone> = match payload {
            Err(t) => Err(t),
            Ok(_) if poisoned => {
                counted.4 = 1;
                Err(Tombstone::Aborted { stage: name.clone() })
            }
            Ok(v) => {
                let age = enter.saturating_duration_since(captured_at);
                match job.deadline {
                    Some(d) if age > d => {
                        counted.2 = 1;
                        Err(Tombstone::Skipped { stage: name.clone(), age })
                    }
                    _ => {
                        ran = true;
                        match catch_unwind(AssertUnwindSafe(|| stage.process(v))) {
                            Ok(Ok(out)) => {
                                counted.0 = 1;
                                Ok(out)
                            }
                            Ok(Err(error)) => {
                                counted.1 = 1;
                                Err(Tombstone::Error { stage: name.clone(), error: Arc::new(error) })
                            }
                            Err(p) => {
                                counted.3 = 1;
                                poisoned = true;
                                let message = panic_message(p.as_ref());
                                let mut fault = job.fault.lock().unwrap_or_else(|e| e.into_inner());
                                if fault.is_none() {
                                    *fault = Some(Fault { stage: name.to_string(), seq, message: message.clone() });
                                }
                                drop(fault);
                                (job.close_gates)();
                                Err(Tombstone::Panicked { stage: name.clone(), message })
                            }
                        }
                    }
                }
            }
        };
        let exit = Instant::now();
        let exit_ns = exit.saturating_duration_since(captured_at).as_nanos() as u64;
        stamps[job.k] = StageStamp { enter_ns, exit_ns, replica: job.replica as u16 };
        job.metrics.flow.exit(job.k, job.replica, ran.then_some(exit_ns - enter_ns));
        {
            let mut st = stage_metrics.replica(job.replica);
            if ran {
                st.service.saturating_record((exit_ns - enter_ns).max(1));
                st.wait.saturating_record(enter_ns.saturating_sub(last_exit_ns).max(1));
                st.busy_ns += exit_ns - enter_ns;
            }
            st.processed += counted.0;
            st.errored += counted.1;
            st.skipped += counted.2;
            st.panicked += counted.3;
            st.aborted += counted.4;
        }
        let out = Envelope {
            seq,
            stream,
            captured_at,
            stamps,
            stages: stages.max(job.k as u8 + 1),
            last_exit_ns: exit_ns,
            forked_tombstone,
            payload: result,
        };
        if tx.send(out).is_err() {
            break;
        }
    }
    if !poisoned {
        let _ = catch_unwind(AssertUnwindSafe(|| stage.on_stop()));
    }
}

/// What a source thread is given.
pub(crate) struct SourceCtx<In> {
    pub(crate) input: Input<In>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) config: crate::builder::SourceConfig,
    /// Its row in the metrics' source list.
    pub(crate) index: usize,
}

pub(crate) fn run_source<S: Source>(mut source: S, ctx: SourceCtx<S::Item>) {
    let SourceCtx { input, metrics, config, index } = ctx;
    setup_thread(&metrics, &config.name, &config.pin.for_replica(0), config.priority);
    let stats = &metrics.sources[index];
    source.on_start();
    let mut start = Instant::now();
    let mut n: u32 = 0;
    let jit = metrics.release == "just-in-time";
    while !input.is_closed() {
        if jit && !metrics.flow.wait_turn(index, || input.is_closed()) {
            break;
        }
        if let Pace::Period(p) = config.pace {
            let due = start + p * n;
            let now = Instant::now();
            if now < due {
                std::thread::sleep(due - now);
            } else if now > due + p {
                // Behind by more than a period: re-anchor instead of bursting to catch up.
                start = now - p * n;
            }
        }
        let t0 = Instant::now();
        let next = source.next();
        let t1 = Instant::now();
        let ns = t1.duration_since(t0).as_nanos() as u64;
        if jit && next.is_some() {
            metrics.flow.record_source(index, ns);
        }
        // Whether the frame (or its error) got in; a just-in-time release that brought nothing in is
        // taken back.
        let entered = match next {
            None => false,
            Some(Ok(item)) => {
                {
                    let mut st = stats.replica(0);
                    st.service.saturating_record(ns.max(1));
                    st.busy_ns += ns;
                    st.processed += 1;
                }
                input.push_at(item, t1).is_ok()
            }
            Some(Err(e)) => {
                stats.replica(0).errored += 1;
                input.push_error(Box::new(e), t1).is_ok()
            }
        };
        if !entered {
            if jit {
                metrics.flow.unrelease();
            }
            break;
        }
        n = n.wrapping_add(1);
    }
    source.on_stop();
    input.close();
}

/// The results of every branch of a fan-out for one frame, in branch order.
///
/// Held inline (at most [`MAX_BRANCHES`]), so joining allocates nothing.
pub struct Joined<O> {
    results: [Option<Result<O, Tombstone>>; MAX_BRANCHES],
    len: usize,
}

impl<O> Joined<O> {
    fn empty(len: usize) -> Self {
        Joined { results: std::array::from_fn(|_| None), len }
    }

    /// How many branches.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is no branch (never: a fan-out has at least one).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Branch `i`'s result, or its tombstone.
    pub fn get(&self, i: usize) -> Option<Result<&O, &Tombstone>> {
        self.results[..self.len].get(i).and_then(|r| r.as_ref()).map(|r| r.as_ref())
    }

    /// Every branch's result, in branch order.
    pub fn iter(&self) -> impl Iterator<Item = Result<&O, &Tombstone>> {
        self.results[..self.len].iter().filter_map(|r| r.as_ref().map(|r| r.as_ref()))
    }

    /// Takes the results out, in branch order.
    pub fn into_results(self) -> impl Iterator<Item = Result<O, Tombstone>> {
        self.results.into_iter().take(self.len).flatten()
    }
}

impl<O: std::fmt::Debug> std::fmt::Debug for Joined<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Sends a clone of every frame down each branch (the last branch gets the original).
pub(crate) fn run_fork<T: Clone>(_metrics: Arc<Metrics>, mut input: StageInput<T>, mut txs: Vec<LinkTx<Envelope<T>>>) {
    while let Some(mut env) = input.next() {
        if env.payload.is_err() {
            env.forked_tombstone = true;
        }
        let n = txs.len();
        for tx in txs.iter_mut().take(n - 1) {
            let copy = Envelope {
                seq: env.seq,
                stream: env.stream,
                captured_at: env.captured_at,
                stamps: env.stamps,
                stages: env.stages,
                last_exit_ns: env.last_exit_ns,
                forked_tombstone: env.forked_tombstone,
                payload: env.payload.clone(),
            };
            let _ = tx.send(copy);
        }
        if txs[n - 1].send(env).is_err() {
            break;
        }
    }
}

struct JoinSlot<O> {
    got: usize,
    joined: Joined<O>,
    stamps: [StageStamp; MAX_STAGES],
    stages: u8,
    captured_at: Option<Instant>,
    stream: u32,
    forked_tombstone: bool,
}

/// Collects each branch's result for a frame and emits one [`Joined`] per frame, in sequence order.
///
/// The join keeps a ring of `window` slots indexed by sequence number (the in-flight cap bounds how
/// far apart the branches can be), so it reorders by itself and allocates nothing per frame.
pub(crate) fn run_join<O>(
    metrics: Arc<Metrics>,
    rxs: Vec<LinkRx<Envelope<O>>>,
    mut tx: LinkTx<Envelope<Joined<O>>>,
    window: usize,
    branch_base: usize,
) {
    let n = rxs.len();
    let receivers: Vec<crossbeam_channel::Receiver<Envelope<O>>> = rxs
        .into_iter()
        .map(|rx| match rx {
            LinkRx::Chan(rx, _) => rx,
            LinkRx::Ring { .. } => unreachable!("links into a join are channels"),
        })
        .collect();
    let window = window.max(1);
    let mut slots: Vec<JoinSlot<O>> = (0..window)
        .map(|_| JoinSlot {
            got: 0,
            joined: Joined::empty(n),
            stamps: [StageStamp::default(); MAX_STAGES],
            stages: 0,
            captured_at: None,
            stream: 0,
            forked_tombstone: false,
        })
        .collect();
    let mut next: u64 = 0;
    let mut open = vec![true; n];
    // Built once and reused: selecting allocates nothing per frame.
    let mut select = crossbeam_channel::Select::new();
    for rx in &receivers {
        select.recv(rx);
    }
    while open.iter().any(|o| *o) {
        let op = select.select();
        let b = op.index();
        let env = match op.recv(&receivers[b]) {
            Ok(e) => e,
            Err(_) => {
                open[b] = false;
                select.remove(b);
                continue;
            }
        };
        let slot = &mut slots[(env.seq % window as u64) as usize];
        debug_assert!(env.seq >= next && env.seq - next < window as u64, "a branch ran past the join window");
        let last = metrics.branches[branch_base + b].last_stage;
        match &env.payload {
            Ok(_) => {
                let exit = env.stamps[last].exit_ns;
                crate::metrics::lock(&metrics.branches[branch_base + b].latency).saturating_record(exit.max(1));
            }
            Err(_) if !env.forked_tombstone => {
                metrics.branches[branch_base + b].errored.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err(_) => {}
        }
        for (k, st) in env.stamps.iter().enumerate().take(env.stages as usize) {
            if st.is_set() {
                slot.stamps[k] = *st;
            }
        }
        slot.stages = slot.stages.max(env.stages);
        slot.captured_at = Some(env.captured_at);
        slot.stream = env.stream;
        slot.forked_tombstone |= env.forked_tombstone;
        slot.joined.results[b] = Some(env.payload);
        slot.got += 1;
        // Emit every frame that is complete, in order.
        loop {
            let i = (next % window as u64) as usize;
            if slots[i].got < n {
                break;
            }
            let slot = &mut slots[i];
            let joined = std::mem::replace(&mut slot.joined, Joined::empty(n));
            let captured_at = slot.captured_at.take().expect("a complete slot has a capture time");
            let payload = if slot.forked_tombstone {
                // The frame was a tombstone before the fan-out: it comes out whole, as that tombstone.
                match joined.into_results().next() {
                    Some(Err(t)) => Err(t),
                    _ => unreachable!("a forked tombstone reaches every branch as a tombstone"),
                }
            } else {
                Ok(joined)
            };
            let exit_ns = Instant::now().saturating_duration_since(captured_at).as_nanos() as u64;
            let out = Envelope {
                seq: next,
                stream: slot.stream,
                captured_at,
                stamps: slot.stamps,
                stages: slot.stages,
                last_exit_ns: exit_ns,
                forked_tombstone: false,
                payload,
            };
            slot.got = 0;
            slot.stages = 0;
            slot.forked_tombstone = false;
            slot.stamps = [StageStamp::default(); MAX_STAGES];
            next += 1;
            if tx.send(out).is_err() {
                return;
            }
        }
    }
}
