//! The command line refuses bad input with one clear line and a non-zero exit code.

mod common;

use std::process::Command;

fn aelabel(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_aelabel"))
        .args(args)
        .env(
            "AELABEL_HOME",
            std::env::temp_dir().join("aelabel-cli-test"),
        )
        .output()
        .expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_one_line_error(args: &[&str], expected: &str) {
    let (code, _, stderr) = aelabel(args);
    assert_ne!(code, 0, "{args:?} should fail");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{args:?} should print one line, got:\n{stderr}"
    );
    assert!(
        lines[0].contains(expected),
        "{args:?}: `{}` lacks `{expected}`",
        lines[0]
    );
}

#[test]
fn unknown_flag_is_one_line() {
    assert_one_line_error(&["pipeline", "--bogus"], "--bogus");
}

#[test]
fn non_numeric_labels_is_one_line() {
    assert_one_line_error(&["pipeline", "--labels", "many"], "--labels");
}

#[test]
fn bad_layers_and_target_accuracy_are_refused() {
    assert_one_line_error(&["pipeline", "--layers", "784,0"], "positive layer width");
    assert_one_line_error(
        &["pipeline", "--target-accuracy", "1.5"],
        "strictly between 0 and 1",
    );
    assert_one_line_error(&["bench", "train", "--threads", "0"], "≥ 1");
    assert_one_line_error(&["pipeline", "--eval-limit", "0"], "≥ 1");
}

#[test]
fn missing_data_directory_says_how_to_install_it() {
    assert_one_line_error(
        &["pipeline", "--data", "/nonexistent/fashion"],
        "apt-get install -y dataset-fashion-mnist",
    );
}

#[test]
fn more_labels_than_the_pool_is_refused() {
    let data = common::data_dir();
    let data = data.to_str().unwrap();
    assert_one_line_error(
        &[
            "pipeline",
            "--data",
            data,
            "--train-limit",
            "500",
            "--labels",
            "600",
            "--quiet",
        ],
        "--labels 600 is larger than the 500 training images",
    );
}

#[test]
fn layers_must_start_with_the_image_size() {
    let data = common::data_dir();
    let data = data.to_str().unwrap();
    assert_one_line_error(
        &[
            "pipeline",
            "--data",
            data,
            "--train-limit",
            "500",
            "--labels",
            "50",
            "--layers",
            "100,30",
            "--quiet",
        ],
        "--layers must start with the image size 784",
    );
}
