//! Hostile input never breaks the server: arbitrary bytes as encoded images, arbitrary raw
//! sizes and pixel counts, and arbitrary protobuf-shaped requests, each sent over a real gRPC
//! call to one server, always get a status the README documents (OK, INVALID_ARGUMENT naming
//! the field, RESOURCE_EXHAUSTED for the limits), never INTERNAL or UNKNOWN; no thread of the
//! process panics; and the server still answers health and a good request afterwards.
//!
//! The cases come from a fixed seed, so a failure reproduces; proptest shrinks it first.

mod common;
#[path = "common/raw_grpc.rs"]
mod raw_grpc;

use aelabel::wire as pb;
use common::server::{config, test_images, TestServer};
use common::tls::Doors;
use image::{ExtendedColorType, ImageEncoder};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use prost::bytes::Bytes;
use prost::Message;
use raw_grpc::{Method, RawClient};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

/// Cases per property; small enough that the whole test stays within seconds in release.
const CASES: u32 = 256;

/// Panics anywhere in the process (server threads included) since the hook was installed.
fn count_panics() -> Arc<AtomicUsize> {
    let panics = Arc::new(AtomicUsize::new(0));
    let seen = panics.clone();
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        seen.fetch_add(1, Ordering::SeqCst);
        default(info);
    }));
    panics
}

fn gray(width: u32, height: u32) -> Vec<u8> {
    (0..width * height).map(|i| (i * 37 % 251) as u8).collect()
}

fn small_png() -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(&gray(20, 12), 20, 12, ExtendedColorType::L8)
        .unwrap();
    out
}

fn small_jpeg() -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
        .write_image(&gray(20, 12), 20, 12, ExtendedColorType::L8)
        .unwrap();
    out
}

/// Bytes that reach ever deeper into the decoders: noise, noise behind a PNG or JPEG
/// signature, and real files with some bytes overwritten or cut short.
fn encoded_bytes() -> impl Strategy<Value = Vec<u8>> {
    let mutated = |file: Vec<u8>| {
        let len = file.len();
        (
            prop::collection::vec((0..len, any::<u8>()), 1..8),
            prop_oneof![Just(len), 0..len],
        )
            .prop_map(move |(edits, keep)| {
                let mut bytes = file.clone();
                for (at, value) in edits {
                    bytes[at] = value;
                }
                bytes.truncate(keep);
                bytes
            })
    };
    let behind = |signature: &'static [u8]| {
        prop::collection::vec(any::<u8>(), 0..512).prop_map(move |tail| {
            let mut bytes = signature.to_vec();
            bytes.extend(tail);
            bytes
        })
    };
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..1024),
        behind(b"\x89PNG\r\n\x1a\n"),
        behind(&[0xFF, 0xD8, 0xFF]),
        mutated(small_png()),
        mutated(small_jpeg()),
    ]
}

/// A side: zero, the model's, small, around the 4096 limit, or anything.
fn side() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0u32), Just(28), 1..64u32, 4090..4200u32, any::<u32>()]
}

/// Raw images whose pixel count matches width × height (when that is small enough to send),
/// is one off, or is arbitrary.
fn raw_image() -> impl Strategy<Value = pb::RawImage> {
    (side(), side(), 0..3u8, 0..5000usize).prop_map(|(width, height, kind, random)| {
        let area = u64::from(width) * u64::from(height);
        let count = match kind {
            0 if area <= 1 << 16 => area as usize,
            1 if area <= 1 << 16 && area % 2 == 0 => area as usize + 1,
            1 if area <= 1 << 16 => area as usize - 1,
            _ => random,
        };
        pb::RawImage {
            width,
            height,
            pixels: vec![0x80; count].into(),
        }
    })
}

/// One protobuf field with an arbitrary number and wire type; length-delimited values hold
/// noise or nested fields, and their declared length may lie.
fn field(depth: u32) -> BoxedStrategy<Vec<u8>> {
    let number = prop_oneof![1..4u64, 0..32u64, 0..(1u64 << 29)];
    let payload = if depth == 0 {
        prop::collection::vec(any::<u8>(), 0..64).boxed()
    } else {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            prop::collection::vec(field(depth - 1), 0..4).prop_map(|f| f.concat()),
        ]
        .boxed()
    };
    (number, 0..8u64, any::<u64>(), payload, -2i64..3)
        .prop_map(|(number, wire_type, scalar, payload, lie)| {
            let mut out = Vec::new();
            prost::encoding::encode_varint(number << 3 | wire_type, &mut out);
            match wire_type {
                0 => prost::encoding::encode_varint(scalar, &mut out),
                1 => out.extend_from_slice(&scalar.to_le_bytes()),
                5 => out.extend_from_slice(&(scalar as u32).to_le_bytes()),
                2 => {
                    let declared = (payload.len() as i64 + lie).max(0) as u64;
                    prost::encoding::encode_varint(declared, &mut out);
                    out.extend_from_slice(&payload);
                }
                // Group markers (3, 4) and the wire types that do not exist (6, 7).
                _ => out.extend_from_slice(&payload[..payload.len().min(4)]),
            }
            out
        })
        .boxed()
}

/// A request-shaped message: a few arbitrary fields, sometimes around a real image.
fn protobuf_shaped() -> impl Strategy<Value = Vec<u8>> {
    let real = pb::LabelRequest {
        images: vec![pb::Image {
            id: "x".into(),
            data: Some(pb::image::Data::Raw(pb::RawImage {
                width: 2,
                height: 2,
                pixels: vec![1, 2, 3, 4].into(),
            })),
        }],
        review_threshold: None,
    }
    .encode_to_vec();
    (
        prop::collection::vec(field(2), 0..6),
        any::<bool>(),
        any::<prop::sample::Index>(),
    )
        .prop_map(move |(fields, around, at)| {
            let mut fields = fields;
            if around {
                fields.insert(at.index(fields.len() + 1), real.clone());
            }
            fields.concat()
        })
}

fn method() -> impl Strategy<Value = Method> {
    prop::sample::select(Method::ALL.to_vec())
}

/// One image request as bytes.
fn request(image: pb::image::Data) -> Bytes {
    let images = vec![pb::Image {
        id: "case".into(),
        data: Some(image),
    }];
    Bytes::from(
        pb::LabelRequest {
            images,
            review_threshold: None,
        }
        .encode_to_vec(),
    )
}

/// The documented outcomes; anything else (INTERNAL, UNKNOWN, a broken connection) fails.
fn documented(result: &Result<(), tonic::Status>, image_request: bool) -> Result<(), String> {
    let Err(status) = result else {
        return Ok(());
    };
    let message = status.message();
    let ok = match status.code() {
        // One image per request: a refusal of it names images[0] and the field.
        Code::InvalidArgument if image_request => message.starts_with("images[0]."),
        Code::InvalidArgument => {
            message.starts_with("images")
                || message.starts_with("review_threshold: ")
                || message.starts_with("the request is not a valid aelabel.v1 message")
        }
        Code::ResourceExhausted => {
            message.contains("--max-decode-mib") || message.contains("--max-message-bytes")
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("undocumented answer: {status:?}"))
    }
}

/// How many cases of one property were answered and refused.
#[derive(Default)]
struct Tally {
    answered: Cell<usize>,
    refused: Cell<usize>,
}

impl Tally {
    fn count(&self, result: &Result<(), tonic::Status>) {
        let counter = if result.is_ok() {
            &self.answered
        } else {
            &self.refused
        };
        counter.set(counter.get() + 1);
    }
}

fn runner() -> TestRunner {
    TestRunner::new_with_rng(
        Config {
            cases: CASES,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    )
}

#[test]
fn arbitrary_images_and_requests_always_get_a_documented_status() {
    documented_statuses_only(Doors::Plain);
}

#[test]
fn arbitrary_requests_get_the_same_documented_statuses_over_tls_with_an_api_key() {
    documented_statuses_only(Doors::TlsWithKeys);
}

fn documented_statuses_only(doors: Doors) {
    let panics = count_panics();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut cfg = doors.apply(config());
    cfg.max_image_side = 4096;
    let server = runtime.block_on(TestServer::start(cfg, true));
    let client = runtime.block_on(async { RawClient::new(server.channel().await) });
    let send = |method: Method, body: Bytes| {
        let mut client = client.clone();
        runtime.block_on(async move { client.call(method, body).await })
    };

    let encoded = Tally::default();
    runner()
        .run(&(encoded_bytes(), method()), |(bytes, method)| {
            let result = send(method, request(pb::image::Data::Encoded(bytes.into())));
            encoded.count(&result);
            documented(&result, true).map_err(TestCaseError::fail)
        })
        .unwrap();
    let raw = Tally::default();
    runner()
        .run(&(raw_image(), method()), |(image, method)| {
            let result = send(method, request(pb::image::Data::Raw(image)));
            raw.count(&result);
            documented(&result, true).map_err(TestCaseError::fail)
        })
        .unwrap();
    let shaped = Tally::default();
    runner()
        .run(&(protobuf_shaped(), method()), |(bytes, method)| {
            let result = send(method, Bytes::from(bytes));
            shaped.count(&result);
            documented(&result, false).map_err(TestCaseError::fail)
        })
        .unwrap();
    // The generators reach both sides of the server's checks: some cases pass, some are refused.
    for (name, tally) in [("encoded", &encoded), ("raw", &raw), ("protobuf", &shaped)] {
        eprintln!(
            "{name}: {} answered, {} refused",
            tally.answered.get(),
            tally.refused.get()
        );
        assert!(
            tally.answered.get() > 0 && tally.refused.get() > 0,
            "{name} cases only ever got one kind of answer"
        );
    }

    assert_eq!(panics.load(Ordering::SeqCst), 0, "a thread panicked");
    runtime.block_on(async {
        let mut health = HealthClient::new(server.channel().await);
        for service in ["", "aelabel.v1.Labeller"] {
            let status = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .expect("health answers")
                .into_inner()
                .status;
            assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
        }
        let (pixels, _) = test_images(1);
        let good = request(pb::image::Data::Raw(pb::RawImage {
            width: 28,
            height: 28,
            pixels: pixels.into(),
        }));
        for method in Method::ALL {
            let mut client = client.clone();
            client
                .call(method, good.clone())
                .await
                .unwrap_or_else(|s| panic!("{method:?} after the run: {s:?}"));
        }
        server.shutdown().await;
    });
}
