//! The Label Studio ML backend against a small fake Label Studio on loopback: it serves task
//! images at `/data/upload/...` behind its token (401 without it), and the test sends the
//! request bodies Label Studio sends (`/setup`, `/predict`, webhooks).

mod common;

use aelabel::model::Model;
use aelabel::service::{
    Application, JobWorkerConfig, LabelStudioConfig, ModelSource, ServeConfig, ServeError,
};
use aelabel::wire as pb;
use aelabel::wire::label_jobs_client::LabelJobsClient;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use common::db::TestDb;
use common::server::{config, model_path, raw_image, register_test_model, TestServer};
use common::{data_dir, eventually, within};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The fake Label Studio's access token.
const TOKEN: &str = "ls-test-token-0123";
/// Training images offered as tasks.
const TASKS: usize = 3000;
/// Least confident tasks a "person" annotates with the true label.
const ANNOTATED: usize = 300;
/// Tasks per `/predict` call.
const PER_CALL: usize = 250;
/// The image size limit the servers run with.
const MAX_IMAGE_BYTES: u64 = 1 << 20;

/// A Label Studio that serves uploaded files behind its token.
struct FakeLabelStudio {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl FakeLabelStudio {
    async fn start(files: HashMap<String, Vec<u8>>) -> Self {
        async fn upload(
            State(files): State<Arc<HashMap<String, Vec<u8>>>>,
            Path((project, name)): Path<(String, String)>,
            headers: HeaderMap,
        ) -> Result<Vec<u8>, StatusCode> {
            let token = headers.get("authorization").and_then(|v| v.to_str().ok());
            if token != Some(&format!("Token {TOKEN}")) {
                return Err(StatusCode::UNAUTHORIZED);
            }
            files
                .get(&format!("{project}/{name}"))
                .cloned()
                .ok_or(StatusCode::NOT_FOUND)
        }
        // Never answers: for the fetch timeout.
        async fn stalled() -> Vec<u8> {
            std::future::pending().await
        }
        let routes = axum::Router::new()
            .route("/data/upload/1/stalled.png", axum::routing::get(stalled))
            .route("/data/upload/{project}/{name}", axum::routing::get(upload))
            .with_state(Arc::new(files));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, routes).await.unwrap();
        });
        Self { addr, task }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

impl Drop for FakeLabelStudio {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A 28×28 grayscale PNG of `pixels`.
fn png(pixels: &[u8]) -> Vec<u8> {
    let image = image::GrayImage::from_raw(28, 28, pixels.to_vec()).unwrap();
    let mut out = std::io::Cursor::new(Vec::new());
    image.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A label config with a `<Choices>` of `classes` on an `<Image>`.
fn label_config(classes: &[String]) -> String {
    let choices: String = classes
        .iter()
        .map(|c| format!("    <Choice value=\"{c}\"/>\n"))
        .collect();
    format!(
        "<View>\n  <Image name=\"image\" value=\"$image\"/>\n  <Choices name=\"label\" toName=\"image\" choice=\"single\" showInLine=\"true\">\n{choices}  </Choices>\n</View>"
    )
}

/// The project object Label Studio puts in webhooks.
fn project(config: &str) -> Value {
    json!({
        "id": 1, "title": "Fashion", "description": "", "label_config": config,
        "expert_instruction": "", "show_instruction": false, "show_skip_button": true,
        "enable_empty_annotation": true, "maximum_annotations": 1,
        "min_annotations_to_start_training": 0, "model_version": "",
        "data_types": {"image": "Image"}, "organization": 1, "created_by": 1
    })
}

/// A task as Label Studio sends it.
fn task(id: usize, path: &str) -> Value {
    json!({
        "id": id, "data": {"image": path}, "meta": {}, "created_at": "2026-12-06T03:00:00.000000Z",
        "updated_at": "2026-12-06T03:00:00.000000Z", "is_labeled": false, "overlap": 1,
        "project": 1, "file_upload": 1, "annotations": [], "predictions": []
    })
}

/// An ANNOTATION_CREATED / _UPDATED webhook for task `task_id` choosing `choice`.
fn annotation_event(
    action: &str,
    annotation: usize,
    task_id: usize,
    choice: &str,
    config: &str,
) -> Value {
    json!({
        "action": action,
        "annotation": {
            "id": annotation,
            "result": [{
                "value": {"choices": [choice]}, "id": format!("r{annotation}"),
                "from_name": "label", "to_name": "image", "type": "choices", "origin": "manual"
            }],
            "was_cancelled": false, "ground_truth": false,
            "created_at": "2026-12-06T03:10:00.000000Z", "updated_at": "2026-12-06T03:10:00.000000Z",
            "lead_time": 2.5, "prediction": {}, "result_count": 0, "task": task_id, "completed_by": 1
        },
        "task": task(task_id, &format!("/data/upload/1/train_{}.png", task_id - 1)),
        "project": project(config)
    })
}

/// The registry-backed server with the Label Studio backend for `ls_url` and `token`.
async fn server(db: &TestDb, ls_url: &str, token: &str, runs: &std::path::Path) -> TestServer {
    TestServer::start(
        ServeConfig {
            model: ModelSource::Registry {
                database_url: db.url.clone(),
                poll: Duration::from_millis(200),
            },
            jobs: JobWorkerConfig::default(),
            label_studio: Some(ls_config(ls_url, token, runs)),
            ..config()
        },
        true,
    )
    .await
}

fn ls_config(ls_url: &str, token: &str, runs: &std::path::Path) -> LabelStudioConfig {
    LabelStudioConfig {
        url: ls_url.parse().unwrap(),
        token: token.to_string(),
        max_image_bytes: MAX_IMAGE_BYTES,
        fetch_timeout: Duration::from_secs(10),
        runs_dir: runs.to_path_buf(),
        train_threads: 2,
    }
}

/// POSTs `body` (JSON) to the server's `path`; the status and the JSON answer.
async fn post(
    http: &reqwest::Client,
    server: &TestServer,
    path: &str,
    body: &Value,
) -> (StatusCode, Value) {
    send(http, server, path, serde_json::to_vec(body).unwrap()).await
}

async fn send(
    http: &reqwest::Client,
    server: &TestServer,
    path: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let response = http
        .post(format!("http://{}{path}", server.http_addr))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    (
        status,
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap(),
    )
}

async fn health(http: &reqwest::Client, server: &TestServer) -> Value {
    let response = http
        .get(format!("http://{}/health", server.http_addr))
        .send()
        .await
        .unwrap();
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

fn predict_body(ids: std::ops::Range<usize>, config: &str) -> Value {
    let tasks: Vec<Value> = ids
        .map(|i| task(i + 1, &format!("/data/upload/1/train_{i}.png")))
        .collect();
    json!({"tasks": tasks, "model_version": "", "project": "1.1765000000", "label_config": config, "params": {"login": null, "password": null, "context": null}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predict_annotate_train_and_predict_with_the_new_model_on_sqlite() {
    predict_annotate_train_and_predict_with_the_new_model(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predict_annotate_train_and_predict_with_the_new_model_on_postgres() {
    predict_annotate_train_and_predict_with_the_new_model(TestDb::postgres().await).await;
}

/// The whole loop on the registry in `db`: predictions, annotations as reviews (created,
/// updated, deleted), a training started from Label Studio, and the new model predicting.
async fn predict_annotate_train_and_predict_with_the_new_model(db: TestDb) {
    within(Duration::from_secs(900), async {
        let base = register_test_model(&db.url).await;
        let classes = Model::load(model_path()).unwrap().meta.class_names;
        let pixels = aelabel::data::read_idx_images(&data_dir().join("train-images-idx3-ubyte.gz")).unwrap().pixels;
        let truth = aelabel::data::read_idx_labels(&data_dir().join("train-labels-idx1-ubyte.gz"), 10).unwrap();
        let files = (0..TASKS)
            .map(|i| (format!("1/train_{i}.png"), png(&pixels[i * 784..(i + 1) * 784])))
            .collect();
        let ls = FakeLabelStudio::start(files).await;
        let runs = tempfile::tempdir().unwrap();
        let server = server(&db, &ls.url(), TOKEN, runs.path()).await;
        let http = reqwest::Client::new();
        let config = label_config(&classes);

        // Connecting the model: health, then setup with the project's label config.
        let up = health(&http, &server).await;
        assert_eq!(up["status"], "UP");
        assert_eq!(up["model_version"], base.as_str());
        let setup = json!({"project": "1.1765000000", "schema": config, "hostname": ls.url(), "access_token": TOKEN, "model_version": "", "extra_params": null});
        assert_eq!(post(&http, &server, "/setup", &setup).await, (StatusCode::OK, json!({"model_version": base})));

        // Pre-annotations for every task: a choice of the config, scored by confidence.
        let mut scored = Vec::new();
        for start in (0..TASKS).step_by(PER_CALL) {
            let (status, answer) = post(&http, &server, "/predict", &predict_body(start..start + PER_CALL, &config)).await;
            assert_eq!(status, StatusCode::OK, "{answer}");
            assert_eq!(answer["model_version"], base.as_str());
            let results = answer["results"].as_array().unwrap();
            assert_eq!(results.len(), PER_CALL);
            for (k, r) in results.iter().enumerate() {
                assert_eq!(r["model_version"], base.as_str());
                let region = &r["result"][0];
                assert_eq!((region["from_name"].as_str(), region["to_name"].as_str(), region["type"].as_str()), (Some("label"), Some("image"), Some("choices")));
                let choice = region["value"]["choices"][0].as_str().unwrap().to_string();
                assert!(classes.contains(&choice), "{choice}");
                let score = r["score"].as_f64().unwrap();
                assert_eq!(region["score"].as_f64(), Some(score));
                scored.push((score, start + k, choice));
            }
        }
        // The same answers as the Labeller gives for the same pixels.
        let mut labeller = server.client().await;
        let direct = labeller
            .label(pb::LabelRequest {
                images: (0..32).map(|i| raw_image(&i.to_string(), &pixels[i * 784..(i + 1) * 784])).collect(),
                review_threshold: None,
            })
            .await
            .unwrap()
            .into_inner();
        for (p, (score, _, choice)) in direct.predictions.iter().zip(&scored) {
            // f32 on both sides: JSON carries the shortest text that reads back as the same f32.
            assert_eq!((&p.class_name, p.confidence), (choice, *score as f32));
        }

        // A person annotates the least confident tasks with their true classes.
        scored.sort_by(|a, b| a.0.total_cmp(&b.0));
        let chosen: Vec<usize> = scored.iter().take(ANNOTATED).map(|s| s.1).collect();
        let mut job_id = String::new();
        for &i in &chosen {
            let class = &classes[truth[i] as usize];
            let event = annotation_event("ANNOTATION_CREATED", 10_000 + i, i + 1, class, &config);
            let (status, answer) = post(&http, &server, "/webhook", &event).await;
            assert_eq!(status, StatusCode::CREATED, "{answer}");
            assert_eq!(answer["item_id"], format!("annotation-{}", 10_000 + i));
            assert_eq!(answer["class"], class.as_str());
            job_id = answer["job_id"].as_str().unwrap().to_string();
        }
        let mut jobs = LabelJobsClient::new(server.channel().await);
        let reviewed = |jobs: &mut LabelJobsClient<_>| {
            let job_id = job_id.clone();
            let mut jobs = jobs.clone();
            async move {
                let job = jobs.get_job(pb::GetJobRequest { job_id }).await.unwrap().into_inner();
                assert_eq!(job.name, "label-studio-project-1");
                job.counts.unwrap().reviewed
            }
        };
        assert_eq!(reviewed(&mut jobs).await, ANNOTATED as u64);

        // An update replaces the review; a deletion removes it.
        let first = chosen[0];
        let other = classes.iter().find(|c| **c != classes[truth[first] as usize]).unwrap();
        let update = annotation_event("ANNOTATION_UPDATED", 10_000 + first, first + 1, other, &config);
        assert_eq!(post(&http, &server, "/webhook", &update).await.0, StatusCode::CREATED);
        let review_of = |jobs: &mut LabelJobsClient<_>, item: String| {
            let mut jobs = jobs.clone();
            let job_id = job_id.clone();
            async move {
                let mut cursor = String::new();
                loop {
                    let page = jobs
                        .list_items(pb::ListItemsRequest { job_id: job_id.clone(), status: pb::ItemStatus::Reviewed as i32, page_size: 1000, cursor, ..Default::default() })
                        .await
                        .unwrap()
                        .into_inner();
                    if let Some(found) = page.items.iter().find(|it| it.id == item) {
                        return found.human_class;
                    }
                    assert!(!page.next_cursor.is_empty(), "{item} is not reviewed");
                    cursor = page.next_cursor;
                }
            }
        };
        let other_index = classes.iter().position(|c| c == other).unwrap() as u32;
        assert_eq!(review_of(&mut jobs, format!("annotation-{}", 10_000 + first)).await, Some(other_index));
        let restore = annotation_event("ANNOTATION_UPDATED", 10_000 + first, first + 1, &classes[truth[first] as usize], &config);
        assert_eq!(post(&http, &server, "/webhook", &restore).await.0, StatusCode::CREATED);
        assert_eq!(review_of(&mut jobs, format!("annotation-{}", 10_000 + first)).await, Some(u32::from(truth[first])));
        let extra = annotation_event("ANNOTATION_CREATED", 99_999, 2999 + 1, &classes[0], &config);
        assert_eq!(post(&http, &server, "/webhook", &extra).await.0, StatusCode::CREATED);
        assert_eq!(reviewed(&mut jobs).await, ANNOTATED as u64 + 1);
        let deleted = json!({"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 99_999}], "project": project(&config)});
        assert_eq!(post(&http, &server, "/webhook", &deleted).await, (StatusCode::OK, json!({"job_id": job_id, "removed": 1})));
        assert_eq!(reviewed(&mut jobs).await, ANNOTATED as u64);

        // START_TRAINING answers at once; a second one while it runs is refused.
        let start = json!({"action": "START_TRAINING", "project": project(&config)});
        let (status, answer) = post(&http, &server, "/webhook", &start).await;
        assert_eq!((status, answer), (StatusCode::CREATED, json!({"status": "training", "project": "1", "job_id": job_id})));
        let (status, answer) = post(&http, &server, "/webhook", &start).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(answer["error"], "project 1 is training already; wait until GET /health shows it finished");
        let started = std::time::Instant::now();
        let training = eventually(Duration::from_secs(600), "the training to finish", || {
            let http = http.clone();
            let server = &server;
            async move {
                let t = health(&http, server).await["trainings"]["1"].clone();
                (t["state"] != "running").then_some(t)
            }
        })
        .await;
        eprintln!("training took {:.1} s: {training}", started.elapsed().as_secs_f64());
        assert_eq!(training["state"], "finished", "{training}");
        assert_eq!(training["activated"], true, "{training}");
        assert_eq!(training["reviews"], ANNOTATED);
        let new_version = training["model_version"].as_str().unwrap().to_string();
        assert_ne!(new_version, base);
        assert!(training["test_accuracy"].as_f64() > training["previous_test_accuracy"].as_f64());

        // The server follows the activation, and /predict answers with the new model.
        eventually(Duration::from_secs(30), "predictions from the new model", || {
            let http = http.clone();
            let body = predict_body(0..4, &config);
            let server = &server;
            let new_version = new_version.clone();
            async move {
                let (status, answer) = post(&http, server, "/predict", &body).await;
                assert_eq!(status, StatusCode::OK, "{answer}");
                (answer["model_version"] == new_version.as_str()).then_some(())
            }
        })
        .await;
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors() {
    within(Duration::from_secs(300), async {
        let db = TestDb::sqlite();
        register_test_model(&db.url).await;
        let classes = Model::load(model_path()).unwrap().meta.class_names;
        let (pixels, _) = common::server::test_images(1);
        let garbage = b"these bytes are not an image".to_vec();
        let files = HashMap::from([
            ("1/shirt.png".to_string(), png(&pixels)),
            ("1/huge.png".to_string(), vec![0; MAX_IMAGE_BYTES as usize + 1]),
            ("1/garbage.png".to_string(), garbage.clone()),
        ]);
        let ls = FakeLabelStudio::start(files).await;
        let runs = tempfile::tempdir().unwrap();
        let server = server(&db, &ls.url(), TOKEN, runs.path()).await;
        let http = reqwest::Client::new();
        let config = label_config(&classes);
        let one = |path: &str| json!({"tasks": [task(7, path)], "project": "1.1765000000", "label_config": config});

        // The token is what Label Studio wants: the same image works with it.
        let (status, answer) = post(&http, &server, "/predict", &one("/data/upload/1/shirt.png")).await;
        assert_eq!(status, StatusCode::OK, "{answer}");

        // Label Studio refuses a wrong token.
        let wrong = self::server(&db, &ls.url(), "not-the-token", runs.path()).await;
        let (status, answer) = post(&http, &wrong, "/predict", &one("/data/upload/1/shirt.png")).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(
            answer["error"],
            format!("tasks[0] (task 7): Label Studio refused the image request {}data/upload/1/shirt.png with 401 Unauthorized; check --label-studio-token (Label Studio: Account & Settings → access token) and --label-studio-url", ls.url())
        );
        wrong.shutdown().await;

        // Label Studio cannot be reached.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_url = format!("http://{}/", closed.local_addr().unwrap());
        drop(closed);
        let away = self::server(&db, &closed_url, TOKEN, runs.path()).await;
        let (status, answer) = post(&http, &away, "/predict", &one("/data/upload/1/shirt.png")).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        let message = answer["error"].as_str().unwrap();
        let prefix = format!("tasks[0] (task 7): cannot fetch {closed_url}data/upload/1/shirt.png: ");
        let suffix = format!("; check that --label-studio-url ({closed_url}) is reachable from aelabel");
        assert!(message.starts_with(&prefix) && message.ends_with(&suffix), "{message}");
        away.shutdown().await;

        // Label Studio does not answer in time.
        let mut impatient = ls_config(&ls.url(), TOKEN, runs.path());
        impatient.fetch_timeout = Duration::from_secs(1);
        let slow = TestServer::start(
            ServeConfig {
                model: ModelSource::Registry { database_url: db.url.clone(), poll: Duration::from_millis(200) },
                label_studio: Some(impatient),
                ..common::server::config()
            },
            true,
        )
        .await;
        let (status, answer) = post(&http, &slow, "/predict", &one("/data/upload/1/stalled.png")).await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            answer["error"],
            format!("tasks[0] (task 7): fetching {}data/upload/1/stalled.png took longer than 1 s (--label-studio-fetch-timeout-secs); is the server reachable?", ls.url())
        );
        slow.shutdown().await;

        // An image over the size limit, and one that is not an image.
        let (status, answer) = post(&http, &server, "/predict", &one("/data/upload/1/huge.png")).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            answer["error"],
            format!("tasks[0] (task 7): the image at {}data/upload/1/huge.png is larger than the 1 MiB limit (--label-studio-max-image-mib); send a smaller image", ls.url())
        );
        let (status, answer) = post(&http, &server, "/predict", &one("/data/upload/1/garbage.png")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let why = aelabel::data::decode_to_input(&garbage, (28, 28), aelabel::data::ImageLimits::default()).unwrap_err();
        assert_eq!(answer["error"], format!("tasks[0] (task 7): the image {why}"));
        let (status, answer) = post(&http, &server, "/predict", &one("ftp://example.org/a.png")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(answer["error"], "tasks[0] (task 7): `ftp://example.org/a.png` is not an image URL aelabel can fetch; use Label Studio's /data/… paths, http(s):// URLs or data: URIs");

        // A data: URI works without Label Studio.
        use base64::Engine as _;
        let inline = format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(png(&pixels)));
        let (status, answer) = post(&http, &server, "/predict", &one(&inline)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");

        // A label config whose choices miss some of the model's classes.
        let fewer = label_config(&classes[..8]);
        let expected = format!(
            "label_config: the <Choices name=\"label\"> choices do not include the model's classes {}, {}; add a <Choice value=\"…\"/> for each (the model knows: {})",
            classes[8], classes[9], classes.join(", ")
        );
        let setup = json!({"project": "2.1765000000", "schema": fewer, "hostname": ls.url(), "access_token": TOKEN});
        assert_eq!(post(&http, &server, "/setup", &setup).await, (StatusCode::UNPROCESSABLE_ENTITY, json!({"error": expected})));
        let predict = json!({"tasks": [task(7, "/data/upload/1/shirt.png")], "project": "2.1765000000", "label_config": fewer});
        assert_eq!(post(&http, &server, "/predict", &predict).await, (StatusCode::UNPROCESSABLE_ENTITY, json!({"error": expected})));

        // An event this backend does not handle, and bodies that are not Label Studio's.
        // A bulk import's event carries lists where single events carry objects: refused by its
        // action, not by its shape.
        let bulk = annotation_event("ANNOTATION_CREATED", 5, 5, &classes[0], &config);
        let unknown = json!({"action": "ANNOTATIONS_CREATED", "annotation": [bulk["annotation"]], "task": [bulk["task"]], "project": project(&config)});
        assert_eq!(
            post(&http, &server, "/webhook", &unknown).await,
            (StatusCode::UNPROCESSABLE_ENTITY, json!({"error": "action: `ANNOTATIONS_CREATED` is not an event this backend handles; send ANNOTATION_CREATED, ANNOTATION_UPDATED, ANNOTATION_DELETED, ANNOTATIONS_DELETED or START_TRAINING (in Label Studio, tick only those for this webhook)"}))
        );
        let malformed = b"{\"action\": \"START_TRAINING\",".to_vec();
        let why = serde_json::from_slice::<Value>(&malformed).unwrap_err();
        assert_eq!(
            send(&http, &server, "/webhook", malformed).await,
            (StatusCode::BAD_REQUEST, json!({"error": format!("the /webhook body is not valid JSON ({why}); send the JSON Label Studio sends, with Content-Type: application/json")}))
        );
        let (status, answer) = post(&http, &server, "/predict", &json!({"task": []})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(answer["error"], "the /predict body is not shaped as Label Studio sends it: missing field `tasks`");
        let untrained = json!({"action": "START_TRAINING", "project": {"id": 5}});
        assert_eq!(
            post(&http, &server, "/webhook", &untrained).await,
            (StatusCode::UNPROCESSABLE_ENTITY, json!({"error": "project 5 has no annotations in aelabel yet; annotate some tasks (with this webhook connected) before training"}))
        );
        let choice = annotation_event("ANNOTATION_CREATED", 1, 1, "Unicorn", &config);
        let (status, answer) = post(&http, &server, "/webhook", &choice).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(answer["error"], format!("annotation.result: choice `Unicorn` is not one of the model's classes ({}); such a review cannot train it", classes.join(", ")));

        // A body over the limit is refused before it is read whole.
        let (status, answer) = send(&http, &server, "/predict", vec![b' '; 4 << 20 | 1]).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(answer["error"], "the request body could not be read: Failed to buffer the request body: length limit exceeded; send images as URLs rather than inline data: URIs, or fewer tasks per request");
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn label_studio_needs_the_registry() {
    let runs = tempfile::tempdir().unwrap();
    let refused = Application::build(ServeConfig {
        label_studio: Some(ls_config("http://127.0.0.1:8080/", TOKEN, runs.path())),
        ..config()
    })
    .await;
    let Err(ServeError::Config(message)) = refused else {
        panic!("a server serving a file started the Label Studio backend");
    };
    assert_eq!(message, "--label-studio-url needs the model registry (annotations become label-job reviews and START_TRAINING registers new models); drop --model and serve the registry's active model");
}
