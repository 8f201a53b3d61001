//! Greedy non-maximum suppression with reusable scratch.

use crate::error::VisionError;
use crate::geometry::{BBox, Detection};

/// NMS settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NmsConfig {
    /// A candidate is suppressed when its IoU with an already kept box is
    /// strictly greater than this (torchvision convention). In `[0, 1]`;
    /// Ultralytics' default is 0.7, YOLOv5's 0.45.
    pub iou_threshold: f32,
    /// `false` (default): only boxes of the same class suppress each other.
    /// `true`: any two boxes may suppress each other.
    pub class_agnostic: bool,
    /// Keep at most this many boxes (Ultralytics `max_det`, default 300). ≥ 1.
    pub max_detections: usize,
    /// Consider only this many highest-scoring candidates (Ultralytics
    /// `max_nms`, default 30000). ≥ 1.
    pub max_candidates: usize,
}

impl Default for NmsConfig {
    fn default() -> Self {
        Self { iou_threshold: 0.7, class_agnostic: false, max_detections: 300, max_candidates: 30_000 }
    }
}

impl NmsConfig {
    /// Checks the ranges documented on the fields.
    pub fn validate(&self) -> Result<(), VisionError> {
        if !(0.0..=1.0).contains(&self.iou_threshold) {
            return Err(VisionError::InvalidConfig(format!(
                "NMS IoU threshold must be in [0, 1], got {}",
                self.iou_threshold
            )));
        }
        if self.max_detections == 0 || self.max_candidates == 0 {
            return Err(VisionError::InvalidConfig(format!(
                "NMS max_detections ({}) and max_candidates ({}) must be at least 1",
                self.max_detections, self.max_candidates
            )));
        }
        Ok(())
    }
}

/// Greedy NMS: candidates are visited by descending score (ties: lower index
/// first); each is kept unless it overlaps a kept box (of the same class,
/// unless class-agnostic) by IoU > threshold. Cost `O(n log n + k·n)` for
/// `n` candidates and `k` kept boxes. Candidates with a NaN score are dropped.
///
/// Internal buffers are reused, so steady-state calls do not allocate.
///
/// ```
/// use framepipe_vision::{BBox, Detection, Nms, NmsConfig};
/// let det = |class_id, score, x1| Detection {
///     class_id, score, bbox: BBox::new(x1, 0.0, x1 + 10.0, 10.0), landmarks: None,
/// };
/// let mut dets = vec![det(0, 0.8, 0.0), det(0, 0.9, 1.0), det(1, 0.7, 0.0)];
/// let mut nms = Nms::new(NmsConfig { iou_threshold: 0.5, ..NmsConfig::default() })?;
/// nms.apply(&mut dets);
/// // the 0.8 box overlaps the 0.9 box of the same class (IoU 9/11) and goes;
/// // the class-1 box stays.
/// assert_eq!(dets.iter().map(|d| d.score).collect::<Vec<_>>(), [0.9, 0.7]);
/// # Ok::<(), framepipe_vision::VisionError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Nms {
    config: NmsConfig,
    order: Vec<u32>,
    keep: Vec<usize>,
    kept: KeptBoxes,
    tmp: Vec<Detection>,
}

/// Kept boxes as structure-of-arrays, so the overlap test over all kept boxes
/// is a branch-free loop the compiler vectorises.
#[derive(Debug, Clone, Default)]
struct KeptBoxes {
    x1: Vec<f32>,
    y1: Vec<f32>,
    x2: Vec<f32>,
    y2: Vec<f32>,
    area: Vec<f32>,
    class_id: Vec<u32>,
}

impl KeptBoxes {
    fn clear(&mut self) {
        self.x1.clear();
        self.y1.clear();
        self.x2.clear();
        self.y2.clear();
        self.area.clear();
        self.class_id.clear();
    }

    fn push(&mut self, b: &BBox, area: f32, class_id: u32) {
        self.x1.push(b.x1);
        self.y1.push(b.y1);
        self.x2.push(b.x2);
        self.y2.push(b.y2);
        self.area.push(area);
        self.class_id.push(class_id);
    }

    /// Whether `b` overlaps any kept box (of `class_id`, unless `agnostic`)
    /// with IoU > `thr`, using `IoU > thr ⇔ inter > thr * union`. An empty
    /// union gives `inter = 0`, which never suppresses (as in `BBox::iou`).
    #[inline]
    fn overlaps(&self, b: &BBox, area: f32, class_id: u32, agnostic: bool, thr: f32) -> bool {
        let n = self.x1.len();
        let (x1, y1, x2, y2) = (&self.x1[..n], &self.y1[..n], &self.x2[..n], &self.y2[..n]);
        let (ar, cl) = (&self.area[..n], &self.class_id[..n]);
        let mut hit = false;
        for j in 0..n {
            let w = min(x2[j], b.x2) - max(x1[j], b.x1);
            let h = min(y2[j], b.y2) - max(y1[j], b.y1);
            let inter = max(w, 0.0) * max(h, 0.0);
            let same = agnostic | (cl[j] == class_id);
            hit |= same & (inter > thr * (ar[j] + area - inter));
        }
        hit
    }
}

/// `a < b ? a : b` (lowers to a single SIMD min; NaN handling is irrelevant here
/// because NaN comparisons below are false anyway).
#[inline(always)]
fn min(a: f32, b: f32) -> f32 {
    if a < b {
        a
    } else {
        b
    }
}

#[inline(always)]
fn max(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

impl Nms {
    /// NMS with `config` (validated).
    pub fn new(config: NmsConfig) -> Result<Self, VisionError> {
        config.validate()?;
        Ok(Self { config, order: Vec::new(), keep: Vec::new(), kept: KeptBoxes::default(), tmp: Vec::new() })
    }

    /// The settings.
    pub fn config(&self) -> &NmsConfig {
        &self.config
    }

    /// Replaces the settings (validated).
    pub fn set_config(&mut self, config: NmsConfig) -> Result<(), VisionError> {
        config.validate()?;
        self.config = config;
        Ok(())
    }

    /// Sorts candidate indices by score (descending, ties by index), keeping
    /// at most `max_candidates`.
    fn sort_candidates(&mut self, dets: &[Detection]) {
        self.order.clear();
        self.order.extend(dets.iter().enumerate().filter(|(_, d)| !d.score.is_nan()).map(|(i, _)| i as u32));
        let cmp = |a: &u32, b: &u32| dets[*b as usize].score.total_cmp(&dets[*a as usize].score).then(a.cmp(b));
        let cap = self.config.max_candidates;
        if self.order.len() > cap {
            self.order.select_nth_unstable_by(cap - 1, cmp);
            self.order.truncate(cap);
        }
        self.order.sort_unstable_by(cmp);
    }

    /// Writes the indices (into `dets`) of the boxes NMS keeps into `keep`,
    /// highest score first. `keep` is cleared first.
    pub fn keep_indices(&mut self, dets: &[Detection], keep: &mut Vec<usize>) {
        self.sort_candidates(dets);
        keep.clear();
        self.kept.clear();
        let thr = self.config.iou_threshold;
        let agnostic = self.config.class_agnostic;
        let max = self.config.max_detections;
        for &i in &self.order {
            let d = &dets[i as usize];
            let area = d.bbox.area();
            let suppressed = self.kept.overlaps(&d.bbox, area, d.class_id, agnostic, thr);
            if !suppressed {
                keep.push(i as usize);
                self.kept.push(&d.bbox, area, d.class_id);
                if keep.len() >= max {
                    break;
                }
            }
        }
    }

    /// Like [`Nms::keep_indices`] without suppression: the `max_detections`
    /// best candidates by score (for decoders that need no NMS, e.g. RT-DETR).
    pub fn top_k_indices(&mut self, dets: &[Detection], keep: &mut Vec<usize>) {
        self.sort_candidates(dets);
        keep.clear();
        let max = self.config.max_detections;
        keep.extend(self.order.iter().take(max).map(|&i| i as usize));
    }

    /// Runs NMS in place: `dets` is left with the kept boxes, highest score first.
    pub fn apply(&mut self, dets: &mut Vec<Detection>) {
        let mut keep = std::mem::take(&mut self.keep);
        self.keep_indices(dets, &mut keep);
        self.tmp.clear();
        self.tmp.extend(keep.iter().map(|&i| dets[i]));
        dets.clear();
        dets.extend_from_slice(&self.tmp);
        self.keep = keep;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(class_id: u32, score: f32, x1: f32, y1: f32, x2: f32, y2: f32) -> Detection {
        Detection { class_id, score, bbox: BBox::new(x1, y1, x2, y2), landmarks: None }
    }

    fn nms(iou: f32, agnostic: bool, max_det: usize) -> Nms {
        Nms::new(NmsConfig {
            iou_threshold: iou,
            class_agnostic: agnostic,
            max_detections: max_det,
            max_candidates: 30_000,
        })
        .unwrap()
    }

    fn scores(d: &[Detection]) -> Vec<f32> {
        d.iter().map(|d| d.score).collect()
    }

    #[test]
    fn empty_input_gives_empty_output() {
        let mut d: Vec<Detection> = Vec::new();
        nms(0.5, false, 10).apply(&mut d);
        assert!(d.is_empty());
        let mut keep = vec![3, 4];
        nms(0.5, false, 10).keep_indices(&[], &mut keep);
        assert!(keep.is_empty());
    }

    #[test]
    fn class_aware_keeps_overlapping_boxes_of_other_classes() {
        // Two identical boxes (IoU 1) of different classes plus a duplicate of class 0.
        let input = vec![
            det(0, 0.9, 0.0, 0.0, 10.0, 10.0),
            det(1, 0.8, 0.0, 0.0, 10.0, 10.0),
            det(0, 0.7, 0.0, 0.0, 10.0, 10.0),
        ];
        let mut aware = input.clone();
        nms(0.5, false, 10).apply(&mut aware);
        assert_eq!(scores(&aware), [0.9, 0.8]);
        assert_eq!(aware[1].class_id, 1);

        let mut agnostic = input;
        nms(0.5, true, 10).apply(&mut agnostic);
        assert_eq!(scores(&agnostic), [0.9]);
    }

    #[test]
    fn iou_threshold_is_strict() {
        // [0,10]x[0,10] vs [5,15]x[0,10]: inter 50, union 150, IoU = 1/3.
        let input = vec![det(0, 0.9, 0.0, 0.0, 10.0, 10.0), det(0, 0.8, 5.0, 0.0, 15.0, 10.0)];
        let mut d = input.clone();
        nms(0.34, false, 10).apply(&mut d);
        assert_eq!(d.len(), 2, "IoU 1/3 < 0.34 keeps both");
        let mut d = input.clone();
        nms(0.33, false, 10).apply(&mut d);
        assert_eq!(scores(&d), [0.9], "IoU 1/3 > 0.33 suppresses");
        // Threshold 1.0: even identical boxes survive (IoU is never > 1).
        let mut d = vec![det(0, 0.9, 0.0, 0.0, 10.0, 10.0), det(0, 0.8, 0.0, 0.0, 10.0, 10.0)];
        nms(1.0, false, 10).apply(&mut d);
        assert_eq!(d.len(), 2);
        // Threshold 0: any positive overlap suppresses, touching does not.
        let mut d = vec![
            det(0, 0.9, 0.0, 0.0, 10.0, 10.0),
            det(0, 0.8, 10.0, 0.0, 20.0, 10.0), // touches
            det(0, 0.7, 9.9, 9.9, 30.0, 30.0),  // overlaps a corner of the first
        ];
        nms(0.0, false, 10).apply(&mut d);
        assert_eq!(scores(&d), [0.9, 0.8]);
    }

    #[test]
    fn suppression_is_greedy_not_transitive() {
        // A (0.9) overlaps B (0.8) with IoU 1/3; B overlaps C (0.7) with IoU 1/3;
        // A and C do not overlap. With threshold 0.3: B goes (because of A), and C
        // survives since B is not kept.
        let mut d = vec![
            det(0, 0.7, 10.0, 0.0, 20.0, 10.0),
            det(0, 0.9, 0.0, 0.0, 10.0, 10.0),
            det(0, 0.8, 5.0, 0.0, 15.0, 10.0),
        ];
        nms(0.3, false, 10).apply(&mut d);
        assert_eq!(scores(&d), [0.9, 0.7]);
    }

    #[test]
    fn max_detections_caps_output_by_score() {
        let mut d: Vec<Detection> = (0..10)
            .map(|i| {
                let x = i as f32 * 20.0;
                det(0, 0.1 * i as f32, x, 0.0, x + 10.0, 10.0)
            })
            .collect();
        nms(0.5, false, 3).apply(&mut d);
        assert_eq!(d.len(), 3);
        let s = scores(&d);
        assert!((s[0] - 0.9).abs() < 1e-6 && (s[1] - 0.8).abs() < 1e-6 && (s[2] - 0.7).abs() < 1e-6);
    }

    #[test]
    fn max_candidates_drops_low_scores_before_nms() {
        let mut d: Vec<Detection> = (0..5)
            .map(|i| {
                let x = i as f32 * 20.0;
                det(0, 0.5 + 0.1 * i as f32, x, 0.0, x + 10.0, 10.0)
            })
            .collect();
        let mut n = Nms::new(NmsConfig { max_candidates: 2, ..NmsConfig::default() }).unwrap();
        n.apply(&mut d);
        assert_eq!(d.len(), 2);
        assert!(d.iter().all(|d| d.score > 0.75));
    }

    #[test]
    fn ties_and_nan_are_deterministic() {
        let d = vec![
            det(0, f32::NAN, 0.0, 0.0, 10.0, 10.0),
            det(0, 0.5, 0.0, 0.0, 10.0, 10.0),
            det(0, 0.5, 0.0, 0.0, 10.0, 10.0),
        ];
        let mut keep = Vec::new();
        nms(0.5, false, 10).keep_indices(&d, &mut keep);
        // NaN dropped; of the equal pair the lower index wins.
        assert_eq!(keep, [1]);
    }

    #[test]
    fn top_k_skips_suppression() {
        let d = vec![
            det(0, 0.2, 0.0, 0.0, 10.0, 10.0),
            det(0, 0.9, 0.0, 0.0, 10.0, 10.0),
            det(0, 0.5, 0.0, 0.0, 10.0, 10.0),
        ];
        let mut keep = Vec::new();
        nms(0.5, false, 2).top_k_indices(&d, &mut keep);
        assert_eq!(keep, [1, 2]);
    }

    #[test]
    fn config_is_validated() {
        let bad = |c: NmsConfig| Nms::new(c).unwrap_err().to_string();
        assert!(bad(NmsConfig { iou_threshold: 1.5, ..NmsConfig::default() }).contains("IoU threshold"));
        assert!(bad(NmsConfig { iou_threshold: f32::NAN, ..NmsConfig::default() }).contains("IoU threshold"));
        assert!(bad(NmsConfig { max_detections: 0, ..NmsConfig::default() }).contains("max_detections"));
    }
}
