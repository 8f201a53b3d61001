//! A synthetic pipeline: stages that hold their thread for a given service time, to measure what the
//! runtime itself costs and how close it comes to its bound.
//!
//! ```text
//! cargo run --release -p framepipe --example synthetic -- \
//!     --stages pre=2ms,infer=6msx3,post=1ms --frames 500 [--jitter 0.3] [--seed 7] \
//!     [--admission block|drop-oldest|keep-latest] [--source-fps 120] [--wait block|spin|hybrid] \
//!     [--work wait|spin] [--json PATH|-]
//! ```
//!
//! `--work wait` sleeps, then spins the last ~50 µs, so a stage occupies no core, like one that waits
//! on a GPU; `--work spin` burns a core the whole time. The JSON is the runtime's [`Report`] plus
//! `hop_baseline_us`, measured before the pipeline starts with the same link kind.

use std::convert::Infallible;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use framepipe::{
    available_cores, measure_hop, Admission, IterSource, Pace, Pipeline, Report, SourceConfig, Stage, StageConfig,
    StageContext, WaitStrategy,
};
use rand::{Rng, SeedableRng};

#[derive(Parser, Debug)]
#[command(about = "Measure the framepipe runtime on synthetic stages")]
struct Args {
    /// Stages as name=TIME[xREPLICAS], comma-separated; TIME in ms or us (e.g. pre=2ms,infer=6msx3).
    #[arg(long, default_value = "pre=2ms,infer=6msx3,post=1ms")]
    stages: String,
    /// Frames to push through.
    #[arg(long, default_value_t = 500)]
    frames: u64,
    /// Draw each service time uniformly within ±jitter (0.3 = ±30%).
    #[arg(long, default_value_t = 0.0)]
    jitter: f64,
    /// Seed for the jitter.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Admission policy at the entrance.
    #[arg(long, default_value = "block")]
    admission: Admission,
    /// Pace the source at this rate (default: as fast as admission allows).
    #[arg(long)]
    source_fps: Option<f64>,
    /// Release frames as fast as admission accepts them instead of just in time (queues fill and
    /// latency grows; for comparison).
    #[arg(long)]
    greedy: bool,
    /// How threads wait on every link.
    #[arg(long, default_value = "block")]
    wait: WaitStrategy,
    /// How a stage holds its thread for its service time.
    #[arg(long, value_enum, default_value_t = Work::Wait)]
    work: Work,
    /// Cap on live frames (default: the runtime's).
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// Write the JSON report here (`-` for stdout).
    #[arg(long)]
    json: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Work {
    /// Sleep, then spin the last ~50 µs: occupies no core.
    Wait,
    /// Burn a core the whole time.
    Spin,
}

#[derive(Clone, Debug)]
struct Spec {
    name: String,
    service: Duration,
    replicas: usize,
}

fn parse_time(s: &str) -> Result<Duration> {
    let (num, unit) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        bail!("service time `{s}` needs a unit: ms, us or s");
    };
    let v: f64 = num.parse().with_context(|| format!("service time `{s}` is not a number"))?;
    if !(v.is_finite() && v >= 0.0) {
        bail!("service time `{s}` must be finite and not negative");
    }
    Ok(Duration::from_secs_f64(v * unit))
}

fn parse_stages(s: &str) -> Result<Vec<Spec>> {
    let mut out = Vec::new();
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let (name, rest) = part.split_once('=').with_context(|| format!("stage `{part}`: expected name=TIME[xN]"))?;
        let (time, replicas) = match rest.split_once('x') {
            Some((t, n)) => {
                (t, n.parse::<usize>().with_context(|| format!("stage `{part}`: bad replica count `{n}`"))?)
            }
            None => (rest, 1),
        };
        out.push(Spec { name: name.trim().to_string(), service: parse_time(time.trim())?, replicas });
    }
    if out.is_empty() {
        bail!("--stages is empty");
    }
    Ok(out)
}

/// Holds its thread for its service time (with jitter), then passes the frame on.
struct Synthetic {
    service: Duration,
    jitter: f64,
    work: Work,
    rng: rand::rngs::StdRng,
}

impl Stage<u64> for Synthetic {
    type Out = u64;
    type Error = Infallible;
    fn process(&mut self, x: u64) -> Result<u64, Infallible> {
        let f = if self.jitter > 0.0 { 1.0 + self.rng.random_range(-self.jitter..=self.jitter) } else { 1.0 };
        let t = self.service.mul_f64(f.max(0.0));
        let end = Instant::now() + t;
        if self.work == Work::Wait && t > Duration::from_micros(120) {
            std::thread::sleep(t - Duration::from_micros(120));
        }
        while Instant::now() < end {
            std::hint::spin_loop();
        }
        Ok(x)
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let specs = parse_stages(&args.stages)?;
    if !(0.0..1.0).contains(&args.jitter) {
        bail!("--jitter must be in [0, 1)");
    }

    // The bare-hop baseline, with the link kind a 1->1 link of this wait strategy gets.
    let gap = if args.wait == WaitStrategy::Block { Duration::from_micros(400) } else { Duration::from_micros(50) };
    let hop = measure_hop(args.wait, 2000, gap);

    let pace = match (args.source_fps, args.greedy) {
        (Some(fps), _) => Pace::fps(fps),
        (None, true) => Pace::Free,
        (None, false) => Pace::JustInTime,
    };
    let mut builder = Pipeline::<u64>::builder()
        .admission(args.admission)
        .source(SourceConfig::new("source").pace(pace), IterSource(0..args.frames))
        .output_wait(if args.wait == WaitStrategy::Spin { WaitStrategy::hybrid() } else { args.wait });
    if let Some(m) = args.max_in_flight {
        builder = builder.max_in_flight(m);
    }
    // Every stage maps u64 to u64, so the chain can be built in a loop.
    for (k, spec) in specs.iter().enumerate() {
        let (service, jitter, work, seed) = (spec.service, args.jitter, args.work, args.seed);
        builder = builder.stage(
            StageConfig::new(spec.name.clone()).replicas(spec.replicas).wait(args.wait),
            move |ctx: &StageContext| {
                let seed = seed ^ ((k as u64) << 32) ^ ctx.replica as u64;
                Ok::<_, Infallible>(Synthetic { service, jitter, work, rng: rand::rngs::StdRng::seed_from_u64(seed) })
            },
        );
    }
    let mut pipeline = builder.build().context("building the pipeline")?;
    pipeline.set_hop_baseline(hop.p50_us);

    let mut expected = 0u64;
    let mut out_of_order = 0u64;
    while let Some(out) = pipeline.recv() {
        if out.seq() != expected {
            out_of_order += 1;
        }
        expected = out.seq() + 1;
    }
    let mut report = pipeline.close().context("closing the pipeline")?;
    if out_of_order != 0 {
        eprintln!("error: {out_of_order} outputs out of sequence order");
    }
    // With --work spin the stages also share the cores: the bound is at most cores / sum of times.
    if args.work == Work::Spin {
        let sum: f64 = specs.iter().map(|s| s.service.as_secs_f64()).sum();
        let cores = available_cores().len() as f64;
        report.bound_fps = report.bound_fps.min(cores / sum);
        report.efficiency = if report.bound_fps > 0.0 { report.throughput_fps / report.bound_fps } else { 0.0 };
    }

    print_summary(&report, &hop, &args);
    if let Some(path) = &args.json {
        let json = report.to_json();
        if path == "-" {
            println!("{json}");
        } else {
            std::fs::File::create(path)
                .and_then(|mut f| f.write_all(json.as_bytes()))
                .with_context(|| format!("writing {path}"))?;
        }
    }
    if out_of_order != 0 || report.lost != 0 {
        bail!("order or count broken: {out_of_order} out of order, {} lost", report.lost);
    }
    Ok(())
}

fn print_summary(r: &Report, hop: &framepipe::HopLatency, args: &Args) {
    eprintln!(
        "framepipe synthetic: {} frames, stages {}, admission {}, release {}, wait {}, work {:?}, jitter {}",
        args.frames, args.stages, args.admission, r.release, args.wait, args.work, args.jitter
    );
    eprint!("{r}");
    let budget = 1.2 * r.hops as f64 * hop.p50_us;
    eprintln!(
        "bare hop ({}) p50 {:.2} us, p99 {:.2} us; overhead budget 1.2 x {} hops x hop = {:.1} us, measured {:.1} us",
        hop.wait, hop.p50_us, hop.p99_us, r.hops, budget, r.overhead_p50_us
    );
}
