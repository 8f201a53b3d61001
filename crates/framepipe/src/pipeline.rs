//! The pipeline: its builder, its threads, its output and its shutdown.

use std::collections::HashSet;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::admission::{Admission, EntranceCounters, Gate, Input, Sequencer, Tokens};
use crate::affinity::{available_cores, pin_current, set_priority, Pin, Priority};
use crate::envelope::{Envelope, StageStamp, Tombstone};
use crate::error::{BuildError, PipelineError};
use crate::link::{link, LinkRx, LinkTx, WaitStrategy};
use crate::metrics::{LinkInfo, Metrics, Report, StageMetrics, StreamStats};
use crate::reorder::Reorder;
use crate::source::{Pace, Source};
use crate::stage::{CancelToken, Stage, StageContext};
use crate::MAX_STAGES;

/// How long dropping a pipeline waits for it to drain, before cancelling, and again before leaving
/// threads detached.
pub const DROP_GRACE: Duration = Duration::from_secs(10);

/// How one stage is run: its name, replicas, pins, priority, and the link into it.
#[derive(Clone, Debug)]
pub struct StageConfig {
    name: String,
    replicas: usize,
    pin: Pin,
    priority: Priority,
    capacity: usize,
    wait: WaitStrategy,
}

impl StageConfig {
    /// A stage with one replica, not pinned, normal priority, an input link of capacity 1 that blocks.
    pub fn new(name: impl Into<String>) -> Self {
        StageConfig {
            name: name.into(),
            replicas: 1,
            pin: Pin::None,
            priority: Priority::Normal,
            capacity: 1,
            wait: WaitStrategy::Block,
        }
    }

    /// Runs `n` replicas, each on its own thread with its own stage value. Replicas take frames in
    /// any order; a reorder step restores sequence order before the next single-replica stage.
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }

    /// Pins the stage's threads.
    pub fn pin(mut self, pin: Pin) -> Self {
        self.pin = pin;
        self
    }

    /// Asks for a scheduling priority.
    pub fn priority(mut self, p: Priority) -> Self {
        self.priority = p;
        self
    }

    /// The capacity of the link into this stage (for the first stage: the admission queue).
    pub fn capacity(mut self, n: usize) -> Self {
        self.capacity = n;
        self
    }

    /// How threads wait on the link into this stage.
    pub fn wait(mut self, w: WaitStrategy) -> Self {
        self.wait = w;
        self
    }

    /// The stage's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl From<&str> for StageConfig {
    fn from(name: &str) -> Self {
        StageConfig::new(name)
    }
}

impl From<String> for StageConfig {
    fn from(name: String) -> Self {
        StageConfig::new(name)
    }
}

/// How the pipeline's own source thread runs.
#[derive(Clone, Debug)]
pub struct SourceConfig {
    name: String,
    pin: Pin,
    priority: Priority,
    pace: Pace,
    stream: u32,
}

impl SourceConfig {
    /// A source thread with this name, released just in time (see [`Pace`]).
    pub fn new(name: impl Into<String>) -> Self {
        SourceConfig {
            name: name.into(),
            pin: Pin::None,
            priority: Priority::Normal,
            pace: Pace::JustInTime,
            stream: 0,
        }
    }
    /// Pins the source thread.
    pub fn pin(mut self, pin: Pin) -> Self {
        self.pin = pin;
        self
    }
    /// Asks for a scheduling priority.
    pub fn priority(mut self, p: Priority) -> Self {
        self.priority = p;
        self
    }
    /// Paces the source (see [`Pace`]).
    pub fn pace(mut self, pace: Pace) -> Self {
        self.pace = pace;
        self
    }
    /// The stream id of the source's frames.
    pub fn stream(mut self, id: u32) -> Self {
        self.stream = id;
        self
    }
}

type SourceRunner<In> = Box<dyn FnOnce(SourceCtx<In>) + Send>;

struct SourceSpec<In> {
    config: SourceConfig,
    run: SourceRunner<In>,
}

struct SourceCtx<In> {
    input: Input<In>,
    metrics: Arc<Metrics>,
    config: SourceConfig,
}

type Chain<In, Out> = Box<dyn FnOnce(&mut Wiring, Upstream<In>) -> Upstream<Out> + Send>;

/// Builds a [`Pipeline`]: source → stage → … → stage → ordered output.
///
/// `In` is what enters the pipeline, `Out` what the last stage added so far produces. Each
/// [`stage`](PipelineBuilder::stage) call changes `Out`, so the stages' types are checked when the
/// pipeline is written down.
pub struct PipelineBuilder<In, Out> {
    admission: Admission,
    output_capacity: usize,
    output_wait: WaitStrategy,
    max_in_flight: Option<usize>,
    deadline: Option<Duration>,
    source: Option<SourceSpec<In>>,
    specs: Vec<StageConfig>,
    chain: Chain<In, Out>,
    _out: PhantomData<fn() -> Out>,
}

impl<In: Send + 'static> PipelineBuilder<In, In> {
    fn new() -> Self {
        PipelineBuilder {
            admission: Admission::Block,
            output_capacity: 1,
            output_wait: WaitStrategy::Block,
            max_in_flight: None,
            deadline: None,
            source: None,
            specs: Vec::new(),
            chain: Box::new(|_, up| up),
            _out: PhantomData,
        }
    }
}

impl<In: Send + 'static, Out: Send + 'static> PipelineBuilder<In, Out> {
    /// The admission policy at the entrance (default [`Admission::Block`]).
    pub fn admission(mut self, a: Admission) -> Self {
        self.admission = a;
        self
    }

    /// Caps live frames: numbered and not yet delivered (default: as many as the stages and links can
    /// hold, so that the cap only bounds the reorder window). A lower cap trades throughput for
    /// latency, explicitly.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = Some(n);
        self
    }

    /// Skips (as a tombstone, counted) every frame older than `d` when it enters a stage.
    pub fn deadline(mut self, d: Duration) -> Self {
        self.deadline = Some(d);
        self
    }

    /// The capacity of the link from the last stage to the output (default 1).
    pub fn output_capacity(mut self, n: usize) -> Self {
        self.output_capacity = n;
        self
    }

    /// How the last stage and the reader wait on the output link (default block). `Spin` is refused
    /// there, because the reader's thread is not the runtime's to pin.
    pub fn output_wait(mut self, w: WaitStrategy) -> Self {
        self.output_wait = w;
        self
    }

    /// Runs `source` on its own thread to produce the pipeline's frames. When it ends, admission
    /// closes and the pipeline drains.
    pub fn source<S>(mut self, config: SourceConfig, source: S) -> Self
    where
        S: Source<Item = In> + Send + 'static,
    {
        let run: SourceRunner<In> = Box::new(move |ctx| run_source(source, ctx));
        self.source = Some(SourceSpec { config, run });
        self
    }

    /// Adds a stage. `factory` is called once per replica, on that replica's thread, and builds its
    /// stage value: clone shared state (an `Arc` of model weights) into it, and create per-replica
    /// state (a session, buffers) there.
    pub fn stage<S, F, E>(mut self, config: impl Into<StageConfig>, factory: F) -> PipelineBuilder<In, S::Out>
    where
        S: Stage<Out> + 'static,
        F: Fn(&StageContext) -> Result<S, E> + Send + Sync + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        let index = self.specs.len();
        self.specs.push(config.into());
        let prev = self.chain;
        let factory = Arc::new(factory);
        let chain: Chain<In, S::Out> = Box::new(move |w: &mut Wiring, up: Upstream<In>| {
            let mid = prev(w, up);
            spawn_stage::<Out, S, F, E>(w, index, factory, mid)
        });
        PipelineBuilder {
            admission: self.admission,
            output_capacity: self.output_capacity,
            output_wait: self.output_wait,
            max_in_flight: self.max_in_flight,
            deadline: self.deadline,
            source: self.source,
            specs: self.specs,
            chain,
            _out: PhantomData,
        }
    }

    /// Adds a stage made from a closure; each replica gets a clone of it.
    pub fn stage_fn<O, E, F>(self, config: impl Into<StageConfig>, f: F) -> PipelineBuilder<In, O>
    where
        O: Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
        F: FnMut(Out) -> Result<O, E> + Clone + Send + Sync + 'static,
    {
        self.stage(config, move |_: &StageContext| Ok::<_, std::convert::Infallible>(crate::stage::FnStage(f.clone())))
    }

    /// Starts every thread and returns the running pipeline, once every stage replica has been built
    /// and has run its `on_start` hook.
    pub fn build(self) -> Result<Pipeline<In, Out>, BuildError> {
        let plan = plan(&self)?;
        let max_in_flight = plan.max_in_flight;
        let (gate, adm_rx, close_rx) = Gate::<In>::new(self.admission, self.specs[0].capacity);
        let counters = gate.counters.clone();
        let tokens = Tokens::new(max_in_flight);
        let sequencer = Arc::new(Sequencer::new(gate.clone(), adm_rx, close_rx, tokens.clone(), plan.waits[0]));

        let source_metrics = self
            .source
            .as_ref()
            .map(|s| StageMetrics::new(s.config.name.as_str().into(), 1, vec![s.config.pin.for_replica(0)], true));
        let stage_metrics = self
            .specs
            .iter()
            .map(|s| {
                StageMetrics::new(
                    s.name.as_str().into(),
                    s.replicas,
                    (0..s.replicas).map(|r| s.pin.for_replica(r)).collect(),
                    false,
                )
            })
            .collect();
        let release = match &self.source {
            None => "input",
            Some(s) => match s.config.pace {
                Pace::JustInTime if self.admission == Admission::Block => "just-in-time",
                Pace::JustInTime | Pace::Free => "free",
                Pace::Period(_) => "paced",
            },
        };
        let metrics = Arc::new(Metrics::new(
            self.admission,
            max_in_flight,
            source_metrics,
            stage_metrics,
            plan.links.clone(),
            plan.notices.clone(),
            release,
        ));

        let (ready_tx, ready_rx) = crossbeam_channel::unbounded();
        let fault = Arc::new(Mutex::new(None));
        let cancel = CancelToken::new();
        let closer: Arc<dyn Fn() + Send + Sync> = {
            let gate = gate.clone();
            Arc::new(move || gate.close())
        };
        let mut wiring = Wiring {
            specs: self.specs.clone(),
            waits: plan.waits.clone(),
            output_capacity: self.output_capacity,
            window: max_in_flight,
            deadline: self.deadline,
            metrics: metrics.clone(),
            ready_tx,
            threads: Vec::new(),
            fault: fault.clone(),
            cancel: cancel.clone(),
            close_gate: closer,
            spawned: 0,
            spawn_error: None,
        };
        let out = (self.chain)(&mut wiring, Upstream::Entrance(sequencer));
        let out_rx = match out {
            Upstream::Link { rx: LinkRx::Chan(rx, _), .. } => rx,
            _ => unreachable!("the last stage's output is always a channel link"),
        };

        let mut failure = wiring.spawn_error.take();
        for _ in 0..wiring.spawned {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    failure.get_or_insert(e);
                }
                Err(_) => break,
            }
        }
        let mut pipeline = Pipeline {
            gate,
            counters,
            out_rx: Some(out_rx),
            reorder: None,
            tokens,
            metrics,
            threads: std::mem::take(&mut wiring.threads),
            fault,
            cancel,
            ended: false,
            shut: false,
            stage_names: self.specs.iter().map(|s| s.name.clone()).collect(),
            hop_baseline_us: None,
        };
        if let Some(e) = failure {
            let _ = pipeline.shutdown(DROP_GRACE);
            return Err(e);
        }
        if let Some(src) = self.source {
            let name = src.config.name.clone();
            let ctx = SourceCtx { input: pipeline.input(), metrics: pipeline.metrics.clone(), config: src.config };
            let run = src.run;
            match std::thread::Builder::new().name(name.clone()).spawn(move || run(ctx)) {
                Ok(h) => pipeline.threads.push((name, h)),
                Err(error) => {
                    let _ = pipeline.shutdown(DROP_GRACE);
                    return Err(BuildError::Spawn { stage: name, error });
                }
            }
        }
        Ok(pipeline)
    }
}

struct Plan {
    max_in_flight: usize,
    waits: Vec<WaitStrategy>,
    links: Vec<LinkInfo>,
    notices: Vec<String>,
}

/// Checks the configuration and decides each link's kind and wait strategy.
fn plan<In, Out>(b: &PipelineBuilder<In, Out>) -> Result<Plan, BuildError> {
    let specs = &b.specs;
    if specs.is_empty() {
        return Err(BuildError::NoStages);
    }
    if specs.len() > MAX_STAGES {
        return Err(BuildError::TooManyStages(specs.len()));
    }
    let available = available_cores();
    let check_pin = |stage: &str, pin: &Pin, replicas: usize| -> Result<(), BuildError> {
        let lists: Vec<&Vec<usize>> = match pin {
            Pin::None => vec![],
            Pin::Cores(c) => vec![c],
            Pin::PerReplica(v) => {
                if v.len() != replicas {
                    return Err(BuildError::PinCount { stage: stage.into(), pins: v.len(), replicas });
                }
                v.iter().collect()
            }
        };
        for list in lists {
            for &core in list {
                if !available.contains(&core) {
                    return Err(BuildError::NoSuchCore { stage: stage.into(), core, available: available.clone() });
                }
            }
        }
        Ok(())
    };
    let check_priority = |stage: &str, p: Priority| match p {
        Priority::Realtime(v) if !(1..=99).contains(&v) => {
            Err(BuildError::BadPriority { stage: stage.into(), priority: v })
        }
        _ => Ok(()),
    };
    let mut names = HashSet::new();
    if let Some(s) = &b.source {
        names.insert(s.config.name.clone());
        check_pin(&s.config.name, &s.config.pin, 1)?;
        check_priority(&s.config.name, s.config.priority)?;
    }
    for s in specs {
        if s.name.is_empty() || !names.insert(s.name.clone()) {
            return Err(BuildError::BadName(s.name.clone()));
        }
        if s.replicas == 0 {
            return Err(BuildError::ZeroReplicas(s.name.clone()));
        }
        if s.capacity == 0 {
            return Err(BuildError::ZeroCapacity(s.name.clone()));
        }
        check_pin(&s.name, &s.pin, s.replicas)?;
        check_priority(&s.name, s.priority)?;
    }
    if b.output_capacity == 0 {
        return Err(BuildError::ZeroCapacity("output".into()));
    }
    if b.max_in_flight == Some(0) {
        return Err(BuildError::ZeroInFlight);
    }
    if b.deadline == Some(Duration::ZERO) {
        return Err(BuildError::ZeroDeadline);
    }

    // Threads by name with their single core, if pinned to exactly one.
    let single = |pin: &Pin, r: usize| -> Option<usize> {
        match pin.for_replica(r).as_slice() {
            [c] => Some(*c),
            _ => None,
        }
    };
    let thread_name = |s: &StageConfig, r: usize| -> String {
        if s.replicas == 1 {
            s.name.clone()
        } else {
            format!("{}#{r}", s.name)
        }
    };
    let mut notices = Vec::new();
    let mut waits = Vec::with_capacity(specs.len() + 1);
    let mut claimed: std::collections::HashMap<usize, String> = std::collections::HashMap::new();
    let n = specs.len();
    for k in 0..=n {
        let (asked, to_name) =
            if k < n { (specs[k].wait, specs[k].name.clone()) } else { (b.output_wait, "output".to_string()) };
        if asked != WaitStrategy::Spin {
            waits.push(asked);
            continue;
        }
        // The threads that would spin on link k: its receivers, and its senders when it fills.
        let mut ends: Vec<(String, Option<usize>)> = Vec::new();
        let mut refusal = None;
        if k == 0 {
            // Pushers at the entrance never spin; only the first stage waits on the admission queue.
        } else {
            let s = &specs[k - 1];
            for r in 0..s.replicas {
                ends.push((thread_name(s, r), single(&s.pin, r)));
            }
        }
        if k < n {
            let s = &specs[k];
            for r in 0..s.replicas {
                ends.push((thread_name(s, r), single(&s.pin, r)));
            }
        } else {
            refusal = Some("the output is read by the caller's thread, which the runtime does not pin".to_string());
        }
        if refusal.is_none() {
            for (name, core) in &ends {
                match core {
                    None => {
                        refusal = Some(format!("thread `{name}` is not pinned to exactly one core"));
                        break;
                    }
                    Some(c) => {
                        if let Some(other) = claimed.get(c).filter(|o| *o != name) {
                            refusal = Some(format!("threads `{other}` and `{name}` would both spin on core {c}"));
                            break;
                        }
                    }
                }
            }
        }
        if refusal.is_none() {
            let mut seen: std::collections::HashMap<usize, &String> = std::collections::HashMap::new();
            for (name, core) in &ends {
                let c = core.expect("checked above");
                if let Some(other) = seen.insert(c, name) {
                    if other != name {
                        refusal = Some(format!("threads `{other}` and `{name}` would both spin on core {c}"));
                        break;
                    }
                }
            }
        }
        match refusal {
            None => {
                for (name, core) in ends {
                    claimed.insert(core.expect("checked above"), name);
                }
                waits.push(WaitStrategy::Spin);
            }
            Some(why) => {
                notices.push(format!(
                    "link into `{to_name}`: spin refused ({why}); two spinning threads on one core starve each other, so it spins for {} us and then parks",
                    crate::link::DEFAULT_HYBRID_SPIN.as_micros()
                ));
                waits.push(WaitStrategy::hybrid());
            }
        }
    }

    let mut links = Vec::with_capacity(n + 1);
    for k in 0..=n {
        let from = if k == 0 { "entrance".to_string() } else { specs[k - 1].name.clone() };
        let (to, capacity, consumers) = if k < n {
            (specs[k].name.clone(), specs[k].capacity, specs[k].replicas)
        } else {
            ("output".into(), b.output_capacity, 1)
        };
        let producers = if k == 0 { 1 } else { specs[k - 1].replicas };
        // A single-replica stage always sees its input in order (a reorder step puts it back in order
        // if needed), so it emits in order; a replicated stage never does. A single consumer after a
        // replicated producer therefore gets a reorder step; replicated consumers take frames in any
        // order anyway (oneTBB's parallel filters).
        let reorder = k > 0 && consumers == 1 && producers > 1;
        let ring = k > 0 && k < n && producers == 1 && consumers == 1 && waits[k].spins();
        links.push(LinkInfo { from, to, capacity, wait: waits[k], ring, reorder });
    }

    let default_in_flight = specs.iter().map(|s| s.replicas).sum::<usize>()
        + specs.iter().skip(1).map(|s| s.capacity).sum::<usize>()
        + b.output_capacity
        + 1;
    Ok(Plan { max_in_flight: b.max_in_flight.unwrap_or(default_in_flight), waits, links, notices })
}

/// What a stage reads from.
pub(crate) enum Upstream<T> {
    Entrance(Arc<Sequencer<T>>),
    Link { rx: LinkRx<Envelope<T>>, ordered: bool },
}

struct Fault {
    stage: String,
    seq: u64,
    message: String,
}

pub(crate) struct Wiring {
    specs: Vec<StageConfig>,
    waits: Vec<WaitStrategy>,
    output_capacity: usize,
    window: usize,
    deadline: Option<Duration>,
    metrics: Arc<Metrics>,
    ready_tx: crossbeam_channel::Sender<Result<(), BuildError>>,
    threads: Vec<(String, JoinHandle<()>)>,
    fault: Arc<Mutex<Option<Fault>>>,
    cancel: CancelToken,
    close_gate: Arc<dyn Fn() + Send + Sync>,
    spawned: usize,
    spawn_error: Option<BuildError>,
}

enum StageInput<T> {
    Entrance(Arc<Sequencer<T>>),
    Link { rx: LinkRx<Envelope<T>>, reorder: Option<Reorder<T>>, leftovers: Vec<Envelope<T>> },
}

impl<T> StageInput<T> {
    fn next(&mut self) -> Option<Envelope<T>> {
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
                        // Upstream ended with frames still held: a gap that the in-flight invariants rule
                        // out. Deliver them in order rather than lose them.
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

fn spawn_stage<I, S, F, E>(w: &mut Wiring, k: usize, factory: Arc<F>, up: Upstream<I>) -> Upstream<S::Out>
where
    I: Send + 'static,
    S: Stage<I> + 'static,
    F: Fn(&StageContext) -> Result<S, E> + Send + Sync + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    let spec = w.specs[k].clone();
    let n = spec.replicas;
    let last = k + 1 == w.specs.len();
    let (out_cap, next_replicas) =
        if last { (w.output_capacity, 1) } else { (w.specs[k + 1].capacity, w.specs[k + 1].replicas) };
    let out_wait = w.waits[k + 1];
    // The output link is always a channel: its reader is the caller's thread.
    let spsc = !last && n == 1 && next_replicas == 1;
    let (tx, rx) = link::<Envelope<S::Out>>(out_cap, out_wait, spsc);

    let mut inputs: Vec<StageInput<I>> = Vec::with_capacity(n);
    match up {
        Upstream::Entrance(seq) => {
            for _ in 0..n {
                inputs.push(StageInput::Entrance(seq.clone()));
            }
        }
        Upstream::Link { rx: in_rx, ordered } => {
            if n == 1 {
                let reorder = if ordered { None } else { Some(Reorder::new(w.window)) };
                inputs.push(StageInput::Link { rx: in_rx, reorder, leftovers: Vec::new() });
            } else {
                for _ in 1..n {
                    let rx = in_rx.try_clone().expect("a link into a replicated stage is a channel");
                    inputs.push(StageInput::Link { rx, reorder: None, leftovers: Vec::new() });
                }
                inputs.push(StageInput::Link { rx: in_rx, reorder: None, leftovers: Vec::new() });
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
            close_gate: w.close_gate.clone(),
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
    Upstream::Link { rx, ordered: n == 1 }
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
    close_gate: Arc<dyn Fn() + Send + Sync>,
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
        let Envelope { seq, stream, captured_at, mut stamps, stages, payload } = env;
        let enter = Instant::now();
        let enter_ns = enter.saturating_duration_since(captured_at).as_nanos() as u64;
        let prev_exit_ns = if stages == 0 { 0 } else { stamps[stages as usize - 1].exit_ns };
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
                                Err(Tombstone::Error { stage: name.clone(), error: Box::new(error) })
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
                                (job.close_gate)();
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
                st.wait.saturating_record(enter_ns.saturating_sub(prev_exit_ns).max(1));
                st.busy_ns += exit_ns - enter_ns;
            }
            st.processed += counted.0;
            st.errored += counted.1;
            st.skipped += counted.2;
            st.panicked += counted.3;
            st.aborted += counted.4;
        }
        let out = Envelope { seq, stream, captured_at, stamps, stages: (job.k + 1) as u8, payload: result };
        if tx.send(out).is_err() {
            break;
        }
    }
    if !poisoned {
        let _ = catch_unwind(AssertUnwindSafe(|| stage.on_stop()));
    }
}

fn run_source<S: Source>(mut source: S, ctx: SourceCtx<S::Item>) {
    let SourceCtx { input, metrics, config } = ctx;
    let input = input.with_stream(config.stream);
    setup_thread(&metrics, &config.name, &config.pin.for_replica(0), config.priority);
    let stats = metrics.source.as_ref().expect("a pipeline with a source has source metrics");
    source.on_start();
    let mut start = Instant::now();
    let mut n: u32 = 0;
    let jit = metrics.release == "just-in-time";
    let mut release = crate::flow::Release::new(&metrics.flow);
    while !input.is_closed() {
        if jit {
            release.wait(&metrics.flow, || input.is_closed());
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
        release.record_source(ns);
        match next {
            None => break,
            Some(Ok(item)) => {
                {
                    let mut st = stats.replica(0);
                    st.service.saturating_record(ns.max(1));
                    st.busy_ns += ns;
                    st.processed += 1;
                }
                if input.push_at(item, t1).is_err() {
                    break;
                }
            }
            Some(Err(e)) => {
                stats.replica(0).errored += 1;
                if input.push_error(Box::new(e), t1).is_err() {
                    break;
                }
            }
        }
        n = n.wrapping_add(1);
    }
    source.on_stop();
    input.gate.close();
}

/// A running pipeline: admit frames through [`input`](Pipeline::input) (or its own source), read
/// results in sequence order with [`recv`](Pipeline::recv), then [`close`](Pipeline::close).
///
/// Dropping a pipeline closes it: admission stops, the frames inside drain, and every thread is
/// joined (waiting at most [`DROP_GRACE`] before cancelling, and as long again before detaching).
pub struct Pipeline<In, Out = In> {
    gate: Arc<Gate<In>>,
    counters: Arc<EntranceCounters>,
    out_rx: Option<Receiver<Envelope<Out>>>,
    reorder: Option<Reorder<Out>>,
    tokens: Tokens,
    metrics: Arc<Metrics>,
    threads: Vec<(String, JoinHandle<()>)>,
    fault: Arc<Mutex<Option<Fault>>>,
    cancel: CancelToken,
    ended: bool,
    shut: bool,
    stage_names: Vec<String>,
    hop_baseline_us: Option<f64>,
}

impl<In: Send + 'static> Pipeline<In, In> {
    /// Starts describing a pipeline whose frames are of type `In`.
    pub fn builder() -> PipelineBuilder<In, In> {
        PipelineBuilder::new()
    }
}

/// Why [`Pipeline::recv_timeout`] returned without an output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// Nothing came out in time.
    #[error("no output within the timeout")]
    Timeout,
    /// The pipeline is closed and drained: no output will come.
    #[error("the pipeline has ended")]
    Ended,
}

impl<In, Out> Pipeline<In, Out> {
    /// A handle that admits frames. Every clone feeds the same entrance.
    pub fn input(&self) -> Input<In> {
        Input { gate: self.gate.clone(), stream: 0 }
    }

    /// The stages' names, in order.
    pub fn stage_names(&self) -> &[String] {
        &self.stage_names
    }

    /// The next output in sequence order, waiting for it. `None` once admission is closed and every
    /// admitted frame has come out.
    pub fn recv(&mut self) -> Option<Envelope<Out>> {
        loop {
            if let Some(e) = self.reorder.as_mut().and_then(|r| r.pop_ready()) {
                return Some(self.deliver(e));
            }
            let rx = self.out_rx.as_ref()?;
            match rx.recv() {
                Ok(e) => {
                    if let Some(e) = self.accept(e) {
                        return Some(self.deliver(e));
                    }
                }
                Err(_) => {
                    self.ended = true;
                    return None;
                }
            }
        }
    }

    /// Like [`recv`](Pipeline::recv), waiting at most `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Envelope<Out>, RecvError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.reorder.as_mut().and_then(|r| r.pop_ready()) {
                return Ok(self.deliver(e));
            }
            let rx = self.out_rx.as_ref().ok_or(RecvError::Ended)?;
            match rx.recv_deadline(deadline) {
                Ok(e) => {
                    if let Some(e) = self.accept(e) {
                        return Ok(self.deliver(e));
                    }
                }
                Err(RecvTimeoutError::Timeout) => return Err(RecvError::Timeout),
                Err(RecvTimeoutError::Disconnected) => {
                    self.ended = true;
                    return Err(RecvError::Ended);
                }
            }
        }
    }

    /// Iterates over the outputs in sequence order until the pipeline ends.
    pub fn iter(&mut self) -> impl Iterator<Item = Envelope<Out>> + '_ {
        std::iter::from_fn(move || self.recv())
    }

    /// Stops admission; the frames already admitted drain, and [`recv`](Pipeline::recv) returns
    /// `None` after the last of them. Never blocks.
    pub fn finish(&self) {
        self.gate.close();
    }

    /// Stops admission and fires the stages' [`CancelToken`]: stages that watch it return early (their
    /// frames come out as errors, in order); the others finish their frame. Never blocks.
    pub fn cancel(&self) {
        self.gate.close();
        self.cancel.cancel();
    }

    /// A snapshot of the counters and latencies so far.
    pub fn report(&self) -> Report {
        let mut r = self.metrics.report(&self.counters);
        r.hop_baseline_us = self.hop_baseline_us;
        r
    }

    /// A cloneable handle that takes snapshots from another thread.
    pub fn monitor(&self) -> Monitor {
        Monitor { metrics: self.metrics.clone(), counters: self.counters.clone() }
    }

    /// Records a bare-hop baseline (see [`measure_hop`](crate::measure_hop)) to be shown in reports.
    pub fn set_hop_baseline(&mut self, us: f64) {
        self.hop_baseline_us = Some(us);
    }

    /// Stops admission, drains every frame still inside in sequence order (they are counted, and
    /// dropped here; use [`finish`](Pipeline::finish) and [`recv`](Pipeline::recv) to see them), and
    /// joins every thread. Returns the final report, or the panic that stopped the pipeline.
    pub fn close(mut self) -> Result<Report, PipelineError> {
        self.shutdown(Duration::MAX)
    }

    /// Like [`close`](Pipeline::close), but if the frames have not drained within `grace`, fires the
    /// cancel token; if they still have not after another `grace`, leaves the remaining threads
    /// detached and returns [`PipelineError::Hung`] naming them.
    pub fn close_timeout(mut self, grace: Duration) -> Result<Report, PipelineError> {
        self.shutdown(grace)
    }

    fn accept(&mut self, e: Envelope<Out>) -> Option<Envelope<Out>> {
        if self.reorder.is_none() {
            if !self.needs_reorder() {
                return Some(e);
            }
            self.reorder = Some(Reorder::new(self.metrics.max_in_flight));
        }
        self.reorder.as_mut().and_then(|r| r.insert(e))
    }

    fn needs_reorder(&self) -> bool {
        self.metrics.links.last().is_some_and(|l| l.reorder)
    }

    fn deliver(&mut self, e: Envelope<Out>) -> Envelope<Out> {
        self.tokens.release();
        let now = Instant::now();
        let mut o = self.metrics.output();
        o.frames_out += 1;
        match &e.payload {
            Ok(_) => {
                o.processed += 1;
                let ns = now.saturating_duration_since(e.captured_at).as_nanos() as u64;
                o.e2e.saturating_record(ns.max(1));
            }
            Err(t) if t.is_skip() => o.skipped += 1,
            Err(_) => o.errored += 1,
        }
        match o.last_seq {
            Some(last) if e.seq < last => o.reordered += 1,
            _ => o.last_seq = Some(e.seq),
        }
        if o.first_capture.is_none() {
            o.first_capture = Some(e.captured_at);
        }
        o.last_out = Some(now);
        let stream = match o.streams.iter_mut().position(|s| s.id == e.stream) {
            Some(i) => &mut o.streams[i],
            None => {
                o.streams.push(StreamStats { id: e.stream, ..Default::default() });
                o.streams.last_mut().expect("just pushed")
            }
        };
        stream.frames_out += 1;
        match stream.last_seq {
            Some(last) if e.seq < last => stream.reordered += 1,
            _ => stream.last_seq = Some(e.seq),
        }
        e
    }

    fn shutdown(&mut self, grace: Duration) -> Result<Report, PipelineError> {
        if self.shut {
            return Ok(self.report());
        }
        self.shut = true;
        self.gate.close();
        let mut drained = self.drain_for(grace);
        if !drained {
            self.cancel.cancel();
            drained = self.drain_for(grace);
        }
        let mut hung = Vec::new();
        for (name, h) in self.threads.drain(..) {
            if drained || h.is_finished() {
                let _ = h.join();
            } else {
                hung.push(name);
            }
        }
        self.out_rx = None;
        let report = self.report();
        if !hung.is_empty() {
            return Err(PipelineError::Hung { threads: hung, report: Box::new(report) });
        }
        if let Some(f) = self.fault.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return Err(PipelineError::StagePanicked {
                stage: f.stage,
                seq: f.seq,
                message: f.message,
                report: Box::new(report),
            });
        }
        Ok(report)
    }

    /// Reads and discards outputs until the pipeline ends or `grace` passes; true if it ended.
    fn drain_for(&mut self, grace: Duration) -> bool {
        if grace == Duration::MAX {
            while self.recv().is_some() {}
            return true;
        }
        let deadline = Instant::now() + grace;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_timeout(left) {
                Ok(_) => {}
                Err(RecvError::Ended) => return true,
                Err(RecvError::Timeout) => return self.ended,
            }
        }
    }
}

impl<In, Out> Drop for Pipeline<In, Out> {
    fn drop(&mut self) {
        if !self.shut {
            let _ = self.shutdown(DROP_GRACE);
        }
    }
}

impl<In, Out> std::fmt::Debug for Pipeline<In, Out> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").field("stages", &self.stage_names).field("ended", &self.ended).finish()
    }
}

/// Takes [`Report`] snapshots of a running pipeline from any thread.
#[derive(Clone)]
pub struct Monitor {
    metrics: Arc<Metrics>,
    counters: Arc<EntranceCounters>,
}

impl Monitor {
    /// A snapshot of the counters and latencies so far.
    pub fn report(&self) -> Report {
        self.metrics.report(&self.counters)
    }
}
