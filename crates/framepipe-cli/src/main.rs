//! `framepipe`: detect objects in an image, benchmark a video, run a camera. Argument parsing only;
//! the work is in `framepipe-app`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use framepipe_app::bench::{self, BenchOptions, Mode, Progress};
use framepipe_app::stages::{Pins, PipelineOptions, Replicas};
use framepipe_app::{assets, DetectModel, ModelOptions};
use framepipe_infer::EngineChoice;
use indicatif::{ProgressBar, ProgressStyle};

mod camera;
mod tune;

#[cfg(feature = "cuda")]
mod gpu;

#[derive(Parser)]
#[command(
    name = "framepipe",
    version,
    about = "Camera and video streams to detections, in capture order, with low latency"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// tract-cuda: a 4 MiB cuBLAS workspace per thread instead of cuBLAS's default (about 63 MB
    /// less per replica on an H200; speed effect not settled).
    #[cfg(feature = "cuda")]
    #[arg(long, global = true)]
    small_cublas_workspace: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Detect objects in one image.
    Detect(DetectArgs),
    /// Benchmark serial, pipelined and thread-pool execution on videos, with one or several models.
    Bench(BenchArgs),
    /// Make the project's sample video (people in motion, from public-domain photos).
    SampleVideo(SampleArgs),
    /// Run on a live camera or stream: ordered detections, latency report, optional MJPEG view.
    Camera(camera::CameraArgs),
    /// GPU memory per replica: shared weights against independent loads (cargo feature `cuda`).
    #[cfg(feature = "cuda")]
    #[command(hide = true)]
    GpuMem(gpu::GpuMemArgs),
}

/// `--decoder`: which media backend decodes.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum DecoderArg {
    /// Native first; OpenCV (with the `opencv` feature) for what the native backend cannot read.
    Auto,
    /// The native backend only (MP4/MOV, Matroska, AVI, H.264 Annex-B; H.264, MJPEG).
    Native,
    /// OpenCV only (needs a build with `--features opencv`).
    Opencv,
}

impl DecoderArg {
    fn choice(self) -> framepipe_video::DecoderChoice {
        match self {
            DecoderArg::Auto => framepipe_video::DecoderChoice::Auto,
            DecoderArg::Native => framepipe_video::DecoderChoice::Native,
            DecoderArg::Opencv => framepipe_video::DecoderChoice::OpenCv,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum EngineArg {
    /// ONNX Runtime if its library is present, else tract.
    Auto,
    /// ONNX Runtime (CPU unless told otherwise).
    Ort,
    /// tract (pure Rust).
    Tract,
    /// tract-cuda (NVIDIA GPUs; needs the `cuda` feature).
    TractCuda,
}

#[derive(clap::Args)]
struct ModelArgs {
    /// The ONNX model file, or a fetched model by name: `person-detector`, `centerface` (default:
    /// the person detector). `bench` takes several (`--model A --model B`): one branch each.
    #[arg(long)]
    model: Vec<PathBuf>,
    /// The engine.
    #[arg(long, value_enum, default_value_t = EngineArg::Auto)]
    engine: EngineArg,
    /// Confidence threshold.
    #[arg(long, default_value_t = 0.25)]
    conf: f32,
    /// NMS IoU threshold.
    #[arg(long, default_value_t = 0.45)]
    iou: f32,
    /// Threads per inference session (default 1: replicas, not hidden pools, use the cores).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// A labels file (one name per line) instead of the model's own class names.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Letterbox on the GPU in the `pre` stage (upload from pinned memory, NVRTC kernel, copy back).
    #[cfg(feature = "cuda")]
    #[arg(long)]
    gpu_pre: bool,
    /// tract-cuda: run tract's plain `state.run` (every kernel dispatched from the host) instead of
    /// one CUDA graph per replica, captured at start-up.
    #[cfg(feature = "cuda")]
    #[arg(long)]
    no_cuda_graph: bool,
}

#[derive(clap::Args)]
struct DetectArgs {
    /// The image.
    image: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
    /// Write the JSON result here (`-`: stdout).
    #[arg(long)]
    json: Option<String>,
    /// Write the image with boxes and labels here.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum ModeArg {
    Pipelined,
    Serial,
    Pool,
    /// One thread per model, joined by sequence number (the seed's design).
    PerModel,
    /// serial, pipelined and pool, and per-model with several models.
    All,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// The videos, one stream each (default: the project's sample video).
    videos: Vec<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    /// Which modes to run.
    #[arg(long, value_enum, default_value_t = ModeArg::All)]
    mode: ModeArg,
    /// Replicas per stage, `infer=N[,pre=N,post=N]`, per model (default: infer = one per core; also the pool's workers).
    #[arg(long)]
    replicas: Option<String>,
    /// Pin stages to cores, e.g. `pre=0,infer=1,post=1` (also `decode=N`, ranges `a-b`).
    #[arg(long)]
    pin: Option<String>,
    /// Capacity of every queue.
    #[arg(long, default_value_t = 1)]
    queue: usize,
    /// Process at most N frames (of each video).
    #[arg(long)]
    frames: Option<u64>,
    /// Pace the source at the video's frame rate, like a camera.
    #[arg(long)]
    realtime: bool,
    /// Which media backend decodes the videos.
    #[arg(long, value_enum, default_value_t = DecoderArg::Auto)]
    decoder: DecoderArg,
    /// Release frames as fast as the pipeline accepts them, instead of just in time.
    #[arg(long)]
    greedy: bool,
    /// Write the JSON report here (`-`: stdout).
    #[arg(long)]
    json: Option<String>,
    /// Write a Chrome trace (open in Perfetto) here.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Write a PNG plot of latency and stage times here.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Write the annotated video (from the pipelined run) here.
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    tuning: tune::TuneArgs,
}

#[derive(clap::Args)]
struct SampleArgs {
    /// Where to write it (default: assets/sample.mp4).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Length in seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Frames per second.
    #[arg(long, default_value_t = 30.0)]
    fps: f64,
    /// Frame size, WxH.
    #[arg(long, default_value = "1280x720")]
    size: String,
}

fn main() -> ExitCode {
    framepipe_video::quiet_opencv_logs();
    let cli = Cli::parse();
    #[cfg(feature = "cuda")]
    if cli.small_cublas_workspace {
        gpu::limit_cublas_workspace();
    }
    let result = match cli.command {
        Command::Detect(a) => detect(a),
        Command::Bench(a) => bench_cmd(a),
        Command::SampleVideo(a) => sample(a),
        Command::Camera(a) => camera::run(a),
        #[cfg(feature = "cuda")]
        Command::GpuMem(a) => gpu::gpu_mem(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line that names the file and the problem.
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("error: {}", chain.join(": "));
            ExitCode::from(2)
        }
    }
}

/// Every `--model` given (the person detector if none), loaded.
fn load_models(args: &ModelArgs) -> Result<Vec<std::sync::Arc<DetectModel>>> {
    let opts = model_options(args)?;
    model_paths(args)?.iter().map(|p| Ok(DetectModel::load(p, &opts)?)).collect()
}

/// The files of every `--model` given (names resolved), or the person detector's.
fn model_paths(args: &ModelArgs) -> Result<Vec<PathBuf>> {
    if args.model.is_empty() {
        return Ok(vec![assets::person_detector()?]);
    }
    args.model.iter().map(|m| Ok(assets::model(m)?)).collect()
}

/// How to load the models, from the flags.
fn model_options(args: &ModelArgs) -> Result<ModelOptions> {
    let engine = match args.engine {
        EngineArg::Auto => EngineChoice::Auto,
        EngineArg::Ort => EngineChoice::Ort,
        EngineArg::Tract => EngineChoice::Tract,
        #[cfg(feature = "cuda")]
        EngineArg::TractCuda => {
            // The first use on a machine compiles tract-cuda's kernels (about 45 s): on a bar.
            gpu::warm_up()?;
            EngineChoice::TractCuda
        }
        #[cfg(not(feature = "cuda"))]
        EngineArg::TractCuda => bail!("engine tract-cuda: this framepipe was built without the `cuda` feature"),
    };
    let mut opts =
        ModelOptions { engine, conf: args.conf, iou: args.iou, labels: args.labels.clone(), ..Default::default() };
    opts.engine_options.intra_threads = args.threads;
    #[cfg(feature = "cuda")]
    {
        opts.gpu_preprocess = args.gpu_pre;
        opts.engine_options.cuda_graph = !args.no_cuda_graph;
        if matches!(args.engine, EngineArg::Auto) {
            eprintln!("engine: {}", framepipe_infer::auto_gpu_note());
        }
    }
    Ok(opts)
}

fn write_json(target: &str, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    if target == "-" {
        println!("{text}");
    } else {
        std::fs::write(target, text + "\n").with_context(|| format!("writing {target}"))?;
    }
    Ok(())
}

fn detect(a: DetectArgs) -> Result<ExitCode> {
    if !a.image.exists() {
        bail!("image {}: no such file", a.image.display());
    }
    if a.model.model.len() > 1 {
        bail!("--model: detect runs one model (bench runs several)");
    }
    let model = load_models(&a.model)?.remove(0);
    let report = framepipe_app::detect::detect_image(model, &a.image, a.out.as_deref())?;
    let json = serde_json::to_value(&report)?;
    if let Some(target) = &a.json {
        write_json(target, &json)?;
    }
    if a.json.as_deref() != Some("-") {
        println!(
            "{}: {}x{}, {} detections ({}; pre {:.1} ms, infer {:.1} ms, post {:.1} ms)",
            a.image.display(),
            report.image.width,
            report.image.height,
            report.detections.len(),
            report.engine,
            report.timings_ms.pre,
            report.timings_ms.infer,
            report.timings_ms.post
        );
        for d in &report.detections {
            println!(
                "  {:<12} {:.2}  [{:.0}, {:.0}, {:.0}, {:.0}]",
                d.label, d.score, d.bbox[0], d.bbox[1], d.bbox[2], d.bbox[3]
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

struct Bar(Mutex<Option<ProgressBar>>);

impl Progress for Bar {
    fn start(&self, mode: Mode, total: Option<u64>) {
        let bar = ProgressBar::new(total.unwrap_or(0));
        bar.set_style(
            ProgressStyle::with_template("{prefix:>10} [{bar:40}] {pos}/{len} frames  {per_sec}  eta {eta}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(mode.name());
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar);
    }
    fn frame(&self) {
        if let Some(b) = self.0.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            b.inc(1);
        }
    }
    fn finish(&self, _: Mode) {
        if let Some(b) = self.0.lock().unwrap_or_else(|e| e.into_inner()).take() {
            b.finish();
        }
    }
}

fn bench_cmd(a: BenchArgs) -> Result<ExitCode> {
    let from_config = tune::load_config(&a.tuning)?;
    let mut videos = a.videos.clone();
    if videos.is_empty() {
        videos.push(match from_config.as_ref().and_then(|c| c.video.clone()) {
            Some(v) => v,
            None => assets::sample_video()?,
        });
    }
    for v in &videos {
        if !v.exists() {
            bail!("video {}: no such file", v.display());
        }
    }
    // Everything that can be refused is refused before anything starts.
    let cores = framepipe::available_cores().len().max(1);
    let replicas = match &a.replicas {
        Some(s) => s.parse::<Replicas>()?,
        None => Replicas { infer: cores, ..Replicas::default() },
    };
    let pins = match &a.pin {
        Some(s) => s.parse::<Pins>()?,
        None => Pins::default(),
    };
    let mut pipeline = PipelineOptions {
        replicas,
        pins,
        queue: a.queue,
        pace: if a.greedy { framepipe::Pace::Free } else { framepipe::Pace::JustInTime },
        ..Default::default()
    };
    if let Some(c) = &from_config {
        pipeline.replicas = c.pipeline.replicas;
        pipeline.pins = c.pipeline.pins.clone();
        pipeline.queue = c.pipeline.queue;
        pipeline.max_in_flight = c.cfg.pipeline.max_in_flight;
    }
    pipeline.validate()?;
    if a.model.model.len() > framepipe::MAX_BRANCHES {
        bail!("--model: at most {} models, not {}", framepipe::MAX_BRANCHES, a.model.model.len());
    }
    if a.out.is_some() && (videos.len() > 1 || a.model.model.len() > 1) {
        bail!("--out: an annotated video is written for one video and one model only");
    }
    let tuning = a.tuning.tune || from_config.as_ref().is_some_and(|c| c.cfg.pipeline.tune);
    if tuning && (videos.len() > 1 || a.model.model.len() > 1) {
        bail!("--tune: tunes one video through one model (run it once per model)");
    }
    let modes = match a.mode {
        ModeArg::All if a.model.model.len() > 1 => vec![Mode::Serial, Mode::Pipelined, Mode::Pool, Mode::PerModel],
        ModeArg::All => vec![Mode::Serial, Mode::Pipelined, Mode::Pool],
        ModeArg::Serial => vec![Mode::Serial],
        ModeArg::Pipelined => vec![Mode::Pipelined],
        ModeArg::Pool => vec![Mode::Pool],
        ModeArg::PerModel => vec![Mode::PerModel],
    };
    let (paths, model_opts) = match &from_config {
        Some(c) => {
            let path = match a.model.model.first() {
                Some(m) => assets::model(m)?,
                None => c.model_path.clone(),
            };
            (vec![path], c.model.clone())
        }
        None => (model_paths(&a.model)?, model_options(&a.model)?),
    };
    let mut models = Vec::with_capacity(paths.len());
    for p in &paths {
        models.push(DetectModel::load(p, &model_opts)?);
    }
    eprintln!("engine: {}", models[0].selection().reason);
    let video = videos.remove(0);
    let mut tuned = None;
    if tuning {
        let out = tune::out_path(&a.tuning, a.json.as_deref());
        let base = tune::base_config(from_config.as_ref(), &video, a.realtime, &models[0], &model_opts);
        let (t, m) = tune::tune_bench(models.remove(0), &paths[0], &model_opts, &video, &mut pipeline, &out, &base)?;
        models.insert(0, m);
        let text = t.render();
        if a.json.as_deref() == Some("-") {
            eprint!("{text}");
        } else {
            print!("{text}");
        }
        tuned = Some(t);
    }
    let opts = BenchOptions {
        video,
        extra_videos: videos,
        modes,
        pipeline,
        frames: a.frames,
        realtime: a.realtime,
        spans: a.trace.is_some(),
        out: a.out.clone(),
        decoder: a.decoder.choice(),
    };
    let bar = Bar(Mutex::new(None));
    let result = bench::run_models(&models, &opts, &bar)?;
    let text = result.render();
    if a.json.as_deref() == Some("-") {
        eprint!("{text}");
    } else {
        print!("{text}");
        std::io::stdout().flush().ok();
    }
    if let Some(target) = &a.json {
        let mut json = result.to_json();
        if let Some(t) = &tuned {
            t.attach(&mut json);
        }
        write_json(target, &json)?;
    }
    if let Some(t) = &tuned {
        if let Some(path) = &t.config {
            eprintln!("tuned plan: {} (rerun it with --config {})", path.display(), path.display());
        }
    }
    if let Some(path) = &a.trace {
        let mut trace = framepipe_app::trace::Trace::new();
        for run in &result.runs {
            trace.add(run.mode.name(), run.spans.clone());
        }
        trace.write(path)?;
        eprintln!("trace: {} (open in https://ui.perfetto.dev)", path.display());
    }
    if let Some(path) = &a.plot {
        framepipe_app::plot::write(&result, path)?;
        eprintln!("plot: {}", path.display());
    }
    if let Some(path) = &a.out {
        eprintln!("annotated video: {}", path.display());
    }
    // A video that failed mid-stream was still processed and reported; the run is still an error.
    if let Some(e) = result.runs.iter().flat_map(|r| r.decode_errors.iter()).next() {
        eprintln!("error: {e}");
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_size(s: &str) -> Result<(usize, usize)> {
    let (w, h) = s.split_once('x').with_context(|| format!("--size {s}: expected WxH"))?;
    let (w, h): (usize, usize) = (w.parse().context("--size width")?, h.parse().context("--size height")?);
    if w < 16 || h < 16 || w % 2 == 1 || h % 2 == 1 {
        bail!("--size {s}: width and height must be even and at least 16");
    }
    Ok((w, h))
}

fn sample(a: SampleArgs) -> Result<ExitCode> {
    let (width, height) = parse_size(&a.size)?;
    if !(a.seconds > 0.0 && a.fps > 0.0) {
        bail!("--seconds and --fps must be positive");
    }
    let out = a.out.unwrap_or_else(assets::sample_video_path);
    let photos = vec![assets::image("astronaut.png")?, assets::image("camera.png")?];
    let frames = (a.seconds * a.fps).round() as u64;
    let spec = framepipe_video::sample::SampleSpec { width, height, fps: a.fps, frames };
    let n = framepipe_video::sample::make_sample_video(&out, &photos, spec)?;
    println!("{}: {n} frames, {width}x{height} at {} fps", out.display(), a.fps);
    Ok(ExitCode::SUCCESS)
}
