//! Decode → confidence threshold → NMS → map to frame → clip, in one reusable object.

use crate::decode::{DecodeScratch, Decoder};
use crate::error::VisionError;
use crate::geometry::Detection;
use crate::letterbox::LetterboxParams;
use crate::nms::{Nms, NmsConfig};
use crate::tensor::TensorView;

/// Settings for a [`Postprocessor`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PostprocessConfig {
    /// Candidates need a score strictly greater than this (Ultralytics default 0.25).
    /// Must be finite.
    pub conf_threshold: f32,
    /// NMS settings (also supplies `max_detections` for decoders without NMS).
    pub nms: NmsConfig,
}

impl Default for PostprocessConfig {
    fn default() -> Self {
        Self { conf_threshold: 0.25, nms: NmsConfig::default() }
    }
}

impl PostprocessConfig {
    /// Checks the threshold and the NMS settings.
    pub fn validate(&self) -> Result<(), VisionError> {
        if !self.conf_threshold.is_finite() {
            return Err(VisionError::InvalidConfig(format!(
                "confidence threshold must be finite, got {}",
                self.conf_threshold
            )));
        }
        self.nms.validate()
    }
}

/// Owns a [`Decoder`], the thresholds and all scratch buffers, and turns raw
/// model outputs into frame-coordinate detections.
///
/// Steps: decode (keeping scores `> conf_threshold`) → NMS (skipped for
/// decoders where [`Decoder::needs_nms`] is false, which only keep the
/// `max_detections` best) → map with [`LetterboxParams`] → clip to the frame.
/// After warm-up no call allocates, as long as the caller reuses `out`.
#[derive(Debug, Clone)]
pub struct Postprocessor {
    decoder: Decoder,
    config: PostprocessConfig,
    nms: Nms,
    scratch: DecodeScratch,
    candidates: Vec<Detection>,
    keep: Vec<usize>,
}

impl Postprocessor {
    /// A postprocessor for `decoder` with `config` (both validated).
    pub fn new(decoder: Decoder, config: PostprocessConfig) -> Result<Self, VisionError> {
        decoder.validate()?;
        config.validate()?;
        Ok(Self {
            decoder,
            config,
            nms: Nms::new(config.nms)?,
            scratch: DecodeScratch::new(),
            candidates: Vec::new(),
            keep: Vec::new(),
        })
    }

    /// The decoder.
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// The settings.
    pub fn config(&self) -> &PostprocessConfig {
        &self.config
    }

    /// Replaces the settings (validated; the old ones stay on error).
    pub fn set_config(&mut self, config: PostprocessConfig) -> Result<(), VisionError> {
        config.validate()?;
        self.nms.set_config(config.nms)?;
        self.config = config;
        Ok(())
    }

    /// Decodes `outputs` and writes the final detections, in frame
    /// coordinates and clipped to the frame, into `out` (cleared first),
    /// highest score first.
    pub fn process(
        &mut self,
        outputs: &[TensorView<'_>],
        letterbox: &LetterboxParams,
        out: &mut Vec<Detection>,
    ) -> Result<(), VisionError> {
        self.select(outputs)?;
        out.clear();
        out.extend(self.keep.iter().map(|&i| letterbox.map_detection_to_frame(&self.candidates[i])));
        Ok(())
    }

    /// The end of [`Postprocessor::process`] for candidates decoded elsewhere (e.g. filtered by
    /// score on a GPU): `candidates` must be what [`Decoder::decode`] would have produced, in its
    /// order (anchor order) and with its threshold, for the result to be the same. They are taken
    /// (the vector is left empty, its capacity kept); NMS (or top-k), mapping and clipping follow.
    pub fn process_decoded(
        &mut self,
        candidates: &mut Vec<Detection>,
        letterbox: &LetterboxParams,
        out: &mut Vec<Detection>,
    ) {
        std::mem::swap(&mut self.candidates, candidates);
        candidates.clear();
        if self.decoder.needs_nms() {
            self.nms.keep_indices(&self.candidates, &mut self.keep);
        } else {
            self.nms.top_k_indices(&self.candidates, &mut self.keep);
        }
        out.clear();
        out.extend(self.keep.iter().map(|&i| letterbox.map_detection_to_frame(&self.candidates[i])));
    }

    /// Like [`Postprocessor::process`] but leaves the detections in
    /// model-input coordinates (no mapping, no clipping).
    pub fn process_input_coords(
        &mut self,
        outputs: &[TensorView<'_>],
        out: &mut Vec<Detection>,
    ) -> Result<(), VisionError> {
        self.select(outputs)?;
        out.clear();
        out.extend(self.keep.iter().map(|&i| self.candidates[i]));
        Ok(())
    }

    /// Decode + threshold + NMS into `self.keep` (indices into `self.candidates`).
    fn select(&mut self, outputs: &[TensorView<'_>]) -> Result<(), VisionError> {
        self.candidates.clear();
        self.decoder.decode(outputs, self.config.conf_threshold, &mut self.scratch, &mut self.candidates)?;
        if self.decoder.needs_nms() {
            self.nms.keep_indices(&self.candidates, &mut self.keep);
        } else {
            self.nms.top_k_indices(&self.candidates, &mut self.keep);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::letterbox::PreprocessConfig;

    /// Candidates decoded outside (as a GPU filter hands them over) give exactly what `process`
    /// gives on the raw output, and the vector handed in comes back empty.
    #[test]
    fn process_decoded_matches_process() {
        let (nc, n) = (3usize, 400usize);
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % 10_000) as f32 / 10_000.0
        };
        let mut data = vec![0f32; (4 + nc) * n];
        for i in 0..n {
            data[i] = 40.0 + 560.0 * next();
            data[n + i] = 40.0 + 560.0 * next();
            data[2 * n + i] = 10.0 + 80.0 * next();
            data[3 * n + i] = 10.0 + 80.0 * next();
            for c in 0..nc {
                data[(4 + c) * n + i] = next();
            }
        }
        let shape = [1, 4 + nc, n];
        let view = TensorView { shape: &shape, data: &data };
        let decoder = Decoder::YoloV8 { num_classes: nc, transposed: false };
        let config = PostprocessConfig { conf_threshold: 0.6, nms: NmsConfig::default() };
        let letterbox = LetterboxParams::compute(1280, 720, &PreprocessConfig::new(640, 640)).unwrap();
        let mut post = Postprocessor::new(decoder.clone(), config).unwrap();
        let mut expected = Vec::new();
        post.process(&[view], &letterbox, &mut expected).unwrap();
        assert!(expected.len() > 5, "the test needs detections, got {}", expected.len());
        let mut candidates = Vec::new();
        decoder.decode(&[view], config.conf_threshold, &mut DecodeScratch::new(), &mut candidates).unwrap();
        let mut got = Vec::new();
        post.process_decoded(&mut candidates, &letterbox, &mut got);
        assert_eq!(got, expected);
        assert!(candidates.is_empty());
    }
}
