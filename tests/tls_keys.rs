//! TLS and API keys on every door: each RPC family and HTTP route × (no key, a key without the
//! door's scope, a key with it) answers exactly UNAUTHENTICATED/401, PERMISSION_DENIED/403 or
//! the door's own answer; health, reflection and metrics stay open; plaintext to a TLS port is
//! refused while the health-only port answers probes in plaintext; a rotated certificate is
//! served without a restart; mutual TLS asks for a client certificate.

mod common;

use aelabel::client::{Connection, Target};
use aelabel::service::{LabelStudioConfig, Security, ServeConfig};
use aelabel::wire as pb;
use aelabel::wire::inference as oip;
use common::db::TestDb;
use common::metrics::Scrape;
use common::server::{config, register_test_model, registry_config, TestServer};
use common::tls::{key, pki, Doors, TestPki, KEYS};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

const LIMIT: Duration = Duration::from_secs(60);

/// A registry-backed TLS server with keys, LabelJobs and the Label Studio backend: every door.
async fn every_door(db: &TestDb, runs: &std::path::Path) -> TestServer {
    register_test_model(&db.url).await;
    let cfg = ServeConfig {
        label_studio: Some(LabelStudioConfig {
            url: "http://127.0.0.1:9/".parse().unwrap(),
            token: "label-studio-token".into(),
            max_image_bytes: 1 << 20,
            fetch_timeout: Duration::from_secs(1),
            runs_dir: runs.to_path_buf(),
            train_threads: 1,
        }),
        ..Doors::TlsWithKeys.apply(registry_config(&db.url, Duration::from_millis(200)))
    };
    TestServer::start(cfg, true).await
}

/// A connection to `server` sending `key` (none when `None`).
async fn connection(server: &TestServer, key: Option<&str>) -> Connection {
    aelabel::client::channel(&Target {
        api_key: key.map(str::to_string),
        ..server.target()
    })
    .await
    .expect("connects over TLS")
}

/// The gRPC status code of one call of each family on `channel`, by family.
async fn grpc_codes(channel: Connection) -> Vec<(&'static str, Code)> {
    use oip::grpc_inference_service_client::GrpcInferenceServiceClient;
    use pb::label_jobs_client::LabelJobsClient;
    use pb::labeller_client::LabellerClient;
    let code = |r: Result<(), tonic::Status>| r.map_or_else(|s| s.code(), |()| Code::Ok);
    let mut labeller = LabellerClient::new(channel.clone());
    let mut inference = GrpcInferenceServiceClient::new(channel.clone());
    let mut jobs = LabelJobsClient::new(channel.clone());
    let mut health = HealthClient::new(channel.clone());
    let mut reflection =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(channel);
    let reflect = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    vec![
        (
            "Labeller",
            code(
                labeller
                    .get_model_info(pb::GetModelInfoRequest {})
                    .await
                    .map(|_| ()),
            ),
        ),
        (
            "GRPCInferenceService",
            code(
                inference
                    .server_metadata(oip::ServerMetadataRequest {})
                    .await
                    .map(|_| ()),
            ),
        ),
        (
            "LabelJobs",
            code(
                jobs.get_job(pb::GetJobRequest {
                    job_id: "no-such-job".into(),
                })
                .await
                .map(|_| ()),
            ),
        ),
        (
            "LabelJobs/TrainJob",
            code(
                jobs.train_job(pb::TrainJobRequest {
                    job_id: "no-such-job".into(),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
            ),
        ),
        (
            "health",
            code(
                health
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .map(|_| ()),
            ),
        ),
        (
            "reflection",
            code(
                async {
                    let mut answers = reflection
                        .server_reflection_info(tokio_stream::iter([reflect]))
                        .await?
                        .into_inner();
                    answers.message().await.map(|_| ())
                }
                .await,
            ),
        ),
    ]
}

/// The HTTP status of one request to each route with `key`, by route.
async fn http_codes(server: &TestServer, key: Option<&str>) -> Vec<(&'static str, u16)> {
    let http = server.http_client();
    let mut codes = Vec::new();
    for (route, post) in [
        ("/v2", false),
        ("/v2/models/aelabel-encoder/infer", true),
        ("/predict", true),
        ("/setup", true),
        ("/webhook", true),
        ("/metrics", false),
        ("/v2/health/live", false),
        ("/health", false),
    ] {
        let url = server.http_url(route);
        let mut request = if post {
            http.post(url).body("{}")
        } else {
            http.get(url)
        };
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.expect("the HTTP port answers");
        codes.push((route, response.status().as_u16()));
    }
    codes
}

/// What each door answers a key with its scope (the door's own answer to the request sent).
fn grpc_passed() -> Vec<(&'static str, Code)> {
    vec![
        ("Labeller", Code::Ok),
        ("GRPCInferenceService", Code::Ok),
        ("LabelJobs", Code::NotFound),
        ("LabelJobs/TrainJob", Code::NotFound),
        ("health", Code::Ok),
        ("reflection", Code::Ok),
    ]
}

fn http_passed() -> Vec<(&'static str, u16)> {
    vec![
        ("/v2", 200),
        ("/v2/models/aelabel-encoder/infer", 400),
        // Label Studio's routes refuse `{}` as a request missing its fields.
        ("/predict", 422),
        ("/setup", 422),
        ("/webhook", 422),
        ("/metrics", 200),
        ("/v2/health/live", 200),
        ("/health", 200),
    ]
}

/// `passed` with the doors that need a scope answering `code` instead.
fn refused<C: Copy>(
    passed: Vec<(&'static str, C)>,
    guarded: &[&str],
    code: C,
) -> Vec<(&'static str, C)> {
    passed
        .into_iter()
        .map(|(door, c)| (door, if guarded.contains(&door) { code } else { c }))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_door_answers_no_key_wrong_scope_and_right_scope_exactly() {
    common::within(LIMIT, async {
        let db = TestDb::sqlite();
        let runs = tempfile::tempdir().unwrap();
        let server = every_door(&db, runs.path()).await;
        let grpc_guarded = [
            "Labeller",
            "GRPCInferenceService",
            "LabelJobs",
            "LabelJobs/TrainJob",
        ];
        let http_guarded = [
            "/v2",
            "/v2/models/aelabel-encoder/infer",
            "/predict",
            "/setup",
            "/webhook",
        ];

        // No key, and a key the server does not hold: UNAUTHENTICATED / 401 on every guarded door.
        for key in [None, Some("not-a-key-the-server-holds")] {
            let got = grpc_codes(connection(&server, key).await).await;
            assert_eq!(
                got,
                refused(grpc_passed(), &grpc_guarded, Code::Unauthenticated),
                "{key:?}"
            );
            let got = http_codes(&server, key).await;
            assert_eq!(got, refused(http_passed(), &http_guarded, 401), "{key:?}");
        }
        // Each scope's key: its own doors pass, every other guarded door is PERMISSION_DENIED.
        let doors_of = |scope: &str| -> (Vec<&str>, Vec<&str>) {
            match scope {
                "label" => (
                    vec!["Labeller", "GRPCInferenceService"],
                    vec![
                        "/v2",
                        "/v2/models/aelabel-encoder/infer",
                        "/predict",
                        "/setup",
                    ],
                ),
                "jobs" => (vec!["LabelJobs"], vec![]),
                "train" => (vec!["LabelJobs/TrainJob"], vec!["/webhook"]),
                other => panic!("no scope {other}"),
            }
        };
        for (name, scopes, key) in KEYS {
            let (mut grpc_own, mut http_own) = (Vec::new(), Vec::new());
            for scope in scopes.split(',') {
                let (g, h) = doors_of(scope);
                grpc_own.extend(g);
                http_own.extend(h);
            }
            let grpc_denied: Vec<&str> = grpc_guarded
                .iter()
                .copied()
                .filter(|d| !grpc_own.contains(d))
                .collect();
            let http_denied: Vec<&str> = http_guarded
                .iter()
                .copied()
                .filter(|d| !http_own.contains(d))
                .collect();
            let got = grpc_codes(connection(&server, Some(key)).await).await;
            assert_eq!(
                got,
                refused(grpc_passed(), &grpc_denied, Code::PermissionDenied),
                "key {name}"
            );
            let got = http_codes(&server, Some(key)).await;
            assert_eq!(got, refused(http_passed(), &http_denied, 403), "key {name}");
        }

        // The refusal names the missing scope and how to get it; the key itself is never said.
        let status = pb::label_jobs_client::LabelJobsClient::new(
            connection(&server, Some(key("reviewer"))).await,
        )
        .train_job(pb::TrainJobRequest {
            job_id: "j".into(),
            ..Default::default()
        })
        .await
        .expect_err("jobs cannot train");
        assert_eq!(status.code(), Code::PermissionDenied);
        assert!(
            status
                .message()
                .contains("`reviewer` lacks the `train` scope"),
            "{}",
            status.message()
        );
        // Metrics count by key name and outcome, and never show a key.
        let text = server.metrics_text().await;
        for (_, _, key) in KEYS {
            assert!(!text.contains(key), "a key is in /metrics");
        }
        let scrape = Scrape::parse(&text).unwrap();
        let count = |key: &str, outcome: &str| {
            scrape.value(
                "aelabel_auth_requests_total",
                &[("key", key), ("outcome", outcome)],
            )
        };
        // 4 gRPC families + 5 guarded HTTP routes, once without a key.
        assert_eq!(count("(none)", "unauthenticated"), 9.0);
        assert_eq!(count("(unknown)", "unauthenticated"), 9.0);
        // The labeller's key: 2 gRPC + 4 HTTP doors pass, 2 + 1 are denied.
        assert_eq!(count("labeller", "allowed"), 6.0);
        assert_eq!(count("labeller", "permission_denied"), 3.0);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_metrics_need_a_key_of_any_scope() {
    let mut cfg = Doors::TlsWithKeys.apply(config());
    cfg.security.open_metrics = false;
    let server = TestServer::start(cfg, true).await;
    let http = server.http_client();
    let url = server.http_url("/metrics");
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(status(http.get(&url).send().await.unwrap()), 401);
    for (_, _, key) in KEYS {
        assert_eq!(
            status(http.get(&url).bearer_auth(key).send().await.unwrap()),
            200
        );
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_to_a_tls_port_is_refused_and_the_health_port_answers_in_plaintext() {
    let cfg = ServeConfig {
        security: Security {
            health_addr: Some("127.0.0.1:0".parse().unwrap()),
            ..Doors::TlsWithKeys.security()
        },
        ..config()
    };
    let server = TestServer::start(cfg, true).await;
    let health_addr = server.health_addr.expect("the health port is bound");

    // gRPC in plaintext to the TLS port: no call gets through.
    let plain = Target::from(server.addr.to_string().as_str());
    let refused = match aelabel::client::channel(&plain).await {
        Err(e) => e.to_string(),
        Ok(channel) => HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .expect_err("a plaintext call to the TLS port fails")
            .to_string(),
    };
    assert!(!refused.is_empty());
    // HTTP in plaintext to the TLS port: no HTTP answer, the connection is closed.
    let mut tcp = tokio::net::TcpStream::connect(server.http_addr)
        .await
        .unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
        .await
        .expect("the TLS port closes a plaintext connection")
        .ok();
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );

    // The health-only port answers in plaintext, with the main port's statuses, and nothing else.
    let channel = aelabel::client::channel(&Target::from(health_addr.to_string().as_str()))
        .await
        .expect("the health port takes plaintext");
    for service in ["", "aelabel.v1.Labeller"] {
        let status = HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health answers on the health port")
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let status = pb::labeller_client::LabellerClient::new(channel)
        .get_model_info(pb::GetModelInfoRequest {})
        .await
        .expect_err("the health port serves only health");
    assert_eq!(status.code(), Code::Unimplemented);
    server.shutdown().await;
}

/// The leaf certificate `addr` presents to a new TLS connection trusting `pki`'s CA.
async fn served_certificate(addr: std::net::SocketAddr, pki: &TestPki) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls::pki_types::CertificateDer::pem_file_iter(pki.ca_cert()).unwrap() {
        roots.add(ca.unwrap()).unwrap();
    }
    let mut client = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    client.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector
        .connect(name, tcp)
        .await
        .expect("the handshake succeeds");
    tls.get_ref().1.peer_certificates().expect("a certificate")[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_served_to_new_connections_without_a_restart() {
    let own = TestPki::new();
    let first = common::tls::pem_der(&std::fs::read_to_string(own.server_cert()).unwrap());
    let cfg = ServeConfig {
        security: Security {
            tls: Some(own.tls_config()),
            ..Security::default()
        },
        ..config()
    };
    let server = TestServer::start(cfg, true).await;
    assert_eq!(served_certificate(server.addr, &own).await, first);
    let mut before = server.client().await;
    before
        .get_model_info(pb::GetModelInfoRequest {})
        .await
        .expect("answers");

    let rotated = own.issue_server_cert();
    assert_ne!(rotated, first);
    common::eventually(
        Duration::from_secs(10),
        "the rotated certificate",
        || async { (served_certificate(server.addr, &own).await == rotated).then_some(()) },
    )
    .await;
    assert_eq!(
        served_certificate(server.http_addr, &own).await,
        rotated,
        "the HTTP port too"
    );
    // New connections use it; the connection made before goes on answering.
    server
        .client()
        .await
        .get_model_info(pb::GetModelInfoRequest {})
        .await
        .expect("answers");
    before
        .get_model_info(pb::GetModelInfoRequest {})
        .await
        .expect("still answers");

    // A half-written pair (the key of another certificate) is not served: the last good one stays.
    std::fs::write(
        own.server_key(),
        rcgen::KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    let broken_seen = std::time::Instant::now();
    while broken_seen.elapsed() < 5 * common::tls::RELOAD_EVERY {
        assert_eq!(served_certificate(server.addr, &own).await, rotated);
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_asks_every_client_for_a_certificate_the_ca_signed() {
    let mut tls = pki().tls_config();
    tls.client_ca = Some(pki().ca_cert());
    let cfg = ServeConfig {
        security: Security {
            tls: Some(tls),
            ..Security::default()
        },
        ..config()
    };
    let server = TestServer::start(cfg, true).await;
    let without = async {
        let channel = aelabel::client::channel(&server.target()).await?;
        pb::labeller_client::LabellerClient::new(channel)
            .get_model_info(pb::GetModelInfoRequest {})
            .await
            .map_err(aelabel::client::ClientError::from)
    };
    assert!(
        without.await.is_err(),
        "a client without a certificate gets in"
    );
    let with = Target {
        client_identity: Some((pki().client_cert(), pki().client_key())),
        ..server.target()
    };
    pb::labeller_client::LabellerClient::new(aelabel::client::channel(&with).await.unwrap())
        .get_model_info(pb::GetModelInfoRequest {})
        .await
        .expect("a client with a certificate the CA signed gets in");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_connects_over_tls_with_a_key() {
    let venv =
        common::venv::python_venv("tritonclient-2.73.0", &["tritonclient[grpc,http]==2.73.0"]);
    let server = TestServer::start(Doors::TlsWithKeys.apply(config()), true).await;
    let (pixels, _) = common::server::test_images(16);
    let (_, predictions, _) = common::oip::labeller_answers(&server, &pixels).await;
    let classes: Vec<i64> = predictions.iter().map(|p| p.class_index as i64).collect();
    let dir = tempfile::tempdir().unwrap();
    let expected = dir.path().join("expected.json");
    let json = serde_json::json!({"key": key("labeller"), "wrong_key": key("reviewer"), "classes": classes});
    std::fs::write(&expected, json.to_string()).unwrap();
    let mut script = std::process::Command::new(venv.join("bin/python"));
    script
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/oip_tls_client.py"
        ))
        .arg(format!("localhost:{}", server.addr.port()))
        .arg(format!("localhost:{}", server.http_addr.port()))
        .arg(pki().ca_cert())
        .arg(common::data_dir().join("t10k-images-idx3-ubyte.gz"))
        .arg(&expected);
    let (code, out, err) = tokio::task::spawn_blocking(move || common::output_within(script))
        .await
        .unwrap();
    assert_eq!(code, 0, "the tritonclient script failed:\n{out}\n{err}");
    for transport in ["grpc", "http"] {
        assert!(
            out.contains(&format!(
                "{transport}: 16 classes over TLS with a key equal Label's"
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!("refused {transport} without a key")),
            "{out}"
        );
    }
    server.shutdown().await;
}

/// `aelabel` with `args`, sending `key` through `AELABEL_API_KEY`.
async fn aelabel_with_key(args: Vec<String>, key: Option<&str>) -> (i32, String, String) {
    let mut command = common::clean_command();
    command.args(&args).arg("--quiet");
    if let Some(key) = key {
        command.env("AELABEL_API_KEY", key);
    }
    tokio::task::spawn_blocking(move || common::output_within(command))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_binary_and_the_client_commands_speak_tls_and_log_key_names_only() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("api-keys");
    std::fs::write(&keys, common::tls::keys_file_text()).unwrap();
    let mut command = common::process::serve_command(common::server::model_path());
    command
        .arg("--tls-cert")
        .arg(pki().server_cert())
        .arg("--tls-key")
        .arg(pki().server_key())
        .arg("--api-keys-file")
        .arg(&keys)
        .args(["--health-addr", "127.0.0.1:0"]);
    let mut server = common::process::ServerProcess::spawn(command);
    let (pixels, _) = common::server::test_images(8);
    let images = dir.path().join("images-idx3-ubyte");
    common::write(&images, &common::idx_images(8, 28, 28, &pixels));
    let encode = |out: &str| -> Vec<String> {
        [
            "encode",
            "--server",
            &format!("https://127.0.0.1:{}", server.addr.port()),
            "--ca-cert",
            pki().ca_cert().to_str().unwrap(),
            images.to_str().unwrap(),
            "--out",
            dir.path().join(out).to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let (code, out, err) = aelabel_with_key(encode("a.csv"), Some(key("labeller"))).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("encoded 8 images"), "{out}");
    let (code, _, err) = aelabel_with_key(encode("b.csv"), None).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("UNAUTHENTICATED") && err.contains("needs an API key"),
        "{err}"
    );
    let (code, _, err) = aelabel_with_key(encode("c.csv"), Some(key("reviewer"))).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("PERMISSION_DENIED") && err.contains("`label` scope"),
        "{err}"
    );
    // Without --ca-cert the test CA is not trusted: the handshake fails, nothing is sent.
    let mut untrusted = encode("d.csv");
    untrusted.drain(3..5);
    let (code, _, err) = aelabel_with_key(untrusted, Some(key("labeller"))).await;
    assert_eq!(code, 1);
    assert!(err.contains("cannot connect to https://"), "{err}");

    // The refusals are logged with the key's name; no key is ever in the log.
    let first = server.wait_for_log("request refused", LIMIT);
    let second = server.wait_for_log("request refused", LIMIT);
    let named: Vec<&str> = [&first, &second]
        .iter()
        .map(|l| l["fields"]["key"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(named, ["(none)", "reviewer"]);
    server.terminate();
    assert!(server.wait_exit(LIMIT).success());
    let log = server.log.join("\n");
    for (_, _, key) in KEYS {
        assert!(!log.contains(key), "a key is in the log:\n{log}");
    }
}

#[test]
fn a_keys_file_that_cannot_be_read_or_parsed_stops_the_server_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("api-keys");
    let serve = |file: &std::path::Path| {
        let mut command = common::process::serve_command(common::server::model_path());
        command.arg("--api-keys-file").arg(file);
        common::output_within(command)
    };
    let bad_lines = [
        (
            "ops label",
            "expected `NAME SCOPE[,SCOPE…] KEY` (3 fields), found 2",
        ),
        (
            "ops lable k0123456789abcdefgh",
            "`lable` is not a scope: label, jobs or train",
        ),
        (
            "ops label short",
            "the key of `ops` is shorter than 16 characters",
        ),
        (
            "o/ps label k0123456789abcdefgh",
            "the name `o/ps` may hold only",
        ),
    ];
    for (line, reason) in bad_lines {
        std::fs::write(
            &keys,
            format!("# keys\n\nfine label,jobs k0123456789abcdef0\n{line}\n"),
        )
        .unwrap();
        let (code, out, err) = serve(&keys);
        assert_eq!(code, 1, "{line}: {out}{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(
            err.contains(&format!("{} line 4: {reason}", keys.display())),
            "{line}: {err}"
        );
    }
    let missing = dir.path().join("missing");
    let (code, _, err) = serve(&missing);
    assert_eq!(code, 1);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains(&format!(
            "cannot read the API keys file {}",
            missing.display()
        )),
        "{err}"
    );
}
