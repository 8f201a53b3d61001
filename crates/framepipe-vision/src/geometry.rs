//! Boxes and detections.

/// An axis-aligned box given by its top-left `(x1, y1)` and bottom-right
/// `(x2, y2)` corners, in continuous pixel coordinates (pixel `i` covers
/// `[i, i + 1)`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BBox {
    /// Left edge.
    pub x1: f32,
    /// Top edge.
    pub y1: f32,
    /// Right edge.
    pub x2: f32,
    /// Bottom edge.
    pub y2: f32,
}

impl BBox {
    /// A box from its corners.
    #[inline]
    pub const fn new(x1: f32, y1: f32, x2: f32, y2: f32) -> Self {
        Self { x1, y1, x2, y2 }
    }

    /// A box from its centre and size (the YOLO `cx, cy, w, h` encoding).
    #[inline]
    pub fn from_cxcywh(cx: f32, cy: f32, w: f32, h: f32) -> Self {
        let hw = w * 0.5;
        let hh = h * 0.5;
        Self { x1: cx - hw, y1: cy - hh, x2: cx + hw, y2: cy + hh }
    }

    /// `x2 - x1`, or 0 for an inverted box.
    #[inline]
    pub fn width(&self) -> f32 {
        (self.x2 - self.x1).max(0.0)
    }

    /// `y2 - y1`, or 0 for an inverted box.
    #[inline]
    pub fn height(&self) -> f32 {
        (self.y2 - self.y1).max(0.0)
    }

    /// Area; 0 for empty or inverted boxes.
    #[inline]
    pub fn area(&self) -> f32 {
        self.width() * self.height()
    }

    /// Area of the intersection with `other` (0 when they do not overlap).
    #[inline]
    pub fn intersection(&self, other: &BBox) -> f32 {
        let w = (self.x2.min(other.x2) - self.x1.max(other.x1)).max(0.0);
        let h = (self.y2.min(other.y2) - self.y1.max(other.y1)).max(0.0);
        w * h
    }

    /// Intersection over union. 0 when the union is empty (two empty boxes),
    /// so degenerate boxes never suppress anything in NMS.
    #[inline]
    pub fn iou(&self, other: &BBox) -> f32 {
        let inter = self.intersection(other);
        let union = self.area() + other.area() - inter;
        if union > 0.0 {
            inter / union
        } else {
            0.0
        }
    }

    /// The box clamped to `[0, width] x [0, height]` (Ultralytics `clip_boxes`).
    #[inline]
    pub fn clip(&self, width: f32, height: f32) -> BBox {
        BBox {
            x1: self.x1.clamp(0.0, width),
            y1: self.y1.clamp(0.0, height),
            x2: self.x2.clamp(0.0, width),
            y2: self.y2.clamp(0.0, height),
        }
    }

    /// True when all four coordinates are finite.
    #[inline]
    pub fn is_finite(&self) -> bool {
        self.x1.is_finite() && self.y1.is_finite() && self.x2.is_finite() && self.y2.is_finite()
    }
}

/// One detected object.
///
/// Decoders produce detections in model-input pixel coordinates; the
/// [`Postprocessor`](crate::Postprocessor) maps them to frame coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// Index into the model's class list (see [`Labels`](crate::Labels)).
    pub class_id: u32,
    /// Confidence in the model's scale (usually `[0, 1]`).
    pub score: f32,
    /// The box.
    pub bbox: BBox,
    /// Five `[x, y]` keypoints for face models (eyes, nose, mouth corners), if any.
    pub landmarks: Option<[[f32; 2]; 5]>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cxcywh_conversion() {
        let b = BBox::from_cxcywh(10.0, 20.0, 4.0, 6.0);
        assert_eq!(b, BBox::new(8.0, 17.0, 12.0, 23.0));
        assert_eq!(b.width(), 4.0);
        assert_eq!(b.height(), 6.0);
        assert_eq!(b.area(), 24.0);
    }

    #[test]
    fn iou_by_hand() {
        let a = BBox::new(0.0, 0.0, 2.0, 2.0);
        let b = BBox::new(1.0, 1.0, 3.0, 3.0);
        // inter 1, union 4 + 4 - 1 = 7
        assert!((a.iou(&b) - 1.0 / 7.0).abs() < 1e-7);
        assert_eq!(a.iou(&a), 1.0);
        // touching edges: no overlap
        let c = BBox::new(2.0, 0.0, 4.0, 2.0);
        assert_eq!(a.iou(&c), 0.0);
        // degenerate boxes never divide by zero
        let p = BBox::new(1.0, 1.0, 1.0, 1.0);
        assert_eq!(p.iou(&p), 0.0);
        // inverted box has zero area
        let inv = BBox::new(3.0, 3.0, 1.0, 1.0);
        assert_eq!(inv.area(), 0.0);
        assert_eq!(inv.iou(&a), 0.0);
    }

    #[test]
    fn clip_clamps_each_edge() {
        let b = BBox::new(-5.0, 3.0, 120.0, 90.0).clip(100.0, 50.0);
        assert_eq!(b, BBox::new(0.0, 3.0, 100.0, 50.0));
    }
}
