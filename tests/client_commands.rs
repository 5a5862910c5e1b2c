//! The client commands (`aelabel label`, `encode`, `bench --server`) and `aelabel serve`
//! itself, as a user runs them.

mod common;

use common::process::{serve_command, ServerProcess};
use common::server::{model_path, test_images, TestServer};
use std::path::Path;
use std::time::Duration;

async fn run(args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || common::aelabel_quiet(&args))
        .await
        .unwrap()
}

fn write_pngs(dir: &Path, pixels: &[u8]) {
    for (i, px) in pixels.chunks_exact(784).enumerate() {
        // Nested folders: the command must walk them.
        let sub = dir.join(format!("part{}", i % 2));
        std::fs::create_dir_all(&sub).unwrap();
        image::GrayImage::from_raw(28, 28, px.to_vec())
            .unwrap()
            .save(sub.join(format!("img{i:02}.png")))
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_encode_and_bench_commands_work_against_a_running_server() {
    let server = TestServer::default().await;
    let addr = server.addr.to_string();
    let dir = tempfile::tempdir().unwrap();
    let (pixels, labels) = test_images(300);

    // A folder of PNGs.
    let pngs = dir.path().join("pngs");
    write_pngs(&pngs, &pixels[..20 * 784]);
    let csv = dir.path().join("labels.csv");
    let (code, stdout, stderr) = run(&[
        "label",
        "--server",
        &addr,
        pngs.to_str().unwrap(),
        "--out",
        csv.to_str().unwrap(),
        "--batch",
        "7",
    ])
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("labelled 20 images"), "{stdout}");
    assert!(
        !stdout.contains("accuracy"),
        "no labels, no accuracy: {stdout}"
    );
    let rows: Vec<String> = std::fs::read_to_string(&csv)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(rows[0], "id,class_index,class,confidence,needs_review");
    assert_eq!(rows.len(), 21);
    assert!(
        rows[1].starts_with(&format!(
            "{}",
            pngs.join("part0").join("img00.png").display()
        )),
        "{}",
        rows[1]
    );

    // An IDX file with its labels beside it: JSON lines and an accuracy.
    let idx = dir.path().join("t-images-idx3-ubyte.gz");
    common::write(&idx, &common::idx_images(300, 28, 28, &pixels));
    common::write(
        &dir.path().join("t-labels-idx1-ubyte.gz"),
        &common::idx_labels(&labels),
    );
    let jsonl = dir.path().join("labels.jsonl");
    let (code, stdout, stderr) = run(&[
        "label",
        "--server",
        &addr,
        idx.to_str().unwrap(),
        "--out",
        jsonl.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("labelled 300 images") && stdout.contains("accuracy"),
        "{stdout}"
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 300);
    assert_eq!(lines[5]["id"], format!("{}#5", idx.display()));
    let correct = lines
        .iter()
        .zip(&labels)
        .filter(|(l, &t)| l["class_index"] == u64::from(t))
        .count();
    assert!(
        stdout.contains(&format!("accuracy {:.2} %", 100.0 * correct as f64 / 300.0)),
        "{stdout}"
    );

    // Embeddings as .npy: header, then 300 × 30 little-endian floats.
    let npy = dir.path().join("e.npy");
    let (code, stdout, stderr) = run(&[
        "encode",
        "--server",
        &addr,
        idx.to_str().unwrap(),
        "--out",
        npy.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("encoded 300 images into 30-d embeddings"),
        "{stdout}"
    );
    let bytes = std::fs::read(&npy).unwrap();
    assert!(bytes.starts_with(b"\x93NUMPY\x01\x00"));
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + header_len) % 64, 0);
    assert!(String::from_utf8_lossy(&bytes[10..10 + header_len]).contains("'shape': (300, 30)"));
    assert_eq!(bytes.len(), 10 + header_len + 300 * 30 * 4);
    let csv = dir.path().join("e.csv");
    let (code, _, stderr) = run(&[
        "encode",
        "--server",
        &addr,
        pngs.to_str().unwrap(),
        "--out",
        csv.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(std::fs::read_to_string(&csv).unwrap().lines().count(), 21);

    // The load generator, as JSON.
    let (code, stdout, stderr) = run(&[
        "bench",
        "--server",
        &addr,
        "--rpc",
        "label",
        "--batch",
        "8",
        "--concurrency",
        "4",
        "--duration",
        "0.5",
        "--json",
    ])
    .await;
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(report["requests"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["errors"], serde_json::json!({}));
    assert!(
        report["latency"]["p99_ms"].as_f64().unwrap()
            >= report["latency"]["p50_ms"].as_f64().unwrap()
    );

    // Mistakes are one line each.
    for (args, expected) in [
        (vec!["bench", "--duration", "1"], "bench needs --server URL"),
        (
            vec![
                "label",
                "--server",
                &addr,
                idx.to_str().unwrap(),
                "--out",
                "x.txt",
            ],
            "use .csv or .jsonl",
        ),
        (
            vec![
                "label",
                "--server",
                "127.0.0.1:1",
                idx.to_str().unwrap(),
                "--out",
                "x.csv",
            ],
            "cannot connect to http://127.0.0.1:1",
        ),
        (
            vec![
                "label",
                "--server",
                &addr,
                "/nonexistent/images",
                "--out",
                "x.csv",
            ],
            "cannot read /nonexistent/images",
        ),
    ] {
        let (code, _, stderr) = run(&args).await;
        assert_ne!(code, 0, "{args:?}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
        assert!(
            lines[0].contains(expected),
            "{args:?}: `{}` lacks `{expected}`",
            lines[0]
        );
    }
    // `bench train` still parses as the subcommand.
    let (code, _, stderr) = run(&["bench", "train", "--threads", "0"]).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("≥ 1"), "{stderr}");
    server.shutdown().await;
}

#[test]
fn serve_exits_zero_on_sigterm_after_logging_its_address() {
    // The guard kills the server if an assertion fails; every wait has a deadline.
    let mut server = ServerProcess::spawn(serve_command(model_path()));
    assert_ne!(server.addr.port(), 0, "the log names the bound gRPC port");
    assert!(server.http_addr.is_some(), "the log names the metrics port");
    server.terminate();
    let status = server.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    assert!(
        server.log.iter().any(|l| l.contains("shutting down")),
        "{:?}",
        server.log
    );
}
