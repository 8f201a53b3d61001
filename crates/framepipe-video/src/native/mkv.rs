//! Matroska and WebM through `matroska-demuxer`: the first video track's blocks, with their
//! timestamps (cluster time + block offset, in the segment's `TimestampScale`). H.264 comes with
//! its `avcC` record in `CodecPrivate` (the `V_MPEG4/ISO/AVC` codec id) and length-prefixed
//! NAL units; Motion-JPEG (`V_MJPEG`) is one JPEG a block.

use std::fs::File;
use std::io::BufReader;
use std::time::Duration;

use matroska_demuxer::{Frame as Block, MatroskaFile, TrackType};

use super::annexb::{avcc_to_annexb, parameter_sets};
use super::{codec_name, Codec, DemuxError, Demuxer, Packet, StreamInfo};

/// The first video track of a Matroska/WebM file.
pub(crate) struct MkvDemuxer {
    mkv: MatroskaFile<BufReader<File>>,
    info: StreamInfo,
    track: u64,
    length_size: usize,
    /// Nanoseconds per timestamp unit.
    scale: u64,
    block: Block,
    frame: u64,
}

fn bad(e: impl std::fmt::Display) -> DemuxError {
    DemuxError::Malformed(format!("not a readable Matroska/WebM file: {e}"))
}

impl MkvDemuxer {
    /// Reads the header of `file` and picks its first video track.
    pub(crate) fn open(file: File) -> Result<Self, DemuxError> {
        let mkv = MatroskaFile::open(BufReader::new(file)).map_err(bad)?;
        let t = mkv
            .tracks()
            .iter()
            .find(|t| t.track_type() == TrackType::Video)
            .ok_or_else(|| DemuxError::Malformed("the Matroska file has no video track".into()))?;
        let (codec, length_size, ps) = match t.codec_id() {
            "V_MPEG4/ISO/AVC" => {
                let private = t.codec_private().ok_or_else(|| bad("an H.264 track without CodecPrivate"))?;
                let (ls, ps) = parameter_sets(private).map_err(DemuxError::Malformed)?;
                (Codec::H264, ls, ps)
            }
            "V_MJPEG" => (Codec::Mjpeg, 4, Vec::new()),
            other => return Err(DemuxError::Unsupported { codec: codec_name(other) }),
        };
        if t.content_encodings().is_some_and(|c| !c.is_empty()) {
            return Err(DemuxError::Unsupported { codec: "compressed or encrypted Matroska blocks".into() });
        }
        let (width, height) =
            t.video().map_or((0, 0), |v| (v.pixel_width().get() as usize, v.pixel_height().get() as usize));
        let fps = t.default_duration().map(|d| 1e9 / d.get() as f64).filter(|f| f.is_finite() && *f > 0.0);
        let track = t.track_number().get();
        let scale = mkv.info().timestamp_scale().get();
        let info = StreamInfo { container: "matroska", codec, width, height, fps, frames: None, parameter_sets: ps };
        Ok(MkvDemuxer { mkv, info, track, length_size, scale, block: Block::default(), frame: 0 })
    }
}

impl Demuxer for MkvDemuxer {
    fn info(&self) -> &StreamInfo {
        &self.info
    }

    fn read_packet(&mut self, packet: &mut Packet) -> Result<bool, DemuxError> {
        loop {
            let more = self
                .mkv
                .next_frame(&mut self.block)
                .map_err(|e| DemuxError::Malformed(format!("truncated or corrupt after frame {}: {e}", self.frame)))?;
            if !more {
                return Ok(false);
            }
            if self.block.track != self.track {
                continue;
            }
            let n = self.frame;
            self.frame += 1;
            match self.info.codec {
                Codec::H264 => avcc_to_annexb(&self.block.data, self.length_size, &mut packet.data)
                    .map_err(|e| DemuxError::Malformed(format!("frame {n}: {e}")))?,
                _ => {
                    packet.data.clear();
                    packet.data.extend_from_slice(&self.block.data);
                }
            }
            let ns = u128::from(self.block.timestamp) * u128::from(self.scale);
            packet.pts = Some(Duration::from_nanos(ns.min(u128::from(u64::MAX)) as u64));
            packet.key = self.block.is_keyframe.unwrap_or(true);
            return Ok(true);
        }
    }
}
