//! A label job survives a server killed in the middle of it: the real `aelabel serve` takes
//! all 60,000 Fashion-MNIST training images, is SIGKILLed while its worker is part way through
//! them, and a new server on the same database finishes the job with every item labelled
//! exactly once — on SQLite and on Postgres.

mod common;

use aelabel::wire as pb;
use aelabel::wire::label_jobs_client::LabelJobsClient;
use common::db::TestDb;
use common::process::{registry_serve_command, ServerProcess};
use common::server::{raw_image, register_test_model};
use common::{eventually, within};
use sqlx::Row;
use std::collections::HashSet;
use std::time::Duration;
use tonic::transport::Channel;

/// The training images of Fashion-MNIST.
const IMAGES: usize = 60_000;
/// Images per AddImages message.
const CHUNK: usize = 500;
/// Items the first server's worker claims at once: small, so that it is still labelling when
/// adding ends and the kill lands in the middle of the job.
const SLOW_BATCH: &str = "2";
/// The first server's claim lease: short, so the second server takes its claims over soon.
const SHORT_LEASE_SECS: &str = "2";
/// How long adding, and finishing the job after the restart, may each take.
const STEP_LIMIT: Duration = Duration::from_secs(180);

/// All 60,000 training images, read with the crate's IDX reader.
fn training_pixels() -> Vec<u8> {
    let path = common::data_dir().join("train-images-idx3-ubyte.gz");
    let images = aelabel::data::read_idx_images(&path).expect("the training images read");
    assert_eq!((images.count, images.rows, images.cols), (IMAGES, 28, 28));
    images.pixels
}

/// The id the test gives training image `i`.
fn image_id(i: usize) -> String {
    format!("train-{i}")
}

async fn jobs_client(server: &ServerProcess) -> LabelJobsClient<Channel> {
    let channel = Channel::from_shared(server.url())
        .expect("a valid URL")
        .connect()
        .await
        .expect("the server accepts connections");
    LabelJobsClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

async fn counts(client: &mut LabelJobsClient<Channel>, job_id: &str) -> pb::JobCounts {
    client
        .get_job(pb::GetJobRequest {
            job_id: job_id.to_string(),
        })
        .await
        .expect("GetJob answers")
        .into_inner()
        .counts
        .expect("a job has counts")
}

/// Streams every image of `pixels` into the job, [`CHUNK`] a message.
async fn add_all(client: &mut LabelJobsClient<Channel>, job_id: &str, pixels: &[u8]) -> u64 {
    let ids: Vec<usize> = (0..IMAGES).collect();
    let messages: Vec<pb::AddImagesRequest> = ids
        .chunks(CHUNK)
        .map(|chunk| pb::AddImagesRequest {
            job_id: job_id.to_string(),
            images: chunk
                .iter()
                .map(|&i| raw_image(&image_id(i), &pixels[i * 784..(i + 1) * 784]))
                .collect(),
        })
        .collect();
    client
        .add_images(tokio_stream::iter(messages))
        .await
        .expect("AddImages succeeds")
        .into_inner()
        .added
}

/// One integer from the job database.
async fn scalar(pool: &sqlx::AnyPool, sql: &str) -> i64 {
    sqlx::query(sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get::<i64, _>(0)
}

/// Checks the database directly: one row per image, each labelled exactly once, the first
/// server's worker (process `first_pid`) having labelled at least `labelled_before_kill` and
/// the second server the rest.
async fn check_database(url: &str, job_id: &str, first_pid: u32, labelled_before_kill: u64) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url)
        .await
        .expect("the database opens");
    let items = format!("FROM items WHERE job_id = '{job_id}'");
    assert_eq!(
        scalar(&pool, &format!("SELECT COUNT(*) {items}")).await,
        IMAGES as i64
    );
    assert_eq!(
        scalar(&pool, &format!("SELECT COUNT(DISTINCT client_id) {items}")).await,
        IMAGES as i64,
        "a client id is stored twice"
    );
    assert_eq!(
        scalar(
            &pool,
            &format!("SELECT COUNT(*) {items} AND labellings = 1")
        )
        .await,
        IMAGES as i64,
        "some item was labelled not exactly once"
    );
    assert_eq!(
        scalar(
            &pool,
            &format!("SELECT CAST(COALESCE(SUM(labellings), 0) AS BIGINT) {items}")
        )
        .await,
        IMAGES as i64
    );
    assert_eq!(
        scalar(
            &pool,
            &format!("SELECT COUNT(*) {items} AND claimed_by IS NOT NULL")
        )
        .await,
        0,
        "a labelled item still holds a claim"
    );
    let by_first = scalar(
        &pool,
        &format!("SELECT COUNT(*) {items} AND labelled_by LIKE '{first_pid}-%'"),
    )
    .await;
    assert!(
        by_first >= labelled_before_kill as i64 && by_first < IMAGES as i64,
        "the killed server labelled {by_first} items; {labelled_before_kill} were labelled when it was killed"
    );
    pool.close().await;
}

/// Checks the export: every image once, in the order added, each with a model's class.
async fn check_export(client: &mut LabelJobsClient<Channel>, job_id: &str, version: &str) {
    let mut stream = client
        .export_labels(pb::ExportLabelsRequest {
            job_id: job_id.to_string(),
        })
        .await
        .expect("ExportLabels starts")
        .into_inner();
    let mut rows = Vec::with_capacity(IMAGES);
    while let Some(row) = stream.message().await.expect("the export streams") {
        rows.push(row);
    }
    assert_eq!(rows.len(), IMAGES);
    let mut seen = HashSet::with_capacity(IMAGES);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.id, image_id(i), "export row {i} is out of order");
        assert!(seen.insert(row.id.as_str()), "{} exported twice", row.id);
        assert!(!row.class_name.is_empty(), "{} has no class", row.id);
        assert!(
            row.source == "auto" || row.source == "pending_review",
            "{} has source {}",
            row.id,
            row.source
        );
        assert_eq!(row.model_version, version, "{}", row.id);
    }
}

/// The whole crash and recovery on the database of `db`.
async fn a_killed_server_leaves_a_job_that_a_new_one_finishes(db: TestDb) {
    let version = register_test_model(&db.url).await;
    let pixels = training_pixels();

    let mut command = registry_serve_command(&db.url);
    command.args([
        "--job-batch",
        SLOW_BATCH,
        "--job-claim-secs",
        SHORT_LEASE_SECS,
        // The worker, not AddImages, labels: the kill lands in its claims.
        "--job-worker-only",
    ]);
    let mut first = ServerProcess::spawn(command);
    let mut client = jobs_client(&first).await;
    let job_id = client
        .create_job(pb::CreateJobRequest {
            name: "crash".into(),
            auto_accept_threshold: None,
            target_accuracy: None,
            ..Default::default()
        })
        .await
        .expect("CreateJob succeeds")
        .into_inner()
        .id;
    let added = within(STEP_LIMIT, add_all(&mut client, &job_id, &pixels)).await;
    assert_eq!(added, IMAGES as u64);
    let before_kill = eventually(STEP_LIMIT, "the worker to label some items", || {
        let (mut client, job_id) = (client.clone(), job_id.clone());
        async move {
            let c = counts(&mut client, &job_id).await;
            (c.pending < c.total).then_some(c)
        }
    })
    .await;
    assert_eq!(before_kill.total, IMAGES as u64);
    assert!(
        before_kill.pending > 0,
        "the worker labelled all {IMAGES} items before the kill; lower SLOW_BATCH"
    );
    let first_pid = first.pid();
    let status = first.kill();
    assert!(!status.success(), "SIGKILL ended the server with {status}");
    drop(client);

    let mut second = ServerProcess::spawn(registry_serve_command(&db.url));
    let mut client = jobs_client(&second).await;
    let after = eventually(STEP_LIMIT, "the restarted server to finish the job", || {
        let (mut client, job_id) = (client.clone(), job_id.clone());
        async move {
            let c = counts(&mut client, &job_id).await;
            (c.pending == 0).then_some(c)
        }
    })
    .await;
    assert_eq!(after.total, IMAGES as u64);
    assert_eq!(after.auto_accepted + after.needs_review, IMAGES as u64);
    assert_eq!(after.reviewed, 0);
    check_database(
        &db.url,
        &job_id,
        first_pid,
        before_kill.total - before_kill.pending,
    )
    .await;
    check_export(&mut client, &job_id, &version).await;
    second.terminate();
    assert!(second.wait_exit(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_job_on_sqlite_leaves_every_item_labelled_exactly_once() {
    a_killed_server_leaves_a_job_that_a_new_one_finishes(TestDb::sqlite()).await;
}

/// About 35 s on a loaded 2-core machine since claims walk `items_to_claim` (over a minute when
/// they walked the primary key past every labelled item).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_job_on_postgres_leaves_every_item_labelled_exactly_once() {
    a_killed_server_leaves_a_job_that_a_new_one_finishes(TestDb::postgres().await).await;
}
