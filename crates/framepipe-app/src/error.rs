use std::path::PathBuf;

/// Everything that can go wrong in a detection pipeline, with the file or setting that caused it.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The engine layer refused the model or failed to run it.
    #[error(transparent)]
    Infer(#[from] framepipe_infer::InferError),
    /// Pre- or postprocessing refused its input.
    #[error(transparent)]
    Vision(#[from] framepipe_vision::VisionError),
    /// Video could not be read or written.
    #[error(transparent)]
    Video(#[from] framepipe_video::VideoError),
    /// The GPU preprocessing failed (cargo feature `cuda`).
    #[cfg(feature = "cuda")]
    #[error(transparent)]
    Cuda(#[from] framepipe_cuda::CudaError),
    /// The pipeline could not be built.
    #[error(transparent)]
    Build(#[from] framepipe::BuildError),
    /// The pipeline ended badly.
    #[error(transparent)]
    Pipeline(#[from] framepipe::PipelineError),
    /// Auto-tuning could not make a plan.
    #[error(transparent)]
    Tune(#[from] crate::tune::TuneError),
    /// The model is not one this pipeline can use.
    #[error("model {path}: {reason}")]
    Model {
        /// The model file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A setting is invalid.
    #[error("invalid setting {name}: {reason}")]
    Config {
        /// The setting (flag or config field).
        name: String,
        /// Why.
        reason: String,
    },
    /// An output file could not be written.
    #[error("cannot write {path}: {reason}")]
    Output {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// An asset is missing.
    #[error("{what} not found at {path}: run scripts/setup.sh (or pass the path explicitly)")]
    MissingAsset {
        /// What it is.
        what: &'static str,
        /// Where it was looked for.
        path: PathBuf,
    },
}

impl From<framepipe_tune::ParseError> for AppError {
    fn from(e: framepipe_tune::ParseError) -> Self {
        AppError::Config { name: e.flag, reason: e.reason }
    }
}

impl AppError {
    pub(crate) fn config(name: &str, reason: impl Into<String>) -> Self {
        AppError::Config { name: name.into(), reason: reason.into() }
    }
}
