//! H.264 byte-stream plumbing (ITU-T H.264 Annex B; ISO/IEC 14496-15 for `avcC`):
//!
//! * [`avcc_to_annexb`]: an MP4/Matroska sample (NAL units behind 1-, 2- or 4-byte lengths) to
//!   start-code form, which OpenH264 reads;
//! * [`parameter_sets`]: the SPS and PPS of an `AVCDecoderConfigurationRecord`, in start-code form;
//! * [`AnnexB`]: a raw `.h264` file cut into access units (7.4.1.2.3: an access unit starts at an
//!   access unit delimiter, SPS, PPS or SEI that follows a slice, or at a slice whose
//!   `first_mb_in_slice` is 0).

use std::io::Read;

use super::{Codec, DemuxError, Demuxer, Packet, StreamInfo};

const START: [u8; 4] = [0, 0, 0, 1];

/// The largest access unit accepted (a bound for hostile input).
const MAX_ACCESS_UNIT: usize = 64 << 20;

/// Rewrites length-prefixed NAL units (`length_size` bytes, big-endian) as start-code NAL units
/// into `out` (cleared first; its buffer is reused).
pub(crate) fn avcc_to_annexb(src: &[u8], length_size: usize, out: &mut Vec<u8>) -> Result<(), String> {
    if !matches!(length_size, 1 | 2 | 4) {
        return Err(format!("NAL length size {length_size} (expected 1, 2 or 4)"));
    }
    out.clear();
    let mut rest = src;
    while !rest.is_empty() {
        if rest.len() < length_size {
            return Err("a NAL unit length is cut short".into());
        }
        let n = rest[..length_size].iter().fold(0usize, |a, &b| (a << 8) | usize::from(b));
        rest = &rest[length_size..];
        if n > rest.len() {
            return Err(format!("a NAL unit of {n} bytes runs past its sample ({} left)", rest.len()));
        }
        out.extend_from_slice(&START);
        out.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
    }
    Ok(())
}

/// The NAL length size and the parameter sets (start-code form) of an `avcC` record.
pub(crate) fn parameter_sets(avcc: &[u8]) -> Result<(usize, Vec<u8>), String> {
    let bad = |what: &str| format!("bad avcC record: {what}");
    if avcc.len() < 7 || avcc[0] != 1 {
        return Err(bad("too short or not version 1"));
    }
    let length_size = usize::from(avcc[4] & 3) + 1;
    let mut out = Vec::new();
    let mut at = 5;
    for kind in ["SPS", "PPS"] {
        let count = match kind {
            "SPS" => usize::from(avcc.get(at).ok_or_else(|| bad("no SPS count"))? & 0x1f),
            _ => usize::from(*avcc.get(at).ok_or_else(|| bad("no PPS count"))?),
        };
        at += 1;
        for _ in 0..count {
            let len = avcc.get(at..at + 2).ok_or_else(|| bad("cut short"))?;
            let n = usize::from(u16::from_be_bytes([len[0], len[1]]));
            at += 2;
            let nal = avcc.get(at..at + n).ok_or_else(|| bad(&format!("{kind} cut short")))?;
            out.extend_from_slice(&START);
            out.extend_from_slice(nal);
            at += n;
        }
    }
    Ok((length_size, out))
}

/// A raw H.264 Annex-B file, cut into access units.
pub(crate) struct AnnexB<R> {
    reader: R,
    info: StreamInfo,
    /// Bytes read and not yet handed out; `buf[..scan]` has been searched for start codes.
    buf: Vec<u8>,
    eof: bool,
    /// Where in `buf` the access unit being built started, and whether it holds a slice yet.
    has_slice: bool,
}

impl<R: Read + Send> AnnexB<R> {
    /// Starts reading; the stream must begin with a start code.
    pub(crate) fn open(mut reader: R) -> Result<Self, DemuxError> {
        let mut buf = vec![0u8; 0];
        let mut chunk = [0u8; 4096];
        let n = reader.read(&mut chunk)?;
        buf.extend_from_slice(&chunk[..n]);
        if !(buf.starts_with(&[0, 0, 1]) || buf.starts_with(&START)) {
            return Err(DemuxError::Malformed("not an H.264 Annex-B stream (no start code)".into()));
        }
        let info = StreamInfo {
            container: "h264",
            codec: Codec::H264,
            width: 0,
            height: 0,
            fps: None,
            frames: None,
            parameter_sets: Vec::new(),
        };
        Ok(AnnexB { reader, info, buf, eof: n == 0, has_slice: false })
    }

    /// Reads more bytes; false at the end of the file.
    fn fill(&mut self) -> Result<bool, DemuxError> {
        if self.eof {
            return Ok(false);
        }
        let old = self.buf.len();
        self.buf.resize(old + 65536, 0);
        let n = self.reader.read(&mut self.buf[old..])?;
        self.buf.truncate(old + n);
        self.eof = n == 0;
        Ok(n > 0)
    }
}

/// The start codes in `buf` from `from`: (position of the first zero, position of the NAL header).
fn next_start(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while i + 3 <= buf.len() {
        if buf[i + 2] > 1 {
            i += 3;
        } else if buf[i] == 0 && buf[i + 1] == 0 && buf[i + 2] == 1 {
            let start = if i > 0 && buf[i - 1] == 0 { i - 1 } else { i };
            return Some((start, i + 3));
        } else {
            i += 1;
        }
    }
    None
}

/// Whether the NAL unit at `nal` (its header byte and what follows) begins a new access unit
/// after a slice has been seen.
fn starts_access_unit(nal: &[u8]) -> bool {
    let Some(&h) = nal.first() else { return false };
    match h & 0x1f {
        6..=9 | 14..=18 => true,
        // A slice whose first_mb_in_slice is 0: its ue(v) code is the single bit 1.
        1 | 5 => nal.get(1).is_some_and(|b| b & 0x80 != 0),
        _ => false,
    }
}

impl<R: Read + Send> Demuxer for AnnexB<R> {
    fn info(&self) -> &StreamInfo {
        &self.info
    }

    fn read_packet(&mut self, packet: &mut Packet) -> Result<bool, DemuxError> {
        // The access unit runs from the first start code in `buf` to the start code of the NAL
        // unit that begins the next one.
        let mut search = 0;
        self.has_slice = false;
        loop {
            let mut cut = None;
            while let Some((start, header)) = next_start(&self.buf, search) {
                if header >= self.buf.len() {
                    break; // need the header byte (and the next) to decide
                }
                let nal = &self.buf[header..(header + 2).min(self.buf.len())];
                if nal.len() < 2 && !self.eof {
                    break;
                }
                let kind = nal[0] & 0x1f;
                if start > 0 && self.has_slice && starts_access_unit(nal) {
                    cut = Some(start);
                    break;
                }
                if matches!(kind, 1 | 5) {
                    self.has_slice = true;
                }
                search = header;
            }
            if let Some(end) = cut {
                packet.data.clear();
                packet.data.extend_from_slice(&self.buf[..end]);
                self.buf.drain(..end);
                packet.pts = None;
                packet.key = packet_has_idr(&packet.data);
                return Ok(true);
            }
            if self.buf.len() > MAX_ACCESS_UNIT {
                return Err(DemuxError::Malformed(format!(
                    "an access unit over {} MiB (not an H.264 stream?)",
                    MAX_ACCESS_UNIT >> 20
                )));
            }
            if !self.fill()? {
                if self.buf.iter().all(|&b| b == 0) {
                    return Ok(false);
                }
                packet.data.clear();
                packet.data.append(&mut self.buf);
                packet.pts = None;
                packet.key = packet_has_idr(&packet.data);
                return Ok(true);
            }
        }
    }
}

/// Whether an Annex-B access unit holds an IDR slice.
fn packet_has_idr(au: &[u8]) -> bool {
    let mut at = 0;
    while let Some((_, h)) = next_start(au, at) {
        if au.get(h).is_some_and(|b| b & 0x1f == 5) {
            return true;
        }
        at = h;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_prefixed_units_become_start_codes_and_bad_lengths_are_errors() {
        let mut out = Vec::new();
        avcc_to_annexb(&[0, 0, 0, 2, 0x65, 0xAA, 0, 0, 0, 1, 0x41], 4, &mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 1, 0x65, 0xAA, 0, 0, 0, 1, 0x41]);
        avcc_to_annexb(&[0, 1, 0x09], 2, &mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 1, 0x09]);
        assert!(avcc_to_annexb(&[0, 0, 0, 9, 1], 4, &mut out).unwrap_err().contains("runs past"));
        assert!(avcc_to_annexb(&[0, 0], 4, &mut out).is_err());
        assert!(avcc_to_annexb(&[1], 3, &mut out).is_err());
    }

    #[test]
    fn avcc_records_give_their_parameter_sets() {
        let rec = [1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 3, 0x67, 1, 2, 1, 0, 2, 0x68, 9];
        let (ls, ps) = parameter_sets(&rec).unwrap();
        assert_eq!(ls, 4);
        assert_eq!(ps, [0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x68, 9]);
        assert!(parameter_sets(&rec[..9]).is_err());
        assert!(parameter_sets(&[]).is_err());
    }

    #[test]
    fn a_byte_stream_is_cut_at_access_unit_boundaries() {
        // SPS, PPS, IDR slice (first_mb 0), slice (first_mb != 0: same picture), AUD, P slice,
        // P slice with first_mb 0 (a new picture), three-byte start codes mixed in.
        let mut s = Vec::new();
        for nal in [
            &[0x67, 0x42, 1][..],
            &[0x68, 0xce][..],
            &[0x65, 0x88, 1][..],
            &[0x65, 0x40, 2][..],
            &[0x09, 0xf0][..],
            &[0x41, 0x9a, 3][..],
            &[0x41, 0x80, 4][..],
        ] {
            s.extend_from_slice(if nal[0] == 0x41 { &[0, 0, 1][..] } else { &START[..] });
            s.extend_from_slice(nal);
        }
        let mut d = AnnexB::open(std::io::Cursor::new(s)).unwrap();
        let mut p = Packet::default();
        let mut aus = vec![];
        while d.read_packet(&mut p).unwrap() {
            aus.push((p.data.clone(), p.key));
        }
        assert_eq!(aus.len(), 3, "{aus:?}");
        assert!(aus[0].1 && !aus[1].1);
        assert_eq!(aus[0].0.iter().filter(|&&b| b == 0x65).count(), 2, "both IDR slices in one unit");
        assert!(aus[1].0.starts_with(&[0, 0, 0, 1, 0x09]));
        assert_eq!(aus[2].0, [0, 0, 1, 0x41, 0x80, 4]);
        assert!(AnnexB::open(std::io::Cursor::new(b"RIFF....".to_vec())).is_err());
    }
}
