//! One thread doing pre, inference and post for whole frames: the `detect` command, the serial
//! baseline and each worker of the thread-pool mode.

use std::sync::Arc;
use std::time::{Duration, Instant};

use framepipe_infer::{Session, TensorRef};
use framepipe_vision::{Detection, FrameRef, LetterboxParams, Postprocessor, Preprocessor, TensorView};
use serde::Serialize;

use crate::{AppError, DetectModel};

/// Most outputs a model may have (CenterFace has four).
pub(crate) const MAX_OUTPUTS: usize = 8;

/// Time spent in each step for one frame.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Timings {
    /// Letterbox and normalisation.
    pub pre: Duration,
    /// The engine.
    pub infer: Duration,
    /// Decode, NMS, mapping to the frame.
    pub post: Duration,
}

/// What [`Detector::detect`] found in one frame.
#[derive(Debug)]
pub struct DetectOutput<'a> {
    /// Detections in frame pixels, best first.
    pub detections: &'a [Detection],
    /// How the frame was placed in the model input.
    pub letterbox: LetterboxParams,
    /// Per-step times.
    pub timings: Timings,
}

/// Pre, inference and post on the calling thread, with buffers reused from frame to frame.
pub struct Detector {
    model: Arc<DetectModel>,
    session: Box<dyn Session>,
    pre: Preprocessor,
    post: Postprocessor,
    input: Vec<f32>,
    detections: Vec<Detection>,
}

impl Detector {
    /// A detector with its own session (the model's weights stay shared).
    pub fn new(model: Arc<DetectModel>) -> Result<Self, AppError> {
        Ok(Detector {
            session: model.engine().session()?,
            pre: model.preprocessor()?,
            post: model.postprocessor()?,
            input: vec![0.0; model.input_len()],
            detections: Vec::with_capacity(300),
            model,
        })
    }

    /// Runs the engine once on a blank input, so that its first-run work (allocation, kernel
    /// selection, compilation) is not timed as a frame's inference.
    pub fn warm_up(&mut self) -> Result<(), AppError> {
        self.input.fill(0.5);
        self.session.run(&[TensorRef::new(self.model.input_shape(), &self.input)])?;
        Ok(())
    }

    /// The model.
    pub fn model(&self) -> &Arc<DetectModel> {
        &self.model
    }

    /// Detects objects in one frame.
    pub fn detect(&mut self, frame: FrameRef<'_>) -> Result<DetectOutput<'_>, AppError> {
        let t0 = Instant::now();
        let letterbox = self.pre.preprocess(frame, &mut self.input)?;
        let t1 = Instant::now();
        let outputs = self.session.run(&[TensorRef::new(self.model.input_shape(), &self.input)])?;
        let t2 = Instant::now();
        with_views(outputs.iter().map(|t| (t.shape.as_slice(), t.data.as_slice())), |views| {
            self.post.process(views, &letterbox, &mut self.detections)
        })?;
        let t3 = Instant::now();
        Ok(DetectOutput {
            detections: &self.detections,
            letterbox,
            timings: Timings { pre: t1 - t0, infer: t2 - t1, post: t3 - t2 },
        })
    }
}

/// Calls `f` with views of up to [`MAX_OUTPUTS`] tensors, without allocating.
pub(crate) fn with_views<'a, R>(
    tensors: impl Iterator<Item = (&'a [usize], &'a [f32])>,
    f: impl FnOnce(&[TensorView<'a>]) -> Result<R, framepipe_vision::VisionError>,
) -> Result<R, AppError> {
    let empty = TensorView { shape: &[], data: &[] };
    let mut views = [empty; MAX_OUTPUTS];
    let mut n = 0;
    for (shape, data) in tensors {
        if n == MAX_OUTPUTS {
            return Err(AppError::config("model outputs", format!("more than {MAX_OUTPUTS} outputs")));
        }
        views[n] = TensorView { shape, data };
        n += 1;
    }
    Ok(f(&views[..n])?)
}
