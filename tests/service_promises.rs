//! The server's promises under load, each checked on a real server on 127.0.0.1:0 by waiting
//! on what the server reports (its `/metrics`), never by sleeping: `LabelStream` back-pressure,
//! `--max-in-flight` on every unary method, dynamic batching, and exact metric values.

mod common;

use aelabel::wire as pb;
use aelabel::wire::labeller_client::LabellerClient;
use common::metrics::{scrape, Scrape};
use common::proxy::TcpProxy;
use common::server::{config, raw_image, test_images, TestServer};
use common::{eventually, within};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

/// Every test's time limit.
const LIMIT: Duration = Duration::from_secs(120);
/// How long a gauge may take to reach the value a test waits for.
const SETTLE: Duration = Duration::from_secs(30);
/// Messages of one `LabelStream` holding in-flight slots when its client stops reading: the
/// server's window of four queued messages plus the one its reader holds while it waits.
const STALLED_STREAM_SLOTS: f64 = 5.0;

fn wire_images(pixels: &[u8], prefix: &str) -> Vec<pb::Image> {
    pixels
        .chunks_exact(784)
        .enumerate()
        .map(|(i, px)| raw_image(&format!("{prefix}{i}"), px))
        .collect()
}

fn label_request(images: Vec<pb::Image>) -> pb::LabelRequest {
    pb::LabelRequest {
        images,
        review_threshold: None,
    }
}

/// Waits until `/metrics` reports `value` for the sample, and returns that scrape.
async fn wait_for_metric(
    addr: SocketAddr,
    name: &str,
    labels: &[(&str, &str)],
    value: f64,
) -> Scrape {
    eventually(
        SETTLE,
        &format!("{name}{labels:?} = {value}"),
        || async move {
            let now = scrape(addr).await;
            (now.get(name, labels) == Some(value)).then_some(now)
        },
    )
    .await
}

/// A client whose HTTP/2 receive windows are one default frame window (64 KiB), so a stream
/// it does not read fills them after a few answers.
async fn small_window_client(addr: SocketAddr) -> LabellerClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .expect("connects");
    LabellerClient::new(channel)
}

/// `count` label requests of `per_message` test images each, built only when the client's
/// transport pulls them; `pulled` counts how many it has taken.
fn endless_requests(
    count: usize,
    per_message: usize,
    pulled: Arc<AtomicUsize>,
) -> impl tokio_stream::Stream<Item = pb::LabelRequest> {
    let (pixels, _) = test_images(1000);
    tokio_stream::iter((0..count).map(move |m| {
        pulled.fetch_add(1, Ordering::SeqCst);
        let images = (0..per_message)
            .map(|k| {
                let i = (m * per_message + k) % 1000;
                raw_image(&format!("{m}/{k}"), &pixels[i * 784..(i + 1) * 784])
            })
            .collect();
        label_request(images)
    }))
}

/// Waits until the stream has stalled: the client's transport takes no more requests, the
/// server answers no more, its in-flight gauge holds at the stalled stream's slots and its
/// engine queue is empty, all unchanged over `STEADY_SCRAPES` scrapes in a row. Returns the
/// requests taken and the last scrape.
async fn wait_until_stalled(metrics: SocketAddr, pulled: &AtomicUsize) -> (usize, Scrape) {
    const STEADY_SCRAPES: usize = 15;
    let answered = |s: &Scrape| {
        s.get(
            "aelabel_requests_total",
            &[("method", "LabelStream"), ("code", "OK")],
        )
    };
    let deadline = Instant::now() + SETTLE;
    let mut last = None;
    let mut steady = 0;
    loop {
        let now = scrape(metrics).await;
        let state = (pulled.load(Ordering::SeqCst), answered(&now));
        let held = now.value("aelabel_in_flight_requests", &[]) == STALLED_STREAM_SLOTS
            && now.value("aelabel_queue_images", &[]) == 0.0;
        steady = if held && last == Some(state) {
            steady + 1
        } else {
            0
        };
        if steady == STEADY_SCRAPES {
            return (state.0, now);
        }
        last = Some(state);
        assert!(
            Instant::now() < deadline,
            "the stream never stalled: {state:?} taken/answered, in flight {}",
            now.value("aelabel_in_flight_requests", &[])
        );
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_stream_whose_client_stops_reading_holds_a_bounded_number_of_messages() {
    within(LIMIT, async {
        let server = TestServer::default().await;
        let mut client = small_window_client(server.addr).await;
        // 1,000 messages of 50 images: 50,000 images, 39 MB of pixels, if nothing pushed back.
        let (messages, per_message) = (1000, 50);
        let pulled = Arc::new(AtomicUsize::new(0));
        let mut answers = client
            .label_stream(endless_requests(messages, per_message, pulled.clone()))
            .await
            .unwrap()
            .into_inner();

        // The client reads nothing: the server stops reading too, with five messages holding
        // slots and an empty engine queue, and the client can send no more.
        let (taken, stalled) = wait_until_stalled(server.http_addr, &pulled).await;
        assert!(
            taken < messages / 4,
            "the client could send {taken} of {messages} messages without any being read"
        );
        let answered = stalled
            .get(
                "aelabel_requests_total",
                &[("method", "LabelStream"), ("code", "OK")],
            )
            .unwrap_or(0.0);
        assert!(
            answered <= taken as f64,
            "{answered} answers for {taken} messages"
        );

        // Reading again drains the stream: every answer, in order, then the slots are free.
        let mut seen = 0;
        while let Some(response) = answers.message().await.unwrap() {
            for prediction in response.predictions {
                let want = format!("{}/{}", seen / per_message, seen % per_message);
                assert_eq!(prediction.id, want);
                seen += 1;
            }
        }
        assert_eq!(seen, messages * per_message);
        let done = wait_for_metric(server.http_addr, "aelabel_in_flight_requests", &[], 0.0).await;
        assert_eq!(
            done.value(
                "aelabel_requests_total",
                &[("method", "LabelStream"), ("code", "OK")]
            ),
            messages as f64
        );
        assert_eq!(
            done.value("aelabel_images_total", &[("method", "LabelStream")]),
            (messages * per_message) as f64
        );
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_stream_client_that_disconnects_mid_stream_frees_its_slots() {
    within(LIMIT, async {
        let server = TestServer::default().await;
        let proxy = TcpProxy::start(server.addr).await;
        let mut client = small_window_client(proxy.addr).await;
        let pulled = Arc::new(AtomicUsize::new(0));
        let answers = client
            .label_stream(endless_requests(1000, 50, pulled.clone()))
            .await
            .unwrap()
            .into_inner();
        wait_until_stalled(server.http_addr, &pulled).await;

        // The connection goes away mid-stream: the server drops the stream's queued messages
        // and gives back every slot.
        proxy.cut();
        let freed = wait_for_metric(server.http_addr, "aelabel_in_flight_requests", &[], 0.0).await;
        assert_eq!(freed.value("aelabel_queue_images", &[]), 0.0);
        drop(answers);

        // The server still answers other clients.
        let (pixels, _) = test_images(1);
        let response = server
            .client()
            .await
            .label(label_request(wire_images(&pixels, "after-")))
            .await
            .expect("a new client is answered")
            .into_inner();
        assert_eq!(response.predictions[0].id, "after-0");
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_unary_method_over_max_in_flight_gets_resource_exhausted() {
    within(LIMIT, async {
        let mut cfg = config();
        cfg.max_in_flight = 1;
        // A lone image waits in the batcher for a second one: the first call holds the only
        // slot until the test lets it go.
        cfg.engine.max_batch = 2;
        cfg.engine.max_queue_delay = Duration::from_secs(60);
        let server = TestServer::start(cfg, true).await;
        let (pixels, _) = test_images(2);
        let mut holder = server.client().await;
        let one = wire_images(&pixels[..784], "held-");
        let held =
            tokio::spawn(async move { holder.encode(pb::EncodeRequest { images: one }).await });
        wait_for_metric(server.http_addr, "aelabel_in_flight_requests", &[], 1.0).await;

        let mut client = server.client().await;
        let images = || wire_images(&pixels[..784], "x-");
        // A stream message waits for a slot instead of failing (two images: a full batch).
        let (stream_tx, stream_rx) = tokio::sync::mpsc::channel(1);
        let mut answers = client
            .label_stream(ReceiverStream::new(stream_rx))
            .await
            .unwrap()
            .into_inner();
        stream_tx
            .send(label_request(wire_images(&pixels, "waited-")))
            .await
            .unwrap();
        let refusals = [
            (
                "Encode",
                client
                    .encode(pb::EncodeRequest { images: images() })
                    .await
                    .map(|_| ()),
            ),
            (
                "Reconstruct",
                client
                    .reconstruct(pb::ReconstructRequest {
                        images: images(),
                        include_values: false,
                    })
                    .await
                    .map(|_| ()),
            ),
            (
                "Label",
                client.label(label_request(images())).await.map(|_| ()),
            ),
            (
                // Admission comes before decoding: a file that would not even decode is
                // refused for want of a slot, not parsed first.
                "Label",
                client
                    .label(label_request(vec![pb::Image {
                        id: "broken".into(),
                        data: Some(pb::image::Data::Encoded(
                            b"\x89PNG\r\n\x1a\nbroken".to_vec().into(),
                        )),
                    }]))
                    .await
                    .map(|_| ()),
            ),
        ];
        for (method, result) in refusals {
            let status = result.expect_err(method);
            assert_eq!(
                status.code(),
                Code::ResourceExhausted,
                "{method}: {status:?}"
            );
            assert_eq!(
                status.message(),
                "the server is busy: 1 requests are in flight; retry with back-off",
                "{method}"
            );
        }
        let counts = scrape(server.http_addr).await;
        for (method, refused) in [("Encode", 1.0), ("Reconstruct", 1.0), ("Label", 2.0)] {
            assert_eq!(
                counts.value(
                    "aelabel_requests_total",
                    &[("method", method), ("code", "RESOURCE_EXHAUSTED")]
                ),
                refused,
                "{method}"
            );
        }
        assert_eq!(counts.value("aelabel_in_flight_requests", &[]), 1.0);
        let stream = [("method", "LabelStream")];
        assert!(counts
            .matching("aelabel_requests_total", &stream)
            .is_empty());

        // The holder gives up: its slot goes to the waiting stream message, then comes back,
        // and a full batch is answered at once.
        held.abort();
        let waited = answers
            .message()
            .await
            .unwrap()
            .expect("the stream is answered");
        assert_eq!(waited.predictions.len(), 2);
        assert_eq!(waited.predictions[0].id, "waited-0");
        drop(stream_tx);
        wait_for_metric(server.http_addr, "aelabel_in_flight_requests", &[], 0.0).await;
        let response = client
            .encode(pb::EncodeRequest {
                images: wire_images(&pixels, "after-"),
            })
            .await
            .expect("a slot is free again")
            .into_inner();
        assert_eq!(response.embeddings.len(), 2);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_merged_into_one_forward_pass() {
    within(LIMIT, async {
        let mut cfg = config();
        // The batcher waits for eight images (the queue delay is only a safety net), so the
        // eight one-image calls below must share one forward pass.
        cfg.engine.max_batch = 8;
        cfg.engine.max_queue_delay = Duration::from_secs(60);
        let server = TestServer::start(cfg, true).await;
        let (pixels, _) = test_images(8);
        let mut calls = Vec::new();
        for (i, px) in pixels.chunks_exact(784).enumerate() {
            let mut client = server.client().await;
            let image = raw_image(&format!("call-{i}"), px);
            calls.push(tokio::spawn(async move {
                client.label(label_request(vec![image])).await
            }));
        }
        let mut merged = Vec::new();
        for call in calls {
            let response = call.await.unwrap().expect("answered").into_inner();
            merged.push(response.predictions[0].clone());
        }

        // The same images in one request of eight: the merged pass gave each caller its row.
        let alone = server
            .client()
            .await
            .label(label_request(wire_images(&pixels, "call-")))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(merged.len(), alone.predictions.len());
        for (got, want) in merged.iter().zip(&alone.predictions) {
            assert_eq!((&got.id, got.class_index), (&want.id, want.class_index));
            for (g, w) in got.probabilities.iter().zip(&want.probabilities) {
                assert!((g - w).abs() <= 1e-6, "{}: {g} vs {w}", got.id);
            }
        }

        let metrics = scrape(server.http_addr).await;
        let label = [("task", "label")];
        // Two passes of eight: the eight calls, then the single request.
        assert_eq!(metrics.value("aelabel_batch_images_count", &label), 2.0);
        assert_eq!(metrics.value("aelabel_batch_images_sum", &label), 16.0);
        for (le, passes) in [("4", 0.0), ("8", 2.0), ("+Inf", 2.0)] {
            assert_eq!(
                metrics.value(
                    "aelabel_batch_images_bucket",
                    &[("task", "label"), ("le", le)]
                ),
                passes,
                "passes of at most {le} images"
            );
        }
        assert_eq!(
            metrics.value(
                "aelabel_requests_total",
                &[("method", "Label"), ("code", "OK")]
            ),
            9.0
        );
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_sequence_of_calls_exactly() {
    within(LIMIT, async {
        let server = TestServer::default().await;
        let mut client = server.client().await;
        let (pixels, _) = test_images(6);
        let images = |n: usize| wire_images(&pixels[..n * 784], "m-");

        client
            .encode(pb::EncodeRequest { images: images(3) })
            .await
            .unwrap();
        let empty = client.encode(pb::EncodeRequest { images: vec![] }).await;
        assert_eq!(empty.unwrap_err().code(), Code::InvalidArgument);
        client.label(label_request(images(2))).await.unwrap();
        let bad_threshold = client
            .label(pb::LabelRequest {
                images: images(1),
                review_threshold: Some(1.5),
            })
            .await;
        assert_eq!(bad_threshold.unwrap_err().code(), Code::InvalidArgument);
        client
            .reconstruct(pb::ReconstructRequest {
                images: images(1),
                include_values: false,
            })
            .await
            .unwrap();
        client
            .get_model_info(pb::GetModelInfoRequest {})
            .await
            .unwrap();
        // A stream of three messages (1, 2 and 3 images), each sent after the previous answer
        // so that each is its own forward pass.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let mut answers = client
            .label_stream(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        for n in 1..=3 {
            tx.send(label_request(images(n))).await.unwrap();
            let answer = answers.message().await.unwrap().expect("an answer");
            assert_eq!(answer.predictions.len(), n);
        }
        drop(tx);
        assert!(answers.message().await.unwrap().is_none());

        let m = scrape(server.http_addr).await;
        let requests = [
            ("Encode", "OK", 1.0),
            ("Encode", "INVALID_ARGUMENT", 1.0),
            ("Label", "OK", 1.0),
            ("Label", "INVALID_ARGUMENT", 1.0),
            ("Reconstruct", "OK", 1.0),
            ("LabelStream", "OK", 3.0),
        ];
        for (method, code, count) in requests {
            let labels = [("method", method), ("code", code)];
            assert_eq!(
                m.value("aelabel_requests_total", &labels),
                count,
                "{labels:?}"
            );
        }
        // Nothing else was counted: GetModelInfo is not a request for images.
        assert_eq!(
            m.matching("aelabel_requests_total", &[]).len(),
            requests.len()
        );
        // Images answered successfully; refused calls add none.
        for (method, count) in [
            ("Encode", 3.0),
            ("Label", 2.0),
            ("Reconstruct", 1.0),
            ("LabelStream", 6.0),
        ] {
            assert_eq!(
                m.value("aelabel_images_total", &[("method", method)]),
                count,
                "{method}"
            );
        }
        for (method, calls) in [
            ("Encode", 2.0),
            ("Label", 2.0),
            ("Reconstruct", 1.0),
            ("LabelStream", 3.0),
        ] {
            let labels = [("method", method)];
            assert_eq!(
                m.value("aelabel_request_duration_seconds_count", &labels),
                calls,
                "{method}"
            );
            let all = [("method", method), ("le", "+Inf")];
            assert_eq!(
                m.value("aelabel_request_duration_seconds_bucket", &all),
                calls,
                "{method}"
            );
        }
        // Forward passes: warm-up runs outside the queue, so only the calls above count.
        for (task, passes, images) in [
            ("encode", 1.0, 3.0),
            ("reconstruct", 1.0, 1.0),
            ("label", 4.0, 8.0),
        ] {
            let labels = [("task", task)];
            assert_eq!(
                m.value("aelabel_batch_images_count", &labels),
                passes,
                "{task}"
            );
            assert_eq!(
                m.value("aelabel_batch_images_sum", &labels),
                images,
                "{task}"
            );
            assert_eq!(
                m.value("aelabel_batch_seconds_count", &labels),
                passes,
                "{task}"
            );
        }
        assert_eq!(m.value("aelabel_queue_images", &[]), 0.0);
        assert_eq!(m.value("aelabel_in_flight_requests", &[]), 0.0);
        let version = client
            .get_model_info(pb::GetModelInfoRequest {})
            .await
            .unwrap()
            .into_inner()
            .version;
        assert_eq!(
            m.value("aelabel_model_info", &[("version", version.as_str())]),
            1.0
        );
        for (name, kind) in [
            ("aelabel_requests_total", "counter"),
            ("aelabel_images_total", "counter"),
            ("aelabel_request_duration_seconds", "histogram"),
            ("aelabel_batch_images", "histogram"),
            ("aelabel_batch_seconds", "histogram"),
            ("aelabel_queue_images", "gauge"),
            ("aelabel_in_flight_requests", "gauge"),
            ("aelabel_model_info", "gauge"),
        ] {
            assert_eq!(m.types.get(name).map(String::as_str), Some(kind), "{name}");
        }
        server.shutdown().await;
    })
    .await;
}

#[test]
fn the_metrics_parser_reads_labels_escapes_and_exact_values() {
    let text = "# HELP x_total Things.\n# TYPE x_total counter\n\
                x_total{code=\"OK\",method=\"Encode\"} 1\n\
                x_total{code=\"OK\",method=\"Label\"} 12\n\
                y_bucket{le=\"+Inf\",task=\"a \\\"b\\\"\"} 3\n\
                z 0.5 1700000000\n";
    let scrape = Scrape::parse(text).unwrap();
    assert_eq!(scrape.types["x_total"], "counter");
    let encode = [("method", "Encode"), ("code", "OK")];
    assert_eq!(scrape.get("x_total", &encode), Some(1.0));
    let label = [("method", "Label"), ("code", "OK")];
    assert_eq!(scrape.get("x_total", &label), Some(12.0));
    // A label set must match exactly, not as a prefix.
    assert_eq!(scrape.get("x_total", &[("method", "Label")]), None);
    let quoted = [("le", "+Inf"), ("task", "a \"b\"")];
    assert_eq!(scrape.get("y_bucket", &quoted), Some(3.0));
    assert_eq!(scrape.get("z", &[]), Some(0.5));
    assert!(Scrape::parse("x{a=\"1\" 2").is_err());
    assert!(Scrape::parse("x 1 2 3").is_err());
}
