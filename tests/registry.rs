//! The model registry on SQLite and on PostgreSQL: what is recorded, which model is active,
//! activation and rollback, and the `aelabel models` / `aelabel db` commands.

mod common;

use aelabel::store::{NewModel, Registered, Store, StoreError};
use common::db::TestDb;
use std::path::PathBuf;
use std::time::Duration;

fn new_model(version: &str, accuracy: Option<f64>) -> NewModel {
    NewModel {
        version: version.into(),
        preset: "default".into(),
        settings: serde_json::json!({"labels": 200, "seed": 3}),
        dataset: "/data/fashion".into(),
        class_names: vec!["cat".into(), "dog".into()],
        test_accuracy: accuracy,
        metrics: serde_json::json!({"test_accuracy": accuracy}),
        path: PathBuf::from(format!("/models/{version}.safetensors")),
        sha256: format!("{version:0>64}"),
        job_id: None,
    }
}

/// Everything the registry promises, against one database.
async fn registry_lifecycle(url: &str) {
    let store = Store::connect(url).await.expect("connects and migrates");
    // Migrating twice is harmless.
    store.migrate().await.unwrap();
    assert!(matches!(store.active_model().await, Err(StoreError::Empty)));
    assert!(matches!(store.rollback().await, Err(StoreError::Empty)));

    let first = store.register_model(&new_model("m-a", Some(0.81))).await;
    assert_eq!(first.unwrap(), Registered::New { active: true });
    let second = store.register_model(&new_model("m-b", None)).await;
    assert_eq!(second.unwrap(), Registered::New { active: false });
    assert_eq!(
        store.active_version().await.unwrap().as_deref(),
        Some("m-a")
    );

    let a = store.model("m-a").await.unwrap();
    assert!(a.active);
    assert_eq!(a.test_accuracy, Some(0.81));
    assert_eq!(a.class_names, ["cat", "dog"]);
    assert_eq!(a.settings["labels"], 200);
    assert_eq!(a.path, PathBuf::from("/models/m-a.safetensors"));
    assert_eq!(a.sha256.len(), 64);
    assert!(a.created_at.ends_with('Z'), "{}", a.created_at);
    let b = store.model("m-b").await.unwrap();
    assert!(!b.active);
    assert_eq!(b.test_accuracy, None);

    let listed = store.models().await.unwrap();
    let versions: Vec<_> = listed
        .iter()
        .map(|m| (m.version.as_str(), m.active))
        .collect();
    assert_eq!(versions.len(), 2);
    assert!(versions.contains(&("m-a", true)) && versions.contains(&("m-b", false)));

    // Rolling back needs an earlier, different activation.
    assert!(matches!(
        store.rollback().await,
        Err(StoreError::NothingToRollBack(v)) if v == "m-a"
    ));
    assert_eq!(store.activate("m-b").await.unwrap().version, "m-b");
    // Activating the active version changes nothing (rollback still goes to m-a).
    store.activate("m-b").await.unwrap();
    assert_eq!(store.rollback().await.unwrap().version, "m-a");
    assert_eq!(
        store.active_version().await.unwrap().as_deref(),
        Some("m-a")
    );
    // Rollback returns to the previously active version: from m-a that is m-b again.
    assert_eq!(store.rollback().await.unwrap().version, "m-b");

    assert!(matches!(
        store.activate("m-zzz").await,
        Err(StoreError::UnknownVersion(v)) if v == "m-zzz"
    ));
    assert!(matches!(
        store.model("m-zzz").await,
        Err(StoreError::UnknownVersion(_))
    ));

    // The same weights registered again keep their history and take the new file.
    let mut moved = new_model("m-a", Some(0.81));
    moved.path = PathBuf::from("/elsewhere/model.safetensors");
    assert_eq!(
        store.register_model(&moved).await.unwrap(),
        Registered::Existing
    );
    let a = store.model("m-a").await.unwrap();
    assert_eq!(a.path, PathBuf::from("/elsewhere/model.safetensors"));
    assert!(!a.active);
    assert_eq!(
        store.active_version().await.unwrap().as_deref(),
        Some("m-b")
    );
    store.close().await;
}

#[tokio::test]
async fn registry_records_activates_and_rolls_back_on_sqlite() {
    let db = TestDb::sqlite();
    registry_lifecycle(&db.url).await;
}

#[tokio::test]
async fn registry_records_activates_and_rolls_back_on_postgres() {
    let db = TestDb::postgres().await;
    registry_lifecycle(&db.url).await;
}

#[tokio::test]
async fn an_unreachable_database_is_one_line_naming_the_url_without_its_password() {
    let url = "postgres://app:hunter2@127.0.0.1:9/aelabel";
    let err = Store::connect(url)
        .await
        .expect_err("nothing listens on port 9");
    let text = err.to_string();
    assert!(
        text.contains("postgres://app:***@127.0.0.1:9/aelabel"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!text.contains('\n'), "{text}");

    let (code, _, stderr) = common::aelabel_quiet(&["models", "list", "--database-url", url]);
    assert_eq!(code, 1);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("app:***@127.0.0.1:9"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");

    let (code, _, stderr) =
        common::aelabel_quiet(&["models", "list", "--database-url", "mysql://x"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("sqlite:// or postgres://"), "{stderr}");
}

/// One `models list --json` row: exactly the README's 11 keys, each with the value the
/// checkpoint (its file, its metadata, its run's report.json) gives; registered between the
/// two instants of `registered`.
fn list_json_row_holds_the_checkpoint(
    row: &serde_json::Value,
    checkpoint: &std::path::Path,
    registered: (std::time::SystemTime, std::time::SystemTime),
) {
    use serde_json::json;
    let keys: Vec<&str> = row
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut want = [
        "version",
        "active",
        "created_at",
        "test_accuracy",
        "path",
        "sha256",
        "preset",
        "dataset",
        "class_names",
        "settings",
        "metrics",
    ];
    want.sort_unstable();
    assert_eq!(keys, want, "list --json keys");

    let meta = aelabel::model::Model::load(checkpoint).unwrap().meta;
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(checkpoint.with_file_name("report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(row["version"], meta.version.as_str());
    assert_eq!(row["active"], true);
    // RFC 3339 in UTC (humantime accepts only the `Z` form), at the registration.
    let created = row["created_at"].as_str().unwrap();
    let at = humantime::parse_rfc3339(created).unwrap_or_else(|e| panic!("{created}: {e}"));
    let second = Duration::from_secs(1);
    assert!(
        at + second >= registered.0 && at <= registered.1 + second,
        "{created}"
    );
    assert_eq!(row["test_accuracy"], report["classifier"]["test_accuracy"]);
    assert!(row["test_accuracy"].is_f64());
    assert_eq!(
        row["path"],
        std::fs::canonicalize(checkpoint)
            .unwrap()
            .display()
            .to_string()
    );
    let sha = aelabel::model::sha256_hex(&std::fs::read(checkpoint).unwrap());
    assert_eq!(row["sha256"], sha);
    assert_eq!(row["preset"], "default");
    assert_eq!(row["preset"], report["preset"]);
    assert_eq!(row["dataset"], common::data_dir().display().to_string());
    assert_eq!(row["class_names"], report["classifier"]["class_names"]);
    assert_eq!(row["class_names"][0], "T-shirt/top");
    // The test model: quick_pipeline_config's 200 labels, seed 3, 90 % target.
    let layers = &report["pretrain"]["layers"];
    assert_eq!(
        row["settings"],
        json!({"labels": 200, "seed": 3, "target_accuracy": 0.9, "encoder_widths": layers,
               "decoder": meta.decoder, "input_size": [28, 28]})
    );
    assert_eq!(row["metrics"], meta.training);
    assert_eq!(
        row["metrics"]["test_accuracy"],
        report["classifier"]["test_accuracy"]
    );
    assert_eq!(
        row["metrics"]["auto_label_test_coverage"],
        report["auto_label"]["test_coverage"]
    );
}

/// `aelabel models …` through the binary: register real checkpoints, list as JSON, show,
/// activate, roll back.
fn models_commands(url: &str) {
    let run = |args: &[&str]| {
        let mut all = vec!["models"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--database-url", url]);
        let (code, stdout, stderr) = common::aelabel_quiet(&all);
        assert_eq!(code, 0, "aelabel {all:?}: {stderr}");
        stdout
    };
    let first = common::server::model_path();
    let second = common::server::second_model_path();
    let a = aelabel::model::Model::load(first).unwrap().meta.version;
    let b = aelabel::model::Model::load(second).unwrap().meta.version;
    assert_ne!(a, b);

    let before = std::time::SystemTime::now();
    assert!(run(&["register", first.to_str().unwrap()]).contains("active"));
    let after = std::time::SystemTime::now();
    let out = run(&["register", second.to_str().unwrap()]);
    assert!(
        out.contains(&format!("aelabel models activate {b}")),
        "{out}"
    );

    let listed: serde_json::Value = serde_json::from_str(&run(&["list", "--json"])).unwrap();
    let rows = listed.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let row = |v: &str| rows.iter().find(|r| r["version"] == v).unwrap().clone();
    list_json_row_holds_the_checkpoint(&row(&a), first, (before, after));
    assert_eq!(row(&b)["active"], false);

    let shown: serde_json::Value = serde_json::from_str(&run(&["show", &b])).unwrap();
    assert_eq!(shown["version"], b.as_str());
    assert_eq!(shown["class_names"].as_array().unwrap().len(), 10);

    assert_eq!(run(&["activate", &b]).trim(), format!("active: {b}"));
    let table = run(&["list"]);
    assert!(
        table.lines().any(|l| l.starts_with('*') && l.contains(&b)),
        "{table}"
    );
    assert_eq!(run(&["rollback"]).trim(), format!("active: {a}"));

    let (code, _, stderr) =
        common::aelabel_quiet(&["models", "activate", "nope", "--database-url", url]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no model version `nope`"), "{stderr}");
}

#[test]
fn models_commands_work_on_sqlite() {
    let db = TestDb::sqlite();
    models_commands(&db.url);
}

#[test]
fn models_commands_work_on_postgres() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(TestDb::postgres());
    models_commands(&db.url);
    drop(db);
}

#[test]
fn db_migrate_creates_the_schema_and_serve_starts_without_a_model() {
    let db = TestDb::sqlite();
    let (code, stdout, stderr) =
        common::aelabel_quiet(&["db", "migrate", "--database-url", &db.url]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("is up to date"), "{stdout}");
    // An empty registry is a start, not an error: the server serves label jobs and says how
    // to get a model (tests/empty_registry.rs checks what it answers).
    let mut server =
        common::process::ServerProcess::spawn(common::process::registry_serve_command(&db.url));
    assert!(
        server.log.iter().any(|line| line.contains(
            "no model is active yet: serving label jobs; the Labeller answers once a model is activated"
        )),
        "{}",
        server.log.join("\n")
    );
    server.terminate();
    assert!(server.wait_exit(Duration::from_secs(30)).success());
}

/// Managed Postgres services usually require TLS: `sslmode=require` must connect over TLS
/// (rustls with bundled web PKI roots, so the image needs no OpenSSL or CA files), and the
/// registry works through it.
#[tokio::test]
async fn postgres_with_sslmode_require_connects_over_tls() {
    let db = TestDb::postgres().await;
    let url = format!("{}?sslmode=require", db.url);
    let store = Store::connect(&url).await.unwrap();
    let outcome = store
        .register_model(&new_model("tls-1", Some(0.5)))
        .await
        .unwrap();
    assert_eq!(outcome, Registered::New { active: true });
    store.close().await;
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let ssl: bool = sqlx::Row::get(
        &sqlx::query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .unwrap(),
        0,
    );
    pool.close().await;
    assert!(ssl, "the connection is encrypted");
}
