//! A database written by the previous release (schema 0001–0004: one pixel row per distinct
//! image, counts taken by scanning) upgrades to bulk jobs without losing a job: every item
//! keeps its place, prediction, review, evidence flag and pixels; the kept counts equal the
//! items; new images continue the job — on a SQLite file and on Postgres.

mod common;

use aelabel::jobs::{ItemStatus, NewImage};
use aelabel::store::Store;
use common::db::TestDb;
use sqlx::Row;

/// The old schema: the first four migrations, run from a folder of their own.
async fn old_schema(url: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir().unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if ["0001", "0002", "0003", "0004"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            std::fs::copy(&path, dir.path().join(&name)).unwrap();
        }
    }
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    sqlx::migrate::Migrator::new(dir.path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    pool
}

/// One old item: (client id, image hash, status, predicted class, confidence, model,
/// human class, evidence).
type OldItem = (
    &'static str,
    &'static str,
    &'static str,
    Option<i64>,
    Option<f64>,
    Option<&'static str>,
    Option<i64>,
    i64,
);

const OLD_ITEMS: [OldItem; 6] = [
    ("pending", "h0", "pending", None, None, None, None, 0),
    (
        "accepted",
        "h1",
        "auto_accepted",
        Some(1),
        Some(0.9),
        Some("v1"),
        None,
        0,
    ),
    (
        "doubtful",
        "h2",
        "needs_review",
        Some(0),
        Some(0.4),
        Some("v1"),
        None,
        1,
    ),
    (
        "reviewed",
        "h3",
        "reviewed",
        Some(0),
        Some(0.3),
        Some("v1"),
        Some(2),
        1,
    ),
    // Equal pixels under two ids: one old image row serves both.
    (
        "twin-a",
        "h4",
        "auto_accepted",
        Some(2),
        Some(0.95),
        Some("v2"),
        None,
        0,
    ),
    (
        "twin-b",
        "h4",
        "auto_accepted",
        Some(2),
        Some(0.95),
        Some("v2"),
        None,
        0,
    ),
];

/// The 2 × 2 pixels of old image `hash`.
fn old_pixels(hash: &str) -> Vec<u8> {
    let n = hash[1..].parse::<u8>().unwrap();
    vec![n, n + 10, n + 20, n + 30]
}

async fn write_old_job(pool: &sqlx::AnyPool) {
    sqlx::query(
        "INSERT INTO jobs (id, name, created_at, input_width, input_height, class_names, \
         own_classes) VALUES ('job1', 'old', 1, 2, 2, '[\"a\",\"b\",\"c\"]', 0)",
    )
    .execute(pool)
    .await
    .unwrap();
    for hash in ["h0", "h1", "h2", "h3", "h4"] {
        sqlx::query("INSERT INTO job_images (job_id, sha256, pixels) VALUES ('job1', $1, $2)")
            .bind(hash)
            .bind(old_pixels(hash))
            .execute(pool)
            .await
            .unwrap();
    }
    for (seq, (id, hash, status, class, confidence, model, human, evidence)) in
        OLD_ITEMS.iter().enumerate()
    {
        sqlx::query(
            // The confidence travels as text: sqlx's `Any` driver binds a null `f64` as a
            // Postgres `float4`, which the cached statement then keeps for real values.
            "INSERT INTO items (job_id, seq, client_id, image_sha256, status, predicted_class, \
             confidence, model_version, labellings, human_class, evidence) \
             VALUES ('job1', $1, $2, $3, $4, $5, CAST($6 AS DOUBLE PRECISION), $7, $8, $9, $10)",
        )
        .bind(seq as i64 + 1)
        .bind(*id)
        .bind(*hash)
        .bind(*status)
        .bind(*class)
        .bind(confidence.map(|c| c.to_string()))
        .bind(*model)
        .bind(i64::from(model.is_some()))
        .bind(*human)
        .bind(*evidence)
        .execute(pool)
        .await
        .unwrap();
    }
}

async fn upgrade_keeps_the_job(db: TestDb) {
    let pool = old_schema(&db.url).await;
    write_old_job(&pool).await;
    pool.close().await;

    let store = Store::connect(&db.url).await.unwrap();
    let job = store.job("job1").await.unwrap();
    assert_eq!(
        (
            job.counts.total,
            job.counts.pending,
            job.counts.auto_accepted,
            job.counts.needs_review,
            job.counts.reviewed
        ),
        (6, 1, 3, 1, 1)
    );
    assert_eq!(job.model_versions, ["v1", "v2"]);

    let exported = store.export_page("job1", 0, 100).await.unwrap();
    assert_eq!(exported.len(), OLD_ITEMS.len());
    for ((seq, item), (i, old)) in exported.iter().zip(OLD_ITEMS.iter().enumerate()) {
        assert_eq!(*seq, i as i64 + 1);
        assert_eq!(item.client_id, old.0);
        assert_eq!(item.status.as_str(), old.2);
        assert_eq!(item.predicted_class.map(i64::from), old.3);
        assert_eq!(item.human_class.map(i64::from), old.6);
    }
    let ids: Vec<String> = OLD_ITEMS.iter().map(|o| o.0.to_string()).collect();
    let images = store.item_images("job1", &ids).await.unwrap();
    for (id, hash, ..) in OLD_ITEMS {
        assert_eq!(images[id], old_pixels(hash), "{id}");
    }
    let reviewed = store.reviewed_images("job1").await.unwrap();
    assert_eq!(reviewed.len(), 1);
    assert_eq!(
        (
            reviewed[0].client_id.as_str(),
            reviewed[0].class,
            &reviewed[0].pixels
        ),
        ("reviewed", 2, &old_pixels("h3"))
    );
    let state = store.loop_state("job1").await.unwrap();
    assert_eq!(state.evidence_labels, 1);

    // New images continue the job after the old items, readable with them.
    let new: Vec<NewImage> = (0..3u8)
        .map(|i| NewImage::new(format!("new-{i}"), vec![100 + i; 4]))
        .collect();
    let added = store.add_images("job1", &new).await.unwrap();
    assert_eq!((added.added, added.duplicates), (3, 0));
    let pile = store.job_pile("job1", true).await.unwrap();
    let mut expected: Vec<u8> = OLD_ITEMS.iter().flat_map(|o| old_pixels(o.1)).collect();
    expected.extend((0..3u8).flat_map(|i| [100 + i; 4]));
    assert_eq!(pile.pixels, expected);
    assert_eq!(
        pile.items.iter().map(|i| i.seq).collect::<Vec<_>>(),
        (1..=9).collect::<Vec<i64>>()
    );
    let job = store.job("job1").await.unwrap();
    assert_eq!((job.counts.total, job.counts.pending), (9, 4));
    let pending: i64 = sqlx::query("SELECT COUNT(*) FROM items WHERE status = $1")
        .bind(ItemStatus::Pending.as_str())
        .fetch_one(&sqlx::AnyPool::connect(&db.url).await.unwrap())
        .await
        .unwrap()
        .get(0);
    assert_eq!(pending, 4);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_file_of_the_previous_release_upgrades_without_losing_a_job() {
    upgrade_keeps_the_job(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_database_of_the_previous_release_upgrades_without_losing_a_job() {
    upgrade_keeps_the_job(TestDb::postgres().await).await;
}
