//! The detection stages the runtime carries: pre → infer → post (→ annotate), and the pipeline that
//! links them behind a video source.
//!
//! Every buffer a frame needs on its way comes from a [`Pool`] sized by the frames that can be alive
//! at once, and goes back when the frame's last owner drops it: after warm-up the stages allocate
//! nothing per frame (the engines allocate inside themselves; see `framepipe-infer`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use framepipe::pool::{Pool, Pooled};
use framepipe::{Admission, Branch, Joined, Pace, Pin, Pipeline, SourceConfig, Stage, StageConfig, StageContext};
use framepipe_infer::{Session, Tensor, TensorRef};
use framepipe_video::VideoSink;
use framepipe_vision::draw::{draw_detections, DrawStyle};
use framepipe_vision::{Detection, Frame, FrameRef, Labels, LetterboxParams, Postprocessor, Preprocessor};

use crate::detector::with_views;
use crate::{AppError, DetectModel};

/// A frame with its model input, after preprocessing. `F` holds the decoded frame: a
/// `Pooled<Frame>` in a single-model pipeline, a [`SharedFrame`] in a fan-out to several models.
pub struct Prepared<F = Pooled<Frame>> {
    /// The decoded frame (kept for drawing and for the caller).
    pub frame: F,
    /// The model input, `[1, 3, H, W]` f32.
    pub input: Pooled<Vec<f32>>,
    /// How the frame was placed in the input.
    pub letterbox: LetterboxParams,
}

/// A frame with the model's raw outputs.
pub struct Inferred<F = Pooled<Frame>> {
    /// The decoded frame.
    pub frame: F,
    /// The raw outputs, in model order.
    pub outputs: Pooled<OutputSet>,
    /// How the frame was placed in the input.
    pub letterbox: LetterboxParams,
}

/// A frame with its detections: what a detection pipeline delivers.
pub struct Detected<F = Pooled<Frame>> {
    /// The decoded frame (annotated, if the pipeline draws).
    pub frame: F,
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

/// What holds a decoded frame on its way through the stages: the stages only read it.
pub trait FrameHolder: Send + 'static {
    /// Calls `f` with a view of the frame.
    fn with_frame<R>(&self, f: impl FnOnce(FrameRef<'_>) -> R) -> R;
}

impl FrameHolder for Pooled<Frame> {
    fn with_frame<R>(&self, f: impl FnOnce(FrameRef<'_>) -> R) -> R {
        f(self.as_ref())
    }
}

struct FrameSlot {
    frame: RwLock<Option<Pooled<Frame>>>,
    refs: AtomicUsize,
}

/// A decoded frame shared by the branches of a fan-out (several models on one frame): cloning a
/// handle copies no pixels and allocates nothing. Handles count themselves in a slot taken from a
/// [`SharedFrames`] free list; when the last handle drops, the frame goes back to its decoder's pool
/// and the slot to the free list.
pub struct SharedFrame {
    slot: Arc<FrameSlot>,
    free: crossbeam_channel::Sender<Arc<FrameSlot>>,
}

impl Clone for SharedFrame {
    fn clone(&self) -> Self {
        self.slot.refs.fetch_add(1, Ordering::Relaxed);
        SharedFrame { slot: self.slot.clone(), free: self.free.clone() }
    }
}

impl Drop for SharedFrame {
    fn drop(&mut self) {
        if self.slot.refs.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last handle: no other handle reads the frame any more (the others have counted
            // themselves out; they may still hold the slot's `Arc` for a moment, which is harmless).
            let frame = self.slot.frame.write().unwrap_or_else(|e| e.into_inner()).take();
            drop(frame);
            let _ = self.free.try_send(self.slot.clone());
        }
    }
}

impl FrameHolder for SharedFrame {
    fn with_frame<R>(&self, f: impl FnOnce(FrameRef<'_>) -> R) -> R {
        let guard = self.slot.frame.read().unwrap_or_else(|e| e.into_inner());
        f(guard.as_ref().expect("a shared frame holds its frame until its last handle drops").as_ref())
    }
}

/// The free list [`SharedFrame`]s come from, sized for the frames alive at once.
#[derive(Clone)]
pub struct SharedFrames {
    free_tx: crossbeam_channel::Sender<Arc<FrameSlot>>,
    free_rx: crossbeam_channel::Receiver<Arc<FrameSlot>>,
    misses: Arc<AtomicU64>,
}

impl SharedFrames {
    /// A free list of `frames` preallocated slots.
    pub fn new(frames: usize) -> Self {
        let frames = frames.max(1);
        let (free_tx, free_rx) = crossbeam_channel::bounded(frames);
        for _ in 0..frames {
            let _ = free_tx.try_send(Arc::new(FrameSlot { frame: RwLock::new(None), refs: AtomicUsize::new(0) }));
        }
        SharedFrames { free_tx, free_rx, misses: Arc::new(AtomicU64::new(0)) }
    }

    /// Shares `frame`: the returned handle is its first.
    pub fn share(&self, frame: Pooled<Frame>) -> SharedFrame {
        let slot = self.free_rx.try_recv().unwrap_or_else(|_| {
            self.misses.fetch_add(1, Ordering::Relaxed);
            Arc::new(FrameSlot { frame: RwLock::new(None), refs: AtomicUsize::new(0) })
        });
        *slot.frame.write().unwrap_or_else(|e| e.into_inner()) = Some(frame);
        slot.refs.store(1, Ordering::Release);
        SharedFrame { slot, free: self.free_tx.clone() }
    }

    /// Slots created beyond the preallocated ones (0 in a well-sized steady state).
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
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

impl<F: FrameHolder> Stage<F> for PreStage {
    type Out = Prepared<F>;
    type Error = AppError;
    fn process(&mut self, frame: F) -> Result<Prepared<F>, AppError> {
        let mut input = self.pool.take();
        let letterbox = frame.with_frame(|f| self.preprocess(f, &mut input))?;
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

impl InferStage {
    /// Warms the session up with one run on a blank input, so that the engine's first-run work
    /// (allocation, kernel selection) is start-up time and not a slow first frame.
    pub fn warm_up(&mut self) -> Result<(), AppError> {
        let blank = vec![0.5f32; self.shape.iter().product()];
        self.session.run(&[TensorRef::new(&self.shape, &blank)])?;
        Ok(())
    }
}

impl<F: Send + 'static> Stage<Prepared<F>> for InferStage {
    type Out = Inferred<F>;
    type Error = AppError;
    fn process(&mut self, p: Prepared<F>) -> Result<Inferred<F>, AppError> {
        let outputs = self.session.run(&[TensorRef::new(&self.shape, &p.input)])?;
        let mut set = self.pool.take();
        set.copy_from(outputs);
        // The input buffer goes back to its pool here, as soon as the engine is done with it.
        drop(p.input);
        Ok(Inferred { frame: p.frame, outputs: set, letterbox: p.letterbox })
    }

    /// See [`InferStage::warm_up`].
    fn on_start(&mut self) -> Result<(), AppError> {
        self.warm_up()
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

impl<F: Send + 'static> Stage<Inferred<F>> for PostStage {
    type Out = Detected<F>;
    type Error = AppError;
    fn process(&mut self, i: Inferred<F>) -> Result<Detected<F>, AppError> {
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

pub use framepipe_tune::{Pins, Replicas};

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
    build_streams_pipeline(model, vec![(source, opts.pace)], opts, video)
}

/// Builds a detection pipeline behind several sources, each `(source, pace)` feeding its own
/// stream (0, 1, … in order, source threads `decode0`, `decode1`, …; `decode` for one) into shared
/// stages: one set of weights, shared replicas, round-robin admission across the streams. The
/// options' own `pace` is not used. An annotated video can be written for one source only.
pub fn build_streams_pipeline<S>(
    model: Arc<DetectModel>,
    sources: Vec<(S, Pace)>,
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
    if sources.len() > 1 && matches!(opts.annotate, Some(Some(_))) {
        return Err(AppError::config("--out", "an annotated video is written for one source only"));
    }
    let streams = sources.len();
    let all_jit = sources.iter().all(|(_, p)| *p == Pace::JustInTime);
    let pools = StagePools::new(&model, opts.live_frames());
    let r = opts.replicas;
    let mut b =
        Pipeline::<Pooled<Frame>>::builder().admission(opts.admission).output_capacity(opts.queue).streams(streams);
    for (i, (source, pace)) in sources.into_iter().enumerate() {
        let config = SourceConfig::new(source_name(i, streams)).pin(pin(&opts.pins.decode)).pace(pace).stream(i as u32);
        b = b.source(config, source);
    }
    if let Some(m) = in_flight_cap(opts, streams, all_jit) {
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

/// The cap on frames in flight for a pipeline fed by `streams` sources (`all_jit`: every one paced
/// just in time): the options' own, else none for one stream or for sources released just in time
/// (they read a frame only when it can flow through, which bounds the frames in flight by itself).
/// Sources that run free (paced like cameras, or behind a dropping entrance) would fill every queue
/// without a cap, and each frame would wait behind them: as many frames as the widest stage has
/// replicas keep every replica busy (2.5x less latency, 2x more throughput than no cap on two
/// videos and two models; docs/performance.md).
fn in_flight_cap(opts: &PipelineOptions, streams: usize, all_jit: bool) -> Option<usize> {
    let r = &opts.replicas;
    match opts.max_in_flight {
        Some(m) => Some(m),
        None if streams > 1 && !(all_jit && opts.admission == Admission::Block) => Some(r.infer.max(r.pre).max(r.post)),
        None => None,
    }
}

/// A detection pipeline over several streams and models: one source per stream (`decode`, or
/// `decode0`, `decode1`, …) → fork → one branch per model (`pre` → `infer` × N → `post`, named
/// `pre:<branch>` … when there are several) → join, one result per frame in order.
pub type MultiDetectionPipeline = Pipeline<SharedFrame, Joined<Detected<SharedFrame>>>;

/// The name of stage `stage` in branch `branch` of a fan-out of `branches` branches.
pub fn branch_stage_name(stage: &str, branch: &str, branches: usize) -> String {
    if branches <= 1 {
        stage.to_string()
    } else {
        format!("{stage}:{branch}")
    }
}

/// The name of the source thread of stream `stream` of `streams`.
pub fn source_name(stream: usize, streams: usize) -> String {
    if streams <= 1 {
        "decode".to_string()
    } else {
        format!("decode{stream}")
    }
}

impl PipelineOptions {
    /// How many frames can be alive at once in a fan-out to `branches` models fed by `streams`
    /// sources: what the pools must hold.
    pub fn live_frames_multi(&self, branches: usize, streams: usize) -> usize {
        let r = &self.replicas;
        let q = self.queue;
        let inside = branches * (r.pre + r.infer + r.post + 3 * q + 1) + q + 3;
        self.max_in_flight.unwrap_or(inside) + streams * (q + 1) + 2
    }
}

/// Builds a fan-out detection pipeline: `sources[i]` feeds stream `i`; `models` are the branches,
/// each `(name, model)` with its own pools, replicas (`opts.replicas` per branch) and pins.
pub fn build_multi_pipeline<S>(
    models: &[(String, Arc<DetectModel>)],
    sources: Vec<S>,
    opts: &PipelineOptions,
) -> Result<MultiDetectionPipeline, AppError>
where
    S: framepipe::Source<Item = SharedFrame> + Send + 'static,
{
    opts.validate()?;
    if opts.annotate.is_some() {
        return Err(AppError::config("--out", "an annotated video is written for one video and one model only"));
    }
    let n = models.len();
    let live = opts.live_frames_multi(n, sources.len());
    let streams = sources.len();
    let mut b =
        Pipeline::<SharedFrame>::builder().admission(opts.admission).output_capacity(opts.queue).streams(streams);
    for (i, source) in sources.into_iter().enumerate() {
        let config =
            SourceConfig::new(source_name(i, streams)).pin(pin(&opts.pins.decode)).pace(opts.pace).stream(i as u32);
        b = b.source(config, source);
    }
    let r = opts.replicas;
    if let Some(m) = in_flight_cap(opts, streams, opts.pace == Pace::JustInTime) {
        b = b.max_in_flight(m);
    }
    if let Some(d) = opts.deadline {
        b = b.deadline(d);
    }
    let branches = models
        .iter()
        .map(|(name, model)| {
            let pools = StagePools::new(model, live);
            let (m1, p1) = (model.clone(), pools.clone());
            let (m2, p2) = (model.clone(), pools.clone());
            let (m3, p3) = (model.clone(), pools);
            let stage = |s: &str| branch_stage_name(s, name, n);
            Branch::<SharedFrame>::new(name.clone())
                .stage(
                    StageConfig::new(stage("pre")).replicas(r.pre).pin(pin(&opts.pins.pre)).capacity(opts.queue),
                    move |_: &StageContext| PreStage::new(&m1, &p1),
                )
                .stage(
                    StageConfig::new(stage("infer")).replicas(r.infer).pin(pin(&opts.pins.infer)).capacity(opts.queue),
                    move |_: &StageContext| InferStage::new(&m2, &p2),
                )
                .stage(
                    StageConfig::new(stage("post")).replicas(r.post).pin(pin(&opts.pins.post)).capacity(opts.queue),
                    move |_: &StageContext| PostStage::new(&m3, &p3),
                )
        })
        .collect();
    Ok(b.fan_out(branches).build()?)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_frames_go_back_when_the_last_handle_drops() {
        let frames = Pool::new(2, 2, || Frame::new(8, 8, framepipe_vision::PixelFormat::Bgr8).unwrap());
        let shared = SharedFrames::new(2);
        for round in 0..200 {
            let mut f = frames.take();
            f.data_mut()[0] = (round % 251) as u8;
            let h = shared.share(f);
            let clones: Vec<SharedFrame> = (0..3).map(|_| h.clone()).collect();
            drop(h);
            let readers: Vec<_> =
                clones.into_iter().map(|c| std::thread::spawn(move || c.with_frame(|v| v.data()[0]))).collect();
            for r in readers {
                assert_eq!(r.join().unwrap(), (round % 251) as u8, "every handle sees the frame");
            }
            assert_eq!(frames.idle(), 2, "round {round}: the frame went back to its pool");
        }
        assert_eq!((shared.misses(), frames.misses()), (0, 0), "no allocation per frame");
    }

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
