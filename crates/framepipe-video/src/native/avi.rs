//! AVI (RIFF) files, read and written here: the first video stream's Motion-JPEG or H.264 frames.
//!
//! The layout handled (Microsoft, *AVI RIFF File Reference*; Matrox/OpenDML, *OpenDML AVI File
//! Format Extensions* for the `AVIX` continuations):
//!
//! ```text
//! RIFF 'AVI '
//!   LIST 'hdrl'
//!     avih            AVIMAINHEADER: dwTotalFrames
//!     LIST 'strl'     one a stream, numbered 0, 1, … in order
//!       strh          AVISTREAMHEADER: fccType 'vids', fccHandler, dwScale, dwRate, dwLength
//!       strf          BITMAPINFOHEADER: biWidth, biHeight (negative: top-down), biCompression
//!     LIST 'odml'     (OpenDML) dmlh: the total frames of all the RIFFs
//!   LIST 'movi'
//!     ##dc / ##db     a video frame of stream ## (empty: a dropped frame, which still takes its time)
//!     ##wb, JUNK, ix## other streams, padding, OpenDML field indexes: skipped
//!     LIST 'rec '     a group of chunks, walked into
//!   idx1              the legacy index: AVIIF_KEYFRAME (0x10) flags of the chunks, in order
//! RIFF 'AVIX'         (OpenDML, files over 1 GiB) more LIST 'movi', walked the same way
//! ```
//!
//! Every chunk's data is padded to an even size. The reader walks `movi` from start to end and
//! needs no index; it reads `idx1` only for the key-frame flags of H.264 (a Motion-JPEG frame is
//! always a key frame). H.264 in AVI is an Annex-B byte stream, so packets go out as they are.
//! Sizes are checked against their list and the file before anything is read or allocated; a
//! `movi` or `RIFF` whose size is 0 (never patched by a writer that stopped) runs to the end of
//! the file, and a file that ends right after a whole chunk ends there without an error.
//!
//! The writer writes one video stream (`00dc` chunks) and an `idx1`, and patches the sizes and
//! frame counts when it finishes; it stops at 1 GiB rather than writing OpenDML's `AVIX`.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::time::Duration;

use super::{codec_name, Codec, DemuxError, Demuxer, Packet, StreamInfo};

/// The largest header list (`hdrl`) read into memory.
const MAX_HEADER: u64 = 1 << 20;
/// The largest frame.
const MAX_FRAME: u64 = 256 << 20;
/// How deep `LIST rec ` groups may nest inside `movi`.
const MAX_DEPTH: usize = 8;
/// Forward skips up to this many bytes are read through rather than sought, which keeps a
/// `BufReader`'s buffer.
const READ_THROUGH: u64 = 16 << 10;
/// `idx1`'s flag of a key frame.
const AVIIF_KEYFRAME: u32 = 0x10;
/// `avih`'s flag of a file with an `idx1`.
const AVIF_HASINDEX: u32 = 0x10;
/// The largest file the writer writes (a RIFF without OpenDML's extensions).
const MAX_WRITTEN: u64 = 1 << 30;

/// `x` rounded up to even: RIFF pads every chunk's data to an even size.
fn pad(x: u64) -> u64 {
    x + (x & 1)
}

/// The little-endian `u32` at `at` in `b`, if `b` holds it.
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let bytes = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// The FourCC at `at` in `b`, if `b` holds it.
fn fourcc_at(b: &[u8], at: usize) -> Option<[u8; 4]> {
    Some(u32_at(b, at)?.to_le_bytes())
}

/// The codec of a FourCC that the native backend decodes.
fn codec_of(tag: [u8; 4]) -> Option<Codec> {
    match &tag {
        b"MJPG" | b"mjpg" | b"JPEG" | b"jpeg" | b"AVRn" | b"dmb1" => Some(Codec::Mjpeg),
        b"H264" | b"h264" | b"X264" | b"x264" | b"avc1" | b"AVC1" | b"DAVC" => Some(Codec::H264),
        _ => None,
    }
}

/// The common name of a FourCC the native backend does not decode.
fn unsupported(tag: [u8; 4]) -> DemuxError {
    let codec = if tag == [0; 4] { "rawvideo".to_string() } else { codec_name(&String::from_utf8_lossy(&tag)) };
    DemuxError::Unsupported { codec }
}

/// The sub-chunks of a chunk's data held in memory (the header list), as (FourCC, data).
struct Chunks<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Chunks<'a> {
    type Item = Result<([u8; 4], &'a [u8]), DemuxError>;

    fn next(&mut self) -> Option<Self::Item> {
        let id = fourcc_at(self.rest, 0)?;
        let size = u32_at(self.rest, 4)? as usize;
        let body = &self.rest[8..];
        if size > body.len() {
            self.rest = &[];
            let id = String::from_utf8_lossy(&id).into_owned();
            return Some(Err(DemuxError::Malformed(format!("the AVI header's `{id}` chunk runs past its list"))));
        }
        self.rest = body.get(size + (size & 1)..).unwrap_or(&[]);
        Some(Ok((id, &body[..size])))
    }
}

/// The sub-chunks of `data`.
fn chunks(data: &[u8]) -> Chunks<'_> {
    Chunks { rest: data }
}

/// What the header list says about the first video stream.
#[derive(Debug)]
struct Header {
    /// The stream's number, the `##` of its `##dc` chunks.
    stream: usize,
    /// From `strf`'s biCompression, or `strh`'s fccHandler where that is 0.
    codec: Codec,
    /// From `strf` (or `avih` where `strf` is short).
    width: usize,
    /// See `width`; the absolute value (a negative biHeight is a top-down image).
    height: usize,
    /// `strh`'s dwScale: a frame lasts scale / rate seconds.
    scale: u32,
    /// `strh`'s dwRate.
    rate: u32,
    /// `strh`'s dwLength, else `dmlh`'s or `avih`'s dwTotalFrames, where not 0.
    frames: Option<u64>,
}

/// A video stream's `strh` and `strf` (if it has one).
type VideoStrl<'a> = (&'a [u8], Option<&'a [u8]>);

/// The `strh` and `strf` of a `LIST strl`'s data (after `strl`) if it is a video stream.
fn video_strl(data: &[u8]) -> Result<Option<VideoStrl<'_>>, DemuxError> {
    let (mut strh, mut strf) = (None, None);
    for chunk in chunks(data) {
        match chunk? {
            (id, body) if &id == b"strh" => strh = Some(body),
            (id, body) if &id == b"strf" => strf = Some(body),
            _ => {}
        }
    }
    Ok(strh.filter(|h| fourcc_at(h, 0) == Some(*b"vids")).map(|h| (h, strf)))
}

/// The total frames of an OpenDML `LIST odml`'s data (after `odml`): its `dmlh`.
fn odml_frames(data: &[u8]) -> Result<u32, DemuxError> {
    for chunk in chunks(data) {
        let (id, body) = chunk?;
        if &id == b"dmlh" {
            return Ok(u32_at(body, 0).unwrap_or(0));
        }
    }
    Ok(0)
}

/// Parses the header list's data (after `hdrl`).
fn parse_hdrl(data: &[u8]) -> Result<Header, DemuxError> {
    let (mut avih, mut dml_frames, mut streams) = (None, 0, 0usize);
    let mut video = None;
    for chunk in chunks(data) {
        let (id, body) = chunk?;
        match (&id, body.get(..4)) {
            (b"avih", _) => avih = Some(body),
            (b"LIST", Some(b"strl")) => {
                if video.is_none() {
                    video = video_strl(&body[4..])?.map(|v| (streams, v));
                }
                streams += 1;
            }
            (b"LIST", Some(b"odml")) => dml_frames = odml_frames(&body[4..])?,
            _ => {}
        }
    }
    let (stream, (strh, strf)) = video.ok_or_else(|| DemuxError::Malformed("no video stream".into()))?;
    if stream > 99 {
        return Err(DemuxError::Malformed(format!("the video stream's number {stream} is over 99")));
    }
    let avih = avih.unwrap_or(&[]);
    let strf = strf.unwrap_or(&[]);
    let compression = fourcc_at(strf, 16).filter(|c| *c != [0; 4]);
    let tag = compression.or_else(|| fourcc_at(strh, 4)).unwrap_or([0; 4]);
    let codec = codec_of(tag).ok_or_else(|| unsupported(tag))?;
    let dimension = |bih_at: usize, avih_at: usize| {
        let d = u32_at(strf, bih_at).map(|v| (v as i32).unsigned_abs()).or_else(|| u32_at(avih, avih_at));
        d.unwrap_or(0) as usize
    };
    let frames = [u32_at(strh, 32), Some(dml_frames), u32_at(avih, 16)].into_iter().flatten().find(|&n| n > 0);
    Ok(Header {
        stream,
        codec,
        width: dimension(4, 32),
        height: dimension(8, 36),
        scale: u32_at(strh, 20).unwrap_or(0),
        rate: u32_at(strh, 24).unwrap_or(0),
        frames: frames.map(u64::from),
    })
}

/// Whether chunk `id` is a video frame of the stream whose number is `digits`: `##dc` or `##db`.
fn is_video(id: [u8; 4], digits: [u8; 2]) -> bool {
    id[..2] == digits && (&id[2..] == b"dc" || &id[2..] == b"db")
}

/// The presentation time of frame `frame` at `rate / scale` frames a second.
fn frame_pts(frame: u64, scale: u32, rate: u32) -> Option<Duration> {
    if scale == 0 || rate == 0 {
        return None;
    }
    let nanos = u128::from(frame) * u128::from(scale) * 1_000_000_000 / u128::from(rate);
    Some(Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)))
}

/// The end of a list whose data starts at `body`: a size of 0 (never patched) runs to the end of the file.
fn list_end(body: u64, size: u64, file_len: u64) -> u64 {
    if size == 0 {
        file_len
    } else {
        body + size
    }
}

/// A reader that knows where it is, so that it seeks only where it must.
struct Source<R> {
    /// The file.
    reader: R,
    /// Where `reader` is; `u64::MAX` after a failed read (seek next time).
    at: u64,
    /// The file's length: every size is checked against it.
    file_len: u64,
}

impl<R: Read + Seek> Source<R> {
    /// Moves the reader to `target`.
    fn goto(&mut self, target: u64) -> io::Result<()> {
        if target == self.at {
            return Ok(());
        }
        if target > self.at && target - self.at <= READ_THROUGH {
            let n = target - self.at;
            self.at = u64::MAX;
            if io::copy(&mut (&mut self.reader).take(n), &mut io::sink())? == n {
                self.at = target;
                return Ok(());
            }
        }
        self.at = u64::MAX;
        self.reader.seek(SeekFrom::Start(target))?;
        self.at = target;
        Ok(())
    }

    /// Reads `buf.len()` bytes at `pos` (which the caller checked are in the file).
    fn read_at(&mut self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        self.goto(pos)?;
        self.at = u64::MAX;
        self.reader.read_exact(buf)?;
        self.at = pos + buf.len() as u64;
        Ok(())
    }

    /// The chunk header at `pos`: its FourCC and the size of its data.
    fn header_at(&mut self, pos: u64) -> io::Result<([u8; 4], u64)> {
        let mut b = [0u8; 8];
        self.read_at(pos, &mut b)?;
        Ok(([b[0], b[1], b[2], b[3]], u64::from(u32::from_le_bytes([b[4], b[5], b[6], b[7]]))))
    }

    /// The FourCC at `pos`.
    fn fourcc_at(&mut self, pos: u64) -> io::Result<[u8; 4]> {
        let mut b = [0u8; 4];
        self.read_at(pos, &mut b)?;
        Ok(b)
    }

    /// The key-frame flags of the `idx1` entries of video chunks `digits`, in order.
    fn read_keys(&mut self, start: u64, size: u64, digits: [u8; 2]) -> io::Result<Vec<bool>> {
        let mut left = size.min(self.file_len.saturating_sub(start)) / 16 * 16;
        let (mut keys, mut buf, mut pos) = (Vec::new(), [0u8; 4096], start);
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            self.read_at(pos, &mut buf[..n])?;
            for entry in buf[..n].chunks_exact(16) {
                if is_video([entry[0], entry[1], entry[2], entry[3]], digits) {
                    keys.push(u32_at(entry, 4).unwrap_or(0) & AVIIF_KEYFRAME != 0);
                }
            }
            (pos, left) = (pos + n as u64, left - n as u64);
        }
        Ok(keys)
    }
}

/// Where the first RIFF's parts are, from a walk of its top-level chunks.
#[derive(Default)]
struct Layout {
    /// The parsed `hdrl`.
    header: Option<Header>,
    /// The start of `movi`'s chunks and the end of the list.
    movi: Option<(u64, u64)>,
    /// The start and size of `idx1`'s data.
    idx1: Option<(u64, u64)>,
}

/// The first video stream of an AVI file, read frame by frame from its `movi` lists.
pub(crate) struct AviDemuxer<R> {
    /// The file.
    src: Source<R>,
    /// What [`Demuxer::info`] answers.
    info: StreamInfo,
    /// The two ASCII digits of the video stream's chunk ids.
    digits: [u8; 2],
    /// `strh`'s dwScale.
    scale: u32,
    /// `strh`'s dwRate.
    rate: u32,
    /// For H.264: the key-frame flags from `idx1`, by frame (dropped frames included); frames
    /// past its end (those of OpenDML's `AVIX` RIFFs, which `idx1` does not cover) are key frames.
    keys: Vec<bool>,
    /// Where the next chunk header is.
    pos: u64,
    /// The ends of the lists being walked: a `movi`, then any `rec ` inside it.
    lists: Vec<u64>,
    /// The end of the RIFF (`AVI ` or `AVIX`) that holds the current `movi`.
    riff_end: u64,
    /// The video chunks met so far, empty (dropped) ones included.
    frame: u64,
    /// Set at `idx1` or the end of the last RIFF.
    done: bool,
}

impl<R: Read + Seek + Send> AviDemuxer<R> {
    /// Reads the header of the AVI file in `reader` and prepares its first video stream.
    pub(crate) fn open(mut reader: R) -> Result<Self, DemuxError> {
        let file_len = reader.seek(SeekFrom::End(0))?;
        let mut src = Source { reader, at: file_len, file_len };
        let not_avi = || DemuxError::Malformed("not an AVI file (no `RIFF....AVI ` header)".into());
        if file_len < 12 {
            return Err(not_avi());
        }
        let (id, size) = src.header_at(0)?;
        if &id != b"RIFF" || &src.fourcc_at(8)? != b"AVI " {
            return Err(not_avi());
        }
        let riff_end = pad(list_end(8, size, file_len));
        let layout = Self::walk_riff(&mut src, riff_end)?;
        let header = layout.header.ok_or_else(|| DemuxError::Malformed("the AVI file has no `hdrl` header".into()))?;
        let (movi_start, movi_end) =
            layout.movi.ok_or_else(|| DemuxError::Malformed("the AVI file has no `movi` list".into()))?;
        let digits = [b'0' + (header.stream / 10) as u8, b'0' + (header.stream % 10) as u8];
        let keys = match (header.codec, layout.idx1) {
            (Codec::H264, Some((start, size))) => src.read_keys(start, size, digits)?,
            _ => Vec::new(),
        };
        let fps = (header.scale > 0 && header.rate > 0).then(|| f64::from(header.rate) / f64::from(header.scale));
        let info = StreamInfo {
            container: "avi",
            codec: header.codec,
            width: header.width,
            height: header.height,
            fps,
            frames: header.frames,
            parameter_sets: Vec::new(),
        };
        Ok(AviDemuxer {
            src,
            info,
            digits,
            scale: header.scale,
            rate: header.rate,
            keys,
            pos: movi_start,
            lists: vec![movi_end],
            riff_end,
            frame: 0,
            done: false,
        })
    }

    /// Walks the first RIFF's top-level chunks for `hdrl`, `movi` and `idx1`.
    fn walk_riff(src: &mut Source<R>, riff_end: u64) -> Result<Layout, DemuxError> {
        let mut layout = Layout::default();
        let (mut pos, limit) = (12, riff_end.min(src.file_len));
        while pos + 8 <= limit && layout.idx1.is_none() {
            let (id, size) = src.header_at(pos)?;
            let body = pos + 8;
            // A `LIST` of size 0 is an unpatched `movi`: its type is there, its size never written.
            let has_kind = &id == b"LIST" && (size >= 4 || size == 0) && body + 4 <= src.file_len;
            let kind = if has_kind { src.fourcc_at(body)? } else { [0; 4] };
            match (&id, &kind) {
                (b"LIST", b"hdrl") if size >= 4 => layout.header = Some(Self::read_hdrl(src, body, size)?),
                (b"LIST", b"movi") if layout.movi.is_none() => {
                    layout.movi = Some((body + 4, list_end(body, size, src.file_len)));
                    if size == 0 {
                        break;
                    }
                }
                (b"idx1", _) => layout.idx1 = Some((body, size)),
                _ => {}
            }
            pos = pad(body + size);
        }
        Ok(layout)
    }

    /// Reads and parses the `LIST hdrl` whose data (`size` bytes) starts at `body`.
    fn read_hdrl(src: &mut Source<R>, body: u64, size: u64) -> Result<Header, DemuxError> {
        if size > MAX_HEADER {
            return Err(DemuxError::Malformed(format!("the AVI header list is {size} bytes, over the 1 MiB limit")));
        }
        if body + size > src.file_len {
            return Err(DemuxError::Malformed("truncated: the AVI header runs past the end of the file".into()));
        }
        let mut data = vec![0u8; size as usize];
        src.read_at(body, &mut data)?;
        parse_hdrl(&data[4..])
    }

    /// Finds the next `RIFF AVIX` after the current RIFF and enters its `movi`; false if none.
    fn next_riff(&mut self) -> Result<bool, DemuxError> {
        let file_len = self.src.file_len;
        while self.riff_end + 12 <= file_len {
            let pos = self.riff_end;
            let (id, size) = self.src.header_at(pos)?;
            if &id != b"RIFF" || &self.src.fourcc_at(pos + 8)? != b"AVIX" {
                return Ok(false);
            }
            let end = list_end(pos + 8, size, file_len);
            self.riff_end = pad(end);
            if let Some((start, movi_end)) = self.find_movi(pos + 12, end)? {
                self.pos = start;
                self.lists.push(movi_end);
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The start of the chunks and the end of the first `LIST movi` between `pos` and `end`.
    fn find_movi(&mut self, mut pos: u64, end: u64) -> Result<Option<(u64, u64)>, DemuxError> {
        let file_len = self.src.file_len;
        while pos + 12 <= end.min(file_len) {
            let (id, size) = self.src.header_at(pos)?;
            if &id == b"LIST" && size >= 4 && &self.src.fourcc_at(pos + 8)? == b"movi" {
                return Ok(Some((pos + 12, list_end(pos + 8, size, file_len))));
            }
            pos = pad(pos + 8 + size);
        }
        Ok(None)
    }

    /// Reads the `size` bytes of frame `frame` at `body` into `packet`.
    fn read_frame(&mut self, packet: &mut Packet, body: u64, size: u64, frame: u64) -> Result<(), DemuxError> {
        if size > MAX_FRAME {
            return Err(DemuxError::Malformed(format!("frame {frame} is {size} bytes, over the 256 MiB limit")));
        }
        packet.data.clear();
        packet.data.resize(size as usize, 0);
        self.src.read_at(body, &mut packet.data)?;
        packet.pts = frame_pts(frame, self.scale, self.rate);
        packet.key = self.info.codec != Codec::H264 || self.keys.get(frame as usize).copied().unwrap_or(true);
        Ok(())
    }

    /// The error of a chunk at `pos` whose header or data runs past the end of the file.
    fn truncated(&self, id: Option<[u8; 4]>, pos: u64) -> DemuxError {
        DemuxError::Malformed(match id {
            Some(id) if is_video(id, self.digits) => {
                format!("truncated: frame {}'s chunk runs past the end of the file", self.frame)
            }
            Some(id) => format!(
                "truncated: the `{}` chunk at byte {pos} runs past the end of the file",
                String::from_utf8_lossy(&id)
            ),
            None => format!("truncated: the chunk header at byte {pos} runs past the end of the file"),
        })
    }
}

impl<R: Read + Seek + Send> Demuxer for AviDemuxer<R> {
    fn info(&self) -> &StreamInfo {
        &self.info
    }

    fn read_packet(&mut self, packet: &mut Packet) -> Result<bool, DemuxError> {
        let file_len = self.src.file_len;
        loop {
            if self.done {
                return Ok(false);
            }
            let Some(&end) = self.lists.last() else {
                self.done = !self.next_riff()?;
                continue;
            };
            let pos = self.pos;
            if pos + 8 > end.min(file_len) {
                if pos < file_len && end > file_len {
                    return Err(self.truncated(None, pos));
                }
                self.lists.pop();
                self.pos = pad(end);
                continue;
            }
            let (id, size) = self.src.header_at(pos)?;
            let body = pos + 8;
            if body + size > file_len {
                return Err(self.truncated(Some(id), pos));
            }
            if body + size > end {
                let id = String::from_utf8_lossy(&id);
                return Err(DemuxError::Malformed(format!(
                    "the `{id}` chunk at byte {pos} runs past the end of its list"
                )));
            }
            match &id {
                b"LIST" if size >= 4 && &self.src.fourcc_at(body)? == b"rec " => {
                    if self.lists.len() > MAX_DEPTH {
                        return Err(DemuxError::Malformed("AVI `rec ` lists nest too deep".into()));
                    }
                    self.lists.push(body + size);
                    self.pos = body + 4;
                }
                b"idx1" | b"RIFF" => {
                    // A `movi` that runs to the end of the file (size 0) ends at the index or the next RIFF.
                    self.lists.clear();
                    self.riff_end = pos;
                }
                _ if is_video(id, self.digits) => {
                    let frame = self.frame;
                    if size > 0 {
                        self.read_frame(packet, body, size, frame)?;
                    }
                    self.frame += 1;
                    self.pos = pad(body + size);
                    if size > 0 {
                        return Ok(true);
                    }
                }
                _ => self.pos = pad(body + size),
            }
        }
    }
}

/// Offsets in the header that [`AviWriter::finish`] patches, from the start of the RIFF.
mod at {
    /// The RIFF's size.
    pub(super) const RIFF_SIZE: u64 = 4;
    /// `avih`'s dwTotalFrames.
    pub(super) const TOTAL_FRAMES: u64 = 48;
    /// `avih`'s dwSuggestedBufferSize.
    pub(super) const AVIH_BUFFER: u64 = 60;
    /// `strh`'s dwLength.
    pub(super) const LENGTH: u64 = 140;
    /// `strh`'s dwSuggestedBufferSize.
    pub(super) const STRH_BUFFER: u64 = 144;
    /// `LIST movi`'s size.
    pub(super) const MOVI_SIZE: u64 = 216;
    /// The `movi` FourCC, from which `idx1`'s offsets count.
    pub(super) const MOVI: u64 = 220;
    /// The first chunk of `movi`: the header's length.
    pub(super) const FIRST_CHUNK: u64 = 224;
}

/// One frame in `idx1`.
#[derive(Clone, Copy, Debug)]
struct IndexEntry {
    /// From the `movi` FourCC to the chunk's header.
    offset: u32,
    /// The frame's size.
    size: u32,
    /// Whether it is a key frame (AVIIF_KEYFRAME).
    key: bool,
}

/// Writes a single video stream (already compressed frames, e.g. JPEGs) into an AVI file.
///
/// A writer whose `write_frame` failed leaves a file that is not whole; drop it.
pub(crate) struct AviWriter<W: Write + Seek> {
    /// The file.
    w: W,
    /// Where the RIFF starts in `w`.
    base: u64,
    /// Bytes written from `base`.
    len: u64,
    index: Vec<IndexEntry>,
    /// The largest frame, for the suggested buffer sizes.
    max_frame: u32,
}

/// Appends a little-endian `u32`.
fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}

/// An `InvalidInput` error.
fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// The header, up to and including the `movi` FourCC, with the sizes and counts that
/// [`AviWriter::finish`] patches left 0.
fn header(width: u32, height: u32, fps: f64, rate: u32, fourcc: [u8; 4]) -> io::Result<Vec<u8>> {
    let too_large = || invalid(format!("{width}x{height} is too large for AVI"));
    let (w, h) = (i32::try_from(width).map_err(|_| too_large())?, i32::try_from(height).map_err(|_| too_large())?);
    let mut b = Vec::with_capacity(at::FIRST_CHUNK as usize);
    b.extend_from_slice(b"RIFF\0\0\0\0AVI LIST");
    put_u32(&mut b, 192);
    b.extend_from_slice(b"hdrlavih");
    put_u32(&mut b, 56);
    let micros = (1e6 / fps).round().min(f64::from(u32::MAX)) as u32;
    // dwMicroSecPerFrame, dwMaxBytesPerSec, dwPaddingGranularity, dwFlags, dwTotalFrames, dwInitialFrames,
    // dwStreams, dwSuggestedBufferSize, dwWidth, dwHeight, dwReserved[4].
    for v in [micros, 0, 0, AVIF_HASINDEX, 0, 0, 1, 0, width, height, 0, 0, 0, 0] {
        put_u32(&mut b, v);
    }
    b.extend_from_slice(b"LIST");
    put_u32(&mut b, 116);
    b.extend_from_slice(b"strlstrh");
    put_u32(&mut b, 56);
    b.extend_from_slice(b"vids");
    b.extend_from_slice(&fourcc);
    // dwFlags, wPriority + wLanguage, dwInitialFrames, dwScale, dwRate, dwStart, dwLength,
    // dwSuggestedBufferSize, dwQuality (-1: default), dwSampleSize.
    for v in [0, 0, 0, 1000, rate, 0, 0, 0, u32::MAX, 0] {
        put_u32(&mut b, v);
    }
    // rcFrame: left, top, right, bottom.
    for v in [0, 0, w.min(i32::from(i16::MAX)) as i16, h.min(i32::from(i16::MAX)) as i16] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(b"strf");
    put_u32(&mut b, 40);
    // BITMAPINFOHEADER: biSize, biWidth, biHeight, biPlanes + biBitCount (24), biCompression,
    // biSizeImage, biXPelsPerMeter, biYPelsPerMeter, biClrUsed, biClrImportant.
    let image = u32::try_from(u64::from(width) * u64::from(height) * 3).unwrap_or(u32::MAX);
    for v in [40, w as u32, h as u32, 1 | (24 << 16), u32::from_le_bytes(fourcc), image, 0, 0, 0, 0] {
        put_u32(&mut b, v);
    }
    b.extend_from_slice(b"LIST\0\0\0\0movi");
    debug_assert_eq!(b.len() as u64, at::FIRST_CHUNK);
    Ok(b)
}

/// Writes `v` at `pos` of `w`.
fn patch<W: Write + Seek>(w: &mut W, pos: u64, v: u32) -> io::Result<()> {
    w.seek(SeekFrom::Start(pos))?;
    w.write_all(&v.to_le_bytes())
}

impl<W: Write + Seek> AviWriter<W> {
    /// Writes the header of a `width`x`height` video at `fps` frames a second, frames of codec `fourcc`.
    pub(crate) fn create(mut w: W, width: u32, height: u32, fps: f64, fourcc: [u8; 4]) -> io::Result<Self> {
        let rate = (fps * 1000.0).round();
        if !(1.0..=f64::from(u32::MAX)).contains(&rate) {
            return Err(invalid(format!("{fps} frames a second cannot be written in AVI")));
        }
        let header = header(width, height, fps, rate as u32, fourcc)?;
        let base = w.stream_position()?;
        w.write_all(&header)?;
        Ok(AviWriter { w, base, len: header.len() as u64, index: Vec::new(), max_frame: 0 })
    }

    /// Appends one frame (`key`: whether it is a key frame, for `idx1`); empty data is a dropped frame.
    pub(crate) fn write_frame(&mut self, data: &[u8], key: bool) -> io::Result<()> {
        let too_large = || io::Error::other("AVI files over 1 GiB are not supported");
        let size = u32::try_from(data.len()).map_err(|_| too_large())?;
        let after = self.len + 8 + pad(u64::from(size));
        if after + 8 + 16 * (self.index.len() as u64 + 1) > MAX_WRITTEN {
            return Err(too_large());
        }
        let mut head = [0u8; 8];
        head[..4].copy_from_slice(b"00dc");
        head[4..].copy_from_slice(&size.to_le_bytes());
        self.w.write_all(&head)?;
        self.w.write_all(data)?;
        if size & 1 == 1 {
            self.w.write_all(&[0])?;
        }
        // Below 1 GiB, so the offset fits.
        let offset = (self.len - at::MOVI) as u32;
        self.index.push(IndexEntry { offset, size, key });
        self.max_frame = self.max_frame.max(size);
        self.len = after;
        Ok(())
    }

    /// The frames written so far.
    #[cfg(test)]
    pub(crate) fn frames(&self) -> u64 {
        self.index.len() as u64
    }

    /// Writes `idx1`, patches the sizes and frame counts, and hands back the writer (at the file's end).
    pub(crate) fn finish(self) -> io::Result<W> {
        let AviWriter { mut w, base, len, index, max_frame } = self;
        // All below 1 GiB (checked by write_frame), so they fit in u32.
        let idx1_size = 16 * index.len() as u32;
        let mut head = [0u8; 8];
        head[..4].copy_from_slice(b"idx1");
        head[4..].copy_from_slice(&idx1_size.to_le_bytes());
        w.write_all(&head)?;
        for e in &index {
            let flags = if e.key { AVIIF_KEYFRAME } else { 0 };
            let mut entry = [0u8; 16];
            entry[..4].copy_from_slice(b"00dc");
            entry[4..8].copy_from_slice(&flags.to_le_bytes());
            entry[8..12].copy_from_slice(&e.offset.to_le_bytes());
            entry[12..].copy_from_slice(&e.size.to_le_bytes());
            w.write_all(&entry)?;
        }
        let total = len + 8 + u64::from(idx1_size);
        let frames = index.len() as u32;
        patch(&mut w, base + at::RIFF_SIZE, (total - 8) as u32)?;
        patch(&mut w, base + at::MOVI_SIZE, (len - at::MOVI) as u32)?;
        patch(&mut w, base + at::TOTAL_FRAMES, frames)?;
        patch(&mut w, base + at::LENGTH, frames)?;
        patch(&mut w, base + at::AVIH_BUFFER, max_frame)?;
        patch(&mut w, base + at::STRH_BUFFER, max_frame)?;
        w.seek(SeekFrom::Start(base + total))?;
        Ok(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::path::Path;
    use std::process::Command;

    /// A chunk: FourCC, size, data, padding.
    fn chunk(id: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut b = id.to_vec();
        b.extend_from_slice(&(data.len() as u32).to_le_bytes());
        b.extend_from_slice(data);
        if data.len() % 2 == 1 {
            b.push(0);
        }
        b
    }

    /// A `LIST` (or, with `id` `RIFF`, a RIFF) of `kind` holding `children`.
    fn group(id: &[u8; 4], kind: &[u8; 4], children: &[Vec<u8>]) -> Vec<u8> {
        let mut data = kind.to_vec();
        children.iter().for_each(|c| data.extend_from_slice(c));
        chunk(id, &data)
    }

    /// A `LIST` of `kind`.
    fn list(kind: &[u8; 4], children: &[Vec<u8>]) -> Vec<u8> {
        group(b"LIST", kind, children)
    }

    /// Little-endian `u32`s.
    fn u32s(values: &[u32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// A `LIST strl` of a video stream.
    fn video_strl(fourcc: &[u8; 4], width: i32, height: i32, scale: u32, rate: u32, length: u32) -> Vec<u8> {
        let mut strh = b"vids".to_vec();
        strh.extend_from_slice(fourcc);
        strh.extend_from_slice(&u32s(&[0, 0, 0, scale, rate, 0, length, 0, 0, 0, 0, 0]));
        let strf = u32s(&[40, width as u32, height as u32, 1 | (24 << 16), u32::from_le_bytes(*fourcc), 0, 0, 0, 0, 0]);
        list(b"strl", &[chunk(b"strh", &strh), chunk(b"strf", &strf)])
    }

    /// A `LIST strl` of an audio stream.
    fn audio_strl() -> Vec<u8> {
        let mut strh = b"auds\0\0\0\0".to_vec();
        strh.extend_from_slice(&u32s(&[0, 0, 0, 1, 8000, 0, 8000, 0, 0, 1, 0, 0]));
        list(
            b"strl",
            &[
                chunk(b"strh", &strh),
                chunk(b"strf", &[1, 0, 1, 0, 0x40, 0x1f, 0, 0, 0x40, 0x1f, 0, 0, 1, 0, 8, 0, 0, 0]),
            ],
        )
    }

    /// A `LIST hdrl` of `strls`.
    fn hdrl(strls: &[Vec<u8>]) -> Vec<u8> {
        let mut children =
            vec![chunk(b"avih", &u32s(&[100_000, 0, 0, 0, 0, 0, strls.len() as u32, 0, 64, 48, 0, 0, 0, 0]))];
        children.extend_from_slice(strls);
        list(b"hdrl", &children)
    }

    /// An AVI of `strls` whose `movi` holds `movi`.
    fn avi(strls: &[Vec<u8>], movi: &[Vec<u8>]) -> Vec<u8> {
        group(b"RIFF", b"AVI ", &[hdrl(strls), list(b"movi", movi)])
    }

    /// A `LIST strl` of MJPEG at 10 fps.
    fn mjpeg10() -> Vec<u8> {
        video_strl(b"MJPG", 64, 48, 1, 10, 0)
    }

    /// Opens `bytes`.
    fn open(bytes: Vec<u8>) -> Result<AviDemuxer<Cursor<Vec<u8>>>, DemuxError> {
        AviDemuxer::open(Cursor::new(bytes))
    }

    /// A packet read: data, pts, key.
    type Got = (Vec<u8>, Option<Duration>, bool);

    /// Every packet, until the end or an error.
    fn read_all<R: Read + Seek + Send>(d: &mut AviDemuxer<R>) -> (Vec<Got>, Option<DemuxError>) {
        let (mut out, mut p) = (Vec::new(), Packet::default());
        for _ in 0..10_000 {
            match d.read_packet(&mut p) {
                Ok(true) => out.push((p.data.clone(), p.pts, p.key)),
                Ok(false) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
        panic!("no end after 10000 packets");
    }

    /// `n` milliseconds, as a pts.
    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    /// The data of test frame `i`, `len` bytes.
    fn frame(i: usize, len: usize) -> Vec<u8> {
        (0..len).map(|j| (i * 31 + j * 7) as u8).collect()
    }

    /// A 320x240 AVI of `frames` written by [`AviWriter`].
    fn write(frames: &[(Vec<u8>, bool)], fps: f64, fourcc: [u8; 4]) -> Vec<u8> {
        let mut w = AviWriter::create(Cursor::new(Vec::new()), 320, 240, fps, fourcc).unwrap();
        for (data, key) in frames {
            w.write_frame(data, *key).unwrap();
        }
        assert_eq!(w.frames(), frames.len() as u64);
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn write_then_read_round_trip() {
        let sizes = [1usize, 2, 7, 1000, 999, 3, 4096];
        let frames: Vec<_> = sizes.iter().enumerate().map(|(i, &n)| (frame(i, n), true)).collect();
        let bytes = write(&frames, 25.0, *b"MJPG");
        assert_eq!(u32_at(&bytes, 4), Some(bytes.len() as u32 - 8));
        let mut d = open(bytes).unwrap();
        let info = d.info().clone();
        assert_eq!((info.container, info.codec, info.width, info.height), ("avi", Codec::Mjpeg, 320, 240));
        assert_eq!((info.fps, info.frames), (Some(25.0), Some(sizes.len() as u64)));
        assert!(info.parameter_sets.is_empty());
        let (got, err) = read_all(&mut d);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(got.len(), frames.len());
        for (i, ((data, pts, key), (want, _))) in got.iter().zip(&frames).enumerate() {
            assert_eq!(data, want, "frame {i}");
            assert_eq!(*pts, ms(40 * i as u64));
            assert!(key);
        }
        assert!(!d.read_packet(&mut Packet::default()).unwrap(), "stays at the end");
    }

    #[test]
    fn writer_at_a_fractional_rate_and_an_offset() {
        let mut out = Cursor::new(vec![9u8; 5]);
        out.set_position(5);
        let mut w = AviWriter::create(out, 8, 6, 29.97, *b"MJPG").unwrap();
        w.write_frame(b"abc", true).unwrap();
        let bytes = w.finish().unwrap().into_inner();
        let mut d = open(bytes[5..].to_vec()).unwrap();
        assert_eq!(d.info().fps, Some(29.97));
        let (got, _) = read_all(&mut d);
        assert_eq!(got[0].0, b"abc");
        assert!(AviWriter::create(Cursor::new(Vec::new()), 8, 6, 0.0, *b"MJPG").is_err());
        assert!(AviWriter::create(Cursor::new(Vec::new()), 8, 6, f64::NAN, *b"MJPG").is_err());
    }

    #[test]
    fn h264_key_flags_come_from_idx1() {
        let keys = [true, false, false, true, false];
        let frames: Vec<_> = keys.iter().enumerate().map(|(i, &k)| (frame(i, 10 + i), k)).collect();
        let mut d = open(write(&frames, 30.0, *b"H264")).unwrap();
        assert_eq!(d.info().codec, Codec::H264);
        let (got, err) = read_all(&mut d);
        assert!(err.is_none());
        assert_eq!(got.iter().map(|g| g.2).collect::<Vec<_>>(), keys);
        assert_eq!(got[4].0, frames[4].0);
    }

    #[test]
    fn a_file_cut_inside_a_frame_is_truncated() {
        let frames: Vec<_> = (0..4).map(|i| (frame(i, 101), true)).collect();
        let bytes = write(&frames, 10.0, *b"MJPG");
        // The third frame's data starts at 224 + 2 * (8 + 102) + 8.
        for cut in [224 + 2 * 110 + 8 + 50, 224 + 2 * 110 + 3] {
            let mut d = open(bytes[..cut].to_vec()).unwrap();
            let (got, err) = read_all(&mut d);
            assert_eq!(got.len(), 2);
            assert_eq!(got[1].0, frames[1].0);
            let err = err.expect("an error").to_string();
            assert!(err.contains("truncated"), "{err}");
        }
        let err = open(bytes[..224 + 2 * 110 + 50].to_vec()).map(|mut d| read_all(&mut d).1);
        assert!(err.unwrap().unwrap().to_string().contains("truncated: frame 2's chunk"));
    }

    #[test]
    fn a_file_cut_between_frames_ends_there() {
        let frames: Vec<_> = (0..4).map(|i| (frame(i, 101), true)).collect();
        let bytes = write(&frames, 10.0, *b"MJPG");
        let (got, err) = read_all(&mut open(bytes[..224 + 2 * 110].to_vec()).unwrap());
        assert_eq!((got.len(), err.is_none()), (2, true));
    }

    #[test]
    fn xvid_is_unsupported_mpeg4() {
        let bytes = write(&[(b"x".to_vec(), true)], 25.0, *b"XVID");
        match open(bytes) {
            Err(DemuxError::Unsupported { codec }) => assert_eq!(codec, "mpeg4"),
            other => panic!("{:?}", other.map(|d| d.info().clone())),
        }
        match open(avi(&[video_strl(&[0; 4], 4, 4, 1, 10, 0)], &[])) {
            Err(DemuxError::Unsupported { codec }) => assert_eq!(codec, "rawvideo"),
            other => panic!("{:?}", other.map(|d| d.info().clone())),
        }
    }

    /// Whether opening failed with `Malformed`.
    fn is_malformed(r: Result<AviDemuxer<Cursor<Vec<u8>>>, DemuxError>) -> bool {
        matches!(r, Err(DemuxError::Malformed(_)))
    }

    #[test]
    fn garbage_and_empty_input_are_malformed() {
        assert!(is_malformed(open(Vec::new())));
        assert!(is_malformed(open(b"RIFF".to_vec())));
        let mut seed = 12345u32;
        let garbage: Vec<u8> = (0..4096)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (seed >> 16) as u8
            })
            .collect();
        assert!(is_malformed(open(garbage.clone())));
        let mut riff = b"RIFF\xff\xff\xff\xffAVI ".to_vec();
        riff.extend_from_slice(&garbage);
        assert!(is_malformed(open(riff)));
        assert!(is_malformed(open(avi(&[audio_strl()], &[]))), "no video stream");
        assert!(is_malformed(open(group(b"RIFF", b"AVI ", &[list(b"movi", &[])]))), "no hdrl");
        assert!(is_malformed(open(group(b"RIFF", b"AVI ", &[hdrl(&[mjpeg10()])]))), "no movi");
        let mut big = b"RIFF\0\0\0\x40AVI LIST\0\0\x20\0hdrl".to_vec();
        big.resize(4096, 0);
        let err = open(big).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("1 MiB"), "{err}");
    }

    #[test]
    fn no_cut_or_corrupted_byte_panics() {
        let movi = [
            chunk(b"00dc", b"abc"),
            chunk(b"JUNK", &[0; 6]),
            list(b"rec ", &[chunk(b"00dc", b"de"), chunk(b"01wb", b"x")]),
            chunk(b"00dc", b""),
            chunk(b"00dc", b"fgh"),
        ];
        let idx1 =
            chunk(b"idx1", &u32s(&[u32::from_le_bytes(*b"00dc"), 0x10, 4, 3, u32::from_le_bytes(*b"00dc"), 0, 0, 2]));
        let strls = [video_strl(b"H264", 64, 48, 1, 10, 4), audio_strl()];
        let mut riff = group(b"RIFF", b"AVI ", &[hdrl(&strls), list(b"movi", &movi), idx1]);
        riff.extend(group(b"RIFF", b"AVIX", &[list(b"movi", &[chunk(b"00dc", b"avix")])]));
        let (got, err) = read_all(&mut open(riff.clone()).unwrap());
        assert!(err.is_none());
        assert_eq!(got.iter().map(|g| g.2).collect::<Vec<_>>(), [true, false, true, true]);
        for cut in 0..riff.len() {
            if let Ok(mut d) = open(riff[..cut].to_vec()) {
                read_all(&mut d);
            }
        }
        for i in 0..riff.len() {
            for v in [0x00, 0x01, 0x7f, 0xff] {
                let mut bytes = riff.clone();
                bytes[i] = v;
                if let Ok(mut d) = open(bytes) {
                    read_all(&mut d);
                }
            }
        }
    }

    #[test]
    fn other_chunks_and_rec_lists_are_skipped() {
        let movi = [
            chunk(b"00dc", b"one"),
            chunk(b"JUNK", &[0; 7]),
            chunk(b"01wb", b"audio"),
            chunk(b"ix00", &[0; 24]),
            list(b"rec ", &[chunk(b"01wb", b"a"), chunk(b"00dc", b"two!"), list(b"rec ", &[chunk(b"00db", b"3")])]),
            chunk(b"01wb", b"more audio"),
            chunk(b"00dc", b"four"),
        ];
        let mut d = open(avi(&[mjpeg10(), audio_strl()], &movi)).unwrap();
        let (got, err) = read_all(&mut d);
        assert!(err.is_none(), "{err:?}");
        let data: Vec<&[u8]> = got.iter().map(|g| &g.0[..]).collect();
        assert_eq!(data, [&b"one"[..], b"two!", b"3", b"four"]);
        assert_eq!(got.iter().map(|g| g.1).collect::<Vec<_>>(), [ms(0), ms(100), ms(200), ms(300)]);
    }

    #[test]
    fn the_video_stream_number_picks_the_chunks() {
        let movi = [chunk(b"00wb", b"audio"), chunk(b"01dc", b"video"), chunk(b"00dc", b"not ours")];
        let mut d = open(avi(&[audio_strl(), video_strl(b"MJPG", 16, -9, 1, 5, 1)], &movi)).unwrap();
        assert_eq!((d.info().width, d.info().height, d.info().frames), (16, 9, Some(1)));
        let (got, err) = read_all(&mut d);
        assert!(err.is_none());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, b"video");
    }

    #[test]
    fn empty_chunks_are_dropped_frames_that_take_their_time() {
        let movi = [chunk(b"00dc", b"a"), chunk(b"00dc", b""), chunk(b"00dc", b""), chunk(b"00dc", b"b")];
        let (got, _) = read_all(&mut open(avi(&[mjpeg10()], &movi)).unwrap());
        assert_eq!(got.iter().map(|g| g.1).collect::<Vec<_>>(), [ms(0), ms(300)]);
        let frames = [(b"x".to_vec(), true), (Vec::new(), false), (b"y".to_vec(), true)];
        let (got, _) = read_all(&mut open(write(&frames, 10.0, *b"MJPG")).unwrap());
        assert_eq!(got.iter().map(|g| g.1).collect::<Vec<_>>(), [ms(0), ms(200)]);
    }

    #[test]
    fn opendml_avix_riffs_continue_the_stream() {
        let mut bytes = group(
            b"RIFF",
            b"AVI ",
            &[hdrl(&[mjpeg10()]), list(b"movi", &[chunk(b"00dc", b"f0"), chunk(b"00dc", b"f1")]), chunk(b"idx1", &[])],
        );
        bytes.extend(group(b"RIFF", b"AVIX", &[list(b"movi", &[chunk(b"00dc", b"f2")])]));
        bytes.extend(group(b"RIFF", b"AVIX", &[chunk(b"JUNK", b"pad"), list(b"movi", &[chunk(b"00dc", b"f3")])]));
        bytes.extend(chunk(b"JUNK", b"trailing"));
        let (got, err) = read_all(&mut open(bytes).unwrap());
        assert!(err.is_none());
        let data: Vec<&[u8]> = got.iter().map(|g| &g.0[..]).collect();
        assert_eq!(data, [&b"f0"[..], b"f1", b"f2", b"f3"]);
        assert_eq!(got[3].1, ms(300));
    }

    #[test]
    fn an_unpatched_movi_runs_to_the_index() {
        let mut bytes = avi(&[mjpeg10()], &[chunk(b"00dc", b"a"), chunk(b"00dc", b"b")]);
        bytes.extend(chunk(b"idx1", &[0; 32]));
        bytes.extend(chunk(b"00dc", b"after the index"));
        let movi = bytes.windows(4).position(|w| w == b"movi").unwrap();
        bytes[movi - 4..movi].fill(0);
        bytes[4..8].fill(0);
        let (got, err) = read_all(&mut open(bytes).unwrap());
        assert!(err.is_none());
        assert_eq!(got.len(), 2);
    }

    /// A file of `len` bytes: `head`, then zeros (nothing allocated for them).
    struct Sparse {
        head: Vec<u8>,
        len: u64,
        pos: u64,
    }

    impl Read for Sparse {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = (self.len.saturating_sub(self.pos)).min(buf.len() as u64) as usize;
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = self.head.get(self.pos as usize + i).copied().unwrap_or(0);
            }
            self.pos += n as u64;
            Ok(n)
        }
    }

    impl Seek for Sparse {
        fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
            self.pos = match to {
                SeekFrom::Start(p) => p,
                SeekFrom::End(d) => self.len.saturating_add_signed(d),
                SeekFrom::Current(d) => self.pos.saturating_add_signed(d),
            };
            Ok(self.pos)
        }
    }

    #[test]
    fn a_frame_over_256_mib_is_malformed() {
        let mut head = avi(&[mjpeg10()], &[]);
        head.extend_from_slice(b"00dc");
        head.extend_from_slice(&(300u32 << 20).to_le_bytes());
        let movi = head.windows(4).position(|w| w == b"movi").unwrap();
        head[movi - 4..movi].copy_from_slice(&(301u32 << 20).to_le_bytes());
        let mut d = AviDemuxer::open(Sparse { head, len: 400 << 20, pos: 0 }).unwrap();
        let mut p = Packet::default();
        let err = d.read_packet(&mut p).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("256 MiB"), "{err}");
        assert_eq!(p.data.capacity(), 0);
    }

    /// A `Write + Seek` that keeps nothing.
    #[derive(Default)]
    struct Discard {
        pos: u64,
        len: u64,
    }

    impl Write for Discard {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.pos += buf.len() as u64;
            self.len = self.len.max(self.pos);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Seek for Discard {
        fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
            if let SeekFrom::Start(p) = to {
                self.pos = p;
            }
            Ok(self.pos)
        }
    }

    #[test]
    fn the_writer_stops_at_1_gib() {
        let mut w = AviWriter::create(Discard::default(), 64, 48, 25.0, *b"MJPG").unwrap();
        let big = vec![0u8; 64 << 20];
        let err = (0..20).find_map(|_| w.write_frame(&big, true).err()).expect("an error");
        assert!(err.to_string().contains("over 1 GiB"), "{err}");
        assert_eq!(w.frames(), 15);
        let out = w.finish().unwrap();
        assert!(out.len <= 1 << 30);
        assert_eq!(out.pos, out.len);
    }

    /// Whether `tool` runs; if not, says so for the skipped test.
    fn have(tool: &str) -> bool {
        let ok = Command::new(tool).arg("-version").output().map(|o| o.status.success()).unwrap_or(false);
        if !ok {
            eprintln!("{tool} is not on PATH: skipped");
        }
        ok
    }

    /// Makes `out` with ffmpeg from a 64x48 test pattern at 10 fps.
    fn ffmpeg(frames: u32, codec: &[&str], out: &Path) -> bool {
        let status = Command::new("ffmpeg")
            .args(["-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-frames:v"])
            .arg(frames.to_string())
            .args(codec)
            .arg("-y")
            .arg(out)
            .status();
        status.map(|s| s.success()).unwrap_or(false)
    }

    /// Every packet of the AVI file at `path`, which must read to its end.
    fn read_file(path: &Path) -> (StreamInfo, Vec<Got>) {
        let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
        let mut d = AviDemuxer::open(file).unwrap();
        let (got, err) = read_all(&mut d);
        assert!(err.is_none(), "{err:?}");
        (d.info().clone(), got)
    }

    #[test]
    fn reads_ffmpegs_mjpeg_avi_and_ffprobe_reads_ours() {
        if !have("ffmpeg") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let theirs = dir.path().join("ffmpeg.avi");
        assert!(ffmpeg(5, &["-c:v", "mjpeg"], &theirs));
        let (info, got) = read_file(&theirs);
        assert_eq!((info.codec, info.width, info.height, info.fps), (Codec::Mjpeg, 64, 48, Some(10.0)));
        assert_eq!(got.len(), 5);
        for (i, (data, pts, key)) in got.iter().enumerate() {
            assert!(data.starts_with(&[0xff, 0xd8]), "frame {i} is a JPEG");
            assert_eq!(*pts, ms(100 * i as u64));
            assert!(key);
        }

        let ours = dir.path().join("ours.avi");
        let file = std::io::BufWriter::new(std::fs::File::create(&ours).unwrap());
        let mut w = AviWriter::create(file, 64, 48, 10.0, *b"MJPG").unwrap();
        for (data, _, _) in &got {
            w.write_frame(data, true).unwrap();
        }
        w.finish().unwrap().flush().unwrap();
        let (info, again) = read_file(&ours);
        assert_eq!((info.frames, again.len()), (Some(5), 5));
        assert!(again.iter().zip(&got).all(|(a, b)| a.0 == b.0));
        if !have("ffprobe") {
            return;
        }
        let probe = Command::new("ffprobe")
            .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
            .args(["-show_entries", "stream=nb_read_frames,codec_name", "-of", "csv=p=0"])
            .arg(&ours)
            .output()
            .unwrap();
        assert!(probe.status.success(), "{}", String::from_utf8_lossy(&probe.stderr));
        assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), "mjpeg,5");
    }

    #[test]
    fn reads_ffmpegs_h264_avi() {
        if !have("ffmpeg") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h264.avi");
        if !ffmpeg(10, &["-c:v", "libx264", "-g", "4", "-bf", "0", "-pix_fmt", "yuv420p"], &path) {
            eprintln!("ffmpeg has no libx264: skipped");
            return;
        }
        let (info, got) = read_file(&path);
        assert_eq!((info.codec, info.width, info.height, info.fps), (Codec::H264, 64, 48, Some(10.0)));
        assert_eq!(got.len(), 10);
        assert!(got[0].0.starts_with(&[0, 0, 0, 1]) || got[0].0.starts_with(&[0, 0, 1]), "Annex-B");
        let keys: Vec<bool> = got.iter().map(|g| g.2).collect();
        assert_eq!(keys, [true, false, false, false, true, false, false, false, true, false]);
    }
}
