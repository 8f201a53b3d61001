//! The `cuda` feature's part of the CLI: tract-cuda's warm-up on a progress bar, and the hidden
//! `gpu-mem` command (device memory per replica, shared weights against independent loads).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use framepipe_cuda::memory::{self, Sharing};
use framepipe_infer::EngineOptions;
use indicatif::{ProgressBar, ProgressStyle};

/// `--small-cublas-workspace`: gives each CUDA thread a 4 MiB cuBLAS workspace instead of
/// cuBLAS's default (about 63 MB more per replica thread on an H200; see
/// `framepipe_infer::CUBLAS_WORKSPACE_CONFIG`), unless the user set `CUBLAS_WORKSPACE_CONFIG`.
/// Called in `main` right after parsing, before any thread exists, so that nothing reads the
/// environment while it changes.
pub fn limit_cublas_workspace() {
    if std::env::var_os("CUBLAS_WORKSPACE_CONFIG").is_none() {
        std::env::set_var("CUBLAS_WORKSPACE_CONFIG", framepipe_infer::CUBLAS_WORKSPACE_CONFIG);
    }
}

/// Creates tract-cuda's context and compiles its kernels (about 45 s on a machine's first use,
/// then cached in `~/.cache/tract`), with the progress on a spinner, so that the compilation is
/// never mistaken for a slow first frame.
pub fn warm_up() -> Result<()> {
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {elapsed:>3} {wide_msg}").expect("a valid template"));
    bar.enable_steady_tick(Duration::from_millis(100));
    bar.set_message("CUDA: looking for the driver");
    match framepipe_infer::cuda_warm_up(&|msg| bar.set_message(msg.to_string())) {
        Ok(warm) => {
            bar.finish_and_clear();
            eprintln!("CUDA ready: {warm}");
            Ok(())
        }
        Err(e) => {
            bar.finish_and_clear();
            Err(e).context("engine tract-cuda")
        }
    }
}

#[derive(clap::Args)]
pub struct GpuMemArgs {
    /// The ONNX model (default: the fetched person detector).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Replica counts to measure, comma-separated.
    #[arg(long, default_value = "1,2,4,8")]
    replicas: String,
    /// Write both tables as JSON here (`-`: stdout).
    #[arg(long)]
    json: Option<String>,
    /// Internal: measure one way of sharing (`shared` or `independent`) in this process.
    #[arg(long, hide = true)]
    only: Option<String>,
}

pub fn gpu_mem(a: GpuMemArgs) -> Result<ExitCode> {
    let model = match &a.model {
        Some(p) => p.clone(),
        None => framepipe_app::assets::person_detector()?,
    };
    let counts = a
        .replicas
        .split(',')
        .map(|s| s.trim().parse::<usize>().ok().filter(|n| *n > 0))
        .collect::<Option<Vec<usize>>>()
        .with_context(|| format!("--replicas {}: expected positive counts joined by commas", a.replicas))?;
    if let Some(only) = &a.only {
        let sharing: Sharing = only.parse().map_err(anyhow::Error::msg)?;
        let table = memory::measure(&model, &EngineOptions::default(), sharing, &counts)?;
        println!("{}", memory::child_line(&table));
        return Ok(ExitCode::SUCCESS);
    }
    // Compile the kernels here, with the bar; the measuring processes then find them cached.
    warm_up()?;
    let exe = std::env::current_exe().context("locating the framepipe executable")?;
    let (shared, independent) = memory::measure_in_processes(|sharing| {
        let mut cmd = std::process::Command::new(&exe);
        cmd.arg("gpu-mem").arg("--model").arg(&model).args(["--replicas", &a.replicas, "--only", sharing.name()]);
        cmd
    })?;
    let text = memory::render(&shared, Some(&independent));
    if a.json.as_deref() == Some("-") {
        eprint!("{text}");
    } else {
        print!("{text}");
    }
    if let Some(target) = &a.json {
        super::write_json(target, &serde_json::json!({ "shared": shared, "independent": independent }))?;
    }
    Ok(ExitCode::SUCCESS)
}
