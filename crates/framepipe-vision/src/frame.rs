//! Interleaved 8-bit frames: an owned [`Frame`], a borrowed read-only
//! [`FrameRef`] and a borrowed writable [`FrameMut`].
//!
//! All three share one layout: `height` rows, each starting `stride` bytes
//! after the previous one, each holding `width` pixels of
//! [`PixelFormat::channels`] bytes. The last row only needs
//! `width * channels` bytes, so a buffer of
//! `stride * (height - 1) + width * channels` bytes is enough (this is what
//! many capture APIs hand out for the last row).

use std::fmt;

use crate::error::VisionError;

/// Pixel layout of an 8-bit interleaved frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// Blue, green, red; one byte each (OpenCV's default).
    Bgr8,
    /// Red, green, blue; one byte each.
    Rgb8,
    /// One luma byte per pixel.
    Gray8,
}

impl PixelFormat {
    /// Number of bytes (channels) per pixel: 3 for BGR8/RGB8, 1 for GRAY8.
    #[inline]
    pub const fn channels(self) -> usize {
        match self {
            PixelFormat::Bgr8 | PixelFormat::Rgb8 => 3,
            PixelFormat::Gray8 => 1,
        }
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PixelFormat::Bgr8 => "BGR8",
            PixelFormat::Rgb8 => "RGB8",
            PixelFormat::Gray8 => "GRAY8",
        })
    }
}

/// Checks a frame layout and returns the minimum buffer length it needs.
///
/// Rules: `width > 0`, `height > 0`, `stride >= width * channels`, and
/// `len >= stride * (height - 1) + width * channels`, all without overflow.
pub fn validate_layout(
    width: usize,
    height: usize,
    stride: usize,
    format: PixelFormat,
    len: usize,
) -> Result<usize, VisionError> {
    if width == 0 || height == 0 {
        return Err(VisionError::ZeroSize { width, height });
    }
    let row_bytes = width.checked_mul(format.channels()).ok_or(VisionError::SizeOverflow { width, height, format })?;
    if stride < row_bytes {
        return Err(VisionError::StrideTooSmall { width, height, format, stride, min_stride: row_bytes });
    }
    let need = stride
        .checked_mul(height - 1)
        .and_then(|v| v.checked_add(row_bytes))
        .ok_or(VisionError::SizeOverflow { width, height, format })?;
    if len < need {
        return Err(VisionError::BufferTooSmall { width, height, format, stride, need, got: len });
    }
    Ok(need)
}

/// An owned interleaved 8-bit frame.
///
/// ```
/// use framepipe_vision::{Frame, PixelFormat};
/// let mut f = Frame::new(4, 2, PixelFormat::Bgr8)?;
/// f.data_mut()[0] = 7;
/// assert_eq!(f.pixel(0, 0), Some(&[7u8, 0, 0][..]));
/// assert_eq!(f.pixel(4, 0), None);
/// # Ok::<(), framepipe_vision::VisionError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    width: usize,
    height: usize,
    stride: usize,
    format: PixelFormat,
    data: Vec<u8>,
}

impl Frame {
    /// A zero-filled frame with a tight stride (`width * channels`).
    ///
    /// Fails with [`VisionError::ZeroSize`] if a dimension is zero, or
    /// [`VisionError::SizeOverflow`] if the size does not fit in memory.
    pub fn new(width: usize, height: usize, format: PixelFormat) -> Result<Self, VisionError> {
        let stride = width.checked_mul(format.channels()).ok_or(VisionError::SizeOverflow { width, height, format })?;
        let len = stride.checked_mul(height).ok_or(VisionError::SizeOverflow { width, height, format })?;
        validate_layout(width, height, stride, format, len)?;
        Ok(Self { width, height, stride, format, data: vec![0; len] })
    }

    /// Wraps an existing buffer after validating it (see [`validate_layout`]).
    pub fn from_vec(
        width: usize,
        height: usize,
        stride: usize,
        format: PixelFormat,
        data: Vec<u8>,
    ) -> Result<Self, VisionError> {
        validate_layout(width, height, stride, format, data.len())?;
        Ok(Self { width, height, stride, format, data })
    }

    /// Width in pixels.
    #[inline]
    pub fn width(&self) -> usize {
        self.width
    }
    /// Height in pixels.
    #[inline]
    pub fn height(&self) -> usize {
        self.height
    }
    /// Bytes from the start of one row to the start of the next.
    #[inline]
    pub fn stride(&self) -> usize {
        self.stride
    }
    /// Pixel format.
    #[inline]
    pub fn format(&self) -> PixelFormat {
        self.format
    }
    /// The raw bytes (rows at multiples of [`Frame::stride`]).
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.data
    }
    /// The raw bytes, writable. The length cannot change, so the layout stays valid.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }
    /// Gives the buffer back.
    pub fn into_vec(self) -> Vec<u8> {
        self.data
    }

    /// A borrowed read-only view (no copy).
    #[inline]
    pub fn as_ref(&self) -> FrameRef<'_> {
        FrameRef { width: self.width, height: self.height, stride: self.stride, format: self.format, data: &self.data }
    }

    /// A borrowed writable view (no copy), e.g. for drawing.
    #[inline]
    pub fn as_mut(&mut self) -> FrameMut<'_> {
        FrameMut {
            width: self.width,
            height: self.height,
            stride: self.stride,
            format: self.format,
            data: &mut self.data,
        }
    }

    /// The channel bytes of pixel `(x, y)`, or `None` outside the frame.
    #[inline]
    pub fn pixel(&self, x: usize, y: usize) -> Option<&[u8]> {
        self.as_ref().pixel_slice(x, y)
    }

    /// Row `y` (exactly `width * channels` bytes), or `None` outside the frame.
    #[inline]
    pub fn row(&self, y: usize) -> Option<&[u8]> {
        self.as_ref().row_slice(y)
    }
}

/// A borrowed, read-only frame over a caller's bytes (no copy).
///
/// Cheap to copy; build it with [`FrameRef::new`], which validates the layout.
#[derive(Debug, Clone, Copy)]
pub struct FrameRef<'a> {
    width: usize,
    height: usize,
    stride: usize,
    format: PixelFormat,
    data: &'a [u8],
}

impl<'a> FrameRef<'a> {
    /// Wraps `data` after checking the layout (see [`validate_layout`]).
    ///
    /// ```
    /// use framepipe_vision::{FrameRef, PixelFormat};
    /// let bytes = [0u8; 100];
    /// let err = FrameRef::new(1920, 1080, 5760, PixelFormat::Bgr8, &bytes).unwrap_err();
    /// assert_eq!(
    ///     err.to_string(),
    ///     "frame buffer too small: need 6220800 bytes for 1920x1080 BGR8 with stride 5760, got 100"
    /// );
    /// ```
    pub fn new(
        width: usize,
        height: usize,
        stride: usize,
        format: PixelFormat,
        data: &'a [u8],
    ) -> Result<Self, VisionError> {
        validate_layout(width, height, stride, format, data.len())?;
        Ok(Self { width, height, stride, format, data })
    }

    /// Width in pixels.
    #[inline]
    pub fn width(&self) -> usize {
        self.width
    }
    /// Height in pixels.
    #[inline]
    pub fn height(&self) -> usize {
        self.height
    }
    /// Bytes from the start of one row to the start of the next.
    #[inline]
    pub fn stride(&self) -> usize {
        self.stride
    }
    /// Pixel format.
    #[inline]
    pub fn format(&self) -> PixelFormat {
        self.format
    }
    /// The raw bytes.
    #[inline]
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The channel bytes of pixel `(x, y)`, or `None` outside the frame.
    #[inline]
    pub fn pixel(&self, x: usize, y: usize) -> Option<&'a [u8]> {
        self.pixel_slice(x, y)
    }

    /// Row `y` (exactly `width * channels` bytes), or `None` outside the frame.
    #[inline]
    pub fn row(&self, y: usize) -> Option<&'a [u8]> {
        self.row_slice(y)
    }

    #[inline]
    fn row_slice(&self, y: usize) -> Option<&'a [u8]> {
        if y >= self.height {
            return None;
        }
        let start = y * self.stride;
        self.data.get(start..start + self.width * self.format.channels())
    }

    #[inline]
    fn pixel_slice(&self, x: usize, y: usize) -> Option<&'a [u8]> {
        if x >= self.width {
            return None;
        }
        let c = self.format.channels();
        self.row_slice(y)?.get(x * c..x * c + c)
    }
}

impl<'a> From<&'a Frame> for FrameRef<'a> {
    fn from(f: &'a Frame) -> Self {
        f.as_ref()
    }
}

/// A borrowed, writable frame over a caller's bytes (no copy), used for drawing in place.
#[derive(Debug)]
pub struct FrameMut<'a> {
    width: usize,
    height: usize,
    stride: usize,
    format: PixelFormat,
    data: &'a mut [u8],
}

impl<'a> FrameMut<'a> {
    /// Wraps `data` after checking the layout (see [`validate_layout`]).
    pub fn new(
        width: usize,
        height: usize,
        stride: usize,
        format: PixelFormat,
        data: &'a mut [u8],
    ) -> Result<Self, VisionError> {
        validate_layout(width, height, stride, format, data.len())?;
        Ok(Self { width, height, stride, format, data })
    }

    /// Width in pixels.
    #[inline]
    pub fn width(&self) -> usize {
        self.width
    }
    /// Height in pixels.
    #[inline]
    pub fn height(&self) -> usize {
        self.height
    }
    /// Bytes from the start of one row to the start of the next.
    #[inline]
    pub fn stride(&self) -> usize {
        self.stride
    }
    /// Pixel format.
    #[inline]
    pub fn format(&self) -> PixelFormat {
        self.format
    }
    /// The raw bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        self.data
    }
    /// The raw bytes, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        self.data
    }

    /// A read-only view of the same pixels.
    #[inline]
    pub fn as_ref(&self) -> FrameRef<'_> {
        FrameRef { width: self.width, height: self.height, stride: self.stride, format: self.format, data: self.data }
    }

    /// The channel bytes of pixel `(x, y)`, or `None` outside the frame.
    #[inline]
    pub fn pixel(&self, x: usize, y: usize) -> Option<&[u8]> {
        self.as_ref().pixel_slice(x, y)
    }

    /// The writable channel bytes of pixel `(x, y)`, or `None` outside the frame.
    #[inline]
    pub fn pixel_mut(&mut self, x: usize, y: usize) -> Option<&mut [u8]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let c = self.format.channels();
        let start = y * self.stride + x * c;
        self.data.get_mut(start..start + c)
    }

    /// The writable bytes of row `y` (exactly `width * channels`), or `None` outside the frame.
    #[inline]
    pub fn row_mut(&mut self, y: usize) -> Option<&mut [u8]> {
        if y >= self.height {
            return None;
        }
        let start = y * self.stride;
        let len = self.width * self.format.channels();
        self.data.get_mut(start..start + len)
    }
}

impl<'a> From<&'a mut Frame> for FrameMut<'a> {
    fn from(f: &'a mut Frame) -> Self {
        f.as_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_per_format() {
        assert_eq!(PixelFormat::Bgr8.channels(), 3);
        assert_eq!(PixelFormat::Rgb8.channels(), 3);
        assert_eq!(PixelFormat::Gray8.channels(), 1);
    }

    #[test]
    fn too_small_buffer_names_sizes() {
        let data = [0u8; 100];
        let err = FrameRef::new(1920, 1080, 5760, PixelFormat::Bgr8, &data).unwrap_err();
        assert!(matches!(err, VisionError::BufferTooSmall { need: 6_220_800, got: 100, .. }));
        assert_eq!(
            err.to_string(),
            "frame buffer too small: need 6220800 bytes for 1920x1080 BGR8 with stride 5760, got 100"
        );
    }

    #[test]
    fn zero_size_is_refused() {
        let data = [0u8; 16];
        for (w, h) in [(0, 4), (4, 0), (0, 0)] {
            let err = FrameRef::new(w, h, 12, PixelFormat::Bgr8, &data).unwrap_err();
            assert!(matches!(err, VisionError::ZeroSize { .. }), "{err}");
            assert!(err.to_string().contains("must both be > 0"), "{err}");
            assert!(err.to_string().contains(&format!("{w}x{h}")), "{err}");
        }
        assert!(matches!(Frame::new(0, 3, PixelFormat::Gray8), Err(VisionError::ZeroSize { .. })));
    }

    #[test]
    fn stride_smaller_than_row_is_refused() {
        let data = [0u8; 1000];
        // 10 BGR pixels need 30 bytes per row.
        let err = FrameRef::new(10, 2, 29, PixelFormat::Bgr8, &data).unwrap_err();
        assert!(matches!(err, VisionError::StrideTooSmall { stride: 29, min_stride: 30, .. }));
        let msg = err.to_string();
        assert!(msg.contains("stride 29"), "{msg}");
        assert!(msg.contains("30 bytes"), "{msg}");
    }

    #[test]
    fn overflowing_size_is_refused() {
        let data = [0u8; 4];
        let err = FrameRef::new(usize::MAX / 2, 3, usize::MAX, PixelFormat::Bgr8, &data);
        assert!(matches!(err, Err(VisionError::SizeOverflow { .. })));
        let err = FrameRef::new(4, usize::MAX, 12, PixelFormat::Bgr8, &data);
        assert!(matches!(err, Err(VisionError::SizeOverflow { .. })));
    }

    #[test]
    fn last_row_may_be_short() {
        // 2 rows of 2 RGB pixels with 8-byte stride: 8 + 6 = 14 bytes suffice.
        let data: Vec<u8> = (0..14).collect();
        let f = FrameRef::new(2, 2, 8, PixelFormat::Rgb8, &data).unwrap();
        assert_eq!(f.pixel(1, 1), Some(&[11u8, 12, 13][..]));
        assert_eq!(f.row(1), Some(&[8u8, 9, 10, 11, 12, 13][..]));
        assert_eq!(f.pixel(2, 1), None);
        assert_eq!(f.pixel(0, 2), None);
        assert!(FrameRef::new(2, 2, 8, PixelFormat::Rgb8, &data[..13]).is_err());
    }

    #[test]
    fn frame_accessors_and_views() {
        let mut f = Frame::new(3, 2, PixelFormat::Gray8).unwrap();
        assert_eq!((f.width(), f.height(), f.stride()), (3, 2, 3));
        assert!(f.data().iter().all(|&b| b == 0));
        f.as_mut().pixel_mut(2, 1).unwrap()[0] = 9;
        assert_eq!(f.pixel(2, 1), Some(&[9u8][..]));
        assert_eq!(f.data()[5], 9);
        assert_eq!(f.as_ref().pixel(2, 1), Some(&[9u8][..]));
        let v = f.clone().into_vec();
        assert_eq!(v.len(), 6);
        let g = Frame::from_vec(3, 2, 3, PixelFormat::Gray8, v).unwrap();
        assert_eq!(g, f);
        assert!(Frame::from_vec(3, 2, 3, PixelFormat::Bgr8, vec![0; 6]).is_err());
    }

    #[test]
    fn frame_mut_over_caller_buffer() {
        let mut buf = vec![0u8; 2 * 7 + 6];
        let mut fm = FrameMut::new(2, 3, 7, PixelFormat::Bgr8, &mut buf).unwrap();
        fm.pixel_mut(1, 2).unwrap().copy_from_slice(&[1, 2, 3]);
        fm.row_mut(0).unwrap().fill(5);
        assert!(fm.pixel_mut(2, 0).is_none());
        assert!(fm.row_mut(3).is_none());
        assert_eq!(&buf[17..20], &[1, 2, 3]);
        assert_eq!(&buf[0..7], &[5, 5, 5, 5, 5, 5, 0]);
    }
}
