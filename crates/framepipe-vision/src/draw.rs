//! Drawing boxes, labels and landmarks onto a frame in place.
//!
//! Everything is clipped to the frame: shapes partly or entirely outside,
//! huge or non-finite coordinates never panic. Colours are given as RGB and
//! written in the frame's own order (BGR8, RGB8, or luma for GRAY8).

use std::fmt::Write as _;

use crate::font::{glyph, GLYPH_ADVANCE, GLYPH_HEIGHT, GLYPH_LINE, GLYPH_WIDTH};
use crate::frame::{FrameMut, PixelFormat};
use crate::geometry::{BBox, Detection};
use crate::labels::Labels;

/// An RGB colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Color {
    /// Red.
    pub r: u8,
    /// Green.
    pub g: u8,
    /// Blue.
    pub b: u8,
}

impl Color {
    /// Pure white.
    pub const WHITE: Color = Color::rgb(255, 255, 255);
    /// Pure black.
    pub const BLACK: Color = Color::rgb(0, 0, 0);

    /// A colour from its components.
    pub const fn rgb(r: u8, g: u8, b: u8) -> Self {
        Self { r, g, b }
    }

    /// BT.601 luma, `round(0.299 R + 0.587 G + 0.114 B)` (what a GRAY8 frame receives).
    pub fn luma(&self) -> u8 {
        let y = 299 * u32::from(self.r) + 587 * u32::from(self.g) + 114 * u32::from(self.b);
        ((y + 500) / 1000) as u8
    }

    /// The colour's bytes in `format`'s channel order.
    fn bytes(&self, format: PixelFormat) -> ([u8; 3], usize) {
        match format {
            PixelFormat::Bgr8 => ([self.b, self.g, self.r], 3),
            PixelFormat::Rgb8 => ([self.r, self.g, self.b], 3),
            PixelFormat::Gray8 => ([self.luma(), 0, 0], 1),
        }
    }
}

/// Ultralytics' 20-colour class palette (`ultralytics.utils.plotting.Colors`), RGB.
pub const ULTRALYTICS_PALETTE: [Color; 20] = [
    Color::rgb(0x04, 0x2A, 0xFF),
    Color::rgb(0x0B, 0xDB, 0xEB),
    Color::rgb(0xF3, 0xF3, 0xF3),
    Color::rgb(0x00, 0xDF, 0xB7),
    Color::rgb(0x11, 0x1F, 0x68),
    Color::rgb(0xFF, 0x6F, 0xDD),
    Color::rgb(0xFF, 0x44, 0x4F),
    Color::rgb(0xCC, 0xED, 0x00),
    Color::rgb(0x00, 0xF3, 0x44),
    Color::rgb(0xBD, 0x00, 0xFF),
    Color::rgb(0x00, 0xB4, 0xFF),
    Color::rgb(0xDD, 0x00, 0xBA),
    Color::rgb(0x00, 0xFF, 0xFF),
    Color::rgb(0x26, 0xC0, 0x00),
    Color::rgb(0x01, 0xFF, 0xB3),
    Color::rgb(0x7D, 0x24, 0xFF),
    Color::rgb(0x7B, 0x00, 0x68),
    Color::rgb(0xFF, 0x1B, 0x6C),
    Color::rgb(0xFC, 0x6D, 0x2F),
    Color::rgb(0xA2, 0xFF, 0x0B),
];

/// The palette colour of a class (`palette[class_id % 20]`).
pub fn class_color(class_id: u32) -> Color {
    ULTRALYTICS_PALETTE[class_id as usize % ULTRALYTICS_PALETTE.len()]
}

/// Text colour that stays readable on `background` (black on light colours, white otherwise).
pub fn text_color_for(background: Color) -> Color {
    if background.luma() > 160 {
        Color::BLACK
    } else {
        Color::WHITE
    }
}

/// How [`draw_detections`] draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrawStyle {
    /// Box border thickness in pixels (drawn inside the box). 0 draws no border.
    pub thickness: u32,
    /// Font scale: each font pixel becomes a `scale x scale` block. 0 draws no text.
    pub font_scale: u32,
    /// Draw the label background and text.
    pub show_labels: bool,
    /// Append the score to the label ("Normal 0.87").
    pub show_scores: bool,
    /// Radius of landmark dots in pixels (0 draws single pixels).
    pub landmark_radius: u32,
}

impl Default for DrawStyle {
    fn default() -> Self {
        Self { thickness: 2, font_scale: 2, show_labels: true, show_scores: true, landmark_radius: 2 }
    }
}

/// Fills the half-open rectangle `[x0, x1) x [y0, y1)`, clipped to the frame.
pub fn fill_rect(frame: &mut FrameMut<'_>, x0: i64, y0: i64, x1: i64, y1: i64, color: Color) {
    let (w, h) = (frame.width() as i64, frame.height() as i64);
    let (x0, x1) = (x0.clamp(0, w), x1.clamp(0, w));
    let (y0, y1) = (y0.clamp(0, h), y1.clamp(0, h));
    if x0 >= x1 || y0 >= y1 {
        return;
    }
    let (bytes, ch) = color.bytes(frame.format());
    let px = &bytes[..ch];
    for y in y0 as usize..y1 as usize {
        if let Some(row) = frame.row_mut(y) {
            let span = &mut row[x0 as usize * ch..x1 as usize * ch];
            for p in span.chunks_exact_mut(ch) {
                p.copy_from_slice(px);
            }
        }
    }
}

/// Pixel edges of a box: `[left, right) x [top, bottom)`, rounded to the
/// nearest pixel boundary. `None` for non-finite boxes.
fn pixel_rect(b: &BBox) -> Option<(i64, i64, i64, i64)> {
    if !b.is_finite() {
        return None;
    }
    // `as` saturates, so huge values stay representable and get clipped later.
    let (x0, x1) = (b.x1.min(b.x2).round() as i64, b.x1.max(b.x2).round() as i64);
    let (y0, y1) = (b.y1.min(b.y2).round() as i64, b.y1.max(b.y2).round() as i64);
    Some((x0, y0, x1, y1))
}

/// Draws the outline of `bbox` with `thickness` pixels inside the box edges.
pub fn draw_rect(frame: &mut FrameMut<'_>, bbox: &BBox, color: Color, thickness: u32) {
    let Some((x0, y0, x1, y1)) = pixel_rect(bbox) else {
        return;
    };
    let t = i64::from(thickness);
    if t == 0 || x0 >= x1 || y0 >= y1 {
        return;
    }
    fill_rect(frame, x0, y0, x1, y0.saturating_add(t).min(y1), color); // top
    fill_rect(frame, x0, y1.saturating_sub(t).max(y0), x1, y1, color); // bottom
    fill_rect(frame, x0, y0, x0.saturating_add(t).min(x1), y1, color); // left
    fill_rect(frame, x1.saturating_sub(t).max(x0), y0, x1, y1, color); // right
}

/// Size in pixels `(width, height)` that [`draw_text`] covers for `text` at `scale`.
/// Saturates instead of overflowing for absurd inputs.
pub fn text_size(text: &str, scale: u32) -> (u32, u32) {
    let n = u32::try_from(text.chars().count()).unwrap_or(u32::MAX);
    let w = n.saturating_mul(GLYPH_ADVANCE as u32).saturating_sub(1).saturating_mul(scale);
    (w, (GLYPH_HEIGHT as u32).saturating_mul(scale))
}

/// Draws `text` with its top-left corner at `(x, y)` using the built-in 5x7
/// font, each font pixel a `scale x scale` block. Returns the x just past the text.
pub fn draw_text(frame: &mut FrameMut<'_>, x: i64, y: i64, text: &str, color: Color, scale: u32) -> i64 {
    let s = i64::from(scale);
    let mut cx = x;
    for c in text.chars() {
        let g = glyph(c);
        for (col, bits) in g.iter().enumerate() {
            for row in 0..GLYPH_HEIGHT {
                if bits >> row & 1 == 1 {
                    let px = cx.saturating_add(col as i64 * s);
                    let py = y.saturating_add(row as i64 * s);
                    fill_rect(frame, px, py, px.saturating_add(s), py.saturating_add(s), color);
                }
            }
        }
        cx = cx.saturating_add(GLYPH_ADVANCE as i64 * s);
    }
    cx
}

/// Draws a filled disc of `radius` around `(x, y)` (radius 0: one pixel).
pub fn draw_point(frame: &mut FrameMut<'_>, x: f32, y: f32, radius: u32, color: Color) {
    if !x.is_finite() || !y.is_finite() {
        return;
    }
    let (cx, cy) = (x.floor() as i64, y.floor() as i64);
    let r = i64::from(radius);
    // Only rows inside the frame are visited, so huge radii stay cheap.
    let first = cy.saturating_sub(r).max(0);
    let last = cy.saturating_add(r).min(frame.height() as i64 - 1);
    let rf = f64::from(radius);
    for row in first..=last {
        let dy = (row - cy) as f64;
        // widest dx with dx² + dy² <= r² (exact for the small radii used in practice)
        let half = (rf * rf - dy * dy).max(0.0).sqrt().floor() as i64;
        fill_rect(frame, cx.saturating_sub(half), row, cx.saturating_add(half).saturating_add(1), row + 1, color);
    }
}

/// A fixed-capacity string for label text, so drawing does not allocate.
struct LabelBuf {
    buf: [u8; 96],
    len: usize,
}

impl LabelBuf {
    fn new() -> Self {
        Self { buf: [0; 96], len: 0 }
    }
    fn as_str(&self) -> &str {
        // Only whole UTF-8 characters are ever copied in (see write_str).
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl std::fmt::Write for LabelBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for c in s.chars() {
            let n = c.len_utf8();
            if self.len + n > self.buf.len() {
                break; // truncate silently
            }
            c.encode_utf8(&mut self.buf[self.len..self.len + n]);
            self.len += n;
        }
        Ok(())
    }
}

/// Draws every detection: box outline in its class colour, a filled label
/// background with "name score" text, and landmark dots. Without `labels`,
/// or for unknown ids, the class id is printed.
pub fn draw_detections(frame: &mut FrameMut<'_>, detections: &[Detection], labels: Option<&Labels>, style: &DrawStyle) {
    for d in detections {
        let color = class_color(d.class_id);
        draw_rect(frame, &d.bbox, color, style.thickness);
        if let Some(lms) = &d.landmarks {
            for &[x, y] in lms {
                draw_point(frame, x, y, style.landmark_radius, color);
            }
        }
        if !style.show_labels || style.font_scale == 0 {
            continue;
        }
        let Some((x0, y0, _, _)) = pixel_rect(&d.bbox) else {
            continue;
        };
        let mut text = LabelBuf::new();
        match labels.and_then(|l| l.get(d.class_id)) {
            Some(name) => {
                let _ = text.write_str(name);
            }
            None => {
                let _ = write!(text, "{}", d.class_id);
            }
        }
        if style.show_scores {
            let _ = write!(text, " {:.2}", d.score);
        }
        let s = i64::from(style.font_scale);
        let pad = s;
        let (tw, th) = text_size(text.as_str(), style.font_scale);
        let (tw, th) = (i64::from(tw), i64::from(th));
        let bg_h = th + 2 * pad;
        // Above the box if it fits, otherwise just inside its top edge.
        let top = if y0 >= bg_h { y0 - bg_h } else { y0.max(0) };
        let left = x0.max(0);
        fill_rect(frame, left, top, left.saturating_add(tw + 2 * pad), top.saturating_add(bg_h), color);
        draw_text(
            frame,
            left.saturating_add(pad),
            top.saturating_add(pad),
            text.as_str(),
            text_color_for(color),
            style.font_scale,
        );
    }
}

// Keep the font geometry consistent with the drawing code above.
const _: () = assert!(GLYPH_WIDTH < GLYPH_ADVANCE && GLYPH_HEIGHT < GLYPH_LINE);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Frame;

    fn px(f: &Frame, x: usize, y: usize) -> Vec<u8> {
        f.pixel(x, y).unwrap().to_vec()
    }

    #[test]
    fn rect_border_inside_box_only() {
        let mut f = Frame::new(40, 30, PixelFormat::Bgr8).unwrap();
        let red = Color::rgb(255, 0, 0);
        draw_rect(&mut f.as_mut(), &BBox::new(10.0, 5.0, 30.0, 25.0), red, 2);
        let bgr_red = vec![0, 0, 255];
        // border pixels (top row 5..7, left col 10..12, right col 28..30, bottom row 23..25)
        for (x, y) in [(10, 5), (29, 5), (10, 24), (29, 24), (11, 15), (28, 15), (20, 6), (20, 23)] {
            assert_eq!(px(&f, x, y), bgr_red, "({x},{y})");
        }
        // inside the border, and outside the box
        for (x, y) in [(12, 7), (27, 22), (20, 15), (9, 5), (30, 5), (10, 4), (10, 25), (0, 0)] {
            assert_eq!(px(&f, x, y), vec![0, 0, 0], "({x},{y})");
        }
        // count: 20x20 box minus 16x16 hole
        let red_count = f.data().chunks(3).filter(|p| *p == [0, 0, 255]).count();
        assert_eq!(red_count, 20 * 20 - 16 * 16);
    }

    #[test]
    fn formats_get_their_channel_order() {
        let c = Color::rgb(10, 20, 30);
        let mut f = Frame::new(2, 1, PixelFormat::Rgb8).unwrap();
        fill_rect(&mut f.as_mut(), 0, 0, 1, 1, c);
        assert_eq!(px(&f, 0, 0), vec![10, 20, 30]);
        assert_eq!(px(&f, 1, 0), vec![0, 0, 0]);
        let mut f = Frame::new(2, 1, PixelFormat::Bgr8).unwrap();
        fill_rect(&mut f.as_mut(), 0, 0, 1, 1, c);
        assert_eq!(px(&f, 0, 0), vec![30, 20, 10]);
        let mut f = Frame::new(2, 1, PixelFormat::Gray8).unwrap();
        fill_rect(&mut f.as_mut(), 1, 0, 2, 1, c);
        // 0.299*10 + 0.587*20 + 0.114*30 = 18.15 → 18
        assert_eq!(f.data(), &[0, 18]);
    }

    #[test]
    fn boxes_outside_or_weird_do_not_panic() {
        let mut f = Frame::new(16, 16, PixelFormat::Bgr8).unwrap();
        let c = Color::WHITE;
        let boxes = [
            BBox::new(-10.0, -10.0, 5.0, 5.0),
            BBox::new(10.0, 10.0, 100.0, 100.0),
            BBox::new(-100.0, -100.0, -50.0, -50.0),
            BBox::new(50.0, 50.0, 60.0, 60.0),
            BBox::new(f32::NAN, 0.0, 5.0, 5.0),
            BBox::new(0.0, 0.0, f32::INFINITY, 5.0),
            BBox::new(-1e30, -1e30, 1e30, 1e30),
            BBox::new(8.0, 8.0, 2.0, 2.0), // inverted
            BBox::new(3.0, 3.0, 3.0, 3.0), // empty
        ];
        for b in &boxes {
            draw_rect(&mut f.as_mut(), b, c, 3);
        }
        // The partly visible box (10,10)-(100,100) drew its top-left corner and
        // nothing of its far edges; the huge box's edges are all off-frame.
        assert_eq!(px(&f, 10, 10), vec![255, 255, 255]);
        assert_eq!(px(&f, 12, 15), vec![255, 255, 255]);
        assert_eq!(px(&f, 15, 15), vec![0, 0, 0]);
        let dets: Vec<Detection> = boxes
            .iter()
            .enumerate()
            .map(|(i, b)| Detection {
                class_id: i as u32 * 1000,
                score: 0.5,
                bbox: *b,
                landmarks: Some([[-5.0, -5.0], [100.0, 3.0], [f32::NAN, 1.0], [3.0, 3.0], [15.9, 15.9]]),
            })
            .collect();
        draw_detections(&mut f.as_mut(), &dets, None, &DrawStyle { font_scale: 3, ..DrawStyle::default() });
        draw_text(&mut f.as_mut(), i64::MAX - 3, i64::MIN, "overflow?", c, 7);
        draw_point(&mut f.as_mut(), 1e30, -1e30, 5, c);
        draw_point(&mut f.as_mut(), 8.0, 8.0, u32::MAX, c);
        draw_text(&mut f.as_mut(), 0, 0, "x", c, u32::MAX);
        assert_eq!(text_size("ab", u32::MAX), (u32::MAX, u32::MAX));
    }

    #[test]
    fn text_renders_glyph_pixels() {
        let mut f = Frame::new(20, 10, PixelFormat::Gray8).unwrap();
        let end = draw_text(&mut f.as_mut(), 1, 1, "T", Color::WHITE, 1);
        assert_eq!(end, 1 + GLYPH_ADVANCE as i64);
        // 'T': top row 5 pixels wide, then a stem in the middle column.
        for x in 1..6 {
            assert_eq!(f.pixel(x, 1), Some(&[255u8][..]), "x={x}");
        }
        for y in 2..8 {
            assert_eq!(f.pixel(3, y), Some(&[255u8][..]), "y={y}");
            assert_eq!(f.pixel(2, y), Some(&[0u8][..]), "y={y}");
        }
        assert_eq!(f.pixel(3, 8), Some(&[0u8][..]));
        // Scale 2 doubles every pixel.
        let mut g = Frame::new(20, 20, PixelFormat::Gray8).unwrap();
        draw_text(&mut g.as_mut(), 0, 0, "T", Color::WHITE, 2);
        let lit = g.data().iter().filter(|&&v| v == 255).count();
        let lit1 = f.data().iter().filter(|&&v| v == 255).count();
        assert_eq!(lit, 4 * lit1);
        assert_eq!(text_size("ab", 2), (2 * (12 - 1), 14));
    }

    #[test]
    fn detection_label_background_above_box() {
        let mut f = Frame::new(200, 100, PixelFormat::Rgb8).unwrap();
        let labels = Labels::new(["Normal", "Fall"]);
        let d = Detection { class_id: 1, score: 0.87, bbox: BBox::new(50.0, 40.0, 150.0, 90.0), landmarks: None };
        let style = DrawStyle::default();
        draw_detections(&mut f.as_mut(), &[d], Some(&labels), &style);
        let c = class_color(1);
        let col = vec![c.r, c.g, c.b];
        // Box border.
        assert_eq!(px(&f, 50, 60), col);
        assert_eq!(px(&f, 149, 89), col);
        assert_eq!(px(&f, 100, 65), vec![0, 0, 0]);
        // Label background: height 7*2 + 2*2 = 18 rows above y=40 → rows 22..40,
        // width of "Fall 0.87" (9 chars) = (9*6 - 1)*2 + 4 = 110 → x 50..160.
        assert_eq!(px(&f, 50, 22), col);
        assert_eq!(px(&f, 159, 39), col);
        assert_eq!(px(&f, 160, 30), vec![0, 0, 0]);
        assert_eq!(px(&f, 50, 21), vec![0, 0, 0]);
        // Some text pixels inside the background use the text colour.
        let t = text_color_for(c);
        let text_px = (22..40)
            .flat_map(|y| (50..160).map(move |x| (x, y)))
            .filter(|&(x, y)| px(&f, x, y) == vec![t.r, t.g, t.b])
            .count();
        assert!(text_px > 50, "{text_px}");
    }

    #[test]
    fn label_moves_inside_when_box_touches_top() {
        let mut f = Frame::new(100, 60, PixelFormat::Bgr8).unwrap();
        let d = Detection {
            class_id: 0,
            score: 0.5,
            bbox: BBox::new(10.0, 0.0, 90.0, 50.0),
            landmarks: Some([[20.0, 20.0], [30.0, 20.0], [25.0, 30.0], [20.0, 40.0], [30.0, 40.0]]),
        };
        draw_detections(&mut f.as_mut(), &[d], None, &DrawStyle::default());
        let c = class_color(0);
        // background starts at the box top, inside the box: rows 0..18; row 17 is
        // bottom padding (not text, not the 2 px border rows 0..2)
        assert_eq!(px(&f, 13, 17), vec![c.b, c.g, c.r]);
        assert_eq!(px(&f, 13, 18), vec![0, 0, 0]);
        // landmark dot centre and its radius-2 neighbourhood
        assert_eq!(px(&f, 25, 30), vec![c.b, c.g, c.r]);
        assert_eq!(px(&f, 27, 30), vec![c.b, c.g, c.r]);
        assert_eq!(px(&f, 28, 30), vec![0, 0, 0]);
        assert_eq!(px(&f, 27, 32), vec![0, 0, 0]); // outside the disc (2²+2² > 2²)
    }

    #[test]
    fn palette_matches_ultralytics_order() {
        assert_eq!(class_color(0), Color::rgb(4, 42, 255));
        assert_eq!(class_color(19), Color::rgb(162, 255, 11));
        assert_eq!(class_color(20), class_color(0));
        assert_eq!(text_color_for(Color::rgb(243, 243, 243)), Color::BLACK);
        assert_eq!(text_color_for(Color::rgb(17, 31, 104)), Color::WHITE);
    }

    #[test]
    fn label_buffer_truncates_without_splitting_chars() {
        let mut b = LabelBuf::new();
        let long = "é".repeat(100);
        let _ = b.write_str(&long);
        assert_eq!(b.as_str().chars().count(), 48);
    }
}
