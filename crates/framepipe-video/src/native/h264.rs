//! H.264 through Cisco's OpenH264 (the `openh264` crate builds it from source; no system library).
//!
//! OpenH264 decodes Constrained Baseline, Main and High profile streams, B-frames included (since
//! 2.3; the crate ships 2.7). Pictures come out in display order, a few access units after they
//! went in when the stream has B-frames. Each access unit goes in with its presentation time in
//! `uiInBsTimeStamp`; the decoder carries it through its reordering and hands it back with the
//! picture (`uiOutYuvTimeStamp`), so a frame's time is the container's, not a count.
//!
//! The decoder is driven through its raw interface (`DecodeFrameNoDelay`, `FlushFrame`) because
//! the safe wrapper neither passes timestamps in nor flushes one picture at a time.

use std::ptr::null_mut;
use std::time::Duration;

use framepipe_vision::Frame;
use openh264::decoder::{Decoder, DecoderConfig, Flush};
use openh264::OpenH264API;
use openh264_sys2::{
    dsErrorFree, videoFormatI420, SBufferInfo, DECODER_OPTION_NUM_OF_FRAMES_REMAINING_IN_BUFFER, DECODING_STATE,
};

use super::yuv::{i420_to_bgr, I420};
use crate::frames::fit;

/// A picture that came out of the decoder, written into the caller's frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Decoded {
    /// The presentation time that went in with its access unit.
    pub pts: Option<Duration>,
}

/// An OpenH264 decoder that writes BGR pictures into the caller's frames.
pub(crate) struct H264Decoder {
    decoder: Decoder,
    /// Whether the access units carry presentation times (else the timestamps are a count).
    timed: bool,
    count: u64,
}

impl H264Decoder {
    /// A decoder primed with the stream's parameter sets (Annex-B SPS/PPS; may be empty when the
    /// stream carries them inline).
    pub(crate) fn new(parameter_sets: &[u8]) -> Result<Self, String> {
        let config = DecoderConfig::new().flush_after_decode(Flush::NoFlush);
        let decoder = Decoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| format!("cannot start the H.264 decoder: {e}"))?;
        let mut d = H264Decoder { decoder, timed: true, count: 0 };
        if !parameter_sets.is_empty() {
            let mut scratch = Frame::new(2, 2, framepipe_vision::PixelFormat::Bgr8).map_err(|e| e.to_string())?;
            // Parameter sets alone never make a picture.
            d.decode(parameter_sets, None, &mut scratch).map_err(|e| format!("bad SPS/PPS: {e}"))?;
            // Priming is not an access unit: it says nothing about the stream's timestamps.
            (d.timed, d.count) = (true, 0);
        }
        Ok(d)
    }

    /// Feeds one access unit (Annex-B) with its presentation time. When a picture comes out (not
    /// necessarily this one: B-frames reorder), it is written into `frame` and returned.
    pub(crate) fn decode(
        &mut self,
        access_unit: &[u8],
        pts: Option<Duration>,
        frame: &mut Frame,
    ) -> Result<Option<Decoded>, String> {
        if access_unit.is_empty() {
            return Ok(None);
        }
        let len = i32::try_from(access_unit.len()).map_err(|_| "an access unit over 2 GiB".to_string())?;
        if pts.is_none() {
            self.timed = false;
        }
        let stamp = match pts {
            Some(p) if self.timed => p.as_nanos().min(u128::from(u64::MAX)) as u64,
            _ => self.count,
        };
        self.count += 1;
        let mut dst = [null_mut::<u8>(); 3];
        let mut info = SBufferInfo { uiInBsTimeStamp: stamp, ..SBufferInfo::default() };
        // SAFETY: `access_unit` is valid for `len` bytes for the whole call; `dst` is the array of
        // three plane pointers and `info` the buffer-info struct that DecodeFrameNoDelay writes;
        // all live on this stack frame. The decoder was initialised by `Decoder::with_api_config`.
        let state = unsafe {
            self.decoder.raw_api().decode_frame_no_delay(access_unit.as_ptr(), len, dst.as_mut_ptr(), &mut info)
        };
        self.take(state, &dst, &info, frame)
    }

    /// After the last access unit: the next picture still held for reordering, if any.
    pub(crate) fn flush(&mut self, frame: &mut Frame) -> Result<Option<Decoded>, String> {
        let mut remaining: i32 = 0;
        // SAFETY: GetOption writes one int into `remaining`, which outlives the call.
        let rc = unsafe {
            self.decoder
                .raw_api()
                .get_option(DECODER_OPTION_NUM_OF_FRAMES_REMAINING_IN_BUFFER, (&mut remaining as *mut i32).cast())
        };
        if rc != 0 || remaining <= 0 {
            return Ok(None);
        }
        let mut dst = [null_mut::<u8>(); 3];
        let mut info = SBufferInfo::default();
        // SAFETY: as in `decode`: FlushFrame writes the three plane pointers and the info struct,
        // both on this stack frame.
        let state = unsafe { self.decoder.raw_api().flush_frame(dst.as_mut_ptr(), &mut info) };
        self.take(state, &dst, &info, frame)
    }

    /// Turns the decoder's answer into a picture in `frame`.
    fn take(
        &self,
        state: DECODING_STATE,
        dst: &[*mut u8; 3],
        info: &SBufferInfo,
        frame: &mut Frame,
    ) -> Result<Option<Decoded>, String> {
        if state != dsErrorFree {
            return Err(describe(state));
        }
        if info.iBufferStatus != 1 || dst.iter().any(|p| p.is_null()) {
            return Ok(None);
        }
        // SAFETY: iBufferStatus == 1 means the decoder filled `sSystemBuffer` (the variant of the
        // union that DecodeFrameNoDelay writes for system-memory output).
        let sys = unsafe { info.UsrData.sSystemBuffer };
        if sys.iFormat != videoFormatI420 {
            return Err(format!("the decoder gave pixel format {} (expected I420)", sys.iFormat));
        }
        let (w, h) = (sys.iWidth.max(0) as usize, sys.iHeight.max(0) as usize);
        let (ys, cs) = (sys.iStride[0].max(0) as usize, sys.iStride[1].max(0) as usize);
        if w == 0 || h == 0 || ys < w || cs < w.div_ceil(2) {
            return Err(format!("the decoder gave a {w}x{h} picture with strides {ys}/{cs}"));
        }
        let ch = h.div_ceil(2);
        // SAFETY: for a ready I420 picture OpenH264's planes hold `iHeight` rows of `iStride[0]`
        // bytes (luma) and `iHeight / 2` rows of `iStride[1]` bytes (each chroma plane), and stay
        // valid until the next call into the decoder; the slices are dropped before this returns.
        let (y, u, v) = unsafe {
            (
                std::slice::from_raw_parts(dst[0], h * ys),
                std::slice::from_raw_parts(dst[1], ch * cs),
                std::slice::from_raw_parts(dst[2], ch * cs),
            )
        };
        let pic = I420 { width: w, height: h, y, u, v, y_stride: ys, uv_stride: cs };
        if !pic.is_valid() {
            return Err(format!("the decoder gave inconsistent planes for a {w}x{h} picture"));
        }
        fit(frame, w, h)?;
        let stride = frame.stride();
        i420_to_bgr(&pic, frame.data_mut(), stride);
        let pts = self.timed.then(|| Duration::from_nanos(info.uiOutYuvTimeStamp));
        Ok(Some(Decoded { pts }))
    }
}

/// What a DECODING_STATE's bits mean (codec_def.h).
fn describe(state: DECODING_STATE) -> String {
    let names = [
        (0x01, "frame pending"),
        (0x02, "reference lost"),
        (0x04, "bitstream error"),
        (0x08, "dependency layer lost"),
        (0x10, "no parameter sets"),
        (0x20, "data error concealed"),
        (0x40, "reference list null"),
        (0x1000, "invalid argument"),
        (0x2000, "initialisation expected"),
        (0x4000, "out of memory"),
        (0x8000, "unsupported stream (bad dimensions or profile)"),
    ];
    let what: Vec<&str> = names.iter().filter(|(bit, _)| state & bit != 0).map(|(_, n)| *n).collect();
    if what.is_empty() {
        format!("H.264 decoder state {state:#x}")
    } else {
        format!("H.264 decoder: {}", what.join(", "))
    }
}
