//! Every refusal the README's serving section lists, one table row each: the request, the
//! exact status code, and what the message must say (the field, and the index of the first bad
//! image). Each row is sent to every method it applies to; on `LabelStream` it follows a good
//! message, which is answered, and the bad one ends the stream with the same status. The
//! table holds over TLS with an API key as it does in plaintext.

mod common;
#[path = "common/raw_grpc.rs"]
mod raw_grpc;

use aelabel::wire as pb;
use common::server::{config, test_images, TestServer};
use common::tls::Doors;
use image::{ExtendedColorType, ImageEncoder};
use prost::bytes::Bytes;
use prost::Message;
use raw_grpc::{Method, RawClient};
use std::time::{Duration, Instant};
use tonic::Code;

/// The refusal server's limits, small so that each row's request stays small.
const MAX_BATCH: usize = 4;
const MAX_SIDE: u32 = 1024;
const MAX_MESSAGE_BYTES: usize = 1 << 20;
const DECODE_BUDGET_BYTES: u64 = 1 << 20;
/// The busy server's queue delay: a one-image call waits this long for a full batch, so it
/// holds the only slot until the test lets it go. Only a safety net: the test never waits
/// for it, it releases the slot itself.
const HOLD: Duration = Duration::from_secs(600);

/// One refusal: what is sent, where, and what must come back.
struct Refusal {
    /// The README's words for it.
    what: &'static str,
    /// The request body (every image request has its images as field 1, so one body fits
    /// every method).
    body: Vec<u8>,
    methods: &'static [Method],
    /// Whether an in-flight slot is held by another call while this is sent.
    slot_taken: bool,
    code: Code,
    /// Substrings the message must contain.
    message: Vec<String>,
}

fn good_image(id: &str) -> pb::Image {
    let (pixels, _) = test_images(1);
    raw(id, 28, 28, pixels)
}

fn raw(id: &str, width: u32, height: u32, pixels: Vec<u8>) -> pb::Image {
    pb::Image {
        id: id.into(),
        data: Some(pb::image::Data::Raw(pb::RawImage {
            width,
            height,
            pixels: pixels.into(),
        })),
    }
}

fn encoded(id: &str, bytes: Vec<u8>) -> pb::Image {
    pb::Image {
        id: id.into(),
        data: Some(pb::image::Data::Encoded(bytes.into())),
    }
}

fn body(images: Vec<pb::Image>, review_threshold: Option<f32>) -> Vec<u8> {
    pb::LabelRequest {
        images,
        review_threshold,
    }
    .encode_to_vec()
}

/// `bad` after `before` good images.
fn nth(before: usize, bad: pb::Image) -> Vec<u8> {
    let mut images: Vec<_> = (0..before).map(|i| good_image(&i.to_string())).collect();
    images.push(bad);
    body(images, None)
}

/// A gray PNG of `width × height` noise.
fn png(width: u32, height: u32) -> Vec<u8> {
    let pixels: Vec<u8> = (0..width * height).map(|i| (i * 37 % 251) as u8).collect();
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(&pixels, width, height, ExtendedColorType::L8)
        .unwrap();
    out
}

/// A gray JPEG of `width × height` noise.
fn jpeg(width: u32, height: u32) -> Vec<u8> {
    let pixels: Vec<u8> = (0..width * height).map(|i| (i * 37 % 251) as u8).collect();
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .write_image(&pixels, width, height, ExtendedColorType::L8)
        .unwrap();
    out
}

/// `jpeg` with its baseline frame header rewritten to declare `width × height`.
fn jpeg_declaring(mut jpeg: Vec<u8>, width: u16, height: u16) -> Vec<u8> {
    let sof = jpeg
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("a baseline frame header");
    jpeg[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    jpeg[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    jpeg
}

/// A PNG whose header is fine but whose compressed data is not.
fn corrupt_png() -> Vec<u8> {
    let mut png = png(28, 28);
    let idat = png.windows(4).position(|w| w == b"IDAT").unwrap() + 4;
    for b in &mut png[idat + 2..idat + 40] {
        *b ^= 0x5A;
    }
    png
}

/// A `LabelRequest` of `images` good images, the one at `bad` carrying a non-UTF-8 id.
fn non_utf8_id_request(images: usize, bad: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..images {
        let image = match good_image("x").data {
            Some(pb::image::Data::Raw(raw)) => raw.encode_to_vec(),
            _ => unreachable!(),
        };
        let id: &[u8] = if i == bad { &[0xff, 0xfe, b'x'] } else { b"ok" };
        // Image { id = 1 (bytes), raw = 2 (message) }
        let mut message = vec![0x0a, id.len() as u8];
        message.extend_from_slice(id);
        message.push(0x12);
        prost::encoding::encode_varint(image.len() as u64, &mut message);
        message.extend_from_slice(&image);
        out.push(0x0a);
        prost::encoding::encode_varint(message.len() as u64, &mut out);
        out.extend_from_slice(&message);
    }
    out
}

fn strings(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// The table: every refusal of README § `aelabel serve` → Validation, and the flags'
/// RESOURCE_EXHAUSTED answers.
fn refusals() -> Vec<Refusal> {
    use Code::{InvalidArgument, ResourceExhausted};
    const ALL: &[Method] = &Method::ALL;
    const LABEL: &[Method] = &[Method::Label, Method::LabelStream];
    const UNARY: &[Method] = &Method::UNARY;
    let row = |what, body, methods, code, message: &[&str]| Refusal {
        what,
        body,
        methods,
        slot_taken: false,
        code,
        message: strings(message),
    };
    let cut_jpeg = {
        let whole = jpeg(28, 28);
        whole[..whole.len() / 2].to_vec()
    };
    vec![
        row("an empty batch", body(vec![], None), ALL, InvalidArgument,
            &["images: the batch is empty"]),
        row("more than --max-batch images",
            body((0..=MAX_BATCH).map(|i| good_image(&i.to_string())).collect(), None), ALL,
            InvalidArgument, &["images: 5 images is more than this server's --max-batch of 4"]),
        row("a pixel count that is not width × height",
            nth(2, raw("short", 28, 28, vec![0; 780])), ALL, InvalidArgument,
            &["images[2].raw: image 2 has 780 pixel bytes but width × height = 28 × 28 = 784"]),
        row("a zero width", nth(1, raw("w0", 0, 28, vec![])), ALL, InvalidArgument,
            &["images[1].raw: image 1 has a zero dimension (0×28)"]),
        row("a zero height", nth(0, raw("h0", 28, 0, vec![])), ALL, InvalidArgument,
            &["images[0].raw: image 0 has a zero dimension (28×0)"]),
        row("an over-limit side (raw)", nth(1, raw("wide", 1025, 1, vec![0; 1025])), ALL,
            InvalidArgument, &["images[1].raw: image 1 is 1025×1, over the 1024-pixel side limit"]),
        row("an over-limit side (PNG header)", nth(0, encoded("tall", png(1, 1500))), ALL,
            InvalidArgument,
            &["images[0].encoded: image 0 is 1×1500, over the 1024-pixel side limit"]),
        row("an over-limit side (JPEG header)", nth(2, encoded("tall", jpeg(1, 1100))), ALL,
            InvalidArgument,
            &["images[2].encoded: image 2 is 1×1100, over the 1024-pixel side limit"]),
        row("bytes that are not PNG/JPEG", nth(3, encoded("gif", b"GIF89a\x01\x00\x01\x00".to_vec())),
            ALL, InvalidArgument, &["images[3].encoded: image 3 is not a PNG or JPEG file"]),
        row("bytes that do not decode", nth(1, encoded("broken", corrupt_png())), ALL,
            InvalidArgument, &["images[1].encoded: image 1 cannot be decoded as PNG: "]),
        row("a JPEG that is truncated", nth(0, encoded("cut", cut_jpeg)), ALL, InvalidArgument,
            &["images[0].encoded: image 0 cannot be decoded as JPEG: the file ends before its end-of-image marker (it is truncated)"]),
        row("a JPEG whose header declares more pixels than its data can hold",
            nth(2, encoded("liar", jpeg_declaring(jpeg(28, 28), 1000, 1000))), ALL,
            InvalidArgument,
            &["images[2].encoded: image 2 cannot be decoded as JPEG: it holds ",
              "too few for the 1000×1000 its header declares"]),
        row("an image without data", nth(1, pb::Image { id: "empty".into(), data: None }), ALL,
            InvalidArgument, &["images[1].data: image 1 has no data"]),
        row("a review_threshold above 1", body(vec![good_image("a")], Some(1.5)), LABEL,
            InvalidArgument, &["review_threshold: 1.5 is not a probability"]),
        row("a review_threshold below 0", body(vec![good_image("a")], Some(-0.25)), LABEL,
            InvalidArgument, &["review_threshold: -0.25 is not a probability"]),
        row("a review_threshold that is NaN", body(vec![good_image("a")], Some(f32::NAN)), LABEL,
            InvalidArgument, &["review_threshold: NaN is not a probability"]),
        row("bytes that are not a valid request (bad protobuf)", vec![0x0a, 0x05, 0x01], ALL,
            InvalidArgument, &["the request is not a valid aelabel.v1 message"]),
        row("an id that is not UTF-8", non_utf8_id_request(3, 2), ALL, InvalidArgument,
            &["images[2].id: image 2 has an id that is not UTF-8"]),
        row("a message over --max-message-bytes",
            nth(0, raw("huge", 1000, 1100, vec![7; 1_100_000])), ALL, ResourceExhausted,
            &["over the server's --max-message-bytes limit"]),
        row("a request beyond the decode budget", nth(1, encoded("big", png(512, 512))), ALL,
            ResourceExhausted,
            &["images: decoding this request needs up to 3 MiB",
              "the server's decode budget of 1 MiB (--max-decode-mib)"]),
        Refusal {
            slot_taken: true,
            ..row("a unary call beyond --max-in-flight", body(vec![good_image("a")], None),
                UNARY, ResourceExhausted,
                &["the server is busy: 1 requests are in flight; retry with back-off"])
        },
    ]
}

/// `aelabel_in_flight_requests` from the server's `/metrics`.
async fn in_flight(server: &TestServer) -> f64 {
    let text = server.metrics_text().await;
    let line = text
        .lines()
        .find(|l| l.starts_with("aelabel_in_flight_requests "))
        .expect("the in-flight gauge");
    line["aelabel_in_flight_requests ".len()..].parse().unwrap()
}

/// Waits until the server has `want` calls in flight, or fails after a deadline.
async fn until_in_flight(server: &TestServer, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while in_flight(server).await != want {
        assert!(Instant::now() < deadline, "never {want} calls in flight");
        tokio::task::yield_now().await;
    }
}

/// Sends `row` on `method` and checks the answer.
async fn check(client: &mut RawClient, row: &Refusal, method: Method) {
    let body = Bytes::from(row.body.clone());
    let status = if method == Method::LabelStream {
        let good = Bytes::from(body_of_one_good_image());
        let outcome = client
            .stream(vec![good.clone(), body, good], Duration::from_secs(30))
            .await;
        assert_eq!(
            outcome.responses, 1,
            "{}: the good message before the bad one is answered, nothing after",
            row.what
        );
        outcome.end.expect_err(row.what)
    } else {
        client.unary(method, body).await.expect_err(row.what)
    };
    assert_eq!(
        status.code(),
        row.code,
        "{} on {method:?}: {status:?}",
        row.what
    );
    for part in &row.message {
        assert!(
            status.message().contains(part.as_str()),
            "{} on {method:?}: the message should contain {part:?} but is {:?}",
            row.what,
            status.message()
        );
    }
}

fn body_of_one_good_image() -> Vec<u8> {
    body(vec![good_image("good")], None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_refusal_has_its_code_and_names_field_and_index() {
    refusals_hold(Doors::Plain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_refusal_holds_over_tls_with_an_api_key() {
    refusals_hold(Doors::TlsWithKeys).await;
}

async fn refusals_hold(doors: Doors) {
    let mut cfg = doors.apply(config());
    cfg.engine.max_batch = MAX_BATCH;
    cfg.max_image_side = MAX_SIDE;
    cfg.max_message_bytes = MAX_MESSAGE_BYTES;
    cfg.max_decode_bytes = DECODE_BUDGET_BYTES;
    let server = TestServer::start(cfg.clone(), true).await;
    // One slot, and a queue delay that keeps a single-image call in it until it is released.
    cfg.max_in_flight = 1;
    cfg.engine.max_queue_delay = HOLD;
    let busy = TestServer::start(cfg, true).await;

    let mut client = RawClient::new(server.channel().await);
    let mut busy_client = RawClient::new(busy.channel().await);
    let table = refusals();
    assert_eq!(table.len(), 21);
    for row in &table {
        if row.slot_taken {
            let mut holder = RawClient::new(busy.channel().await);
            let hold = tokio::spawn(async move {
                holder
                    .unary(Method::Label, Bytes::from(body_of_one_good_image()))
                    .await
            });
            until_in_flight(&busy, 1.0).await;
            for &method in row.methods {
                check(&mut busy_client, row, method).await;
            }
            // The holder gives up: its slot comes back, and a full batch is answered at once
            // (its lone image never completed one).
            hold.abort();
            until_in_flight(&busy, 0.0).await;
            let full = (0..MAX_BATCH).map(|i| good_image(&i.to_string())).collect();
            busy_client
                .unary(Method::Label, Bytes::from(body(full, None)))
                .await
                .expect("a call after the slot came back is answered");
        } else {
            for &method in row.methods {
                check(&mut client, row, method).await;
            }
        }
    }
    // Refusals cost nothing lasting: a good request still works on the same connection.
    for method in Method::UNARY {
        client
            .unary(method, Bytes::from(body_of_one_good_image()))
            .await
            .unwrap_or_else(|s| panic!("{method:?} after the refusals: {s:?}"));
    }
    busy.shutdown().await;
    server.shutdown().await;
}
