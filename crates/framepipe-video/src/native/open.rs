//! Opening a source natively: the container is told by its first bytes (not the file name), and
//! a demuxer and a decoder are paired into a [`NativeReader`].

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use framepipe_vision::Frame;

use super::annexb::AnnexB;
use super::avi::AviDemuxer;
use super::h264::H264Decoder;
use super::http::HttpMjpeg;
use super::mkv::MkvDemuxer;
use super::mp4::Mp4Demuxer;
use super::v4l2::V4l2Camera;
use super::{Codec, DemuxError, Demuxer, Packet};
use crate::backend::{FrameReader, ReadOutcome};
use crate::frames::fit;

/// What a file's first bytes say it is.
fn sniff(head: &[u8]) -> Result<&'static str, DemuxError> {
    let at = |o: usize, m: &[u8]| head.get(o..o + m.len()) == Some(m);
    Ok(if at(4, b"ftyp") || at(4, b"moov") || at(4, b"mdat") || at(4, b"wide") || at(4, b"free") {
        "mp4"
    } else if at(0, &[0x1A, 0x45, 0xDF, 0xA3]) {
        "matroska"
    } else if at(0, b"RIFF") && at(8, b"AVI ") {
        "avi"
    } else if at(0, &[0, 0, 0, 1]) || at(0, &[0, 0, 1]) {
        "h264"
    } else {
        let other = if at(0, b"RIFF") && at(8, b"WAVE") {
            "wav audio (no video)"
        } else if at(0, b"FLV") {
            "flv"
        } else if at(0, b"OggS") {
            "ogg"
        } else if head.first() == Some(&0x47) && head.get(188) == Some(&0x47) {
            "mpeg-ts"
        } else if at(0, &[0, 0, 1, 0xBA]) {
            "mpeg-ps"
        } else if at(0, b"ID3") || at(0, &[0xFF, 0xFB]) {
            "mp3 audio (no video)"
        } else if head.is_empty() {
            return Err(DemuxError::Malformed("the file is empty".into()));
        } else {
            return Err(DemuxError::Malformed(
                "not a video container the native backend reads (MP4/MOV, Matroska/WebM, AVI, H.264 Annex-B)".into(),
            ));
        };
        return Err(DemuxError::Unsupported { codec: format!("the {other} container") });
    })
}

/// Opens a video file's container.
pub(crate) fn open_file(path: &Path) -> Result<Box<dyn Demuxer>, DemuxError> {
    let mut file = File::open(path)?;
    let mut head = [0u8; 256];
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    file.seek(SeekFrom::Start(0))?;
    Ok(match sniff(&head[..n])? {
        "mp4" => Box::new(Mp4Demuxer::open(file)?),
        "matroska" => Box::new(MkvDemuxer::open(file)?),
        "avi" => Box::new(AviDemuxer::open(std::io::BufReader::new(file))?),
        _ => Box::new(AnnexB::open(std::io::BufReader::new(file))?),
    })
}

/// Opens an HTTP MJPEG stream.
pub(crate) fn open_http(
    url: &str,
    open: Option<Duration>,
    read: Option<Duration>,
) -> Result<Box<dyn Demuxer>, DemuxError> {
    Ok(Box::new(HttpMjpeg::open(url, open, read)?))
}

/// Opens a V4L2 camera.
pub(crate) fn open_camera(index: i32) -> Result<(Box<dyn Demuxer>, usize), DemuxError> {
    let cam = V4l2Camera::open(index)?;
    let stride = cam.stride;
    Ok((Box::new(cam), stride))
}

enum Decoder {
    H264(Box<H264Decoder>),
    Jpeg,
    /// Packed YUYV rows of this many bytes, and a scratch row.
    Yuyv(usize, Vec<u8>),
}

/// How many undecodable packets in a row end a stream (a stream of garbage must not spin).
const MAX_CONSECUTIVE_ERRORS: u32 = 100;

/// A demuxer and its decoder: reads BGR frames.
pub(crate) struct NativeReader {
    demuxer: Box<dyn Demuxer>,
    decoder: Decoder,
    packet: Packet,
    drained: bool,
    finished: bool,
    failed_in_a_row: u32,
    description: String,
}

impl NativeReader {
    /// Pairs `demuxer` with the decoder for its codec; `yuyv_stride` is a raw camera's row size.
    pub(crate) fn new(demuxer: Box<dyn Demuxer>, yuyv_stride: usize) -> Result<Self, DemuxError> {
        let info = demuxer.info();
        let decoder = match info.codec {
            Codec::H264 => {
                Decoder::H264(Box::new(H264Decoder::new(&info.parameter_sets).map_err(DemuxError::Malformed)?))
            }
            Codec::Mjpeg => Decoder::Jpeg,
            Codec::Yuyv => Decoder::Yuyv(yuyv_stride.max(info.width * 2), Vec::new()),
        };
        let codec = match info.codec {
            Codec::H264 => "h264",
            Codec::Mjpeg => "mjpeg",
            Codec::Yuyv => "yuyv",
        };
        let description = format!("native ({}, {codec})", info.container);
        Ok(NativeReader {
            demuxer,
            decoder,
            packet: Packet::default(),
            drained: false,
            finished: false,
            failed_in_a_row: 0,
            description,
        })
    }

    /// Frames per second and frame count the container announced.
    pub(crate) fn announced(&self) -> (Option<f64>, Option<u64>) {
        let i = self.demuxer.info();
        (i.fps, i.frames)
    }

    /// One packet through the decoder: a frame, nothing yet (B-frame delay), or an error.
    fn decode(&mut self, frame: &mut Frame) -> Result<Option<Option<Duration>>, String> {
        let p = &self.packet;
        match &mut self.decoder {
            Decoder::H264(d) => Ok(d.decode(&p.data, p.pts, frame)?.map(|d| d.pts)),
            Decoder::Jpeg => super::jpeg::decode_into(&p.data, frame).map(|_| Some(p.pts)),
            Decoder::Yuyv(stride, scratch) => {
                let i = self.demuxer.info();
                let (w, h) = (i.width, i.height);
                if p.data.len() < (h.max(1) - 1) * *stride + w * 2 {
                    return Err(format!("a YUYV frame of {} bytes is short of {w}x{h}", p.data.len()));
                }
                fit(frame, w, h)?;
                let ds = frame.stride();
                super::yuv::yuyv_to_bgr(&p.data, *stride, w, h, frame.data_mut(), ds, scratch);
                Ok(Some(p.pts))
            }
        }
    }
}

impl FrameReader for NativeReader {
    fn read_into(&mut self, frame: &mut Frame) -> ReadOutcome {
        loop {
            if self.finished {
                return ReadOutcome::End;
            }
            if self.drained {
                // The pictures that B-frame reordering still holds, one per call, then the end.
                let flushed = match &mut self.decoder {
                    Decoder::H264(d) => d.flush(frame),
                    _ => Ok(None),
                };
                return match flushed {
                    Ok(Some(out)) => ReadOutcome::Frame { pts: out.pts },
                    Ok(None) => {
                        self.finished = true;
                        ReadOutcome::End
                    }
                    Err(reason) => {
                        self.finished = true;
                        ReadOutcome::Corrupt { reason }
                    }
                };
            }
            match self.demuxer.read_packet(&mut self.packet) {
                Ok(true) => {}
                Ok(false) => {
                    self.drained = true;
                    continue;
                }
                Err(DemuxError::Io(e)) => {
                    self.drained = true;
                    return ReadOutcome::Failed { reason: e.to_string(), io: Some(e.kind()) };
                }
                Err(e) => {
                    self.drained = true;
                    return ReadOutcome::Failed { reason: e.to_string(), io: None };
                }
            }
            match self.decode(frame) {
                Ok(Some(pts)) => {
                    self.failed_in_a_row = 0;
                    return ReadOutcome::Frame { pts };
                }
                Ok(None) => {}
                Err(reason) => {
                    self.failed_in_a_row += 1;
                    if self.failed_in_a_row >= MAX_CONSECUTIVE_ERRORS {
                        self.drained = true;
                        return ReadOutcome::Failed {
                            reason: format!(
                                "{MAX_CONSECUTIVE_ERRORS} packets in a row failed to decode (last: {reason})"
                            ),
                            io: None,
                        };
                    }
                    return ReadOutcome::Corrupt { reason };
                }
            }
        }
    }

    fn describe(&self) -> &str {
        &self.description
    }
}
