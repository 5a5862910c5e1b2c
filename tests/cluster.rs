//! The cluster overlay's shape, with real processes on one Postgres: a training run registers
//! a model, two `aelabel serve` replicas serve it and finish one label job together (every item
//! labelled exactly once, by both), and an activation reaches both replicas.

mod common;

use aelabel::wire as pb;
use aelabel::wire::label_jobs_client::LabelJobsClient;
use aelabel::wire::labeller_client::LabellerClient;
use common::db::TestDb;
use common::process::{registry_serve_command, ServerProcess};
use common::server::raw_image;
use common::{clean_command, data_dir, eventually, output_within};
use sqlx::Row;
use std::path::Path;
use std::time::Duration;
use tonic::transport::Channel;

/// Images in the shared job.
const IMAGES: usize = 4000;

/// `aelabel pipeline` on a data subset, registering into `database_url`; its stdout.
async fn train(database_url: &str, out: &Path, seed: u64) -> String {
    let (database_url, out) = (database_url.to_string(), out.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let mut command = clean_command();
        command
            .args(["pipeline", "--quiet", "--threads", "1", "--labels", "200"])
            .args([
                "--train-limit",
                "3000",
                "--eval-limit",
                "500",
                "--tsne-points",
                "0",
            ])
            .args(["--pretrain-epochs", "1", "--finetune-epochs", "5"])
            .args(["--self-training-rounds", "0", "--seed", &seed.to_string()])
            .arg("--data")
            .arg(data_dir())
            .arg("--out")
            .arg(&out)
            .args(["--database-url", &database_url]);
        let (code, stdout, stderr) = output_within(command);
        assert_eq!(code, 0, "training failed: {stderr}");
        stdout
    })
    .await
    .unwrap()
}

/// The registered version a training run's stdout names.
fn registered(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("registered model "))
        .and_then(|rest| rest.split([':', ';', ' ']).next())
        .unwrap_or_else(|| panic!("no `registered model` line in {stdout}"))
        .to_string()
}

async fn channel(server: &ServerProcess) -> Channel {
    Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// Waits until the replica behind `client` serves `version`.
async fn serves(client: &LabellerClient<Channel>, version: &str) {
    eventually(
        Duration::from_secs(30),
        "the replica to serve the version",
        || {
            let mut client = client.clone();
            async move {
                let info = client
                    .get_model_info(pb::GetModelInfoRequest {})
                    .await
                    .ok()?
                    .into_inner();
                (info.version == version).then_some(())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_and_a_training_run_share_one_postgres() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let first = registered(&train(&db.url, &dir.path().join("m1"), 3).await);

    // Two replicas, each with small worker batches so that both take part in one job.
    let replica = || {
        let mut command = registry_serve_command(&db.url);
        command.args(["--job-batch", "64", "--registry-poll-ms", "200"]);
        ServerProcess::spawn(command)
    };
    let (a, b) = (replica(), replica());
    let labellers = [
        LabellerClient::new(channel(&a).await),
        LabellerClient::new(channel(&b).await),
    ];
    for client in &labellers {
        serves(client, &first).await;
    }

    // One job, images added half through each replica.
    let mut jobs_a = LabelJobsClient::new(channel(&a).await);
    let mut jobs_b = LabelJobsClient::new(channel(&b).await);
    let job = jobs_a
        .create_job(pb::CreateJobRequest {
            name: "shared".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .id;
    let pixels = aelabel::data::read_idx_images(&data_dir().join("t10k-images-idx3-ubyte.gz"))
        .unwrap()
        .pixels;
    // Messages of 500 images (a message may hold at most --max-batch).
    let messages = |range: std::ops::Range<usize>| {
        range
            .collect::<Vec<_>>()
            .chunks(500)
            .map(|chunk| pb::AddImagesRequest {
                job_id: job.clone(),
                images: chunk
                    .iter()
                    .map(|&i| raw_image(&format!("t10k#{i}"), &pixels[i * 784..(i + 1) * 784]))
                    .collect(),
            })
            .collect::<Vec<_>>()
    };
    let half = IMAGES / 2;
    let (added_a, added_b) = tokio::join!(
        jobs_a.add_images(tokio_stream::iter(messages(0..half))),
        jobs_b.add_images(tokio_stream::iter(messages(half..IMAGES))),
    );
    assert_eq!(added_a.unwrap().into_inner().added as usize, half);
    assert_eq!(added_b.unwrap().into_inner().added as usize, IMAGES - half);
    eventually(Duration::from_secs(120), "the job labelled", || {
        let mut client = jobs_b.clone();
        let job = job.clone();
        async move {
            let j = client
                .get_job(pb::GetJobRequest { job_id: job })
                .await
                .ok()?
                .into_inner();
            (j.counts?.pending == 0).then_some(())
        }
    })
    .await;

    // Every item labelled exactly once, by the model both serve, and by both replicas.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
    let rows =
        sqlx::query("SELECT labelled_by, labellings, model_version FROM items WHERE job_id = $1")
            .bind(&job)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), IMAGES);
    let mut workers = std::collections::HashSet::new();
    for row in &rows {
        assert_eq!(row.get::<i64, _>("labellings"), 1);
        assert_eq!(row.get::<String, _>("model_version"), first);
        let by: String = row.get("labelled_by");
        workers.insert(by.split('-').next().unwrap_or_default().to_string());
    }
    pool.close().await;
    let pids: std::collections::HashSet<String> =
        [a.pid(), b.pid()].iter().map(u32::to_string).collect();
    assert_eq!(workers, pids, "both replicas labelled part of the job");

    // A second training run registers another version; activating it reaches both replicas.
    let second = registered(&train(&db.url, &dir.path().join("m2"), 4).await);
    assert_ne!(second, first);
    let url = db.url.clone();
    let activate = second.clone();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        let mut command = clean_command();
        command.args(["models", "activate", &activate, "--database-url", &url]);
        output_within(command)
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&second), "{out}");
    for client in &labellers {
        serves(client, &second).await;
    }
}
