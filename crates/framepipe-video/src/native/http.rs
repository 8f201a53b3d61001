//! HTTP multipart MJPEG streams: what IP cameras, `mjpg-streamer`, `ffmpeg -f mpjpeg` and our own
//! view ([`crate::mjpeg`]) serve, read with nothing but [`std::net::TcpStream`].
//!
//! What is supported:
//!
//! * `http://host[:port][/path][?query]` addresses (port 80 and path `/` by default), IPv6 literals
//!   (`http://[::1]:8080/`) and `user:password@` before the host, sent as HTTP Basic authentication
//!   (RFC 7617). There is no TLS: `https://` is refused as unsupported.
//! * One `GET` in HTTP/1.1 (RFC 9112) with `Connection: close`; up to 3 redirects (301, 302, 303,
//!   307, 308) to `http://` addresses, absolute or relative.
//! * A `multipart/x-mixed-replace` response (the multipart syntax of RFC 2046 §5.1): the boundary
//!   quoted or not, announced with or without the `--` that the delimiter lines add. Every part is a
//!   packet: exactly `Content-Length` bytes where the part's headers say, otherwise everything up to
//!   the next delimiter `CRLF--boundary` (also a bare `LF--boundary`, or `--boundary` right after a
//!   JPEG's end marker, for servers that leave out the CRLF). Parts whose `Content-Type` is not JPEG
//!   are skipped; a part without one is taken as JPEG. A closing delimiter `--boundary--`, or the
//!   end of the connection between parts, ends the stream.
//! * The body plain or in `Transfer-Encoding: chunked` (RFC 9112 §7.1), decoded on the fly.
//! * An `image/jpeg` response (a camera's snapshot address): one packet, then the end.
//!
//! Timeouts: `open_timeout` bounds the whole of [`HttpMjpeg::open`] (connecting, the request, the
//! response headers and the first part's headers, across redirects; resolving a host name is left
//! to the system's resolver and its own timeouts); afterwards every read waits at most
//! `read_timeout`. `None` waits as long as the system does. A read that times out is an
//! [`DemuxError::Io`] of kind `WouldBlock` or `TimedOut`, the `io::Error` as the system gave it.
//!
//! Everything the server sends is bounded: 64 KiB of response or part headers, 8 KiB a header
//! line, 64 MiB a part (and 64 MiB of bytes skipped looking for a boundary), a boundary of at most
//! 70 characters (RFC 2046). Whatever the server sends, the reader returns an error rather than
//! panicking or growing without end. Reading goes through one 64 KiB buffer; once the packet's
//! buffer has grown to the largest frame, reading a frame allocates nothing.

use std::io::{self, Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::{Codec, DemuxError, Demuxer, Packet, StreamInfo};

/// The size of the read buffer(s).
const BUF_SIZE: usize = 64 * 1024;
/// The most bytes of response headers, or of one part's headers.
const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// The most bytes of one header line (also a chunk-size line, and a boundary line).
const MAX_HEADER_LINE: usize = 8 * 1024;
/// The largest part (frame) accepted, and the most bytes skipped while looking for a boundary.
const MAX_PART: usize = 64 * 1024 * 1024;
/// The longest boundary RFC 2046 allows.
const MAX_BOUNDARY: usize = 70;
/// The most redirects followed.
const MAX_REDIRECTS: usize = 3;
/// The most interim (1xx) responses skipped before the real one.
const MAX_INTERIM: usize = 4;
/// The most parts in a row that are skipped (not JPEG, or empty) before giving up.
const MAX_SKIPPED_PARTS: usize = 100;
/// The JPEG end-of-image marker.
const JPEG_EOI: [u8; 2] = [0xFF, 0xD9];
/// The message for a connection that ends inside a part.
const ENDED_MID_FRAME: &str = "the stream ended in the middle of a frame";

/// A multipart MJPEG stream (or a single JPEG) read over HTTP.
pub(crate) struct HttpMjpeg {
    /// What the stream is (always `http-mjpeg`, MJPEG, size unknown).
    info: StreamInfo,
    /// The response body, buffered.
    input: Buffered<Body>,
    /// `--` and the boundary: what starts every delimiter line.
    delimiter: Vec<u8>,
    /// Whether the announced boundary started with `--` itself (so the delimiter lines may read
    /// `----boundary`).
    dashed: bool,
    /// Where in the stream the reader is.
    state: State,
}

/// Where in the response body the reader is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before the next delimiter line.
    Boundary,
    /// After a part's headers: its body comes next.
    Part {
        /// The part's `Content-Length`.
        length: Option<usize>,
        /// Whether the part is a JPEG (by its `Content-Type`).
        jpeg: bool,
    },
    /// A single-image response whose body has not been read yet.
    Snapshot {
        /// The response's `Content-Length`.
        length: Option<usize>,
    },
    /// The stream has ended.
    Done,
}

/// What a part's headers say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PartMeta {
    /// `Content-Length`, checked against [`MAX_PART`].
    length: Option<usize>,
    /// Whether `Content-Type` is JPEG (or absent).
    jpeg: bool,
}

impl HttpMjpeg {
    /// Connects to `url`, sends the request, follows redirects and reads the response headers (and,
    /// for a multipart stream, the first part's headers), all within `open_timeout`; later reads
    /// wait at most `read_timeout` each. `None` leaves the waits to the system.
    pub(crate) fn open(
        url: &str,
        open_timeout: Option<Duration>,
        read_timeout: Option<Duration>,
    ) -> Result<Self, DemuxError> {
        let deadline = open_timeout.map(|t| Instant::now() + t);
        let mut target = Url::parse(url)?;
        let mut redirects = 0;
        let (raw, head) = loop {
            let mut raw = Buffered::new(connect(&target, deadline)?);
            raw.inner.stream.write_all(target.request().as_bytes())?;
            let mut head = read_head(&mut raw)?;
            // Interim responses (1xx) come before the real one on the same connection.
            let mut interim = 0;
            while (100..=199).contains(&head.status) {
                interim += 1;
                if interim > MAX_INTERIM {
                    return Err(DemuxError::Malformed(format!(
                        "only interim responses (HTTP {}) from {}",
                        head.status,
                        target.display()
                    )));
                }
                head = read_head(&mut raw)?;
            }
            if !is_redirect(head.status) {
                break (raw, head);
            }
            redirects += 1;
            target = redirect(&target, &head, redirects)?;
        };
        if head.status != 200 {
            return Err(DemuxError::Malformed(format!(
                "HTTP {} {} from {}",
                head.status,
                head.reason,
                target.display()
            )));
        }
        let chunked = transfer_chunked(&head)?;
        let mut input = if chunked {
            Buffered::new(Body::Chunked(Chunked { inner: raw, left: 0, state: ChunkState::Size }))
        } else {
            raw.map_inner(Body::Plain)
        };
        let (mut media, mut boundary) = match head.get("content-type") {
            Some(ct) => parse_content_type(ct),
            None => (String::new(), None),
        };
        if media.is_empty() || media == "application/octet-stream" {
            // Servers that do not say (ffmpeg's `-listen` HTTP server sends octet-stream): what the
            // body starts with tells a multipart stream (`--boundary`) from one JPEG.
            match sniff_body(&mut input)? {
                Some(Sniffed::Multipart(b)) => {
                    media = "multipart/x-mixed-replace".into();
                    boundary = Some(b);
                }
                Some(Sniffed::Jpeg) => media = "image/jpeg".into(),
                None if media.is_empty() => {
                    return Err(DemuxError::Unsupported {
                        codec: format!("a response without a Content-Type from {}", target.display()),
                    })
                }
                None => return Err(DemuxError::Unsupported { codec: media }),
            }
        }
        let state;
        let mut delimiter = Vec::new();
        let mut dashed = false;
        if media == "multipart/x-mixed-replace" {
            let boundary = boundary.ok_or_else(|| {
                DemuxError::Malformed(format!("multipart/x-mixed-replace without a boundary from {}", target.display()))
            })?;
            let (b, d) = check_boundary(&boundary)?;
            dashed = d;
            delimiter.extend_from_slice(b"--");
            delimiter.extend_from_slice(b.as_bytes());
            state = State::Boundary;
        } else if is_jpeg_type(media.as_bytes()) {
            // With chunks, a Content-Length is to be ignored (RFC 9112 §6.3).
            let length = match head.get_all("content-length") {
                Some(v) if !chunked => Some(parse_length(v.as_bytes())?),
                _ => None,
            };
            state = State::Snapshot { length };
        } else {
            return Err(DemuxError::Unsupported { codec: media });
        }
        let mut demuxer = HttpMjpeg {
            info: StreamInfo {
                container: "http-mjpeg",
                codec: Codec::Mjpeg,
                width: 0,
                height: 0,
                fps: None,
                frames: None,
                parameter_sets: Vec::new(),
            },
            input,
            delimiter,
            dashed,
            state,
        };
        if demuxer.state == State::Boundary {
            demuxer.next_part()?;
        }
        let conn = demuxer.input.inner.conn_mut();
        conn.deadline = None;
        conn.stream.set_read_timeout(read_timeout.map(at_least_1ms))?;
        conn.stream.set_write_timeout(None)?;
        Ok(demuxer)
    }

    /// Reads up to the next part's body: finds the delimiter line, then reads the part's headers.
    /// Sets the state to [`State::Part`], or to [`State::Done`] at the end of the stream.
    fn next_part(&mut self) -> Result<(), DemuxError> {
        self.state = match self.read_part_headers()? {
            Some(meta) => State::Part { length: meta.length, jpeg: meta.jpeg },
            None => State::Done,
        };
        Ok(())
    }

    /// Finds the next delimiter line and reads the headers after it; `None` at the end of the
    /// stream (a closing delimiter, or the connection closed between parts).
    fn read_part_headers(&mut self) -> Result<Option<PartMeta>, DemuxError> {
        if !self.skip_to_delimiter()? {
            return Ok(None);
        }
        // `--boundary--` closes the stream; anything else up to the line's end is padding.
        while self.input.available().len() < 2 {
            if self.input.fill_more().map_err(from_io)? == 0 {
                return Ok(None);
            }
        }
        if self.input.available().starts_with(b"--") {
            return Ok(None);
        }
        match self.input.line_len(MAX_HEADER_LINE).map_err(from_io)? {
            Some(n) => self.input.consume(n),
            None => return Ok(None),
        }
        let mut meta = PartMeta { length: None, jpeg: true };
        let mut total = 0;
        loop {
            let Some(n) = self.input.line_len(MAX_HEADER_LINE).map_err(from_io)? else {
                if total == 0 && self.input.available().is_empty() {
                    return Ok(None);
                }
                return Err(DemuxError::Malformed(ENDED_MID_FRAME.into()));
            };
            let line = trim_eol(&self.input.available()[..n]);
            if line.is_empty() {
                self.input.consume(n);
                return Ok(Some(meta));
            }
            total += n;
            if total > MAX_HEADER_BLOCK {
                return Err(DemuxError::Malformed(format!(
                    "a part's headers are over {} KiB",
                    MAX_HEADER_BLOCK / 1024
                )));
            }
            part_header(line, &mut meta)?;
            self.input.consume(n);
        }
    }

    /// Discards bytes up to and including the next `--boundary`; `false` if the stream ends first.
    fn skip_to_delimiter(&mut self) -> Result<bool, DemuxError> {
        let mut skipped = 0usize;
        loop {
            let avail = self.input.available();
            if let Some(i) = find(avail, &self.delimiter) {
                self.input.consume(i + self.delimiter.len());
                return Ok(true);
            }
            let drop = avail.len().saturating_sub(self.delimiter.len() - 1);
            skipped += drop;
            if skipped > MAX_PART {
                return Err(DemuxError::Malformed(format!(
                    "no boundary `{}` in {} MiB of the stream",
                    String::from_utf8_lossy(&self.delimiter),
                    MAX_PART >> 20
                )));
            }
            self.input.consume(drop);
            if self.input.fill_more().map_err(from_io)? == 0 {
                return Ok(false);
            }
        }
    }

    /// Reads a part's body into `out` (cleared first): `length` bytes, or up to the next delimiter.
    fn read_part_body(&mut self, length: Option<usize>, out: &mut Vec<u8>) -> Result<(), DemuxError> {
        out.clear();
        match length {
            Some(n) => {
                if !self.input.read_exact_into(out, n).map_err(from_io)? {
                    return Err(DemuxError::Malformed(ENDED_MID_FRAME.into()));
                }
                Ok(())
            }
            None => self.read_until_delimiter(out),
        }
    }

    /// Appends the bytes up to the next delimiter to `out`, leaving the delimiter in the buffer.
    fn read_until_delimiter(&mut self, out: &mut Vec<u8>) -> Result<(), DemuxError> {
        let needle_len = self.delimiter.len();
        let mut from = 0;
        loop {
            let avail = self.input.available();
            if let Some(i) = find(&avail[from..], &self.delimiter).map(|p| p + from) {
                check_part_size(out.len() + i)?;
                out.extend_from_slice(&avail[..i]);
                self.input.consume(i);
                if delimiter_ends_body(out, self.dashed) {
                    return Ok(());
                }
                // `--boundary` inside the body, not after a line break: part of the body.
                from = 1;
                continue;
            }
            let emit = avail.len().saturating_sub(needle_len - 1);
            check_part_size(out.len() + emit)?;
            out.extend_from_slice(&avail[..emit]);
            self.input.consume(emit);
            from = 0;
            if self.input.fill_more().map_err(from_io)? == 0 {
                return Err(DemuxError::Malformed(ENDED_MID_FRAME.into()));
            }
        }
    }

    /// Reads a single-image response's body into `out`.
    fn read_snapshot(&mut self, length: Option<usize>, out: &mut Vec<u8>) -> Result<(), DemuxError> {
        out.clear();
        match length {
            Some(n) => {
                if !self.input.read_exact_into(out, n).map_err(from_io)? {
                    return Err(DemuxError::Malformed(ENDED_MID_FRAME.into()));
                }
            }
            None => loop {
                let avail = self.input.available();
                check_part_size(out.len() + avail.len())?;
                out.extend_from_slice(avail);
                let n = avail.len();
                self.input.consume(n);
                if self.input.fill_more().map_err(from_io)? == 0 {
                    break;
                }
            },
        }
        if out.is_empty() {
            return Err(DemuxError::Malformed("the server sent an empty image".into()));
        }
        Ok(())
    }
}

impl Demuxer for HttpMjpeg {
    fn info(&self) -> &StreamInfo {
        &self.info
    }

    /// Reads the next JPEG part. After an error (a timeout, say) the next call starts over at the
    /// next delimiter, so the part that was being read is lost.
    fn read_packet(&mut self, packet: &mut Packet) -> Result<bool, DemuxError> {
        packet.data.clear();
        packet.pts = None;
        packet.key = true;
        let mut skipped = 0;
        loop {
            match self.state {
                State::Done => return Ok(false),
                State::Snapshot { length } => {
                    self.state = State::Done;
                    self.read_snapshot(length, &mut packet.data)?;
                    return Ok(true);
                }
                State::Boundary => self.next_part()?,
                State::Part { length, jpeg } => {
                    self.state = State::Boundary;
                    self.read_part_body(length, &mut packet.data)?;
                    if jpeg && !packet.data.is_empty() {
                        return Ok(true);
                    }
                    packet.data.clear();
                    skipped += 1;
                    if skipped > MAX_SKIPPED_PARTS {
                        return Err(DemuxError::Malformed(format!(
                            "{MAX_SKIPPED_PARTS} parts in a row that are not JPEG images"
                        )));
                    }
                }
            }
        }
    }
}

/// Whether the bytes in `out` before a `--boundary` end a part (a line break, a JPEG's end, or an
/// empty body before it), and if so drops the line break from `out`.
fn delimiter_ends_body(out: &mut Vec<u8>, dashed: bool) -> bool {
    let mut len = out.len();
    let ends = |b: &[u8]| b.is_empty() || b.ends_with(b"\n") || b.ends_with(&JPEG_EOI);
    // An announced `--b` may be written `----b`: the `--` in front belongs to the delimiter.
    if dashed && out.ends_with(b"--") && ends(&out[..len - 2]) {
        len -= 2;
    }
    let body = &out[..len];
    let cut = if body.ends_with(b"\r\n") {
        len - 2
    } else if body.ends_with(b"\n") {
        len - 1
    } else if body.is_empty() || body.ends_with(&JPEG_EOI) {
        len
    } else {
        return false;
    };
    out.truncate(cut);
    true
}

/// A part of `n` bytes, or an error if that is over [`MAX_PART`].
fn check_part_size(n: usize) -> Result<(), DemuxError> {
    if n > MAX_PART {
        return Err(DemuxError::Malformed(format!("a frame over {} MiB", MAX_PART >> 20)));
    }
    Ok(())
}

/// Reads one part header line (without its line end) into `meta`.
fn part_header(line: &[u8], meta: &mut PartMeta) -> Result<(), DemuxError> {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return Ok(()); // not a header; ignored
    };
    let name = trim(&line[..colon]);
    let value = trim(&line[colon + 1..]);
    if name.eq_ignore_ascii_case(b"content-type") {
        let media = value.split(|&b| b == b';').next().unwrap_or_default();
        meta.jpeg = is_jpeg_type(trim(media));
    } else if name.eq_ignore_ascii_case(b"content-length") {
        let n = parse_length(value)?;
        if meta.length.is_some_and(|m| m != n) {
            return Err(DemuxError::Malformed("a part with two different Content-Lengths".into()));
        }
        meta.length = Some(n);
    }
    Ok(())
}

/// Whether a media type (without parameters) is JPEG.
fn is_jpeg_type(media: &[u8]) -> bool {
    [&b"image/jpeg"[..], b"image/jpg", b"image/pjpeg"].iter().any(|t| media.eq_ignore_ascii_case(t))
}

/// A `Content-Length` value: decimal digits (a list of equal values is allowed, RFC 9110 §8.6), at
/// most [`MAX_PART`].
fn parse_length(value: &[u8]) -> Result<usize, DemuxError> {
    let bad = || {
        DemuxError::Malformed(format!(
            "a Content-Length of `{}`",
            String::from_utf8_lossy(&value[..value.len().min(40)])
        ))
    };
    let mut result = None;
    for item in value.split(|&b| b == b',') {
        let item = trim(item);
        if item.is_empty() || !item.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        let mut n: u64 = 0;
        for &d in item {
            n = n.checked_mul(10).and_then(|n| n.checked_add(u64::from(d - b'0'))).ok_or_else(bad)?;
        }
        if n > MAX_PART as u64 {
            return Err(DemuxError::Malformed(format!("a frame of {n} bytes, over {} MiB", MAX_PART >> 20)));
        }
        let n = n as usize;
        if result.is_some_and(|r| r != n) {
            return Err(bad());
        }
        result = Some(n);
    }
    result.ok_or_else(bad)
}

/// Checks a boundary parameter and takes off a leading `--`; returns it and whether it had one.
fn check_boundary(boundary: &str) -> Result<(&str, bool), DemuxError> {
    let (b, dashed) = match boundary.strip_prefix("--") {
        Some(rest) if !rest.is_empty() => (rest, true),
        _ => (boundary, false),
    };
    if b.is_empty() {
        return Err(DemuxError::Malformed("an empty multipart boundary".into()));
    }
    if b.len() > MAX_BOUNDARY {
        return Err(DemuxError::Malformed(format!(
            "a multipart boundary of {} characters (RFC 2046 allows {MAX_BOUNDARY})",
            b.len()
        )));
    }
    if b.bytes().any(|c| !(0x20..0x7F).contains(&c)) {
        return Err(DemuxError::Malformed("a multipart boundary with characters RFC 2046 does not allow".into()));
    }
    Ok((b, dashed))
}

/// Splits a `Content-Type` value into its media type (lower case, without parameters) and its
/// `boundary` parameter (unquoted), if any.
fn parse_content_type(value: &str) -> (String, Option<String>) {
    let (media, mut rest) = match value.find(';') {
        Some(i) => (&value[..i], &value[i + 1..]),
        None => (value, ""),
    };
    let media = media.trim().to_ascii_lowercase();
    let mut boundary = None;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ';']);
        if rest.is_empty() {
            break;
        }
        let name_end = rest.find(['=', ';']).unwrap_or(rest.len());
        let name = rest[..name_end].trim();
        rest = &rest[name_end..];
        let mut param = String::new();
        if let Some(after) = rest.strip_prefix('=') {
            let after = after.trim_start();
            if let Some(quoted) = after.strip_prefix('"') {
                // A quoted string, with `\` escapes (RFC 9110 §5.6.4).
                let mut chars = quoted.char_indices();
                let mut end = quoted.len();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '"' => {
                            end = i + 1;
                            break;
                        }
                        '\\' => {
                            if let Some((_, e)) = chars.next() {
                                param.push(e);
                            }
                        }
                        c => param.push(c),
                    }
                }
                rest = &quoted[end.min(quoted.len())..];
            } else {
                let end = after.find(';').unwrap_or(after.len());
                param.push_str(after[..end].trim());
                rest = &after[end..];
            }
        }
        if boundary.is_none() && name.eq_ignore_ascii_case("boundary") {
            boundary = Some(param);
        }
    }
    (media, boundary)
}

/// Whether the response body is chunked; an error for other transfer codings.
fn transfer_chunked(head: &Head) -> Result<bool, DemuxError> {
    let Some(te) = head.get_all("transfer-encoding") else {
        return Ok(false);
    };
    let codings: Vec<String> =
        te.split(',').map(|c| c.trim().to_ascii_lowercase()).filter(|c| !c.is_empty() && c != "identity").collect();
    match codings.as_slice() {
        [] => Ok(false),
        [c] if c == "chunked" => Ok(true),
        _ => Err(DemuxError::Unsupported { codec: format!("Transfer-Encoding: {}", te.trim()) }),
    }
}

/// Whether a status code is a redirect that is followed.
fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

/// Where a redirect response points; the `redirects`-th redirect.
fn redirect(from: &Url, head: &Head, redirects: usize) -> Result<Url, DemuxError> {
    if redirects > MAX_REDIRECTS {
        return Err(DemuxError::Malformed(format!(
            "more than {MAX_REDIRECTS} redirects, the last from {}",
            from.display()
        )));
    }
    let location = head.get("location").ok_or_else(|| {
        DemuxError::Malformed(format!(
            "HTTP {} {} without a Location from {}",
            head.status,
            head.reason,
            from.display()
        ))
    })?;
    from.resolve(location)
}

/// A response's status line and headers.
#[derive(Debug)]
struct Head {
    /// The status code.
    status: u16,
    /// The reason phrase.
    reason: String,
    /// The header fields: names in lower case, values trimmed.
    headers: Vec<(String, String)>,
}

impl Head {
    /// The first value of a header (`name` in lower case).
    fn get(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// All the values of a header joined with `,` (`name` in lower case).
    fn get_all(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect();
        (!values.is_empty()).then(|| values.join(","))
    }
}

/// Reads a response's status line and headers.
fn read_head(input: &mut Buffered<Conn>) -> Result<Head, DemuxError> {
    let mut total = 0;
    let mut status_line: Option<(u16, String)> = None;
    let mut headers = Vec::new();
    loop {
        let Some(n) = input.line_len(MAX_HEADER_LINE).map_err(from_io)? else {
            return Err(DemuxError::Malformed("the connection closed before the end of the response headers".into()));
        };
        total += n;
        if total > MAX_HEADER_BLOCK {
            return Err(DemuxError::Malformed(format!("response headers over {} KiB", MAX_HEADER_BLOCK / 1024)));
        }
        let text = String::from_utf8_lossy(trim_eol(&input.available()[..n])).into_owned();
        input.consume(n);
        match &status_line {
            // Empty lines before the status line are tolerated (RFC 9112 §2.2).
            None if text.trim().is_empty() => {}
            None => status_line = Some(parse_status_line(&text)?),
            Some(_) if text.is_empty() => break,
            Some(_) => {
                // Lines without a colon, and obsolete folded lines, are ignored.
                if let (Some(colon), false) = (text.find(':'), text.starts_with([' ', '\t'])) {
                    let name = text[..colon].trim().to_ascii_lowercase();
                    let value = text[colon + 1..].trim().to_string();
                    headers.push((name, value));
                }
            }
        }
    }
    let (status, reason) = status_line.unwrap_or_default();
    Ok(Head { status, reason, headers })
}

/// Reads `HTTP/1.1 200 OK` into the status code and reason phrase.
fn parse_status_line(line: &str) -> Result<(u16, String), DemuxError> {
    let not_http = || {
        let shown: String = line.chars().take(60).collect();
        DemuxError::Malformed(format!("not an HTTP response: `{}`", shown.escape_default()))
    };
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/") || code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(not_http());
    }
    let status = code.parse().map_err(|_| not_http())?;
    Ok((status, parts.next().unwrap_or_default().trim().to_string()))
}

/// A parsed `http://` address.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Url {
    /// The host name or address (an IPv6 address without its brackets).
    host: String,
    /// The port.
    port: u16,
    /// The path and query, as sent in the request line (percent-encoded where needed).
    target: String,
    /// `user:password`, base64-encoded for the `Authorization` header.
    auth: Option<String>,
}

impl Url {
    /// Parses `http://[user:pass@]host[:port][/path][?query][#fragment]`.
    fn parse(url: &str) -> Result<Url, DemuxError> {
        let url = url.trim();
        let bytes = url.as_bytes();
        // The scheme is ASCII, so the byte after it starts a character.
        let rest = if bytes.len() >= 7 && bytes[..7].eq_ignore_ascii_case(b"http://") {
            &url[7..]
        } else if bytes.len() >= 8 && bytes[..8].eq_ignore_ascii_case(b"https://") {
            return Err(DemuxError::Unsupported { codec: "https (TLS)".into() });
        } else {
            let scheme = url.find("://").map(|i| &url[..i]).unwrap_or("no scheme");
            return Err(DemuxError::Malformed(format!(
                "not an http:// address ({}), for a multipart MJPEG stream",
                scheme.escape_default()
            )));
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
            let close = bracketed
                .find(']')
                .ok_or_else(|| DemuxError::Malformed("an IPv6 address without its closing `]`".into()))?;
            let host = &bracketed[..close];
            if host.parse::<Ipv6Addr>().is_err() {
                return Err(DemuxError::Malformed(format!("`[{}]` is not an IPv6 address", host.escape_default())));
            }
            let after = &bracketed[close + 1..];
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => {
                    return Err(DemuxError::Malformed(format!("`{}` after the IPv6 address", after.escape_default())))
                }
            };
            (host, port)
        } else {
            match hostport.split_once(':') {
                Some((_, p)) if p.contains(':') => {
                    return Err(DemuxError::Malformed("an IPv6 address must be written in brackets: [::1]".into()))
                }
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(DemuxError::Malformed("no host in the address".into()));
        }
        if host.bytes().any(|b| b <= b' ' || b == 0x7F) {
            return Err(DemuxError::Malformed(format!("`{}` is not a host name", host.escape_default())));
        }
        let port = match port {
            None | Some("") => 80,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => {
                    return Err(DemuxError::Malformed(format!(
                        "the port `{}` is not a number from 1 to 65535",
                        p.escape_default()
                    )))
                }
            },
        };
        let auth = userinfo.map(|u| {
            let mut credentials = percent_decode(u);
            if !credentials.contains(&b':') {
                credentials.push(b':');
            }
            base64(&credentials)
        });
        Ok(Url { host: host.to_string(), port, target: request_target(tail), auth })
    }

    /// The address a `Location` header points to, relative to this one.
    fn resolve(&self, location: &str) -> Result<Url, DemuxError> {
        let location = location.trim();
        let lower = location.to_ascii_lowercase();
        let mut url = if lower.starts_with("http://") || lower.starts_with("https://") {
            Url::parse(location)?
        } else if location.starts_with("//") {
            Url::parse(&format!("http:{location}"))?
        } else if lower.find("://").is_some_and(|i| lower[..i].bytes().all(|b| b.is_ascii_alphanumeric())) {
            return Err(DemuxError::Malformed(format!(
                "a redirect from {} to `{}`, not an http:// address",
                self.display(),
                location.escape_default()
            )));
        } else if location.starts_with('/') {
            Url { target: request_target(location), ..self.clone() }
        } else {
            let path = self.target.split('?').next().unwrap_or("/");
            let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
            Url { target: request_target(&format!("{dir}{location}")), ..self.clone() }
        };
        if url.auth.is_none() && url.host.eq_ignore_ascii_case(&self.host) && url.port == self.port {
            url.auth.clone_from(&self.auth);
        }
        Ok(url)
    }

    /// `host[:port]` as in the `Host` header (the port left out when it is 80).
    fn host_header(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.port == 80 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The address for messages, without credentials.
    fn display(&self) -> String {
        format!("http://{}{}", self.host_header(), self.target)
    }

    /// The request.
    fn request(&self) -> String {
        let mut r = format!("GET {} HTTP/1.1\r\nHost: {}\r\n", self.target, self.host_header());
        if let Some(auth) = &self.auth {
            r.push_str("Authorization: Basic ");
            r.push_str(auth);
            r.push_str("\r\n");
        }
        r.push_str(
            "Accept: multipart/x-mixed-replace, image/jpeg\r\nUser-Agent: framepipe\r\nConnection: close\r\n\r\n",
        );
        r
    }
}

/// The request target from what follows the authority: `/` for nothing, the fragment dropped,
/// bytes that cannot go into a request line percent-encoded.
fn request_target(tail: &str) -> String {
    let tail = tail.split('#').next().unwrap_or_default();
    let mut target = String::with_capacity(tail.len() + 1);
    if !tail.starts_with('/') {
        target.push('/');
    }
    for b in tail.bytes() {
        if b <= b' ' || b >= 0x7F {
            target.push_str(&format!("%{b:02X}"));
        } else {
            target.push(char::from(b));
        }
    }
    target
}

/// Decodes `%XX` escapes (others are kept as they are).
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex_digit(b[i + 1]), hex_digit(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The value of a hexadecimal digit.
fn hex_digit(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

/// Standard base64 with padding (RFC 4648 §4).
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let n = u32::from(chunk[0]) << 16 | u32::from(b1) << 8 | u32::from(b2);
        let sextet = |shift: u32| char::from(ALPHABET[(n >> shift & 63) as usize]);
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if chunk.len() > 1 { sextet(6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(0) } else { '=' });
    }
    out
}

/// Resolves the host and connects to the first address that answers, before `deadline`.
fn connect(url: &Url, deadline: Option<Instant>) -> Result<Conn, DemuxError> {
    let addrs: Vec<SocketAddr> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| io::Error::new(e.kind(), format!("resolving {}: {e}", url.host)))?
        .collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("no address for {}", url.host));
    for addr in addrs {
        let attempt = match remaining(deadline) {
            Some(Ok(left)) => TcpStream::connect_timeout(&addr, left),
            Some(Err(e)) => Err(e),
            None => TcpStream::connect(addr),
        };
        match attempt {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                if let Some(left) = remaining(deadline).transpose()? {
                    stream.set_write_timeout(Some(left))?;
                }
                return Ok(Conn { stream, deadline });
            }
            Err(e) => last = io::Error::new(e.kind(), format!("connecting to {addr}: {e}")),
        }
    }
    Err(DemuxError::Io(last))
}

/// The time left before `deadline` (`None` without one), a `TimedOut` error once it has passed.
fn remaining(deadline: Option<Instant>) -> Option<io::Result<Duration>> {
    let deadline = deadline?;
    let left = deadline.saturating_duration_since(Instant::now());
    Some(if left.is_zero() {
        Err(io::Error::new(io::ErrorKind::TimedOut, "timed out opening the stream"))
    } else {
        Ok(at_least_1ms(left))
    })
}

/// A timeout of at least 1 ms (a zero timeout is an error for the socket calls).
fn at_least_1ms(t: Duration) -> Duration {
    t.max(Duration::from_millis(1))
}

/// An I/O error as a demux error: malformed chunks and over-long lines (`InvalidData`, ours) become
/// [`DemuxError::Malformed`]; the rest stay as they are.
fn from_io(e: io::Error) -> DemuxError {
    if e.kind() == io::ErrorKind::InvalidData {
        DemuxError::Malformed(e.to_string())
    } else {
        DemuxError::Io(e)
    }
}

/// An `InvalidData` error with a message.
fn invalid_data(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

/// The position of `needle` in `hay`: the needle's first byte found with a scan, the rest
/// compared.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let last_start = hay.len().checked_sub(needle.len())?;
    let mut i = 0;
    while i <= last_start {
        let j = i + hay[i..=last_start].iter().position(|&b| b == first)?;
        if hay[j + 1..j + needle.len()] == *rest {
            return Some(j);
        }
        i = j + 1;
    }
    None
}

/// A line without its `\n` or `\r\n`.
fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Bytes without leading and trailing spaces and tabs.
fn trim(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|&c| c != b' ' && c != b'\t').unwrap_or(b.len());
    let end = b.iter().rposition(|&c| c != b' ' && c != b'\t').map_or(start, |i| i + 1);
    &b[start..end.max(start)]
}

/// The connection, with the deadline of the open while it lasts.
struct Conn {
    /// The socket.
    stream: TcpStream,
    /// While opening: when the open must be done. Each read then waits at most the time left.
    deadline: Option<Instant>,
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(left) = remaining(self.deadline).transpose()? {
            self.stream.set_read_timeout(Some(left))?;
        }
        self.stream.read(buf)
    }
}

/// The response body: the connection's bytes as they come, or chunks decoded.
enum Body {
    /// Not chunked.
    Plain(Conn),
    /// `Transfer-Encoding: chunked`.
    Chunked(Chunked),
}

impl Body {
    /// The connection underneath.
    fn conn_mut(&mut self) -> &mut Conn {
        match self {
            Body::Plain(c) => c,
            Body::Chunked(c) => &mut c.inner.inner,
        }
    }
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Body::Plain(c) => c.read(buf),
            Body::Chunked(c) => c.read(buf),
        }
    }
}

/// Decodes a chunked body (RFC 9112 §7.1). The end of the connection ends the body wherever it
/// comes (the multipart reader then says whether that was inside a frame); a chunk-size line that
/// is not one is an `InvalidData` error.
struct Chunked {
    /// The connection, buffered.
    inner: Buffered<Conn>,
    /// Bytes left in the current chunk.
    left: u64,
    /// Where in the chunk syntax the decoder is.
    state: ChunkState,
}

/// Where in the chunk syntax the decoder is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data.
    Data,
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk, in the trailer fields (this many bytes so far).
    Trailers(usize),
    /// The body has ended.
    Done,
}

impl Read for Chunked {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            match self.state {
                ChunkState::Done => return Ok(0),
                ChunkState::Size => {
                    let Some(n) = self.inner.line_len(MAX_HEADER_LINE)? else {
                        self.state = ChunkState::Done;
                        continue;
                    };
                    let size = parse_chunk_size(trim_eol(&self.inner.available()[..n]))?;
                    self.inner.consume(n);
                    if size == 0 {
                        self.state = ChunkState::Trailers(0);
                    } else {
                        self.left = size;
                        self.state = ChunkState::Data;
                    }
                }
                ChunkState::Data => {
                    if self.inner.available().is_empty() && self.inner.fill_more()? == 0 {
                        self.state = ChunkState::Done;
                        continue;
                    }
                    let avail = self.inner.available();
                    let k = avail.len().min(out.len()).min(usize::try_from(self.left).unwrap_or(usize::MAX));
                    out[..k].copy_from_slice(&avail[..k]);
                    self.inner.consume(k);
                    self.left -= k as u64;
                    if self.left == 0 {
                        self.state = ChunkState::DataEnd;
                    }
                    return Ok(k);
                }
                ChunkState::DataEnd => {
                    let Some(n) = self.inner.line_len(MAX_HEADER_LINE)? else {
                        self.state = ChunkState::Done;
                        continue;
                    };
                    if !trim_eol(&self.inner.available()[..n]).is_empty() {
                        return Err(invalid_data("a chunked body without the line end after a chunk"));
                    }
                    self.inner.consume(n);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers(bytes) => {
                    let Some(n) = self.inner.line_len(MAX_HEADER_LINE)? else {
                        self.state = ChunkState::Done;
                        continue;
                    };
                    let empty = trim_eol(&self.inner.available()[..n]).is_empty();
                    self.inner.consume(n);
                    self.state = if empty {
                        ChunkState::Done
                    } else if bytes + n > MAX_HEADER_BLOCK {
                        return Err(invalid_data("chunked trailer fields over 64 KiB"));
                    } else {
                        ChunkState::Trailers(bytes + n)
                    };
                }
            }
        }
    }
}

/// A chunk-size line (without its line end): hexadecimal digits, then extensions after `;`.
fn parse_chunk_size(line: &[u8]) -> io::Result<u64> {
    let digits = trim(line.split(|&b| b == b';').next().unwrap_or_default());
    if digits.is_empty() || digits.len() > 15 {
        return Err(invalid_data("a chunked body with a bad chunk size"));
    }
    let mut n = 0u64;
    for &d in digits {
        let v = hex_digit(d).ok_or_else(|| invalid_data("a chunked body with a bad chunk size"))?;
        n = n << 4 | u64::from(v);
    }
    Ok(n)
}

/// What an unlabelled body starts with.
enum Sniffed {
    /// A multipart delimiter line `--boundary`: the boundary.
    Multipart(String),
    /// A JPEG's start-of-image marker.
    Jpeg,
}

/// Looks at the first bytes of a body without consuming them (at most one line of 200 bytes).
fn sniff_body<R: Read>(input: &mut Buffered<R>) -> Result<Option<Sniffed>, DemuxError> {
    // Skip nothing: a multipart body may start with CRLFs before its first delimiter.
    for _ in 0..16 {
        let avail = input.available();
        let text = avail.iter().position(|&b| b != b'\r' && b != b'\n').map_or(&avail[avail.len()..], |i| &avail[i..]);
        if text.starts_with(&[0xFF, 0xD8]) {
            return Ok(Some(Sniffed::Jpeg));
        }
        if let Some(end) = text.iter().position(|&b| b == b'\n') {
            let line = std::str::from_utf8(&text[..end]).unwrap_or("").trim_end_matches('\r');
            return Ok(line
                .strip_prefix("--")
                .filter(|b| !b.is_empty() && b.len() <= 70 && b.bytes().all(|c| c.is_ascii_graphic() || c == b' '))
                .map(|b| Sniffed::Multipart(b.trim_end().to_string())));
        }
        if avail.len() > 200 || input.fill_more()? == 0 {
            return Ok(None);
        }
    }
    Ok(None)
}

/// A reader with a fixed buffer of [`BUF_SIZE`] bytes, `buf[start..end]` not yet read.
struct Buffered<R> {
    /// The reader underneath.
    inner: R,
    /// The buffer.
    buf: Vec<u8>,
    /// Where the unread bytes start.
    start: usize,
    /// Where they end.
    end: usize,
}

impl<R: Read> Buffered<R> {
    /// An empty buffer over `inner`.
    fn new(inner: R) -> Self {
        Buffered { inner, buf: vec![0; BUF_SIZE], start: 0, end: 0 }
    }

    /// The same buffered bytes over another reader.
    fn map_inner<S>(self, f: impl FnOnce(R) -> S) -> Buffered<S> {
        Buffered { inner: f(self.inner), buf: self.buf, start: self.start, end: self.end }
    }

    /// The bytes read but not consumed.
    fn available(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Marks `n` bytes as read.
    fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
    }

    /// Reads more bytes after the available ones (moving those to the front if there is no room);
    /// the count read, 0 at the end of the stream. An error leaves the available bytes as they
    /// were.
    fn fill_more(&mut self) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.buf.len() {
            if self.start == 0 {
                return Err(io::Error::other("the read buffer is full"));
            }
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The length of the line at the start of the available bytes, its `\n` included, reading
    /// more as needed; `None` if the stream ends first; `InvalidData` for a line over `max` bytes.
    fn line_len(&mut self, max: usize) -> io::Result<Option<usize>> {
        let mut scanned = 0;
        loop {
            let avail = self.available();
            if let Some(i) = avail[scanned..].iter().position(|&b| b == b'\n') {
                let len = scanned + i + 1;
                if len > max {
                    break;
                }
                return Ok(Some(len));
            }
            scanned = avail.len();
            if scanned > max {
                break;
            }
            if self.fill_more()? == 0 {
                return Ok(None);
            }
        }
        Err(invalid_data(&format!("a header line over {} KiB", max / 1024)))
    }

    /// Appends exactly `n` bytes to `out`; `false` if the stream ends first.
    fn read_exact_into(&mut self, out: &mut Vec<u8>, n: usize) -> io::Result<bool> {
        let mut left = n;
        loop {
            let avail = self.available();
            let k = avail.len().min(left);
            out.extend_from_slice(&avail[..k]);
            self.consume(k);
            left -= k;
            if left == 0 {
                return Ok(true);
            }
            if self.fill_more()? == 0 {
                return Ok(false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::thread::{self, JoinHandle};

    /// What a test server does on a connection, after reading the request.
    enum Step {
        /// Writes these bytes.
        Send(Vec<u8>),
        /// Waits this long (so that the client reads what came before on its own).
        Pause(u64),
        /// Waits until the test is done with the connection (at most 3 s).
        Stall,
    }

    /// A scripted server on 127.0.0.1: one script a connection, in order.
    struct Server {
        /// The server's port.
        port: u16,
        /// The thread; it returns the requests it read.
        handle: JoinHandle<Vec<String>>,
        /// Dropped to end a [`Step::Stall`].
        release: mpsc::Sender<()>,
    }

    impl Server {
        /// Binds a port and serves `scripts`, made once the port is known.
        fn start(scripts: impl FnOnce(u16) -> Vec<Vec<Step>>) -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let scripts = scripts(port);
            let (release, stalled) = mpsc::channel::<()>();
            let handle = thread::spawn(move || serve(listener, scripts, stalled));
            Server { port, handle, release }
        }

        /// `http://127.0.0.1:port` and `path`.
        fn url(&self, path: &str) -> String {
            format!("http://127.0.0.1:{}{path}", self.port)
        }

        /// Ends any stall and waits for the thread; the requests it read.
        fn join(self) -> Vec<String> {
            drop(self.release);
            self.handle.join().unwrap()
        }
    }

    /// The server thread: each connection accepted within 3 s, its request read, its script run.
    fn serve(listener: TcpListener, scripts: Vec<Vec<Step>>, stalled: mpsc::Receiver<()>) -> Vec<String> {
        listener.set_nonblocking(true).unwrap();
        let mut requests = Vec::new();
        for script in scripts {
            let give_up = Instant::now() + Duration::from_secs(3);
            let mut stream = loop {
                match listener.accept() {
                    Ok((s, _)) => break s,
                    Err(_) if Instant::now() < give_up => thread::sleep(Duration::from_millis(2)),
                    Err(_) => return requests,
                }
            };
            stream.set_nonblocking(false).unwrap();
            stream.set_nodelay(true).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") && request.len() < 16384 {
                match stream.read(&mut byte) {
                    Ok(1) => request.push(byte[0]),
                    _ => break,
                }
            }
            requests.push(String::from_utf8_lossy(&request).into_owned());
            for step in script {
                match step {
                    Step::Send(bytes) => {
                        if stream.write_all(&bytes).is_err() {
                            break;
                        }
                    }
                    Step::Pause(ms) => thread::sleep(Duration::from_millis(ms)),
                    Step::Stall => {
                        let _ = stalled.recv_timeout(Duration::from_secs(3));
                    }
                }
            }
        }
        requests
    }

    /// A `200 OK` multipart response head with this `Content-Type` parameter list.
    fn multipart_head(params: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace;{params}\r\nCache-Control: no-cache\r\n\r\n"
        )
        .into_bytes()
    }

    /// A part with a `Content-Length`, after its delimiter line, and the CRLF after it.
    fn part_with_length(boundary: &str, body: &[u8]) -> Vec<u8> {
        let mut p =
            format!("--{boundary}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        p.extend_from_slice(body);
        p.extend_from_slice(b"\r\n");
        p
    }

    /// A part without a `Content-Length` (the CRLF before the next delimiter is the next part's).
    fn part_without_length(boundary: &str, body: &[u8]) -> Vec<u8> {
        let mut p = format!("\r\n--{boundary}\r\nContent-Type: image/jpeg\r\n\r\n").into_bytes();
        p.extend_from_slice(body);
        p
    }

    /// A JPEG-like body: the markers around `inner`.
    fn jpeg(inner: &[u8]) -> Vec<u8> {
        let mut j = vec![0xFF, 0xD8, 0xFF, 0xE0];
        j.extend_from_slice(inner);
        j.extend_from_slice(&JPEG_EOI);
        j
    }

    /// `n` pseudo-random bytes from `seed`.
    fn noise(seed: u64, n: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (x >> 33) as u8
            })
            .collect()
    }

    /// Every packet until the end or an error (at most 1000).
    fn read_all(d: &mut HttpMjpeg) -> (Vec<Vec<u8>>, Option<DemuxError>) {
        let mut packets = Vec::new();
        let mut p = Packet::default();
        for _ in 0..1000 {
            match d.read_packet(&mut p) {
                Ok(true) => {
                    assert!(p.key && p.pts.is_none());
                    packets.push(p.data.clone());
                }
                Ok(false) => return (packets, None),
                Err(e) => return (packets, Some(e)),
            }
        }
        panic!("more than 1000 packets");
    }

    /// Whether an error is a read timeout.
    fn is_timeout(e: &DemuxError) -> bool {
        matches!(e, DemuxError::Io(io) if matches!(io.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock))
    }

    /// Short timeouts for tests.
    const T: Option<Duration> = Some(Duration::from_secs(2));

    #[test]
    fn parts_with_content_length_arrive_byte_exact() {
        let bodies = [jpeg(b"one\r\n--frame\r\ninside"), jpeg(&noise(1, 5000)), jpeg(b"")];
        let b = bodies.clone();
        let server = Server::start(move |_| {
            let mut s = multipart_head(" boundary=frame");
            s.extend_from_slice(b"a preamble to skip\r\n");
            s.extend(part_with_length("frame", &b[0]));
            // A server that leaves out the CRLF between a part and the next delimiter.
            s.extend(part_with_length("frame", &b[1]).strip_suffix(b"\r\n").unwrap());
            s.extend(part_with_length("frame", &b[2]));
            s.extend_from_slice(b"--frame--\r\nan epilogue");
            vec![vec![Step::Send(s)]]
        });
        let mut d = HttpMjpeg::open(&server.url("/stream?x=1"), T, T).unwrap();
        assert_eq!(
            d.info(),
            &StreamInfo {
                container: "http-mjpeg",
                codec: Codec::Mjpeg,
                width: 0,
                height: 0,
                fps: None,
                frames: None,
                parameter_sets: Vec::new(),
            }
        );
        let (packets, err) = read_all(&mut d);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(packets, bodies);
        assert!(!d.read_packet(&mut Packet::default()).unwrap());
        let port = server.port;
        let requests = server.join();
        let r = &requests[0];
        assert!(r.starts_with("GET /stream?x=1 HTTP/1.1\r\n"), "{r}");
        assert!(r.contains(&format!("\r\nHost: 127.0.0.1:{port}\r\n")), "{r}");
        assert!(r.contains("\r\nAccept: multipart/x-mixed-replace, image/jpeg\r\n"), "{r}");
        assert!(r.contains("\r\nUser-Agent: framepipe\r\n"), "{r}");
        assert!(r.contains("\r\nConnection: close\r\n"), "{r}");
        assert!(!r.contains("Authorization"), "{r}");
    }

    #[test]
    fn parts_without_content_length_arrive_byte_exact() {
        let mut big = noise(2, 200_000);
        while let Some(i) = find(&big, b"--frame") {
            big[i] = b'+';
        }
        let bodies = [
            jpeg(b"dashes -- and\r\nline breaks\r\n-- and \r\n--fram and x--frame and \n-"),
            jpeg(&big),
            b"--\r\n\r\n--".to_vec(),
            jpeg(b"\r\n"),
        ];
        let b = bodies.clone();
        let server = Server::start(move |_| {
            let mut s = multipart_head(" boundary=frame");
            for body in &b {
                s.extend(part_without_length("frame", body));
            }
            s.extend_from_slice(b"\r\n--frame--\r\n");
            // Cut the stream at awkward places: inside delimiters, inside headers.
            let mut steps = Vec::new();
            let mut at = 0;
            for cut in [3, 50, 95, 97, 100, 1000, 70_000, 200_200] {
                let cut = cut.min(s.len());
                steps.push(Step::Send(s[at..cut].to_vec()));
                steps.push(Step::Pause(5));
                at = cut;
            }
            steps.push(Step::Send(s[at..].to_vec()));
            vec![steps]
        });
        let mut d = HttpMjpeg::open(&server.url(""), T, T).unwrap();
        let (packets, err) = read_all(&mut d);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(packets.len(), bodies.len());
        for (p, b) in packets.iter().zip(&bodies) {
            assert!(p == b, "a packet of {} bytes for a body of {}", p.len(), b.len());
        }
        assert!(server.join()[0].starts_with("GET / HTTP/1.1\r\n"));
    }

    #[test]
    fn quoted_and_dashed_boundaries() {
        let bodies = [jpeg(b"first"), jpeg(b"second")];
        let b = bodies.clone();
        let server = Server::start(move |_| {
            // A quoted boundary with a space and a colon, parameters in mixed case, one part with
            // a length and one without.
            let mut quoted = multipart_head(" charset=\"x;y\"; BOUNDARY=\"my boundary:1\"");
            quoted.extend(part_with_length("my boundary:1", &b[0]));
            quoted.extend(part_without_length("my boundary:1", &b[1]).strip_prefix(b"\r\n").unwrap());
            quoted.extend_from_slice(b"\r\n--my boundary:1--\r\n");
            // A boundary announced with its dashes, the lines written with two more (RFC 2046).
            let mut dashed = multipart_head("boundary=--cam");
            dashed.extend(part_without_length("--cam", &b[0]));
            dashed.extend(part_without_length("--cam", &b[1]));
            dashed.extend_from_slice(b"\r\n----cam--\r\n");
            // The same announcement, the lines written with the announced boundary alone.
            let mut plain = multipart_head("boundary=--cam");
            plain.extend(part_without_length("cam", &b[0]));
            plain.extend(part_with_length("cam", &b[1]));
            let head = b"HTTP/1.0 200 OK\r\ncontent-type: Multipart/X-Mixed-Replace ; boundary=cam\r\n\r\n".to_vec();
            let mut odd_case = head;
            odd_case.extend(part_with_length("cam", &b[0]));
            odd_case.extend(part_with_length("cam", &b[1]));
            vec![
                vec![Step::Send(quoted)],
                vec![Step::Send(dashed)],
                vec![Step::Send(plain)],
                vec![Step::Send(odd_case)],
            ]
        });
        for _ in 0..4 {
            let mut d = HttpMjpeg::open(&server.url("/"), T, T).unwrap();
            let (packets, err) = read_all(&mut d);
            assert!(err.is_none(), "{err:?}");
            assert_eq!(packets, bodies);
        }
        server.join();
    }

    #[test]
    fn unlabelled_bodies_are_told_apart_by_their_first_bytes() {
        let bodies = [jpeg(b"first"), jpeg(b"second")];
        let b = bodies.clone();
        let server = Server::start(move |_| {
            // ffmpeg's `-listen 1` HTTP server: octet-stream, then ffmpeg's mpjpeg parts.
            let mut octet = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
            octet.extend(
                part_with_length("ffmpeg", &b[0]).strip_prefix(b"\r\n").unwrap_or(&part_with_length("ffmpeg", &b[0])),
            );
            octet.extend(part_with_length("ffmpeg", &b[1]));
            let mut bare = b"HTTP/1.0 200 OK\r\n\r\n".to_vec();
            bare.extend_from_slice(&b[0]);
            let mut text = b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
            text.extend_from_slice(b"hello\r\n");
            vec![vec![Step::Send(octet)], vec![Step::Send(bare)], vec![Step::Send(text)]]
        });
        let mut d = HttpMjpeg::open(&server.url("/"), T, T).unwrap();
        let (packets, err) = read_all(&mut d);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(packets, bodies);
        let mut d = HttpMjpeg::open(&server.url("/"), T, T).unwrap();
        assert_eq!(read_all(&mut d).0, bodies[..1]);
        let e = HttpMjpeg::open(&server.url("/"), T, T).err().unwrap();
        assert!(matches!(&e, DemuxError::Unsupported { codec } if codec == "application/octet-stream"), "{e:?}");
        server.join();
    }

    #[test]
    fn chunked_transfer_encoding_is_decoded() {
        let bodies = [jpeg(&noise(3, 100_000)), jpeg(b"small"), jpeg(b"third")];
        let b = bodies.clone();
        let server = Server::start(move |_| {
            let mut body = Vec::new();
            body.extend(part_with_length("frame", &b[0]));
            body.extend(part_without_length("frame", &b[1]));
            body.extend(part_without_length("frame", &b[2]));
            body.extend_from_slice(b"\r\n--frame--\r\n");
            let mut s = concat!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 12\r\n",
                "Content-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n"
            )
            .as_bytes()
            .to_vec();
            let mut at = 0;
            let mut i = 0;
            while at < body.len() {
                let n = [1, 7, 70_000, 3, 500][i % 5].min(body.len() - at);
                let size = if i % 2 == 0 { format!("{n:x}") } else { format!("{n:X};name=value") };
                s.extend_from_slice(size.as_bytes());
                s.extend_from_slice(b"\r\n");
                s.extend_from_slice(&body[at..at + n]);
                s.extend_from_slice(b"\r\n");
                at += n;
                i += 1;
            }
            s.extend_from_slice(b"0\r\nX-Trailer: yes\r\n\r\n");
            vec![vec![Step::Send(s[..s.len() / 2].to_vec()), Step::Pause(5), Step::Send(s[s.len() / 2..].to_vec())]]
        });
        let mut d = HttpMjpeg::open(&server.url("/"), T, T).unwrap();
        let (packets, err) = read_all(&mut d);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(packets, bodies);
        server.join();
    }

    #[test]
    fn a_bad_chunk_size_is_malformed() {
        let server = Server::start(|_| {
            let mut s = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: image/jpeg\r\n\r\n".to_vec();
            s.extend_from_slice(b"4\r\nabcd\r\nzz\r\n");
            vec![vec![Step::Send(s)]]
        });
        let mut d = HttpMjpeg::open(&server.url("/"), T, T).unwrap();
        let e = d.read_packet(&mut Packet::default()).unwrap_err();
        assert!(matches!(&e, DemuxError::Malformed(m) if m.contains("chunk size")), "{e:?}");
        server.join();
    }

    #[test]
    fn an_http_error_names_the_status_and_the_address() {
        let server = Server::start(|_| {
            vec![vec![Step::Send(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found".to_vec())]]
        });
        let url = server.url("/missing");
        let e = HttpMjpeg::open(&url, T, T).err().unwrap();
        let m = e.to_string();
        assert!(matches!(e, DemuxError::Malformed(_)), "{e:?}");
        assert_eq!(m, format!("HTTP 404 Not Found from {url}"));
        server.join();
    }

    #[test]
    fn a_stall_while_opening_times_out() {
        let server = Server::start(|_| vec![vec![Step::Send(multipart_head("boundary=frame")), Step::Stall]]);
        let start = Instant::now();
        let short = Some(Duration::from_millis(300));
        let e = HttpMjpeg::open(&server.url("/"), short, T).err().unwrap();
        let took = start.elapsed();
        assert!(is_timeout(&e), "{e:?}");
        assert!(took < Duration::from_millis(1300), "{took:?}");
        server.join();
    }

    #[test]
    fn a_stall_between_frames_times_out() {
        let body = jpeg(b"frame");
        let b = body.clone();
        let server = Server::start(move |_| {
            let mut s = multipart_head("boundary=frame");
            s.extend(part_with_length("frame", &b));
            vec![vec![Step::Send(s), Step::Stall]]
        });
        let mut d = HttpMjpeg::open(&server.url("/"), T, Some(Duration::from_millis(300))).unwrap();
        let mut p = Packet::default();
        assert!(d.read_packet(&mut p).unwrap());
        assert_eq!(p.data, body);
        let start = Instant::now();
        let e = d.read_packet(&mut p).unwrap_err();
        let took = start.elapsed();
        assert!(is_timeout(&e), "{e:?}");
        assert!(took >= Duration::from_millis(250) && took < Duration::from_millis(1300), "{took:?}");
        server.join();
    }

    #[test]
    fn a_closed_port_fails_quickly() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let start = Instant::now();
        let e = HttpMjpeg::open(&format!("http://127.0.0.1:{port}/"), Some(Duration::from_secs(1)), T).err().unwrap();
        assert!(matches!(e, DemuxError::Io(_)), "{e:?}");
        assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
        assert!(start.elapsed() < Duration::from_secs(2));
        // Without an open timeout: a plain connect, refused as quickly.
        assert!(matches!(HttpMjpeg::open(&format!("http://127.0.0.1:{port}/"), None, None), Err(DemuxError::Io(_))));
    }

    #[test]
    fn a_close_inside_a_part_is_malformed_after_the_whole_parts() {
        let bodies = [jpeg(b"one"), jpeg(b"two")];
        let b = bodies.clone();
        let server = Server::start(move |_| {
            let mut with_length = multipart_head("boundary=frame");
            with_length.extend(part_with_length("frame", &b[0]));
            with_length.extend(part_with_length("frame", &b[1]));
            with_length.extend_from_slice(b"--frame\r\nContent-Length: 100\r\n\r\nonly a bit");
            let mut without = multipart_head("boundary=frame");
            without.extend(part_without_length("frame", &b[0]));
            without.extend(part_without_length("frame", &b[1]));
            without.extend(part_without_length("frame", b"cut short"));
            let mut in_headers = multipart_head("boundary=frame");
            in_headers.extend(part_with_length("frame", &b[0]));
            in_headers.extend(part_with_length("frame", &b[1]));
            in_headers.extend_from_slice(b"--frame\r\nContent-Type: ima");
            vec![vec![Step::Send(with_length)], vec![Step::Send(without)], vec![Step::Send(in_headers)]]
        });
        for _ in 0..3 {
            let mut d = HttpMjpeg::open(&server.url("/"), T, T).unwrap();
            let (packets, err) = read_all(&mut d);
            assert_eq!(packets, bodies);
            let err = err.expect("an error");
            assert!(matches!(&err, DemuxError::Malformed(m) if m == ENDED_MID_FRAME), "{err:?}");
            // The next call finds the end.
            assert!(!d.read_packet(&mut Packet::default()).unwrap());
        }
        server.join();
    }

    #[test]
    fn the_end_between_parts_is_the_end() {
        let server = Server::start(|_| {
            let mut s = multipart_head("boundary=frame");
            s.extend(part_with_length("frame", &jpeg(b"one")));
            let mut t = multipart_head("boundary=frame");
            t.extend(part_with_length("frame", &jpeg(b"one")));
            t.extend_from_slice(b"--frame\r\n");
            vec![vec![Step::Send(s)], vec![Step::Send(t)], vec![Step::Send(multipart_head("boundary=frame"))]]
        });
        for expected in [1, 1, 0] {
            let mut d = HttpMjpeg::open(&server.url("/"), T, T).unwrap();
            let (packets, err) = read_all(&mut d);
            assert!(err.is_none(), "{err:?}");
            assert_eq!(packets.len(), expected);
        }
        server.join();
    }

    #[test]
    fn a_snapshot_is_one_packet() {
        let image = jpeg(&noise(4, 90_000));
        let i = image.clone();
        let server = Server::start(move |_| {
            let mut sized =
                format!("HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n", i.len())
                    .into_bytes();
            sized.extend_from_slice(&i);
            let mut unsized_ = b"HTTP/1.0 200 OK\r\nContent-Type: IMAGE/JPEG; q=1\r\n\r\n".to_vec();
            unsized_.extend_from_slice(&i);
            vec![vec![Step::Send(sized)], vec![Step::Send(unsized_)]]
        });
        for _ in 0..2 {
            let mut d = HttpMjpeg::open(&server.url("/snapshot.jpg"), T, T).unwrap();
            let mut p = Packet::default();
            assert!(d.read_packet(&mut p).unwrap());
            assert!(p.data == image);
            assert!(!d.read_packet(&mut p).unwrap());
            assert!(!d.read_packet(&mut p).unwrap());
        }
        server.join();
    }

    #[test]
    fn other_content_types_are_unsupported() {
        let server = Server::start(|_| {
            vec![
                vec![Step::Send(b"HTTP/1.1 200 OK\r\nContent-Type: Text/HTML; charset=utf-8\r\n\r\n<html>".to_vec())],
                vec![Step::Send(b"HTTP/1.1 200 OK\r\n\r\n".to_vec())],
                vec![Step::Send(b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace\r\n\r\n".to_vec())],
                vec![Step::Send(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Type: image/jpeg\r\n\r\n".to_vec(),
                )],
            ]
        });
        let url = server.url("/");
        let e = HttpMjpeg::open(&url, T, T).err().unwrap();
        assert!(matches!(&e, DemuxError::Unsupported { codec } if codec == "text/html"), "{e:?}");
        let e = HttpMjpeg::open(&url, T, T).err().unwrap();
        assert!(matches!(&e, DemuxError::Unsupported { codec } if codec.contains("without a Content-Type")), "{e:?}");
        let e = HttpMjpeg::open(&url, T, T).err().unwrap();
        assert!(matches!(&e, DemuxError::Malformed(m) if m.contains("without a boundary")), "{e:?}");
        let e = HttpMjpeg::open(&url, T, T).err().unwrap();
        assert!(matches!(&e, DemuxError::Unsupported { codec } if codec.contains("gzip")), "{e:?}");
        server.join();
    }

    #[test]
    fn parts_that_are_not_jpeg_are_skipped() {
        let server = Server::start(|_| {
            let mut s = multipart_head("boundary=frame");
            s.extend_from_slice(b"--frame\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello\r\n");
            s.extend_from_slice(b"--frame\r\nno colon here\r\n X-Folded: line\r\n: empty name\r\n\r\n");
            s.extend(jpeg(b"untyped"));
            s.extend_from_slice(b"\r\n--frame\r\nContent-Type: application/json\r\n\r\n{\"a\": 1}\r\n");
            s.extend_from_slice(b"--frame\r\ncontent-type: image/jpg\r\ncontent-length: 3\r\n\r\nabc");
            s.extend_from_slice(b"--frame\r\nContent-Length: 0\r\n\r\n");
            s.extend_from_slice(b"--frame--");
            vec![vec![Step::Send(s)]]
        });
        let mut d = HttpMjpeg::open(&server.url("/"), T, T).unwrap();
        let (packets, err) = read_all(&mut d);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(packets, vec![jpeg(b"untyped"), b"abc".to_vec()]);
        server.join();
    }

    #[test]
    fn bad_part_headers_are_malformed() {
        let long = "x".repeat(9000);
        let server = Server::start(move |_| {
            [
                "Content-Length: -5",
                "Content-Length: 99999999999999999999999",
                "Content-Length: 1000000000",
                "Content-Length: 10, 12",
                long.as_str(),
            ]
            .iter()
            .map(|h| {
                let mut s = multipart_head("boundary=frame");
                s.extend_from_slice(format!("--frame\r\n{h}\r\n\r\nabc").as_bytes());
                vec![Step::Send(s)]
            })
            .collect()
        });
        for expected in ["`-5`", "`99999999999999999999999`", "over 64 MiB", "`10, 12`", "over 8 KiB"] {
            let e = HttpMjpeg::open(&server.url("/"), T, T).err().unwrap();
            assert!(matches!(&e, DemuxError::Malformed(m) if m.contains(expected)), "{expected}: {e:?}");
        }
        server.join();
    }

    #[test]
    fn redirects_are_followed_with_the_credentials() {
        let body = jpeg(b"after redirects");
        let b = body.clone();
        let server = Server::start(move |port| {
            let mut stream = multipart_head("boundary=frame");
            stream.extend(part_with_length("frame", &b));
            vec![
                vec![Step::Send(b"HTTP/1.1 302 Found\r\nLocation: next?step=2\r\n\r\n".to_vec())],
                vec![Step::Send(
                    format!("HTTP/1.1 301 Moved Permanently\r\nLocation: http://127.0.0.1:{port}/final\r\n\r\n")
                        .into_bytes(),
                )],
                vec![Step::Send(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec()), Step::Send(stream)],
            ]
        });
        let url = format!("http://user:p%40ss@127.0.0.1:{}/cam/first", server.port);
        let mut d = HttpMjpeg::open(&url, T, T).unwrap();
        let (packets, err) = read_all(&mut d);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(packets, vec![body]);
        let requests = server.join();
        assert_eq!(requests.len(), 3);
        let auth = format!("\r\nAuthorization: Basic {}\r\n", base64(b"user:p@ss"));
        for (r, path) in requests.iter().zip(["/cam/first", "/cam/next?step=2", "/final"]) {
            assert!(r.starts_with(&format!("GET {path} HTTP/1.1\r\n")), "{r}");
            assert!(r.contains(&auth), "{r}");
        }
    }

    #[test]
    fn redirects_are_bounded() {
        let server = Server::start(|_| {
            (0..4).map(|_| vec![Step::Send(b"HTTP/1.1 307 Temporary\r\nLocation: /again\r\n\r\n".to_vec())]).collect()
        });
        let e = HttpMjpeg::open(&server.url("/"), T, T).err().unwrap();
        assert!(matches!(&e, DemuxError::Malformed(m) if m.contains("more than 3 redirects")), "{e:?}");
        assert_eq!(server.join().len(), 4);
        let server = Server::start(|_| {
            vec![
                vec![Step::Send(b"HTTP/1.1 302 Found\r\nLocation: https://example.invalid/\r\n\r\n".to_vec())],
                vec![Step::Send(b"HTTP/1.1 302 Found\r\n\r\n".to_vec())],
            ]
        });
        let e = HttpMjpeg::open(&server.url("/"), T, T).err().unwrap();
        assert!(matches!(&e, DemuxError::Unsupported { codec } if codec == "https (TLS)"), "{e:?}");
        let e = HttpMjpeg::open(&server.url("/"), T, T).err().unwrap();
        assert!(matches!(&e, DemuxError::Malformed(m) if m.contains("without a Location")), "{e:?}");
        server.join();
    }

    #[test]
    fn not_http_is_malformed() {
        let server = Server::start(|_| {
            vec![
                vec![Step::Send(b"SSH-2.0-OpenSSH_9.6\r\n".to_vec())],
                vec![Step::Send(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n".to_vec())],
                vec![Step::Send(format!("HTTP/1.1 200 OK\r\n{}", "X-Big: yes\r\n".repeat(6000)).into_bytes())],
            ]
        });
        for expected in ["not an HTTP response", "before the end of the response headers", "over 64 KiB"] {
            let e = HttpMjpeg::open(&server.url("/"), T, T).err().unwrap();
            assert!(matches!(&e, DemuxError::Malformed(m) if m.contains(expected)), "{expected}: {e:?}");
        }
        server.join();
    }

    #[test]
    fn addresses_are_parsed() {
        let u = Url::parse("http://example.com").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.target.as_str(), u.auth.as_deref()), ("example.com", 80, "/", None));
        assert_eq!(u.display(), "http://example.com/");
        let u = Url::parse("HTTP://[::1]:8080/a b?c=d#frag").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.target.as_str()), ("::1", 8080, "/a%20b?c=d"));
        assert_eq!(u.host_header(), "[::1]:8080");
        let u = Url::parse("http://admin@cam:81?x").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.target.as_str()), ("cam", 81, "/?x"));
        assert_eq!(u.auth.as_deref(), Some(base64(b"admin:").as_str()));
        assert!(Url::parse("http://a:b@c@host/").unwrap().host == "host");
        assert!(matches!(Url::parse("https://cam/"), Err(DemuxError::Unsupported { codec }) if codec == "https (TLS)"));
        for (bad, why) in [
            ("rtsp://cam/", "not an http://"),
            ("cam.local/stream", "not an http://"),
            ("http:///path", "no host"),
            ("http://cam:99999/", "`99999`"),
            ("http://cam:0/", "`0`"),
            ("http://cam:+80/", "`+80`"),
            ("http://::1/", "brackets"),
            ("http://[::1/", "closing"),
            ("http://[nope]/", "not an IPv6"),
            ("http://[::1]x/", "after the IPv6"),
        ] {
            let e = Url::parse(bad).err().unwrap();
            assert!(matches!(&e, DemuxError::Malformed(m) if m.contains(why)), "{bad}: {e:?}");
        }
        let base = Url::parse("http://u:p@cam:81/a/b?q").unwrap();
        assert_eq!(base.resolve("c").unwrap().target, "/a/c");
        assert_eq!(base.resolve("/d").unwrap(), Url { target: "/d".into(), ..base.clone() });
        assert_eq!(base.resolve("//other/e").unwrap().auth, None);
        assert_eq!(base.resolve("http://cam:81/f").unwrap().auth, base.auth);
        assert!(matches!(base.resolve("ftp://x/"), Err(DemuxError::Malformed(_))));
        assert!(base.request().contains(&format!("Authorization: Basic {}\r\n", base64(b"u:p"))));
    }

    #[test]
    fn base64_matches_rfc_4648() {
        for (input, output) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("Aladdin:open sesame", "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
        ] {
            assert_eq!(base64(input.as_bytes()), output);
        }
        assert_eq!(base64(&[0xFF, 0xFE, 0xFD]), "//79");
        assert_eq!(percent_decode("a%40b%zz%4"), b"a@b%zz%4");
    }

    #[test]
    fn content_types_and_boundaries() {
        assert_eq!(
            parse_content_type("multipart/x-mixed-replace;boundary=ab"),
            ("multipart/x-mixed-replace".into(), Some("ab".into()))
        );
        assert_eq!(parse_content_type(" A/B ; x=1 ; Boundary = \"q\\\"q\" ; y"), ("a/b".into(), Some("q\"q".into())));
        assert_eq!(parse_content_type("a/b; boundary=\"unterminated"), ("a/b".into(), Some("unterminated".into())));
        assert_eq!(parse_content_type("a/b; ;;=;boundary"), ("a/b".into(), Some(String::new())));
        assert_eq!(parse_content_type(""), (String::new(), None));
        assert_eq!(check_boundary("--frame").unwrap(), ("frame", true));
        assert_eq!(check_boundary("frame").unwrap(), ("frame", false));
        assert_eq!(check_boundary("--").unwrap(), ("--", false));
        assert_eq!(check_boundary(&"b".repeat(70)).unwrap().0.len(), 70);
        for bad in [String::new(), "b".repeat(71), "b".repeat(200), "a\r\nb".into()] {
            assert!(matches!(check_boundary(&bad), Err(DemuxError::Malformed(_))), "{bad:?}");
        }
        let e = check_boundary(&"b".repeat(200)).err().unwrap();
        assert!(e.to_string().contains("200 characters"), "{e}");
    }

    #[test]
    fn helpers_handle_the_edges() {
        assert_eq!(find(b"", b"--b"), None);
        assert_eq!(find(b"--", b"--b"), None);
        assert_eq!(find(b"---b", b"--b"), Some(1));
        assert_eq!(find(b"x--b", b"--b"), Some(1));
        assert_eq!(find(b"abc", b""), None);
        assert_eq!(trim(b" \t a b \t"), b"a b");
        assert_eq!(trim(b"  "), b"");
        assert_eq!(trim_eol(b"a\r\n"), b"a");
        assert_eq!(trim_eol(b"a\n"), b"a");
        assert_eq!(parse_length(b" 12 ").unwrap(), 12);
        assert_eq!(parse_length(b"7, 7").unwrap(), 7);
        for bad in [&b""[..], b"-1", b"+1", b"1 2", b"0x10", b",", b"18446744073709551616"] {
            assert!(parse_length(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse_chunk_size(b"1aF;ext=\"x\"").unwrap(), 0x1af);
        assert_eq!(parse_chunk_size(b" 0 ").unwrap(), 0);
        for bad in [&b""[..], b"g", b"-1", b"1234567890abcdef"] {
            assert!(parse_chunk_size(bad).is_err());
        }
        let mut out = b"abc\r\n".to_vec();
        assert!(delimiter_ends_body(&mut out, false));
        assert_eq!(out, b"abc");
        let mut out = b"abc".to_vec();
        assert!(!delimiter_ends_body(&mut out, false));
        let mut out = b"ab\r\n--".to_vec();
        assert!(!delimiter_ends_body(&mut out, false));
        assert!(delimiter_ends_body(&mut out, true));
        assert_eq!(out, b"ab");
        let mut out = jpeg(b"x");
        assert!(delimiter_ends_body(&mut out, false));
        assert_eq!(out, jpeg(b"x"));
    }

    /// Mutated copies of good responses: whatever comes, the reader returns (packets, then an end
    /// or an error) and does not panic.
    #[test]
    fn mutated_responses_never_panic() {
        let mut good = multipart_head("boundary=frame");
        good.extend(part_with_length("frame", &jpeg(b"one")));
        good.extend(part_without_length("frame", &jpeg(b"two")));
        good.extend_from_slice(b"\r\n--frame--\r\n");
        let mut chunked = concat!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n",
            "Content-Type: multipart/x-mixed-replace; boundary=\"frame\"\r\n\r\n"
        )
        .as_bytes()
        .to_vec();
        let body = &good[multipart_head("boundary=frame").len()..];
        for piece in body.chunks(9) {
            chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            chunked.extend_from_slice(piece);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let tokens: [&[u8]; 8] = [b"\r\n", b"--frame", b"--", b":", b"Content-Length: 9999", b"\xFF\xD9", b"\n", b"0"];
        const N: u64 = 150;
        let cases: Vec<Vec<u8>> = (0..N)
            .map(|i| {
                let mut s = if i % 2 == 0 { good.clone() } else { chunked.clone() };
                let r = noise(i, 64);
                for k in 0..(1 + r[0] % 6) as usize {
                    if s.is_empty() {
                        break;
                    }
                    let at = (usize::from(r[k * 4 + 1]) << 8 | usize::from(r[k * 4 + 2])) % s.len();
                    match r[k * 4 + 3] % 4 {
                        0 => s[at] = r[k * 4 + 4],
                        1 => {
                            s.remove(at);
                        }
                        2 => s.truncate(at),
                        _ => {
                            let t = tokens[usize::from(r[k * 4 + 4]) % tokens.len()];
                            s.splice(at..at, t.iter().copied());
                        }
                    }
                }
                s
            })
            .collect();
        let server = Server::start(move |_| cases.into_iter().map(|c| vec![Step::Send(c)]).collect());
        let start = Instant::now();
        let mut opened = 0;
        for _ in 0..N {
            if let Ok(mut d) = HttpMjpeg::open(&server.url("/"), T, T) {
                opened += 1;
                let (packets, _) = read_all(&mut d);
                assert!(packets.len() <= 10);
            }
        }
        assert!(opened > N / 8, "{opened}");
        assert!(start.elapsed() < Duration::from_secs(4));
        server.join();
    }
}
