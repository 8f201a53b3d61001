//! V4L2 cameras through `linuxvideo` (pure Rust ioctls, memory-mapped streaming I/O): the
//! device's current size, in Motion-JPEG where it offers it (the common USB webcam format at high
//! resolutions), else packed YUYV. Frames carry no container timestamp (`pts` is `None`): the
//! capture time is when the frame is read, as for every live source.

use std::path::Path;

use linuxvideo::format::{Format, PixFormat, PixelFormat};
use linuxvideo::stream::ReadStream;
use linuxvideo::{BufType, Device};

use super::{Codec, DemuxError, Demuxer, Packet, StreamInfo};

/// A V4L2 capture device, streaming.
pub(crate) struct V4l2Camera {
    stream: ReadStream,
    info: StreamInfo,
    /// Bytes per row of a YUYV frame.
    pub(crate) stride: usize,
}

impl V4l2Camera {
    /// Opens `/dev/videoN`, negotiates MJPEG or YUYV at the device's current size, and starts
    /// streaming.
    pub(crate) fn open(index: i32) -> Result<Self, DemuxError> {
        let path = format!("/dev/video{index}");
        if !Path::new(&path).exists() {
            return Err(DemuxError::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{path} does not exist (no such camera)"),
            )));
        }
        let device = Device::open(&path)?;
        let Format::VideoCapture(current) = device.format(BufType::VIDEO_CAPTURE)? else {
            return Err(DemuxError::Malformed(format!("{path} is not a video capture device")));
        };
        let offered: Vec<PixelFormat> =
            device.formats(BufType::VIDEO_CAPTURE).filter_map(|f| f.ok()).map(|f| f.pixel_format()).collect();
        let (w, h) = (current.width(), current.height());
        let wanted = [PixelFormat::MJPG, PixelFormat::JPEG, PixelFormat::YUYV]
            .into_iter()
            .find(|p| offered.contains(p))
            .ok_or_else(|| DemuxError::Unsupported {
                codec: format!(
                    "camera pixel formats {:?} (the native backend reads MJPEG and YUYV)",
                    offered.iter().map(|p| p.to_string()).collect::<Vec<_>>()
                ),
            })?;
        let capture = device.video_capture(PixFormat::new(w, h, wanted))?;
        let got = capture.format();
        let (gw, gh, gstride, gformat) = (got.width(), got.height(), got.bytes_per_line(), got.pixel_format());
        let codec = match gformat {
            p if p == PixelFormat::YUYV => Codec::Yuyv,
            p if p == PixelFormat::MJPG || p == PixelFormat::JPEG => Codec::Mjpeg,
            other => return Err(DemuxError::Unsupported { codec: format!("camera pixel format {other}") }),
        };
        let stride = (gstride as usize).max(gw as usize * 2);
        let stream = capture.into_stream()?;
        let info = StreamInfo {
            container: "v4l2",
            codec,
            width: gw as usize,
            height: gh as usize,
            fps: None,
            frames: None,
            parameter_sets: Vec::new(),
        };
        Ok(V4l2Camera { stream, info, stride })
    }
}

impl Demuxer for V4l2Camera {
    fn info(&self) -> &StreamInfo {
        &self.info
    }

    fn read_packet(&mut self, packet: &mut Packet) -> Result<bool, DemuxError> {
        let data = &mut packet.data;
        self.stream.dequeue(|buf| {
            if buf.is_error() {
                return Err(std::io::Error::other("the driver marked the buffer as corrupt"));
            }
            data.clear();
            data.extend_from_slice(&buf);
            Ok(())
        })?;
        packet.pts = None;
        packet.key = true;
        Ok(true)
    }
}
