//! MP4 and QuickTime MOV (ISO/IEC 14496-12): the `mp4` crate reads the header (`moov`); the
//! first video track's sample tables (`stsz`, `stco`/`co64`, `stsc`, `stts`, `ctts`, `stss`) are
//! flattened here into one table of (offset, size, presentation time, key), and each sample is
//! read into the packet's reused buffer, so reading allocates nothing per frame.
//!
//! Presentation times are decode times plus the composition offsets (`ctts`, which B-frames
//! need), shifted so that the earliest frame is at 0 (what the edit list of an encoder's B-frame
//! delay does).

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::time::Duration;

use ::mp4::{Mp4Reader, TrackType};

use super::annexb::avcc_to_annexb;
use super::{codec_name, Codec, DemuxError, Demuxer, Packet, StreamInfo};

/// One sample of the video track.
#[derive(Clone, Copy, Debug)]
struct Sample {
    offset: u64,
    size: u32,
    /// Presentation time in the track's timescale, from the earliest frame.
    pts: u64,
    key: bool,
}

/// The first video track of an MP4/MOV file.
pub(crate) struct Mp4Demuxer {
    file: BufReader<File>,
    file_len: u64,
    info: StreamInfo,
    samples: Vec<Sample>,
    next: usize,
    timescale: u32,
    /// For H.264: the NAL length size of the samples.
    length_size: usize,
    raw: Vec<u8>,
}

fn bad(e: impl std::fmt::Display) -> DemuxError {
    DemuxError::Malformed(format!("not a readable MP4/MOV file: {e}"))
}

impl Mp4Demuxer {
    /// Reads the header of `file` and prepares its first video track.
    pub(crate) fn open(file: File) -> Result<Self, DemuxError> {
        let file_len = file.metadata()?.len();
        let mut reader = BufReader::new(file);
        let moov = child(&mut reader, (0, file_len), b"moov")?;
        let sample_entry = match moov {
            Some(moov) => video_sample_entry(&mut reader, moov)?,
            None => None,
        };
        // Read the boxes up to the end of `moov` only: a file cut in its media data (a partial
        // download with the index first) still has a whole header.
        let header_end = moov.map_or(file_len, |(_, end)| end).min(file_len);
        reader.seek(SeekFrom::Start(0))?;
        let mp4 = Mp4Reader::read_header(&mut reader, header_end).map_err(bad)?;
        let track = mp4
            .tracks()
            .values()
            .filter(|t| matches!(t.track_type(), Ok(TrackType::Video)))
            .min_by_key(|t| t.track_id())
            .ok_or_else(|| DemuxError::Malformed("the MP4/MOV file has no video track".into()))?;
        let stbl = &track.trak.mdia.minf.stbl;
        let (codec, length_size, parameter_sets) = match (&stbl.stsd.avc1, sample_entry.as_deref()) {
            (Some(avc1), _) => {
                // The parameter sets of `avcC`, as start-code NAL units for the decoder.
                let c = &avc1.avcc;
                let mut ps = Vec::new();
                for nal in c.sequence_parameter_sets.iter().chain(&c.picture_parameter_sets) {
                    ps.extend_from_slice(&[0, 0, 0, 1]);
                    ps.extend_from_slice(&nal.bytes);
                }
                (Codec::H264, usize::from(c.length_size_minus_one & 3) + 1, ps)
            }
            (None, Some(tag)) if codec_name(tag) == "mjpeg" => (Codec::Mjpeg, 4, Vec::new()),
            (None, tag) => return Err(DemuxError::Unsupported { codec: codec_name(tag.unwrap_or("")) }),
        };
        let timescale = track.timescale().max(1);
        let samples = sample_table(track, file_len)?;
        let frames = samples.len() as u64;
        let duration_ticks =
            stbl.stts.entries.iter().map(|e| u64::from(e.sample_count) * u64::from(e.sample_delta)).sum::<u64>();
        let fps = (duration_ticks > 0 && frames > 0)
            .then(|| frames as f64 * f64::from(timescale) / duration_ticks as f64)
            .filter(|f| f.is_finite() && *f > 0.0);
        let info = StreamInfo {
            container: "mp4",
            codec,
            width: usize::from(track.width()),
            height: usize::from(track.height()),
            fps,
            frames: Some(frames),
            parameter_sets,
        };
        Ok(Mp4Demuxer { file: reader, file_len, info, samples, next: 0, timescale, length_size, raw: Vec::new() })
    }
}

/// Flattens the sample tables into one entry per sample, checked against the file's length.
fn sample_table(track: &::mp4::Mp4Track, file_len: u64) -> Result<Vec<Sample>, DemuxError> {
    let stbl = &track.trak.mdia.minf.stbl;
    let count = if stbl.stsz.sample_size == 0 { stbl.stsz.sample_sizes.len() } else { stbl.stsz.sample_count as usize };
    // A fixed sample size with a huge count would otherwise make a huge table from a tiny box.
    let size_of = |i: usize| {
        if stbl.stsz.sample_size == 0 {
            stbl.stsz.sample_sizes[i]
        } else {
            stbl.stsz.sample_size
        }
    };
    if count as u64 > file_len {
        return Err(bad(format!("{count} samples in a file of {file_len} bytes")));
    }
    let chunks: Vec<u64> = match (&stbl.co64, &stbl.stco) {
        (Some(c), _) => c.entries.clone(),
        (None, Some(c)) => c.entries.iter().map(|&o| u64::from(o)).collect(),
        (None, None) => return Err(bad("no chunk offsets (stco/co64)")),
    };
    let mut samples = Vec::with_capacity(count);
    // stsc: runs of chunks with the same number of samples per chunk.
    let stsc = &stbl.stsc.entries;
    let mut i = 0usize;
    for (k, e) in stsc.iter().enumerate() {
        let first = e.first_chunk.max(1) as usize;
        let last = stsc.get(k + 1).map_or(chunks.len(), |n| (n.first_chunk.max(1) as usize).saturating_sub(1));
        for chunk in first..=last.min(chunks.len()) {
            let mut offset = chunks[chunk - 1];
            for _ in 0..e.samples_per_chunk {
                if i >= count {
                    break;
                }
                let size = size_of(i);
                samples.push(Sample { offset, size, pts: 0, key: stbl.stss.is_none() });
                offset = offset.saturating_add(u64::from(size));
                i += 1;
            }
        }
    }
    if samples.len() < count {
        return Err(bad(format!("the chunk tables place {} of {count} samples", samples.len())));
    }
    // Decode times (stts), then composition offsets (ctts).
    let mut dts = Vec::with_capacity(count);
    let mut t = 0u64;
    for e in &stbl.stts.entries {
        for _ in 0..e.sample_count {
            if dts.len() == count {
                break;
            }
            dts.push(t);
            t = t.saturating_add(u64::from(e.sample_delta));
        }
    }
    while dts.len() < count {
        dts.push(t);
    }
    let mut pts: Vec<i64> = dts.iter().map(|&d| d.min(i64::MAX as u64) as i64).collect();
    if let Some(ctts) = &stbl.ctts {
        let mut j = 0usize;
        for e in &ctts.entries {
            for _ in 0..e.sample_count {
                if j == count {
                    break;
                }
                pts[j] = pts[j].saturating_add(i64::from(e.sample_offset));
                j += 1;
            }
        }
    }
    let min = pts.iter().copied().min().unwrap_or(0);
    for (s, p) in samples.iter_mut().zip(&pts) {
        s.pts = (p - min) as u64;
    }
    if let Some(stss) = &stbl.stss {
        for &n in &stss.entries {
            if let Some(s) = (n as usize).checked_sub(1).and_then(|k| samples.get_mut(k)) {
                s.key = true;
            }
        }
    }
    Ok(samples)
}

impl Demuxer for Mp4Demuxer {
    fn info(&self) -> &StreamInfo {
        &self.info
    }

    fn read_packet(&mut self, packet: &mut Packet) -> Result<bool, DemuxError> {
        let Some(&s) = self.samples.get(self.next) else { return Ok(false) };
        let n = self.next;
        self.next += 1;
        if s.offset.saturating_add(u64::from(s.size)) > self.file_len {
            self.next = self.samples.len();
            return Err(DemuxError::Malformed(format!(
                "truncated: frame {n}'s sample (bytes {}..{}) runs past the end of the file ({} bytes)",
                s.offset,
                s.offset + u64::from(s.size),
                self.file_len
            )));
        }
        self.file.seek(SeekFrom::Start(s.offset))?;
        let buf = if self.info.codec == Codec::H264 { &mut self.raw } else { &mut packet.data };
        buf.clear();
        buf.resize(s.size as usize, 0);
        self.file.read_exact(buf)?;
        if self.info.codec == Codec::H264 {
            avcc_to_annexb(&self.raw, self.length_size, &mut packet.data)
                .map_err(|e| DemuxError::Malformed(format!("frame {n}: {e}")))?;
        }
        let ns = u128::from(s.pts) * 1_000_000_000 / u128::from(self.timescale);
        packet.pts = Some(Duration::from_nanos(ns.min(u128::from(u64::MAX)) as u64));
        packet.key = s.key;
        Ok(true)
    }
}

/// The sample entry type (`avc1`, `hvc1`, `mp4v`, …) of the first video track in `moov` (its
/// content range), read by walking the boxes `trak/mdia/{hdlr,minf/stbl/stsd}` ourselves: the `mp4` crate keeps only the
/// entries it parses, and the name of one it does not is what the error message needs.
fn video_sample_entry<R: Read + Seek>(r: &mut R, moov: (u64, u64)) -> Result<Option<String>, DemuxError> {
    for trak in children(r, moov, b"trak")? {
        let Some(mdia) = child(r, trak, b"mdia")? else { continue };
        let Some(hdlr) = child(r, mdia, b"hdlr")? else { continue };
        let mut h = [0u8; 12];
        r.seek(SeekFrom::Start(hdlr.0))?;
        if r.read_exact(&mut h).is_err() || &h[8..12] != b"vide" {
            continue;
        }
        let Some(minf) = child(r, mdia, b"minf")? else { continue };
        let Some(stbl) = child(r, minf, b"stbl")? else { continue };
        let Some(stsd) = child(r, stbl, b"stsd")? else { continue };
        let mut e = [0u8; 16];
        r.seek(SeekFrom::Start(stsd.0))?;
        if r.read_exact(&mut e).is_ok() {
            return Ok(Some(String::from_utf8_lossy(&e[12..16]).into_owned()));
        }
    }
    Ok(None)
}

/// The content range of the first child box of type `kind` within `range`.
fn child<R: Read + Seek>(r: &mut R, range: (u64, u64), kind: &[u8; 4]) -> Result<Option<(u64, u64)>, DemuxError> {
    Ok(children(r, range, kind)?.into_iter().next())
}

/// The content ranges of the child boxes of type `kind` within `range` (at most 64).
fn children<R: Read + Seek>(r: &mut R, range: (u64, u64), kind: &[u8; 4]) -> Result<Vec<(u64, u64)>, DemuxError> {
    let mut found = Vec::new();
    let mut at = range.0;
    for _ in 0..10_000 {
        if at + 8 > range.1 || found.len() >= 64 {
            break;
        }
        r.seek(SeekFrom::Start(at))?;
        let mut h = [0u8; 8];
        if r.read_exact(&mut h).is_err() {
            break;
        }
        let mut size = u64::from(u32::from_be_bytes([h[0], h[1], h[2], h[3]]));
        let mut header = 8;
        if size == 1 {
            let mut l = [0u8; 8];
            if r.read_exact(&mut l).is_err() {
                break;
            }
            size = u64::from_be_bytes(l);
            header = 16;
        } else if size == 0 {
            size = range.1 - at;
        }
        if size < header || at + size > range.1 {
            // A box that runs past its parent: the file is cut short (a partial download).
            if &h[4..8] == kind {
                found.push((at + header, range.1));
            }
            break;
        }
        if &h[4..8] == kind {
            found.push((at + header, at + size));
        }
        at += size;
    }
    Ok(found)
}
