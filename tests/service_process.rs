//! `aelabel serve` as a process: SIGTERM with calls in flight, `--no-http`, and the
//! `AELABEL_*` variables. Each test runs the real binary on port 0 behind a guard that kills
//! it if the test fails, and waits on what the server shows (logs, health, `/metrics`).

mod common;

use aelabel::wire as pb;
use aelabel::wire::labeller_client::LabellerClient;
use common::metrics::scrape;
use common::process::{serve_command, ServerProcess};
use common::server::{model_path, raw_image, test_images};
use common::{clean_command, eventually, within};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

const LIMIT: Duration = Duration::from_secs(120);
const SETTLE: Duration = Duration::from_secs(30);

async fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connects")
}

/// Waits until the server's in-flight gauge reads `value`.
async fn wait_in_flight(metrics: SocketAddr, value: f64) {
    eventually(
        SETTLE,
        &format!("{value} requests in flight"),
        || async move {
            let now = scrape(metrics).await;
            (now.value("aelabel_in_flight_requests", &[]) == value).then_some(())
        },
    )
    .await;
}

fn encode_one(id: &str, pixels: &[u8]) -> pb::EncodeRequest {
    pb::EncodeRequest {
        images: vec![raw_image(id, pixels)],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_calls_in_flight_refuses_new_ones_and_cuts_what_outlasts_the_grace_period()
{
    within(LIMIT, async {
        let grace = Duration::from_secs(2);
        let mut command = serve_command(model_path());
        // A lone image waits in the batcher until a second one arrives (max batch 2, a
        // minute's queue delay), so the test decides when the in-flight call finishes.
        command.args(["--max-batch", "2", "--max-queue-delay-us", "60000000"]);
        command.args(["--shutdown-grace-secs", "2"]);
        let mut server = ServerProcess::spawn(command);
        let metrics = server.http_addr.expect("metrics on");
        let connection = channel(server.addr).await;
        let mut health = HealthClient::new(connection.clone());
        // Watches of the Labeller and of the whole server ("").
        let mut watches = Vec::new();
        for service in ["aelabel.v1.Labeller", ""] {
            let request = HealthCheckRequest {
                service: service.into(),
            };
            let mut watch = health.watch(request).await.unwrap().into_inner();
            let first = watch.message().await.unwrap().expect("a status");
            assert_eq!(first.status, ServingStatus::Serving as i32, "{service:?}");
            watches.push(watch);
        }

        // A stream opened before the signal, with nothing sent yet, and a unary call in flight.
        let mut client = LabellerClient::new(connection.clone());
        let (stream_tx, stream_rx) = tokio::sync::mpsc::channel(1);
        let mut answers = client
            .label_stream(ReceiverStream::new(stream_rx))
            .await
            .unwrap()
            .into_inner();
        let (pixels, _) = test_images(2);
        let mut caller = client.clone();
        let in_flight_image = pixels[..784].to_vec();
        let in_flight = tokio::spawn(async move {
            caller
                .encode(encode_one("in-flight", &in_flight_image))
                .await
        });
        wait_in_flight(metrics, 1.0).await;

        // Taken before the signal: the server's grace period cannot start earlier.
        let signalled = Instant::now();
        server.terminate();
        // Health turns NOT_SERVING.
        for watch in &mut watches {
            let after = watch.message().await.unwrap().expect("a status");
            assert_eq!(after.status, ServingStatus::NotServing as i32);
        }
        // The server stops listening (a call that connected just before that may still be
        // served, like any call already in flight); from then on new calls are refused.
        eventually(SETTLE, "the server to close its ports", || {
            let open = server.listening_ports();
            async move { open.is_empty().then_some(()) }
        })
        .await;
        let fresh = Endpoint::from_shared(server.url()).unwrap().connect_lazy();
        let refused = LabellerClient::new(fresh)
            .encode(encode_one("new", &pixels[..784]))
            .await
            .expect_err("a new call after the ports closed");
        assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
        // So are new calls on the connection still open for the calls in flight: the server
        // has sent GOAWAY, so tonic's client either cancels the call on that connection
        // (CANCELLED, "connection closed") or reconnects and is refused (UNAVAILABLE).
        let refused = client
            .get_model_info(pb::GetModelInfoRequest {})
            .await
            .expect_err("a new call on the draining connection");
        assert!(
            matches!(refused.code(), Code::Cancelled | Code::Unavailable),
            "{refused:?}"
        );

        // The stream opened before the signal is still served: its image completes the batch
        // the in-flight call waits in, and both are answered.
        stream_tx
            .send(pb::LabelRequest {
                images: vec![raw_image("stream", &pixels[784..])],
                review_threshold: None,
            })
            .await
            .unwrap();
        let answer = answers.message().await.unwrap().expect("an answer");
        assert_eq!(answer.predictions[0].id, "stream");
        let finished = in_flight
            .await
            .unwrap()
            .expect("the in-flight call finishes");
        assert_eq!(finished.into_inner().embeddings[0].id, "in-flight");

        // The stream and the health watch stay open: the grace period's end cuts them, and
        // the server exits 0.
        let cut = answers.message().await;
        assert!(cut.is_err(), "the open stream was not cut: {cut:?}");
        for watch in &mut watches {
            assert!(watch.message().await.is_err(), "a health watch was not cut");
        }
        assert!(
            signalled.elapsed() >= grace,
            "calls were cut after {:?}, before the grace period of {grace:?}",
            signalled.elapsed()
        );
        let status = server.wait_exit(SETTLE);
        assert_eq!(status.code(), Some(0), "{}", server.log.join("\n"));
        let said = |message: &str| server.log.iter().any(|l| l.contains(message));
        assert!(said("shutting down: finishing in-flight requests"));
        assert!(said("grace period over: dropping the calls still open"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_http_leaves_only_the_grpc_port_open() {
    within(LIMIT, async {
        let with_metrics = ServerProcess::spawn(serve_command(model_path()));
        let metrics = with_metrics.http_addr.expect("metrics on by default");
        let mut both = vec![with_metrics.addr.port(), metrics.port()];
        both.sort_unstable();
        assert_eq!(with_metrics.listening_ports(), both);
        drop(with_metrics);

        // AELABEL_METRICS_ADDR, the older name of AELABEL_HTTP_ADDR, still moves the port.
        let mut legacy = clean_command();
        legacy
            .args(["serve", "--log-format", "json", "--threads", "1"])
            .args(["--addr", "127.0.0.1:0", "--model"])
            .arg(model_path())
            .env("AELABEL_METRICS_ADDR", "127.0.0.1:0");
        let legacy = ServerProcess::spawn(legacy);
        let moved = legacy
            .http_addr
            .expect("AELABEL_METRICS_ADDR gives the HTTP port");
        assert_ne!(moved.port(), aelabel::service::DEFAULT_HTTP_PORT);
        let mut both = vec![legacy.addr.port(), moved.port()];
        both.sort_unstable();
        assert_eq!(legacy.listening_ports(), both);
        drop(legacy);

        // The new names and the older ones from when the port served only metrics.
        let flag = |name: &str| {
            let mut command = serve_command(model_path());
            command.arg(name);
            command
        };
        let env = |name: &str| {
            let mut command = serve_command(model_path());
            command.env(name, "true");
            command
        };
        for (how, command) in [
            ("--no-http", flag("--no-http")),
            ("--no-metrics", flag("--no-metrics")),
            ("AELABEL_NO_HTTP", env("AELABEL_NO_HTTP")),
            ("AELABEL_NO_METRICS", env("AELABEL_NO_METRICS")),
        ] {
            let server = ServerProcess::spawn(command);
            assert_eq!(server.http_addr, None, "{how}: it logged a metrics address");
            assert_eq!(server.listening_ports(), vec![server.addr.port()], "{how}");
            // The one port is the gRPC port, and it answers.
            let info = LabellerClient::new(channel(server.addr).await)
                .get_model_info(pb::GetModelInfoRequest {})
                .await
                .expect("gRPC answers");
            assert_eq!(info.into_inner().input_width, 28);
        }
    })
    .await;
}

/// Threads of process `pid` whose name starts with `prefix`.
fn threads_named(pid: u32, prefix: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aelabel_variables_configure_the_server() {
    within(LIMIT, async {
        let mut command = clean_command();
        command.arg("serve").envs([
            ("AELABEL_MODEL", model_path().to_str().unwrap()),
            ("AELABEL_ADDR", "127.0.0.1:0"),
            ("AELABEL_HTTP_ADDR", "127.0.0.1:0"),
            ("AELABEL_LOG_FORMAT", "json"),
            ("AELABEL_THREADS", "2"),
            ("AELABEL_MAX_BATCH", "2"),
            ("AELABEL_MAX_QUEUE_DELAY_US", "60000000"),
            ("AELABEL_MAX_IN_FLIGHT", "1"),
            ("AELABEL_MAX_MESSAGE_BYTES", "100000"),
            ("AELABEL_MAX_IMAGE_SIDE", "1000"),
            ("AELABEL_MAX_DECODE_MIB", "1"),
            ("AELABEL_SHUTDOWN_GRACE_SECS", "1"),
        ]);
        // JSON logs naming both bound ports show AELABEL_LOG_FORMAT, _ADDR and _HTTP_ADDR.
        let mut server = ServerProcess::spawn(command);
        let metrics = server.http_addr.expect("AELABEL_HTTP_ADDR");
        // A thread is named once it runs, so wait for the pool's threads to show up.
        let pid = server.pid();
        eventually(
            SETTLE,
            "two aelabel-infer threads (AELABEL_THREADS)",
            || async move { (threads_named(pid, "aelabel-infer-") == 2).then_some(()) },
        )
        .await;
        let mut client = LabellerClient::new(channel(server.addr).await);
        let info = client
            .get_model_info(pb::GetModelInfoRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(info.max_batch, 2, "AELABEL_MAX_BATCH");

        let (pixels, _) = test_images(1);
        let refuse = |request: pb::LabelRequest| {
            let mut client = client.clone();
            async move { client.label(request).await.expect_err("refused") }
        };
        let status = refuse(pb::LabelRequest {
            images: vec![raw_image("big", &pixels); 200],
            review_threshold: None,
        })
        .await;
        assert_eq!(
            status.code(),
            Code::ResourceExhausted,
            "AELABEL_MAX_MESSAGE_BYTES: {status:?}"
        );
        let wide = pb::Image {
            id: "wide".into(),
            data: Some(pb::image::Data::Raw(pb::RawImage {
                width: 1001,
                height: 1,
                pixels: vec![0; 1001].into(),
            })),
        };
        let status = refuse(pb::LabelRequest {
            images: vec![wide],
            review_threshold: None,
        })
        .await;
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().contains("over the 1000-pixel side limit"),
            "AELABEL_MAX_IMAGE_SIDE: {}",
            status.message()
        );
        // A 1000×1000 RGBA PNG may decode to more than 1 MiB: over AELABEL_MAX_DECODE_MIB.
        let mut png = Vec::new();
        image::RgbaImage::new(1000, 1000)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let status = refuse(pb::LabelRequest {
            images: vec![pb::Image {
                id: "png".into(),
                data: Some(pb::image::Data::Encoded(png.into())),
            }],
            review_threshold: None,
        })
        .await;
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(
            status.message().contains("decode budget of 1 MiB"),
            "AELABEL_MAX_DECODE_MIB: {}",
            status.message()
        );

        // One image waits for a second (AELABEL_MAX_QUEUE_DELAY_US) holding the only slot
        // (AELABEL_MAX_IN_FLIGHT), so the next call is refused.
        let mut caller = client.clone();
        let one = pixels.clone();
        let held = tokio::spawn(async move { caller.encode(encode_one("held", &one)).await });
        wait_in_flight(metrics, 1.0).await;
        let status = client
            .encode(encode_one("second", &pixels))
            .await
            .expect_err("over the bound");
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.message(),
            "the server is busy: 1 requests are in flight; retry with back-off",
            "AELABEL_MAX_IN_FLIGHT"
        );

        // SIGTERM: the held call outlasts AELABEL_SHUTDOWN_GRACE_SECS and is cut at its end.
        // Taken before the signal: the server's grace period cannot start earlier.
        let signalled = Instant::now();
        server.terminate();
        let cut = held.await.unwrap();
        assert!(cut.is_err(), "the held call was answered: {cut:?}");
        assert!(
            signalled.elapsed() >= Duration::from_secs(1),
            "cut before the grace period"
        );
        assert_eq!(server.wait_exit(SETTLE).code(), Some(0));
    })
    .await;
}
