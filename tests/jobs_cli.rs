//! `aelabel jobs …` as scripts and people use it, against a real registry-backed server: the
//! exact output shapes (job id as the last line, `status --json` keys, export columns), adding
//! twice adds nothing, CSV and terminal reviews land, a target accuracy becomes the model's own
//! threshold for it, and bad input is refused with a one-line reason.

mod common;

use aelabel::client::Connection;
use aelabel::model::Model;
use aelabel::service::{JobWorkerConfig, ModelSource, ServeConfig};
use aelabel::store::{NewModel, Store};
use aelabel::wire as pb;
use aelabel::wire::label_jobs_client::LabelJobsClient;
use common::db::TestDb;
use common::server::{config, model_path, TestServer};
use common::{clean_command, data_dir, eventually, idx_images, output_with_input, write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Test images in the job.
const IMAGES: usize = 400;

/// Runs `aelabel ARGS` (quiet) off the async runtime, feeding `input` on stdin.
async fn aelabel(args: Vec<String>, input: &str) -> (i32, String, String) {
    let input = input.as_bytes().to_vec();
    tokio::task::spawn_blocking(move || {
        let mut command = clean_command();
        command.args(&args).arg("--quiet");
        output_with_input(command, &input)
    })
    .await
    .expect("the command thread")
}

/// `aelabel jobs export` of `job` to `out`.
async fn export(url: &str, job: &str, out: &Path) -> (i32, String, String) {
    let out = out.display().to_string();
    aelabel(
        args(&["jobs", "export", "--server", url, job, "--out", &out]),
        "",
    )
    .await
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A registry-backed server on a fresh SQLite registry holding the test model.
async fn server(db: &TestDb) -> TestServer {
    let store = Store::connect(&db.url).await.unwrap();
    let (model, sha256) = Model::load_with_sha256(model_path()).unwrap();
    let record = NewModel::from_checkpoint(&model.meta, model_path().to_path_buf(), sha256);
    store.register_model(&record).await.unwrap();
    store.close().await;
    TestServer::start(
        ServeConfig {
            model: ModelSource::Registry {
                database_url: db.url.clone(),
                poll: Duration::from_secs(1),
            },
            jobs: JobWorkerConfig::default(),
            ..config()
        },
        true,
    )
    .await
}

/// The first [`IMAGES`] t10k images as an IDX file in `dir`, and their true labels.
fn test_subset(dir: &Path) -> (PathBuf, Vec<u8>) {
    let all = aelabel::data::read_idx_images(&data_dir().join("t10k-images-idx3-ubyte.gz"))
        .unwrap()
        .pixels;
    let labels =
        aelabel::data::read_idx_labels(&data_dir().join("t10k-labels-idx1-ubyte.gz"), 10).unwrap();
    let path = dir.join("subset-images-idx3-ubyte");
    write(
        &path,
        &idx_images(IMAGES as u32, 28, 28, &all[..IMAGES * 784]),
    );
    (path, labels[..IMAGES].to_vec())
}

async fn client(server: &TestServer) -> LabelJobsClient<Connection> {
    LabelJobsClient::new(server.channel().await)
}

async fn get_job(client: &mut LabelJobsClient<Connection>, id: &str) -> pb::Job {
    client
        .get_job(pb::GetJobRequest { job_id: id.into() })
        .await
        .unwrap()
        .into_inner()
}

async fn labelled(client: &LabelJobsClient<Connection>, id: &str) -> pb::Job {
    eventually(Duration::from_secs(60), "every item labelled", || {
        let mut client = client.clone();
        async move {
            let job = get_job(&mut client, id).await;
            (job.counts.unwrap_or_default().pending == 0).then_some(job)
        }
    })
    .await
}

/// Items needing review, least confident first (at most a page).
async fn needing_review(client: &mut LabelJobsClient<Connection>, id: &str) -> Vec<pb::Item> {
    client
        .list_items(pb::ListItemsRequest {
            job_id: id.into(),
            status: pb::ItemStatus::NeedsReview as i32,
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .items
}

/// The index in the IDX file of an id `FILE#index`.
fn index_of(id: &str) -> usize {
    id.rsplit_once('#').unwrap().1.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_commands_create_add_review_and_export_with_exact_shapes() {
    let db = TestDb::sqlite();
    let server = server(&db).await;
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let (idx, truth) = test_subset(dir.path());
    let idx = idx.display().to_string();

    // create: the id is the last line of stdout.
    let (code, out, err) = aelabel(
        args(&["jobs", "create", "--server", &url, "--name", "cli job"]),
        "",
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let job = out.lines().last().unwrap().trim().to_string();
    assert_eq!(job.len(), 32, "a job id, got {out:?}");
    let mut c = client(&server).await;
    assert_eq!(get_job(&mut c, &job).await.name, "cli job");

    // add, twice: the second adds nothing.
    let (code, out, err) = aelabel(args(&["jobs", "add", "--server", &url, &job, &idx]), "").await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("{IMAGES} added, 0 already")), "{out}");
    let (code, out, _) = aelabel(args(&["jobs", "add", "--server", &url, &job, &idx]), "").await;
    assert_eq!(code, 0);
    assert!(out.contains(&format!("0 added, {IMAGES} already")), "{out}");
    let wire = labelled(&c, &job).await;
    let counts = wire.counts.unwrap();

    // status --json: exactly the server's counts under the documented keys.
    let (code, out, err) = aelabel(
        args(&["jobs", "status", "--server", &url, &job, "--json"]),
        "",
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let status: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(status["total"], IMAGES as u64);
    assert_eq!(status["pending"], 0);
    assert_eq!(status["auto_accepted"], counts.auto_accepted);
    assert_eq!(status["needs_review"], counts.needs_review);
    assert_eq!(status["reviewed"], 0);
    assert_eq!(
        status["model_versions"],
        serde_json::json!(wire.model_versions)
    );
    assert!(
        counts.needs_review >= 10,
        "the test needs items to review: {counts:?}"
    );

    // review --csv: three rows with the true classes, by name; ids as `label` makes them.
    let queue = needing_review(&mut c, &job).await;
    let names = &wire.class_names;
    let csv_path = dir.path().join("reviews.csv");
    let mut csv = String::from("id,class\n");
    for item in &queue[..3] {
        let truth_name = &names[truth[index_of(&item.id)] as usize];
        csv.push_str(&format!("{},{}\n", item.id, truth_name));
    }
    std::fs::write(&csv_path, csv).unwrap();
    let (code, out, err) = aelabel(
        args(&[
            "jobs",
            "review",
            "--server",
            &url,
            &job,
            "--csv",
            &csv_path.display().to_string(),
        ]),
        "",
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("stored 3 reviews"), "{out}");

    // A file whose rows are checked before anything is sent: a good first row and an empty
    // class in the second stores neither.
    let partial = dir.path().join("partial.csv");
    std::fs::write(
        &partial,
        format!("id,class\n{},Bag\n{},\n", queue[3].id, queue[4].id),
    )
    .unwrap();
    let (code, _, err) = aelabel(
        args(&[
            "jobs",
            "review",
            "--server",
            &url,
            &job,
            "--csv",
            &partial.display().to_string(),
        ]),
        "",
    )
    .await;
    assert_ne!(code, 0);
    assert!(
        err.contains("row 3") && err.contains("must not be empty"),
        "{err}"
    );
    assert_eq!(get_job(&mut c, &job).await.counts.unwrap().reviewed, 3);

    // A class the model does not have: refused, naming the row; nothing of it stored.
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, format!("id,class\n{},Unicorn\n", queue[3].id)).unwrap();
    let (code, _, err) = aelabel(
        args(&[
            "jobs",
            "review",
            "--server",
            &url,
            &job,
            "--csv",
            &bad.display().to_string(),
        ]),
        "",
    )
    .await;
    assert_ne!(code, 0);
    assert!(
        err.contains("row 2") && err.contains("INVALID_ARGUMENT"),
        "{err}"
    );
    assert_eq!(get_job(&mut c, &job).await.counts.unwrap().reviewed, 3);

    // At the terminal (lines from a pipe): an unknown answer is asked again, `b` takes the
    // second of the top three, `0` class 0.
    let next = needing_review(&mut c, &job).await;
    let second_choice = {
        let p = &next[0].probabilities;
        let mut ranked: Vec<usize> = (0..p.len()).collect();
        ranked.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
        ranked[1] as u32
    };
    let (code, out, err) = aelabel(
        args(&["jobs", "review", "--server", &url, &job, "--limit", "2"]),
        "zebra\nb\n0\n",
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("\x1b[38;2;"),
        "a picture in the terminal: {out}"
    );
    assert!(out.contains("`zebra` is not an answer"), "{out}");
    assert!(out.contains("reviewed 2 items"), "{out}");
    let reviewed = c
        .list_items(pb::ListItemsRequest {
            job_id: job.clone(),
            status: pb::ItemStatus::Reviewed as i32,
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    let human = |id: &str| {
        reviewed
            .iter()
            .find(|i| i.id == id)
            .and_then(|i| i.human_class)
    };
    assert_eq!(human(&next[0].id), Some(second_choice));
    assert_eq!(human(&next[1].id), Some(0));
    assert_eq!(reviewed.len(), 5);

    // export: the documented columns, one row per image in the order added; people's
    // classes win.
    let out_csv = dir.path().join("labels.csv");
    let (code, out, err) = export(&url, &job, &out_csv).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("exported {IMAGES} labels")), "{out}");
    let mut reader = csv::Reader::from_path(&out_csv).unwrap();
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        ["id", "class", "source", "confidence", "model_version"]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), IMAGES);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row[0], format!("{idx}#{i}"));
        if let Some(item) = reviewed.iter().find(|r| r.id == row[0]) {
            assert_eq!(&row[1], item.human_name.as_str());
            assert_eq!(&row[2], "human");
        } else {
            assert!(["auto", "pending_review"].contains(&&row[2]), "{row:?}");
        }
        assert_eq!(&row[4], wire.model_versions[0].as_str());
    }
    let out_jsonl = dir.path().join("labels.jsonl");
    let (code, _, err) = export(&url, &job, &out_jsonl).await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out_jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), IMAGES);
    for (line, row) in lines.iter().zip(&rows) {
        assert_eq!(line["id"], &row[0]);
        assert_eq!(line["class"], &row[1]);
        assert_eq!(line["source"], &row[2]);
    }

    // Unknown job: NOT_FOUND in one line, exit code not 0.
    let (code, _, err) = aelabel(args(&["jobs", "status", "--server", &url, "nope"]), "").await;
    assert_ne!(code, 0);
    assert!(err.contains("NOT_FOUND") && err.contains("nope"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_accuracy_becomes_the_models_threshold_for_that_target() {
    let db = TestDb::sqlite();
    let server = server(&db).await;
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let (idx, _) = test_subset(dir.path());
    let model = Model::load(model_path()).unwrap();
    let target = 0.8;
    let threshold = aelabel::jobs::threshold_for_target(&model.meta, target).unwrap();
    assert!(
        threshold < model.meta.auto_accept_threshold,
        "the test needs a target whose threshold differs from the model's own ({threshold} vs {})",
        model.meta.auto_accept_threshold
    );

    // Both flags at once: a usage error before anything is sent.
    let (code, _, err) = aelabel(
        args(&[
            "jobs",
            "create",
            "--server",
            &url,
            "--name",
            "t",
            "--target-accuracy",
            "0.8",
            "--threshold",
            "0.5",
        ]),
        "",
    )
    .await;
    assert_eq!(code, 2, "{err}");

    let (code, out, err) = aelabel(
        args(&[
            "jobs",
            "create",
            "--server",
            &url,
            "--name",
            "target",
            "--target-accuracy",
            "0.8",
        ]),
        "",
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let job = out.lines().last().unwrap().trim().to_string();
    let (code, _, err) = aelabel(
        args(&[
            "jobs",
            "add",
            "--server",
            &url,
            &job,
            &idx.display().to_string(),
        ]),
        "",
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let mut c = client(&server).await;
    let wire = labelled(&c, &job).await;
    assert_eq!(wire.target_accuracy, Some(target));
    let items = c
        .list_items(pb::ListItemsRequest {
            job_id: job.clone(),
            status: pb::ItemStatus::AutoAccepted as i32,
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    let mut all = items.clone();
    all.extend(needing_review(&mut c, &job).await);
    assert_eq!(all.len(), IMAGES);
    for item in &all {
        let accepted = item.status == pb::ItemStatus::AutoAccepted as i32;
        assert_eq!(accepted, item.confidence >= threshold, "{item:?}");
    }
    let by_own = all
        .iter()
        .filter(|i| i.confidence >= model.meta.auto_accept_threshold)
        .count();
    assert!(
        items.len() > by_own,
        "the lower target accepts more: {} vs {by_own}",
        items.len()
    );

    // The text status names the rule.
    let (code, out, _) = aelabel(args(&["jobs", "status", "--server", &url, &job]), "").await;
    assert_eq!(code, 0);
    assert!(out.contains("target accuracy 80.0 %"), "{out}");
}
