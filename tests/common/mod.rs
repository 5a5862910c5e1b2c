//! Shared set-up for the integration tests.
#![allow(dead_code)]

pub mod db;
pub mod metrics;
pub mod oip;
pub mod process;
pub mod proxy;
pub mod server;
pub mod tls;
pub mod venv;

use aelabel::data::DataOptions;
use aelabel::pipeline::{PipelineConfig, Preset};
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A pipeline run on a small slice of the real data (seconds, not minutes), writing to `out`.
pub fn quick_pipeline_config(out: &Path) -> PipelineConfig {
    PipelineConfig {
        data: DataOptions {
            dir: data_dir(),
            ..DataOptions::default()
        },
        out_dir: out.to_path_buf(),
        preset: Preset::Default,
        labels: Some(200),
        valid_fraction: None,
        seed: 3,
        threads: 1,
        mode: None,
        layers: None,
        freeze: None,
        pretrain_epochs: None,
        finetune_epochs: None,
        self_training_rounds: None,
        epoch_images: None,
        target_accuracy: 0.9,
        train_limit: Some(4000),
        eval_limit: Some(1000),
        tsne_points: 100,
    }
}

/// The Fashion-MNIST directory the tests read (`AELABEL_DATA` or the Debian package's).
pub fn data_dir() -> PathBuf {
    let dir = std::env::var_os("AELABEL_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(aelabel::data::DEFAULT_DATA_DIR));
    assert!(
        dir.join("train-images-idx3-ubyte.gz").is_file(),
        "Fashion-MNIST is missing at {}: run `apt-get install -y dataset-fashion-mnist` (the test script does)",
        dir.display()
    );
    dir
}

/// Bytes of an IDX image file with the given header and body.
pub fn idx_images(count: u32, rows: u32, cols: u32, body: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 3];
    for v in [count, rows, cols] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b.extend_from_slice(body);
    b
}

/// Bytes of an IDX label file.
pub fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 1];
    b.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    b.extend_from_slice(labels);
    b
}

/// Writes `bytes` to `path`, gzip-compressed when the name ends in `.gz`.
pub fn write(path: &Path, bytes: &[u8]) {
    if path.extension().is_some_and(|e| e == "gz") {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        std::fs::write(path, enc.finish().unwrap()).unwrap();
    } else {
        std::fs::write(path, bytes).unwrap();
    }
}

/// Longest a command a test runs may take before it is killed and the test fails.
const COMMAND_LIMIT: Duration = Duration::from_secs(600);

/// Runs the `aelabel` binary quietly with `args`; returns exit code, stdout and stderr.
pub fn aelabel_quiet<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (i32, String, String) {
    let mut command = clean_command();
    command.args(args).arg("--quiet");
    output_within(command)
}

/// Runs `command` to its end; returns exit code, stdout and stderr. A run that outlasts
/// [`COMMAND_LIMIT`] is killed and fails the test.
pub fn output_within(command: std::process::Command) -> (i32, String, String) {
    output_with_input(command, b"")
}

/// [`output_within`], with `input` written to the command's standard input (then closed).
pub fn output_with_input(
    mut command: std::process::Command,
    input: &[u8],
) -> (i32, String, String) {
    use std::process::Stdio;
    let shown = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let mut stdin = child.stdin.take().expect("a stdin pipe");
    let input = input.to_vec();
    // A writer thread: a command that does not read its input must not block the test.
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let pid = child.id();
    let (done_tx, done) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let output = child.wait_with_output();
        let _ = done_tx.send(());
        output
    });
    if done.recv_timeout(COMMAND_LIMIT).is_err() {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        let _ = waiter.join();
        panic!("{shown} ran over {COMMAND_LIMIT:?}; killed it");
    }
    let out = waiter
        .join()
        .expect("the waiting thread")
        .expect("the binary's output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `aelabel` binary with no `AELABEL_*`, `DATABASE_URL` or `RUST_LOG` variable from the environment the
/// tests run in, so a developer's settings cannot change what a test sees.
pub fn clean_command() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_aelabel"));
    command.env_remove("RUST_LOG").env_remove("DATABASE_URL");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AELABEL_") {
            command.env_remove(name);
        }
    }
    command
}

/// Runs a test body with a time limit: a hang fails the test (and unwinds its guards) instead
/// of stalling the suite.
pub async fn within<T>(limit: Duration, body: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, body)
        .await
        .unwrap_or_else(|_| panic!("the test did not finish within {limit:?}"))
}

/// How often [`eventually`] looks again.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `check` until it returns `Some`, and returns that; panics naming `what` when
/// `limit` passes first. For waiting on state a test can observe, instead of sleeping.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "waited {limit:?} for {what} in vain"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
