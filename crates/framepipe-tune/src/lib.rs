//! framepipe's tuner, the planning half: from each stage's measured service time, choose replicas,
//! pins, threads per inference session and queue capacities for the cores (and GPU) given.
//!
//! It knows nothing of models, images or engines, and measures nothing: `framepipe-app`'s `tune`
//! module calibrates a detection pipeline on frames and calls [`plan`]; the GPU harness
//! (`framepipe-cuda`'s `gpu` example) calibrates its device-resident stages and calls it too.
//!
//! The choice is [`plan`], a pure function of the measured service times, the cores and the
//! engine's device, so that it can be tested with hand-built numbers.
//!
//! # The model
//!
//! Per frame, stage `s` (decode, pre, infer, post) takes `S_s` of one thread (`S_infer` depends on
//! the threads per session, `t`, when measured at several counts). With `r_s` replicas:
//!
//! * the stage bound is `λ0 = min(1 / S_decode, r_pre / S_pre, r_infer / S_infer(t), r_post / S_post)`
//!   (the source has one thread; a GPU engine's infer bound is `min(r, gpu_parallelism) / S_infer`:
//!   replicas beyond what the GPU overlaps only queue on it; with a measured speedup curve
//!   ([`TuneInput::gpu_speedup`]) it is `speedup(r) / S_infer`, and each run is stretched to
//!   `S_infer · r / speedup(r)` since the runs share the device);
//! * the CPU work per frame is `W = S_decode + S_pre + S_post + t · S_infer(t)` (a GPU engine's
//!   infer counts `gpu_host_share · S_infer`: its thread mostly waits for the device);
//! * on `C` cores, if `λ0 · W ≤ C` the plan runs at `λ = λ0`; else the cores are shared, every
//!   thread is stretched by `σ = λ0 · W / C` and `λ = C / W` (processor sharing);
//! * the latency is `σ · (S_pre + S_infer(t) + S_post)` plus the hops (the source's time is not
//!   part of it, as in the bench's serial mode).
//!
//! A plan is acceptable when its latency is at most the serial sum (`S_pre + S_infer + S_post` at the
//! fewest threads measured) times `1 + latency_slack`, no stage has more threads than cores, and
//! the busy threads (each stage's load `λ·σ·S_s` rounded to whole threads, at most its replicas,
//! times its session threads; a GPU engine's inference threads count 0) do not outnumber the
//! cores. Of
//! the acceptable plans, [`plan`] takes the highest throughput; among those within 2% of it, the
//! lowest latency, then the fewest threads.
//!
//! Pins: stages that keep at least half a core busy get their own cores (from the highest core
//! down); the light stages share the rest. When the busy stages need every core, nothing is pinned
//! and the OS fits the light stages in. Queues hold 1 frame (a longer queue only adds waiting), and
//! `max_in_flight` is the sum of the replicas: one frame per replica. Links block (no spinning: a
//! spinning link needs two dedicated cores, which a tuned plan spends on replicas).

use std::fmt;

use serde::Serialize;

/// Default latency a plan may add over the serial sum: 10%.
pub const DEFAULT_LATENCY_SLACK: f64 = 0.10;
/// How many inference runs a GPU overlaps, by default (separate CUDA streams per thread).
pub const DEFAULT_GPU_PARALLELISM: f64 = 2.0;
/// Share of a core a GPU engine's inference thread uses while its run is on the device, by default.
pub const DEFAULT_GPU_HOST_SHARE: f64 = 0.1;
/// What one queue hop adds to the latency, in µs (the runtime's blocking hop is a few µs to tens).
const HOP_US: f64 = 30.0;
/// Plans within this fraction of the best throughput count as equally fast.
const NEAR_BEST: f64 = 0.02;

/// Why a plan cannot be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TuneError {
    /// No cores were given.
    #[error("tune: no cores to plan for (the OS reported none available to this process)")]
    NoCores,
    /// A service time is not a positive, finite number.
    #[error("tune: the service time of `{stage}` is {value} µs; expected a positive, finite number")]
    BadServiceTime {
        /// The stage.
        stage: String,
        /// The value given.
        value: f64,
    },
    /// No inference time was measured.
    #[error("tune: no inference service time was measured")]
    NoInferTimes,
    /// An option is out of range.
    #[error("tune: {name} = {value}: {reason}")]
    BadOption {
        /// The option.
        name: &'static str,
        /// Its value.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Nothing to calibrate on.
    #[error("tune: {0} has no frames to calibrate on")]
    NoFrames(String),
}

/// Where inference runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// On the CPU: every inference thread takes a core while it runs.
    Cpu,
    /// On a GPU: inference threads mostly wait for the device.
    Gpu,
}

/// Inference service time at one thread count.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct InferTime {
    /// Threads per session.
    pub threads: usize,
    /// Median service time, µs.
    pub us: f64,
}

/// Measured median service times, µs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceTimes {
    /// Reading and decoding one frame on the source thread (0: the source is paced by a camera and
    /// was not measured).
    pub decode_us: f64,
    /// Preprocessing.
    pub pre_us: f64,
    /// Inference, by threads per session (at least one entry).
    pub infer_us: Vec<InferTime>,
    /// Postprocessing.
    pub post_us: f64,
    /// Frames measured (per thread count).
    pub frames: usize,
}

/// What [`plan`] plans for.
#[derive(Clone, Debug, PartialEq)]
pub struct TuneInput {
    /// The measured service times.
    pub service: ServiceTimes,
    /// The cores available (ids, as `framepipe::available_cores` reports them).
    pub cores: Vec<usize>,
    /// Where inference runs.
    pub device: Device,
    /// Latency a plan may add over the serial sum, as a fraction (default 0.10).
    pub latency_slack: f64,
    /// Inference runs a GPU overlaps (default 2).
    pub gpu_parallelism: f64,
    /// Share of a core a GPU inference thread uses (default 0.1).
    pub gpu_host_share: f64,
    /// Measured GPU scaling: `(replicas, throughput of that many concurrent inference replicas
    /// relative to one)`, e.g. `[(2, 1.6), (4, 2.4), (8, 3.1)]`. When given, it replaces
    /// `gpu_parallelism`: the infer bound is `speedup(r) / S_infer` (interpolated between the
    /// points, flat past the last; 1 at one replica), each replica's run is stretched to
    /// `S_infer · r / speedup(r)` (the runs share the device), and no more replicas are planned
    /// than were measured. Empty by default.
    pub gpu_speedup: Vec<(usize, f64)>,
}

impl TuneInput {
    /// Defaults for the options: 10% latency slack, a GPU overlapping 2 runs.
    pub fn new(service: ServiceTimes, cores: Vec<usize>, device: Device) -> Self {
        TuneInput {
            service,
            cores,
            device,
            latency_slack: DEFAULT_LATENCY_SLACK,
            gpu_parallelism: DEFAULT_GPU_PARALLELISM,
            gpu_host_share: DEFAULT_GPU_HOST_SHARE,
            gpu_speedup: Vec::new(),
        }
    }
}

/// The plan [`plan`] chose, with its predictions and reasons.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    /// Replicas per stage.
    pub replicas: Replicas,
    /// Threads per inference session.
    pub threads: usize,
    /// Core lists per stage (empty: not pinned).
    pub pins: Pins,
    /// Capacity of every queue.
    pub queue: usize,
    /// Cap on frames in flight: the sum of the replicas.
    pub max_in_flight: usize,
    /// Predicted throughput, frames/s.
    pub predicted_fps: f64,
    /// Predicted capture → result latency, µs.
    pub predicted_latency_us: f64,
    /// The serial sum (pre + infer + post at the fewest threads measured), µs.
    pub serial_latency_us: f64,
    /// The serial path's throughput, 1 / (decode + pre + infer + post), frames/s.
    pub serial_fps: f64,
    /// What bounds the predicted throughput: `decode`, `pre`, `infer`, `post`, `cpu` (the cores are
    /// shared) or `gpu`.
    pub bound: String,
    /// The slowest stage of the serial path.
    pub bottleneck: String,
    /// Busy threads: each stage's load rounded to whole threads (times its session threads).
    pub busy_threads: usize,
    /// Cores the plan keeps busy on average (`λ · σ · W`).
    pub cpu_load: f64,
    /// The cores planned for.
    pub cores: usize,
    /// Why, one sentence each.
    pub reasons: Vec<String>,
}

#[derive(Clone, Copy, Debug)]
struct Candidate {
    pre: usize,
    infer: usize,
    post: usize,
    threads: usize,
    infer_us: f64,
}

#[derive(Clone, Copy, Debug)]
struct Eval {
    fps: f64,
    latency_us: f64,
    stretch: f64,
    bound: &'static str,
    busy: usize,
    load: f64,
    max_stage_threads: usize,
    total_threads: usize,
    // Utilisation (busy replicas' worth) of decode, pre, infer, post.
    util: [f64; 4],
}

fn check_time(stage: &str, v: f64, zero_ok: bool) -> Result<(), TuneError> {
    if v.is_finite() && (v > 0.0 || (zero_ok && v == 0.0)) {
        Ok(())
    } else {
        Err(TuneError::BadServiceTime { stage: stage.into(), value: v })
    }
}

fn evaluate(input: &TuneInput, c: Candidate) -> Eval {
    let s = &input.service;
    let cores = input.cores.len() as f64;
    let gpu = input.device == Device::Gpu;
    let (d, p, q, i) = (s.decode_us / 1e6, s.pre_us / 1e6, s.post_us / 1e6, c.infer_us / 1e6);
    // A GPU runs at most `gpu_parallelism` inferences at once; more replicas wait on it. A
    // measured speedup curve says how much the device overlaps instead.
    let (infer_rate, infer_eff) = if gpu && !input.gpu_speedup.is_empty() {
        let sp = speedup_at(&input.gpu_speedup, c.infer);
        (sp / i, i * (c.infer as f64 / sp).max(1.0))
    } else if gpu {
        let overlap = (c.infer as f64).min(input.gpu_parallelism.max(1.0));
        (overlap / i, i * (c.infer as f64 / overlap).max(1.0))
    } else {
        (c.infer as f64 / i, i)
    };
    let mut bounds = vec![("pre", c.pre as f64 / p), ("infer", infer_rate), ("post", c.post as f64 / q)];
    if d > 0.0 {
        bounds.push(("decode", 1.0 / d));
    }
    let (mut bound, lambda0) =
        bounds.iter().copied().fold(("infer", f64::INFINITY), |acc, (n, b)| if b < acc.1 { (n, b) } else { acc });
    let overlap =
        if input.gpu_speedup.is_empty() { input.gpu_parallelism } else { speedup_at(&input.gpu_speedup, c.infer) };
    if gpu && bound == "infer" && c.infer as f64 > overlap * 1.05 {
        bound = "gpu";
    }
    let infer_cpu = if gpu { input.gpu_host_share * i } else { c.threads as f64 * i };
    let work = d + p + q + infer_cpu;
    let (fps, stretch) = if lambda0 * work <= cores {
        (lambda0, 1.0)
    } else {
        bound = "cpu";
        (cores / work, lambda0 * work / cores)
    };
    let hops = 3.0;
    let latency_us = if gpu {
        stretch * (p + q) * 1e6 + infer_eff * 1e6 + hops * HOP_US
    } else {
        stretch * (p + i + q) * 1e6 + hops * HOP_US
    };
    let util = [fps * stretch * d, fps * stretch * p, fps * stretch * i, fps * stretch * q];
    // A stage's load in threads, rounded to whole threads (at most its replicas), times its
    // session's threads: spreading a load over more replicas does not make it lighter.
    let busy_of = |u: f64, r: usize, threads: usize| threads * r.min(u.round() as usize);
    // A GPU engine's inference threads wait on the device.
    let infer_busy = if gpu { 0 } else { busy_of(util[2], c.infer, c.threads) };
    let busy = busy_of(util[0], 1, 1) + busy_of(util[1], c.pre, 1) + infer_busy + busy_of(util[3], c.post, 1);
    let infer_threads = if gpu { c.infer } else { c.infer * c.threads };
    Eval {
        fps,
        latency_us,
        stretch,
        bound,
        busy,
        load: fps * stretch * work,
        max_stage_threads: c.pre.max(c.post).max(if gpu { 0 } else { infer_threads }),
        total_threads: 1 + c.pre + c.post + c.infer * c.threads,
        util,
    }
}

/// The measured speedup at `r` replicas: 1 at one, linear between the points, flat past the last.
fn speedup_at(points: &[(usize, f64)], r: usize) -> f64 {
    let mut prev = (1usize, 1.0f64);
    for &(n, sp) in points {
        if n <= prev.0 {
            continue;
        }
        if r <= n {
            let f = (r.saturating_sub(prev.0)) as f64 / (n - prev.0) as f64;
            return prev.1 + f * (sp - prev.1);
        }
        prev = (n, sp);
    }
    prev.1
}

fn describe(c: &Candidate) -> String {
    format!("pre x{}, infer x{} ({} thread{} each), post x{}", c.pre, c.infer, c.threads, plural(c.threads), c.post)
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn ms(us: f64) -> String {
    if us < 1e3 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.1} ms", us / 1e3)
    }
}

/// Chooses replicas, threads per inference session, pins and queues (see the module docs for the
/// model). Pure: the same input always gives the same plan.
pub fn plan(input: &TuneInput) -> Result<Plan, TuneError> {
    let s = &input.service;
    if input.cores.is_empty() {
        return Err(TuneError::NoCores);
    }
    check_time("decode", s.decode_us, true)?;
    check_time("pre", s.pre_us, false)?;
    check_time("post", s.post_us, false)?;
    if s.infer_us.is_empty() {
        return Err(TuneError::NoInferTimes);
    }
    for t in &s.infer_us {
        check_time(&format!("infer ({} threads)", t.threads), t.us, false)?;
        if t.threads == 0 {
            return Err(TuneError::BadOption {
                name: "infer threads",
                value: "0".into(),
                reason: "a session runs at least 1 thread",
            });
        }
    }
    if !(input.latency_slack.is_finite() && input.latency_slack >= 0.0) {
        return Err(TuneError::BadOption {
            name: "latency_slack",
            value: input.latency_slack.to_string(),
            reason: "expected a fraction ≥ 0",
        });
    }
    if !(input.gpu_parallelism.is_finite() && input.gpu_parallelism >= 1.0) {
        return Err(TuneError::BadOption {
            name: "gpu_parallelism",
            value: input.gpu_parallelism.to_string(),
            reason: "expected ≥ 1",
        });
    }
    if !(input.gpu_host_share.is_finite() && (0.0..=1.0).contains(&input.gpu_host_share)) {
        return Err(TuneError::BadOption {
            name: "gpu_host_share",
            value: input.gpu_host_share.to_string(),
            reason: "expected a fraction in 0..=1",
        });
    }
    for &(n, sp) in &input.gpu_speedup {
        if n == 0 || !(sp.is_finite() && sp > 0.0) {
            return Err(TuneError::BadOption {
                name: "gpu_speedup",
                value: format!("({n}, {sp})"),
                reason: "expected (replicas ≥ 1, a positive speedup)",
            });
        }
    }
    let mut speedup = input.gpu_speedup.clone();
    speedup.sort_by_key(|p| p.0);
    let input = &TuneInput { gpu_speedup: speedup, ..input.clone() };
    let cores = input.cores.len();
    let gpu = input.device == Device::Gpu;
    let mut infer_times = s.infer_us.clone();
    infer_times.sort_by_key(|t| t.threads);
    infer_times.dedup_by_key(|t| t.threads);
    // A GPU session's thread count does not matter: keep the fewest.
    if gpu {
        infer_times.truncate(1);
    }
    let base = infer_times[0];
    let serial_latency_us = s.pre_us + base.us + s.post_us;
    let serial_fps = 1e6 / (s.decode_us + serial_latency_us);
    let limit = serial_latency_us * (1.0 + input.latency_slack) + 3.0 * HOP_US;

    let max_infer = match input.gpu_speedup.last() {
        Some(&(n, _)) if gpu => n.min(64),
        _ if gpu => cores.max(input.gpu_parallelism.ceil() as usize + 2).min(64),
        _ => cores,
    };
    let mut all = Vec::new();
    for t in &infer_times {
        if !gpu && t.threads > cores {
            continue;
        }
        for infer in 1..=max_infer {
            for pre in 1..=cores {
                for post in 1..=cores {
                    let c = Candidate { pre, infer, post, threads: t.threads, infer_us: t.us };
                    all.push((c, evaluate(input, c)));
                }
            }
        }
    }
    let acceptable = |e: &Eval| e.latency_us <= limit && e.max_stage_threads <= cores && e.busy <= cores;
    let feasible: Vec<&(Candidate, Eval)> = all.iter().filter(|(_, e)| acceptable(e)).collect();
    let pool: Vec<&(Candidate, Eval)> = if feasible.is_empty() { all.iter().collect() } else { feasible };
    let best_fps = pool.iter().map(|(_, e)| e.fps).fold(0.0, f64::max);
    let (chosen, eval) = **pool
        .iter()
        .filter(|(_, e)| e.fps >= best_fps * (1.0 - NEAR_BEST))
        .min_by(|(ca, a), (cb, b)| {
            // Latency compared at 0.1% resolution, so that float noise does not beat fewer threads.
            let la = (a.latency_us / serial_latency_us * 1000.0).round();
            let lb = (b.latency_us / serial_latency_us * 1000.0).round();
            la.total_cmp(&lb)
                .then(a.total_threads.cmp(&b.total_threads))
                .then(ca.threads.cmp(&cb.threads))
                .then((ca.infer, ca.pre, ca.post).cmp(&(cb.infer, cb.pre, cb.post)))
        })
        .expect("at least one candidate");

    // Pins: stages keeping at least half a core busy get their own cores, from the top down.
    let names = ["decode", "pre", "infer", "post"];
    let replicas = [1, chosen.pre, chosen.infer, chosen.post];
    let mut need = [0usize; 4];
    for k in 0..4 {
        let u = eval.util[k];
        if k == 2 && gpu {
            continue;
        }
        if u >= 0.5 {
            let per = if k == 2 { chosen.threads } else { 1 };
            need[k] = ((u - 0.05).ceil() as usize).clamp(1, replicas[k]) * per;
        }
    }
    let light = (0..4).any(|k| need[k] == 0);
    let dedicated: usize = need.iter().sum();
    let mut pins = Pins::default();
    let pin_note;
    if dedicated > 0 && dedicated + usize::from(light) <= cores {
        let mut top = input.cores.clone();
        let mut lists: [Vec<usize>; 4] = Default::default();
        // Inference first (the highest cores), then post, pre, decode.
        for k in [2, 3, 1, 0] {
            for _ in 0..need[k] {
                lists[k].push(top.pop().expect("enough cores counted"));
            }
            lists[k].sort_unstable();
        }
        for k in 0..4 {
            if need[k] == 0 {
                lists[k] = top.clone();
            }
        }
        let shared: Vec<&str> = (0..4).filter(|&k| need[k] == 0).map(|k| names[k]).collect();
        pin_note = format!(
            "pins: {} get their own cores; {} share core{} {:?}",
            (0..4)
                .filter(|&k| need[k] > 0)
                .map(|k| format!("{} {:?}", names[k], lists[k]))
                .collect::<Vec<_>>()
                .join(", "),
            if shared.is_empty() { "no light stage".to_string() } else { shared.join(", ") },
            plural(top.len()),
            top
        );
        let [d, p, i, q] = lists;
        pins = Pins { decode: d, pre: p, infer: i, post: q };
    } else if dedicated == 0 {
        pin_note = "pins: none (no stage keeps half a core busy; the OS places the threads)".to_string();
    } else {
        pin_note = format!(
            "pins: none (the busy stages need {dedicated} of {cores} cores, so the light stages must share with them; the OS balances better than fixed pins)"
        );
    }

    let slowest = [("pre", s.pre_us), ("infer", base.us), ("post", s.post_us), ("decode", s.decode_us)]
        .into_iter()
        .fold(("pre", 0.0), |acc, x| if x.1 > acc.1 { x } else { acc });
    let mut reasons = Vec::new();
    let infer_list = infer_times
        .iter()
        .map(|t| format!("{} at {} thread{}", ms(t.us), t.threads, plural(t.threads)))
        .collect::<Vec<_>>();
    reasons.push(format!(
        "measured (median of {} frames): decode {}, pre {}, infer {}, post {}",
        s.frames,
        ms(s.decode_us),
        ms(s.pre_us),
        infer_list.join(" / "),
        ms(s.post_us)
    ));
    reasons.push(format!(
        "serial: {} per frame (pre+infer+post), {:.2} fps; bottleneck `{}` ({})",
        ms(serial_latency_us),
        serial_fps,
        slowest.0,
        ms(slowest.1)
    ));
    reasons.push(format!(
        "resources: {cores} core{} {:?}, inference on the {}",
        plural(cores),
        input.cores,
        if gpu { "GPU (its replicas do not take a core each)" } else { "CPU" }
    ));
    reasons.push(format!(
        "chosen: {} -> predicted {:.2} fps ({:.2}x serial), latency {} ({:+.1}% vs serial), bound by {}",
        describe(&chosen),
        eval.fps,
        eval.fps / serial_fps,
        ms(eval.latency_us),
        100.0 * (eval.latency_us / serial_latency_us - 1.0),
        match eval.bound {
            "cpu" => format!("the {cores} cores (every thread stretched x{:.2})", eval.stretch),
            "gpu" if input.gpu_speedup.is_empty() => format!("the GPU ({} overlapping runs)", input.gpu_parallelism),
            "gpu" => format!(
                "the GPU (x{:.2} the throughput of one replica with {}, measured)",
                speedup_at(&input.gpu_speedup, chosen.infer),
                chosen.infer
            ),
            b => format!("`{b}`"),
        }
    ));
    reasons.push(format!(
        "threads: {} busy of {cores} cores, {:.2} cores of work on average; {} thread{} per inference session",
        eval.busy,
        eval.load,
        chosen.threads,
        plural(chosen.threads)
    ));
    // What one more replica of the bound stage would have done, and the fastest rejected plan.
    let more = Candidate {
        infer: chosen.infer + usize::from(matches!(eval.bound, "infer" | "cpu" | "gpu")),
        pre: chosen.pre + usize::from(eval.bound == "pre"),
        post: chosen.post + usize::from(eval.bound == "post"),
        ..chosen
    };
    if (more.pre, more.infer, more.post) != (chosen.pre, chosen.infer, chosen.post) {
        let m = evaluate(input, more);
        let why = if !acceptable(&m) {
            if m.latency_us > limit {
                format!("latency {} exceeds serial + {:.0}%", ms(m.latency_us), 100.0 * input.latency_slack)
            } else {
                format!("{} busy threads on {cores} cores", m.busy)
            }
        } else {
            format!("{:.2} fps, no real gain", m.fps)
        };
        reasons.push(format!("not {}: {why}", describe(&more)));
    } else if eval.bound == "decode" {
        reasons.push("more replicas add nothing: the source (decode, one thread) is the bound".into());
    }
    if let Some((c, e)) = all
        .iter()
        .filter(|(_, e)| !acceptable(e) && e.fps > eval.fps * (1.0 + NEAR_BEST))
        .max_by(|a, b| a.1.fps.total_cmp(&b.1.fps))
    {
        reasons.push(format!(
            "rejected the faster {}: {:.2} fps but latency {} ({:+.1}%), {} busy threads",
            describe(c),
            e.fps,
            ms(e.latency_us),
            100.0 * (e.latency_us / serial_latency_us - 1.0),
            e.busy
        ));
    }
    // The best acceptable plan at each other thread count: a trade the user may prefer.
    for t in infer_times.iter().filter(|t| t.threads != chosen.threads) {
        let best = all.iter().filter(|(c, e)| c.threads == t.threads && acceptable(e)).min_by(|a, b| {
            b.1.fps
                .total_cmp(&a.1.fps)
                .then(a.1.latency_us.total_cmp(&b.1.latency_us))
                .then(a.1.total_threads.cmp(&b.1.total_threads))
        });
        if let Some((c, e)) = best {
            reasons.push(format!(
                "with {} threads per session the best is {}: {:.2} fps at {} ({:+.1}% vs serial)",
                t.threads,
                describe(c),
                e.fps,
                ms(e.latency_us),
                100.0 * (e.latency_us / serial_latency_us - 1.0)
            ));
        }
    }
    reasons.push(pin_note);
    let max_in_flight = chosen.pre + chosen.infer + chosen.post;
    reasons.push(format!(
        "queues: capacity 1 (longer queues only add waiting); max_in_flight {max_in_flight} (one frame per replica); links block (no spare cores to spin on)"
    ));
    if input.cores.len() > 1 && infer_times.len() == 1 && !gpu {
        reasons.push(format!("threads per session: only {} measured", base.threads));
    }
    Ok(Plan {
        replicas: Replicas { pre: chosen.pre, infer: chosen.infer, post: chosen.post },
        threads: chosen.threads,
        pins,
        queue: 1,
        max_in_flight,
        predicted_fps: eval.fps,
        predicted_latency_us: eval.latency_us,
        serial_latency_us,
        serial_fps,
        bound: eval.bound.to_string(),
        bottleneck: slowest.0.to_string(),
        busy_threads: eval.busy,
        cpu_load: eval.load,
        cores,
        reasons,
    })
}

/// Why a `--replicas` or `--pin` value was refused: the flag (or field) and the cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{flag}: {reason}")]
pub struct ParseError {
    /// The flag or field.
    pub flag: String,
    /// What is wrong with its value.
    pub reason: String,
}

impl ParseError {
    fn new(flag: &str, reason: impl Into<String>) -> Self {
        ParseError { flag: flag.into(), reason: reason.into() }
    }
}

/// Replicas per stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Replicas {
    /// Preprocessing replicas.
    pub pre: usize,
    /// Inference replicas.
    pub infer: usize,
    /// Postprocessing replicas.
    pub post: usize,
}

impl Default for Replicas {
    fn default() -> Self {
        Replicas { pre: 1, infer: 1, post: 1 }
    }
}

/// Core lists per stage (empty: not pinned).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Pins {
    /// The source (decode or capture) thread.
    pub decode: Vec<usize>,
    /// Preprocessing.
    pub pre: Vec<usize>,
    /// Inference.
    pub infer: Vec<usize>,
    /// Postprocessing.
    pub post: Vec<usize>,
}

impl fmt::Display for Pins {
    /// `decode=0,infer=1+2`, as `--pin` takes it; `none` when nothing is pinned.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> =
            [("decode", &self.decode), ("pre", &self.pre), ("infer", &self.infer), ("post", &self.post)]
                .iter()
                .filter(|(_, l)| !l.is_empty())
                .map(|(n, l)| format!("{n}={}", l.iter().map(|c| c.to_string()).collect::<Vec<_>>().join("+")))
                .collect();
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join(","))
        }
    }
}

fn parse_pairs<'a>(flag: &str, s: &'a str) -> Result<Vec<(&'a str, &'a str)>, ParseError> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| ParseError::new(flag, format!("`{p}`: expected stage=value")))
        })
        .collect()
}

impl std::str::FromStr for Replicas {
    type Err = ParseError;
    /// `infer=N[,pre=N,post=N]`; stages not named keep 1.
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let mut r = Replicas::default();
        for (k, v) in parse_pairs("--replicas", s)? {
            let n: usize = v.parse().map_err(|_| ParseError::new("--replicas", format!("{k}={v}: not a number")))?;
            if n == 0 {
                return Err(ParseError::new("--replicas", format!("{k}=0: every stage needs at least 1 replica")));
            }
            match k {
                "pre" => r.pre = n,
                "infer" => r.infer = n,
                "post" => r.post = n,
                other => {
                    return Err(ParseError::new("--replicas", format!("unknown stage `{other}` (pre, infer, post)")))
                }
            }
        }
        Ok(r)
    }
}

fn parse_cores(flag: &str, stage: &str, v: &str) -> Result<Vec<usize>, ParseError> {
    let bad = || ParseError::new(flag, format!("{stage}={v}: expected a core, a range a-b, or cores joined by +"));
    let mut out = Vec::new();
    for part in v.split('+') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    Ok(out)
}

impl std::str::FromStr for Pins {
    type Err = ParseError;
    /// `pre=0,infer=1,post=1` (also `infer=2-5` or `infer=1+3`, and `decode=N`).
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let mut p = Pins::default();
        for (k, v) in parse_pairs("--pin", s)? {
            let cores = parse_cores("--pin", k, v)?;
            match k {
                "decode" | "source" => p.decode = cores,
                "pre" => p.pre = cores,
                "infer" => p.infer = cores,
                "post" => p.post = cores,
                other => {
                    return Err(ParseError::new("--pin", format!("unknown stage `{other}` (decode, pre, infer, post)")))
                }
            }
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times(decode: f64, pre: f64, infer: &[(usize, f64)], post: f64) -> ServiceTimes {
        ServiceTimes {
            decode_us: decode * 1e3,
            pre_us: pre * 1e3,
            infer_us: infer.iter().map(|&(threads, ms)| InferTime { threads, us: ms * 1e3 }).collect(),
            post_us: post * 1e3,
            frames: 6,
        }
    }

    fn cores(n: usize) -> Vec<usize> {
        (0..n).collect()
    }

    fn r(p: &Plan) -> (usize, usize, usize, usize) {
        (p.replicas.pre, p.replicas.infer, p.replicas.post, p.threads)
    }

    #[test]
    fn two_cores_keep_one_inference_replica_when_a_second_would_stretch_latency() {
        // pre 2 + infer 20 + post 1 = 23 ms of work per frame. A second infer replica would ask for
        // 2.3 cores of 2: every thread stretched x1.15, +15% latency: over the 10% allowed.
        let input = TuneInput::new(times(0.0, 2.0, &[(1, 20.0)], 1.0), cores(2), Device::Cpu);
        let p = plan(&input).unwrap();
        assert_eq!(r(&p), (1, 1, 1, 1));
        assert!((p.predicted_fps - 50.0).abs() < 0.01, "{}", p.predicted_fps);
        assert_eq!(p.bound, "infer");
        // Inference gets core 1 to itself; the light stages share core 0.
        assert_eq!(p.pins.infer, vec![1]);
        assert_eq!((p.pins.pre.clone(), p.pins.post.clone(), p.pins.decode.clone()), (vec![0], vec![0], vec![0]));
        assert_eq!((p.queue, p.max_in_flight), (1, 3));
        assert!(
            p.reasons.iter().any(|r| r.starts_with("not pre x1, infer x2") && r.contains("latency")),
            "{:?}",
            p.reasons
        );
        // With a 20% allowance the second replica is taken: 2 cores / 23 ms = 86.96 fps.
        let p = plan(&TuneInput { latency_slack: 0.2, ..input }).unwrap();
        assert_eq!(r(&p), (1, 2, 1, 1));
        assert!((p.predicted_fps - 2e3 / 23.0).abs() < 0.01, "{}", p.predicted_fps);
        assert_eq!(p.bound, "cpu");
        // Both cores busy with inference: nothing is pinned.
        assert_eq!(p.pins, Pins::default());
    }

    #[test]
    fn two_cores_and_a_heavy_model_take_two_inference_replicas_unpinned() {
        // The bench's case: inference is 96% of the work, so 2 replicas on 2 cores stretch
        // every thread by only 4%.
        let p = plan(&TuneInput::new(times(5.0, 4.0, &[(1, 300.0)], 1.0), cores(2), Device::Cpu)).unwrap();
        assert_eq!(r(&p), (1, 2, 1, 1));
        assert_eq!(p.bound, "cpu");
        assert!((p.predicted_fps - 2e3 / 310.0).abs() < 0.01, "{}", p.predicted_fps);
        assert!(p.predicted_latency_us < 1.05 * p.serial_latency_us);
        assert_eq!(p.busy_threads, 2);
        assert_eq!(p.pins, Pins::default());
        assert_eq!(p.max_in_flight, 4);
    }

    #[test]
    fn sixteen_cores_replicate_inference_and_then_pre() {
        let p = plan(&TuneInput::new(times(1.0, 2.0, &[(1, 20.0)], 1.0), cores(16), Device::Cpu)).unwrap();
        // 13 infer replicas (650 fps) need 2 pre replicas (one does 500 fps): decode 0.65 + pre 1.3
        // + infer 13 + post 0.65 threads of load = 16 busy threads. A 14th replica would make 17.
        assert_eq!(r(&p), (2, 13, 1, 1), "{:?}", p.reasons);
        assert!((p.predicted_fps - 650.0).abs() < 0.01, "{}", p.predicted_fps);
        assert_eq!(p.busy_threads, 16);
        assert_eq!(p.bound, "infer");
        assert!((p.predicted_latency_us - 23_090.0).abs() < 1.0, "{}", p.predicted_latency_us);
        assert!(
            p.reasons.iter().any(|r| r.starts_with("not pre x2, infer x14") && r.contains("17 busy threads")),
            "{:?}",
            p.reasons
        );
        // Their loads round up to 17 cores of 16: no room for dedicated cores, nothing pinned.
        assert_eq!(p.pins, Pins::default());
        assert_eq!(p.max_in_flight, 16);
        // 8 cores: 7 replicas ask for 8.4 cores of work (every thread stretched x1.05, +5% latency)
        // for 333 fps; 6 would give 300 fps. pre (0.7) and infer (7) keep 8 cores busy and the
        // light decode and post would have no core of their own: nothing pinned.
        let p = plan(&TuneInput::new(times(1.0, 2.0, &[(1, 20.0)], 1.0), cores(8), Device::Cpu)).unwrap();
        assert_eq!(r(&p), (1, 7, 1, 1), "{:?}", p.reasons);
        assert!((p.predicted_fps - 8e3 / 24.0).abs() < 0.01, "{}", p.predicted_fps);
        assert_eq!((p.bound.as_str(), p.busy_threads), ("cpu", 8));
        assert_eq!(p.pins, Pins::default());
    }

    #[test]
    fn a_gpu_engine_replicates_inference_without_spending_cores() {
        let t = times(2.0, 3.0, &[(1, 8.0)], 1.0);
        let gpu = plan(&TuneInput::new(t.clone(), cores(2), Device::Gpu)).unwrap();
        // Two replicas overlap on the GPU: 250 fps, and the CPU work is decode + pre + post.
        assert_eq!(r(&gpu), (1, 2, 1, 1), "{:?}", gpu.reasons);
        assert!((gpu.predicted_fps - 250.0).abs() < 0.01, "{}", gpu.predicted_fps);
        assert!(gpu.reasons.iter().any(|r| r.contains("GPU")));
        // A third replica would only queue on the GPU.
        assert!(gpu.reasons.iter().any(|r| r.starts_with("not pre x1, infer x3")), "{:?}", gpu.reasons);
        // The same times on the CPU: the second replica would oversubscribe the 2 cores.
        let cpu = plan(&TuneInput::new(t, cores(2), Device::Cpu)).unwrap();
        assert_eq!(r(&cpu), (1, 1, 1, 1));
        assert!((cpu.predicted_fps - 125.0).abs() < 0.01);
    }

    #[test]
    fn a_measured_gpu_speedup_curve_trades_replicas_for_latency_only_when_allowed() {
        // A device-resident YOLOv8n on an H200: pre 0.13 ms, infer 1.85 ms, post 0.03 ms; 8
        // concurrent replicas give 3.1x the throughput of one, each run stretched 8/3.1.
        let mut input = TuneInput::new(times(0.0, 0.13, &[(1, 1.85)], 0.03), cores(16), Device::Gpu);
        input.gpu_speedup = vec![(8, 3.1), (2, 1.6), (4, 2.4)];
        // No added latency allowed: a second replica stretches each run to 1.85 * 2 / 1.6 ms.
        let p = plan(&input).unwrap();
        assert_eq!(r(&p).1, 1, "{:?}", p.reasons);
        assert!((p.predicted_fps - 1e3 / 1.85).abs() < 0.5, "{}", p.predicted_fps);
        assert!(
            p.reasons.iter().any(|r| r.starts_with("not pre x1, infer x2") && r.contains("latency")),
            "{:?}",
            p.reasons
        );
        // Three times the serial latency allowed: the curve's best point, never past what was measured.
        let p = plan(&TuneInput { latency_slack: 2.0, ..input.clone() }).unwrap();
        assert_eq!(p.replicas.infer, 8, "{:?}", p.reasons);
        assert!((p.predicted_fps - 3.1e3 / 1.85).abs() < 1.0, "{}", p.predicted_fps);
        assert_eq!(p.bound, "gpu");
        assert!(
            p.reasons.iter().any(|r| r.contains("x3.10 the throughput of one replica with 8, measured")),
            "{:?}",
            p.reasons
        );
        // Between the points the curve is interpolated: 6 replicas are worth 1 + ... = 2.75x.
        assert!((speedup_at(&[(2, 1.6), (4, 2.4), (8, 3.1)], 6) - 2.75).abs() < 1e-9);
        assert!((speedup_at(&[(2, 1.6)], 1) - 1.0).abs() < 1e-9);
        assert!((speedup_at(&[(2, 1.6)], 5) - 1.6).abs() < 1e-9, "flat past the last point");
        // A bad point is refused by name.
        let e = plan(&TuneInput { gpu_speedup: vec![(0, 1.0)], ..input }).unwrap_err();
        assert!(e.to_string().contains("gpu_speedup"), "{e}");
    }

    #[test]
    fn replicas_add_nothing_when_the_source_is_the_bound() {
        // Decoding (one thread) at 10 ms caps the pipeline at 100 fps; infer at 5 ms already does 200.
        let p = plan(&TuneInput::new(times(10.0, 2.0, &[(1, 5.0)], 1.0), cores(8), Device::Cpu)).unwrap();
        assert_eq!(r(&p), (1, 1, 1, 1));
        assert_eq!(p.bound, "decode");
        assert!((p.predicted_fps - 100.0).abs() < 0.01);
        assert!(p.reasons.iter().any(|r| r.contains("source")), "{:?}", p.reasons);
        // Decode keeps a core busy and infer half of one: each gets its own (infer the top one);
        // pre and post share the rest.
        assert_eq!((p.pins.infer.clone(), p.pins.decode.clone()), (vec![7], vec![6]));
        assert_eq!(p.pins.pre, (0..6).collect::<Vec<_>>());
        assert_eq!(p.pins.post, p.pins.pre);
    }

    #[test]
    fn threads_per_session_win_when_they_halve_the_time() {
        // Two threads per session halve inference: one replica matches two replicas' throughput at
        // half the latency.
        let p = plan(&TuneInput::new(times(1.0, 1.0, &[(1, 40.0), (2, 20.0)], 1.0), cores(2), Device::Cpu)).unwrap();
        assert_eq!(r(&p), (1, 1, 1, 2), "{:?}", p.reasons);
        assert!(p.predicted_latency_us < 0.7 * p.serial_latency_us);
        // When threads barely help (40 -> 35 ms), replicas win.
        let p = plan(&TuneInput::new(times(1.0, 1.0, &[(1, 40.0), (2, 35.0)], 1.0), cores(2), Device::Cpu)).unwrap();
        assert_eq!(r(&p), (1, 2, 1, 1), "{:?}", p.reasons);
        // The lower-latency alternative is named.
        assert!(
            p.reasons
                .iter()
                .any(|r| r.starts_with("with 2 threads per session the best is pre x1, infer x1 (2 threads each)")),
            "{:?}",
            p.reasons
        );
    }

    #[test]
    fn bad_input_is_refused_by_name() {
        let ok = times(1.0, 2.0, &[(1, 20.0)], 1.0);
        assert_eq!(plan(&TuneInput::new(ok.clone(), vec![], Device::Cpu)), Err(TuneError::NoCores));
        let mut t = ok.clone();
        t.pre_us = f64::NAN;
        let e = plan(&TuneInput::new(t, cores(2), Device::Cpu)).unwrap_err().to_string();
        assert!(e.contains("`pre`"), "{e}");
        let mut t = ok.clone();
        t.infer_us.clear();
        assert_eq!(plan(&TuneInput::new(t, cores(2), Device::Cpu)), Err(TuneError::NoInferTimes));
        let mut t = ok.clone();
        t.decode_us = -1.0;
        assert!(plan(&TuneInput::new(t, cores(2), Device::Cpu)).unwrap_err().to_string().contains("decode"));
        let e = plan(&TuneInput { latency_slack: -0.5, ..TuneInput::new(ok, cores(2), Device::Cpu) }).unwrap_err();
        assert!(e.to_string().contains("latency_slack"));
    }
}
