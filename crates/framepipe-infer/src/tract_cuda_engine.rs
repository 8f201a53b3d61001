//! The tract-cuda engine (cargo feature `cuda`): tract's plan, rewritten for the GPU.
//!
//! - **Replicas.** One plan per model, shared through an `Arc` ([`TractEngine`] with
//!   [`EngineKind::TractCuda`]); each session is a `SimpleState` spawned from it. tract-cuda gives
//!   every OS thread its own CUDA stream (and cuBLAS/cuDNN handles), so sessions that run on
//!   separate threads overlap on the GPU: the seeds' multi-context clone.
//! - **No panic without a driver.** cudarc panics when it cannot load `libcuda`, and tract-cuda's
//!   context creation `expect`s success; [`warm_up`] checks the driver and the CUDA libraries
//!   first (`dlopen` probes, `cuInit`), returns [`InferError::NoCudaDriver`] or
//!   [`InferError::CudaUnavailable`], and catches a panic of the context creation as a last resort.
//! - **Kernel cache.** tract-cuda compiles its kernels with NVRTC the first time a machine uses them
//!   (about 45 s) and caches the cubins under `~/.cache/tract`. [`warm_up`] does it when the engine
//!   is built and reports its progress, so that it never shows up as a 45 s first frame.
//! - **Plan.** decluttered model → our MaxPool rewrite ([`crate::passes`], so that YOLO's SPPF
//!   stays on the GPU) → `CudaTransform` → `optimize` → (with CUDA graphs) the outputs' host syncs
//!   detached → plan with tract-gpu's device arena (`DeviceTurnHandler`).
//! - **Runs.** With [`EngineOptions::cuda_graph`] (the default) every session is a
//!   [`CudaGraphSession`](crate::CudaGraphSession): one run captured as a CUDA graph on the
//!   session's thread at start-up and replayed per frame, with a device-resident input and outputs
//!   (see `cuda_graph`). With `cuda_graph = false` (`--no-cuda-graph`), tract's plain `state.run`,
//!   which takes host tensors and dispatches every kernel from the host.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tract_onnx::prelude::{InferenceModelExt, RunOptions, TypedSimplePlan};
use tract_onnx::tract_core::transform::ModelTransform;

use crate::cuda_graph::{detach_output_syncs, host_syncs, CudaGraphEngine};
use crate::model::ModelFile;
use crate::tract_engine::{self, TractEngine};
use crate::{Engine, EngineKind, EngineOptions, InferError, ModelInfo, TensorRef};

/// What the CUDA warm-up found and did.
#[derive(Debug, Clone, PartialEq)]
pub struct CudaWarmUp {
    /// The GPU, e.g. `NVIDIA H200 (sm_90), driver API 13.0`.
    pub device: String,
    /// Kernel libraries NVRTC compiled during this warm-up (0: all were cached).
    pub compiled: usize,
    /// How long the warm-up took.
    pub duration: Duration,
    /// Where tract-cuda caches its compiled kernels.
    pub cache_dir: PathBuf,
    /// `CUBLAS_WORKSPACE_CONFIG` as the process had it when the warm-up ran (`None`: cuBLAS's
    /// default workspace, about 64 MB per thread on Hopper; see [`CUBLAS_WORKSPACE_CONFIG`]).
    pub cublas_workspace: Option<String>,
}

/// A `CUBLAS_WORKSPACE_CONFIG` value for many replicas: one 4 MiB cuBLAS workspace per thread
/// instead of cuBLAS's default, which tract-cuda's per-thread cuBLAS handle allocates whether or
/// not a matrix product runs. Measured on an H200 with the person detector: a replica's thread
/// state drops from 78 MB to 15 MB, and each extra shared replica from +31-43 % to +12.7 % of the
/// first one's memory. Its effect on speed is not settled: tract-cuda runs some products through
/// cuBLAS, and a smaller workspace can select slower algorithms (a run on another machine was
/// about 15 % slower; no same-machine comparison yet), so it is opt-in (`framepipe
/// --small-cublas-workspace`). It must be in the environment before the first CUDA thread
/// starts: set it at the top of `main`, before any thread exists.
pub const CUBLAS_WORKSPACE_CONFIG: &str = ":4096:1";

impl std::fmt::Display for CudaWarmUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.compiled > 0 {
            write!(
                f,
                "{}; {} kernel libraries compiled in {:.1} s, cached in {}",
                self.device,
                self.compiled,
                self.duration.as_secs_f64(),
                self.cache_dir.display()
            )
        } else {
            write!(f, "{}; kernels cached in {}", self.device, self.cache_dir.display())
        }?;
        match &self.cublas_workspace {
            Some(c) => write!(f, "; CUBLAS_WORKSPACE_CONFIG={c}"),
            None => write!(f, "; cuBLAS's default workspace"),
        }
    }
}

/// A failure, kept to be returned again: `true` when it is the missing driver.
type Failure = (bool, String);

fn to_error((no_driver, reason): &Failure) -> InferError {
    if *no_driver {
        InferError::NoCudaDriver { reason: reason.clone() }
    } else {
        InferError::CudaUnavailable { reason: reason.clone() }
    }
}

/// Checks the driver and the CUDA libraries tract-cuda loads, without creating a context (cheap;
/// never panics). Returns the device's description.
pub fn check() -> Result<String, InferError> {
    static CHECKED: OnceLock<Result<String, Failure>> = OnceLock::new();
    CHECKED.get_or_init(probe).clone().map_err(|f| to_error(&f))
}

fn probe() -> Result<String, Failure> {
    // SAFETY: `is_culib_present` only `dlopen`s candidate names of the driver library and drops
    // the handles; no CUDA call is made.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        let mut tried: Vec<String> =
            ["cuda", "nvcuda"].iter().flat_map(|l| cudarc::get_lib_name_candidates(l)).collect();
        tried.dedup();
        let others = tried.iter().filter(|n| *n != "libcuda.so" && *n != "libcuda.so.1").count();
        return Err((
            true,
            format!(
                "the CUDA driver library could not be loaded (tried libcuda.so, libcuda.so.1 and {others} other \
                 names); is an NVIDIA driver installed and, in a container, are the GPUs passed through?"
            ),
        ));
    }
    // tract-cuda's own check: cuInit and the driver's API version (through libloading, not cudarc),
    // then dlopen probes of cudart, NVRTC, cuBLAS and cuDNN.
    if let Err(e) = tract_cuda::utils::ensure_cuda_runtime_dependencies("tract-cuda cannot start") {
        let msg = format!("{e:#}");
        let no_driver = msg.contains("CUDA driver validation failed");
        return Err((no_driver, msg));
    }
    // The driver loads and initialises: cudarc's calls below cannot panic.
    let describe = || -> Result<String, cudarc::driver::DriverError> {
        use cudarc::driver::{result, sys};
        result::init()?;
        let dev = result::device::get(0)?;
        let name = result::device::get_name(dev)?;
        // SAFETY: `dev` is a valid device handle from `cuDeviceGet` after `cuInit`.
        let (major, minor) = unsafe {
            (
                result::device::get_attribute(
                    dev,
                    sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                )?,
                result::device::get_attribute(
                    dev,
                    sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                )?,
            )
        };
        let mut version = 0;
        // SAFETY: `cuDriverGetVersion` writes one int through a valid pointer.
        unsafe { sys::cuDriverGetVersion(&mut version) }.result()?;
        Ok(format!("{name} (sm_{major}{minor}), driver API {}.{}", version / 1000, (version % 1000) / 10))
    };
    describe().map_err(|e| (true, format!("the CUDA driver loads but does not answer: {e}")))
}

/// The text of a caught panic.
pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// `*.cubin` files under `dir`, recursively.
fn count_cubins(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                count_cubins(&p)
            } else {
                usize::from(p.extension().is_some_and(|x| x == "cubin"))
            }
        })
        .sum()
}

/// The number of kernel libraries tract-cuda 0.23.9 compiles eagerly.
const EAGER_LIBRARIES: usize = 10;

/// Checks the driver, creates tract-cuda's CUDA context and compiles (or loads from the cache) its
/// kernels, reporting progress to `on_progress` about four times a second while it works. Done
/// once per process; later calls return the first result at once. [`load`](crate::load) with
/// [`EngineChoice::TractCuda`](crate::EngineChoice::TractCuda) calls it, so calling it first only
/// serves to show the progress.
///
/// The first run on a machine compiles about 45 s of kernels; they are cached in
/// `~/.cache/tract` (see [`CudaWarmUp::cache_dir`]).
///
/// # Errors
///
/// [`InferError::NoCudaDriver`] ("no CUDA driver found: …") without a driver or device,
/// [`InferError::CudaUnavailable`] when a CUDA library, the CUDA headers NVRTC needs, or the
/// context creation fail.
pub fn warm_up(on_progress: &dyn Fn(&str)) -> Result<CudaWarmUp, InferError> {
    static WARM: OnceLock<Result<CudaWarmUp, Failure>> = OnceLock::new();
    WARM.get_or_init(|| {
        let device = check().map_err(|e| match e {
            InferError::NoCudaDriver { reason } => (true, reason),
            other => (false, other.to_string()),
        })?;
        let cache_dir = tract_cuda::kernels::cubin_dir().to_path_buf();
        let before = count_cubins(&cache_dir);
        let start = Instant::now();
        // The context (and the kernels) are made on a helper thread, so that this thread can
        // report progress meanwhile. Streams are per thread: this one makes its own when used.
        let worker = std::thread::Builder::new()
            .name("tract-cuda-warm-up".into())
            .spawn(|| {
                catch_unwind(|| tract_cuda::with_cuda_stream(|_| Ok(())).map_err(|e| format!("{e:#}")))
                    .map_err(|p| panic_text(&*p))
                    .and_then(|r| r)
            })
            .map_err(|e| (false, format!("cannot start the warm-up thread: {e}")))?;
        on_progress(&format!("CUDA: {device}; preparing tract-cuda's kernels"));
        while !worker.is_finished() {
            std::thread::sleep(Duration::from_millis(250));
            let compiled = count_cubins(&cache_dir).saturating_sub(before);
            if compiled > 0 {
                on_progress(&format!(
                    "compiling CUDA kernels with NVRTC: {compiled}/{EAGER_LIBRARIES} libraries, {:.0} s (first use on \
                     this machine, about 45 s; cached in {})",
                    start.elapsed().as_secs_f64(),
                    cache_dir.display()
                ));
            }
        }
        let result = worker.join().map_err(|p| panic_text(&*p)).and_then(|r| r);
        if let Err(reason) = result {
            return Err((false, format!("tract-cuda could not create its CUDA context: {reason}")));
        }
        let compiled = count_cubins(&cache_dir).saturating_sub(before);
        let cublas_workspace = std::env::var("CUBLAS_WORKSPACE_CONFIG").ok();
        let warm = CudaWarmUp { device, compiled, duration: start.elapsed(), cache_dir, cublas_workspace };
        on_progress(&format!("CUDA ready: {warm}"));
        Ok(warm)
    })
    .clone()
    .map_err(|f| to_error(&f))
}

/// Creates the calling thread's CUDA stream and its cuBLAS and cuDNN handles (what the first run
/// on a thread does), after [`warm_up`].
pub fn prepare_thread() -> Result<(), InferError> {
    warm_up(&|_| {})?;
    catch_unwind(|| tract_cuda::with_cuda_stream(|_| Ok(())).map_err(|e| format!("{e:#}")))
        .map_err(|p| panic_text(&*p))
        .and_then(|r| r)
        .map_err(|reason| InferError::CudaUnavailable {
            reason: format!("cannot create this thread's CUDA stream: {reason}"),
        })
}

/// Loads `file` for tract-cuda: warm-up, our model passes, tract-cuda's translation, the plan,
/// and one session made on the loading thread (with [`EngineOptions::cuda_graph`], that session
/// captures and checks its graph, so that a model that cannot be captured fails here, at start-up).
pub(crate) fn load(file: &ModelFile, opts: &EngineOptions) -> Result<(Arc<dyn Engine>, String), InferError> {
    let warm = warm_up(&|_| {})?;
    let fail = tract_engine::engine_error(EngineKind::TractCuda, file);
    let model = tract_engine::parse(file, opts, EngineKind::TractCuda)?;
    let mut typed = model.into_typed().and_then(|m| m.into_decluttered()).map_err(|e| fail("load", e))?;
    // Ours, before the CUDA translation: SPPF's MaxPools become GPU ops (exact; see `passes`).
    let pools = crate::passes::rewrite_max_pools(&mut typed).map_err(|e| fail("rewrite the MaxPools of", e))?;
    // tract-cuda `expect`s in places (a thread's stream creation): a panic becomes an error here.
    let mut arena_bytes = None;
    let built = catch_unwind(AssertUnwindSafe(|| -> Result<_, InferError> {
        tract_cuda::CudaTransform.transform(&mut typed).map_err(|e| fail("translate for CUDA", e))?;
        typed.optimize().map_err(|e| fail("optimize", e))?;
        // With graphs, the outputs stay on the device: their host syncs go.
        let host_facts =
            if opts.cuda_graph { Some(detach_output_syncs(&mut typed).map_err(|e| fail("plan", e))?) } else { None };
        let syncs = if opts.cuda_graph { host_syncs(&typed) } else { Vec::new() };
        let hints = tract_onnx::prelude::SymbolValues::default();
        let options =
            RunOptions { skip_order_opt_ram: true, memory_sizing_hints: Some(hints), ..RunOptions::default() };
        let mut plan = TypedSimplePlan::build(typed, &options).map_err(|e| fail("plan", e))?;
        // tract-gpu's arena: one device allocation per run for all intermediate values.
        if let Some(handler) =
            tract_gpu::turn_handler::DeviceTurnHandler::for_plan(&plan, options.memory_sizing_hints.as_ref())
                .map_err(|e| fail("plan", e))?
        {
            arena_bytes = handler.mem_schema.eval_memory_size(&Default::default()).ok();
            plan = plan.with_turn_handler(handler);
        }
        // The weights were uploaded asynchronously on this thread's stream; other threads' streams
        // read them without any event, so the uploads must be done first.
        tract_cuda::with_cuda_stream(|stream| Ok(stream.synchronize()?))
            .map_err(|e| fail("upload the weights of", e))?;
        Ok((plan, host_facts, syncs))
    }))
    .map_err(|p| InferError::CudaUnavailable { reason: format!("tract-cuda panicked: {}", panic_text(&*p)) })?;
    let (plan, host_facts, syncs) = built?;
    let mut notes = vec![warm.to_string()];
    notes.push(match (pools.rewritten, pools.kept.len()) {
        (0, 0) => "no MaxPool".to_string(),
        (n, 0) => format!("{n} MaxPools rewritten for the GPU"),
        (n, k) => format!("{n} MaxPools rewritten for the GPU, {k} left on the CPU ({})", pools.kept[0].1),
    });
    if let Some(b) = arena_bytes {
        notes.push(format!("activation arena {:.1} MB per session and run", b as f64 / 1e6));
    }
    let engine: Arc<dyn Engine> = match host_facts {
        Some(facts) => {
            if !syncs.is_empty() {
                return Err(InferError::CudaGraph {
                    path: file.path.clone(),
                    step: "plan",
                    reason: format!(
                        "{} device-to-host syncs remain inside the run (first: {}): an op without a CUDA kernel",
                        syncs.len(),
                        syncs[0]
                    ),
                });
            }
            let info = graph_model_info(file, &plan, &facts)?;
            let engine = CudaGraphEngine { info: Arc::new(info), plan: Arc::new(plan) };
            // Capture and check one graph now, on this thread: a start-up error, not a first-frame one.
            let session = engine.cuda_graph_session().expect("the graph engine makes graph sessions")?;
            notes.push(format!("one CUDA graph per session (captured in {:.1} ms)", session.capture_ms()));
            Arc::new(engine)
        }
        None => {
            let engine = TractEngine::from_plan(EngineKind::TractCuda, file, Arc::new(plan), opts.intra_threads)?;
            // One run now: cuDNN's per-shape setup and lazy loads are start-up time, not a slow first frame.
            if let Some(shape) = engine_input_shape(&engine) {
                let input = vec![0.5f32; shape.iter().product()];
                let mut session = crate::Engine::session(&engine)?;
                catch_unwind(AssertUnwindSafe(|| session.run(&[TensorRef::new(&shape, &input)]).map(|_| ())))
                    .map_err(|p| InferError::CudaUnavailable {
                        reason: format!("tract-cuda panicked: {}", panic_text(&*p)),
                    })??;
            }
            notes.push("plain runs, no CUDA graph (--no-cuda-graph)".into());
            Arc::new(engine)
        }
    };
    Ok((engine, notes.join("; ")))
}

/// The model's description for a graph plan: inputs as planned, outputs as they were before their
/// host syncs were detached.
fn graph_model_info(
    file: &ModelFile,
    plan: &TypedSimplePlan,
    output_facts: &[tract_onnx::prelude::TypedFact],
) -> Result<ModelInfo, InferError> {
    let fail = tract_engine::engine_error(EngineKind::TractCuda, file);
    let m = plan.model();
    let mut inputs = Vec::with_capacity(file.inputs.len());
    for (ix, declared) in file.inputs.iter().enumerate() {
        let fact = m.input_fact(ix).map_err(|e| fail("load", e))?;
        inputs.push(tract_engine::info_from_fact(&declared.name, fact));
    }
    let outputs = output_facts
        .iter()
        .enumerate()
        .map(|(ix, fact)| {
            let name = file.outputs.get(ix).map(|o| o.name.clone()).unwrap_or_else(|| format!("output{ix}"));
            tract_engine::info_from_fact(&name, fact)
        })
        .collect();
    Ok(ModelInfo { path: file.path.clone(), inputs, outputs, metadata: file.metadata.clone() })
}

/// The single input's concrete shape, if the model has one input of known shape.
fn engine_input_shape(engine: &TractEngine) -> Option<Vec<usize>> {
    let info = crate::Engine::model(engine);
    match info.inputs.as_slice() {
        [input] => input.shape.iter().copied().collect(),
        _ => None,
    }
}

/// Why [`EngineChoice::Auto`](crate::EngineChoice::Auto) did not pick the GPU, for logs.
pub fn auto_note() -> String {
    match check() {
        Ok(device) => {
            format!("auto picks a CPU engine; the GPU ({device}) is used only when asked for (--engine tract-cuda)")
        }
        Err(e) => format!("auto picks a CPU engine; tract-cuda is not usable here: {e}"),
    }
}
