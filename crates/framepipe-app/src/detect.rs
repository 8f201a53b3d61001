//! The `detect` command: one image in, detections (JSON) and an annotated image out.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::stages::AnnotateStage;
use crate::{AppError, DetectModel, Detector};

/// One detection, as the `detect` JSON writes it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DetectionJson {
    /// Class index.
    pub class_id: u32,
    /// Class name (or the index as text if the model has no names).
    pub label: String,
    /// Confidence.
    pub score: f32,
    /// `[x1, y1, x2, y2]` in image pixels.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
}

/// Image size.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct ImageSize {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
}

/// Step times in milliseconds.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct TimingsMs {
    /// Preprocessing.
    pub pre: f64,
    /// Inference.
    pub infer: f64,
    /// Postprocessing.
    pub post: f64,
}

/// The `detect` command's output (schema in `docs/formats.md`).
#[derive(Clone, Debug, Serialize)]
pub struct DetectReport {
    /// The engine used (`ort`, `tract`, `tract-cuda`).
    pub engine: String,
    /// The model file.
    pub model: String,
    /// The image size.
    pub image: ImageSize,
    /// Step times.
    pub timings_ms: TimingsMs,
    /// Detections, best first.
    pub detections: Vec<DetectionJson>,
}

/// Detects objects in the image at `path`; draws them into `out` if given.
pub fn detect_image(model: Arc<DetectModel>, path: &Path, out: Option<&Path>) -> Result<DetectReport, AppError> {
    let mut frame = framepipe_video::read_image(path)?;
    let mut detector = Detector::new(model.clone())?;
    detector.warm_up()?;
    let result = detector.detect(frame.as_ref())?;
    let labels = model.labels();
    let detections: Vec<DetectionJson> = result
        .detections
        .iter()
        .map(|d| DetectionJson {
            class_id: d.class_id,
            label: labels.label(d.class_id).into_owned(),
            score: d.score,
            bbox: [d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2],
        })
        .collect();
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let report = DetectReport {
        engine: model.selection().kind.to_string(),
        model: model.path().display().to_string(),
        image: ImageSize { width: frame.width(), height: frame.height() },
        timings_ms: TimingsMs {
            pre: ms(result.timings.pre),
            infer: ms(result.timings.infer),
            post: ms(result.timings.post),
        },
        detections,
    };
    if let Some(out) = out {
        let found: Vec<_> = result.detections.to_vec();
        AnnotateStage::new(labels.clone(), None).draw(&mut frame, &found);
        framepipe_video::write_image(out, frame.as_ref())?;
    }
    Ok(report)
}
