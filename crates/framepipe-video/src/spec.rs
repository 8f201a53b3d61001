//! What a source string names.

use std::fmt;
use std::path::PathBuf;

use crate::VideoError;

/// A video source, parsed from one string:
///
/// * `/dev/video2` or `2`: a V4L2 camera;
/// * `rtsp://…`, `http://…`, `https://…`, `tcp://…`, `udp://…`: a network stream (FFmpeg);
/// * a string that contains `appsink`: a GStreamer pipeline ending in `appsink`;
/// * anything else: a video file.
///
/// ```
/// use framepipe_video::SourceSpec;
/// assert_eq!("/dev/video2".parse::<SourceSpec>().unwrap(), SourceSpec::Camera(2));
/// assert!(matches!("http://127.0.0.1:8090/stream.mjpg".parse().unwrap(), SourceSpec::Url(_)));
/// assert!(matches!("videotestsrc ! videoconvert ! appsink".parse().unwrap(), SourceSpec::GStreamer(_)));
/// assert!(matches!("clip.mp4".parse().unwrap(), SourceSpec::File(_)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    /// A V4L2 camera by index.
    Camera(i32),
    /// A network stream.
    Url(String),
    /// A GStreamer pipeline ending in `appsink`.
    GStreamer(String),
    /// A video file.
    File(PathBuf),
}

impl SourceSpec {
    /// Whether the source is live (delivers frames at its own pace and may drop them), as opposed to a
    /// file.
    pub fn is_live(&self) -> bool {
        !matches!(self, SourceSpec::File(_))
    }
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceSpec::Camera(i) => write!(f, "/dev/video{i}"),
            SourceSpec::Url(u) => f.write_str(u),
            SourceSpec::GStreamer(p) => write!(f, "gstreamer:{p}"),
            SourceSpec::File(p) => write!(f, "{}", p.display()),
        }
    }
}

impl std::str::FromStr for SourceSpec {
    type Err = VideoError;
    fn from_str(s: &str) -> Result<Self, VideoError> {
        let t = s.trim();
        if t.is_empty() {
            return Err(VideoError::BadSpec(s.into(), "empty".into()));
        }
        if let Some(rest) = t.strip_prefix("/dev/video") {
            return rest
                .parse::<i32>()
                .map(SourceSpec::Camera)
                .map_err(|_| VideoError::BadSpec(s.into(), "expected /dev/videoN".into()));
        }
        if let Ok(i) = t.parse::<i32>() {
            if i < 0 {
                return Err(VideoError::BadSpec(s.into(), "a camera index is 0 or more".into()));
            }
            return Ok(SourceSpec::Camera(i));
        }
        let lower = t.to_ascii_lowercase();
        if ["rtsp://", "rtsps://", "http://", "https://", "tcp://", "udp://", "rtmp://"]
            .iter()
            .any(|p| lower.starts_with(p))
        {
            return Ok(SourceSpec::Url(t.to_string()));
        }
        if t.contains("appsink") {
            return Ok(SourceSpec::GStreamer(t.to_string()));
        }
        if t.contains('!') {
            return Err(VideoError::BadSpec(s.into(), "a GStreamer pipeline must end in `appsink`".into()));
        }
        Ok(SourceSpec::File(PathBuf::from(t)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind_and_refuses_nonsense() {
        assert_eq!("0".parse::<SourceSpec>().unwrap(), SourceSpec::Camera(0));
        assert_eq!("/dev/video10".parse::<SourceSpec>().unwrap(), SourceSpec::Camera(10));
        assert_eq!("RTSP://cam/stream".parse::<SourceSpec>().unwrap(), SourceSpec::Url("RTSP://cam/stream".into()));
        assert!("/dev/videoX".parse::<SourceSpec>().unwrap_err().to_string().contains("/dev/videoN"));
        assert!("-1".parse::<SourceSpec>().is_err());
        assert!("videotestsrc ! fakesink".parse::<SourceSpec>().unwrap_err().to_string().contains("appsink"));
        assert!("".parse::<SourceSpec>().is_err());
        assert!(!SourceSpec::File("a.mp4".into()).is_live());
        assert!(SourceSpec::Camera(0).is_live());
    }
}
