//! The protobuf codec of `aelabel.v1`: prost's, except that a request that is not a valid
//! message is refused with `INVALID_ARGUMENT` naming the first bad image and its field
//! (`images[2].id: image 2 has an id that is not UTF-8 …`), where tonic's own codec answers
//! `INTERNAL` with prost's type path and no index.

use crate::wire as pb;
use prost::bytes::Buf;
use prost::encoding::decode_varint;
use prost::Message;
use std::marker::PhantomData;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic::Status;
use tonic_prost::ProstEncoder;

/// Where a message keeps its images, so that a decoding failure can name the bad one.
pub trait ImageField {
    /// The name of the repeated `Image` field numbered 1, for the requests that carry images;
    /// `None` for every other message (a bad one is the sender's bug, reported as `INTERNAL`).
    const IMAGES: Option<&'static str> = None;
}

impl ImageField for pb::EncodeRequest {
    const IMAGES: Option<&'static str> = Some("images");
}
impl ImageField for pb::ReconstructRequest {
    const IMAGES: Option<&'static str> = Some("images");
}
impl ImageField for pb::LabelRequest {
    const IMAGES: Option<&'static str> = Some("images");
}
impl ImageField for pb::AddImagesRequest {
    const IMAGES: Option<&'static str> = Some("images");
}
impl ImageField for pb::GetModelInfoRequest {}
impl ImageField for pb::EncodeResponse {}
impl ImageField for pb::ReconstructResponse {}
impl ImageField for pb::LabelResponse {}
impl ImageField for pb::ModelInfo {}
impl ImageField for pb::CreateJobRequest {}
impl ImageField for pb::GetJobRequest {}
impl ImageField for pb::ListItemsRequest {}
impl ImageField for pb::SubmitReviewRequest {}
impl ImageField for pb::ExportLabelsRequest {}
impl ImageField for pb::Job {}
impl ImageField for pb::AddImagesResponse {}
impl ImageField for pb::ListItemsResponse {}
impl ImageField for pb::Item {}
impl ImageField for pb::ExportedLabel {}
impl ImageField for pb::NextItemsRequest {}
impl ImageField for pb::NextItemsResponse {}
impl ImageField for pb::TrainJobRequest {}
impl ImageField for pb::TrainingRun {}
impl ImageField for pb::GetTrainingRunRequest {}
impl ImageField for pb::ListTrainingRunsRequest {}
impl ImageField for pb::ListTrainingRunsResponse {}

/// The `Labeller` service's codec (client and server): prost encoding, located decode errors.
#[derive(Debug, Clone)]
pub struct WireCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for WireCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for WireCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + ImageField + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = WireDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        WireDecoder(PhantomData)
    }
}

/// Decodes `U`, or says which image and field of it broke the wire format.
#[derive(Debug, Clone)]
pub struct WireDecoder<U>(PhantomData<U>);

impl<U: Message + Default + ImageField> Decoder for WireDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // Zero-copy: the frame's bytes stay readable for locating an error.
        let bytes = buf.copy_to_bytes(buf.remaining());
        match U::decode(bytes.clone()) {
            Ok(message) => Ok(Some(message)),
            Err(error) => Err(match U::IMAGES {
                Some(field) => Status::invalid_argument(refusal(&bytes, field, &error)),
                None => Status::internal(error.to_string()),
            }),
        }
    }
}

/// Why a request's bytes are refused, naming the first image that breaks them when there is
/// one (the request's own structure may be what is broken).
fn refusal(bytes: &[u8], field: &str, error: &prost::DecodeError) -> String {
    let images = length_delimited_fields(bytes, 1).unwrap_or_default();
    let bad = images
        .iter()
        .enumerate()
        .find_map(|(i, image)| pb::Image::decode(*image).err().map(|e| (i, *image, e)));
    match bad {
        Some((i, image, _)) if has_non_utf8_id(image) => format!(
            "{field}[{i}].id: image {i} has an id that is not UTF-8; ids must be UTF-8 text"
        ),
        Some((i, _, e)) => {
            format!("{field}[{i}]: image {i} is not a valid aelabel.v1.Image ({e})")
        }
        None => format!("the request is not a valid aelabel.v1 message ({error})"),
    }
}

/// True when some `id` (field 1) of an encoded `Image` is not UTF-8.
fn has_non_utf8_id(image: &[u8]) -> bool {
    length_delimited_fields(image, 1)
        .is_some_and(|ids| ids.iter().any(|id| std::str::from_utf8(id).is_err()))
}

/// The values of every length-delimited field numbered `number` in an encoded message, or
/// `None` when its top level cannot be walked (bad varint, group, unknown wire type, a length
/// past the end).
fn length_delimited_fields(mut buf: &[u8], number: u64) -> Option<Vec<&[u8]>> {
    let mut found = Vec::new();
    while !buf.is_empty() {
        let key = decode_varint(&mut buf).ok()?;
        let (tag, wire_type) = (key >> 3, key & 7);
        let len = match wire_type {
            0 => {
                decode_varint(&mut buf).ok()?;
                0
            }
            1 => 8,
            2 => usize::try_from(decode_varint(&mut buf).ok()?).ok()?,
            5 => 4,
            _ => return None,
        };
        if len > buf.len() {
            return None;
        }
        let (value, rest) = buf.split_at(len);
        if tag == number && wire_type == 2 {
            found.push(value);
        }
        buf = rest;
    }
    Some(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_with_id(id: &[u8]) -> Vec<u8> {
        let mut image = vec![0x0a, id.len() as u8];
        image.extend_from_slice(id);
        image
    }

    fn request(images: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for image in images {
            out.push(0x0a);
            out.push(image.len() as u8);
            out.extend_from_slice(image);
        }
        out
    }

    fn refusal_of(bytes: &[u8]) -> String {
        let error = pb::LabelRequest::decode(bytes).expect_err("invalid");
        refusal(bytes, "images", &error)
    }

    #[test]
    fn a_non_utf8_id_is_named_by_its_image_index() {
        let ok = image_with_id(b"a");
        let bytes = request(&[ok.clone(), ok, image_with_id(&[0xff, 0xfe])]);
        assert_eq!(
            refusal_of(&bytes),
            "images[2].id: image 2 has an id that is not UTF-8; ids must be UTF-8 text"
        );
    }

    #[test]
    fn a_broken_image_or_request_is_named_as_far_as_it_can_be() {
        // Image 1 holds a field with wire type 7, which does not exist.
        let bytes = request(&[image_with_id(b"a"), vec![0x0f]]);
        assert!(
            refusal_of(&bytes).starts_with("images[1]: image 1 is not a valid aelabel.v1.Image"),
            "{}",
            refusal_of(&bytes)
        );
        // The request's own length runs past its end.
        assert!(refusal_of(&[0x0a, 0x05, 0x01])
            .starts_with("the request is not a valid aelabel.v1 message"));
    }
}
