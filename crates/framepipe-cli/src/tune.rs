//! `framepipe bench --tune` and `--config`: argument handling around `framepipe_app::tune`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use framepipe_app::config::NodeConfig;
use framepipe_app::stages::PipelineOptions;
use framepipe_app::tune::{self, Tuned};
use framepipe_app::{DetectModel, ModelOptions};
use framepipe_infer::EngineChoice;
use framepipe_video::SourceSpec;

/// The bench's tuning flags.
#[derive(clap::Args)]
pub struct TuneArgs {
    /// Calibrate (a few frames through the serial path), choose replicas, pins, threads per
    /// session and queues for this machine, print the plan and why, write it as a config file, and
    /// run the bench with it.
    #[arg(long)]
    pub tune: bool,
    /// Where --tune writes its plan (a node config) [default: tuned.toml next to --json PATH, else
    /// in the current directory].
    #[arg(long, value_name = "PATH")]
    pub tune_out: Option<PathBuf>,
    /// Take the model and pipeline settings (replicas, pins, queue, max_in_flight, threads, tune)
    /// from a node config file, e.g. one written by --tune.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["replicas", "pin", "threads"])]
    pub config: Option<PathBuf>,
}

/// What a `--config` file gives the bench.
pub struct FromConfig {
    /// The config, paths made relative to its directory.
    pub cfg: NodeConfig,
    /// The model file.
    pub model_path: PathBuf,
    /// How to load it.
    pub model: ModelOptions,
    /// Replicas, pins, queue, max_in_flight (the bench keeps its own admission and pace).
    pub pipeline: PipelineOptions,
    /// The video, if the config's source is a file.
    pub video: Option<PathBuf>,
}

/// Reads `--config`, if given.
pub fn load_config(a: &TuneArgs) -> Result<Option<FromConfig>> {
    let Some(path) = &a.config else { return Ok(None) };
    let cfg = NodeConfig::from_file(path)?;
    let r = cfg.resolve().with_context(|| format!("config {}", path.display()))?;
    let video = match &r.spec {
        SourceSpec::File(p) if p.exists() => Some(p.clone()),
        _ => None,
    };
    Ok(Some(FromConfig { model_path: r.model_path, model: r.model, pipeline: r.pipeline, video, cfg }))
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The config the tuned plan is written over: `--config`'s, or one that replays this bench (the
/// video as a file source read as fast as it decodes, `block` admission, this model).
pub fn base_config(
    from: Option<&FromConfig>,
    video: &Path,
    realtime: bool,
    model: &DetectModel,
    opts: &ModelOptions,
) -> NodeConfig {
    if let Some(f) = from {
        let mut cfg = f.cfg.clone();
        cfg.model.path = cfg.model.path.as_deref().map(absolute);
        cfg.model.labels = cfg.model.labels.as_deref().map(absolute);
        if let Ok(SourceSpec::File(p)) = cfg.source.uri.parse::<SourceSpec>() {
            cfg.source.uri = absolute(&p).display().to_string();
        }
        return cfg;
    }
    let mut cfg = NodeConfig::default();
    cfg.source.uri = absolute(video).display().to_string();
    cfg.source.realtime = realtime;
    cfg.model.path = Some(absolute(model.path()));
    cfg.model.engine = match opts.engine {
        EngineChoice::Auto => model.selection().kind.to_string(),
        EngineChoice::Ort => "ort".into(),
        EngineChoice::Tract => "tract".into(),
        EngineChoice::TractCuda => "tract-cuda".into(),
    };
    cfg.model.conf = opts.conf;
    cfg.model.iou = opts.iou;
    cfg.model.labels = opts.labels.as_deref().map(absolute);
    cfg.pipeline.admission = "block".into();
    cfg
}

/// Where the plan goes: `--tune-out`, else next to `--json PATH`, else `./tuned.toml`.
pub fn out_path(a: &TuneArgs, json: Option<&str>) -> PathBuf {
    if let Some(p) = &a.tune_out {
        return p.clone();
    }
    match json {
        Some(j) if j != "-" => Path::new(j).with_file_name("tuned.toml"),
        _ => PathBuf::from("tuned.toml"),
    }
}

/// Calibrates on the first frames of `video`, plans, applies the plan to `pipeline`, writes it to
/// `out` over `base`; returns the result and the model to run (loaded at the plan's threads).
pub fn tune_bench(
    model: Arc<DetectModel>,
    model_path: &Path,
    opts: &ModelOptions,
    video: &Path,
    pipeline: &mut PipelineOptions,
    out: &Path,
    base: &NodeConfig,
) -> Result<(Tuned, Arc<DetectModel>)> {
    let cores = framepipe::available_cores();
    let device = tune::device_of(model.selection().kind);
    let threads = tune::thread_candidates(cores.len(), device, opts.engine_options.intra_threads);
    eprintln!(
        "tune: calibrating on {} frames of {} at {} thread(s) per session ...",
        tune::CALIBRATION_FRAMES,
        video.display(),
        threads.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ")
    );
    let cal = tune::calibrate_video(model, model_path, opts, video, tune::CALIBRATION_FRAMES, &threads)?;
    let (mut tuned, model) = tune::finish(cal, cores, device)?;
    tune::ApplyPlan::apply(&tuned.plan, pipeline);
    tuned.write_config(out, base).with_context(|| "writing the tuned plan (--tune-out)")?;
    Ok((tuned, model))
}
