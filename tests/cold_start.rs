//! A team with a pile of images, three class names and no model, through the real server and
//! CLI: `jobs create --classes`, `jobs add` a folder, `jobs next` (the first batch, after the
//! job's autoencoder pretrains), `jobs review --csv` with the true classes, `jobs train`, and
//! every item labelled by the job's own model. Then the next round's order holds the random
//! slice that judges the threshold, a run that fails is recorded with its error while the job
//! keeps its model, and bad requests get one line naming the job and what to do.

mod common;

use aelabel::data::read_idx_pair;
use aelabel::service::training_worker::TrainingWorkerConfig;
use aelabel::service::ServeConfig;
use common::db::TestDb;
use common::server::{registry_config, TestServer};
use common::{clean_command, data_dir, output_with_input};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

/// Fashion-MNIST classes of the pile, and their names in the job.
const CLASSES: [(u32, &str); 3] = [(1, "trouser"), (7, "sneaker"), (8, "bag")];
/// Images per class in the folder.
const PER_CLASS: usize = 100;

/// Writes PER_CLASS t10k images of each class as PNGs into one flat folder; returns each
/// file's id (its path, as `jobs add` names it) with its true class name.
fn write_pile(dir: &Path) -> HashMap<String, String> {
    let data = data_dir();
    let set = read_idx_pair(
        &data.join("t10k-images-idx3-ubyte.gz"),
        &data.join("t10k-labels-idx1-ubyte.gz"),
    )
    .unwrap();
    let mut truth = HashMap::new();
    let mut taken = [0usize; 3];
    for (i, label) in set.labels.iter().enumerate() {
        let Some(k) = CLASSES.iter().position(|(c, _)| Some(*c) == *label) else {
            continue;
        };
        if taken[k] == PER_CLASS {
            continue;
        }
        taken[k] += 1;
        let path = dir.join(format!("img{i:05}.png"));
        image::GrayImage::from_raw(28, 28, set.pixels[i * 784..(i + 1) * 784].to_vec())
            .unwrap()
            .save(&path)
            .unwrap();
        truth.insert(path.display().to_string(), CLASSES[k].1.to_string());
    }
    truth
}

async fn aelabel(args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let mut command = clean_command();
        command.args(&args).arg("--quiet");
        output_with_input(command, b"")
    })
    .await
    .unwrap()
}

/// `aelabel jobs SUB --server URL ARGS…`, which must succeed; its stdout.
async fn jobs(url: &str, sub: &str, rest: &[&str]) -> String {
    let mut args = vec!["jobs", sub, "--server", url];
    args.extend_from_slice(rest);
    let (code, out, err) = aelabel(&args).await;
    assert_eq!(code, 0, "aelabel {args:?} failed: {err}");
    out
}

/// `aelabel jobs SUB …`, which must fail with one line on stderr; that line.
async fn refused(url: &str, sub: &str, rest: &[&str]) -> String {
    let mut args = vec!["jobs", sub, "--server", url];
    args.extend_from_slice(rest);
    let (code, out, err) = aelabel(&args).await;
    assert_ne!(code, 0, "aelabel {args:?} should fail: {out}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line for {args:?}: {err}");
    lines[0].to_string()
}

/// Rows of a CSV file as maps.
fn rows(path: &Path) -> Vec<HashMap<String, String>> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let headers = reader.headers().unwrap().clone();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            headers
                .iter()
                .map(String::from)
                .zip(r.iter().map(String::from))
                .collect()
        })
        .collect()
}

fn status(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim()).unwrap()
}

/// Writes `id,class` answers for `picks` from the truth.
fn answer(picks: &[HashMap<String, String>], truth: &HashMap<String, String>, out: &Path) {
    let mut w = csv::Writer::from_path(out).unwrap();
    w.write_record(["id", "class"]).unwrap();
    for p in picks {
        w.write_record([&p["id"], &truth[&p["id"]]]).unwrap();
    }
    w.flush().unwrap();
}

/// A server on `db` (an empty registry) whose training worker writes job models under `work`.
async fn loop_server(db: &TestDb, work: &Path, retrain_every: Option<u64>) -> TestServer {
    TestServer::start(
        ServeConfig {
            training: Some(TrainingWorkerConfig {
                dir: work.join("jobs"),
                threads: 2,
                lease: Duration::from_secs(60),
                poll: Duration::from_millis(100),
                background: false,
            }),
            retrain_every,
            ..registry_config(&db.url, Duration::from_millis(200))
        },
        true,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_starts_from_nothing_and_ends_labelled() {
    let db = TestDb::sqlite();
    let work = tempfile::tempdir().unwrap();
    let pile_dir = work.path().join("pile");
    std::fs::create_dir_all(&pile_dir).unwrap();
    let truth = write_pile(&pile_dir);
    let server = loop_server(&db, work.path(), None).await;
    let url = server.url();
    let path = |name: &str| work.path().join(name).display().to_string();

    let created = jobs(
        &url,
        "create",
        &["--name", "cold", "--classes", "trouser,sneaker,bag"],
    )
    .await;
    let job = created.lines().last().unwrap().to_string();
    jobs(&url, "add", &[&job, &pile_dir.display().to_string()]).await;
    let s = status(&jobs(&url, "status", &[&job, "--json"]).await);
    assert_eq!(
        (s["total"].as_u64(), s["pending"].as_u64()),
        (Some(300), Some(300))
    );
    assert_eq!(s["model_version"], serde_json::Value::Null);
    assert_eq!(s["pretrained"], false);

    // Bad input before anything is trained.
    let empty = jobs(&url, "create", &["--name", "empty", "--classes", "a,b"]).await;
    let empty = empty.lines().last().unwrap().to_string();
    let line = refused(&url, "next", &[&empty, "--n", "5", "--out", &path("e.csv")]).await;
    assert!(line.contains(&empty) && line.contains("jobs add"), "{line}");

    // The first batch: the job's autoencoder pretrains, then 30 typical points (and the
    // random slice) come back in order, `id` first.
    jobs(
        &url,
        "next",
        &[&job, "--n", "30", "--out", &path("next1.csv")],
    )
    .await;
    let first = rows(Path::new(&path("next1.csv")));
    assert_eq!(first.len(), 30);
    let header = std::fs::read_to_string(path("next1.csv")).unwrap();
    assert!(header.starts_with("id,"), "{header}");
    let evidence1 = first.iter().filter(|r| r["reason"] == "evidence").count();
    assert_eq!(evidence1, 2, "5 % of 30, rounded");
    assert!(first
        .iter()
        .all(|r| r["reason"] == "typical" || r["reason"] == "evidence"));
    let s = status(&jobs(&url, "status", &[&job, "--json"]).await);
    assert_eq!(s["pretrained"], true);

    // Fewer labels than classes: refused before a run is queued, naming the job.
    let one = vec![first[0].clone()];
    answer(&one, &truth, Path::new(&path("one.csv")));
    jobs(&url, "review", &[&job, "--csv", &path("one.csv")]).await;
    let line = refused(&url, "train", &[&job]).await;
    assert!(
        line.contains(&job) && line.contains("at least one label of every class"),
        "{line}"
    );
    // A class the job does not have.
    std::fs::write(
        path("bad.csv"),
        format!("id,class\n{},shirt\n", first[1]["id"]),
    )
    .unwrap();
    let line = refused(&url, "review", &[&job, "--csv", &path("bad.csv")]).await;
    assert!(
        line.contains("shirt") && line.contains("trouser, sneaker, bag"),
        "{line}"
    );

    answer(&first, &truth, Path::new(&path("ans1.csv")));
    jobs(&url, "review", &[&job, "--csv", &path("ans1.csv")]).await;
    let trained: serde_json::Value =
        serde_json::from_str(jobs(&url, "train", &[&job, "--json"]).await.trim()).unwrap();
    assert_eq!(trained["state"], "finished", "{trained}");
    let version = trained["result"]["model_version"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(trained["result"]["human_labels"], 30);
    assert_eq!(trained["result"]["evidence_labels"], evidence1);

    // Every item is labelled by the job's own model; people's labels win.
    let s = status(&jobs(&url, "status", &[&job, "--json"]).await);
    assert_eq!(s["model_version"].as_str(), Some(version.as_str()));
    assert_eq!(
        (s["pending"].as_u64(), s["reviewed"].as_u64()),
        (Some(0), Some(30))
    );
    assert_eq!(s["human_labels"], 30);
    assert_eq!(s["evidence_labels"].as_u64(), Some(evidence1 as u64));
    assert_eq!(s["model_versions"], serde_json::json!([version]));
    jobs(&url, "export", &[&job, "--out", &path("labels.csv")]).await;
    let labels = rows(Path::new(&path("labels.csv")));
    assert_eq!(labels.len(), 300);
    let right = labels
        .iter()
        .filter(|r| r["class"] == truth[&r["id"]])
        .count();
    assert!(right >= 285, "{right} of 300 right after 30 labels");

    // The next round: uncertain items with the random slice interleaved.
    jobs(
        &url,
        "next",
        &[&job, "--n", "20", "--out", &path("next2.csv")],
    )
    .await;
    let second = rows(Path::new(&path("next2.csv")));
    assert_eq!(second.len(), 20);
    let reasons: Vec<&str> = second.iter().map(|r| r["reason"].as_str()).collect();
    assert_eq!(
        reasons.iter().filter(|r| **r == "evidence").count(),
        1,
        "{reasons:?}"
    );
    assert_eq!(
        reasons.iter().filter(|r| **r == "uncertain").count(),
        19,
        "{reasons:?}"
    );
    assert!(second
        .iter()
        .all(|r| !first.iter().any(|f| f["id"] == r["id"])));

    // A run that fails is recorded with its error; the job keeps its model.
    for entry in std::fs::read_dir(work.path().join("jobs").join(&job)).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let line = refused(&url, "train", &[&job]).await;
    assert!(line.contains(&job) && line.contains("failed"), "{line}");
    let s = status(&jobs(&url, "status", &[&job, "--json"]).await);
    assert_eq!(s["model_version"].as_str(), Some(version.as_str()));
    assert_eq!(s["training"], serde_json::Value::Null);
    let report = jobs(&url, "report", &[&job, "--out", &path("report")]).await;
    assert!(report.starts_with("1 rounds"), "{report}");
    let rounds: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path("report/rounds.json")).unwrap())
            .unwrap();
    assert_eq!(
        rounds["rounds"][0]["model_version"].as_str(),
        Some(version.as_str())
    );
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_queue_a_training_run_every_n() {
    let db = TestDb::sqlite();
    let work = tempfile::tempdir().unwrap();
    let pile_dir = work.path().join("pile");
    std::fs::create_dir_all(&pile_dir).unwrap();
    let truth = write_pile(&pile_dir);
    let server = loop_server(&db, work.path(), Some(12)).await;
    let url = server.url();
    let path = |name: &str| work.path().join(name).display().to_string();
    let created = jobs(
        &url,
        "create",
        &["--name", "auto", "--classes", "trouser,sneaker,bag"],
    )
    .await;
    let job = created.lines().last().unwrap().to_string();
    jobs(&url, "add", &[&job, &pile_dir.display().to_string()]).await;
    jobs(
        &url,
        "next",
        &[&job, "--n", "20", "--out", &path("next.csv")],
    )
    .await;
    let picks = rows(Path::new(&path("next.csv")));
    // 11 reviews queue nothing; the 12th queues a round by itself.
    answer(&picks[..11], &truth, Path::new(&path("a.csv")));
    jobs(&url, "review", &[&job, "--csv", &path("a.csv")]).await;
    let status_now = status(&jobs(&url, "status", &[&job, "--json"]).await);
    assert_eq!(
        status_now["training"],
        serde_json::Value::Null,
        "{status_now}"
    );
    answer(&picks[11..12], &truth, Path::new(&path("b.csv")));
    jobs(&url, "review", &[&job, "--csv", &path("b.csv")]).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let s = status(&jobs(&url, "status", &[&job, "--json"]).await);
        if s["model_version"].is_string() {
            assert_eq!(s["human_labels"], 12);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no round trained by itself: {s}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(server);
}
