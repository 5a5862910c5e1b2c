//! The command line refuses bad input with one clear line and a non-zero exit code.

mod common;

fn aelabel(args: &[&str]) -> (i32, String, String) {
    let mut command = common::clean_command();
    command.args(args).env(
        "AELABEL_HOME",
        std::env::temp_dir().join("aelabel-cli-test"),
    );
    common::output_within(command)
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

/// A small gray PNG at `path` (parent folders created).
fn png(path: &std::path::Path, shade: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::GrayImage::from_pixel(8, 8, image::Luma([shade]))
        .save(path)
        .unwrap();
}

#[test]
fn image_folder_mistakes_are_one_line_naming_the_file_or_row() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let arg = |p: &std::path::Path| p.to_str().unwrap().to_string();

    // One class folder: nothing to tell apart.
    let one = root.join("one");
    for i in 0..3 {
        png(&one.join("cat").join(format!("{i}.png")), 10 * i);
    }
    png(&one.join("unlabelled/u.png"), 99);
    assert_one_line_error(&["pipeline", "--data", &arg(&one)], "`cat`");
    assert_one_line_error(&["pipeline", "--data", &arg(&one)], "at least two classes");

    // A labels CSV naming a class that classes.txt does not list.
    let flat = root.join("flat");
    for i in 0..4 {
        png(&flat.join(format!("{i}.png")), 40 * i);
    }
    std::fs::write(flat.join("classes.txt"), "cat\ndog\n").unwrap();
    let csv = root.join("labels.csv");
    std::fs::write(&csv, "path,class\n0.png,cat\n1.png,dog\n2.png,cow\n").unwrap();
    let args = [
        "pipeline",
        "--data",
        &arg(&flat),
        "--labels-file",
        &arg(&csv),
    ];
    assert_one_line_error(&args, "row 4");
    assert_one_line_error(&args, "cow");

    // A path that does not exist.
    let missing = root.join("no-such-folder");
    assert_one_line_error(&["pipeline", "--data", &arg(&missing)], "no-such-folder");

    // An undecodable image under --strict names the file.
    let strict = root.join("strict");
    for (class, shade) in [("cat", 0), ("dog", 200)] {
        for i in 0..3 {
            png(&strict.join(class).join(format!("{i}.png")), shade + i);
        }
    }
    std::fs::write(
        strict.join("dog/broken.png"),
        b"\x89PNG\r\n\x1a\nnot really",
    )
    .unwrap();
    assert_one_line_error(
        &["pipeline", "--strict", "--data", &arg(&strict)],
        "broken.png",
    );
}

#[test]
fn errors_say_their_cause_once() {
    let (code, _, stderr) = aelabel(&[
        "serve",
        "--model",
        "/nonexistent/m.safetensors",
        "--no-http",
    ]);
    assert_ne!(code, 0);
    assert_eq!(stderr.matches("os error 2").count(), 1, "{stderr}");
    let dir = tempfile::tempdir().unwrap();
    png(&dir.path().join("a.png"), 1);
    let out = dir.path().join("l.csv");
    let (code, _, stderr) = aelabel(&[
        "label",
        "--server",
        "127.0.0.1:1",
        dir.path().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert_eq!(stderr.matches("tcp connect error").count(), 1, "{stderr}");
}
