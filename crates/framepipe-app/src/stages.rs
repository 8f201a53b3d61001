//! The detection stages the runtime carries: pre → infer → post (→ annotate), and the pipeline that
//! links them behind a video source.
//!
//! Every buffer a frame needs on its way comes from a [`Pool`] sized by the frames that can be alive
//! at once, and goes back when the frame's last owner drops it: after warm-up the stages allocate
//! nothing per frame (the engines allocate inside themselves; see `framepipe-infer`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use framepipe::pool::{Pool, Pooled};
use framepipe::{Admission, Pace, Pin, Pipeline, SourceConfig, Stage, StageConfig, StageContext};
use framepipe_infer::{Session, Tensor, TensorRef};
use framepipe_video::VideoSink;
use framepipe_vision::draw::{draw_detections, DrawStyle};
use framepipe_vision::{Detection, Frame, Labels, LetterboxParams, Postprocessor, Preprocessor};

use crate::detector::with_views;
use crate::{AppError, DetectModel};

/// A frame with its model input, after preprocessing.
pub struct Prepared {
    /// The decoded frame (kept for drawing and for the caller).
    pub frame: Pooled<Frame>,
    /// The model input, `[1, 3, H, W]` f32.
    pub input: Pooled<Vec<f32>>,
    /// How the frame was placed in the input.
    pub letterbox: LetterboxParams,
}

/// A frame with the model's raw outputs.
pub struct Inferred {
    /// The decoded frame.
    pub frame: Pooled<Frame>,
    /// The raw outputs, in model order.
    pub outputs: Pooled<OutputSet>,
    /// How the frame was placed in the input.
    pub letterbox: LetterboxParams,
}

/// A frame with its detections: what a detection pipeline delivers.
pub struct Detected {
    /// The decoded frame (annotated, if the pipeline draws).
    pub frame: Pooled<Frame>,
    /// Detections in frame pixels, best first.
    pub detections: Pooled<Vec<Detection>>,
    /// How the frame was placed in the model input.
    pub letterbox: LetterboxParams,
}

/// Raw model outputs copied out of a session (whose own buffers the next run overwrites).
#[derive(Default)]
pub struct OutputSet {
    tensors: Vec<(Vec<usize>, Vec<f32>)>,
    len: usize,
}

impl OutputSet {
    /// Overwrites this set with `outputs`, reusing its vectors.
    pub fn copy_from(&mut self, outputs: &[Tensor]) {
        while self.tensors.len() < outputs.len() {
            self.tensors.push(Default::default());
        }
        for (slot, t) in self.tensors.iter_mut().zip(outputs) {
            slot.0.clear();
            slot.0.extend_from_slice(&t.shape);
            slot.1.clear();
            slot.1.extend_from_slice(&t.data);
        }
        self.len = outputs.len();
    }

    /// The tensors as (shape, data).
    pub fn iter(&self) -> impl Iterator<Item = (&[usize], &[f32])> {
        self.tensors[..self.len].iter().map(|(s, d)| (s.as_slice(), d.as_slice()))
    }
}

/// The pools the stages share, sized for `frames` frames alive at once.
#[derive(Clone)]
pub struct StagePools {
    inputs: Pool<Vec<f32>>,
    outputs: Pool<OutputSet>,
    detections: Pool<Vec<Detection>>,
}

impl StagePools {
    /// Pools for `frames` live frames of `model`.
    pub fn new(model: &DetectModel, frames: usize) -> Self {
        let len = model.input_len();
        StagePools {
            inputs: Pool::new(frames, frames, move || vec![0.0; len]),
            outputs: Pool::new(frames, 0, OutputSet::default),
            detections: Pool::new(frames, frames, || Vec::with_capacity(300)),
        }
    }

    /// Buffers created beyond the preallocated ones (0 in a well-sized steady state).
    pub fn misses(&self) -> u64 {
        self.inputs.misses() + self.detections.misses()
    }
}

/// Letterbox and normalisation into a pooled input tensor.
pub struct PreStage {
    pre: Preprocessor,
    /// The GPU letterbox, when the model asks for it (cargo feature `cuda`).
    #[cfg(feature = "cuda")]
    gpu: Option<framepipe_cuda::GpuPreprocessor>,
    pool: Pool<Vec<f32>>,
}

impl PreStage {
    /// A preprocessing stage for `model`.
    pub fn new(model: &DetectModel, pools: &StagePools) -> Result<Self, AppError> {
        Ok(PreStage {
            pre: model.preprocessor()?,
            #[cfg(feature = "cuda")]
            gpu: model.gpu_preprocessor()?,
            pool: pools.inputs.clone(),
        })
    }

    fn preprocess(
        &mut self,
        frame: framepipe_vision::FrameRef<'_>,
        out: &mut [f32],
    ) -> Result<LetterboxParams, AppError> {
        #[cfg(feature = "cuda")]
        if let Some(gpu) = self.gpu.as_mut() {
            return Ok(gpu.preprocess_to_host(frame, out)?);
        }
        Ok(self.pre.preprocess(frame, out)?)
    }
}

impl Stage<Pooled<Frame>> for PreStage {
    type Out = Prepared;
    type Error = AppError;
    fn process(&mut self, frame: Pooled<Frame>) -> Result<Prepared, AppError> {
        let mut input = self.pool.take();
        let letterbox = self.preprocess(frame.as_ref(), &mut input)?;
        Ok(Prepared { frame, input, letterbox })
    }
}

/// Inference on the replica's own session.
pub struct InferStage {
    session: Box<dyn Session>,
    shape: Vec<usize>,
    pool: Pool<OutputSet>,
}

impl InferStage {
    /// An inference stage with a new session of `model` (its weights stay shared).
    pub fn new(model: &DetectModel, pools: &StagePools) -> Result<Self, AppError> {
        Ok(InferStage {
            session: model.engine().session()?,
            shape: model.input_shape().to_vec(),
            pool: pools.outputs.clone(),
        })
    }
}

impl Stage<Prepared> for InferStage {
    type Out = Inferred;
    type Error = AppError;
    fn process(&mut self, p: Prepared) -> Result<Inferred, AppError> {
        let outputs = self.session.run(&[TensorRef::new(&self.shape, &p.input)])?;
        let mut set = self.pool.take();
        set.copy_from(outputs);
        // The input buffer goes back to its pool here, as soon as the engine is done with it.
        drop(p.input);
        Ok(Inferred { frame: p.frame, outputs: set, letterbox: p.letterbox })
    }

    /// Warms the session up with one run on a blank input, so that the engine's first-run work
    /// (allocation, kernel selection) is start-up time and not a slow first frame.
    fn on_start(&mut self) -> Result<(), AppError> {
        let blank = vec![0.5f32; self.shape.iter().product()];
        self.session.run(&[TensorRef::new(&self.shape, &blank)])?;
        Ok(())
    }
}

/// Decode, threshold, NMS and mapping to the frame.
pub struct PostStage {
    post: Postprocessor,
    pool: Pool<Vec<Detection>>,
}

impl PostStage {
    /// A postprocessing stage for `model`.
    pub fn new(model: &DetectModel, pools: &StagePools) -> Result<Self, AppError> {
        Ok(PostStage { post: model.postprocessor()?, pool: pools.detections.clone() })
    }
}

impl Stage<Inferred> for PostStage {
    type Out = Detected;
    type Error = AppError;
    fn process(&mut self, i: Inferred) -> Result<Detected, AppError> {
        let mut detections = self.pool.take();
        let post = &mut self.post;
        with_views(i.outputs.iter(), |views| post.process(views, &i.letterbox, &mut detections))?;
        Ok(Detected { frame: i.frame, detections, letterbox: i.letterbox })
    }
}

/// Draws the detections onto the frame and appends it to a video file.
pub struct AnnotateStage {
    labels: Arc<Labels>,
    style: DrawStyle,
    sink: Option<VideoSink>,
}

impl AnnotateStage {
    /// Draws with `labels`; writes to `sink` if given.
    pub fn new(labels: Arc<Labels>, sink: Option<VideoSink>) -> Self {
        AnnotateStage { labels, style: DrawStyle::default(), sink }
    }

    /// Draws `detections` on `frame`.
    pub fn draw(&self, frame: &mut Frame, detections: &[Detection]) {
        draw_detections(&mut frame.as_mut(), detections, Some(&self.labels), &self.style);
    }
}

impl Stage<Detected> for AnnotateStage {
    type Out = Detected;
    type Error = AppError;
    fn process(&mut self, mut d: Detected) -> Result<Detected, AppError> {
        self.draw(&mut d.frame, &d.detections);
        if let Some(sink) = self.sink.as_mut() {
            sink.write(d.frame.as_ref())?;
        }
        Ok(d)
    }

    fn on_stop(&mut self) {
        if let Some(sink) = self.sink.take() {
            let _ = sink.finish();
        }
    }
}

/// Replicas per stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Replicas {
    /// Preprocessing replicas.
    pub pre: usize,
    /// Inference replicas.
    pub infer: usize,
    /// Postprocessing replicas.
    pub post: usize,
}

impl Default for Replicas {
    fn default() -> Self {
        Replicas { pre: 1, infer: 1, post: 1 }
    }
}

/// Core lists per stage (empty: not pinned).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Pins {
    /// The source (decode or capture) thread.
    pub decode: Vec<usize>,
    /// Preprocessing.
    pub pre: Vec<usize>,
    /// Inference.
    pub infer: Vec<usize>,
    /// Postprocessing.
    pub post: Vec<usize>,
}

fn pin(cores: &[usize]) -> Pin {
    if cores.is_empty() {
        Pin::None
    } else {
        Pin::Cores(cores.to_vec())
    }
}

/// How to run a detection pipeline.
#[derive(Clone, Debug)]
pub struct PipelineOptions {
    /// Replicas per stage.
    pub replicas: Replicas,
    /// Pins per stage.
    pub pins: Pins,
    /// Capacity of every link (default 1).
    pub queue: usize,
    /// Cap on live frames (default: the runtime's).
    pub max_in_flight: Option<usize>,
    /// Entrance policy (default `Block`).
    pub admission: Admission,
    /// How the source is paced (default just in time).
    pub pace: Pace,
    /// Skip frames older than this when they enter a stage.
    pub deadline: Option<Duration>,
    /// Draw detections onto the frames (and write them here, if a path is given).
    pub annotate: Option<Option<PathBuf>>,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            replicas: Replicas::default(),
            pins: Pins::default(),
            queue: 1,
            max_in_flight: None,
            admission: Admission::Block,
            pace: Pace::JustInTime,
            deadline: None,
            annotate: None,
        }
    }
}

impl PipelineOptions {
    /// How many frames can be alive at once: what the pools must hold.
    pub fn live_frames(&self) -> usize {
        let r = &self.replicas;
        let stages = r.pre + r.infer + r.post + usize::from(self.annotate.is_some());
        self.max_in_flight.unwrap_or(stages + 5 * self.queue + 1) + self.queue + 2
    }
}

/// A detection pipeline: source (`decode`) → `pre` → `infer` × N → `post` (→ `annotate`).
pub type DetectionPipeline = Pipeline<Pooled<Frame>, Detected>;

/// Builds a detection pipeline behind `source`. `fps` and the frame size are needed only to write
/// an annotated video.
pub fn build_pipeline<S>(
    model: Arc<DetectModel>,
    source: S,
    opts: &PipelineOptions,
    video: Option<(f64, usize, usize)>,
) -> Result<DetectionPipeline, AppError>
where
    S: framepipe::Source<Item = Pooled<Frame>> + Send + 'static,
{
    if opts.replicas.pre == 0 || opts.replicas.infer == 0 || opts.replicas.post == 0 {
        return Err(AppError::config("--replicas", "every stage needs at least 1 replica"));
    }
    if opts.queue == 0 {
        return Err(AppError::config("--queue", "a queue holds at least 1 frame"));
    }
    let pools = StagePools::new(&model, opts.live_frames());
    let r = opts.replicas;
    let mut b = Pipeline::<Pooled<Frame>>::builder()
        .admission(opts.admission)
        .output_capacity(opts.queue)
        .source(SourceConfig::new("decode").pin(pin(&opts.pins.decode)).pace(opts.pace), source);
    if let Some(m) = opts.max_in_flight {
        b = b.max_in_flight(m);
    }
    if let Some(d) = opts.deadline {
        b = b.deadline(d);
    }
    let (m1, p1) = (model.clone(), pools.clone());
    let (m2, p2) = (model.clone(), pools.clone());
    let (m3, p3) = (model.clone(), pools.clone());
    let b = b
        .stage(
            StageConfig::new("pre").replicas(r.pre).pin(pin(&opts.pins.pre)).capacity(opts.queue),
            move |_: &StageContext| PreStage::new(&m1, &p1),
        )
        .stage(
            StageConfig::new("infer").replicas(r.infer).pin(pin(&opts.pins.infer)).capacity(opts.queue),
            move |_: &StageContext| InferStage::new(&m2, &p2),
        )
        .stage(
            StageConfig::new("post").replicas(r.post).pin(pin(&opts.pins.post)).capacity(opts.queue),
            move |_: &StageContext| PostStage::new(&m3, &p3),
        );
    let pipeline = match &opts.annotate {
        None => b.build()?,
        Some(out) => {
            let labels = model.labels().clone();
            let out = out.clone();
            b.stage(StageConfig::new("annotate").capacity(opts.queue), move |_: &StageContext| {
                let sink = match (&out, video) {
                    (Some(path), Some((fps, w, h))) => Some(VideoSink::create(path, fps, w, h)?),
                    (Some(path), None) => {
                        return Err(AppError::Output { path: path.clone(), reason: "the video size is unknown".into() })
                    }
                    (None, _) => None,
                };
                Ok(AnnotateStage::new(labels.clone(), sink))
            })
            .build()?
        }
    };
    Ok(pipeline)
}

impl PipelineOptions {
    /// Checks what can be checked before anything starts: replicas, queue sizes, and that every
    /// pinned core exists.
    pub fn validate(&self) -> Result<(), AppError> {
        let r = &self.replicas;
        for (name, n) in [("pre", r.pre), ("infer", r.infer), ("post", r.post)] {
            if n == 0 {
                return Err(AppError::config("--replicas", format!("{name}=0: every stage needs at least 1 replica")));
            }
        }
        if self.queue == 0 {
            return Err(AppError::config("--queue", "a queue holds at least 1 frame"));
        }
        if self.max_in_flight == Some(0) {
            return Err(AppError::config("max_in_flight", "must be at least 1"));
        }
        let cores = framepipe::available_cores();
        let p = &self.pins;
        for (name, list) in [("decode", &p.decode), ("pre", &p.pre), ("infer", &p.infer), ("post", &p.post)] {
            if let Some(c) = list.iter().find(|c| !cores.contains(c)) {
                return Err(AppError::config(
                    "--pin",
                    format!("{name}={c}: core {c} does not exist or is not available (available: {cores:?})"),
                ));
            }
        }
        Ok(())
    }
}

fn parse_pairs<'a>(flag: &str, s: &'a str) -> Result<Vec<(&'a str, &'a str)>, AppError> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| AppError::config(flag, format!("`{p}`: expected stage=value")))
        })
        .collect()
}

impl std::str::FromStr for Replicas {
    type Err = AppError;
    /// `infer=N[,pre=N,post=N]`; stages not named keep 1.
    fn from_str(s: &str) -> Result<Self, AppError> {
        let mut r = Replicas::default();
        for (k, v) in parse_pairs("--replicas", s)? {
            let n: usize = v.parse().map_err(|_| AppError::config("--replicas", format!("{k}={v}: not a number")))?;
            if n == 0 {
                return Err(AppError::config("--replicas", format!("{k}=0: every stage needs at least 1 replica")));
            }
            match k {
                "pre" => r.pre = n,
                "infer" => r.infer = n,
                "post" => r.post = n,
                other => {
                    return Err(AppError::config("--replicas", format!("unknown stage `{other}` (pre, infer, post)")))
                }
            }
        }
        Ok(r)
    }
}

fn parse_cores(flag: &str, stage: &str, v: &str) -> Result<Vec<usize>, AppError> {
    let bad = || AppError::config(flag, format!("{stage}={v}: expected a core, a range a-b, or cores joined by +"));
    let mut out = Vec::new();
    for part in v.split('+') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    Ok(out)
}

impl std::str::FromStr for Pins {
    type Err = AppError;
    /// `pre=0,infer=1,post=1` (also `infer=2-5` or `infer=1+3`, and `decode=N`).
    fn from_str(s: &str) -> Result<Self, AppError> {
        let mut p = Pins::default();
        for (k, v) in parse_pairs("--pin", s)? {
            let cores = parse_cores("--pin", k, v)?;
            match k {
                "decode" | "source" => p.decode = cores,
                "pre" => p.pre = cores,
                "infer" => p.infer = cores,
                "post" => p.post = cores,
                other => {
                    return Err(AppError::config(
                        "--pin",
                        format!("unknown stage `{other}` (decode, pre, infer, post)"),
                    ))
                }
            }
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_and_pins_parse_and_refuse_clearly() {
        let r: Replicas = "infer=3,pre=2".parse().unwrap();
        assert_eq!(r, Replicas { pre: 2, infer: 3, post: 1 });
        assert!("infer=0".parse::<Replicas>().unwrap_err().to_string().contains("infer=0"));
        assert!("gpu=2".parse::<Replicas>().unwrap_err().to_string().contains("unknown stage `gpu`"));
        assert!("infer".parse::<Replicas>().unwrap_err().to_string().contains("stage=value"));
        let p: Pins = "pre=0,infer=1-3,post=1+2,decode=0".parse().unwrap();
        assert_eq!((p.pre, p.infer, p.post, p.decode), (vec![0], vec![1, 2, 3], vec![1, 2], vec![0]));
        assert!("pre=x".parse::<Pins>().is_err());
        let opts = PipelineOptions { pins: "infer=4096".parse().unwrap(), ..Default::default() };
        let e = opts.validate().unwrap_err().to_string();
        assert!(e.contains("core 4096 does not exist"), "{e}");
    }
}
