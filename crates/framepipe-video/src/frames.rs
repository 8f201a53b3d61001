//! Small helpers shared by the backends: fitting a pooled frame to a decoded size.

use framepipe_vision::{Frame, PixelFormat};

/// Makes `frame` a `width`×`height` BGR frame with a tight stride, keeping its buffer when it
/// already is one (the steady state: a pool's frames all have the stream's size). A stream whose
/// size changes gets new buffers once per change.
pub(crate) fn fit(frame: &mut Frame, width: usize, height: usize) -> Result<(), String> {
    if frame.width() != width
        || frame.height() != height
        || frame.format() != PixelFormat::Bgr8
        || frame.stride() != width * 3
    {
        *frame = Frame::new(width, height, PixelFormat::Bgr8).map_err(|e| e.to_string())?;
    }
    Ok(())
}
