//! Describing a pipeline: stage and source configurations, branches, the builder, and the plan it
//! makes of links, wait strategies and reorder steps before any thread starts.

use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::admission::{Admission, Entrance, Sequencer, Tokens};
use crate::affinity::{available_cores, Pin, Priority};
use crate::envelope::Envelope;
use crate::error::BuildError;
use crate::link::{link, LinkRx, WaitStrategy};
use crate::metrics::{BranchMetrics, LinkInfo, Metrics, StageMetrics};
use crate::pipeline::Pipeline;
use crate::source::{Pace, Source};
use crate::stage::{CancelToken, FnStage, Stage, StageContext};
use crate::wiring::{run_fork, run_join, run_source, spawn_stage, Joined, SourceCtx, StageInput, Upstream, Wiring};
use crate::{MAX_BRANCHES, MAX_STAGES};

/// How one stage is run: its name, replicas, pins, priority, and the link into it.
#[derive(Clone, Debug)]
pub struct StageConfig {
    pub(crate) name: String,
    pub(crate) replicas: usize,
    pub(crate) pin: Pin,
    pub(crate) priority: Priority,
    pub(crate) capacity: usize,
    pub(crate) wait: WaitStrategy,
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

    /// The capacity of the link into this stage (for the first stage: each stream's admission queue).
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

/// How one of the pipeline's own source threads runs.
#[derive(Clone, Debug)]
pub struct SourceConfig {
    pub(crate) name: String,
    pub(crate) pin: Pin,
    pub(crate) priority: Priority,
    pub(crate) pace: Pace,
    pub(crate) stream: u32,
}

impl SourceConfig {
    /// A source thread with this name, released just in time (see [`Pace`]), feeding stream 0.
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
    /// The stream the source feeds (one source per stream).
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

pub(crate) type Chain<In, Out> = Box<dyn FnOnce(&mut Wiring, Upstream<In>) -> Upstream<Out> + Send>;

/// What the builder has been told, in order.
#[derive(Clone, Debug)]
enum Node {
    Stage(StageConfig),
    FanOut(Vec<(String, Vec<StageConfig>)>),
}

/// One branch of a [`fan_out`](PipelineBuilder::fan_out): its own stages, replicas and pins, fed a
/// clone of every frame.
pub struct Branch<I, O = I> {
    name: String,
    specs: Vec<StageConfig>,
    chain: Chain<I, O>,
}

impl<I: Send + 'static> Branch<I, I> {
    /// An empty branch; give it at least one stage.
    pub fn new(name: impl Into<String>) -> Self {
        Branch { name: name.into(), specs: Vec::new(), chain: Box::new(|_, up| up) }
    }
}

impl<I: Send + 'static, O: Send + 'static> Branch<I, O> {
    /// Adds a stage to the branch (see [`PipelineBuilder::stage`]).
    pub fn stage<S, F, E>(mut self, config: impl Into<StageConfig>, factory: F) -> Branch<I, S::Out>
    where
        S: Stage<O> + 'static,
        F: Fn(&StageContext) -> Result<S, E> + Send + Sync + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        self.specs.push(config.into());
        let prev = self.chain;
        let factory = Arc::new(factory);
        let chain: Chain<I, S::Out> = Box::new(move |w: &mut Wiring, up: Upstream<I>| {
            let mid = prev(w, up);
            spawn_stage::<O, S, F, E>(w, factory, mid)
        });
        Branch { name: self.name, specs: self.specs, chain }
    }

    /// Adds a stage made from a closure; each replica gets a clone of it.
    pub fn stage_fn<P, E, F>(self, config: impl Into<StageConfig>, f: F) -> Branch<I, P>
    where
        P: Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
        F: FnMut(O) -> Result<P, E> + Clone + Send + Sync + 'static,
    {
        self.stage(config, move |_: &StageContext| Ok::<_, std::convert::Infallible>(FnStage(f.clone())))
    }

    /// The branch's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Builds a [`Pipeline`]: sources → stage → … (→ fan-out → branches → join) … → ordered output.
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
    streams: usize,
    sources: Vec<SourceSpec<In>>,
    nodes: Vec<Node>,
    chain: Chain<In, Out>,
    _out: PhantomData<fn() -> Out>,
}

impl<In: Send + 'static> PipelineBuilder<In, In> {
    pub(crate) fn new() -> Self {
        PipelineBuilder {
            admission: Admission::Block,
            output_capacity: 1,
            output_wait: WaitStrategy::Block,
            max_in_flight: None,
            deadline: None,
            streams: 1,
            sources: Vec::new(),
            nodes: Vec::new(),
            chain: Box::new(|_, up| up),
            _out: PhantomData,
        }
    }
}

impl<In: Send + 'static, Out: Send + 'static> PipelineBuilder<In, Out> {
    /// The admission policy at the entrance (default [`Admission::Block`]); each stream has its own
    /// admission queue under this policy.
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

    /// Declares `n` streams (cameras), each with its own admission queue, policy and drop counters
    /// (default 1; sources declare their streams too). The first stage takes frames from the streams
    /// round-robin, so that one fast camera cannot starve another; sequence numbers are global, so
    /// each stream's results come out in that stream's capture order.
    pub fn streams(mut self, n: usize) -> Self {
        self.streams = n;
        self
    }

    /// Runs `source` on its own thread to produce one stream's frames (see
    /// [`SourceConfig::stream`]). When it ends, that stream's admission closes; the pipeline drains
    /// and its output ends once every stream has closed. Sources paced [`Pace::JustInTime`] behind a
    /// blocking entrance share one release schedule and take the releases in round-robin turns.
    pub fn source<S>(mut self, config: SourceConfig, source: S) -> Self
    where
        S: Source<Item = In> + Send + 'static,
    {
        let run: SourceRunner<In> = Box::new(move |ctx| run_source(source, ctx));
        self.sources.push(SourceSpec { config, run });
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
        self.nodes.push(Node::Stage(config.into()));
        let prev = std::mem::replace(&mut self.chain, Box::new(|_, _| unreachable!("a spent chain")));
        let factory = Arc::new(factory);
        let chain: Chain<In, S::Out> = Box::new(move |w: &mut Wiring, up: Upstream<In>| {
            let mid = prev(w, up);
            spawn_stage::<Out, S, F, E>(w, factory, mid)
        });
        self.with_chain(chain)
    }

    /// Adds a stage made from a closure; each replica gets a clone of it.
    pub fn stage_fn<O, E, F>(self, config: impl Into<StageConfig>, f: F) -> PipelineBuilder<In, O>
    where
        O: Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
        F: FnMut(Out) -> Result<O, E> + Clone + Send + Sync + 'static,
    {
        self.stage(config, move |_: &StageContext| Ok::<_, std::convert::Infallible>(FnStage(f.clone())))
    }

    /// Sends a clone of every frame down each branch in parallel, and joins the branches' results
    /// by sequence number into one [`Joined`] per frame, in order. A branch that fails or skips a
    /// frame gives that branch's error in the frame's result; the other branches' results still
    /// come out. A frame that was already a tombstone before the fan-out comes out as that
    /// tombstone. Clone the payload cheaply (an `Arc`, a pooled buffer's handle).
    pub fn fan_out<O>(mut self, branches: Vec<Branch<Out, O>>) -> PipelineBuilder<In, Joined<O>>
    where
        Out: Clone,
        O: Send + 'static,
    {
        self.nodes.push(Node::FanOut(branches.iter().map(|b| (b.name.clone(), b.specs.clone())).collect()));
        let prev = std::mem::replace(&mut self.chain, Box::new(|_, _| unreachable!("a spent chain")));
        let chain: Chain<In, Joined<O>> = Box::new(move |w: &mut Wiring, up: Upstream<In>| {
            let mid = prev(w, up);
            let f = w.next_fork;
            w.next_fork += 1;
            let plan = w.forks[f].clone();
            let input = match mid {
                Upstream::Entrance(seq) => StageInput::Entrance(seq),
                Upstream::Link(rx) => StageInput::link(rx, plan.reorder.then_some(w.window)),
            };
            let mut txs = Vec::with_capacity(branches.len());
            let mut ups = Vec::with_capacity(branches.len());
            for &(capacity, wait) in &plan.branch_links {
                let (tx, rx) = link::<Envelope<Out>>(capacity, wait, false);
                txs.push(tx);
                ups.push(Upstream::Link(rx));
            }
            w.spawn_node(&plan.name, move |metrics| run_fork(metrics, input, txs));
            let mut outs: Vec<LinkRx<Envelope<O>>> = Vec::with_capacity(branches.len());
            for (branch, up) in branches.into_iter().zip(ups) {
                match (branch.chain)(w, up) {
                    Upstream::Link(rx) => outs.push(rx),
                    Upstream::Entrance(_) => unreachable!("branches have at least one stage (checked by plan)"),
                }
            }
            let j = w.next_join;
            w.next_join += 1;
            let plan = w.joins[j].clone();
            let (tx, rx) = link::<Envelope<Joined<O>>>(plan.out_capacity, plan.out_wait, false);
            let window = w.window;
            let branch_base = plan.branch_metrics;
            w.spawn_node(&plan.name, move |metrics| run_join(metrics, outs, tx, window, branch_base));
            Upstream::Link(rx)
        });
        self.with_chain(chain)
    }

    fn with_chain<O>(self, chain: Chain<In, O>) -> PipelineBuilder<In, O> {
        PipelineBuilder {
            admission: self.admission,
            output_capacity: self.output_capacity,
            output_wait: self.output_wait,
            max_in_flight: self.max_in_flight,
            deadline: self.deadline,
            streams: self.streams,
            sources: self.sources,
            nodes: self.nodes,
            chain,
            _out: PhantomData,
        }
    }

    /// Starts every thread and returns the running pipeline, once every stage replica has been built
    /// and has run its `on_start` hook.
    pub fn build(self) -> Result<Pipeline<In, Out>, BuildError> {
        let source_streams: Vec<u32> = self.sources.iter().map(|s| s.config.stream).collect();
        let streams = self.streams.max(source_streams.iter().map(|s| *s as usize + 1).max().unwrap_or(0));
        let plan = plan(&self, streams)?;
        let max_in_flight = plan.max_in_flight;
        let entrance = Entrance::<In>::new(self.admission, plan.entrance_capacity, streams);
        let gates = entrance.gates.clone();
        let counters = entrance.counters();
        let tokens = Tokens::new(max_in_flight);
        let sequencer = Arc::new(Sequencer::new(&entrance, tokens.clone(), plan.entrance_wait));
        drop(entrance);

        let source_metrics: Vec<StageMetrics> = self
            .sources
            .iter()
            .map(|s| StageMetrics::new(s.config.name.as_str().into(), 1, vec![s.config.pin.for_replica(0)], true, None))
            .collect();
        let stage_metrics: Vec<StageMetrics> = plan
            .stages
            .iter()
            .map(|p| {
                let s = &p.spec;
                StageMetrics::new(
                    s.name.as_str().into(),
                    s.replicas,
                    (0..s.replicas).map(|r| s.pin.for_replica(r)).collect(),
                    false,
                    p.branch.clone(),
                )
            })
            .collect();
        let branch_metrics: Vec<BranchMetrics> = plan.branches.clone();
        // Just-in-time release needs a blocking entrance (a policy that drops frames is for sources
        // that cannot wait) and sources that can wait for their turn (not paced by a camera).
        let jit = !self.sources.is_empty()
            && self.admission == Admission::Block
            && self.sources.iter().all(|s| s.config.pace == Pace::JustInTime);
        let mut notices = plan.notices.clone();
        let release = match self.sources.as_slice() {
            [] => "input",
            _ if jit => "just-in-time",
            many => {
                if many.len() > 1 && many.iter().any(|s| s.config.pace == Pace::JustInTime) {
                    notices.push(format!(
                        "just-in-time release needs every source unpaced and a blocking entrance: the {} sources run free, served round-robin at the entrance",
                        many.len()
                    ));
                }
                if many.iter().all(|s| matches!(s.config.pace, Pace::Period(_))) {
                    "paced"
                } else {
                    "free"
                }
            }
        };
        let flow = crate::flow::Flow::new(
            plan.stages.iter().map(|p| (p.spec.replicas, p.preds.clone(), p.extra_hops)).collect(),
            self.sources.len(),
        );
        let metrics = Arc::new(Metrics::new(
            self.admission,
            max_in_flight,
            source_metrics,
            stage_metrics,
            branch_metrics,
            plan.links.clone(),
            notices,
            release,
            flow,
        ));

        let (ready_tx, ready_rx) = crossbeam_channel::unbounded();
        let fault = Arc::new(Mutex::new(None));
        let cancel = CancelToken::new();
        let closer: Arc<dyn Fn() + Send + Sync> = {
            let gates = gates.clone();
            Arc::new(move || gates.iter().for_each(|g| g.close()))
        };
        let mut wiring = Wiring {
            plans: plan.stages.clone(),
            forks: plan.forks.clone(),
            joins: plan.joins.clone(),
            next_k: 0,
            next_fork: 0,
            next_join: 0,
            window: max_in_flight,
            deadline: self.deadline,
            metrics: metrics.clone(),
            ready_tx,
            threads: Vec::new(),
            fault: fault.clone(),
            cancel: cancel.clone(),
            close_gates: closer,
            spawned: 0,
            spawn_error: None,
        };
        let out = (self.chain)(&mut wiring, Upstream::Entrance(sequencer));
        let out_rx = match out {
            Upstream::Link(LinkRx::Chan(rx, _)) => rx,
            _ => unreachable!("the last node's output is always a channel link"),
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
        let names = plan.stages.iter().map(|p| p.spec.name.clone()).collect();
        let mut pipeline = Pipeline::new(
            gates,
            counters,
            out_rx,
            tokens,
            metrics,
            std::mem::take(&mut wiring.threads),
            fault,
            cancel,
            names,
            plan.links.last().is_some_and(|l| l.reorder),
        );
        if let Some(e) = failure {
            let _ = pipeline.shutdown(crate::pipeline::DROP_GRACE);
            return Err(e);
        }
        for src in self.sources {
            let name = src.config.name.clone();
            let Some(input) = pipeline.input_for(src.config.stream) else {
                unreachable!("streams cover every source's stream");
            };
            let index = pipeline.source_index(&name);
            let ctx = SourceCtx { input, metrics: pipeline.metrics().clone(), config: src.config, index };
            let run = src.run;
            match std::thread::Builder::new().name(name.clone()).spawn(move || run(ctx)) {
                Ok(h) => pipeline.push_thread(name, h),
                Err(error) => {
                    let _ = pipeline.shutdown(crate::pipeline::DROP_GRACE);
                    return Err(BuildError::Spawn { stage: name, error });
                }
            }
        }
        Ok(pipeline)
    }
}

/// How one stage's links are set up, decided before any thread starts.
#[derive(Clone, Debug)]
pub(crate) struct StagePlan {
    pub(crate) spec: StageConfig,
    pub(crate) branch: Option<String>,
    /// A reorder step in front of the stage.
    pub(crate) reorder: bool,
    pub(crate) out_capacity: usize,
    pub(crate) out_wait: WaitStrategy,
    /// The output link has one sending and one receiving thread.
    pub(crate) out_spsc: bool,
    /// The stages a frame leaves just before this one, for just-in-time release.
    pub(crate) preds: Vec<usize>,
    pub(crate) extra_hops: u64,
}

#[derive(Clone, Debug)]
pub(crate) struct ForkPlan {
    pub(crate) name: String,
    pub(crate) reorder: bool,
    /// Per branch: the capacity and wait strategy of the link into its first stage.
    pub(crate) branch_links: Vec<(usize, WaitStrategy)>,
}

#[derive(Clone, Debug)]
pub(crate) struct JoinPlan {
    pub(crate) name: String,
    pub(crate) out_capacity: usize,
    pub(crate) out_wait: WaitStrategy,
    /// Index of this join's first branch in the metrics' branch list.
    pub(crate) branch_metrics: usize,
}

struct Plan {
    max_in_flight: usize,
    entrance_capacity: usize,
    entrance_wait: WaitStrategy,
    stages: Vec<StagePlan>,
    forks: Vec<ForkPlan>,
    joins: Vec<JoinPlan>,
    branches: Vec<BranchMetrics>,
    links: Vec<LinkInfo>,
    notices: Vec<String>,
}

impl Clone for BranchMetrics {
    fn clone(&self) -> Self {
        BranchMetrics::new(self.name.clone(), self.stages.clone(), self.last_stage)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum End {
    Entrance,
    Stage(usize),
    Fork(usize),
    Join(usize),
    Output,
}

struct LinkDraft {
    from: End,
    to: End,
    capacity: usize,
    asked: WaitStrategy,
}

/// Checks the configuration and decides each link's kind, wait strategy and reorder step.
fn plan<In, Out>(b: &PipelineBuilder<In, Out>, streams: usize) -> Result<Plan, BuildError> {
    if b.nodes.is_empty() {
        return Err(BuildError::NoStages);
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
    let mut source_streams = HashSet::new();
    for s in &b.sources {
        if s.config.name.is_empty() || !names.insert(s.config.name.clone()) {
            return Err(BuildError::BadName(s.config.name.clone()));
        }
        if !source_streams.insert(s.config.stream) {
            return Err(BuildError::SharedStream(s.config.stream));
        }
        check_pin(&s.config.name, &s.config.pin, 1)?;
        check_priority(&s.config.name, s.config.priority)?;
    }
    if streams == 0 {
        return Err(BuildError::NoStreams);
    }

    // Walk the topology: number the stages, draft the links.
    let mut stages: Vec<StagePlan> = Vec::new();
    let mut forks: Vec<ForkPlan> = Vec::new();
    let mut joins: Vec<JoinPlan> = Vec::new();
    let mut branches: Vec<BranchMetrics> = Vec::new();
    let mut drafts: Vec<LinkDraft> = Vec::new();
    // The stages a frame has just left at each end, and the hops (fork/join threads) in between.
    let mut preds_at: HashMap<End, (Vec<usize>, u64)> = HashMap::new();
    preds_at.insert(End::Entrance, (vec![], 0));
    let mut prev = End::Entrance;
    let new_stage = |spec: &StageConfig, branch: Option<String>, stages: &mut Vec<StagePlan>| -> usize {
        stages.push(StagePlan {
            spec: spec.clone(),
            branch,
            reorder: false,
            out_capacity: 1,
            out_wait: WaitStrategy::Block,
            out_spsc: false,
            preds: vec![],
            extra_hops: 0,
        });
        stages.len() - 1
    };
    for node in &b.nodes {
        match node {
            Node::Stage(spec) => {
                let k = new_stage(spec, None, &mut stages);
                drafts.push(LinkDraft { from: prev, to: End::Stage(k), capacity: spec.capacity, asked: spec.wait });
                let (p, extra) = preds_at[&prev].clone();
                stages[k].preds = p;
                stages[k].extra_hops = extra;
                preds_at.insert(End::Stage(k), (vec![k], 0));
                prev = End::Stage(k);
            }
            Node::FanOut(bs) => {
                if bs.is_empty() || bs.len() > MAX_BRANCHES {
                    return Err(BuildError::BranchCount(bs.len()));
                }
                let f = forks.len();
                let j = joins.len();
                let fork = End::Fork(f);
                let name = |kind: &str, i: usize| if i == 0 { kind.to_string() } else { format!("{kind}#{i}") };
                drafts.push(LinkDraft { from: prev, to: fork, capacity: 1, asked: WaitStrategy::Block });
                let (p, extra) = preds_at[&prev].clone();
                preds_at.insert(fork, (p, extra + 1));
                let mut fork_plan = ForkPlan { name: name("fork", f), reorder: false, branch_links: vec![] };
                let mut join_preds = Vec::new();
                let branch_base = branches.len();
                for (bname, specs) in bs {
                    if specs.is_empty() {
                        return Err(BuildError::EmptyBranch(bname.clone()));
                    }
                    let mut bprev = fork;
                    let mut bstages = Vec::new();
                    for spec in specs {
                        let k = new_stage(spec, Some(bname.clone()), &mut stages);
                        if bprev == fork {
                            fork_plan.branch_links.push((spec.capacity, spec.wait));
                        }
                        drafts.push(LinkDraft {
                            from: bprev,
                            to: End::Stage(k),
                            capacity: spec.capacity,
                            asked: spec.wait,
                        });
                        let (p, extra) = preds_at[&bprev].clone();
                        stages[k].preds = p;
                        stages[k].extra_hops = extra;
                        preds_at.insert(End::Stage(k), (vec![k], 0));
                        bprev = End::Stage(k);
                        bstages.push(spec.name.clone());
                    }
                    let last = stages.len() - 1;
                    join_preds.push(last);
                    drafts.push(LinkDraft { from: bprev, to: End::Join(j), capacity: 1, asked: WaitStrategy::Block });
                    branches.push(BranchMetrics::new(bname.clone(), bstages, last));
                }
                forks.push(fork_plan);
                joins.push(JoinPlan {
                    name: name("join", j),
                    out_capacity: 1,
                    out_wait: WaitStrategy::Block,
                    branch_metrics: branch_base,
                });
                preds_at.insert(End::Join(j), (join_preds, 1));
                prev = End::Join(j);
            }
        }
    }
    drafts.push(LinkDraft { from: prev, to: End::Output, capacity: b.output_capacity, asked: b.output_wait });

    if stages.len() > MAX_STAGES {
        return Err(BuildError::TooManyStages(stages.len()));
    }
    for p in &stages {
        let s = &p.spec;
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

    // Threads at each end, with their single core if pinned to exactly one; `None`: a thread the
    // runtime does not pin (fork, join, the caller's).
    let threads_of = |end: End| -> Vec<(String, Option<usize>)> {
        match end {
            End::Stage(k) => {
                let s = &stages[k].spec;
                (0..s.replicas)
                    .map(|r| {
                        let name = if s.replicas == 1 { s.name.clone() } else { format!("{}#{r}", s.name) };
                        let core = match s.pin.for_replica(r).as_slice() {
                            [c] => Some(*c),
                            _ => None,
                        };
                        (name, core)
                    })
                    .collect()
            }
            End::Fork(f) => vec![(forks[f].name.clone(), None)],
            End::Join(j) => vec![(joins[j].name.clone(), None)],
            End::Output => vec![("the caller's output thread".to_string(), None)],
            // Pushers at the entrance never spin.
            End::Entrance => vec![],
        }
    };
    let count = |end: End| match end {
        End::Stage(k) => stages[k].spec.replicas,
        _ => 1,
    };
    let end_name = |end: End| match end {
        End::Entrance => "entrance".to_string(),
        End::Stage(k) => stages[k].spec.name.clone(),
        End::Fork(f) => forks[f].name.clone(),
        End::Join(j) => joins[j].name.clone(),
        End::Output => "output".to_string(),
    };

    let mut notices = Vec::new();
    let mut claimed: HashMap<usize, String> = HashMap::new();
    let mut links = Vec::with_capacity(drafts.len());
    let mut waits = Vec::with_capacity(drafts.len());
    let mut decisions = Vec::with_capacity(drafts.len());
    for d in &drafts {
        let wait = if d.asked != WaitStrategy::Spin {
            d.asked
        } else {
            let ends: Vec<(String, Option<usize>)> = threads_of(d.from).into_iter().chain(threads_of(d.to)).collect();
            let mut refusal = None;
            let mut seen: HashMap<usize, &String> = HashMap::new();
            for (name, core) in &ends {
                match core {
                    None => {
                        refusal = Some(format!("thread `{name}` is not pinned to exactly one core"));
                        break;
                    }
                    Some(c) => {
                        let other =
                            claimed.get(c).filter(|o| *o != name).or(seen.get(c).copied().filter(|o| *o != name));
                        if let Some(other) = other {
                            refusal = Some(format!("threads `{other}` and `{name}` would both spin on core {c}"));
                            break;
                        }
                        seen.insert(*c, name);
                    }
                }
            }
            match refusal {
                None => {
                    for (name, core) in ends {
                        claimed.insert(core.expect("checked above"), name);
                    }
                    WaitStrategy::Spin
                }
                Some(why) => {
                    notices.push(format!(
                        "link into `{}`: spin refused ({why}); two spinning threads on one core starve each other, so it spins for {} us and then parks",
                        end_name(d.to),
                        crate::link::DEFAULT_HYBRID_SPIN.as_micros()
                    ));
                    WaitStrategy::hybrid()
                }
            }
        };
        let (producers, consumers) = (count(d.from), count(d.to));
        // A single-replica consumer always sees its input in order (a reorder step puts it back in
        // order if needed); a replicated producer never emits in order. Joins reorder by themselves.
        let reorder = consumers == 1 && producers > 1 && !matches!(d.to, End::Join(_));
        let both_stages = matches!(d.from, End::Stage(_)) && matches!(d.to, End::Stage(_));
        let ring = both_stages && producers == 1 && consumers == 1 && wait.spins();
        links.push(LinkInfo { from: end_name(d.from), to: end_name(d.to), capacity: d.capacity, wait, ring, reorder });
        waits.push(wait);
        decisions.push((reorder, ring));
    }
    for (i, d) in drafts.iter().enumerate() {
        let (reorder, ring) = decisions[i];
        match d.to {
            End::Stage(k) => stages[k].reorder = reorder,
            End::Fork(f) => forks[f].reorder = reorder,
            _ => {}
        }
        match d.from {
            End::Stage(k) => {
                stages[k].out_capacity = d.capacity;
                stages[k].out_wait = waits[i];
                stages[k].out_spsc = ring;
            }
            End::Join(j) => {
                joins[j].out_capacity = d.capacity;
                joins[j].out_wait = waits[i];
            }
            _ => {}
        }
    }
    // The fork's links into its branches take the (possibly downgraded) waits decided above, in
    // branch order (the drafts out of a fork are in branch order).
    let mut next_branch = vec![0usize; forks.len()];
    for (i, d) in drafts.iter().enumerate() {
        if let End::Fork(f) = d.from {
            forks[f].branch_links[next_branch[f]] = (d.capacity, waits[i]);
            next_branch[f] += 1;
        }
    }

    let entrance_capacity = drafts[0].capacity;
    let entrance_wait = waits[0];
    let default_in_flight = stages.iter().map(|p| p.spec.replicas).sum::<usize>()
        + drafts.iter().skip(1).map(|d| d.capacity).sum::<usize>()
        + forks.len()
        + joins.len()
        + 1;
    Ok(Plan {
        max_in_flight: b.max_in_flight.unwrap_or(default_in_flight),
        entrance_capacity,
        entrance_wait,
        stages,
        forks,
        joins,
        branches,
        links,
        notices,
    })
}
