//! Writing video without OpenCV: H.264 in MP4 (OpenH264's encoder, Constrained Baseline, and the
//! `mp4` crate's muxer) and Motion-JPEG in AVI (`jpeg-encoder` and our AVI writer).

use std::fs::File;
use std::io::{BufWriter, Seek, Write};

use ::mp4::{AvcConfig, FourCC, MediaConfig, Mp4Config, Mp4Sample, Mp4Writer, TrackConfig, TrackType};
use framepipe_vision::{FrameRef, PixelFormat};
use openh264::encoder::{Encoder, EncoderConfig, FrameRate, IntraFramePeriod, RateControlMode, UsageType};
use openh264::formats::YUVSlices;
use openh264::OpenH264API;

use super::avi::AviWriter;
use super::yuv::bgr_to_i420;

/// MP4 media ticks per second (the MPEG-TS clock; exact for 24, 25, 30, 50 and 60 fps).
const TIMESCALE: u32 = 90_000;

/// A video file being written.
pub(crate) enum NativeWriter {
    /// H.264 in MP4.
    Mp4(Box<H264Mp4>),
    /// Motion-JPEG in AVI.
    Avi(MjpegAvi),
}

impl NativeWriter {
    /// Appends one frame (checked by the caller to have the video's size).
    pub(crate) fn write(&mut self, frame: FrameRef<'_>) -> Result<(), String> {
        match self {
            NativeWriter::Mp4(w) => w.write(frame),
            NativeWriter::Avi(w) => w.write(frame),
        }
    }

    /// Finishes the file.
    pub(crate) fn finish(self) -> Result<(), String> {
        match self {
            NativeWriter::Mp4(w) => w.finish(),
            NativeWriter::Avi(w) => w.finish(),
        }
    }
}

/// Writes frames as H.264 (Constrained Baseline, a key frame every two seconds) into an MP4.
pub(crate) struct H264Mp4 {
    encoder: Encoder,
    mp4: Option<Mp4Writer<BufWriter<File>>>,
    /// The file until the first frame gives the parameter sets that the track header needs.
    start: Option<BufWriter<File>>,
    width: usize,
    height: usize,
    ticks: u32,
    frames: u64,
    planes: Vec<u8>,
    sample: Vec<u8>,
    sps: Vec<u8>,
    pps: Vec<u8>,
}

impl H264Mp4 {
    /// Creates the writer; `width` and `height` must be even (4:2:0 chroma).
    pub(crate) fn create(file: File, fps: f64, width: usize, height: usize) -> Result<Self, String> {
        if width % 2 != 0 || height % 2 != 0 || width < 16 || height < 16 {
            return Err(format!(
                "H.264 in MP4 needs an even size of at least 16x16, not {width}x{height} (write .avi instead)"
            ));
        }
        if width > 4096 || height > 2304 {
            return Err(format!("{width}x{height} is over OpenH264's 4096x2304 (write .avi instead)"));
        }
        let fps = if fps.is_finite() && fps > 0.0 { fps.min(240.0) } else { 30.0 };
        let bps = ((width * height) as f64 * fps * 0.15).clamp(200_000.0, 40_000_000.0) as u32;
        let config = EncoderConfig::new()
            .usage_type(UsageType::CameraVideoRealTime)
            .rate_control_mode(RateControlMode::Bufferbased)
            .bitrate(openh264::encoder::BitRate::from_bps(bps))
            .max_frame_rate(FrameRate::from_hz(fps as f32))
            .skip_frames(false)
            .intra_frame_period(IntraFramePeriod::from_num_frames((fps * 2.0).round().max(1.0) as u32));
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| format!("cannot start the H.264 encoder: {e}"))?;
        let ticks = (f64::from(TIMESCALE) / fps).round().max(1.0) as u32;
        Ok(H264Mp4 {
            encoder,
            mp4: None,
            start: Some(BufWriter::new(file)),
            width,
            height,
            ticks,
            frames: 0,
            planes: Vec::new(),
            sample: Vec::new(),
            sps: Vec::new(),
            pps: Vec::new(),
        })
    }

    fn write(&mut self, frame: FrameRef<'_>) -> Result<(), String> {
        let (w, h) = (self.width, self.height);
        if frame.format() != PixelFormat::Bgr8 {
            return Err(format!("{} frames must be converted to BGR first", frame.format()));
        }
        let (cw, ch) = (w / 2, h / 2);
        self.planes.resize(w * h + 2 * cw * ch, 0);
        let (y, uv) = self.planes.split_at_mut(w * h);
        let (u, v) = uv.split_at_mut(cw * ch);
        bgr_to_i420(frame.data(), frame.stride(), w, h, y, u, v);
        let yuv = YUVSlices::new((y, u, v), (w, h), (w, cw, cw));
        let bits = self.encoder.encode(&yuv).map_err(|e| format!("H.264 encoder: {e}"))?;
        self.sample.clear();
        let mut key = false;
        for l in 0..bits.num_layers() {
            let Some(layer) = bits.layer(l) else { continue };
            for n in 0..layer.nal_count() {
                let Some(nal) = layer.nal_unit(n).map(strip_start_code) else { continue };
                match nal.first().map(|b| b & 0x1f) {
                    Some(7) => nal.clone_into(&mut self.sps),
                    Some(8) => nal.clone_into(&mut self.pps),
                    Some(9) | None => {}
                    Some(t) => {
                        key |= t == 5;
                        self.sample.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                        self.sample.extend_from_slice(nal);
                    }
                }
            }
        }
        if self.sample.is_empty() {
            return Err("the H.264 encoder skipped a frame".into());
        }
        if self.mp4.is_none() {
            self.begin()?;
        }
        let mp4 = self.mp4.as_mut().ok_or("the MP4 writer is not open")?;
        let sample = Mp4Sample {
            start_time: self.frames * u64::from(self.ticks),
            duration: self.ticks,
            rendering_offset: 0,
            is_sync: key,
            bytes: bytes::Bytes::copy_from_slice(&self.sample),
        };
        mp4.write_sample(1, &sample).map_err(|e| format!("MP4: {e}"))?;
        self.frames += 1;
        Ok(())
    }

    /// Writes the file header and the video track, once the first frame gave SPS and PPS.
    fn begin(&mut self) -> Result<(), String> {
        if self.sps.is_empty() || self.pps.is_empty() {
            return Err("the first encoded frame has no SPS/PPS".into());
        }
        let file = self.start.take().ok_or("the MP4 writer was already started")?;
        let config = Mp4Config {
            major_brand: str::parse::<FourCC>("isom").map_err(|e| e.to_string())?,
            minor_version: 512,
            compatible_brands: ["isom", "iso2", "avc1", "mp41"]
                .iter()
                .filter_map(|b| b.parse::<FourCC>().ok())
                .collect(),
            timescale: 1000,
        };
        let mut mp4 = Mp4Writer::write_start(file, &config).map_err(|e| format!("MP4: {e}"))?;
        let track = TrackConfig {
            track_type: TrackType::Video,
            timescale: TIMESCALE,
            language: "und".into(),
            media_conf: MediaConfig::AvcConfig(AvcConfig {
                width: self.width as u16,
                height: self.height as u16,
                seq_param_set: self.sps.clone(),
                pic_param_set: self.pps.clone(),
            }),
        };
        mp4.add_track(&track).map_err(|e| format!("MP4: {e}"))?;
        self.mp4 = Some(mp4);
        Ok(())
    }

    fn finish(mut self) -> Result<(), String> {
        match self.mp4.as_mut() {
            Some(mp4) => {
                mp4.write_end().map_err(|e| format!("MP4: {e}"))?;
                let mut w = self.mp4.take().map(Mp4Writer::into_writer).ok_or("no writer")?;
                w.flush().map_err(|e| e.to_string())
            }
            // No frame: an empty file is no MP4; leave nothing that looks like one.
            None => Ok(()),
        }
    }
}

/// A NAL unit without its Annex-B start code.
fn strip_start_code(nal: &[u8]) -> &[u8] {
    if nal.starts_with(&[0, 0, 0, 1]) {
        &nal[4..]
    } else if nal.starts_with(&[0, 0, 1]) {
        &nal[3..]
    } else {
        nal
    }
}

/// Writes frames as JPEGs into an AVI.
pub(crate) struct MjpegAvi {
    avi: AviWriter<BufWriter<File>>,
    jpeg: Vec<u8>,
    tight: Vec<u8>,
    quality: u8,
}

impl MjpegAvi {
    /// Creates the writer.
    pub(crate) fn create(file: File, fps: f64, width: usize, height: usize) -> Result<Self, String> {
        if width > usize::from(u16::MAX) || height > usize::from(u16::MAX) {
            return Err(format!("{width}x{height} is too large for JPEG"));
        }
        let fps = if fps.is_finite() && fps > 0.0 { fps } else { 30.0 };
        let avi = AviWriter::create(BufWriter::new(file), width as u32, height as u32, fps, *b"MJPG")
            .map_err(|e| e.to_string())?;
        Ok(MjpegAvi { avi, jpeg: Vec::new(), tight: Vec::new(), quality: 90 })
    }

    fn write(&mut self, frame: FrameRef<'_>) -> Result<(), String> {
        encode_jpeg(frame, self.quality, &mut self.tight, &mut self.jpeg)?;
        self.avi.write_frame(&self.jpeg, true).map_err(|e| e.to_string())
    }

    fn finish(self) -> Result<(), String> {
        let mut w = self.avi.finish().map_err(|e| e.to_string())?;
        w.flush().map_err(|e| e.to_string())?;
        w.stream_position().map(|_| ()).map_err(|e| e.to_string())
    }
}

/// Encodes a BGR or gray frame as a JPEG into `out` (cleared first). `tight` is scratch space for
/// frames whose rows are padded (the encoder takes tight rows).
pub(crate) fn encode_jpeg(
    frame: FrameRef<'_>,
    quality: u8,
    tight: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let (w, h) = (frame.width(), frame.height());
    let (ct, bpp) = match frame.format() {
        PixelFormat::Bgr8 => (jpeg_encoder::ColorType::Bgr, 3),
        PixelFormat::Gray8 => (jpeg_encoder::ColorType::Luma, 1),
        other => return Err(format!("{other} frames must be converted to BGR first")),
    };
    let (w16, h16) = (
        u16::try_from(w).map_err(|_| format!("{w}x{h} is too large for JPEG"))?,
        u16::try_from(h).map_err(|_| format!("{w}x{h} is too large for JPEG"))?,
    );
    let row = w * bpp;
    let data = if frame.stride() == row {
        &frame.data()[..row * h]
    } else {
        tight.clear();
        for y in 0..h {
            tight.extend_from_slice(&frame.data()[y * frame.stride()..y * frame.stride() + row]);
        }
        &tight[..]
    };
    out.clear();
    jpeg_encoder::Encoder::new(&mut *out, quality.clamp(1, 100))
        .encode(data, w16, h16, ct)
        .map_err(|e| format!("JPEG encoder: {e}"))
}
