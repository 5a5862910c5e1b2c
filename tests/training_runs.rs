//! Training runs in the store: one queued run per job, claimed by exactly one worker, taken
//! over when its worker's claim expires, and finished or failed only by the worker holding it
//! — on SQLite and on Postgres.

mod common;

use aelabel::jobs::training::{RoundReport, TrainingState};
use aelabel::jobs::NewJob;
use aelabel::store::Store;
use common::db::TestDb;
use std::time::Duration;

fn spec() -> NewJob {
    NewJob {
        name: "runs".into(),
        auto_accept_threshold: None,
        target_accuracy: Some(0.95),
        input_width: 2,
        input_height: 2,
        class_names: vec!["a".into(), "b".into()],
        own_classes: true,
    }
}

async fn two_workers_never_run_one_run_twice(db: TestDb) {
    let (a, b) = (
        Store::connect(&db.url).await.unwrap(),
        Store::connect(&db.url).await.unwrap(),
    );
    let job = a.create_job(&spec()).await.unwrap();
    let (run, queued) = a.enqueue_training(&job.id, false).await.unwrap();
    assert!(queued);
    assert_eq!(run.state, TrainingState::Queued);
    // Asking again while it waits returns the same run.
    let (again, queued) = b.enqueue_training(&job.id, true).await.unwrap();
    assert_eq!((again.id.as_str(), queued), (run.id.as_str(), false));

    // Both workers claim at once: exactly one gets it.
    let lease = Duration::from_secs(60);
    let (ca, cb) = tokio::join!(a.claim_training("wa", lease), b.claim_training("wb", lease));
    let (ca, cb) = (ca.unwrap(), cb.unwrap());
    assert_eq!(
        u8::from(ca.is_some()) + u8::from(cb.is_some()),
        1,
        "{ca:?} {cb:?}"
    );
    let (claimed, holder, other) = match (ca, cb) {
        (Some(r), None) => (r, "wa", "wb"),
        (None, Some(r)) => (r, "wb", "wa"),
        _ => unreachable!(),
    };
    assert_eq!(
        (claimed.id.as_str(), claimed.state),
        (run.id.as_str(), TrainingState::Running)
    );
    // Nothing else to claim; the other worker cannot report on or fail it.
    assert!(b.claim_training("wb", lease).await.unwrap().is_none());
    assert!(a
        .report_training(&run.id, holder, 0.5, "student", lease)
        .await
        .unwrap());
    assert!(!a
        .report_training(&run.id, other, 0.1, "x", lease)
        .await
        .unwrap());
    assert!(!a.fail_training(&run.id, other, "not mine").await.unwrap());
    let seen = a.training_run(&run.id).await.unwrap();
    assert_eq!((seen.stage.as_str(), seen.progress), ("student", 0.5));

    // A claim that lapses (its worker died) is taken over; the old holder can no longer end it.
    assert!(a
        .report_training(&run.id, holder, 0.6, "student", Duration::from_millis(1))
        .await
        .unwrap());
    tokio::time::sleep(Duration::from_millis(20)).await;
    let taken = b
        .claim_training("wc", lease)
        .await
        .unwrap()
        .expect("taken over");
    assert_eq!(taken.id, run.id);
    assert!(!a.fail_training(&run.id, holder, "too late").await.unwrap());
    assert!(b
        .fail_training(&run.id, "wc", "the model file is gone")
        .await
        .unwrap());
    let failed = a.training_run(&run.id).await.unwrap();
    assert_eq!(failed.state, TrainingState::Failed);
    assert_eq!(failed.error.as_deref(), Some("the model file is gone"));
    assert!(a.open_training(&job.id).await.unwrap().is_none());
    // Once it is over, a new request queues a new run.
    let (next, queued) = a.enqueue_training(&job.id, false).await.unwrap();
    assert!(queued && next.id != run.id);
    assert_eq!(a.training_runs(&job.id).await.unwrap().len(), 2);
    assert_eq!(failed.result, None::<RoundReport>);
}

#[tokio::test]
async fn two_workers_never_run_one_run_twice_on_sqlite() {
    two_workers_never_run_one_run_twice(TestDb::sqlite()).await;
}

#[tokio::test]
async fn two_workers_never_run_one_run_twice_on_postgres() {
    two_workers_never_run_one_run_twice(TestDb::postgres().await).await;
}
