//! The crate's error type.

use std::path::PathBuf;

use crate::EngineKind;

/// Everything that can go wrong while loading a model or running it.
///
/// Every message names the file (or input) concerned and the cause, so that it can be shown to a
/// user as is. Nothing in this crate panics on bad input (a missing or corrupt file, a wrong
/// shape, a wrong number of values): it returns one of these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InferError {
    /// The model file does not exist.
    #[error("model file not found: {}", path.display())]
    ModelNotFound {
        /// The path that was given.
        path: PathBuf,
    },

    /// The model file exists but could not be read.
    #[error("cannot read model file {}: {source}", path.display())]
    Io {
        /// The model file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// The file is not a valid ONNX model (not a protobuf `ModelProto`, or one without a graph).
    #[error("{} is not a valid ONNX model: {reason}", path.display())]
    InvalidModel {
        /// The model file.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },

    /// The model is valid ONNX but something about it is not supported here (for example an
    /// input that is not `f32`: this crate only feeds `f32` tensors).
    #[error("model {} is not supported: {reason}", path.display())]
    UnsupportedModel {
        /// The model file.
        path: PathBuf,
        /// Why it is not supported.
        reason: String,
    },

    /// The model's input does not have the shape that the caller (the preprocessing) produces.
    /// Returned by [`check_input`](crate::check_input) and by sessions when a run is given a
    /// tensor of the wrong shape.
    #[error(
        "model input `{input}` expects {} but the preprocessing produces {}",
        crate::format_dims(expected),
        crate::format_shape(got)
    )]
    InputShapeMismatch {
        /// The model's input name.
        input: String,
        /// What the model declares (`None` = dynamic, any size accepted).
        expected: Vec<Option<usize>>,
        /// What was given.
        got: Vec<usize>,
    },

    /// A run was given a tensor whose data length does not match its own shape.
    #[error("input `{input}`: shape {} holds {expected} values but {got} were given", crate::format_shape(shape))]
    InputLength {
        /// The model's input name.
        input: String,
        /// The shape given with the data.
        shape: Vec<usize>,
        /// The product of `shape`.
        expected: usize,
        /// The length of the data slice.
        got: usize,
    },

    /// A run was given the wrong number of input tensors.
    #[error("model {} takes {expected} input(s) ({names}) but {got} were given", path.display())]
    InputCount {
        /// The model file.
        path: PathBuf,
        /// How many inputs the model has.
        expected: usize,
        /// The model's input names, comma-separated.
        names: String,
        /// How many were given.
        got: usize,
    },

    /// The options are inconsistent (for example `intra_threads == 0`).
    #[error("invalid engine options: {0}")]
    InvalidOptions(String),

    /// No ONNX Runtime shared library could be found or loaded.
    #[error(
        "ONNX Runtime library not found (looked in: {}): set ORT_DYLIB_PATH or run scripts/fetch-assets.sh",
        crate::format_candidates(tried)
    )]
    OrtNotFound {
        /// Every place that was tried, with what happened there.
        tried: Vec<(PathBuf, String)>,
    },

    /// ONNX Runtime can only be loaded once per process, and a different library is already
    /// loaded.
    #[error(
        "ONNX Runtime is already loaded from {} in this process; cannot switch to {} (one ONNX Runtime per process)",
        loaded.display(),
        requested.display()
    )]
    OrtAlreadyLoaded {
        /// The library in use.
        loaded: PathBuf,
        /// The library that was asked for.
        requested: PathBuf,
    },

    /// An execution provider (CUDA, TensorRT) was asked for but the loaded ONNX Runtime cannot
    /// provide it.
    #[error("execution provider {provider} is not available in the ONNX Runtime at {}: {reason}", library.display())]
    ExecutionProviderUnavailable {
        /// The provider's ONNX Runtime name, e.g. `CUDAExecutionProvider`.
        provider: String,
        /// The loaded ONNX Runtime library.
        library: PathBuf,
        /// Why.
        reason: String,
    },

    /// The requested engine was not compiled into this build.
    #[error("the {kind} engine is not compiled into this build of framepipe-infer (enable cargo feature `{feature}`)")]
    EngineNotCompiled {
        /// The engine asked for.
        kind: EngineKind,
        /// The cargo feature that provides it.
        feature: &'static str,
    },

    /// The tract-cuda engine was asked for on a machine without a usable CUDA driver (no
    /// `libcuda`, or `cuInit` fails: no device, no `/dev/nvidia*` in a container).
    #[error("no CUDA driver found: {reason}")]
    NoCudaDriver {
        /// What was tried and what happened.
        reason: String,
    },

    /// The CUDA driver is there but tract-cuda cannot run: a CUDA library (cudart, NVRTC, cuBLAS,
    /// cuDNN) or the CUDA headers NVRTC needs are missing, or the CUDA context cannot be created.
    #[error("tract-cuda cannot run here: {reason}")]
    CudaUnavailable {
        /// What failed.
        reason: String,
    },

    /// tract-cuda's run of the model could not be captured (or replayed) as a CUDA graph at
    /// start-up. Nothing is retried: `--no-cuda-graph` (`cuda_graph = false`) runs tract-cuda's
    /// plain `state.run` instead.
    #[error(
        "cannot capture {} in a CUDA graph ({step}): {reason}; run with --no-cuda-graph (cuda_graph = false) for \
         tract-cuda's plain runs",
        path.display()
    )]
    CudaGraph {
        /// The model file.
        path: PathBuf,
        /// The step that failed (`capture`, `instantiate`, `check the replay`, ...).
        step: &'static str,
        /// What failed.
        reason: String,
    },

    /// The engine itself failed (while parsing, optimizing or running the model).
    #[error("{engine} failed to {action} {}: {message}", path.display())]
    Engine {
        /// Which engine.
        engine: EngineKind,
        /// What it was doing: "load", "optimize", "run", ...
        action: &'static str,
        /// The model file.
        path: PathBuf,
        /// The engine's own message (with its chain of causes).
        message: String,
    },
}
