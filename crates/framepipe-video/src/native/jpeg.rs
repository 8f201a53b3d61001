//! Motion-JPEG frames through `zune-jpeg`, decoded straight into the pooled BGR frame.

use framepipe_vision::Frame;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use crate::frames::fit;

/// The largest JPEG side the decoder accepts (a bound on memory for hostile input).
pub(crate) const MAX_SIDE: usize = 16_384;

fn options() -> DecoderOptions {
    DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::BGR).set_max_width(MAX_SIDE).set_max_height(MAX_SIDE)
}

/// The size a JPEG announces, without decoding it.
#[cfg(test)]
pub(crate) fn dimensions(jpeg: &[u8]) -> Result<(usize, usize), String> {
    let mut d = JpegDecoder::new_with_options(jpeg, options());
    d.decode_headers().map_err(|e| format!("bad JPEG: {e:?}"))?;
    d.dimensions().ok_or_else(|| "bad JPEG: no frame header".to_string())
}

/// Decodes one JPEG into `frame` (resized to the JPEG's size if it differs). Gray JPEGs come out
/// as BGR with equal channels.
pub(crate) fn decode_into(jpeg: &[u8], frame: &mut Frame) -> Result<(), String> {
    let mut d = JpegDecoder::new_with_options(jpeg, options());
    d.decode_headers().map_err(|e| format!("bad JPEG: {e:?}"))?;
    let (w, h) = d.dimensions().ok_or_else(|| "bad JPEG: no frame header".to_string())?;
    if w == 0 || h == 0 {
        return Err("bad JPEG: zero size".into());
    }
    fit(frame, w, h)?;
    match d.get_output_colorspace() {
        Some(ColorSpace::BGR) => d.decode_into(frame.data_mut()).map_err(|e| format!("bad JPEG: {e:?}")),
        Some(ColorSpace::Luma) => {
            // zune-jpeg keeps gray images gray: decode into the first third, then spread.
            let n = w * h;
            let data = frame.data_mut();
            d.decode_into(&mut data[..n]).map_err(|e| format!("bad JPEG: {e:?}"))?;
            for i in (0..n).rev() {
                let g = data[i];
                data[3 * i..3 * i + 3].fill(g);
            }
            Ok(())
        }
        other => Err(format!("JPEG colour space {other:?} is not supported (expected YCbCr or gray)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use framepipe_vision::PixelFormat;

    fn encode(bgr: &[u8], w: u16, h: u16, ct: jpeg_encoder::ColorType) -> Vec<u8> {
        let mut out = Vec::new();
        jpeg_encoder::Encoder::new(&mut out, 95).encode(bgr, w, h, ct).unwrap();
        out
    }

    #[test]
    fn colour_and_gray_jpegs_decode_to_bgr_and_garbage_is_an_error() {
        let (w, h) = (40usize, 24usize);
        let bgr: Vec<u8> = (0..w * h).flat_map(|i| [(i % 200) as u8, 90, 180]).collect();
        let jpeg = encode(&bgr, w as u16, h as u16, jpeg_encoder::ColorType::Bgr);
        assert_eq!(dimensions(&jpeg).unwrap(), (w, h));
        let mut f = Frame::new(1, 1, PixelFormat::Bgr8).unwrap();
        decode_into(&jpeg, &mut f).unwrap();
        assert_eq!((f.width(), f.height()), (w, h));
        let mean_err = bgr.iter().zip(f.data()).map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs()).sum::<i32>()
            / bgr.len() as i32;
        assert!(mean_err <= 4, "mean error {mean_err}");

        let gray: Vec<u8> = (0..w * h).map(|i| (i * 3 % 256) as u8).collect();
        let jg = encode(&gray, w as u16, h as u16, jpeg_encoder::ColorType::Luma);
        decode_into(&jg, &mut f).unwrap();
        assert!(f.data().chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]));

        assert!(decode_into(b"\xFF\xD8 not really", &mut f).unwrap_err().contains("JPEG"));
    }
}
