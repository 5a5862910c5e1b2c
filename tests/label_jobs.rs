//! Durable label jobs on a real registry-backed server, on SQLite and on Postgres: images are
//! added idempotently, the worker labels them in the background, reviews win on export, bad ids
//! and classes are refused with the right codes, and two servers on one Postgres share a job
//! without labelling an item twice.

mod common;

use aelabel::client::Connection;
use aelabel::service::{JobWorkerConfig, ModelSource, ServeConfig};
use aelabel::store::Store;
use aelabel::wire as pb;
use aelabel::wire::label_jobs_client::LabelJobsClient;
use common::db::TestDb;
use common::eventually;
use common::proxy::TcpProxy;
use common::server::{config, raw_image, register_test_model, test_images, TestServer};
use sqlx::Row;
use std::collections::HashSet;
use std::time::Duration;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

/// How long a job of a few thousand images may take to be labelled.
const LABELLED_DEADLINE: Duration = Duration::from_secs(60);
/// Images per AddImages message.
const CHUNK: usize = 100;
/// The threshold the test jobs set.
const THRESHOLD: f32 = 0.8;

async fn registry_server(url: &str, jobs: JobWorkerConfig) -> TestServer {
    TestServer::start(
        ServeConfig {
            model: ModelSource::Registry {
                database_url: url.to_string(),
                poll: Duration::from_secs(1),
            },
            jobs,
            ..config()
        },
        true,
    )
    .await
}

async fn jobs_client(server: &TestServer) -> LabelJobsClient<Connection> {
    LabelJobsClient::new(server.channel().await)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

/// The AddImages messages for images `range` of `pixels`, `id-{i}` ids, [`CHUNK`] a message.
fn messages(
    job_id: &str,
    pixels: &[u8],
    range: std::ops::Range<usize>,
) -> Vec<pb::AddImagesRequest> {
    let ids: Vec<usize> = range.collect();
    ids.chunks(CHUNK)
        .map(|chunk| pb::AddImagesRequest {
            job_id: job_id.to_string(),
            images: chunk
                .iter()
                .map(|&i| raw_image(&format!("id-{i}"), &pixels[i * 784..(i + 1) * 784]))
                .collect(),
        })
        .collect()
}

async fn add(
    client: &mut LabelJobsClient<Connection>,
    messages: Vec<pb::AddImagesRequest>,
) -> Result<pb::AddImagesResponse, tonic::Status> {
    client
        .add_images(tokio_stream::iter(messages))
        .await
        .map(|r| r.into_inner())
}

async fn get_job(
    client: &mut LabelJobsClient<Connection>,
    job_id: &str,
) -> Result<pb::Job, tonic::Status> {
    client
        .get_job(pb::GetJobRequest {
            job_id: job_id.to_string(),
        })
        .await
        .map(|r| r.into_inner())
}

/// Waits until no item of the job is pending; returns the job then.
async fn labelled(client: &LabelJobsClient<Connection>, job_id: &str) -> pb::Job {
    eventually(LABELLED_DEADLINE, "every item to be labelled", || {
        let mut client = client.clone();
        async move {
            let job = get_job(&mut client, job_id).await.unwrap();
            (job.counts.unwrap_or_default().pending == 0).then_some(job)
        }
    })
    .await
}

/// Every item of `status`, a page of `page_size` at a time.
async fn all_items(
    client: &mut LabelJobsClient<Connection>,
    job_id: &str,
    status: pb::ItemStatus,
    page_size: u32,
) -> (Vec<pb::Item>, usize) {
    let (mut items, mut pages, mut cursor) = (Vec::new(), 0, String::new());
    loop {
        let page = client
            .list_items(pb::ListItemsRequest {
                job_id: job_id.to_string(),
                status: status as i32,
                page_size,
                cursor,
                include_images: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.items.len() <= page_size as usize);
        pages += 1;
        items.extend(page.items);
        if page.next_cursor.is_empty() {
            return (items, pages);
        }
        cursor = page.next_cursor;
    }
}

async fn export(client: &mut LabelJobsClient<Connection>, job_id: &str) -> Vec<pb::ExportedLabel> {
    let mut stream = client
        .export_labels(pb::ExportLabelsRequest {
            job_id: job_id.to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut rows = Vec::new();
    while let Some(row) = stream.message().await.unwrap() {
        rows.push(row);
    }
    rows
}

async fn review(
    client: &mut LabelJobsClient<Connection>,
    job_id: &str,
    item_id: &str,
    class: pb::submit_review_request::Class,
) -> Result<pb::Item, tonic::Status> {
    client
        .submit_review(pb::SubmitReviewRequest {
            job_id: job_id.to_string(),
            item_id: item_id.to_string(),
            class: Some(class),
        })
        .await
        .map(|r| r.into_inner())
}

/// One scalar from the job database.
async fn count(url: &str, sql: &str) -> i64 {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let n = sqlx::query(sql)
        .fetch_one(&pool)
        .await
        .unwrap()
        .get::<i64, _>(0);
    pool.close().await;
    n
}

/// The whole life of a job on the database at `url`.
async fn job_lifecycle(db: TestDb) {
    let version = register_test_model(&db.url).await;
    let server = registry_server(&db.url, JobWorkerConfig::default()).await;
    let mut client = jobs_client(&server).await;
    let job = client
        .create_job(pb::CreateJobRequest {
            name: "fashion".into(),
            auto_accept_threshold: Some(THRESHOLD),
            target_accuracy: None,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(job.class_names.len(), 10);
    assert_eq!(job.auto_accept_threshold, Some(THRESHOLD));
    let names = job.class_names.clone();
    let id = job.id.clone();

    let (pixels, _) = test_images(500);
    let first = add(&mut client, messages(&id, &pixels, 0..500))
        .await
        .unwrap();
    assert_eq!((first.added, first.duplicates), (500, 0));
    let on_arrival = get_job(&mut client, &id).await.unwrap().counts.unwrap();
    assert_eq!(
        (on_arrival.total, on_arrival.pending),
        (500, 0),
        "the serving model labels images as they arrive"
    );
    let again = add(&mut client, messages(&id, &pixels, 0..500))
        .await
        .unwrap();
    assert_eq!(
        (again.added, again.duplicates),
        (0, 500),
        "re-sending is idempotent"
    );

    let job = labelled(&client, &id).await;
    let counts = job.counts.unwrap();
    assert_eq!(counts.total, 500);
    assert_eq!(counts.auto_accepted + counts.needs_review, 500);
    assert!(
        counts.needs_review > 0 && counts.auto_accepted > 0,
        "{counts:?}"
    );
    assert_eq!(job.model_versions, vec![version.clone()]);

    let (review_queue, pages) = all_items(&mut client, &id, pb::ItemStatus::NeedsReview, 37).await;
    assert_eq!(review_queue.len() as u64, counts.needs_review);
    assert_eq!(pages, review_queue.len().div_ceil(37), "no empty last page");
    let unique: HashSet<_> = review_queue.iter().map(|i| i.id.clone()).collect();
    assert_eq!(unique.len(), review_queue.len(), "each item exactly once");
    assert!(review_queue
        .windows(2)
        .all(|w| w[0].confidence <= w[1].confidence));
    assert!(review_queue.iter().all(|i| i.confidence < THRESHOLD
        && i.predicted_class.is_some()
        && i.probabilities.len() == 10
        && i.model_version == version));
    let (accepted, _) = all_items(&mut client, &id, pb::ItemStatus::AutoAccepted, 1000).await;
    assert_eq!(accepted.len() as u64, counts.auto_accepted);
    assert!(accepted.iter().all(|i| i.confidence >= THRESHOLD));

    use pb::submit_review_request::Class;
    let (a, b) = (&review_queue[0], &review_queue[1]);
    let by_name = review(&mut client, &id, &a.id, Class::ClassName(names[3].clone()))
        .await
        .unwrap();
    assert_eq!(
        (by_name.human_class, by_name.human_name.as_str()),
        (Some(3), names[3].as_str())
    );
    assert_eq!(by_name.status, pb::ItemStatus::Reviewed as i32);
    let by_index = review(&mut client, &id, &b.id, Class::ClassIndex(5))
        .await
        .unwrap();
    assert_eq!(by_index.human_name, names[5]);
    let counts = get_job(&mut client, &id).await.unwrap().counts.unwrap();
    assert_eq!(
        (counts.reviewed, counts.needs_review),
        (2, review_queue.len() as u64 - 2)
    );

    let rows = export(&mut client, &id).await;
    let expected_ids: Vec<String> = (0..500).map(|i| format!("id-{i}")).collect();
    assert_eq!(
        rows.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        expected_ids
    );
    for row in &rows {
        let (source, class) = if row.id == a.id {
            ("human", names[3].as_str())
        } else if row.id == b.id {
            ("human", names[5].as_str())
        } else if row.confidence >= THRESHOLD {
            ("auto", row.class_name.as_str())
        } else {
            ("pending_review", row.class_name.as_str())
        };
        assert_eq!(
            (row.source.as_str(), row.class_name.as_str()),
            (source, class),
            "{row:?}"
        );
        assert_eq!(row.model_version, version);
        assert!(!row.class_name.is_empty());
    }

    // Equal pixels under a new id: a new item, labelled on arrival as the original was.
    let k = rows.iter().position(|r| r.source != "human").unwrap();
    let copy = pb::AddImagesRequest {
        job_id: id.clone(),
        images: vec![raw_image("copy", &pixels[k * 784..(k + 1) * 784])],
    };
    let added = add(&mut client, vec![copy]).await.unwrap();
    assert_eq!((added.added, added.duplicates), (1, 0));
    let rows = export(&mut client, &id).await;
    let (original, copy) = (&rows[k], rows.last().unwrap());
    assert_eq!(copy.id, "copy");
    assert_eq!(
        (&copy.class_name, copy.confidence),
        (&original.class_name, original.confidence)
    );

    // The model was serving when the images came: each was labelled on arrival, once, and
    // the kept counts are the items' real counts.
    let labelled_on_arrival = format!(
        "SELECT COUNT(*) FROM items WHERE job_id = '{id}' AND labelled_by LIKE '%/add' \
         AND labellings = 1"
    );
    assert_eq!(count(&db.url, &labelled_on_arrival).await, 501);
    let counts = get_job(&mut client, &id).await.unwrap().counts.unwrap();
    for (status, kept) in [
        ("auto_accepted", counts.auto_accepted),
        ("needs_review", counts.needs_review),
        ("reviewed", counts.reviewed),
        ("pending", counts.pending),
    ] {
        let sql =
            format!("SELECT COUNT(*) FROM items WHERE job_id = '{id}' AND status = '{status}'");
        assert_eq!(count(&db.url, &sql).await as u64, kept, "{status}");
    }
    assert_eq!(counts.total, 501);

    refusals(&mut client, &id, &a.id).await;
    server.shutdown().await;
}

/// Unknown ids are NOT_FOUND, bad classes and requests INVALID_ARGUMENT naming the field.
async fn refusals(client: &mut LabelJobsClient<Connection>, job_id: &str, item_id: &str) {
    use pb::submit_review_request::Class;
    fn code<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> tonic::Status {
        r.unwrap_err()
    }
    let e = code(get_job(client, "no-such-job").await);
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    assert!(e.message().starts_with("job_id:"), "{e:?}");
    let e = code(review(client, "no-such-job", item_id, Class::ClassIndex(0)).await);
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let e = code(review(client, job_id, "no-such-item", Class::ClassIndex(0)).await);
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    assert!(e.message().starts_with("item_id:"), "{e:?}");
    let e = code(review(client, job_id, item_id, Class::ClassName("unicorn".into())).await);
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().starts_with("class_name:"), "{e:?}");
    let e = code(review(client, job_id, item_id, Class::ClassIndex(10)).await);
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().starts_with("class_index:"), "{e:?}");
    let e = code(
        client
            .list_items(pb::ListItemsRequest {
                job_id: job_id.to_string(),
                status: pb::ItemStatus::Unspecified as i32,
                page_size: 10,
                cursor: String::new(),
                include_images: false,
            })
            .await,
    );
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().starts_with("status:"), "{e:?}");
    let no_id = pb::AddImagesRequest {
        job_id: job_id.to_string(),
        images: vec![raw_image("", &[0; 784])],
    };
    let e = add(client, vec![no_id]).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        e.message()
            .starts_with("AddImages message 1: images[0].id:"),
        "{e:?}"
    );
    let e = add(client, messages("no-such-job", &[0; 784], 0..1))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_is_labelled_reviewed_and_exported_on_sqlite() {
    job_lifecycle(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_is_labelled_reviewed_and_exported_on_postgres() {
    job_lifecycle(TestDb::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_on_one_postgres_share_a_job_without_labelling_an_item_twice() {
    const IMAGES: usize = 3000;
    let db = TestDb::postgres().await;
    register_test_model(&db.url).await;
    // Small claims and a short poll, so that both workers take part in a job this size;
    // images are only stored on arrival, so that the workers' claims share all the work.
    let jobs = JobWorkerConfig {
        claim_batch: 64,
        lease: Duration::from_secs(60),
        poll: Duration::from_millis(20),
        label_on_arrival: false,
    };
    let (a, b) = (
        registry_server(&db.url, jobs).await,
        registry_server(&db.url, jobs).await,
    );
    let (mut client_a, mut client_b) = (jobs_client(&a).await, jobs_client(&b).await);
    let id = client_a
        .create_job(pb::CreateJobRequest {
            name: "shared".into(),
            auto_accept_threshold: None,
            target_accuracy: None,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .id;
    let (pixels, _) = test_images(IMAGES);
    // Half the images through each server, at once: both workers are woken.
    let (added_a, added_b) = tokio::join!(
        add(&mut client_a, messages(&id, &pixels, 0..IMAGES / 2)),
        add(&mut client_b, messages(&id, &pixels, IMAGES / 2..IMAGES)),
    );
    assert_eq!(
        added_a.unwrap().added + added_b.unwrap().added,
        IMAGES as u64
    );
    let job = labelled(&client_b, &id).await;
    let counts = job.counts.unwrap();
    assert_eq!(counts.auto_accepted + counts.needs_review, IMAGES as u64);

    let twice = count(&db.url, "SELECT COUNT(*) FROM items WHERE labellings <> 1").await;
    assert_eq!(twice, 0, "every item is labelled exactly once");
    let workers = count(
        &db.url,
        "SELECT COUNT(DISTINCT labelled_by) FROM items WHERE labelled_by IS NOT NULL",
    )
    .await;
    assert_eq!(workers, 2, "both servers labelled some items");
    a.shutdown().await;
    b.shutdown().await;
}

/// The health status `server` reports for `service`.
async fn health(server: &TestServer, service: &str) -> i32 {
    let mut health = HealthClient::new(server.channel().await);
    let request = HealthCheckRequest {
        service: service.into(),
    };
    health.check(request).await.unwrap().into_inner().status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_outage_makes_label_jobs_unavailable_while_the_labeller_keeps_serving() {
    const JOBS: &str = "aelabel.v1.LabelJobs";
    let db = TestDb::postgres().await;
    register_test_model(&db.url).await;
    let proxy = TcpProxy::start(common::db::postgres_server_addr()).await;
    let server = registry_server(&db.url_via(proxy.addr), JobWorkerConfig::default()).await;
    let mut client = jobs_client(&server).await;
    let id = client
        .create_job(pb::CreateJobRequest {
            name: "outage".into(),
            auto_accept_threshold: None,
            target_accuracy: None,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .id;
    let (pixels, _) = test_images(50);
    add(&mut client, messages(&id, &pixels, 0..50))
        .await
        .unwrap();
    labelled(&client, &id).await;
    let serving = ServingStatus::Serving as i32;
    assert_eq!(health(&server, JOBS).await, serving);

    proxy.cut();
    let e = get_job(&mut client, &id).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(e.message().contains("label jobs are unavailable"), "{e:?}");
    eventually(
        Duration::from_secs(15),
        "LabelJobs to report NOT_SERVING",
        || async {
            (health(&server, JOBS).await == ServingStatus::NotServing as i32).then_some(())
        },
    )
    .await;
    assert_eq!(health(&server, "aelabel.v1.Labeller").await, serving);
    let label = pb::LabelRequest {
        images: vec![raw_image("x", &pixels[..784])],
        review_threshold: None,
    };
    let answer = server
        .client()
        .await
        .label(label)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        answer.predictions.len(),
        1,
        "the Labeller answers without the database"
    );

    proxy.restore();
    let job = eventually(Duration::from_secs(15), "LabelJobs to answer again", || {
        let mut client = client.clone();
        let id = id.clone();
        async move { get_job(&mut client, &id).await.ok() }
    })
    .await;
    assert_eq!(job.counts.unwrap().total, 50);
    eventually(
        Duration::from_secs(15),
        "LabelJobs to report SERVING",
        || async { (health(&server, JOBS).await == serving).then_some(()) },
    )
    .await;
    server.shutdown().await;
}

/// A worker that claimed items and died: once its lease expires another worker takes them,
/// and the dead worker's late answer is not recorded.
async fn expired_claims_are_taken_over(db: TestDb) {
    use aelabel::inference::Prediction;
    use aelabel::jobs::{LabelledItem, NewImage, NewJob};
    let store = Store::connect(&db.url).await.unwrap();
    let job = store
        .create_job(&NewJob {
            name: "lease".into(),
            auto_accept_threshold: Some(0.5),
            target_accuracy: None,
            input_width: 2,
            input_height: 2,
            class_names: vec!["a".into(), "b".into()],
            own_classes: false,
        })
        .await
        .unwrap();
    let images: Vec<NewImage> = (0..5u8)
        .map(|i| NewImage::new(format!("img-{i}"), vec![i; 4]))
        .collect();
    store.add_images(&job.id, &images).await.unwrap();
    let dead = store
        .claim_pending("dead", 10, Duration::from_millis(1))
        .await
        .unwrap();
    assert_eq!(dead.len(), 5);
    let alive = eventually(Duration::from_secs(5), "the lease to expire", || async {
        let claimed = store
            .claim_pending("alive", 10, Duration::from_secs(60))
            .await
            .unwrap();
        (!claimed.is_empty()).then_some(claimed)
    })
    .await;
    assert_eq!(alive.len(), 5, "every expired claim is taken over");
    let answer = |items: &[aelabel::jobs::ClaimedItem]| -> Vec<LabelledItem> {
        items
            .iter()
            .map(|c| LabelledItem {
                job_id: c.job_id.clone(),
                seq: c.seq,
                prediction: Prediction::new(vec![0.3, 0.7], &["a".into(), "b".into()], 0.5),
                model_version: "v".into(),
            })
            .collect()
    };
    assert_eq!(
        store
            .record_predictions("dead", &answer(&dead))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .record_predictions("alive", &answer(&alive))
            .await
            .unwrap(),
        5
    );
    assert_eq!(
        store
            .record_predictions("alive", &answer(&alive))
            .await
            .unwrap(),
        0
    );
    let job = store.job(&job.id).await.unwrap();
    assert_eq!((job.counts.total, job.counts.auto_accepted), (5, 5));
    let twice = count(&db.url, "SELECT COUNT(*) FROM items WHERE labellings <> 1").await;
    assert_eq!(twice, 0);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_claims_are_taken_over_on_sqlite() {
    expired_claims_are_taken_over(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_claims_are_taken_over_on_postgres() {
    expired_claims_are_taken_over(TestDb::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reflection_describes_label_jobs_and_health_reports_it() {
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let db = TestDb::sqlite();
    register_test_model(&db.url).await;
    let server = registry_server(&db.url, JobWorkerConfig::default()).await;
    let mut client = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "aelabel.v1.LabelJobs".into(),
        )),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::FileDescriptorResponse(files)) =
        stream.message().await.unwrap().unwrap().message_response
    else {
        panic!("no descriptor for aelabel.v1.LabelJobs")
    };
    assert!(!files.file_descriptor_proto.is_empty());
    eventually(
        Duration::from_secs(10),
        "LabelJobs to report SERVING",
        || async {
            (health(&server, "aelabel.v1.LabelJobs").await == ServingStatus::Serving as i32)
                .then_some(())
        },
    )
    .await;
    server.shutdown().await;
}

/// All 70,000 Fashion-MNIST images (the 60,000 training images, then the 10,000 test images),
/// read with the crate's IDX reader.
fn all_fashion_mnist() -> Vec<u8> {
    let dir = common::data_dir();
    let mut pixels = Vec::with_capacity(70_000 * 784);
    for file in ["train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"] {
        let images = aelabel::data::read_idx_images(&dir.join(file)).unwrap();
        pixels.extend_from_slice(&images.pixels);
    }
    pixels
}

/// Times one bulk job end to end on the database of `db`: create, AddImages of all 70,000
/// Fashion-MNIST images through one stream (500 a message), every item labelled, the whole
/// export read. Prints one `bulk-job` line of figures that `benches/job_bulk.sh` reads. A
/// measurement, not a check: `cargo test --release --test label_jobs -- --ignored
/// --nocapture`.
async fn bulk_rate(db: TestDb, what: &str) {
    const IMAGES: usize = 70_000;
    const BULK_CHUNK: usize = 500;
    register_test_model(&db.url).await;
    let server = registry_server(&db.url, JobWorkerConfig::default()).await;
    let mut client = jobs_client(&server).await;
    let pixels = all_fashion_mnist();
    assert_eq!(pixels.len(), IMAGES * 784);
    let ids: Vec<usize> = (0..IMAGES).collect();
    let messages: Vec<pb::AddImagesRequest> = ids
        .chunks(BULK_CHUNK)
        .map(|chunk| pb::AddImagesRequest {
            job_id: String::new(),
            images: chunk
                .iter()
                .map(|&i| raw_image(&format!("id-{i}"), &pixels[i * 784..(i + 1) * 784]))
                .collect(),
        })
        .collect();
    let started = std::time::Instant::now();
    let id = client
        .create_job(pb::CreateJobRequest {
            name: "bulk".into(),
            auto_accept_threshold: None,
            target_accuracy: None,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .id;
    let messages = messages.into_iter().map(|mut m| {
        m.job_id.clone_from(&id);
        m
    });
    let added = add(&mut client, messages.collect()).await.unwrap();
    assert_eq!(added.added, IMAGES as u64);
    let added_s = started.elapsed().as_secs_f64();
    labelled(&client, &id).await;
    let labelled_s = started.elapsed().as_secs_f64();
    let rows = export(&mut client, &id).await;
    assert_eq!(rows.len(), IMAGES);
    let total_s = started.elapsed().as_secs_f64();
    println!(
        "bulk-job backend={what} images={IMAGES} added_s={added_s:.3} labelled_s={labelled_s:.3} \
         exported_s={total_s:.3} images_per_s={:.0}",
        IMAGES as f64 / total_s
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement; run with --ignored --nocapture"]
async fn bulk_job_rate_on_sqlite_and_postgres() {
    bulk_rate(TestDb::sqlite(), "SQLite").await;
    bulk_rate(TestDb::postgres().await, "Postgres").await;
}
