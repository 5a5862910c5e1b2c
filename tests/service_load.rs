//! No image work on the reactor: while 8 concurrent `Label` calls keep the server resizing
//! raw 4096×4000 images (on the blocking pool), `grpc.health.v1` checks on their own
//! connection answer within 10 ms at the 99th percentile.
//!
//! The server runs on a runtime built the way `aelabel serve` builds its own (every core a
//! worker), the load on a second runtime and the health probe on a third, each on its own
//! threads, so the probe measures the server and not a test client sharing its reactor. The
//! load generator stands in for clients on other machines: its threads run under `SCHED_IDLE`
//! so that, on a two-core box, encoding 16 MB requests does not take the cores from
//! the server under test (the probe and the server keep the default priority). The bound
//! holds over TLS with an API key too (checked after the plaintext pass, never beside it).

mod common;
#[path = "common/raw_grpc.rs"]
mod raw_grpc;

use aelabel::client::Target;
use aelabel::wire as pb;
use common::server::{config, TestServer};
use common::tls::Doors;
use prost::bytes::Bytes;
use prost::Message;
use raw_grpc::{Method, RawClient};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

const LOAD_CALLS: usize = 8;
const WIDTH: u32 = 4096;
const HEIGHT: u32 = 4000;
const SAMPLES: usize = 200;
/// Time between health checks, so that the samples spread over many rounds of the load.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);
const P99_LIMIT: Duration = Duration::from_millis(10);

/// A `LabelRequest` of one raw 4096×4000 image (16 MB), encoded once and shared by every call.
fn large_request() -> Bytes {
    let pixels: Vec<u8> = (0..WIDTH * HEIGHT).map(|i| (i % 251) as u8).collect();
    let request = pb::LabelRequest {
        images: vec![pb::Image {
            id: "large".into(),
            data: Some(pb::image::Data::Raw(pb::RawImage {
                width: WIDTH,
                height: HEIGHT,
                pixels: pixels.into(),
            })),
        }],
        review_threshold: None,
    };
    Bytes::from(request.encode_to_vec())
}

/// Runs the calling thread at the lowest CPU priority, Linux's `SCHED_IDLE` policy (per
/// thread): the load generator stands in for clients on other machines, so it must not take
/// the cores from the server under test whenever both want them.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: sched_setscheduler only reads its arguments and changes the calling thread's
    // policy (pid 0 is the calling thread).
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        assert_eq!(
            libc::sched_setscheduler(0, libc::SCHED_IDLE, &param),
            0,
            "the load generator's threads take SCHED_IDLE"
        );
    }
}

/// The `q` quantile (0..=1) of `samples`, nearest-rank.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Health check latencies: `SAMPLES` checks of the whole server, one every `SAMPLE_EVERY`, from
/// a thread and runtime of their own on a connection of their own.
fn sample_health(target: Target) -> Vec<Duration> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let channel = aelabel::client::channel(&target)
            .await
            .expect("the health probe connects");
        let mut health = HealthClient::new(channel);
        let check = || HealthCheckRequest {
            service: String::new(),
        };
        // The first call sets up the HTTP/2 stream machinery; it is not a sample.
        health.check(check()).await.expect("health answers");
        let mut ticks = tokio::time::interval(SAMPLE_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut samples = Vec::with_capacity(SAMPLES);
        for _ in 0..SAMPLES {
            ticks.tick().await;
            let started = Instant::now();
            let status = health.check(check()).await.expect("health answers");
            samples.push(started.elapsed());
            assert_eq!(
                status.into_inner().status,
                ServingStatus::Serving as i32,
                "the server stays SERVING under load"
            );
        }
        samples
    })
}

#[test]
fn health_answers_within_10ms_p99_while_8_large_raw_images_are_resized() {
    for doors in [Doors::Plain, Doors::TlsWithKeys] {
        eprintln!("{doors:?}");
        health_stays_quick(doors);
    }
}

fn health_stays_quick(doors: Doors) {
    // As `aelabel serve` runs: a default multi-thread runtime and engine threads on every core.
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut cfg = doors.apply(config());
    cfg.max_image_side = 4096;
    cfg.max_message_bytes = 16 << 20;
    cfg.engine.threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let server = server_runtime.block_on(TestServer::start(cfg, true));
    let target = server.target();

    let load_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .on_thread_start(lower_priority)
        .enable_all()
        .build()
        .unwrap();
    let request = large_request();
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, mut answered_rx) = tokio::sync::watch::channel(0usize);
    let answered = Arc::new(answered);
    let load: Vec<_> = (0..LOAD_CALLS)
        .map(|_| {
            let channel = load_runtime.block_on(server.channel());
            let (request, stop, answered) = (request.clone(), stop.clone(), answered.clone());
            load_runtime.spawn(async move {
                let mut client = RawClient::new(channel);
                while !stop.load(Ordering::SeqCst) {
                    client
                        .unary(Method::Label, request.clone())
                        .await
                        .map_err(|s| format!("a load call failed: {s:?}"))?;
                    answered.send_modify(|n| *n += 1);
                }
                Ok::<(), String>(())
            })
        })
        .collect();

    // Measure once the load is in full swing: every call sent, the first one answered.
    load_runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), answered_rx.wait_for(|&n| n > 0))
            .await
            .expect("a load call is answered within 60 s")
            .expect("the load runs");
    });
    let answered_before = *answered.borrow();
    let started = Instant::now();
    let mut samples = std::thread::spawn(move || sample_health(target))
        .join()
        .expect("the health probe ran");
    let window = started.elapsed();
    let answered_during = *answered.borrow() - answered_before;
    stop.store(true, Ordering::SeqCst);
    for call in load {
        load_runtime
            .block_on(call)
            .expect("the load task ran")
            .expect("every load call is answered");
    }

    samples.sort();
    let (p50, p90, p99, max) = (
        quantile(&samples, 0.5),
        quantile(&samples, 0.9),
        quantile(&samples, 0.99),
        samples[samples.len() - 1],
    );
    eprintln!(
        "health under load: p50 {p50:?} p90 {p90:?} p99 {p99:?} max {max:?} over {window:?}; {answered_during} large calls answered meanwhile"
    );
    assert!(
        answered_during >= LOAD_CALLS,
        "the load must run through the whole window: only {answered_during} calls answered in {window:?}"
    );
    assert!(
        p99 < P99_LIMIT,
        "health p99 {p99:?} (p50 {p50:?}, max {max:?}) under {LOAD_CALLS} large raw images"
    );
    server_runtime.block_on(server.shutdown());
}
