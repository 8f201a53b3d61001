//! A detection model: an engine plus what its pre- and postprocessing need.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use framepipe_infer::{check_input, Engine, EngineChoice, EngineOptions, ModelInfo, Selection};
use framepipe_vision::{
    Decoder, Labels, NmsConfig, Normalization, PostprocessConfig, Postprocessor, PreprocessConfig, Preprocessor,
};

use crate::AppError;

/// The model families the app knows how to feed and decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// Ultralytics YOLOv8 / YOLO11 detect head (`1×(4+nc)×N`).
    Yolo,
    /// CenterFace (heatmap, scale, offset, landmarks at stride 4).
    CenterFace,
}

impl ModelKind {
    /// A short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            ModelKind::Yolo => "yolo",
            ModelKind::CenterFace => "centerface",
        }
    }
}

/// How to load and run a detection model.
#[derive(Clone, Debug)]
pub struct ModelOptions {
    /// Which engine.
    pub engine: EngineChoice,
    /// Engine options (threads per session, execution provider, ...).
    pub engine_options: EngineOptions,
    /// Confidence threshold (default 0.25).
    pub conf: f32,
    /// NMS IoU threshold (default 0.45).
    pub iou: f32,
    /// NMS across classes (default: per class).
    pub class_agnostic: bool,
    /// A labels file (one name per line) instead of the model's own `names`.
    pub labels: Option<PathBuf>,
    /// The model input size (width, height), for models with dynamic input axes; a model with a
    /// static input of another size is refused.
    pub input_size: Option<(usize, usize)>,
    /// Letterbox on the GPU (cargo feature `cuda`): each `pre` replica uploads its frames from
    /// pinned memory and runs framepipe-cuda's kernel, then copies the input back to the host for
    /// the engine. Default `false`.
    #[cfg(feature = "cuda")]
    pub gpu_preprocess: bool,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            engine: EngineChoice::Auto,
            engine_options: EngineOptions::default(),
            conf: 0.25,
            iou: 0.45,
            class_agnostic: false,
            labels: None,
            input_size: None,
            #[cfg(feature = "cuda")]
            gpu_preprocess: false,
        }
    }
}

/// A loaded detection model, shared (behind an `Arc`) by every replica that runs it: the engine
/// holds the weights once; each replica makes its own session.
pub struct DetectModel {
    path: PathBuf,
    engine: Arc<dyn Engine>,
    selection: Selection,
    kind: ModelKind,
    input_shape: Vec<usize>,
    pre: PreprocessConfig,
    decoder: Decoder,
    post: PostprocessConfig,
    labels: Arc<Labels>,
    #[cfg(feature = "cuda")]
    gpu_preprocess: bool,
}

impl std::fmt::Debug for DetectModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DetectModel")
            .field("path", &self.path)
            .field("engine", &self.selection.kind)
            .field("kind", &self.kind)
            .field("input_shape", &self.input_shape)
            .finish()
    }
}

/// The CenterFace input used when none is given: 640×384 holds a 16:9 frame with little padding.
const CENTERFACE_INPUT: (usize, usize) = (640, 384);

fn concrete(shape: &[Option<usize>]) -> Option<Vec<usize>> {
    shape.iter().copied().collect()
}

/// Recognises the model family from its declared outputs.
fn kind_of(info: &ModelInfo) -> Result<ModelKind, String> {
    let channels: Vec<Option<usize>> = info.outputs.iter().map(|o| o.shape.get(1).copied().flatten()).collect();
    match (info.outputs.len(), channels.as_slice()) {
        (3 | 4, [Some(1), Some(2), Some(2), ..]) => Ok(ModelKind::CenterFace),
        (1, _) if info.outputs[0].shape.len() == 3 => Ok(ModelKind::Yolo),
        (n, _) => Err(format!(
            "unrecognised outputs ({n}: {}); supported: a YOLOv8/YOLO11 detect head (one 1x(4+nc)xN output) or CenterFace",
            info.outputs.iter().map(|o| format!("{} {:?}", o.name, o.shape)).collect::<Vec<_>>().join(", ")
        )),
    }
}

impl DetectModel {
    /// Loads `path` with `opts`: recognises the model family, picks the input size (the model's own,
    /// or `opts.input_size` for dynamic inputs), loads the engine and refuses a model whose input is
    /// not what the preprocessing produces (`[1, 3, H, W]` f32).
    pub fn load(path: &Path, opts: &ModelOptions) -> Result<Arc<DetectModel>, AppError> {
        let declared = framepipe_infer::inspect(path)?;
        let model_err = |reason: String| AppError::Model { path: path.to_path_buf(), reason };
        let kind = kind_of(&declared).map_err(model_err)?;
        let input = declared.inputs.first().ok_or_else(|| model_err("the model has no input".into()))?;
        let static_hw = match concrete(&input.shape).as_deref() {
            Some([_, _, h, w]) => Some((*w, *h)),
            _ => None,
        };
        let (w, h) = match (kind, opts.input_size, static_hw) {
            (ModelKind::CenterFace, Some(s), _) => s,
            (ModelKind::CenterFace, None, _) => CENTERFACE_INPUT,
            (_, Some(s), _) => s,
            (_, None, Some(s)) => s,
            (_, None, None) => (640, 640),
        };
        if kind == ModelKind::CenterFace && (w % 32 != 0 || h % 32 != 0) {
            return Err(AppError::config("input size", format!("CenterFace needs multiples of 32, got {w}x{h}")));
        }
        let shape = vec![1, 3, h, w];
        let mut eopts = opts.engine_options.clone();
        // CenterFace declares a wrong static shape; dynamic inputs need a concrete one.
        if kind == ModelKind::CenterFace || static_hw.is_none() {
            eopts.input_shape = Some(shape.clone());
        }
        let (engine, selection) = framepipe_infer::load(path, opts.engine, &eopts)?;
        check_input(engine.model(), &shape)?;

        let info = engine.model();
        let labels = match (&opts.labels, kind) {
            (Some(file), _) => Labels::from_file(file)?,
            (None, ModelKind::CenterFace) => Labels::new(["face"]),
            (None, ModelKind::Yolo) => match info.metadata.get("names") {
                Some(names) => {
                    Labels::parse_names_dict(names).map_err(|e| model_err(format!("metadata `names`: {e}")))?
                }
                None => Labels::new(Vec::<String>::new()),
            },
        };
        let (pre, decoder) = match kind {
            ModelKind::Yolo => {
                let out = concrete(&info.outputs[0].shape)
                    .ok_or_else(|| model_err(format!("output {:?} has dynamic axes", info.outputs[0].shape)))?;
                let nc = (!labels.is_empty()).then_some(labels.len());
                (PreprocessConfig::new(w, h), Decoder::from_output_shape(&out, nc)?)
            }
            ModelKind::CenterFace => (
                // CenterFace takes RGB in 0..255.
                PreprocessConfig::new(w, h).with_normalization(Normalization::RAW),
                Decoder::CenterFace { input_width: w, input_height: h },
            ),
        };
        if let Decoder::YoloV8 { num_classes, .. } = &decoder {
            if !labels.is_empty() && labels.len() != *num_classes {
                return Err(model_err(format!("{} labels for a head with {num_classes} classes", labels.len())));
            }
        }
        let post = PostprocessConfig {
            conf_threshold: opts.conf,
            nms: NmsConfig { iou_threshold: opts.iou, class_agnostic: opts.class_agnostic, ..NmsConfig::default() },
        };
        post.validate().map_err(|e| AppError::config("--conf/--iou", e.to_string()))?;
        Ok(Arc::new(DetectModel {
            path: path.to_path_buf(),
            engine,
            selection,
            kind,
            input_shape: shape,
            pre,
            decoder,
            post,
            labels: Arc::new(labels),
            #[cfg(feature = "cuda")]
            gpu_preprocess: opts.gpu_preprocess,
        }))
    }

    /// The model file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The engine (shared weights).
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    /// Which engine was picked, and why.
    pub fn selection(&self) -> &Selection {
        &self.selection
    }

    /// The model family.
    pub fn kind(&self) -> ModelKind {
        self.kind
    }

    /// The input shape the preprocessing produces, `[1, 3, H, W]`.
    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    /// The class names.
    pub fn labels(&self) -> &Arc<Labels> {
        &self.labels
    }

    /// A preprocessor for this model's input (one per replica: it keeps per-size tables).
    pub fn preprocessor(&self) -> Result<Preprocessor, AppError> {
        Ok(Preprocessor::new(self.pre)?)
    }

    /// A GPU preprocessor for this model's input when [`ModelOptions::gpu_preprocess`] is set
    /// (one per replica: it owns a CUDA stream and buffers), `None` otherwise.
    #[cfg(feature = "cuda")]
    pub fn gpu_preprocessor(&self) -> Result<Option<framepipe_cuda::GpuPreprocessor>, AppError> {
        if !self.gpu_preprocess {
            return Ok(None);
        }
        Ok(Some(framepipe_cuda::GpuPreprocessor::new(self.pre)?))
    }

    /// A postprocessor for this model's outputs (one per replica: it keeps scratch buffers).
    pub fn postprocessor(&self) -> Result<Postprocessor, AppError> {
        Ok(Postprocessor::new(self.decoder.clone(), self.post)?)
    }

    /// The number of values of one input tensor.
    pub fn input_len(&self) -> usize {
        self.pre.output_len()
    }
}
