//! The native backend on files that ffmpeg makes (the test peer `scripts/setup.sh` installs):
//! H.264 High with B-frames in MP4, Matroska and Annex-B, variable frame rate, Motion-JPEG in AVI,
//! cut files, codecs it does not read. Frames are compared with ffmpeg's own decode.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use framepipe_video::{DecoderChoice, OpenOptions, SourceSpec, VideoError, VideoSource};

fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-y"])
        .args(args)
        .output()
        .expect("ffmpeg is the test peer: run scripts/setup.sh to install it");
    assert!(out.status.success(), "ffmpeg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// 48 frames of a moving test pattern at 25 fps, encoded by ffmpeg with `codec_args`.
fn make(dir: &Path, name: &str, codec_args: &[&str]) -> PathBuf {
    let p = dir.join(name);
    let mut args = vec!["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-frames:v", "48"];
    args.extend_from_slice(codec_args);
    let s = p.to_str().unwrap().to_string();
    args.push(&s);
    ffmpeg(&args);
    p
}

const X264_HIGH_B: &[&str] = &["-c:v", "libx264", "-profile:v", "high", "-bf", "3", "-g", "24", "-pix_fmt", "yuv420p"];

/// ffmpeg's decode of `path` as tightly packed BGR frames.
fn reference(path: &Path, w: usize, h: usize) -> Vec<Vec<u8>> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-i"])
        .arg(path)
        .args(["-f", "rawvideo", "-pix_fmt", "bgr24", "-"])
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout.chunks(w * h * 3).map(<[u8]>::to_vec).collect()
}

struct Read {
    frames: Vec<Vec<u8>>,
    times: Vec<Option<Duration>>,
    errors: Vec<VideoError>,
    backend: String,
}

fn read(path: &Path) -> Read {
    let opts = OpenOptions { decoder: DecoderChoice::Native, ..Default::default() };
    let mut src = VideoSource::open_with(&SourceSpec::File(path.to_path_buf()), 3, &opts).unwrap();
    let backend = src.info().backend.clone();
    let (mut frames, mut times, mut errors) = (vec![], vec![], vec![]);
    while let Some(r) = src.read_frame() {
        match r {
            Ok(f) => {
                frames.push(f.data().to_vec());
                times.push(src.stream_time());
            }
            Err(e) => errors.push(e),
        }
    }
    Read { frames, times, errors, backend }
}

/// Mean and largest absolute difference between two frames.
fn diff(a: &[u8], b: &[u8]) -> (f64, u8) {
    assert_eq!(a.len(), b.len());
    let sum: u64 = a.iter().zip(b).map(|(x, y)| u64::from(x.abs_diff(*y))).sum();
    (sum as f64 / a.len() as f64, a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap_or(0))
}

/// Every frame as ffmpeg decodes it (display order, so B-frames were reordered right), up to the
/// YUV→BGR rounding, and presentation times 40 ms apart from 0.
fn check_h264_file(path: &Path, container: &str) {
    let r = read(path);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.backend, format!("native ({container}, h264)"));
    assert_eq!(r.frames.len(), 48);
    let want = reference(path, 320, 240);
    assert_eq!(want.len(), 48);
    for (k, (got, want)) in r.frames.iter().zip(&want).enumerate() {
        let (mean, max) = diff(got, want);
        // swscale and we round BT.601 differently and upsample chroma differently: a level or
        // two on average; a swapped frame would differ by tens.
        assert!(mean < 2.5 && max < 60, "frame {k}: mean {mean:.2}, max {max}");
        if k > 0 {
            let (to_prev, _) = diff(got, &r.frames[k - 1]);
            assert!(to_prev > mean, "frame {k} is closer to its neighbour than to ffmpeg's frame {k}");
        }
    }
    for (k, t) in r.times.iter().enumerate() {
        assert_eq!(*t, Some(Duration::from_millis(40 * k as u64)), "frame {k}");
    }
}

#[test]
fn h264_high_with_b_frames_in_mp4_decodes_like_ffmpeg_in_display_order() {
    let dir = tempfile::tempdir().unwrap();
    check_h264_file(&make(dir.path(), "high.mp4", X264_HIGH_B), "mp4");
}

#[test]
fn h264_high_with_b_frames_in_matroska_decodes_like_ffmpeg_in_display_order() {
    let dir = tempfile::tempdir().unwrap();
    check_h264_file(&make(dir.path(), "high.mkv", X264_HIGH_B), "matroska");
}

#[test]
fn a_raw_annex_b_stream_gives_every_frame_without_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = X264_HIGH_B.to_vec();
    args.extend(["-f", "h264"]);
    let p = make(dir.path(), "raw.h264", &args);
    let r = read(&p);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.backend, "native (h264, h264)");
    assert_eq!(r.frames.len(), 48);
    let want = reference(&p, 320, 240);
    for (k, (got, want)) in r.frames.iter().zip(&want).enumerate() {
        assert!(diff(got, want).0 < 2.5, "frame {k}");
    }
    assert!(r.times.iter().all(Option::is_none));
}

#[test]
fn variable_frame_rate_times_come_from_the_container() {
    let dir = tempfile::tempdir().unwrap();
    // Frames 0-23 every 40 ms, then a 1 s hole, then every 40 ms again.
    let p = make(
        dir.path(),
        "vfr.mp4",
        &[
            "-vf",
            "setpts=N/25/TB+gte(N\\,24)*1/TB",
            "-fps_mode",
            "vfr",
            "-c:v",
            "libx264",
            "-bf",
            "2",
            "-pix_fmt",
            "yuv420p",
        ],
    );
    let r = read(&p);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.frames.len(), 48);
    let ms: Vec<u64> = r.times.iter().map(|t| t.unwrap().as_millis() as u64).collect();
    for k in 1..48 {
        let gap = ms[k] - ms[k - 1];
        let want = if k == 24 { 1040 } else { 40 };
        assert!(gap.abs_diff(want) <= 1, "gap before frame {k}: {gap} ms, want {want} ({ms:?})");
    }
}

#[test]
fn motion_jpeg_in_avi_and_matroska_decodes_like_ffmpeg() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["mjpeg.avi", "mjpeg.mkv"] {
        let p = make(dir.path(), name, &["-c:v", "mjpeg", "-q:v", "3", "-pix_fmt", "yuvj420p"]);
        let r = read(&p);
        assert!(r.errors.is_empty(), "{name}: {:?}", r.errors);
        assert_eq!(r.frames.len(), 48, "{name}");
        assert!(r.backend.ends_with("mjpeg)"), "{}", r.backend);
        let want = reference(&p, 320, 240);
        for (k, (got, want)) in r.frames.iter().zip(&want).enumerate() {
            // JPEG decoders upsample chroma differently (zune-jpeg vs libavcodec).
            let (mean, _) = diff(got, want);
            assert!(mean < 4.0, "{name} frame {k}: mean {mean:.2}");
        }
        assert_eq!(r.times[47], Some(Duration::from_millis(40 * 47)), "{name}");
    }
}

#[test]
fn a_cut_mp4_gives_the_frames_before_the_cut_then_one_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    // The index first (faststart), then cut the media data in the middle.
    let mut args = X264_HIGH_B.to_vec();
    args.extend(["-movflags", "+faststart"]);
    let p = make(dir.path(), "cut.mp4", &args);
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() * 6 / 10]).unwrap();
    let r = read(&p);
    assert!(r.frames.len() >= 10 && r.frames.len() < 48, "{}", r.frames.len());
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    let msg = r.errors[0].to_string();
    assert!(msg.contains("cut.mp4") && msg.contains("truncated"), "{msg}");

    // The index last (ffmpeg's default) and the file cut: nothing to read, said at once.
    let p = make(dir.path(), "cut-end.mp4", X264_HIGH_B);
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() * 3 / 10]).unwrap();
    let t = Instant::now();
    let e = VideoSource::open(&SourceSpec::File(p), 2).err().expect("no index, no video");
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(e.to_string().contains("cut-end.mp4"), "{e}");
}

#[test]
fn corrupt_frames_are_counted_and_the_rest_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let p = make(dir.path(), "mjpeg.avi", &["-c:v", "mjpeg", "-q:v", "3"]);
    let mut bytes = std::fs::read(&p).unwrap();
    // Spoil the entropy-coded data of three JPEGs (not their chunk headers): find SOS markers.
    let sos: Vec<usize> = bytes.windows(2).enumerate().filter(|(_, w)| w == &[0xFF, 0xDA]).map(|(i, _)| i).collect();
    assert_eq!(sos.len(), 48);
    for &at in &[sos[5], sos[20], sos[40]] {
        for b in &mut bytes[at + 2..at + 14] {
            *b = 0xFF;
        }
    }
    std::fs::write(&p, &bytes).unwrap();
    let r = read(&p);
    assert_eq!(r.frames.len() + r.errors.len(), 48, "every frame is a frame or a counted error");
    assert!(r.frames.len() >= 45, "{}", r.frames.len());
}

#[test]
fn codecs_the_native_backend_does_not_read_are_named_with_what_would_read_them() {
    let dir = tempfile::tempdir().unwrap();
    for (name, args) in [("mpeg4.mp4", &["-c:v", "mpeg4"][..]), ("xvid.avi", &["-c:v", "mpeg4", "-tag:v", "XVID"][..])]
    {
        let p = make(dir.path(), name, args);
        let opts = OpenOptions { decoder: DecoderChoice::Native, ..Default::default() };
        let e = VideoSource::open_with(&SourceSpec::File(p), 2, &opts).err().expect("mpeg4 is not native");
        assert!(matches!(e, VideoError::Unsupported { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains(name) && msg.contains("mpeg4: not supported by the native decoder"), "{msg}");
        assert!(msg.contains("opencv"), "{msg}");
    }
    // Audio only.
    let wav = dir.path().join("a.wav");
    ffmpeg(&["-f", "lavfi", "-i", "sine=duration=1", wav.to_str().unwrap()]);
    let t = Instant::now();
    let e = VideoSource::open(&SourceSpec::File(wav), 2).err().expect("no video in a wav");
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(e.to_string().contains("a.wav") && e.to_string().contains("wav"), "{e}");
}

#[test]
fn what_we_write_ffmpeg_reads_back_frame_exact_in_count() {
    use framepipe_vision::{Frame, PixelFormat};
    let dir = tempfile::tempdir().unwrap();
    for name in ["ours.mp4", "ours.avi"] {
        let p = dir.path().join(name);
        let mut sink = framepipe_video::VideoSink::create(&p, 25.0, 160, 96).unwrap();
        let mut f = Frame::new(160, 96, PixelFormat::Bgr8).unwrap();
        for n in 0..30u8 {
            for (i, b) in f.data_mut().iter_mut().enumerate() {
                *b = ((i / 3 % 160) as u8).wrapping_mul(n).wrapping_add((i % 3) as u8 * 60);
            }
            sink.write(f.as_ref()).unwrap();
        }
        assert_eq!(sink.finish().unwrap(), 30);
        let out = Command::new("ffprobe")
            .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
            .args(["-show_entries", "stream=nb_read_frames,codec_name,width,height,r_frame_rate", "-of", "csv=p=0"])
            .arg(&p)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let codec = if name.ends_with("mp4") { "h264" } else { "mjpeg" };
        assert_eq!(text.trim(), format!("{codec},160,96,25/1,30"), "{name}");
        let r = read(&p);
        assert_eq!(r.frames.len(), 30, "{name}");
        assert!(r.errors.is_empty(), "{name}: {:?}", r.errors);
    }
}

/// Both backends on the same H.264 file: the same frames up to YUV rounding.
#[cfg(feature = "opencv")]
#[test]
fn native_and_opencv_decode_the_same_frames() {
    let dir = tempfile::tempdir().unwrap();
    let p = make(dir.path(), "both.mp4", X264_HIGH_B);
    let native = read(&p);
    let opts = OpenOptions { decoder: DecoderChoice::OpenCv, ..Default::default() };
    let mut cv = VideoSource::open_with(&SourceSpec::File(p.clone()), 3, &opts).unwrap();
    assert!(cv.info().backend.starts_with("opencv"), "{}", cv.info().backend);
    let mut k = 0;
    while let Some(f) = cv.read_frame() {
        let f = f.unwrap();
        let (mean, _) = diff(f.data(), &native.frames[k]);
        assert!(mean < 2.5, "frame {k}: mean {mean:.2}");
        k += 1;
    }
    assert_eq!(k, 48);
    // What the native backend refuses, auto hands to OpenCV.
    let m = make(dir.path(), "mpeg4.mp4", &["-c:v", "mpeg4"]);
    let src = VideoSource::open(&SourceSpec::File(m), 2).unwrap();
    assert!(src.info().backend.starts_with("opencv"), "{}", src.info().backend);
}
