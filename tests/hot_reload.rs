//! Servers follow the registry: an activation switches running servers under load without a
//! failed call, a bad artifact is refused while the old model keeps answering, rollback
//! switches back, and a database outage changes nothing until the database is back.

mod common;

use aelabel::service::{ModelSource, ServeConfig};
use aelabel::store::{NewModel, Store};
use aelabel::wire as pb;
use common::db::TestDb;
use common::proxy::TcpProxy;
use common::server::{config, model_path, raw_image, second_model_path, test_images, TestServer};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

/// Registry poll interval of the servers under test: the default.
const POLL: Duration = Duration::from_secs(1);
/// How soon after an activation every server must answer with the new version.
const SWITCH_DEADLINE: Duration = Duration::from_secs(5);

fn record(path: &Path) -> NewModel {
    let (model, sha256) = aelabel::model::Model::load_with_sha256(path).unwrap();
    NewModel::from_checkpoint(&model.meta, path.to_path_buf(), sha256)
}

/// A store with the two test models registered; the first is active.
async fn two_models(url: &str) -> (Store, String, String) {
    let store = Store::connect(url).await.unwrap();
    let (a, b) = (record(model_path()), record(second_model_path()));
    store.register_model(&a).await.unwrap();
    store.register_model(&b).await.unwrap();
    assert_eq!(
        store.active_version().await.unwrap(),
        Some(a.version.clone())
    );
    (store, a.version, b.version)
}

async fn registry_server(url: &str) -> TestServer {
    TestServer::start(
        ServeConfig {
            model: ModelSource::Registry {
                database_url: url.to_string(),
                poll: POLL,
            },
            ..config()
        },
        true,
    )
    .await
}

async fn served_version(server: &TestServer) -> String {
    let mut client = server.client().await;
    let info = client.get_model_info(pb::GetModelInfoRequest {}).await;
    info.unwrap().into_inner().version
}

/// Waits until `server` reports `version`, failing after the switch deadline.
async fn wait_for_version(server: &TestServer, version: &str, since: Instant) -> Duration {
    loop {
        if served_version(server).await == version {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < SWITCH_DEADLINE,
            "the server still serves {} {:?} after the activation of {version}",
            served_version(server).await,
            since.elapsed()
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of one exact series on the server's `/metrics`.
async fn metric(server: &TestServer, series: &str) -> Option<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(server.http_addr)
        .await
        .unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    tcp.read_to_string(&mut body).await.unwrap();
    body.lines()
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(name, _)| *name == series)
        .and_then(|(_, value)| value.parse().ok())
}

async fn health(server: &TestServer) -> i32 {
    let mut health = HealthClient::new(server.channel().await);
    let request = HealthCheckRequest {
        service: "aelabel.v1.Labeller".into(),
    };
    health.check(request).await.unwrap().into_inner().status
}

/// Clients that send one-image `Label` calls back to back and record the version of each
/// answer, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<Vec<Result<String, tonic::Status>>>>,
}

impl Load {
    async fn start(server: &TestServer, clients: usize) -> Self {
        let (pixels, _) = test_images(8);
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for c in 0..clients {
            let mut client = server.client().await;
            let stop = stop.clone();
            let image = pixels[(c % 8) * 784..(c % 8 + 1) * 784].to_vec();
            handles.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let request = pb::LabelRequest {
                        images: vec![raw_image("x", &image)],
                        review_threshold: None,
                    };
                    seen.push(
                        client
                            .label(request)
                            .await
                            .map(|r| r.into_inner().model_version),
                    );
                }
                seen
            }));
        }
        Self {
            stop,
            clients: handles,
        }
    }

    /// Stops the clients; each one's answers in order.
    async fn finish(self) -> Vec<Vec<Result<String, tonic::Status>>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for handle in self.clients {
            all.push(handle.await.unwrap());
        }
        all
    }
}

/// Asserts every call succeeded and each client saw `old` then `new`, switching once.
fn assert_one_clean_switch(answers: &[Vec<Result<String, tonic::Status>>], old: &str, new: &str) {
    for (c, calls) in answers.iter().enumerate() {
        let versions: Vec<&str> = calls
            .iter()
            .map(|r| match r {
                Ok(v) => v.as_str(),
                Err(status) => panic!("client {c}: a call failed during the switch: {status:?}"),
            })
            .collect();
        let switches = versions.windows(2).filter(|w| w[0] != w[1]).count();
        assert_eq!(versions.first(), Some(&old), "client {c} started elsewhere");
        assert_eq!(versions.last(), Some(&new), "client {c} never saw {new}");
        assert_eq!(switches, 1, "client {c} flapped between versions");
    }
}

/// Successful `Label` calls, as `/metrics` counts them.
const LABEL_OK: &str = "aelabel_requests_total{code=\"OK\",method=\"Label\"}";
/// How long the load may take to get a given number of answers before the test fails.
const LOAD_DEADLINE: Duration = Duration::from_secs(30);

/// Waits until the server has answered `calls` `Label` calls successfully; fails after
/// [`LOAD_DEADLINE`] instead of hanging.
async fn answered_at_least(server: &TestServer, calls: f64) {
    common::eventually(
        LOAD_DEADLINE,
        &format!("{calls} answered Label calls"),
        || async { (metric(server, LABEL_OK).await.unwrap_or(0.0) >= calls).then_some(()) },
    )
    .await;
}

/// Activation under a steady stream of calls: zero failures, one switch per client, within
/// the deadline; model info and metrics follow.
async fn activation_switches_a_loaded_server(url: &str) {
    let (store, a, b) = two_models(url).await;
    let server = registry_server(url).await;
    assert_eq!(served_version(&server).await, a);
    let load = Load::start(&server, 4).await;
    // Let every client get answers from the old model first.
    answered_at_least(&server, 40.0).await;
    let activated = Instant::now();
    store.activate(&b).await.unwrap();
    let took = wait_for_version(&server, &b, activated).await;
    // Keep the load on for a while on the new model, then look at every answer.
    let served = metric(&server, LABEL_OK).await.unwrap_or(0.0);
    answered_at_least(&server, served + 40.0).await;
    let answers = load.finish().await;
    assert_one_clean_switch(&answers, &a, &b);
    eprintln!("switched from {a} to {b} in {took:?} under load");
    let info = format!("aelabel_model_info{{version=\"{b}\"}}");
    assert_eq!(metric(&server, &info).await, Some(1.0));
    let old_info = format!("aelabel_model_info{{version=\"{a}\"}}");
    assert_eq!(metric(&server, &old_info).await, None);
    assert_eq!(
        metric(&server, "aelabel_model_reloads_total{outcome=\"loaded\"}").await,
        Some(1.0)
    );
    assert_eq!(health(&server).await, ServingStatus::Serving as i32);

    // Rollback restores the previous version.
    let rolled = Instant::now();
    assert_eq!(store.rollback().await.unwrap().version, a);
    wait_for_version(&server, &a, rolled).await;
    server.shutdown().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn activation_switches_a_loaded_server_without_a_failed_call_on_sqlite() {
    let db = TestDb::sqlite();
    activation_switches_a_loaded_server(&db.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn activation_switches_a_loaded_server_without_a_failed_call_on_postgres() {
    let db = TestDb::postgres().await;
    activation_switches_a_loaded_server(&db.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_on_one_postgres_both_switch_within_five_seconds() {
    let db = TestDb::postgres().await;
    let (store, a, b) = two_models(&db.url).await;
    let (one, two) = (
        registry_server(&db.url).await,
        registry_server(&db.url).await,
    );
    assert_eq!(served_version(&one).await, a);
    assert_eq!(served_version(&two).await, a);
    let activated = Instant::now();
    store.activate(&b).await.unwrap();
    let (t1, t2) = tokio::join!(
        wait_for_version(&one, &b, activated),
        wait_for_version(&two, &b, activated)
    );
    eprintln!("both servers switched: {t1:?} and {t2:?} after the activation");
    one.shutdown().await;
    two.shutdown().await;
    store.close().await;
}

/// Registers a copy of the second model, then damages or removes the copy.
async fn bad_artifact_is_refused(damage: impl FnOnce(&Path)) {
    let db = TestDb::sqlite();
    let (store, a, _) = two_models(&db.url).await;
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("model.safetensors");
    std::fs::copy(second_model_path(), &copy).unwrap();
    let bad = record(&copy);
    // Same weights as the second model: register it under that record's version.
    store.register_model(&bad).await.unwrap();
    damage(&copy);
    let server = registry_server(&db.url).await;
    store.activate(&bad.version).await.unwrap();
    let refused = "aelabel_model_reloads_total{outcome=\"refused\"}";
    let started = Instant::now();
    while metric(&server, refused).await != Some(1.0) {
        assert!(
            started.elapsed() < SWITCH_DEADLINE,
            "the bad artifact was neither refused nor loaded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(served_version(&server).await, a);
    let (pixels, _) = test_images(1);
    let answer = server
        .client()
        .await
        .label(pb::LabelRequest {
            images: vec![raw_image("x", &pixels)],
            review_threshold: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.model_version, a);
    assert_eq!(health(&server).await, ServingStatus::Serving as i32);
    assert_eq!(
        metric(&server, "aelabel_model_reloads_total{outcome=\"loaded\"}").await,
        Some(0.0)
    );
    server.shutdown().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupted_artifact_is_refused_and_the_old_model_keeps_answering() {
    bad_artifact_is_refused(|path| {
        let mut bytes = std::fs::read(path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x55;
        std::fs::write(path, bytes).unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_artifact_is_refused_and_the_old_model_keeps_answering() {
    bad_artifact_is_refused(|path| std::fs::remove_file(path).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_outage_keeps_the_model_serving_and_activations_apply_when_it_is_back() {
    let db = TestDb::postgres().await;
    let (store, a, b) = two_models(&db.url).await;
    let proxy = TcpProxy::start(common::db::postgres_server_addr()).await;
    let server = registry_server(&db.url_via(proxy.addr)).await;
    assert_eq!(served_version(&server).await, a);

    proxy.cut();
    // The activation happens while the server cannot see the database.
    store.activate(&b).await.unwrap();
    // Wait until the server has tried the database and been refused twice.
    let started = Instant::now();
    while proxy.refused() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the server did not poll the registry"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (pixels, _) = test_images(1);
    let mut client = server.client().await;
    for _ in 0..5 {
        let answer = client
            .label(pb::LabelRequest {
                images: vec![raw_image("x", &pixels)],
                review_threshold: None,
            })
            .await
            .expect("Label keeps answering during the outage");
        assert_eq!(answer.into_inner().model_version, a);
    }
    assert_eq!(health(&server).await, ServingStatus::Serving as i32);

    proxy.restore();
    let back = Instant::now();
    // Reconnecting may take up to the pool's acquire timeout (3 s) on top of the poll.
    let deadline = SWITCH_DEADLINE + Duration::from_secs(3);
    while served_version(&server).await != b {
        assert!(
            back.elapsed() < deadline,
            "the activation was not picked up after the outage"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown().await;
    store.close().await;
}
