//! Streaming peers for the camera tests: real processes (ffmpeg, gst-launch) that serve the sample
//! video or a test pattern over the network, as a camera would, and that the tests can kill, pause
//! or restart.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Tests that run a model take this lock: on a 2-core machine two of them at once would measure each
/// other.
pub static HEAVY: Mutex<()> = Mutex::new(());

/// Takes [`HEAVY`], even if a previous holder panicked.
pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// The sample video (`assets/sample.mp4`), made from the test photos if it is missing (exactly as
/// `framepipe sample-video` makes it: written to a temporary name, then renamed, so that concurrent
/// test binaries never see half a file).
pub fn sample_video() -> PathBuf {
    static MAKING: Mutex<()> = Mutex::new(());
    let _g = MAKING.lock().unwrap_or_else(|e| e.into_inner());
    let images = asset("images/astronaut.png");
    let dir = images.parent().and_then(|p| p.parent()).unwrap().to_path_buf();
    let path = dir.join("sample.mp4");
    if !path.exists() {
        let tmp = dir.join(format!("sample.{}.tmp.mp4", std::process::id()));
        let photos = [images, asset("images/camera.png")];
        framepipe_video::sample::make_sample_video(&tmp, &photos, Default::default()).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }
    path
}

pub fn asset(rel: &str) -> PathBuf {
    let root = std::env::var_os("FRAMEPIPE_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets"));
    let p = root.join(rel);
    assert!(p.exists(), "{} is missing: run scripts/setup.sh (the sample video: framepipe sample-video)", p.display());
    p
}

/// Whether a program is on the PATH.
pub fn have(program: &str) -> bool {
    Command::new(program).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// A free TCP port on 127.0.0.1 (free when asked; the peer binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Whether something serves on 127.0.0.1:`port`: listens, or already has its one client (a
/// one-client peer stops listening when a client connects, which can be at once). Read from /proc,
/// without connecting: such a peer would take a probe for its client.
pub fn serving(port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp").is_ok_and(|t| {
        t.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1] == want && (f[3] == "0A" || f[3] == "01")
        })
    })
}

/// A streaming process.
pub struct Peer {
    child: Child,
    /// What a client opens.
    pub url: String,
    pub port: u16,
}

/// How the peer serves.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// ffmpeg: the sample video, looped, at its 30 fps (`-re`), as MJPEG over HTTP
    /// (`multipart/x-mixed-replace`, no timestamps). One client.
    MjpegHttp,
    /// ffmpeg: the same as MJPEG in NUT over TCP, which carries each frame's timestamp. One client.
    NutTcp,
    /// gst-launch: a live 30 fps test pattern as MJPEG over TCP (`tcpserversink`); read with a
    /// GStreamer pipeline.
    GstTcp,
}

impl Peer {
    /// Starts a peer on `port` and waits until it listens.
    pub fn start(kind: Kind, port: u16, width: u32) -> Peer {
        let height = width * 9 / 16;
        let sample = sample_video();
        let mut cmd = match kind {
            Kind::MjpegHttp | Kind::NutTcp => {
                let mut c = Command::new("ffmpeg");
                c.args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-stream_loop", "-1", "-i"])
                    .arg(&sample)
                    .args(["-an", "-vf", &format!("scale={width}:{height}"), "-c:v", "mjpeg", "-q:v", "6"]);
                match kind {
                    Kind::MjpegHttp => c.args(["-f", "mpjpeg", "-listen", "1", &format!("http://127.0.0.1:{port}/")]),
                    _ => c.args(["-f", "nut", &format!("tcp://127.0.0.1:{port}?listen=1")]),
                };
                c
            }
            Kind::GstTcp => {
                let mut c = Command::new("gst-launch-1.0");
                c.args(["-q", "videotestsrc", "is-live=true", "pattern=ball", "!"])
                    .arg(format!("video/x-raw,width={width},height={height},framerate=30/1"))
                    .args(["!", "jpegenc", "!", "multipartmux", "!", "tcpserversink", "host=127.0.0.1"])
                    .arg(format!("port={port}"));
                c
            }
        };
        let child =
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start the peer");
        let url = match kind {
            Kind::MjpegHttp => format!("http://127.0.0.1:{port}/"),
            Kind::NutTcp => format!("tcp://127.0.0.1:{port}"),
            Kind::GstTcp => format!(
                "tcpclientsrc host=127.0.0.1 port={port} ! multipartdemux ! jpegdec ! videoconvert ! video/x-raw,format=BGR ! appsink"
            ),
        };
        let started = Instant::now();
        while !serving(port) {
            assert!(started.elapsed() < Duration::from_secs(20), "the peer never listened on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Peer { child, url, port }
    }

    fn signal(&mut self, sig: &str) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill").args([sig, &self.child.id().to_string()]).status();
        }
    }

    /// Kills it (the stream dies mid-frame, as when a camera loses power).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Freezes it: its socket stays open and sends nothing (a hung camera).
    pub fn pause(&mut self) {
        self.signal("-STOP");
    }

    /// Lets it go on.
    pub fn resume(&mut self) {
        self.signal("-CONT");
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}

/// Runs `f` on a thread and fails the test if it takes longer than `limit` (instead of hanging).
pub fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(_) => {
            if h.is_finished() {
                // The closure panicked: show its message.
                if let Err(p) = h.join() {
                    std::panic::resume_unwind(p);
                }
            }
            panic!("did not finish within {limit:?}")
        }
    }
}
