//! Still images without OpenCV: PNG through the `png` crate, JPEG through `zune-jpeg` (read) and
//! `jpeg-encoder` (write). Everything comes out as BGR, the frames' format.

use std::path::Path;

use framepipe_vision::{Frame, FrameRef, PixelFormat};

use super::writer::encode_jpeg;

/// The most pixels an image may have (a bound for hostile files: 16k × 16k).
const MAX_PIXELS: u64 = 16_384 * 16_384;

/// Reads a PNG or JPEG (told apart by their first bytes, not the name) as a BGR frame.
pub(crate) fn read(path: &Path) -> Result<Frame, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        read_png(&bytes)
    } else if bytes.starts_with(&[0xFF, 0xD8]) {
        let mut f = Frame::new(1, 1, PixelFormat::Bgr8).map_err(|e| e.to_string())?;
        super::jpeg::decode_into(&bytes, &mut f)?;
        Ok(f)
    } else {
        Err("not a PNG or JPEG image (the native backend reads those two)".into())
    }
}

fn read_png(bytes: &[u8]) -> Result<Frame, String> {
    let mut d = png::Decoder::new_with_limits(std::io::Cursor::new(bytes), png::Limits { bytes: 1 << 30 });
    d.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut r = d.read_info().map_err(|e| format!("bad PNG: {e}"))?;
    let (w, h) = (r.info().width as usize, r.info().height as usize);
    if w == 0 || h == 0 || (w as u64) * (h as u64) > MAX_PIXELS {
        return Err(format!("a {w}x{h} PNG is out of range"));
    }
    let size = r.output_buffer_size().ok_or("bad PNG: its size overflows")?;
    let mut buf = vec![0; size];
    let out = r.next_frame(&mut buf).map_err(|e| format!("bad PNG: {e}"))?;
    let channels = match out.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => return Err("bad PNG: a palette survived expansion".into()),
    };
    let mut f = Frame::new(w, h, PixelFormat::Bgr8).map_err(|e| e.to_string())?;
    let stride = f.stride();
    let dst = f.data_mut();
    for y in 0..h {
        let line = &buf[y * out.line_size..y * out.line_size + w * channels];
        let row = &mut dst[y * stride..y * stride + w * 3];
        for (px, o) in line.chunks_exact(channels).zip(row.chunks_exact_mut(3)) {
            match channels {
                1 | 2 => o.fill(px[0]),
                _ => o.copy_from_slice(&[px[2], px[1], px[0]]),
            }
        }
    }
    Ok(f)
}

/// Writes a frame as PNG (`.png`) or JPEG (`.jpg`, `.jpeg`).
pub(crate) fn write(path: &Path, frame: FrameRef<'_>) -> Result<(), String> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "png" => std::fs::write(path, png_bytes(frame)?).map_err(|e| e.to_string()),
        "jpg" | "jpeg" => {
            let mut out = Vec::new();
            encode_jpeg(frame, 92, &mut Vec::new(), &mut out)?;
            std::fs::write(path, out).map_err(|e| e.to_string())
        }
        other => Err(format!("unknown image extension `.{other}` (use .png or .jpg)")),
    }
}

fn png_bytes(frame: FrameRef<'_>) -> Result<Vec<u8>, String> {
    let (w, h) = (frame.width(), frame.height());
    let (color, channels) = match frame.format() {
        PixelFormat::Bgr8 => (png::ColorType::Rgb, 3),
        PixelFormat::Gray8 => (png::ColorType::Grayscale, 1),
        other => return Err(format!("{other} frames must be converted to BGR first")),
    };
    let mut data = Vec::with_capacity(w * h * channels);
    for y in 0..h {
        let row = &frame.data()[y * frame.stride()..y * frame.stride() + w * channels];
        if channels == 3 {
            for px in row.chunks_exact(3) {
                data.extend_from_slice(&[px[2], px[1], px[0]]);
            }
        } else {
            data.extend_from_slice(row);
        }
    }
    let mut out = Vec::new();
    let mut e = png::Encoder::new(&mut out, w as u32, h as u32);
    e.set_color(color);
    e.set_depth(png::BitDepth::Eight);
    let mut wr = e.write_header().map_err(|e| e.to_string())?;
    wr.write_image_data(&data).map_err(|e| e.to_string())?;
    wr.finish().map_err(|e| e.to_string())?;
    Ok(out)
}
