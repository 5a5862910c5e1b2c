//! A structural check of JPEG files before decoding. The decoder pads a truncated file with
//! grey and trusts the header's size, so a JPEG cut in half would be labelled as if whole, and
//! a tiny file declaring 4096×4096 would cost a full-size decode. Walking the markers finds
//! both without decoding a pixel.

/// Why a JPEG's structure is refused; reads as the end of "cannot be decoded as JPEG: …".
pub(crate) fn check_jpeg(bytes: &[u8]) -> Result<(), String> {
    let truncated = || "the file ends before its end-of-image marker (it is truncated)".to_string();
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return Err("it does not start with a JPEG start-of-image marker".into());
    }
    let mut pos = 2;
    let mut size = None;
    let mut entropy_bytes = 0usize;
    loop {
        if pos >= bytes.len() {
            return Err(truncated());
        }
        if bytes[pos] != 0xFF {
            return Err(format!(
                "byte {pos} should start a marker but is 0x{:02x}",
                bytes[pos]
            ));
        }
        while pos < bytes.len() && bytes[pos] == 0xFF {
            pos += 1;
        }
        let Some(&marker) = bytes.get(pos) else {
            return Err(truncated());
        };
        pos += 1;
        match marker {
            0xD9 => break,
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let Some(length) = bytes.get(pos..pos + 2) else {
            return Err(truncated());
        };
        let length = usize::from(u16::from_be_bytes([length[0], length[1]]));
        if length < 2 || pos + length > bytes.len() {
            return Err(truncated());
        }
        let is_frame = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if is_frame && length >= 7 {
            let height = u16::from_be_bytes([bytes[pos + 3], bytes[pos + 4]]);
            let width = u16::from_be_bytes([bytes[pos + 5], bytes[pos + 6]]);
            size = Some((usize::from(width), usize::from(height)));
        }
        pos += length;
        if marker == 0xDA {
            // Entropy-coded data runs to the next marker that is not a stuffed 0xFF00 or a
            // restart marker.
            loop {
                match bytes.get(pos..pos + 2) {
                    None => return Err(truncated()),
                    Some([0xFF, next]) if *next != 0x00 && !(0xD0..=0xD7).contains(next) => break,
                    Some([0xFF, _]) => {
                        pos += 2;
                        entropy_bytes += 2;
                    }
                    Some(_) => {
                        pos += 1;
                        entropy_bytes += 1;
                    }
                }
            }
        }
    }
    let Some((width, height)) = size else {
        return Err("it has no frame header giving its size".into());
    };
    // Every 8×8 block of the first scan costs at least one bit: fewer bytes than that cannot
    // hold the image the header declares.
    let blocks = width.div_ceil(8) * height.div_ceil(8);
    if entropy_bytes * 8 < blocks {
        return Err(format!(
            "it holds {entropy_bytes} bytes of image data, too few for the {width}×{height} its header declares"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_jpeg;

    fn jpeg(side: u32) -> Vec<u8> {
        let image = image::GrayImage::from_fn(side, side, |x, y| {
            image::Luma([((x * 7 + y * 3) % 256) as u8])
        });
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .encode_image(&image)
            .unwrap();
        out
    }

    #[test]
    fn a_whole_jpeg_passes() {
        assert_eq!(check_jpeg(&jpeg(28)), Ok(()));
        assert_eq!(check_jpeg(&jpeg(300)), Ok(()));
    }

    #[test]
    fn a_jpeg_cut_short_is_truncated() {
        let whole = jpeg(64);
        for cut in [3, whole.len() / 2, whole.len() - 2] {
            let err = check_jpeg(&whole[..cut]).unwrap_err();
            assert!(err.contains("truncated"), "cut at {cut}: {err}");
        }
    }

    #[test]
    fn a_header_declaring_more_than_the_data_holds_is_refused() {
        let mut lying = jpeg(28);
        let sof = lying.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        lying[sof + 5..sof + 9].copy_from_slice(&[0x10, 0x00, 0x10, 0x00]);
        let err = check_jpeg(&lying).unwrap_err();
        assert!(err.contains("too few for the 4096×4096"), "{err}");
        // It can never decode, so it costs no decode budget: it is refused as invalid instead
        // of being told to retry.
        let limits = crate::data::ImageLimits::default();
        assert_eq!(crate::data::decode_cost(&lying, limits), 0);
        assert!(crate::data::decode_cost(&jpeg(28), limits) > 0);
    }
}
