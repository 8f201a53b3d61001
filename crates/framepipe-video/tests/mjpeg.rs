//! The MJPEG view over real sockets: routes, the multipart stream, slow clients, shutdown.
//!
//! The client side here is a few lines over `TcpStream` on purpose: it checks the bytes the server
//! writes, and it can be a client that stops reading.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use framepipe_video::mjpeg::{MjpegOptions, MjpegServer, BOUNDARY};
use framepipe_vision::{Frame, PixelFormat};

/// Runs `f` on a thread and fails the test if it takes longer than `limit` (instead of hanging).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).unwrap_or_else(|_| panic!("did not finish within {limit:?}"))
}

fn local_view(max_fps: Option<f64>) -> MjpegServer {
    let opts = MjpegOptions { addr: "127.0.0.1:0".parse().unwrap(), max_fps, ..Default::default() };
    MjpegServer::start(&opts).unwrap()
}

/// A 160×120 frame whose left part is a colour that changes with `n`.
fn frame(n: u8) -> Frame {
    let mut f = Frame::new(160, 120, PixelFormat::Bgr8).unwrap();
    for (i, px) in f.data_mut().chunks_mut(3).enumerate() {
        let x = i % 160;
        px.copy_from_slice(&if x < 80 { [n, 255 - n, 128] } else { [20, 20, 20] });
    }
    f
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Sends a GET and returns the status line, the headers (lower-case names) and the reader, positioned
/// at the body.
fn get(addr: SocketAddr, path: &str, accept: &str) -> (String, Vec<(String, String)>, BufReader<TcpStream>) {
    let mut s = connect(addr);
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\n\r\n").unwrap();
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').unwrap();
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    (status.trim_end().to_string(), headers, r)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Reads a body of known length (or, chunked, the whole of it).
fn body(headers: &[(String, String)], r: &mut BufReader<TcpStream>) -> Vec<u8> {
    if let Some(n) = header(headers, "content-length") {
        let mut b = vec![0; n.parse().unwrap()];
        r.read_exact(&mut b).unwrap();
        return b;
    }
    assert_eq!(header(headers, "transfer-encoding"), Some("chunked"), "{headers:?}");
    let mut out = Vec::new();
    loop {
        let mut size = String::new();
        r.read_line(&mut size).unwrap();
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        let mut chunk = vec![0; n + 2];
        r.read_exact(&mut chunk).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

/// Reads one part of the multipart stream: its JPEG bytes.
fn next_part(r: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let l = line.trim_end();
        if l == format!("--{BOUNDARY}--") {
            return None;
        }
        if l == format!("--{BOUNDARY}") {
            break;
        }
    }
    let mut len = None;
    loop {
        line.clear();
        r.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().ok();
            }
            if k.eq_ignore_ascii_case("content-type") {
                assert_eq!(v.trim(), "image/jpeg");
            }
        }
    }
    let mut jpeg = vec![0; len.expect("every part has a Content-Length")];
    r.read_exact(&mut jpeg).ok()?;
    Some(jpeg)
}

fn decode(jpeg: &[u8]) -> Frame {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f.jpg");
    std::fs::write(&p, jpeg).unwrap();
    framepipe_video::read_image(&p).unwrap()
}

#[test]
fn every_route_answers_and_the_stream_is_multipart_jpeg() {
    within(Duration::from_secs(60), || {
        let view = local_view(None);
        let addr = view.local_addr();
        assert!(addr.ip().is_loopback() && addr.port() != 0);
        view.set_stats(r#"{"fps":2.5,"dropped":7}"#);

        // The page, for a browser at `/` and at /index.html.
        for path in ["/", "/index.html"] {
            let (status, headers, mut r) = get(addr, path, "text/html,application/xhtml+xml,*/*;q=0.8");
            assert!(status.contains("200"), "{status}");
            assert!(header(&headers, "content-type").unwrap().starts_with("text/html"));
            let html = String::from_utf8(body(&headers, &mut r)).unwrap();
            assert!(html.contains("/stream.mjpg") && html.contains("/stats"), "{html}");
        }
        // Stats as set.
        let (status, headers, mut r) = get(addr, "/stats", "*/*");
        assert!(status.contains("200"));
        assert_eq!(header(&headers, "content-type"), Some("application/json"));
        assert_eq!(body(&headers, &mut r), br#"{"fps":2.5,"dropped":7}"#);
        // Unknown paths.
        let (status, _, _) = get(addr, "/nope", "*/*");
        assert!(status.contains("404"), "{status}");

        // The stream: `/` for a non-browser client. Frames published after it connects arrive, in
        // order, as JPEGs of the published frames.
        let (status, headers, mut r) = get(addr, "/", "*/*");
        assert!(status.contains("200"), "{status}");
        assert_eq!(
            header(&headers, "content-type"),
            Some(format!("multipart/x-mixed-replace; boundary={BOUNDARY}").as_str())
        );
        let stop = std::sync::atomic::AtomicBool::new(false);
        let parts = std::thread::scope(|scope| {
            scope.spawn(|| {
                let mut n = 0u8;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    view.publish(frame(n).as_ref());
                    n = n.wrapping_add(20);
                    std::thread::sleep(Duration::from_millis(30));
                }
            });
            let mut parts = Vec::new();
            while parts.len() < 3 {
                match next_part(&mut r) {
                    Some(p) => parts.push(p),
                    None => break,
                }
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            parts
        });
        assert_eq!(parts.len(), 3, "three parts");
        for jpeg in &parts {
            assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "a JPEG starts with SOI");
            let f = decode(jpeg);
            assert_eq!((f.width(), f.height()), (160, 120));
            // The right half is the dark background, the left half the bright colour.
            let left = f.pixel(10, 60).unwrap();
            let right = f.pixel(150, 60).unwrap();
            assert!(left.iter().map(|&v| v as u32).sum::<u32>() > right.iter().map(|&v| v as u32).sum::<u32>() + 100);
        }
        // Consecutive parts are different frames (the colour changes with every publish).
        assert_ne!(parts[0], parts[1]);

        // The latest frame alone.
        let (status, headers, mut r) = get(addr, "/frame.jpg", "image/*");
        assert!(status.contains("200"), "{status}");
        assert_eq!(header(&headers, "content-type"), Some("image/jpeg"));
        assert!(header(&headers, "content-length").is_some(), "{headers:?}");
        let f = decode(&body(&headers, &mut r));
        assert_eq!((f.width(), f.height()), (160, 120));

        let c = view.counters();
        assert!(c.published >= 3 && c.encoded >= 3 && c.served >= 3, "{c:?}");
        assert_eq!(c.encode_errors, 0);
        assert_eq!(c.refused, 1, "the 404");
    });
}

#[test]
fn a_client_that_stops_reading_never_slows_the_publisher_and_shutdown_does_not_wait_for_it() {
    within(Duration::from_secs(60), || {
        let view = local_view(None);
        let addr = view.local_addr();
        // A viewer that asks for the stream and never reads a byte of it.
        let mut stuck = TcpStream::connect(addr).unwrap();
        write!(stuck, "GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        // A viewer that reads.
        let (_, _, mut live) = get(addr, "/stream.mjpg", "*/*");
        // Large frames, many of them: the stuck client's socket buffers fill after a few.
        let mut big = Frame::new(1280, 720, PixelFormat::Bgr8).unwrap();
        let started = Instant::now();
        let mut got = 0;
        for n in 0..120u32 {
            // Noise, so that JPEGs are large.
            let mut x = n.wrapping_mul(2_654_435_761);
            for b in big.data_mut().iter_mut().step_by(7) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = x as u8;
            }
            let t = Instant::now();
            view.publish(big.as_ref());
            // Publishing is a copy, never a wait on a client (generous bound for a loaded machine).
            assert!(t.elapsed() < Duration::from_secs(2), "publish took {:?}", t.elapsed());
            if n % 20 == 0 && next_part(&mut live).is_some() {
                got += 1;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(got >= 3, "the reading client kept getting frames ({got})");
        let c = view.counters();
        assert_eq!(c.clients, 2, "{c:?}");
        assert!(started.elapsed() < Duration::from_secs(50));
        // Shutdown returns although one client thread may be blocked writing to the stuck socket, and
        // the reading client sees its stream end.
        view.shutdown();
        let mut ended = false;
        for _ in 0..1000 {
            if next_part(&mut live).is_none() {
                ended = true;
                break;
            }
        }
        assert!(ended, "the stream ends at shutdown");
        drop(stuck);
    });
}

#[test]
fn max_fps_skips_frames_and_counts_them() {
    within(Duration::from_secs(30), || {
        let view = local_view(Some(5.0));
        let f = frame(1);
        for _ in 0..50 {
            view.publish(f.as_ref());
        }
        let c = view.counters();
        assert_eq!(c.published, 50);
        // 50 publishes in far less than 200 ms: the first is accepted, nearly all the rest skipped.
        assert!(c.throttled >= 40, "{c:?}");
    });
}

#[test]
fn too_many_viewers_are_refused_with_503() {
    within(Duration::from_secs(30), || {
        let opts = MjpegOptions { addr: "127.0.0.1:0".parse().unwrap(), max_clients: 1, ..Default::default() };
        let view = MjpegServer::start(&opts).unwrap();
        let addr = view.local_addr();
        let (status, _, _first) = get(addr, "/stream.mjpg", "*/*");
        assert!(status.contains("200"), "{status}");
        let (status, _, _) = get(addr, "/stream.mjpg", "*/*");
        assert!(status.contains("503"), "{status}");
        assert_eq!(view.counters().refused, 1);
    });
}
