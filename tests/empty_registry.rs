//! A team with a pile of images and no model: `aelabel serve` on an empty registry starts,
//! takes label jobs that bring their own classes, answers every call that needs a model with
//! `UNAVAILABLE` saying what to do, and serves the first model activated later without a
//! restart. `CreateJob`'s classes and size are checked field by field, and `aelabel jobs
//! create --classes / --classes-file / --input-size` reach the server.

mod common;

use aelabel::client::Connection;
use aelabel::service::{
    LABELLER_HEALTH_NAME, LABEL_JOBS_HEALTH_NAME, NO_MODEL, SERVER_HEALTH_NAME,
};
use aelabel::wire as pb;
use aelabel::wire::inference as oip;
use aelabel::wire::label_jobs_client::LabelJobsClient;
use common::db::TestDb;
use common::server::{
    model_path, raw_image, register_test_model, registry_config, test_images, TestServer,
};
use common::{clean_command, eventually, output_with_input, within};
use std::time::Duration;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

/// How often the test servers look at the registry and for pending items.
const POLL: Duration = Duration::from_millis(100);
/// Longest a status change the tests wait for may take.
const DEADLINE: Duration = Duration::from_secs(60);

/// A server following the registry at `db`, started (and "warmed up") with no model.
async fn empty_registry_server(db: &TestDb) -> TestServer {
    TestServer::start(registry_config(&db.url, POLL), true).await
}

async fn jobs_client(server: &TestServer) -> LabelJobsClient<Connection> {
    LabelJobsClient::new(server.channel().await)
}

/// The `grpc.health.v1` status of `service`.
async fn health(server: &TestServer, service: &str) -> ServingStatus {
    let status = HealthClient::new(server.channel().await)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("a health answer")
        .into_inner()
        .status;
    ServingStatus::try_from(status).expect("a known status")
}

/// Waits until `service` reports `want`.
async fn wait_health(server: &TestServer, service: &str, want: ServingStatus) {
    eventually(DEADLINE, &format!("{service:?} to be {want:?}"), || async {
        (health(server, service).await == want).then_some(())
    })
    .await;
}

fn create(name: &str, classes: &[&str], width: u32, height: u32) -> pb::CreateJobRequest {
    pb::CreateJobRequest {
        name: name.into(),
        class_names: classes.iter().map(|c| c.to_string()).collect(),
        input_width: width,
        input_height: height,
        ..Default::default()
    }
}

async fn get_job(client: &mut LabelJobsClient<Connection>, id: &str) -> pb::Job {
    client
        .get_job(pb::GetJobRequest { job_id: id.into() })
        .await
        .expect("GetJob")
        .into_inner()
}

/// Adds the first `n` test images to `job` as raw 28×28 images; returns how many were new.
async fn add(client: &mut LabelJobsClient<Connection>, job: &str, pixels: &[u8], n: usize) -> u64 {
    let images = (0..n)
        .map(|i| raw_image(&format!("{job}-{i}"), &pixels[i * 784..(i + 1) * 784]))
        .collect();
    client
        .add_images(tokio_stream::iter([pb::AddImagesRequest {
            job_id: job.into(),
            images,
        }]))
        .await
        .expect("AddImages")
        .into_inner()
        .added
}

fn assert_status<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, message: &str) {
    let status = result.expect_err("a refusal");
    assert_eq!((status.code(), status.message()), (code, message));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_empty_registry_takes_jobs_and_serves_the_first_activated_model() {
    // Train the test model before the server starts: registering it is what this test times.
    tokio::task::spawn_blocking(model_path).await.unwrap();
    let db = TestDb::sqlite();
    let server = empty_registry_server(&db).await;
    within(Duration::from_secs(240), async {
        // Up and taking jobs, but no Labeller yet.
        wait_health(&server, LABEL_JOBS_HEALTH_NAME, ServingStatus::Serving).await;
        assert_eq!(health(&server, SERVER_HEALTH_NAME).await, ServingStatus::Serving);
        assert_eq!(health(&server, LABELLER_HEALTH_NAME).await, ServingStatus::NotServing);
        let (pixels, _) = test_images(30);
        let mut labeller = server.client().await;
        let label = pb::LabelRequest {
            images: vec![raw_image("a", &pixels[..784])],
            review_threshold: None,
        };
        assert_status(labeller.label(label.clone()).await, Code::Unavailable, NO_MODEL);
        assert_status(
            labeller.get_model_info(pb::GetModelInfoRequest {}).await,
            Code::Unavailable,
            NO_MODEL,
        );

        // The Open Inference Protocol: not ready, and inference says why.
        let mut inference = common::oip::client(&server).await;
        let ready = inference.server_ready(oip::ServerReadyRequest {}).await.unwrap();
        assert!(!ready.into_inner().ready);
        let model_ready = |name: &str| oip::ModelReadyRequest {
            name: name.into(),
            version: String::new(),
        };
        let ready = inference.model_ready(model_ready("aelabel-classifier")).await;
        assert!(!ready.unwrap().into_inner().ready);
        let unknown = inference.model_ready(model_ready("resnet")).await;
        assert_eq!(unknown.unwrap_err().code(), Code::NotFound);
        assert_status(
            inference
                .model_infer(common::oip::raw_request("aelabel-classifier", &pixels[..784]))
                .await,
            Code::Unavailable,
            NO_MODEL,
        );
        let (code, _, body) =
            common::oip::http(server.http_addr, "GET", "/v2/health/ready", &[], b"").await;
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((code, body), (503, serde_json::json!({ "error": NO_MODEL })));

        // A job needs its own classes while no model exists.
        let mut jobs = jobs_client(&server).await;
        assert_status(
            jobs.create_job(create("pile", &[], 0, 0)).await,
            Code::FailedPrecondition,
            "no model is active, so the job needs its own classes: pass class_names (`aelabel jobs create --classes a,b,c`)",
        );
        let own = jobs
            .create_job(create("pile", &["top", "trouser", "bag"], 0, 0))
            .await
            .unwrap()
            .into_inner();
        let own = get_job(&mut jobs, &own.id).await;
        assert_eq!(own.class_names, ["top", "trouser", "bag"]);
        assert_eq!((own.input_width, own.input_height), (28, 28));
        assert_eq!(add(&mut jobs, &own.id, &pixels, 20).await, 20);

        // The first activation: the follower loads it and the Labeller turns SERVING.
        let version = register_test_model(&db.url).await;
        wait_health(&server, LABELLER_HEALTH_NAME, ServingStatus::Serving).await;
        assert_eq!(health(&server, SERVER_HEALTH_NAME).await, ServingStatus::Serving);
        let answer = labeller.label(label).await.unwrap().into_inner();
        assert_eq!(answer.model_version, version);
        assert_eq!(answer.predictions.len(), 1);
        let ready = inference.server_ready(oip::ServerReadyRequest {}).await.unwrap();
        assert!(ready.into_inner().ready);

        // Jobs without classes now take the model's, at its size only.
        assert_status(
            jobs.create_job(create("model", &[], 8, 8)).await,
            Code::InvalidArgument,
            "input_width: 8×8 differs from the serving model's input size 28×28, and a job without its own classes is labelled by that model; leave the size unset, or pass class_names",
        );
        let model_job = jobs
            .create_job(create("model", &[], 0, 0))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(model_job.class_names.len(), 10);
        assert_eq!(add(&mut jobs, &model_job.id, &pixels, 30).await, 30);
        let labelled = eventually(DEADLINE, "the model's job to be labelled", || {
            let mut jobs = jobs.clone();
            let id = model_job.id.clone();
            async move {
                let job = get_job(&mut jobs, &id).await;
                (job.counts.unwrap_or_default().pending == 0).then_some(job)
            }
        })
        .await;
        assert_eq!(labelled.model_versions, [version]);
        // The job with its own classes was claimed first (added first) and left alone: the
        // serving model's classes are not its classes.
        let own = get_job(&mut jobs, &own.id).await;
        let counts = own.counts.unwrap_or_default();
        assert_eq!((counts.total, counts.pending), (20, 20));
        assert!(own.model_versions.is_empty(), "{:?}", own.model_versions);
    })
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_job_refuses_bad_classes_and_sizes_naming_the_field() {
    let db = TestDb::sqlite();
    let server = empty_registry_server(&db).await;
    let mut jobs = jobs_client(&server).await;
    let many: Vec<String> = (0..1001).map(|i| format!("c{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let with = |threshold: Option<f32>, target: Option<f32>| pb::CreateJobRequest {
        auto_accept_threshold: threshold,
        target_accuracy: target,
        ..create("j", &["a", "b"], 0, 0)
    };
    let cases: Vec<(pb::CreateJobRequest, Code, &str)> = vec![
        (create("j", &["a"], 0, 0), Code::InvalidArgument,
            "class_names: 1 class given; a job needs at least 2 (or none, to take the serving model's)"),
        (create("j", &many, 0, 0), Code::InvalidArgument,
            "class_names: 1001 classes; a job may have at most 1000"),
        (create("j", &["a", "", "b"], 0, 0), Code::InvalidArgument,
            "class_names[1]: empty; every class needs a name"),
        (create("j", &["a", "b", "c", "b"], 0, 0), Code::InvalidArgument,
            "class_names[3]: `b` repeats class_names[1]; name each class once"),
        (create("j", &["a", " b"], 0, 0), Code::InvalidArgument,
            "class_names[1]: ` b` begins or ends with white space; remove it"),
        (create("j", &["a", "b\nc"], 0, 0), Code::InvalidArgument,
            "class_names[1]: \"b\\nc\" holds a control character; a class name is one line of text"),
        (create("j", &["a", "b"], 8, 0), Code::InvalidArgument,
            "input_height: 0 while input_width is 8; give both sides, or neither for the default"),
        (create("j", &["a", "b"], 0, 8), Code::InvalidArgument,
            "input_width: 0 while input_height is 8; give both sides, or neither for the default"),
        (create("j", &["a", "b"], 8, 1025), Code::InvalidArgument,
            "input_height: 1025 is more than the server's largest image side, 1024 (--max-image-side)"),
        (create("", &["a", "b"], 0, 0), Code::InvalidArgument,
            "name: required; give the job a name people recognise"),
        (with(Some(1.5), None), Code::InvalidArgument,
            "auto_accept_threshold: 1.5 is not a probability; use a value in [0, 1] or leave it unset for the model's own"),
        (with(Some(0.9), Some(0.95)), Code::InvalidArgument,
            "target_accuracy: set either it or auto_accept_threshold, not both"),
        (create("j", &[], 0, 0), Code::FailedPrecondition,
            "no model is active, so the job needs its own classes: pass class_names (`aelabel jobs create --classes a,b,c`)"),
    ];
    for (request, code, message) in cases {
        let shown = format!("{:?}", request.class_names.get(..4));
        let status = jobs.create_job(request).await.expect_err(&shown);
        assert_eq!(
            (status.code(), status.message()),
            (code, message),
            "{shown}"
        );
    }
    // Accepted: a target stays stored without a model; a size may be any W×H within the limit.
    let job = jobs
        .create_job(with(None, Some(0.95)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            job.target_accuracy,
            job.class_names,
            job.input_width,
            job.input_height
        ),
        (Some(0.95), vec!["a".to_string(), "b".to_string()], 28, 28)
    );
    let job = jobs
        .create_job(create("j", &["a", "b"], 8, 1024))
        .await
        .unwrap();
    let job = job.into_inner();
    assert_eq!((job.input_width, job.input_height), (8, 1024));
    server.shutdown().await;
}

/// Runs `aelabel ARGS --quiet` off the async runtime.
async fn aelabel(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let mut command = clean_command();
        command.args(&args).arg("--quiet");
        output_with_input(command, b"")
    })
    .await
    .expect("the command thread")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_create_sends_its_classes_and_size_and_refuses_a_repeated_class_line() {
    let db = TestDb::sqlite();
    let server = empty_registry_server(&db).await;
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let repeated = dir.path().join("repeated.txt");
    std::fs::write(&repeated, "cat\n\ndog\n  bird \ncat\n").unwrap();
    let (code, stdout, stderr) = aelabel(args(&[
        "jobs",
        "create",
        "--server",
        &url,
        "--name",
        "pets",
        "--classes-file",
        &repeated.display().to_string(),
    ]))
    .await;
    assert_ne!(code, 0);
    assert_eq!(stdout, "");
    assert_eq!(
        stderr.trim_end(),
        format!(
            "error: {}: line 5: class `cat` repeats line 1; name each class once",
            repeated.display()
        )
    );

    // From a file (blank lines ignored, names trimmed), and from the command line with a size.
    let classes = dir.path().join("classes.txt");
    std::fs::write(&classes, "cat\n\ndog\n  bird \n").unwrap();
    let status = |job: String| {
        let url = url.clone();
        async move {
            let (code, stdout, stderr) =
                aelabel(args(&["jobs", "status", "--server", &url, &job, "--json"])).await;
            assert_eq!(code, 0, "{stderr}");
            serde_json::from_str::<serde_json::Value>(&stdout).expect("one JSON object")
        }
    };
    for (extra, want_classes, want_size) in [
        (
            vec!["--classes-file", classes.to_str().unwrap()],
            serde_json::json!(["cat", "dog", "bird"]),
            serde_json::json!([28, 28]),
        ),
        (
            vec!["--classes", "a, b", "--input-size", "8"],
            serde_json::json!(["a", "b"]),
            serde_json::json!([8, 8]),
        ),
    ] {
        let mut list = args(&["jobs", "create", "--server", &url, "--name", "pets"]);
        list.extend(args(&extra));
        let (code, stdout, stderr) = aelabel(list).await;
        assert_eq!(code, 0, "{stderr}");
        let id = stdout.lines().last().expect("the job id").to_string();
        let json = status(id.clone()).await;
        assert_eq!(json["id"], id.as_str());
        assert_eq!(json["class_names"], want_classes);
        assert_eq!(json["input_size"], want_size);
        assert_eq!(
            (json["total"].clone(), json["pending"].clone()),
            (0.into(), 0.into())
        );
        assert_eq!(json["model_versions"], serde_json::json!([]));
    }

    // No classes and no model: the server's reason, on one line.
    let (code, _, stderr) = aelabel(args(&[
        "jobs", "create", "--server", &url, "--name", "pets",
    ]))
    .await;
    assert_ne!(code, 0);
    assert_eq!(
        stderr.trim_end(),
        "error: the server answered FAILED_PRECONDITION: no model is active, so the job needs its own classes: pass class_names (`aelabel jobs create --classes a,b,c`)"
    );
    server.shutdown().await;
}
