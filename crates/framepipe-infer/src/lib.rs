//! The inference-engine layer of framepipe: it loads an ONNX model into an engine and moves `f32`
//! tensors through it.
//!
//! This crate knows nothing of images, threads or the runtime. It offers two engines behind one
//! interface:
//!
//! - **tract** ([`EngineKind::Tract`]): pure Rust, always compiled in, single-threaded per
//!   session by default;
//! - **ONNX Runtime** ([`EngineKind::Ort`], cargo feature `ort`, on by default): loaded at run
//!   time from `libonnxruntime.so` (see [`ort_library_candidates`] for where it is looked for),
//!   with optional CUDA and TensorRT execution providers;
//! - **tract-cuda** ([`EngineKind::TractCuda`], cargo feature `cuda`, off by default): tract's
//!   plan on an NVIDIA GPU; without a CUDA driver it is an error ([`InferError::NoCudaDriver`]),
//!   never a panic.
//!
//! [`load`] reads and checks a model once and returns an [`Engine`], which holds what the
//! replicas share (the weights) and is `Send + Sync`, meant to live behind an [`Arc`]. Each worker
//! thread asks it for its own [`Session`], which owns the mutable state and the reusable output
//! buffers; [`Session::run`] takes borrowed input slices ([`TensorRef`]) and returns the session's
//! output tensors ([`Tensor`]), overwritten in place at every run.
//!
//! # Example
//!
//! A tiny model (`y = 2x + 1` over a `[1, 3]` input) is written in code, saved as ONNX, loaded
//! with tract and run:
//!
//! ```
//! use framepipe_infer::{load, EngineChoice, EngineKind, EngineOptions, TensorRef};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("framepipe-infer-doctest-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! let path = dir.join("affine.onnx");
//! std::fs::write(&path, framepipe_infer::testing::affine_model(3, 2.0, 1.0))?;
//!
//! let (engine, selection) = load(&path, EngineChoice::Tract, &EngineOptions::default())?;
//! assert_eq!(selection.kind, EngineKind::Tract);
//! assert_eq!(engine.model().inputs[0].shape, vec![Some(1), Some(3)]);
//!
//! let mut session = engine.session()?;
//! let input = [0.0_f32, 1.0, 2.0];
//! let outputs = session.run(&[TensorRef::new(&[1, 3], &input)])?;
//! assert_eq!(outputs[0].shape, vec![1, 3]);
//! assert_eq!(outputs[0].data, vec![1.0, 3.0, 5.0]);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```
//!
//! # Memory and allocation
//!
//! In steady state our own code does not allocate per run: inputs are borrowed, the input tensor
//! that tract needs is kept by the session and refilled, and outputs are copied into vectors the
//! session owns. What the engines allocate internally is outside our control and is documented on
//! each engine (see [`EngineKind`]).

#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[cfg(feature = "cuda")]
mod cuda_graph;
mod error;
mod model;
#[cfg(feature = "ort")]
mod ort_engine;
pub mod passes;
pub mod testing;
#[cfg(feature = "cuda")]
mod tract_cuda_engine;
mod tract_engine;

#[cfg(feature = "cuda")]
pub use cuda_graph::{CudaGraphSession, OpClassTime, OpProfile};
pub use error::InferError;
#[cfg(feature = "cuda")]
pub use tract_cuda_engine::{CudaWarmUp, CUBLAS_WORKSPACE_CONFIG};

/// The element type a model declares for one of its inputs or outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit float: the only type this crate feeds and returns.
    F32,
    /// 16-bit float.
    F16,
    /// 64-bit signed integer.
    I64,
    /// 8-bit unsigned integer.
    U8,
    /// Anything else.
    Other,
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::I64 => "i64",
            DType::U8 => "u8",
            DType::Other => "other",
        })
    }
}

/// Name, shape and element type of one model input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The ONNX name, e.g. `images` or `output0`.
    pub name: String,
    /// One entry per axis; `None` is a dynamic axis (its size is known only at run time).
    pub shape: Vec<Option<usize>>,
    /// The declared element type.
    pub dtype: DType,
}

/// What is known about a loaded model.
///
/// Input shapes are those the engine runs with: the declared ones, or
/// [`EngineOptions::input_shape`] where it was given. Output shapes are what the engine could
/// work out before any run; a `None` axis becomes known at the first run (see
/// [`Session::run`]'s returned [`Tensor::shape`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// The model file.
    pub path: PathBuf,
    /// The real inputs (initializers that old exporters also list as graph inputs are left out).
    pub inputs: Vec<TensorInfo>,
    /// The outputs, in the model's order (the order of [`Session::run`]'s result).
    pub outputs: Vec<TensorInfo>,
    /// ONNX `metadata_props`, e.g. Ultralytics exports carry `names`
    /// (`{0: 'person', ...}`), `imgsz`, `stride` and `task`.
    pub metadata: BTreeMap<String, String>,
}

/// An owned `f32` tensor, in row-major order. Sessions keep one per model output and overwrite
/// it at every run, so its vectors keep their capacity.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tensor {
    /// The model's name for this tensor.
    pub name: String,
    /// The size of each axis.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values, row-major.
    pub data: Vec<f32>,
}

impl Tensor {
    /// The number of values (`data.len()`).
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the tensor holds no value.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Borrows this tensor as a [`TensorRef`], e.g. to feed it to another model.
    pub fn as_tensor_ref(&self) -> TensorRef<'_> {
        TensorRef { shape: &self.shape, data: &self.data }
    }
}

/// A borrowed `f32` tensor given to [`Session::run`]: no copy is made by us; the engine reads the
/// slice during the run (ONNX Runtime reads it in place; tract needs its own tensor, which the
/// session keeps and refills, see [`EngineKind::Tract`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TensorRef<'a> {
    /// The size of each axis.
    pub shape: &'a [usize],
    /// `shape.iter().product()` values, row-major.
    pub data: &'a [f32],
}

impl<'a> TensorRef<'a> {
    /// Pairs a shape with its data. Lengths are checked by [`Session::run`], not here.
    pub fn new(shape: &'a [usize], data: &'a [f32]) -> Self {
        TensorRef { shape, data }
    }
}

/// The engines this crate can run a model with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EngineKind {
    /// tract (pure Rust, `tract-onnx`).
    ///
    /// Weights: the optimized plan is built once per [`Engine`] and shared by every session
    /// through an `Arc`; a session is a `SimpleState` spawned from it and owns only the
    /// activations.
    ///
    /// Allocation per run: tract takes its input as an `Arc`'d tensor. The session keeps that
    /// tensor, refills it with the caller's data (one `memcpy`) and gets it back after the run,
    /// so it is allocated once, not per frame. Inside tract, every intermediate and output
    /// tensor is allocated per run and freed as soon as its last consumer has run; we copy the
    /// outputs into the session's [`Tensor`]s before tract frees them. A non-`f32` output is
    /// converted through a temporary.
    ///
    /// Threads: tract runs on the calling thread. With [`EngineOptions::intra_threads`] > 1, each
    /// session gets its own rayon pool of that many threads for matrix products.
    Tract,
    /// ONNX Runtime through the `ort` crate (cargo feature `ort`).
    ///
    /// Weights: one ORT session per replica, each with its own copy of the weights unless
    /// [`OrtOptions::share_weights`] is set (which see, with measurements). The engine keeps
    /// no copy of the model: further sessions are read from the file again (or, for a model
    /// whose shapes had to be rewritten, from the rewritten bytes the engine keeps).
    ///
    /// Allocation per run: the input slices are wrapped (not copied) in ORT values; the ort
    /// crate allocates a few small bookkeeping vectors per run. Outputs are written by ORT into
    /// output tensors that the session pre-allocates after its first run (as long as the input
    /// shapes stay the same; a session whose outputs turn out not to fit, as with data-dependent
    /// shapes, stops pre-allocating), then copied into the session's [`Tensor`]s. Activations
    /// come from ORT's arena allocator, which recycles its memory between runs (see
    /// [`OrtOptions::cpu_arena`]).
    Ort,
    /// tract's CUDA runtime (cargo feature `cuda`): the tract plan translated for an NVIDIA GPU.
    ///
    /// Weights: uploaded once to the device when the engine is built, shared by every session
    /// (one plan behind an `Arc`). A session is a tract state spawned from it; the activations
    /// live in an arena of device memory that each session allocates per run.
    ///
    /// Threads and streams: tract-cuda gives every OS thread its own CUDA stream and cuBLAS/cuDNN
    /// handles, so sessions run on separate threads overlap on the GPU. Keep a session on one
    /// thread.
    ///
    /// Start-up: the first use on a machine compiles tract-cuda's kernels with NVRTC (about 45 s,
    /// then cached in `~/.cache/tract`); [`load`] does it, and [`cuda_warm_up`] does it with
    /// progress reports. [`load`] also runs the model once.
    ///
    /// Allocation per run: inputs are host tensors, uploaded at every run (the session's input
    /// tensor is reused as with [`EngineKind::Tract`]); outputs are downloaded into new host
    /// tensors, then copied into the session's [`Tensor`]s.
    TractCuda,
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EngineKind::Tract => "tract",
            EngineKind::Ort => "ort",
            EngineKind::TractCuda => "tract-cuda",
        })
    }
}

/// Which engine [`load`] should use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EngineChoice {
    /// ONNX Runtime if its library can be loaded, else tract; [`Selection::reason`] says which
    /// and why.
    #[default]
    Auto,
    /// tract, always.
    Tract,
    /// ONNX Runtime, or an error saying why it cannot be used.
    Ort,
    /// tract-cuda (cargo feature `cuda`), or an error saying why it cannot be used
    /// ([`InferError::NoCudaDriver`] on a machine without a CUDA driver). [`EngineChoice::Auto`]
    /// never picks it: the GPU is used only when asked for.
    TractCuda,
}

/// Which hardware ONNX Runtime runs the model on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ExecutionProvider {
    /// ONNX Runtime's own CPU kernels (the default; always available).
    #[default]
    Cpu,
    /// NVIDIA CUDA (needs an ONNX Runtime built with it, e.g. the `onnxruntime-gpu` wheel, and
    /// the CUDA/cuDNN libraries).
    Cuda {
        /// The CUDA device ordinal.
        device_id: i32,
    },
    /// NVIDIA TensorRT (needs an ONNX Runtime built with it, and TensorRT).
    TensorRt {
        /// The CUDA device ordinal.
        device_id: i32,
        /// Let TensorRT pick fp16 kernels.
        fp16: bool,
        /// Where TensorRT caches its built engines (building one takes minutes); `None` = no
        /// cache.
        engine_cache_dir: Option<PathBuf>,
    },
}

impl ExecutionProvider {
    /// ONNX Runtime's name for this provider, e.g. `CUDAExecutionProvider`.
    pub fn ort_name(&self) -> &'static str {
        match self {
            ExecutionProvider::Cpu => "CPUExecutionProvider",
            ExecutionProvider::Cuda { .. } => "CUDAExecutionProvider",
            ExecutionProvider::TensorRt { .. } => "TensorrtExecutionProvider",
        }
    }
}

/// How much ONNX Runtime rewrites the graph before running it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum GraphOptimization {
    /// No rewriting.
    Disable,
    /// Semantics-preserving node removal and constant folding.
    Basic,
    /// Basic plus node fusions.
    Extended,
    /// Everything, including layout changes (NCHWc on CPU). The default.
    #[default]
    All,
}

/// Options specific to the ONNX Runtime engine. Ignored by tract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrtOptions {
    /// The `libonnxruntime.so` to load. `None`: look in the places listed by
    /// [`ort_library_candidates`]. Only one ONNX Runtime can be loaded per process: the first
    /// successful load wins, and asking for another file later is an error.
    pub dylib: Option<PathBuf>,
    /// Where to run.
    pub execution_provider: ExecutionProvider,
    /// Graph rewriting level.
    pub graph_optimization: GraphOptimization,
    /// Share weights between the sessions (replicas) of one engine. Default `false`.
    ///
    /// ONNX Runtime does not share anything between sessions by itself: each session parses
    /// the model and holds its own weights, its own optimized (re-laid-out) copies of them and
    /// its own activation arena. When this is `true`, the engine decodes every `f32`
    /// initializer of the model once into an ORT value and hands the same values to each
    /// session (`AddInitializer`), together with one shared pre-packed weights container
    /// (`CreateSessionWithPrepackedWeightsContainer`), so that kernels which pre-pack a shared
    /// weight (MLAS GEMM, for instance) do it once for all replicas.
    ///
    /// It only pays for weights that reach the kernels unchanged. At
    /// [`GraphOptimization::All`] the CPU provider rewrites every convolution weight into its
    /// NCHWc layout, a new per-session tensor, so for convolutional detectors sharing saves
    /// almost nothing and costs one decoded copy of the weights in the engine. Measured with
    /// the YOLOv8s person detector (44 MB of weights, 1x3x640x640): each extra session costs
    /// about 140 MB (`All`, shared or not), 120 MB (`Extended`, private) or 90 MB (`Extended`,
    /// shared), most of it activation arena (see [`cpu_arena`](Self::cpu_arena)), and
    /// sharing adds about 45 MB to the engine. Turn it on with `Extended`/`Basic` and several
    /// replicas of a large model.
    pub share_weights: bool,
    /// Use ONNX Runtime's CPU memory arena (default `true`): activations are carved out of an
    /// arena that keeps its memory between runs, so a steady-state run does not call the
    /// system allocator, at the price of memory: about 140 MB per YOLOv8s session at
    /// 1x3x640x640 and 115 MB per CenterFace session at 1x3x480x640, against about 55 MB
    /// without the arena, where each run allocates and frees its activations. ONNX
    /// Runtime's default is `true`.
    pub cpu_arena: bool,
}

impl Default for OrtOptions {
    fn default() -> Self {
        OrtOptions {
            dylib: None,
            execution_provider: ExecutionProvider::Cpu,
            graph_optimization: GraphOptimization::All,
            share_weights: false,
            cpu_arena: true,
        }
    }
}

/// Options for [`load`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineOptions {
    /// Threads each session may use inside one run (default 1: one core per replica; the
    /// runtime pins replicas itself). ONNX Runtime: the session's intra-op thread count (the
    /// calling thread counts as one), with inter-op threads fixed at 1 and spinning disabled.
    /// tract: a rayon pool of that many threads per session when > 1. Must be ≥ 1.
    pub intra_threads: usize,
    /// The shape to run the model's first input at, overriding what the model declares: needed
    /// for models exported with dynamic axes (to give tract concrete sizes to optimize for) or
    /// with wrong static ones (CenterFace declares `[10, 3, 32, 32]` but runs at any
    /// `[1, 3, H, W]` with `H`, `W` multiples of 32). Its rank must match the declared rank.
    pub input_shape: Option<Vec<usize>>,
    /// ONNX Runtime options.
    pub ort: OrtOptions,
    /// tract-cuda only (default `true`): each session captures one run of the model in a CUDA
    /// graph when it is made, on its thread, and replays it for every run (see
    /// [`CudaGraphSession`]). `false` (`--no-cuda-graph`) runs tract-cuda's plain `state.run`,
    /// which dispatches every kernel from the host.
    pub cuda_graph: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions { intra_threads: 1, input_shape: None, ort: OrtOptions::default(), cuda_graph: true }
    }
}

/// A loaded model: holds what its sessions share (the weights) and makes sessions.
///
/// Engines are `Send + Sync` and meant to be used behind an [`Arc`], one per model, shared by
/// all the replicas that run it.
pub trait Engine: Send + Sync {
    /// Which engine this is.
    fn kind(&self) -> EngineKind;
    /// The model's inputs, outputs and metadata.
    fn model(&self) -> &ModelInfo;
    /// Makes a new per-replica context that owns its mutable state and output buffers; the
    /// weights stay shared. Call it once per worker thread and keep the session.
    fn session(&self) -> Result<Box<dyn Session>, InferError>;
    /// For device-resident pipelines (cargo feature `cuda`): a session whose input and outputs
    /// stay on the GPU, with its CUDA graph captured on the calling thread. `None` for engines
    /// that have none (every engine but tract-cuda with [`EngineOptions::cuda_graph`]).
    #[cfg(feature = "cuda")]
    fn cuda_graph_session(&self) -> Option<Result<CudaGraphSession, InferError>> {
        None
    }
}

/// A per-replica inference context (see [`Engine::session`]). `Send`, so it can be moved to its
/// worker thread, but not shared: [`run`](Session::run) takes `&mut self`.
pub trait Session: Send {
    /// The inputs [`run`](Session::run) expects, in order.
    fn inputs(&self) -> &[TensorInfo];
    /// The outputs [`run`](Session::run) returns, in order.
    fn outputs(&self) -> &[TensorInfo];
    /// Runs one inference.
    ///
    /// `inputs` must hold one tensor per model input, in the model's order, each with the
    /// model's shape (dynamic axes may take any size) and `shape.iter().product()` values;
    /// otherwise a [`InferError::InputCount`], [`InferError::InputShapeMismatch`] or
    /// [`InferError::InputLength`] is returned and nothing runs.
    ///
    /// Returns the session's output tensors in model output order. They are overwritten by the
    /// next run (their vectors are reused, not reallocated, while the shapes stay the same).
    fn run(&mut self, inputs: &[TensorRef<'_>]) -> Result<&[Tensor], InferError>;
}

/// Which engine [`load`] picked, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The engine in use.
    pub kind: EngineKind,
    /// A sentence for logs, e.g. `ort: ONNX Runtime 1.31.1 found at /x/libonnxruntime.so` or
    /// `tract: ONNX Runtime not found (looked in ...); tract is the pure-Rust fallback`.
    pub reason: String,
}

/// Reads what the ONNX model at `path` declares (inputs, outputs, metadata) without building an
/// engine: to decide, before [`load`], how to run it (its family, its input size).
///
/// Shapes are as declared (a dynamic or missing axis is `None`); initializers that old exporters
/// also list as graph inputs are left out.
///
/// # Errors
///
/// [`InferError::ModelNotFound`], [`InferError::Io`] or [`InferError::InvalidModel`].
pub fn inspect(path: &Path) -> Result<ModelInfo, InferError> {
    let file = model::ModelFile::read(path)?;
    Ok(ModelInfo { path: file.path, inputs: file.inputs, outputs: file.outputs, metadata: file.metadata })
}

/// Loads the ONNX model at `path` with the engine `choice` asks for.
///
/// The file is read and decoded once; its metadata, inputs and outputs are checked (only `f32`
/// inputs are accepted). With [`EngineChoice::Auto`], ONNX Runtime is used if its library can
/// be loaded and accepts the model, tract otherwise; the returned [`Selection`] says which and
/// why.
///
/// # Errors
///
/// [`InferError::ModelNotFound`], [`InferError::InvalidModel`] (not ONNX),
/// [`InferError::UnsupportedModel`], [`InferError::InvalidOptions`], [`InferError::OrtNotFound`]
/// (explicit [`EngineChoice::Ort`] only), [`InferError::ExecutionProviderUnavailable`] or
/// [`InferError::Engine`] when the engine refuses the model.
pub fn load(
    path: &Path,
    choice: EngineChoice,
    opts: &EngineOptions,
) -> Result<(Arc<dyn Engine>, Selection), InferError> {
    if opts.intra_threads == 0 {
        return Err(InferError::InvalidOptions("intra_threads must be at least 1".into()));
    }
    let file = model::ModelFile::read(path)?;
    match choice {
        EngineChoice::Tract => {
            let engine = tract_engine::TractEngine::load(&file, opts)?;
            let reason = "tract: requested".to_string();
            Ok((Arc::new(engine), Selection { kind: EngineKind::Tract, reason }))
        }
        EngineChoice::Ort => load_ort(&file, opts),
        EngineChoice::Auto => load_auto(&file, opts),
        EngineChoice::TractCuda => load_tract_cuda(&file, opts),
    }
}

#[cfg(feature = "cuda")]
fn load_tract_cuda(file: &model::ModelFile, opts: &EngineOptions) -> Result<(Arc<dyn Engine>, Selection), InferError> {
    let (engine, warm) = tract_cuda_engine::load(file, opts)?;
    let reason = format!("tract-cuda: requested; {warm}");
    Ok((engine, Selection { kind: EngineKind::TractCuda, reason }))
}

#[cfg(not(feature = "cuda"))]
fn load_tract_cuda(
    _file: &model::ModelFile,
    _opts: &EngineOptions,
) -> Result<(Arc<dyn Engine>, Selection), InferError> {
    Err(InferError::EngineNotCompiled { kind: EngineKind::TractCuda, feature: "cuda" })
}

/// Prepares tract-cuda (cargo feature `cuda`): checks the CUDA driver without panicking, creates
/// the CUDA context and compiles tract-cuda's kernels with NVRTC, or loads them from their cache
/// (`~/.cache/tract`), calling `on_progress` with a line of text about four times a second while
/// it works (the first use on a machine takes about 45 s). Done once per process: [`load`] with
/// [`EngineChoice::TractCuda`] calls it too; call it first to show the progress.
///
/// # Errors
///
/// [`InferError::NoCudaDriver`] without a CUDA driver or device; [`InferError::CudaUnavailable`]
/// when a CUDA library or the CUDA headers are missing, or the context cannot be created.
#[cfg(feature = "cuda")]
pub fn cuda_warm_up(on_progress: &dyn Fn(&str)) -> Result<CudaWarmUp, InferError> {
    tract_cuda_engine::warm_up(on_progress)
}

/// Checks, without creating a CUDA context, that tract-cuda could run here: the driver, a device,
/// and the CUDA libraries it loads. Returns the device's description. Never panics.
///
/// # Errors
///
/// As [`cuda_warm_up`].
#[cfg(feature = "cuda")]
pub fn cuda_check() -> Result<String, InferError> {
    tract_cuda_engine::check()
}

/// Creates the calling thread's CUDA stream and its cuBLAS and cuDNN handles for tract-cuda, as
/// the first run on a thread otherwise does (tract-cuda gives each OS thread its own stream), after
/// [`cuda_warm_up`]. For start-up hooks and memory measurements.
///
/// # Errors
///
/// As [`cuda_warm_up`].
#[cfg(feature = "cuda")]
pub fn cuda_prepare_thread() -> Result<(), InferError> {
    tract_cuda_engine::prepare_thread()
}

/// Why [`EngineChoice::Auto`] did not pick the GPU (it picks CPU engines only), with the state
/// of the CUDA driver here: a line for logs.
#[cfg(feature = "cuda")]
pub fn auto_gpu_note() -> String {
    tract_cuda_engine::auto_note()
}

#[cfg(feature = "ort")]
fn load_ort(file: &model::ModelFile, opts: &EngineOptions) -> Result<(Arc<dyn Engine>, Selection), InferError> {
    let runtime = ort_engine::runtime(&opts.ort)?;
    let engine = ort_engine::OrtEngine::load(file, opts, runtime)?;
    let reason = format!("ort: requested; ONNX Runtime {} found at {}", runtime.version, runtime.path.display());
    Ok((Arc::new(engine), Selection { kind: EngineKind::Ort, reason }))
}

#[cfg(not(feature = "ort"))]
fn load_ort(_file: &model::ModelFile, _opts: &EngineOptions) -> Result<(Arc<dyn Engine>, Selection), InferError> {
    Err(InferError::EngineNotCompiled { kind: EngineKind::Ort, feature: "ort" })
}

#[cfg(feature = "ort")]
fn load_auto(file: &model::ModelFile, opts: &EngineOptions) -> Result<(Arc<dyn Engine>, Selection), InferError> {
    let why_not_ort = match ort_engine::runtime(&opts.ort) {
        Ok(runtime) => match ort_engine::OrtEngine::load(file, opts, runtime) {
            Ok(engine) => {
                let reason = format!("ort: ONNX Runtime {} found at {}", runtime.version, runtime.path.display());
                return Ok((Arc::new(engine), Selection { kind: EngineKind::Ort, reason }));
            }
            // An execution provider that was asked for explicitly is not silently dropped.
            Err(e @ InferError::ExecutionProviderUnavailable { .. }) => return Err(e),
            Err(e) => format!("ONNX Runtime at {} refused the model ({e})", runtime.path.display()),
        },
        Err(InferError::OrtNotFound { tried }) => {
            format!("ONNX Runtime not found (looked in {})", format_candidates(&tried))
        }
        Err(e) => format!("ONNX Runtime unusable ({e})"),
    };
    let engine = tract_engine::TractEngine::load(file, opts)?;
    let reason = format!("tract: {why_not_ort}; tract is the pure-Rust fallback");
    Ok((Arc::new(engine), Selection { kind: EngineKind::Tract, reason }))
}

#[cfg(not(feature = "ort"))]
fn load_auto(file: &model::ModelFile, opts: &EngineOptions) -> Result<(Arc<dyn Engine>, Selection), InferError> {
    let engine = tract_engine::TractEngine::load(file, opts)?;
    let reason = "tract: built without the `ort` feature; tract is the pure-Rust engine".into();
    Ok((Arc::new(engine), Selection { kind: EngineKind::Tract, reason }))
}

/// Checks that the model's first input has the shape the preprocessing produces (`expected`),
/// and refuses it with a message naming both shapes otherwise. Dynamic axes accept any size.
///
/// ```
/// use framepipe_infer::{check_input, DType, ModelInfo, TensorInfo};
///
/// let info = ModelInfo {
///     path: "yolo.onnx".into(),
///     inputs: vec![TensorInfo {
///         name: "images".into(),
///         shape: vec![Some(1), Some(3), Some(640), Some(640)],
///         dtype: DType::F32,
///     }],
///     outputs: vec![],
///     metadata: Default::default(),
/// };
/// assert!(check_input(&info, &[1, 3, 640, 640]).is_ok());
/// let err = check_input(&info, &[1, 3, 320, 320]).unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "model input `images` expects [1, 3, 640, 640] but the preprocessing produces [1, 3, 320, 320]"
/// );
/// ```
///
/// # Errors
///
/// [`InferError::InputShapeMismatch`], or [`InferError::UnsupportedModel`] if the model has no
/// input or its first input is not `f32`.
pub fn check_input(info: &ModelInfo, expected: &[usize]) -> Result<(), InferError> {
    let Some(input) = info.inputs.first() else {
        return Err(InferError::UnsupportedModel { path: info.path.clone(), reason: "the model has no input".into() });
    };
    if input.dtype != DType::F32 {
        return Err(InferError::UnsupportedModel {
            path: info.path.clone(),
            reason: format!("input `{}` is {}, not f32", input.name, input.dtype),
        });
    }
    check_shape(input, expected)
}

/// Where the ONNX Runtime shared library is looked for when [`OrtOptions::dylib`] is not set,
/// in order: `$ORT_DYLIB_PATH`, `$FRAMEPIPE_ASSETS/onnxruntime/libonnxruntime.so`, the
/// workspace's `assets/onnxruntime/libonnxruntime.so` (where `scripts/fetch-assets.sh` puts
/// it; the path is fixed at compile time), then `libonnxruntime.so` next to the running
/// executable. The first one that exists is loaded.
pub fn ort_library_candidates() -> Vec<PathBuf> {
    let lib = format!("{}onnxruntime{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        out.push(PathBuf::from(p));
    }
    if let Some(a) = std::env::var_os("FRAMEPIPE_ASSETS").filter(|p| !p.is_empty()) {
        out.push(PathBuf::from(a).join("onnxruntime").join(&lib));
    }
    out.push(workspace_assets_dir().join("onnxruntime").join(&lib));
    if let Some(dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
        out.push(dir.join(&lib));
    }
    out
}

/// The workspace's `assets` directory as seen at compile time
/// (`<crate>/../../assets`, normalised when it exists).
fn workspace_assets_dir() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("..").join("assets");
    p.canonicalize().unwrap_or(p)
}

/// Checks a concrete shape against a declared one.
fn check_shape(info: &TensorInfo, got: &[usize]) -> Result<(), InferError> {
    let ok = info.shape.len() == got.len() && info.shape.iter().zip(got).all(|(d, g)| d.is_none_or(|d| d == *g));
    if ok {
        Ok(())
    } else {
        Err(InferError::InputShapeMismatch {
            input: info.name.clone(),
            expected: info.shape.clone(),
            got: got.to_vec(),
        })
    }
}

/// Checks the inputs of a run: count, shapes, lengths.
fn check_run_inputs(path: &Path, infos: &[TensorInfo], inputs: &[TensorRef<'_>]) -> Result<(), InferError> {
    if infos.len() != inputs.len() {
        return Err(InferError::InputCount {
            path: path.to_path_buf(),
            expected: infos.len(),
            names: infos.iter().map(|i| format!("`{}`", i.name)).collect::<Vec<_>>().join(", "),
            got: inputs.len(),
        });
    }
    for (info, input) in infos.iter().zip(inputs) {
        let expected = input.shape.iter().try_fold(1usize, |acc, d| acc.checked_mul(*d));
        if expected != Some(input.data.len()) {
            return Err(InferError::InputLength {
                input: info.name.clone(),
                shape: input.shape.to_vec(),
                expected: expected.unwrap_or(usize::MAX),
                got: input.data.len(),
            });
        }
        check_shape(info, input.shape)?;
    }
    Ok(())
}

/// Copies `src` into `dst`, reusing `dst`'s vectors.
fn fill_tensor(dst: &mut Tensor, shape: &[usize], data: &[f32]) {
    dst.shape.clear();
    dst.shape.extend_from_slice(shape);
    dst.data.clear();
    dst.data.extend_from_slice(data);
}

/// `[1, 3, 640, 640]`.
pub(crate) fn format_shape(shape: &[usize]) -> String {
    format!("{shape:?}")
}

/// `[1, 3, H?, 640]` style: dynamic axes as `?`.
pub(crate) fn format_dims(dims: &[Option<usize>]) -> String {
    let parts: Vec<String> = dims.iter().map(|d| d.map_or_else(|| "?".to_string(), |d| d.to_string())).collect();
    format!("[{}]", parts.join(", "))
}

/// `a (not found), b (failed: ...)`.
pub(crate) fn format_candidates(tried: &[(PathBuf, String)]) -> String {
    if tried.is_empty() {
        return "nowhere".into();
    }
    let parts: Vec<String> = tried.iter().map(|(p, why)| format!("{} ({why})", p.display())).collect();
    parts.join(", ")
}
