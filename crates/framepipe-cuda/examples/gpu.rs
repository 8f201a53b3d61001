//! The GPU harness, for a GPU machine without OpenCV (the `framepipe` binary needs OpenCV for video
//! I/O; this needs only the CUDA driver and libraries): tract-cuda's warm-up, the device-memory
//! table, the GPU letterbox against the CPU one, and the detection stages (pre → infer × N → post)
//! on synthetic frames, run serially, through the framepipe runtime, and as a pool of workers.
//!
//! ```text
//! cargo build --release -p framepipe-cuda --example gpu
//! gpu info
//! gpu warm
//! gpu mem   --model M [--replicas 1,2,4,8] [--json FILE]
//! (every command: --small-cublas sets CUBLAS_WORKSPACE_CONFIG=:4096:1, 4 MiB of cuBLAS workspace
//!  per thread instead of cuBLAS's default)
//! gpu pre   [--iters 200] [--json FILE]
//! gpu bench --model M [--replicas 1,2,4,8] [--frames 600] [--size 1280x720] [--gpu-pre]
//!           [--modes serial,pipelined,pool] [--engine tract-cuda|ort|tract] [--threads N]
//!           [--no-cuda-graph] [--json FILE]
//! gpu e2e   --model M [--replicas 1,2,4,8] [--frames 1000] [--size 1920x1080] [--profile-runs 20]
//!           [--json FILE]   (device-resident frames: correctness against the CPU engine, serial
//!                            e2e per stage, graph replay, per-op-class GPU time, letterbox kernel,
//!                            pipelined throughput)
//! gpu tune  --model M [--frames 1500] [--size 1920x1080] [--slack 0.1,2.0] [--grid-infer 1,2,3,4,6,8]
//!           [--grid-side 1,2] [--json FILE]
//!           (`--tune` for the device-resident pipeline: calibrate the stages and the GPU's
//!            scaling, plan with framepipe-tune, run the plans beside a grid of hand-set ones)
//! ```

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use framepipe::pool::{Pool, Pooled};
use framepipe::{IterSource, Pipeline, SourceConfig, Stage, StageConfig, StageContext};
use framepipe_cuda::memory::{self, Sharing};
use framepipe_cuda::{CudaError, GpuPreprocessor};
use framepipe_infer::{load, Engine, EngineChoice, EngineOptions, InferError, Session, TensorRef};
use framepipe_vision::{
    Decoder, Detection, Frame, LetterboxParams, NmsConfig, PixelFormat, PostprocessConfig, Postprocessor,
    PreprocessConfig, Preprocessor, TensorView, VisionError,
};
use serde_json::{json, Value};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

struct Args(Vec<String>);

impl Args {
    fn opt(&self, name: &str) -> Option<String> {
        self.0.iter().position(|a| a == name).and_then(|i| self.0.get(i + 1).cloned())
    }
    fn flag(&self, name: &str) -> bool {
        self.0.iter().any(|a| a == name)
    }
    fn list(&self, name: &str, default: &str) -> Res<Vec<usize>> {
        let s = self.opt(name).unwrap_or_else(|| default.into());
        s.split(',')
            .map(|p| p.trim().parse::<usize>().ok().filter(|n| *n > 0))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| format!("{name} {s}: expected positive numbers joined by commas").into())
    }
    fn model(&self) -> Res<PathBuf> {
        let p = PathBuf::from(self.opt("--model").ok_or("--model M is required")?);
        if !p.is_file() {
            return Err(format!("model {} not found", p.display()).into());
        }
        Ok(p)
    }
}

fn main() -> std::process::ExitCode {
    let args = Args(std::env::args().skip(1).collect());
    // As `framepipe --small-cublas-workspace`: a 4 MiB cuBLAS workspace per thread instead of
    // cuBLAS's default, unless set by the user. No thread exists yet.
    if args.flag("--small-cublas") && std::env::var_os("CUBLAS_WORKSPACE_CONFIG").is_none() {
        std::env::set_var("CUBLAS_WORKSPACE_CONFIG", framepipe_infer::CUBLAS_WORKSPACE_CONFIG);
    }
    let result = match args.0.first().map(String::as_str) {
        Some("info") => info(),
        Some("warm") => warm(),
        Some("mem") => mem(&args),
        Some("pre") => pre(&args),
        Some("bench") => bench(&args),
        Some("e2e") => e2e(&args),
        Some("tune") => tune(&args),
        _ => Err("usage: gpu info | warm | mem --model M | pre | bench --model M (see the source's header)".into()),
    };
    match result {
        Ok(v) => {
            if let (Some(path), false) = (args.opt("--json"), v.is_null()) {
                if let Err(e) = std::fs::write(&path, serde_json::to_string_pretty(&v).expect("json") + "\n") {
                    eprintln!("error: cannot write {path}: {e}");
                    return std::process::ExitCode::from(2);
                }
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

fn info() -> Res<Value> {
    let dev = framepipe_cuda::check_driver()?;
    println!("device: {dev}");
    println!("tract-cuda: {}", framepipe_infer::cuda_check()?);
    let m = framepipe_cuda::driver::mem_info()?;
    println!("memory: {:.0} MB used of {:.0} MB", m.used() as f64 / 1e6, m.total as f64 / 1e6);
    Ok(json!({ "device": dev }))
}

fn warm() -> Res<Value> {
    let last = Mutex::new(Instant::now() - Duration::from_secs(10));
    let warm = framepipe_infer::cuda_warm_up(&|msg| {
        // A line every 5 s at most: this goes to a log, not to a terminal.
        let mut l = last.lock().unwrap_or_else(|e| e.into_inner());
        if l.elapsed() >= Duration::from_secs(5) {
            eprintln!("warm-up: {msg}");
            *l = Instant::now();
        }
    })?;
    println!("warm-up: {warm}");
    Ok(json!({ "warm_up_s": warm.duration.as_secs_f64(), "compiled": warm.compiled, "device": warm.device }))
}

fn mem(args: &Args) -> Res<Value> {
    let model = args.model()?;
    let counts = args.list("--replicas", "1,2,4,8")?;
    if let Some(only) = args.opt("--only") {
        let sharing: Sharing = only.parse()?;
        let table = memory::measure(&model, &EngineOptions::default(), sharing, &counts)?;
        println!("{}", memory::child_line(&table));
        return Ok(Value::Null);
    }
    let exe = std::env::current_exe()?;
    let replicas = args.opt("--replicas").unwrap_or_else(|| "1,2,4,8".into());
    let (shared, independent) = memory::measure_in_processes(|sharing| {
        let mut cmd = std::process::Command::new(&exe);
        cmd.arg("mem").arg("--model").arg(&model).args(["--replicas", &replicas, "--only", sharing.name()]);
        if args.flag("--small-cublas") {
            cmd.arg("--small-cublas");
        }
        cmd
    })?;
    print!("{}", memory::render(&shared, Some(&independent)));
    Ok(json!({ "shared": shared, "independent": independent }))
}

/// A deterministic BGR frame: gradients, a few sharp-edged blocks, and noise.
fn synthetic_frame(w: usize, h: usize, seed: u64) -> Frame {
    let mut f = Frame::new(w, h, PixelFormat::Bgr8).expect("a valid size");
    let stride = f.stride();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let data = f.data_mut();
    for y in 0..h {
        for x in 0..w {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let block = ((x / 97 + y / 61 + seed as usize) % 5) as u8 * 40;
            let i = y * stride + 3 * x;
            data[i] = ((x * 255 / w) as u8).wrapping_add(block).wrapping_add((s & 15) as u8);
            data[i + 1] = ((y * 255 / h) as u8).wrapping_add((s >> 8 & 15) as u8);
            data[i + 2] = block.wrapping_add(((x + y) & 63) as u8);
        }
    }
    f
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

fn stats_us(mut v: Vec<f64>) -> Value {
    v.sort_by(|a, b| a.total_cmp(b));
    let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
    json!({ "p50": percentile(&v, 0.5), "p90": percentile(&v, 0.9), "p99": percentile(&v, 0.99),
            "max": v.last().copied().unwrap_or(f64::NAN), "mean": mean, "count": v.len() })
}

/// The GPU letterbox against the CPU one: time per frame and largest difference, per frame size.
fn pre(args: &Args) -> Res<Value> {
    let iters: usize = args.opt("--iters").map_or(Ok(200), |s| s.parse())?;
    let config = PreprocessConfig::new(640, 640);
    let mut cpu = Preprocessor::new(config)?;
    let mut gpu = GpuPreprocessor::new(config)?;
    let mut device_out = gpu.stream().alloc_zeros::<f32>(config.output_len())?;
    let mut rows = Vec::new();
    println!("{:>10} {:>10} {:>16} {:>16} {:>12}", "frame", "CPU ms", "GPU->host ms", "GPU->device ms", "max |diff|");
    for (w, h) in [(1920, 1080), (1280, 720), (480, 640), (1366, 768), (333, 777)] {
        let frames: Vec<Frame> = (0..4).map(|k| synthetic_frame(w, h, k)).collect();
        let mut a = vec![0f32; config.output_len()];
        let mut b = vec![0f32; config.output_len()];
        let mut worst = 0f32;
        for f in &frames {
            cpu.preprocess(f.as_ref(), &mut a)?;
            gpu.preprocess_to_host(f.as_ref(), &mut b)?;
            worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(worst, f32::max);
        }
        let time = |f: &mut dyn FnMut(&Frame) -> Res<()>| -> Res<Vec<f64>> {
            let mut t = Vec::with_capacity(iters);
            for i in 0..iters {
                let frame = &frames[i % frames.len()];
                let t0 = Instant::now();
                f(frame)?;
                t.push(t0.elapsed().as_secs_f64() * 1e6);
            }
            Ok(t)
        };
        let t_cpu = time(&mut |f| Ok(cpu.preprocess(f.as_ref(), &mut a).map(|_| ())?))?;
        let t_host = time(&mut |f| Ok(gpu.preprocess_to_host(f.as_ref(), &mut b).map(|_| ())?))?;
        let t_dev = time(&mut |f| {
            gpu.preprocess_to_device(f.as_ref(), &mut device_out)?;
            Ok(gpu.synchronize()?)
        })?;
        let (c, hst, d) = (stats_us(t_cpu), stats_us(t_host), stats_us(t_dev));
        println!(
            "{:>10} {:>10.3} {:>16.3} {:>16.3} {:>12.2e}",
            format!("{w}x{h}"),
            c["p50"].as_f64().unwrap_or(0.0) / 1e3,
            hst["p50"].as_f64().unwrap_or(0.0) / 1e3,
            d["p50"].as_f64().unwrap_or(0.0) / 1e3,
            worst
        );
        rows.push(json!({ "frame": format!("{w}x{h}"), "cpu_us": c, "gpu_to_host_us": hst,
                          "gpu_to_device_us": d, "max_abs_diff": worst }));
    }
    println!("(GPU->host: copy into pinned memory, upload, kernel, download, copy out; GPU->device: the same without the download, synchronised)");
    Ok(json!({ "input": "640x640", "iters": iters, "rows": rows }))
}

// ---------------------------------------------------------------- the detection stages

/// Raw outputs copied out of a session.
#[derive(Default)]
struct Outputs(Vec<(Vec<usize>, Vec<f32>)>);

struct Prepared {
    input: Pooled<Vec<f32>>,
    letterbox: LetterboxParams,
}

struct Inferred {
    outputs: Pooled<Outputs>,
    letterbox: LetterboxParams,
}

#[derive(Debug, thiserror::Error)]
enum StageError {
    #[error(transparent)]
    Vision(#[from] VisionError),
    #[error(transparent)]
    Cuda(#[from] CudaError),
    #[error(transparent)]
    Infer(#[from] InferError),
}

/// What every stage needs to know about the model.
#[derive(Clone)]
struct Spec {
    engine: Arc<dyn Engine>,
    pre: PreprocessConfig,
    shape: Vec<usize>,
    decoder: Decoder,
    post: PostprocessConfig,
    gpu_pre: bool,
    inputs: Pool<Vec<f32>>,
    outputs: Pool<Outputs>,
    detections: Pool<Vec<Detection>>,
}

impl Spec {
    fn new(engine: Arc<dyn Engine>, gpu_pre: bool, live: usize) -> Res<Spec> {
        let info = engine.model();
        let shape: Vec<usize> =
            info.inputs[0].shape.iter().copied().collect::<Option<_>>().ok_or("the model input has dynamic axes")?;
        let [_, _, h, w] = shape[..] else { return Err("the model input is not 1x3xHxW".into()) };
        let out: Vec<usize> =
            info.outputs[0].shape.iter().copied().collect::<Option<_>>().ok_or("the model output has dynamic axes")?;
        let len = 3 * w * h;
        Ok(Spec {
            pre: PreprocessConfig::new(w, h),
            decoder: Decoder::from_output_shape(&out, None)?,
            post: PostprocessConfig {
                conf_threshold: 0.25,
                nms: NmsConfig { iou_threshold: 0.45, ..NmsConfig::default() },
            },
            shape,
            engine,
            gpu_pre,
            inputs: Pool::new(live, live, move || vec![0.0; len]),
            outputs: Pool::new(live, 0, Outputs::default),
            detections: Pool::new(live, live, || Vec::with_capacity(300)),
        })
    }
}

struct Pre {
    cpu: Preprocessor,
    gpu: Option<GpuPreprocessor>,
    pool: Pool<Vec<f32>>,
}

impl Pre {
    fn new(s: &Spec) -> Result<Pre, StageError> {
        let gpu = if s.gpu_pre { Some(GpuPreprocessor::new(s.pre)?) } else { None };
        Ok(Pre { cpu: Preprocessor::new(s.pre)?, gpu, pool: s.inputs.clone() })
    }
}

impl Stage<Arc<Frame>> for Pre {
    type Out = Prepared;
    type Error = StageError;
    fn process(&mut self, frame: Arc<Frame>) -> Result<Prepared, StageError> {
        let mut input = self.pool.take();
        let letterbox = match self.gpu.as_mut() {
            Some(g) => g.preprocess_to_host(frame.as_ref().as_ref(), &mut input)?,
            None => self.cpu.preprocess(frame.as_ref().as_ref(), &mut input)?,
        };
        Ok(Prepared { input, letterbox })
    }
}

struct Infer {
    session: Box<dyn Session>,
    shape: Vec<usize>,
    pool: Pool<Outputs>,
}

impl Infer {
    fn new(s: &Spec) -> Result<Infer, StageError> {
        Ok(Infer { session: s.engine.session()?, shape: s.shape.clone(), pool: s.outputs.clone() })
    }
}

impl Stage<Prepared> for Infer {
    type Out = Inferred;
    type Error = StageError;
    fn process(&mut self, p: Prepared) -> Result<Inferred, StageError> {
        let outs = self.session.run(&[TensorRef::new(&self.shape, &p.input)])?;
        let mut set = self.pool.take();
        set.0.resize_with(outs.len(), Default::default);
        for (slot, t) in set.0.iter_mut().zip(outs) {
            slot.0.clear();
            slot.0.extend_from_slice(&t.shape);
            slot.1.clear();
            slot.1.extend_from_slice(&t.data);
        }
        Ok(Inferred { outputs: set, letterbox: p.letterbox })
    }

    /// The first run on this thread creates its CUDA stream and cuDNN state: start-up time.
    fn on_start(&mut self) -> Result<(), StageError> {
        let blank = vec![0.5f32; self.shape.iter().product()];
        self.session.run(&[TensorRef::new(&self.shape, &blank)])?;
        Ok(())
    }
}

struct Post {
    post: Postprocessor,
    pool: Pool<Vec<Detection>>,
}

impl Post {
    fn new(s: &Spec) -> Result<Post, StageError> {
        Ok(Post { post: Postprocessor::new(s.decoder.clone(), s.post)?, pool: s.detections.clone() })
    }
}

impl Stage<Inferred> for Post {
    type Out = Pooled<Vec<Detection>>;
    type Error = StageError;
    fn process(&mut self, i: Inferred) -> Result<Pooled<Vec<Detection>>, StageError> {
        let mut dets = self.pool.take();
        let views: Vec<TensorView<'_>> = i.outputs.0.iter().map(|(s, d)| TensorView { shape: s, data: d }).collect();
        self.post.process(&views, &i.letterbox, &mut dets)?;
        Ok(dets)
    }
}

// ---------------------------------------------------------------- the modes

fn frames_source(frames: &[Arc<Frame>], n: usize) -> impl Iterator<Item = Arc<Frame>> + Send + 'static {
    let frames = frames.to_vec();
    (0..n).map(move |i| Arc::clone(&frames[i % frames.len()]))
}

fn mode_result(name: &str, replicas: usize, frames: usize, wall: f64, lat_us: Vec<f64>, infer_us: Vec<f64>) -> Value {
    let done = lat_us.len();
    json!({ "mode": name, "replicas": replicas, "frames": frames, "processed": done,
            "throughput_fps": done as f64 / wall.max(1e-9), "latency_us": stats_us(lat_us),
            "infer_us": stats_us(infer_us) })
}

fn run_serial(spec: &Spec, frames: &[Arc<Frame>], n: usize) -> Res<Value> {
    let (mut pre, mut infer, mut post) = (Pre::new(spec)?, Infer::new(spec)?, Post::new(spec)?);
    infer.on_start()?;
    let (mut lat, mut inf) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let start = Instant::now();
    for f in frames_source(frames, n) {
        let t0 = Instant::now();
        let p = pre.process(f)?;
        let t1 = Instant::now();
        let i = infer.process(p)?;
        inf.push(t1.elapsed().as_secs_f64() * 1e6);
        post.process(i)?;
        lat.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    Ok(mode_result("serial", 1, n, start.elapsed().as_secs_f64(), lat, inf))
}

fn run_pipelined(spec: &Spec, frames: &[Arc<Frame>], n: usize, replicas: usize) -> Res<Value> {
    let side = replicas.div_ceil(2);
    let (s1, s2, s3) = (spec.clone(), spec.clone(), spec.clone());
    let mut pipeline = Pipeline::<Arc<Frame>>::builder()
        .source(SourceConfig::new("decode"), IterSource(frames_source(frames, n)))
        .stage(StageConfig::new("pre").replicas(side), move |_: &StageContext| Pre::new(&s1))
        .stage(StageConfig::new("infer").replicas(replicas), move |_: &StageContext| Infer::new(&s2))
        .stage(StageConfig::new("post").replicas(side), move |_: &StageContext| Post::new(&s3))
        .build()?;
    let mut errors = 0u64;
    while let Some(out) = pipeline.recv() {
        if out.result().is_err() {
            errors += 1;
        }
    }
    let report = pipeline.close()?;
    let infer = report.stages.iter().find(|s| s.name == "infer").map(|s| s.service_us);
    let mut v = json!({ "mode": "pipelined", "replicas": replicas, "pre_replicas": side, "post_replicas": side,
        "frames": n, "processed": report.processed, "errored": errors, "reordered": report.reordered,
        "throughput_fps": report.throughput_fps, "bound_fps": report.bound_fps,
        "latency_us": report.latency_us, "infer_us": infer });
    v["report"] = serde_json::to_value(&report)?;
    Ok(v)
}

fn run_pool(spec: &Spec, frames: &[Arc<Frame>], n: usize, workers: usize) -> Res<Value> {
    let (job_tx, job_rx) = mpsc::sync_channel::<(Instant, Arc<Frame>)>(workers);
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (done_tx, done_rx) = mpsc::channel::<Result<(f64, f64), String>>();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let mut handles = Vec::new();
    for w in 0..workers {
        let (spec, job_rx, done_tx, ready_tx) = (spec.clone(), job_rx.clone(), done_tx.clone(), ready_tx.clone());
        handles.push(std::thread::Builder::new().name(format!("worker#{w}")).spawn(move || {
            let stages = (|| -> Result<_, StageError> {
                let (pre, mut infer, post) = (Pre::new(&spec)?, Infer::new(&spec)?, Post::new(&spec)?);
                infer.on_start()?;
                Ok((pre, infer, post))
            })();
            let (mut pre, mut infer, mut post) = match stages {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            loop {
                let job = job_rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                let Ok((captured, frame)) = job else { break };
                let r = (|| -> Result<f64, StageError> {
                    let p = pre.process(frame)?;
                    let t1 = Instant::now();
                    let i = infer.process(p)?;
                    let inf = t1.elapsed().as_secs_f64() * 1e6;
                    post.process(i)?;
                    Ok(inf)
                })();
                let _ =
                    done_tx.send(r.map(|inf| (captured.elapsed().as_secs_f64() * 1e6, inf)).map_err(|e| e.to_string()));
            }
        })?);
    }
    drop(done_tx);
    drop(ready_tx);
    // One message per worker once its stages are built and warmed up (workers keep their sender).
    for _ in 0..workers {
        ready_rx.recv().map_err(|_| "a worker died while starting")??;
    }
    let start = Instant::now();
    let feeder = {
        let src: Vec<Arc<Frame>> = frames_source(frames, n).collect();
        std::thread::spawn(move || {
            for f in src {
                if job_tx.send((Instant::now(), f)).is_err() {
                    break;
                }
            }
        })
    };
    let (mut lat, mut inf) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut first_error = None;
    // Ends when every frame is back (the workers exit once the feeder is done).
    for r in done_rx.iter() {
        match r {
            Ok((l, i)) => {
                lat.push(l);
                inf.push(i);
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let _ = feeder.join();
    drop(job_rx);
    for h in handles {
        let _ = h.join();
    }
    if let Some(e) = first_error {
        return Err(e.into());
    }
    Ok(mode_result("pool", workers, n, wall, lat, inf))
}

fn bench(args: &Args) -> Res<Value> {
    let model = args.model()?;
    let counts = args.list("--replicas", "1,2,4,8")?;
    let n: usize = args.opt("--frames").map_or(Ok(600), |s| s.parse())?;
    let gpu_pre = args.flag("--gpu-pre");
    let (w, h) = size_arg(args, "1280x720")?;
    let size = format!("{w}x{h}");
    let modes = args.opt("--modes").unwrap_or_else(|| "serial,pipelined,pool".into());
    let t0 = Instant::now();
    // `--engine ort|tract` runs the same stages on the CPU engines, for the CPU figures of the GPU
    // host (its ONNX Runtime library comes from ORT_DYLIB_PATH); `--threads` is each session's
    // intra-op thread count.
    let choice = match args.opt("--engine").as_deref().unwrap_or("tract-cuda") {
        "tract-cuda" => EngineChoice::TractCuda,
        "ort" => EngineChoice::Ort,
        "tract" => EngineChoice::Tract,
        other => return Err(format!("--engine {other}: expected tract-cuda, ort or tract").into()),
    };
    let threads: usize = args.opt("--threads").map_or(Ok(1), |s| s.parse())?;
    let options =
        EngineOptions { intra_threads: threads, cuda_graph: !args.flag("--no-cuda-graph"), ..EngineOptions::default() };
    let (engine, selection) = load(&model, choice, &options)?;
    eprintln!("engine: {} (loaded in {:.1} s)", selection.reason, t0.elapsed().as_secs_f64());
    let frames: Vec<Arc<Frame>> = (0..8).map(|k| Arc::new(synthetic_frame(w, h, k))).collect();
    let max = counts.iter().copied().max().unwrap_or(1);
    let spec = Spec::new(engine, gpu_pre, 4 * max + 16)?;
    let mut runs = Vec::new();
    println!("model {} on {} frames {w}x{h}, pre on the {}", model.display(), n, if gpu_pre { "GPU" } else { "CPU" });
    println!("{:>10} {:>8} {:>10} {:>10} {:>10} {:>12}", "mode", "replicas", "fps", "p50 ms", "p99 ms", "infer p50 ms");
    let show = |v: &Value| {
        let ms = |x: &Value| x.as_f64().unwrap_or(f64::NAN) / 1e3;
        println!(
            "{:>10} {:>8} {:>10.1} {:>10.2} {:>10.2} {:>12.2}",
            v["mode"].as_str().unwrap_or("?"),
            v["replicas"],
            v["throughput_fps"].as_f64().unwrap_or(f64::NAN),
            ms(&v["latency_us"]["p50"]),
            ms(&v["latency_us"]["p99"]),
            ms(&v["infer_us"]["p50"])
        );
    };
    if modes.contains("serial") {
        let v = run_serial(&spec, &frames, n)?;
        show(&v);
        runs.push(v);
    }
    for &r in &counts {
        if modes.contains("pipelined") {
            let v = run_pipelined(&spec, &frames, n, r)?;
            show(&v);
            runs.push(v);
        }
        if modes.contains("pool") {
            let v = run_pool(&spec, &frames, n, r)?;
            show(&v);
            runs.push(v);
        }
    }
    Ok(json!({ "model": model_name(&model), "engine": selection.reason, "threads": threads, "frame": size, "frames": n,
               "gpu_pre": gpu_pre, "runs": runs }))
}

fn model_name(p: &Path) -> String {
    p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned())
}

// ---------------------------------------------------------------- device-resident frames (e2e)

use framepipe_cuda::{DeviceInfer, DeviceInput, DeviceOutputs, DevicePost, DevicePre, PinnedFrame, Source};

fn size_arg(args: &Args, default: &str) -> Res<(usize, usize)> {
    let size = args.opt("--size").unwrap_or_else(|| default.into());
    size.split_once('x')
        .and_then(|(w, h)| Some((w.parse::<usize>().ok()?, h.parse::<usize>().ok()?)))
        .ok_or_else(|| "--size: expected WxH".into())
}

fn p50(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    percentile(&s, 0.5)
}

fn same_detections(a: &[Detection], b: &[Detection], tol: f32) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.class_id == y.class_id
                && (x.score - y.score).abs() <= tol
                && (x.bbox.x1 - y.bbox.x1).abs() <= 100.0 * tol
                && (x.bbox.y1 - y.bbox.y1).abs() <= 100.0 * tol
                && (x.bbox.x2 - y.bbox.x2).abs() <= 100.0 * tol
                && (x.bbox.y2 - y.bbox.y2).abs() <= 100.0 * tol
        })
}

struct RPre {
    w: DevicePre,
    pool: Pool<DeviceInput>,
}

impl Stage<Arc<PinnedFrame>> for RPre {
    type Out = Pooled<DeviceInput>;
    type Error = StageError;
    fn process(&mut self, frame: Arc<PinnedFrame>) -> Result<Pooled<DeviceInput>, StageError> {
        let mut slot = self.pool.take();
        self.w.process(Source::Pinned(&frame), &mut slot)?;
        Ok(slot)
    }
}

struct RInfer {
    w: DeviceInfer,
    pool: Pool<DeviceOutputs>,
}

impl Stage<Pooled<DeviceInput>> for RInfer {
    type Out = (Pooled<DeviceOutputs>, LetterboxParams);
    type Error = StageError;
    fn process(&mut self, input: Pooled<DeviceInput>) -> Result<Self::Out, StageError> {
        let mut out = self.pool.take();
        self.w.process(&input, &mut out)?;
        let lb = input.letterbox.ok_or(CudaError::Unsupported { what: "an input without geometry".into() })?;
        Ok((out, lb))
    }
}

struct RPost {
    w: DevicePost,
    pool: Pool<Vec<Detection>>,
}

impl Stage<(Pooled<DeviceOutputs>, LetterboxParams)> for RPost {
    type Out = Pooled<Vec<Detection>>;
    type Error = StageError;
    fn process(&mut self, (outs, lb): (Pooled<DeviceOutputs>, LetterboxParams)) -> Result<Self::Out, StageError> {
        let mut dets = self.pool.take();
        self.w.process(&outs, &lb, &mut dets)?;
        Ok(dets)
    }
}

/// A hand-set or tuned shape of the device-resident pipeline.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Shape {
    pre: usize,
    infer: usize,
    post: usize,
    /// The runtime's default when `None`.
    max_in_flight: Option<usize>,
}

/// Runs `n` pinned frames through the device-resident pipeline (DevicePre -> DeviceInfer, one CUDA
/// graph per replica -> DevicePost) shaped as `shape`, and returns its report as JSON.
fn run_resident(spec: &Spec, pinned: &[Arc<PinnedFrame>], n: usize, shape: Shape) -> Res<Value> {
    let Shape { pre, infer, post, max_in_flight } = shape;
    let live = 4 * (pre + infer + post) + 16;
    let (inputs, outputs, dets) = (
        Pool::new(live, live, DeviceInput::empty),
        Pool::new(live, live, DeviceOutputs::empty),
        spec.detections.clone(),
    );
    let (pre_cfg, e2, dec, pc) = (spec.pre, Arc::clone(&spec.engine), spec.decoder.clone(), spec.post);
    let src: Vec<Arc<PinnedFrame>> = (0..n).map(|i| Arc::clone(&pinned[i % pinned.len()])).collect();
    let mut b =
        Pipeline::<Arc<PinnedFrame>>::builder().source(SourceConfig::new("decode"), IterSource(src.into_iter()));
    if let Some(m) = max_in_flight {
        b = b.max_in_flight(m);
    }
    let mut pipeline = b
        .stage(StageConfig::new("pre").replicas(pre), move |_: &StageContext| {
            Ok::<_, StageError>(RPre { w: DevicePre::new(pre_cfg)?, pool: inputs.clone() })
        })
        .stage(StageConfig::new("infer").replicas(infer), move |_: &StageContext| {
            Ok::<_, StageError>(RInfer { w: DeviceInfer::new(e2.as_ref())?, pool: outputs.clone() })
        })
        .stage(StageConfig::new("post").replicas(post), move |_: &StageContext| {
            Ok::<_, StageError>(RPost { w: DevicePost::new(dec.clone(), pc)?, pool: dets.clone() })
        })
        .build()?;
    let mut errors = 0u64;
    let mut first_error = None;
    while let Some(o) = pipeline.recv() {
        if let Err(e) = o.result() {
            errors += 1;
            first_error.get_or_insert_with(|| format!("{e}"));
        }
    }
    let report = pipeline.close()?;
    let stage_us = |name: &str| report.stages.iter().find(|s| s.name == name).map(|s| s.service_us);
    println!(
        "pipelined resident pre x{pre} infer x{infer} post x{post}{}: {:.1} fps, p50 {:.3} ms, p99 {:.3} ms, {} processed, {} errors, {} reordered{}",
        max_in_flight.map(|m| format!(" max_in_flight {m}")).unwrap_or_default(),
        report.throughput_fps,
        report.latency_us.p50 / 1e3,
        report.latency_us.p99 / 1e3,
        report.processed,
        errors,
        report.reordered,
        first_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default()
    );
    Ok(json!({ "replicas": infer, "pre_replicas": pre, "post_replicas": post, "max_in_flight": report.max_in_flight,
        "throughput_fps": report.throughput_fps, "bound_fps": report.bound_fps, "latency_us": report.latency_us,
        "processed": report.processed, "errored": errors, "reordered": report.reordered, "pre_us": stage_us("pre"),
        "infer_us": stage_us("infer"), "post_us": stage_us("post") }))
}

fn e2e(args: &Args) -> Res<Value> {
    let model = args.model()?;
    let counts = args.list("--replicas", "1,2,4,8")?;
    let n: usize = args.opt("--frames").map_or(Ok(1000), |s| s.parse())?;
    let profile_runs: usize = args.opt("--profile-runs").map_or(Ok(20), |s| s.parse())?;
    let (w, h) = size_arg(args, "1920x1080")?;
    let t0 = Instant::now();
    let (engine, selection) = load(&model, EngineChoice::TractCuda, &EngineOptions::default())?;
    eprintln!("engine: {} (loaded in {:.1} s)", selection.reason, t0.elapsed().as_secs_f64());
    let spec = Spec::new(Arc::clone(&engine), false, 4 * counts.iter().copied().max().unwrap_or(1) + 16)?;
    let frames: Vec<Frame> = (0..8).map(|k| synthetic_frame(w, h, k)).collect();
    let pinned: Vec<Arc<PinnedFrame>> =
        frames.iter().map(|f| PinnedFrame::from_frame(f.as_ref()).map(Arc::new)).collect::<Result<_, _>>()?;
    let mut out = json!({ "model": model_name(&model), "engine": selection.reason, "frame": format!("{w}x{h}"),
                          "frames": n });

    // --- correctness: graph replay vs the CPU engine on the same input; GPU post vs CPU post.
    let mut cpu_pre = Preprocessor::new(spec.pre)?;
    let mut input = vec![0f32; spec.pre.output_len()];
    let lb = cpu_pre.preprocess(frames[0].as_ref(), &mut input)?;
    let (cpu_engine, _) = load(&model, EngineChoice::Tract, &EngineOptions::default())?;
    let cpu_out: Vec<(Vec<usize>, Vec<f32>)> = cpu_engine
        .session()?
        .run(&[TensorRef::new(&spec.shape, &input)])?
        .iter()
        .map(|t| (t.shape.clone(), t.data.clone()))
        .collect();
    let mut graph_host = engine.session()?;
    let gpu_out: Vec<(Vec<usize>, Vec<f32>)> = graph_host
        .run(&[TensorRef::new(&spec.shape, &input)])?
        .iter()
        .map(|t| (t.shape.clone(), t.data.clone()))
        .collect();
    let worst = cpu_out
        .iter()
        .zip(&gpu_out)
        .flat_map(|(a, b)| a.1.iter().zip(&b.1).map(|(x, y)| (x - y).abs()))
        .fold(0f32, f32::max);
    // A low threshold for the comparison, so that random-weight models have candidates too.
    let check_spec = Spec {
        post: PostprocessConfig {
            conf_threshold: 0.01,
            nms: NmsConfig { iou_threshold: 0.45, ..NmsConfig::default() },
        },
        ..spec.clone()
    };
    let mut post = Post::new(&check_spec)?;
    let detect = |post: &mut Post, o: &[(Vec<usize>, Vec<f32>)]| -> Res<Vec<Detection>> {
        let views: Vec<TensorView<'_>> = o.iter().map(|(s, d)| TensorView { shape: s, data: d }).collect();
        let mut dets = Vec::new();
        post.post.process(&views, &lb, &mut dets)?;
        Ok(dets)
    };
    let cpu_dets = detect(&mut post, &cpu_out)?;
    let gpu_cpu_post = detect(&mut post, &gpu_out)?;
    // The device-resident path on the same frame: GPU letterbox, graph, GPU filter.
    let mut dpre = DevicePre::new(spec.pre)?;
    let mut dinfer = DeviceInfer::new(engine.as_ref())?;
    let mut dpost = DevicePost::new(spec.decoder.clone(), check_spec.post)?;
    let (mut slot, mut douts, mut ddets) = (DeviceInput::empty(), DeviceOutputs::empty(), Vec::new());
    let dlb = dpre.process(Source::Pinned(&pinned[0]), &mut slot)?;
    dinfer.process(&slot, &mut douts)?;
    dpost.process(&douts, &dlb, &mut ddets)?;
    // GPU filter vs CPU decode on the very same device output: must be identical.
    let resident_out: Vec<(Vec<usize>, Vec<f32>)> = douts.shapes().iter().cloned().zip(douts.to_host()?).collect();
    let cpu_post_on_resident = detect(&mut post, &resident_out)?;
    let check = json!({
        "max_abs_diff_graph_vs_cpu": worst, "within_1e-3": worst <= 1e-3,
        "tf32_override": std::env::var("NVIDIA_TF32_OVERRIDE").ok(),
        "detections_cpu": cpu_dets.len(), "detections_graph_cpu_post": gpu_cpu_post.len(),
        "detections_resident": ddets.len(), "gpu_filter_survivors": dpost.last_survivors,
        "graph_dets_match_cpu": same_detections(&cpu_dets, &gpu_cpu_post, 1e-3),
        "resident_dets_match_cpu": same_detections(&cpu_dets, &ddets, 1e-3),
        "gpu_filter_on": dpost.filters_on_gpu(),
        "gpu_filter_equals_cpu_decode": cpu_post_on_resident == ddets,
    });
    println!("check: {check}");
    out["check"] = check;
    let mut post = Post::new(&spec)?;
    let mut dpost = DevicePost::new(spec.decoder.clone(), spec.post)?;

    // --- 1080p letterbox: upload and kernel alone.
    {
        let mut dev = dpre.preprocessor().stream().alloc_zeros::<f32>(spec.pre.output_len())?;
        let (up, k) = dpre.preprocessor_mut().time_upload_and_kernel(frames[0].as_ref(), &mut dev, 200)?;
        println!("letterbox {w}x{h}: upload (host copy + H2D) p50 {:.1} us, kernel p50 {:.1} us", p50(&up), p50(&k));
        out["letterbox"] = json!({ "upload_us": stats_us(up), "kernel_us": stats_us(k) });
    }

    // --- serial e2e, device-resident, and its parts.
    let warm = 50;
    let (mut e2e_us, mut pre_us, mut inf_us, mut post_us, mut replay_us) = (vec![], vec![], vec![], vec![], vec![]);
    for i in 0..warm + n {
        let f = &pinned[i % pinned.len()];
        let t = Instant::now();
        let lb = dpre.process(Source::Pinned(f), &mut slot)?;
        dinfer.process(&slot, &mut douts)?;
        dpost.process(&douts, &lb, &mut ddets)?;
        if i >= warm {
            e2e_us.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    for i in 0..warm + n {
        let f = &pinned[i % pinned.len()];
        let t = Instant::now();
        let lb = dpre.process(Source::Pinned(f), &mut slot)?;
        dpre.preprocessor().synchronize()?;
        let t1 = Instant::now();
        dinfer.process(&slot, &mut douts)?;
        let t2 = Instant::now();
        dpost.process(&douts, &lb, &mut ddets)?;
        let t3 = Instant::now();
        dinfer.session().launch()?;
        dinfer.session().synchronize()?;
        if i >= warm {
            pre_us.push((t1 - t).as_secs_f64() * 1e6);
            inf_us.push((t2 - t1).as_secs_f64() * 1e6);
            post_us.push((t3 - t2).as_secs_f64() * 1e6);
            replay_us.push(t3.elapsed().as_secs_f64() * 1e6);
        }
    }
    println!(
        "serial device-resident e2e p50 {:.3} ms (pre {:.3} + infer {:.3} + post {:.3}; graph replay alone {:.3})",
        p50(&e2e_us) / 1e3,
        p50(&pre_us) / 1e3,
        p50(&inf_us) / 1e3,
        p50(&post_us) / 1e3,
        p50(&replay_us) / 1e3
    );
    out["serial_resident"] = json!({ "e2e_us": stats_us(e2e_us), "pre_us": stats_us(pre_us),
        "infer_us": stats_us(inf_us), "post_us": stats_us(post_us), "graph_replay_us": stats_us(replay_us),
        "capture_ms": dinfer.session().capture_ms() });

    // --- serial e2e with host tensors: CPU letterbox, graph session run (H2D + replay + D2H), CPU post.
    {
        let (mut e, mut inf) = (vec![], vec![]);
        let mut dets = Vec::new();
        for i in 0..warm + n {
            let t = Instant::now();
            let lb = cpu_pre.preprocess(frames[i % frames.len()].as_ref(), &mut input)?;
            let t1 = Instant::now();
            let o = graph_host.run(&[TensorRef::new(&spec.shape, &input)])?;
            let t2 = Instant::now();
            let views: Vec<TensorView<'_>> = o.iter().map(|t| TensorView { shape: &t.shape, data: &t.data }).collect();
            post.post.process(&views, &lb, &mut dets)?;
            if i >= warm {
                e.push(t.elapsed().as_secs_f64() * 1e6);
                inf.push((t2 - t1).as_secs_f64() * 1e6);
            }
        }
        println!("serial host tensors + graph: e2e p50 {:.3} ms, infer {:.3} ms", p50(&e) / 1e3, p50(&inf) / 1e3);
        out["serial_graph_host"] = json!({ "e2e_us": stats_us(e), "infer_us": stats_us(inf) });
    }
    drop(graph_host);

    // --- where the GPU time goes, per op class.
    let prof = dinfer.session_mut().profile(profile_runs)?;
    println!(
        "GPU time per run (ops back to back): {:.3} ms; host enqueue without a graph {:.3} ms",
        prof.total_us / 1e3,
        prof.enqueue_us / 1e3
    );
    for c in &prof.classes {
        println!("  {:<40} {:>4} nodes {:>8.1} us {:>5.1}%", c.class, c.nodes, c.us, 100.0 * c.us / prof.total_us);
    }
    out["ops"] = json!({
        "total_us": prof.total_us, "enqueue_us": prof.enqueue_us,
        "classes": prof.classes.iter().map(|c| json!({"class": c.class, "nodes": c.nodes, "us": c.us})).collect::<Vec<_>>(),
        "ops": prof.ops.iter().take(25).map(|(o, k, us)| json!({"op": o, "count": k, "us": us})).collect::<Vec<_>>(),
    });
    drop((dpre, dinfer, dpost));

    // --- pipelined, device-resident, 1/2/4/8 graph replicas.
    let mut runs = Vec::new();
    for &r in &counts {
        let side = r.div_ceil(4);
        runs.push(run_resident(&spec, &pinned, n, Shape { pre: side, infer: r, post: side, max_in_flight: None })?);
    }
    out["pipelined_resident"] = Value::Array(runs);
    Ok(out)
}

/// Median of a sample.
fn median_of(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

/// `--tune` on the GPU host: measure the device-resident stages (serially) and how the GPU scales
/// with concurrent graph replicas, plan with `framepipe_tune::plan` at each latency slack asked
/// for, then run every plan and a grid of hand-set shapes through the same pipeline, and compare.
fn tune(args: &Args) -> Res<Value> {
    let model = args.model()?;
    let n: usize = args.opt("--frames").map_or(Ok(1500), |s| s.parse())?;
    let (w, h) = size_arg(args, "1920x1080")?;
    let slacks: Vec<f64> = args
        .opt("--slack")
        .unwrap_or_else(|| "0.1,2.0".into())
        .split(',')
        .map(|s| s.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("--slack: {e}"))?;
    let grid_infer = args.list("--grid-infer", "1,2,3,4,6,8")?;
    let grid_side = args.list("--grid-side", "1,2")?;
    let scale_points = args.list("--scale", "1,2,4,8")?;
    let (engine, selection) = load(&model, EngineChoice::TractCuda, &EngineOptions::default())?;
    eprintln!("engine: {}", selection.reason);
    let max_r = grid_infer.iter().chain(&scale_points).copied().max().unwrap_or(8);
    let spec = Spec::new(Arc::clone(&engine), false, 8 * max_r + 32)?;
    let frames: Vec<Frame> = (0..8).map(|k| synthetic_frame(w, h, k)).collect();
    let pinned: Vec<Arc<PinnedFrame>> =
        frames.iter().map(|f| PinnedFrame::from_frame(f.as_ref()).map(Arc::new)).collect::<Result<_, _>>()?;

    // --- calibration: serial service times of the three stages, then the GPU's scaling.
    let t_cal = Instant::now();
    let mut dpre = DevicePre::new(spec.pre)?;
    let mut dinfer = DeviceInfer::new(engine.as_ref())?;
    let mut dpost = DevicePost::new(spec.decoder.clone(), spec.post)?;
    let (mut slot, mut douts, mut ddets) = (DeviceInput::empty(), DeviceOutputs::empty(), Vec::new());
    let (warm, runs) = (20, 200);
    let (mut pre_us, mut inf_us, mut post_us) = (vec![], vec![], vec![]);
    for i in 0..warm + runs {
        let t = Instant::now();
        let lb = dpre.process(Source::Pinned(&pinned[i % pinned.len()]), &mut slot)?;
        dpre.preprocessor().synchronize()?;
        let t1 = Instant::now();
        dinfer.process(&slot, &mut douts)?;
        let t2 = Instant::now();
        dpost.process(&douts, &lb, &mut ddets)?;
        if i >= warm {
            pre_us.push((t1 - t).as_secs_f64() * 1e6);
            inf_us.push((t2 - t1).as_secs_f64() * 1e6);
            post_us.push(t2.elapsed().as_secs_f64() * 1e6);
        }
    }
    drop((dpre, dpost));
    // Throughput of k graph replicas replaying at once, each on its own thread and stream, against
    // one: what the GPU overlaps.
    let mut rates = Vec::new();
    for &k in &scale_points {
        let start = Arc::new(std::sync::Barrier::new(k + 1));
        let mut handles = Vec::new();
        for _ in 0..k {
            let (engine, start, input) = (Arc::clone(&engine), Arc::clone(&start), slot_clone(&spec, &pinned[0])?);
            handles.push(std::thread::spawn(move || -> Res<()> {
                let mut inf = DeviceInfer::new(engine.as_ref())?;
                let mut out = DeviceOutputs::empty();
                for _ in 0..10 {
                    inf.process(&input, &mut out)?;
                }
                start.wait();
                for _ in 0..runs {
                    inf.process(&input, &mut out)?;
                }
                Ok(())
            }));
        }
        start.wait();
        let t = Instant::now();
        for h in handles {
            h.join().map_err(|_| "a scaling thread panicked")??;
        }
        let rate = (k * runs) as f64 / t.elapsed().as_secs_f64();
        println!("scaling: {k} graph replica(s) at once: {rate:.1} runs/s");
        rates.push((k, rate));
    }
    let one = rates.iter().find(|(k, _)| *k == 1).map(|r| r.1).ok_or("--scale must include 1")?;
    let speedup: Vec<(usize, f64)> = rates.iter().filter(|(k, _)| *k > 1).map(|&(k, r)| (k, r / one)).collect();
    let calibration_s = t_cal.elapsed().as_secs_f64();
    let service = framepipe_tune::ServiceTimes {
        decode_us: 0.0,
        pre_us: median_of(pre_us),
        infer_us: vec![framepipe_tune::InferTime { threads: 1, us: median_of(inf_us) }],
        post_us: median_of(post_us),
        frames: runs,
    };
    let cores = framepipe::available_cores();
    println!(
        "calibration ({calibration_s:.1} s): pre {:.3} ms, infer {:.3} ms, post {:.3} ms; speedup {}; {} cores",
        service.pre_us / 1e3,
        service.infer_us[0].us / 1e3,
        service.post_us / 1e3,
        speedup.iter().map(|(k, s)| format!("x{k} {s:.2}")).collect::<Vec<_>>().join(", "),
        cores.len()
    );

    // --- the plans, one per latency slack.
    let mut plans = Vec::new();
    for &slack in &slacks {
        let mut input = framepipe_tune::TuneInput::new(service.clone(), cores.clone(), framepipe_tune::Device::Gpu);
        input.latency_slack = slack;
        input.gpu_speedup = speedup.clone();
        let p = framepipe_tune::plan(&input)?;
        println!(
            "tuned (slack {slack}): pre x{} infer x{} post x{}, max_in_flight {}, predicted {:.1} fps at {:.3} ms",
            p.replicas.pre,
            p.replicas.infer,
            p.replicas.post,
            p.max_in_flight,
            p.predicted_fps,
            p.predicted_latency_us / 1e3
        );
        for r in &p.reasons {
            println!("  why: {r}");
        }
        plans.push((slack, p));
    }

    // --- run the grid, then the plans, through the same pipeline.
    let mut grid = Vec::new();
    for &i in &grid_infer {
        for &side in &grid_side {
            grid.push(run_resident(&spec, &pinned, n, Shape { pre: side, infer: i, post: side, max_in_flight: None })?);
        }
    }
    let fps = |v: &Value| v["throughput_fps"].as_f64().unwrap_or(0.0);
    let p99 = |v: &Value| v["latency_us"]["p99"].as_f64().unwrap_or(f64::INFINITY);
    let best = grid.iter().max_by(|a, b| fps(a).total_cmp(&fps(b))).cloned().ok_or("an empty grid")?;
    let mut tuned = Vec::new();
    for (slack, p) in &plans {
        let shape = Shape {
            pre: p.replicas.pre,
            infer: p.replicas.infer,
            post: p.replicas.post,
            max_in_flight: Some(p.max_in_flight),
        };
        let run = run_resident(&spec, &pinned, n, shape)?;
        // The fairest grid point to compare with: the fastest whose p99 is no worse than the plan's
        // (and the fastest overall, whatever its latency).
        let same_latency = grid.iter().filter(|g| p99(g) <= p99(&run)).max_by(|a, b| fps(a).total_cmp(&fps(b)));
        let vs_best = fps(&run) / fps(&best);
        let vs_same = same_latency.map(|g| fps(&run) / fps(g));
        println!(
            "slack {slack}: tuned {:.1} fps p99 {:.3} ms = {:.3} of the grid's fastest ({:.1} fps, p99 {:.3} ms){}",
            fps(&run),
            p99(&run) / 1e3,
            vs_best,
            fps(&best),
            p99(&best) / 1e3,
            match (same_latency, vs_same) {
                (Some(g), Some(r)) => format!(
                    "; {r:.3} of the fastest grid point with no worse p99 (pre x{} infer x{} post x{}: {:.1} fps, p99 {:.3} ms)",
                    g["pre_replicas"], g["replicas"], g["post_replicas"], fps(g), p99(g) / 1e3
                ),
                _ => "; no grid point has a p99 this low".into(),
            }
        );
        tuned.push(json!({ "slack": slack, "plan": p, "run": run, "vs_fastest_grid": vs_best,
            "vs_fastest_grid_with_no_worse_p99": vs_same, "fastest_grid_with_no_worse_p99": same_latency }));
    }
    Ok(json!({ "model": model_name(&model), "engine": selection.reason, "frame": format!("{w}x{h}"), "frames": n,
        "cores": cores.len(), "calibration": { "seconds": calibration_s, "service": service,
        "scaling_runs_per_s": rates, "speedup": speedup }, "grid": grid, "fastest_grid": best, "tuned": tuned }))
}

/// A device input holding `frame` letterboxed, for the scaling runs (each thread replays its own).
fn slot_clone(spec: &Spec, frame: &PinnedFrame) -> Res<DeviceInput> {
    let mut pre = DevicePre::new(spec.pre)?;
    let mut slot = DeviceInput::empty();
    pre.process(Source::Pinned(frame), &mut slot)?;
    pre.preprocessor().synchronize()?;
    Ok(slot)
}
