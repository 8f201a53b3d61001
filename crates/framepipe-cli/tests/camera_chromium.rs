//! The MJPEG view in a real browser: `framepipe camera --serve` on the sample video, headless
//! Chromium loads the page, waits for a frame, takes a screenshot; the screenshot must hold the boxes
//! (the detector's class-0 colour) and the page its live statistics.
//!
//! Skipped only when Chromium is missing and `FRAMEPIPE_REQUIRE_CHROMIUM` is unset (CI installs
//! Chromium and sets it, so there it always runs). `FRAMEPIPE_SCREENSHOT_OUT=path.png` keeps the
//! screenshot (docs/camera-view.png is made that way).

mod common;
use common::sample_video;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// The camera process; killed if the test fails.
struct Camera(Child);

impl Drop for Camera {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A GET over a plain socket: status code and body (the view answers with Content-Length).
fn get(addr: &str, path: &str) -> Option<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let code: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
    let mut len = None;
    loop {
        line.clear();
        r.read_line(&mut line).ok()?;
        if line.trim_end().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().ok();
            }
        }
    }
    let mut body = vec![0; len?];
    r.read_exact(&mut body).ok()?;
    Some((code, body))
}

/// The detector's class-0 (`Normal`) box colour as framepipe draws it: Ultralytics' palette entry 0,
/// `#042AFF` (`framepipe_vision::draw::ULTRALYTICS_PALETTE[0]`), in BGR.
const CLASS0_BGR: [u8; 3] = [0xFF, 0x2A, 0x04];

/// Pixels within 40 per channel of [`CLASS0_BGR`] (JPEG and browser scaling move colours a little).
fn count_colour<'a>(w: usize, h: usize, pixel: impl Fn(usize, usize) -> &'a [u8]) -> usize {
    (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .filter(|&(x, y)| pixel(x, y).iter().zip(CLASS0_BGR).all(|(&a, b)| a.abs_diff(b) <= 40))
        .count()
}

fn run_chromium(browser: &Path, profile: &Path, extra: &[&str], url: &str) -> std::process::Output {
    let mut c = Command::new(browser);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--window-size=1280,900",
        "--virtual-time-budget=5000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(url)
    .stdin(Stdio::null());
    let child = c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("chromium starts");
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(90)) {
        Ok(o) => o.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &id.to_string()]).status();
            panic!("chromium did not finish within 90 s");
        }
    }
}

#[test]
fn the_view_shows_annotated_frames_and_live_stats_in_headless_chromium() {
    let Some(browser) = chromium() else {
        if std::env::var_os("FRAMEPIPE_REQUIRE_CHROMIUM").is_some() {
            panic!("FRAMEPIPE_REQUIRE_CHROMIUM is set but no Chromium was found (apt-get install chromium)");
        }
        eprintln!("skipped: Chromium is not installed (scripts/setup.sh installs it)");
        return;
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_framepipe"))
        .args(["camera", "--source", sample_video().to_str().unwrap(), "--realtime", "--duration", "90"])
        .args(["--serve", "127.0.0.1:0", "--quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The address the view got (port 0: a free one), from its start-up line.
    let stderr = child.stderr.take().unwrap();
    let mut camera = Camera(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("view: http://") {
                let _ = tx.send(rest.split('/').next().unwrap_or_default().to_string());
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(60)).expect("the camera printed its view address");
    // Wait for the first annotated frame (the model loads and runs first).
    let started = Instant::now();
    let jpeg = loop {
        if let Some((200, body)) = get(&addr, "/frame.jpg") {
            break body;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no frame served within 60 s");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
    // Let a few results through, so that the statistics have rates.
    std::thread::sleep(Duration::from_secs(3));
    let (code, stats) = get(&addr, "/stats").unwrap();
    assert_eq!(code, 200);
    let stats: serde_json::Value = serde_json::from_slice(&stats).unwrap();
    assert!(stats["processed"].as_u64().unwrap() >= 1, "{stats}");
    for k in ["fps", "latency_p50_ms", "latency_p99_ms", "dropped"] {
        assert!(stats.get(k).is_some(), "/stats has `{k}`: {stats}");
    }

    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("view.png");
    let url = format!("http://{addr}/");
    let o = run_chromium(&browser, &dir.path().join("profile-1"), &[&format!("--screenshot={}", shot.display())], &url);
    assert!(shot.exists(), "no screenshot: {}", String::from_utf8_lossy(&o.stderr));
    let dom = run_chromium(&browser, &dir.path().join("profile-2"), &["--dump-dom"], &url);
    let dom = String::from_utf8_lossy(&dom.stdout);

    // The page saw a frame, and its statistics were filled in from /stats.
    assert!(dom.contains(r#"data-frame="1""#), "the page never showed a frame:\n{dom}");
    assert!(!dom.contains(r#"id="fps">–<"#) && dom.contains(r#"id="state">running<"#), "stats not shown:\n{dom}");

    // The screenshot holds the boxes: pixels of the class-0 colour (the box outline and the solid
    // label background), which neither the video nor the page has.
    let png = framepipe_video::read_image(&shot).unwrap();
    assert_eq!((png.width(), png.height()), (1280, 900));
    let in_shot = count_colour(png.width(), png.height(), |x, y| png.pixel(x, y).unwrap());
    let raw = {
        let spec = framepipe_video::SourceSpec::File(sample_video());
        let mut src = framepipe_video::VideoSource::open(&spec, 1).unwrap();
        let f = src.read_frame().unwrap().unwrap();
        count_colour(f.width(), f.height(), |x, y| f.pixel(x, y).unwrap())
    };
    eprintln!("class-0 box colour: {in_shot} pixels in the screenshot, {raw} in the raw video frame");
    assert!(raw < 50, "the video itself has the box colour ({raw} pixels): the check would prove nothing");
    assert!(in_shot >= 300, "only {in_shot} box-coloured pixels in the screenshot: no boxes drawn?");
    if let Some(out) = std::env::var_os("FRAMEPIPE_SCREENSHOT_OUT") {
        std::fs::copy(&shot, out).unwrap();
    }

    // SIGTERM: the camera drains and exits 0.
    let child = &mut camera.0;
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the camera did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}");
}
