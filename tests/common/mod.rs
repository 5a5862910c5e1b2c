//! Shared set-up for the integration tests.
#![allow(dead_code)]

pub mod db;
pub mod proxy;
pub mod server;

use aelabel::data::DataOptions;
use aelabel::pipeline::{PipelineConfig, Preset};
use std::io::Write;
use std::path::{Path, PathBuf};

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

/// Runs the `aelabel` binary quietly with `args`; returns exit code, stdout and stderr.
pub fn aelabel_quiet<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (i32, String, String) {
    let out = clean_command()
        .args(args)
        .arg("--quiet")
        .output()
        .expect("the binary runs");
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
