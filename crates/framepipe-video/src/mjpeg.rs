//! The MJPEG view: a small HTTP server that streams frames to a browser as Motion JPEG
//! (`multipart/x-mixed-replace`), with a page that shows them next to live statistics.
//!
//! * `GET /`: the page for a browser (a request that accepts `text/html`), the MJPEG stream for
//!   anything else (`ffplay`, VLC, OpenCV, an `<img>` tag), so that the address alone works in both;
//! * `GET /stream.mjpg`: the MJPEG stream; `GET /index.html`: the page;
//! * `GET /frame.jpg`: the latest frame as one JPEG;
//! * `GET /stats`: the statistics JSON last given to [`MjpegServer::set_stats`]. The page polls it
//!   and shows `fps`, `latency_p50_ms`, `latency_p99_ms` and `dropped` as large figures and every
//!   other top-level key in a table.
//!
//! HTTP parsing is [`tiny_http`]'s; it is synchronous, like the rest of framepipe, and small. A
//! publisher never waits for a client: [`publish`](MjpegServer::publish) copies the frame into a
//! reused buffer and returns; one encoder thread turns the newest frame into a JPEG (at most
//! `max_fps` times a second); every stream client gets the newest JPEG when it is ready for one, so a
//! slow client skips frames and never slows the pipeline. Each stream client has a thread of its own
//! (at most `max_clients`).
//!
//! The server binds a loopback address unless told otherwise: serving camera images on the network
//! needs [`MjpegOptions::allow_remote`].

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use framepipe_vision::{Frame, FrameRef, PixelFormat};

/// The address the view binds by default.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";

/// The multipart boundary of the stream.
pub const BOUNDARY: &str = "framepipe-frame";

/// How often waiting threads look at the stop flag.
const TICK: Duration = Duration::from_millis(100);

/// How long `/frame.jpg` waits for a first frame before answering 503.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(3);

/// How to serve.
#[derive(Clone, Debug, PartialEq)]
pub struct MjpegOptions {
    /// Where to listen (default `127.0.0.1:8080`; port 0 picks a free port, see
    /// [`MjpegServer::local_addr`]).
    pub addr: SocketAddr,
    /// Allow a non-loopback address. Without it, binding one is refused: the view would show the
    /// camera to the whole network.
    pub allow_remote: bool,
    /// JPEG quality, 1–100 (default 80).
    pub quality: u8,
    /// Encode at most this many frames per second (default: every frame published). Set it to the
    /// camera's rate.
    pub max_fps: Option<f64>,
    /// Most stream clients at once (default 8); more are answered 503.
    pub max_clients: usize,
    /// The page's title.
    pub title: String,
}

impl Default for MjpegOptions {
    fn default() -> Self {
        MjpegOptions {
            addr: DEFAULT_ADDR.parse().expect("a valid address"),
            allow_remote: false,
            quality: 80,
            max_fps: None,
            max_clients: 8,
            title: "framepipe".into(),
        }
    }
}

/// Why the view could not start.
#[derive(Debug, thiserror::Error)]
pub enum MjpegError {
    /// A non-loopback address without [`MjpegOptions::allow_remote`].
    #[error(
        "refusing to serve on {addr}: it is not a loopback address, and the view would show the camera to the network; allow it explicitly (--allow-remote, serve.allow_remote = true) if that is what you want"
    )]
    NotLoopback {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The address could not be bound (in use, not local, no permission).
    #[error("cannot serve on {addr}: {reason}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// An option is out of range.
    #[error("invalid view option {name}: {reason}")]
    BadOption {
        /// The option.
        name: &'static str,
        /// Why.
        reason: String,
    },
    /// A thread could not be started.
    #[error("cannot start the view's {what} thread: {reason}")]
    Spawn {
        /// Which thread.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

/// Parses a listen address (`127.0.0.1:8080`, `[::1]:8080`, `localhost:8080`).
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.to_socket_addrs()
        .map_err(|e| format!("`{s}` is not an address (expected host:port, e.g. {DEFAULT_ADDR}): {e}"))?
        .next()
        .ok_or_else(|| format!("`{s}` resolves to no address"))
}

/// What the view has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ViewCounters {
    /// Frames given to [`publish`](MjpegServer::publish).
    pub published: u64,
    /// Of those, frames skipped by the `max_fps` cap.
    pub throttled: u64,
    /// Of those, frames replaced by a newer one before the encoder took them.
    pub replaced: u64,
    /// JPEGs made.
    pub encoded: u64,
    /// Frames the encoder failed on.
    pub encode_errors: u64,
    /// JPEGs written to stream clients (summed over clients).
    pub served: u64,
    /// Stream clients connected now.
    pub clients: usize,
    /// Requests refused (too many clients, unknown path, wrong method).
    pub refused: u64,
}

#[derive(Default)]
struct Atomics {
    published: AtomicU64,
    throttled: AtomicU64,
    replaced: AtomicU64,
    encoded: AtomicU64,
    encode_errors: AtomicU64,
    served: AtomicU64,
    clients: AtomicUsize,
    refused: AtomicU64,
}

struct State {
    /// The newest published frame, not yet encoded.
    pending: Option<Frame>,
    /// Buffers to copy published frames into (the encoder gives them back).
    spare: Vec<Frame>,
    /// The newest JPEG and its number (0: none yet).
    jpeg: Option<Arc<[u8]>>,
    jpeg_seq: u64,
    last_accept: Option<Instant>,
    stats: Arc<str>,
}

struct Shared {
    state: Mutex<State>,
    /// The encoder waits here for a frame.
    frame_ready: Condvar,
    /// Clients wait here for a JPEG.
    jpeg_ready: Condvar,
    stop: AtomicBool,
    counters: Atomics,
    page: String,
    min_period: Option<Duration>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// The running view. Dropping it stops it (see [`shutdown`](MjpegServer::shutdown)).
pub struct MjpegServer {
    shared: Arc<Shared>,
    server: Arc<tiny_http::Server>,
    addr: SocketAddr,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for MjpegServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MjpegServer").field("addr", &self.addr).finish()
    }
}

impl MjpegServer {
    /// Binds the address and starts the accept and encoder threads.
    pub fn start(options: &MjpegOptions) -> Result<Self, MjpegError> {
        let addr = options.addr;
        if !addr.ip().is_loopback() && !options.allow_remote {
            return Err(MjpegError::NotLoopback { addr });
        }
        if !(1..=100).contains(&options.quality) {
            return Err(MjpegError::BadOption {
                name: "quality",
                reason: format!("{} is not in 1..=100", options.quality),
            });
        }
        if options.max_clients == 0 {
            return Err(MjpegError::BadOption { name: "max_clients", reason: "must be at least 1".into() });
        }
        let min_period = match options.max_fps {
            None => None,
            Some(f) if f.is_finite() && f > 0.0 => Some(Duration::from_secs_f64(1.0 / f)),
            Some(f) => {
                return Err(MjpegError::BadOption { name: "max_fps", reason: format!("{f} is not a positive rate") })
            }
        };
        let server = tiny_http::Server::http(addr).map_err(|e| MjpegError::Bind { addr, reason: e.to_string() })?;
        let local = server.server_addr().to_ip().unwrap_or(addr);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                pending: None,
                spare: Vec::with_capacity(2),
                jpeg: None,
                jpeg_seq: 0,
                last_accept: None,
                stats: Arc::from("{}"),
            }),
            frame_ready: Condvar::new(),
            jpeg_ready: Condvar::new(),
            stop: AtomicBool::new(false),
            counters: Atomics::default(),
            page: page(&options.title),
            min_period,
        });
        let server = Arc::new(server);
        let mut view = MjpegServer { shared: shared.clone(), server: server.clone(), addr: local, threads: Vec::new() };
        let quality = i32::from(options.quality);
        let enc = shared.clone();
        let encoder = std::thread::Builder::new()
            .name("mjpeg-encode".into())
            .spawn(move || encode_loop(&enc, quality))
            .map_err(|e| MjpegError::Spawn { what: "encoder", reason: e.to_string() })?;
        view.threads.push(encoder);
        let max_clients = options.max_clients;
        let acc = shared;
        let accept = std::thread::Builder::new()
            .name("mjpeg-http".into())
            .spawn(move || accept_loop(&server, &acc, max_clients))
            .map_err(|e| MjpegError::Spawn { what: "accept", reason: e.to_string() })?;
        view.threads.push(accept);
        Ok(view)
    }

    /// The address it listens on (with the port picked, if port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The page's URL.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Offers a frame (BGR or gray). Copies it into a reused buffer and returns: never waits for the
    /// encoder or a client. A frame offered sooner than `1 / max_fps` after the last one accepted is
    /// skipped (and counted); one the encoder has not taken yet when the next arrives is replaced
    /// (and counted).
    pub fn publish(&self, frame: FrameRef<'_>) {
        let c = &self.shared.counters;
        c.published.fetch_add(1, Ordering::Relaxed);
        if !matches!(frame.format(), PixelFormat::Bgr8 | PixelFormat::Gray8) {
            c.encode_errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let now = Instant::now();
        let mut buf = {
            let mut st = self.shared.lock();
            if let (Some(p), Some(last)) = (self.shared.min_period, st.last_accept) {
                if now.saturating_duration_since(last) < p {
                    c.throttled.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            st.last_accept = Some(now);
            match st.pending.take() {
                Some(old) => {
                    c.replaced.fetch_add(1, Ordering::Relaxed);
                    old
                }
                None => match st.spare.pop() {
                    Some(b) => b,
                    None => match Frame::new(frame.width(), frame.height(), frame.format()) {
                        Ok(b) => b,
                        Err(_) => return,
                    },
                },
            }
        };
        if copy_frame(frame, &mut buf).is_err() {
            c.encode_errors.fetch_add(1, Ordering::Relaxed);
            self.shared.lock().spare.push(buf);
            return;
        }
        self.shared.lock().pending = Some(buf);
        self.shared.frame_ready.notify_one();
    }

    /// Replaces the statistics JSON served at `/stats` (the caller serializes it).
    pub fn set_stats(&self, json: impl Into<Arc<str>>) {
        self.shared.lock().stats = json.into();
    }

    /// The newest JPEG, if one was made.
    pub fn latest_jpeg(&self) -> Option<Arc<[u8]>> {
        self.shared.lock().jpeg.clone()
    }

    /// What the view has done so far.
    pub fn counters(&self) -> ViewCounters {
        let c = &self.shared.counters;
        ViewCounters {
            published: c.published.load(Ordering::Relaxed),
            throttled: c.throttled.load(Ordering::Relaxed),
            replaced: c.replaced.load(Ordering::Relaxed),
            encoded: c.encoded.load(Ordering::Relaxed),
            encode_errors: c.encode_errors.load(Ordering::Relaxed),
            served: c.served.load(Ordering::Relaxed),
            clients: c.clients.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting, ends every stream (clients see the stream end) and joins the server's own
    /// threads. A client thread blocked writing to a client that stopped reading is left to finish
    /// when that client goes away: it holds nothing the caller needs, and is never waited for.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.frame_ready.notify_all();
        self.shared.jpeg_ready.notify_all();
        self.server.unblock();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for MjpegServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Copies `src` into `dst`, reallocating `dst` only when the size or format changed.
fn copy_frame(src: FrameRef<'_>, dst: &mut Frame) -> Result<(), String> {
    if dst.width() != src.width() || dst.height() != src.height() || dst.format() != src.format() {
        *dst = Frame::new(src.width(), src.height(), src.format()).map_err(|e| e.to_string())?;
    }
    let row = src.width() * src.format().channels();
    let stride = dst.stride();
    let data = dst.data_mut();
    for y in 0..src.height() {
        let line = src.row(y).ok_or("row out of range")?;
        data[y * stride..y * stride + row].copy_from_slice(&line[..row]);
    }
    Ok(())
}

fn encode_loop(shared: &Shared, quality: i32) {
    let quality = quality.clamp(1, 100) as u8;
    let (mut buf, mut tight) = (Vec::new(), Vec::new());
    loop {
        let frame = {
            let mut st = shared.lock();
            loop {
                if shared.stopped() {
                    return;
                }
                if let Some(f) = st.pending.take() {
                    break f;
                }
                st = shared.frame_ready.wait_timeout(st, TICK).unwrap_or_else(|e| e.into_inner()).0;
            }
        };
        let ok = crate::native::writer::encode_jpeg(frame.as_ref(), quality, &mut tight, &mut buf).is_ok();
        // One allocation per JPEG: clients share it, each for as long as it takes to write it.
        let jpeg: Option<Arc<[u8]>> = ok.then(|| Arc::from(buf.as_slice()));
        let mut st = shared.lock();
        st.spare.push(frame);
        match jpeg {
            Some(j) => {
                st.jpeg = Some(j);
                st.jpeg_seq += 1;
                shared.counters.encoded.fetch_add(1, Ordering::Relaxed);
                drop(st);
                shared.jpeg_ready.notify_all();
            }
            None => {
                shared.counters.encode_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Route {
    Page,
    Stream,
    Frame,
    Stats,
    NotFound,
}

fn route(req: &tiny_http::Request) -> Route {
    let path = req.url().split(['?', '#']).next().unwrap_or("");
    match path {
        "/index.html" => Route::Page,
        "/stream.mjpg" | "/stream" => Route::Stream,
        "/frame.jpg" => Route::Frame,
        "/stats" => Route::Stats,
        "/" => {
            let wants_html = req
                .headers()
                .iter()
                .any(|h| h.field.equiv("Accept") && h.value.as_str().to_ascii_lowercase().contains("text/html"));
            if wants_html {
                Route::Page
            } else {
                Route::Stream
            }
        }
        _ => Route::NotFound,
    }
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("a valid ASCII header")
}

fn accept_loop(server: &tiny_http::Server, shared: &Arc<Shared>, max_clients: usize) {
    while !shared.stopped() {
        let req = match server.recv_timeout(TICK) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(_) => {
                if shared.stopped() {
                    break;
                }
                continue;
            }
        };
        if req.method() != &tiny_http::Method::Get && req.method() != &tiny_http::Method::Head {
            shared.counters.refused.fetch_add(1, Ordering::Relaxed);
            let _ = req.respond(tiny_http::Response::from_string("only GET\n").with_status_code(405));
            continue;
        }
        match route(&req) {
            Route::Page => {
                let r = tiny_http::Response::from_string(shared.page.clone())
                    .with_header(header("Content-Type", "text/html; charset=utf-8"))
                    .with_header(header("Cache-Control", "no-store"));
                let _ = req.respond(r);
            }
            Route::Stats => {
                let stats = shared.lock().stats.clone();
                let r = tiny_http::Response::from_string(stats.as_ref())
                    .with_header(header("Content-Type", "application/json"))
                    .with_header(header("Cache-Control", "no-store"));
                let _ = req.respond(r);
            }
            Route::Frame => {
                let snap = shared.clone();
                // Waiting for a first frame must not hold up the accept loop.
                let spawned = std::thread::Builder::new().name("mjpeg-frame".into()).spawn(move || {
                    let jpeg = wait_for_jpeg(&snap, 0, SNAPSHOT_WAIT).map(|(j, _)| j);
                    let _ = match jpeg {
                        Some(j) => req.respond(
                            tiny_http::Response::from_data(j.to_vec())
                                .with_header(header("Content-Type", "image/jpeg"))
                                .with_header(header("Cache-Control", "no-store"))
                                // A Content-Length, not chunks: the size is known.
                                .with_chunked_threshold(usize::MAX),
                        ),
                        None => req.respond(tiny_http::Response::from_string("no frame yet\n").with_status_code(503)),
                    };
                });
                if spawned.is_err() {
                    shared.counters.refused.fetch_add(1, Ordering::Relaxed);
                }
            }
            Route::Stream => {
                let c = &shared.counters;
                if c.clients.fetch_add(1, Ordering::SeqCst) >= max_clients {
                    c.clients.fetch_sub(1, Ordering::SeqCst);
                    c.refused.fetch_add(1, Ordering::Relaxed);
                    let _ = req.respond(
                        tiny_http::Response::from_string(format!("at most {max_clients} viewers\n"))
                            .with_status_code(503),
                    );
                    continue;
                }
                let client = shared.clone();
                let spawned = std::thread::Builder::new().name("mjpeg-client".into()).spawn(move || {
                    stream_to(&client, req);
                    client.counters.clients.fetch_sub(1, Ordering::SeqCst);
                });
                if spawned.is_err() {
                    c.clients.fetch_sub(1, Ordering::SeqCst);
                    c.refused.fetch_add(1, Ordering::Relaxed);
                }
            }
            Route::NotFound => {
                shared.counters.refused.fetch_add(1, Ordering::Relaxed);
                let _ = req.respond(
                    tiny_http::Response::from_string("not found: try /, /stream.mjpg, /frame.jpg or /stats\n")
                        .with_status_code(404),
                );
            }
        }
    }
}

/// Waits for a JPEG newer than `after`, or until `limit` passes or the view stops.
fn wait_for_jpeg(shared: &Shared, after: u64, limit: Duration) -> Option<(Arc<[u8]>, u64)> {
    let end = Instant::now() + limit;
    let mut st = shared.lock();
    loop {
        if st.jpeg_seq > after {
            if let Some(j) = &st.jpeg {
                return Some((j.clone(), st.jpeg_seq));
            }
        }
        let now = Instant::now();
        if shared.stopped() || now >= end {
            return None;
        }
        st = shared.jpeg_ready.wait_timeout(st, TICK.min(end - now)).unwrap_or_else(|e| e.into_inner()).0;
    }
}

/// Streams JPEGs to one client until it goes away or the view stops. The response head is written
/// here (tiny_http's `Response` buffers a streamed body and would hold each frame's tail back until
/// the next one); the request was parsed by tiny_http.
fn stream_to(shared: &Shared, req: tiny_http::Request) {
    let head_only = req.method() == &tiny_http::Method::Head;
    let mut w = req.into_writer();
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary={BOUNDARY}\r\nCache-Control: no-cache, no-store, must-revalidate\r\nPragma: no-cache\r\nConnection: close\r\n\r\n"
    );
    if w.write_all(head.as_bytes()).and_then(|_| w.flush()).is_err() || head_only {
        return;
    }
    let mut seen = 0u64;
    let mut part = Vec::with_capacity(128);
    while !shared.stopped() {
        let Some((jpeg, seq)) = wait_for_jpeg(shared, seen, Duration::from_secs(3600)) else {
            continue;
        };
        seen = seq;
        part.clear();
        let _ = write!(part, "--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n", jpeg.len());
        let sent = w
            .write_all(&part)
            .and_then(|_| w.write_all(&jpeg))
            .and_then(|_| w.write_all(b"\r\n"))
            .and_then(|_| w.flush());
        if sent.is_err() {
            return;
        }
        shared.counters.served.fetch_add(1, Ordering::Relaxed);
    }
    let _ = write!(w, "--{BOUNDARY}--\r\n");
    let _ = w.flush();
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn page(title: &str) -> String {
    PAGE.replace("{{TITLE}}", &html_escape(title))
}

/// The page: the stream, four large figures and a table of everything else in `/stats`.
const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{TITLE}}</title>
<style>
  body { margin: 0; font-family: system-ui, "DejaVu Sans", sans-serif; background: #16181c; color: #e8e8e8; }
  header { display: flex; align-items: baseline; gap: 1em; padding: 10px 16px; background: #202329; }
  header h1 { font-size: 18px; margin: 0; }
  #state { font-size: 14px; color: #9aa0a6; }
  main { display: flex; flex-wrap: wrap; gap: 16px; padding: 16px; }
  #view { max-width: 100%; width: 960px; background: #000; border-radius: 4px; }
  aside { min-width: 260px; }
  .tiles { display: grid; grid-template-columns: 1fr 1fr; gap: 8px; margin-bottom: 12px; }
  .tile { background: #202329; border-radius: 6px; padding: 8px 12px; }
  .tile .v { font-size: 28px; font-weight: 600; }
  .tile .k { font-size: 12px; color: #9aa0a6; }
  table { border-collapse: collapse; font-size: 13px; }
  td { padding: 2px 8px; border-bottom: 1px solid #2c3038; }
  td:first-child { color: #9aa0a6; }
</style>
</head>
<body data-frame="0">
<header><h1>{{TITLE}}</h1><span id="state">connecting…</span></header>
<main>
  <img id="view" src="/stream.mjpg" alt="annotated camera stream">
  <aside>
    <div class="tiles">
      <div class="tile"><div class="v" id="fps">–</div><div class="k">results / s</div></div>
      <div class="tile"><div class="v" id="drops">–</div><div class="k">frames dropped</div></div>
      <div class="tile"><div class="v" id="p50">–</div><div class="k">latency p50 (ms)</div></div>
      <div class="tile"><div class="v" id="p99">–</div><div class="k">latency p99 (ms)</div></div>
    </div>
    <table id="more"></table>
  </aside>
</main>
<script>
const $ = (id) => document.getElementById(id);
const img = $("view");
const shown = new Set(["fps", "latency_p50_ms", "latency_p99_ms", "dropped"]);
const fmt = (v, d) => (typeof v === "number" ? v.toFixed(d) : (v === null || v === undefined ? "–" : String(v)));
function sawFrame() { if (img.naturalWidth > 0) { document.body.dataset.frame = "1"; } }
img.addEventListener("load", sawFrame);
img.addEventListener("error", () => { setTimeout(() => { img.src = "/stream.mjpg?" + Date.now(); }, 1000); });
setInterval(sawFrame, 200);
async function poll() {
  try {
    const r = await fetch("/stats", { cache: "no-store" });
    const s = await r.json();
    $("fps").textContent = fmt(s.fps, 1);
    $("drops").textContent = fmt(s.dropped, 0);
    $("p50").textContent = fmt(s.latency_p50_ms, 0);
    $("p99").textContent = fmt(s.latency_p99_ms, 0);
    $("state").textContent = s.state ? String(s.state) : "live";
    const rows = [];
    for (const [k, v] of Object.entries(s)) {
      if (shown.has(k) || (typeof v === "object" && v !== null)) continue;
      rows.push("<tr><td>" + k + "</td><td>" + fmt(v, typeof v === "number" && !Number.isInteger(v) ? 2 : 0) + "</td></tr>");
    }
    $("more").innerHTML = rows.join("");
  } catch (e) {
    $("state").textContent = "stats unavailable";
  }
  setTimeout(poll, 500);
}
poll();
</script>
</body>
</html>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_the_page_names_its_parts() {
        assert_eq!(parse_addr("127.0.0.1:8080").unwrap().port(), 8080);
        assert!(parse_addr("localhost:81").unwrap().ip().is_loopback());
        assert!(parse_addr("nonsense").unwrap_err().contains("nonsense"));
        let p = page("cam <0>");
        assert!(p.contains("cam &lt;0&gt;") && p.contains("/stream.mjpg") && p.contains("/stats"));
    }

    #[test]
    fn remote_addresses_need_the_explicit_flag() {
        let opts = MjpegOptions { addr: "0.0.0.0:0".parse().unwrap(), ..Default::default() };
        let e = MjpegServer::start(&opts).unwrap_err();
        assert!(matches!(e, MjpegError::NotLoopback { .. }), "{e}");
        assert!(e.to_string().contains("--allow-remote"), "{e}");
        let bad = MjpegOptions { addr: "127.0.0.1:0".parse().unwrap(), quality: 0, ..Default::default() };
        assert!(MjpegServer::start(&bad).unwrap_err().to_string().contains("quality"));
    }
}
