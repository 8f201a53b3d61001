//! The native backend: containers, codecs and live sources in Rust (and Cisco's OpenH264, built
//! from source with the crate), needing nothing from the system.
//!
//! A source is a [`Demuxer`] (a container or a stream cut into [`Packet`]s of one codec) and a
//! decoder for that codec ([`h264::H264Decoder`], [`jpeg::JpegDecoder`]) that writes straight into
//! the pooled BGR frame. The parts, each a file:
//!
//! | file | what |
//! |---|---|
//! | `mp4.rs` | MP4/MOV: the sample tables of the `mp4` crate's header, samples read into one reused buffer |
//! | `mkv.rs` | Matroska/WebM (`matroska-demuxer`) |
//! | `avi.rs` | AVI (RIFF), read and written by us: Motion-JPEG and H.264 |
//! | `annexb.rs` | raw H.264 Annex-B files, and AVCC → Annex-B |
//! | `h264.rs` | OpenH264's decoder, its timestamps carried through B-frame reordering |
//! | `jpeg.rs` | Motion-JPEG frames (`zune-jpeg`) |
//! | `yuv.rs` | I420 ↔ BGR (BT.601, limited range, as FFmpeg's and OpenCV's defaults) |
//! | `http.rs` | HTTP multipart MJPEG streams (IP cameras, our own view) |
//! | `v4l2.rs` | V4L2 cameras (`linuxvideo`): MJPEG and YUYV |
//! | `writer.rs` | `--out`: H.264 in MP4 (OpenH264's encoder, `mp4`'s muxer), MJPEG in AVI |
//! | `image.rs` | PNG and JPEG images |

pub(crate) mod annexb;
pub(crate) mod avi;
pub(crate) mod h264;
pub(crate) mod http;
pub(crate) mod image;
pub(crate) mod jpeg;
pub(crate) mod mkv;
pub(crate) mod mp4;
pub(crate) mod open;
pub(crate) mod v4l2;
pub(crate) mod writer;
pub(crate) mod yuv;

use std::time::Duration;

/// The codecs the native backend decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Codec {
    /// H.264 (AVC), packets in Annex-B form (start codes) once the demuxer hands them out.
    H264,
    /// Motion-JPEG: every packet one JPEG image.
    Mjpeg,
    /// Packed YUYV 4:2:2 (a V4L2 camera's raw format), `width * height * 2` bytes a packet.
    Yuyv,
}

/// One compressed frame, in a buffer that the reader reuses for the next one.
#[derive(Debug, Default)]
pub(crate) struct Packet {
    /// The bytes (for H.264: one access unit in Annex-B form).
    pub data: Vec<u8>,
    /// Presentation time from the container, from the stream's own origin; `None` where the
    /// container has none (raw Annex-B, HTTP MJPEG).
    pub pts: Option<Duration>,
    /// Whether the container marks it a key frame (`true` where it does not say).
    pub key: bool,
}

/// What a demuxer found when it opened.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct StreamInfo {
    /// The container or transport, for the report (`mp4`, `matroska`, `avi`, `h264`, `http-mjpeg`, `v4l2`).
    pub container: &'static str,
    /// The codec of the packets.
    pub codec: Codec,
    /// Frame size announced by the container (0 where it does not say; the first frame tells).
    pub width: usize,
    /// See `width`.
    pub height: usize,
    /// Frames per second the container announces.
    pub fps: Option<f64>,
    /// Frames in the file, where the container says.
    pub frames: Option<u64>,
    /// For H.264: the SPS and PPS in Annex-B form, fed to the decoder before the first packet
    /// (from `avcC` or Matroska's CodecPrivate; empty for Annex-B streams, which carry them inline).
    pub parameter_sets: Vec<u8>,
}

/// Why a demuxer stopped or could not start. The caller adds the source's name.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DemuxError {
    /// The container holds a codec the native backend does not decode; `codec` is its common name
    /// (`hevc`, `mpeg4`, `vp9`, `av1`, …).
    #[error("{codec}: not supported by the native decoder")]
    Unsupported {
        /// The codec's common name.
        codec: String,
    },
    /// The bytes are not the container they claim, or are cut short.
    #[error("{0}")]
    Malformed(String),
    /// Reading failed (I/O, a network timeout, a closed connection).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A container or stream cut into packets of one codec.
pub(crate) trait Demuxer: Send {
    /// What it found when it opened.
    fn info(&self) -> &StreamInfo;
    /// Reads the next packet into `packet` (reusing its buffer). `Ok(false)` at the end.
    fn read_packet(&mut self, packet: &mut Packet) -> Result<bool, DemuxError>;
}

/// The common name of a codec from an MP4 sample entry, an AVI/V4L2 FourCC or a Matroska codec id,
/// for messages about codecs the native backend does not read.
pub(crate) fn codec_name(tag: &str) -> String {
    let t = tag.trim_end_matches('\0').trim();
    let lower = t.to_ascii_lowercase();
    let name = match lower.as_str() {
        "hvc1" | "hev1" | "hevc" | "h265" | "x265" | "v_mpegh/iso/hevc" => "hevc",
        "mp4v" | "xvid" | "divx" | "dx50" | "fmp4" | "v_mpeg4/iso/asp" | "v_mpeg4/iso/sp" => "mpeg4",
        "vp08" | "vp80" | "v_vp8" => "vp8",
        "vp09" | "vp90" | "v_vp9" => "vp9",
        "av01" | "v_av1" => "av1",
        "mpg2" | "mpeg" | "v_mpeg2" | "mp2v" => "mpeg2",
        "jpeg" | "mjpg" | "mjpa" | "v_mjpeg" => "mjpeg",
        "avc1" | "avc3" | "h264" | "x264" | "v_mpeg4/iso/avc" => "h264",
        "" => "unknown",
        _ => return format!("`{t}`"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn codec_names_are_the_common_ones() {
        assert_eq!(super::codec_name("hvc1"), "hevc");
        assert_eq!(super::codec_name("XVID"), "mpeg4");
        assert_eq!(super::codec_name("V_VP9"), "vp9");
        assert_eq!(super::codec_name("abcd"), "`abcd`");
    }
}
