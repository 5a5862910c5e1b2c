//! `aelabel retrain --job`: reviews of a label job train a new model from the active one's
//! pretrained autoencoder; it is registered, compared with the active model on the same test
//! images, and activated only when it is better.

mod common;

use aelabel::model::Model;
use aelabel::service::{JobWorkerConfig, ModelSource, ServeConfig};
use aelabel::store::{NewModel, Store};
use aelabel::wire as pb;
use aelabel::wire::label_jobs_client::LabelJobsClient;
use common::db::TestDb;
use common::server::{config, model_path, raw_image, TestServer};
use common::{clean_command, data_dir, eventually, output_within};
use std::time::Duration;

/// Training images put in the job.
const IMAGES: usize = 3000;
/// Least confident items a "person" reviews with their true labels.
const REVIEWS: usize = 300;

async fn aelabel(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let mut command = clean_command();
        command.args(&args).arg("--quiet");
        output_within(command)
    })
    .await
    .expect("the command thread")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_train_a_better_model_that_is_registered_and_activated() {
    let db = TestDb::sqlite();
    let store = Store::connect(&db.url).await.unwrap();
    let (model, sha256) = Model::load_with_sha256(model_path()).unwrap();
    let base = NewModel::from_checkpoint(&model.meta, model_path().to_path_buf(), sha256);
    store.register_model(&base).await.unwrap();
    let server = TestServer::start(
        ServeConfig {
            model: ModelSource::Registry {
                database_url: db.url.clone(),
                poll: Duration::from_millis(200),
            },
            jobs: JobWorkerConfig::default(),
            ..config()
        },
        true,
    )
    .await;
    let mut client = LabelJobsClient::new(server.channel().await);
    let job = client
        .create_job(pb::CreateJobRequest {
            name: "train".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .id;

    // A retrain with nothing reviewed is refused in one line.
    let out_dir = tempfile::tempdir().unwrap();
    let retrain_args = vec![
        "retrain".to_string(),
        "--job".into(),
        job.clone(),
        "--activate".into(),
        "--threads".into(),
        "2".into(),
        "--database-url".into(),
        db.url.clone(),
        "--out".into(),
        out_dir.path().display().to_string(),
    ];
    let (code, _, err) = aelabel(retrain_args.clone()).await;
    assert_ne!(code, 0);
    assert!(err.contains("no reviewed items"), "{err}");

    let pixels = aelabel::data::read_idx_images(&data_dir().join("train-images-idx3-ubyte.gz"))
        .unwrap()
        .pixels;
    let truth =
        aelabel::data::read_idx_labels(&data_dir().join("train-labels-idx1-ubyte.gz"), 10).unwrap();
    let messages: Vec<pb::AddImagesRequest> = (0..IMAGES)
        .collect::<Vec<_>>()
        .chunks(500)
        .map(|chunk| pb::AddImagesRequest {
            job_id: job.clone(),
            images: chunk
                .iter()
                .map(|&i| raw_image(&format!("train#{i}"), &pixels[i * 784..(i + 1) * 784]))
                .collect(),
        })
        .collect();
    client
        .add_images(tokio_stream::iter(messages))
        .await
        .unwrap();
    eventually(Duration::from_secs(60), "the job labelled", || {
        let mut client = client.clone();
        let job = job.clone();
        async move {
            let j = client
                .get_job(pb::GetJobRequest { job_id: job })
                .await
                .unwrap()
                .into_inner();
            (j.counts.unwrap_or_default().pending == 0).then_some(())
        }
    })
    .await;
    let queue = client
        .list_items(pb::ListItemsRequest {
            job_id: job.clone(),
            status: pb::ItemStatus::NeedsReview as i32,
            page_size: REVIEWS as u32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(
        queue.len(),
        REVIEWS,
        "the test needs {REVIEWS} items to review"
    );
    for item in &queue {
        let index: usize = item.id.trim_start_matches("train#").parse().unwrap();
        client
            .submit_review(pb::SubmitReviewRequest {
                job_id: job.clone(),
                item_id: item.id.clone(),
                class: Some(pb::submit_review_request::Class::ClassIndex(u32::from(
                    truth[index],
                ))),
            })
            .await
            .unwrap();
    }

    let (code, out, err) = aelabel(retrain_args).await;
    assert_eq!(code, 0, "{err}");
    eprintln!("{out}");
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.path().join("retrain.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["reviews"], REVIEWS);
    assert_eq!(report["previous"]["version"], base.version.as_str());
    let change = report["accuracy_change_points"].as_f64().unwrap();
    let (before, after) = (
        report["previous"]["test_accuracy"].as_f64().unwrap(),
        report["retrained"]["test_accuracy"].as_f64().unwrap(),
    );
    assert!((change - 100.0 * (after - before)).abs() < 1e-9);
    // 300 reviews of the least confident images on top of 200 labels: a clear gain.
    assert!(change >= 1.0, "test accuracy {before} → {after}");
    assert!(out.contains(&format!("{change:+.2} points")), "{out}");

    // Registered with its measured accuracy, and active because it is better.
    let version = report["retrained"]["version"].as_str().unwrap().to_string();
    let record = store.model(&version).await.unwrap();
    assert_eq!(record.test_accuracy, Some(after));
    assert_eq!(store.active_version().await.unwrap(), Some(version.clone()));
    assert!(out.contains(&format!("active: {version}")), "{out}");
    let retrained = Model::load(&record.path).unwrap();
    assert_eq!(
        retrained.meta.training["retrained_from"],
        base.version.as_str()
    );
    assert_eq!(
        retrained.autoencoder, model.autoencoder,
        "the pretrained autoencoder is reused, not retrained"
    );

    // The running server follows the activation.
    let labeller = server.client().await;
    eventually(
        Duration::from_secs(30),
        "the server to serve the retrained model",
        || {
            let mut labeller = labeller.clone();
            let version = version.clone();
            async move {
                let info = labeller
                    .get_model_info(pb::GetModelInfoRequest {})
                    .await
                    .unwrap()
                    .into_inner();
                (info.version == version).then_some(())
            }
        },
    )
    .await;
    store.close().await;
}
