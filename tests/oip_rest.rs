//! The Open Inference Protocol's REST door (`/v2`) on a real server: JSON and binary tensors
//! answer what the Labeller answers, refusals answer `{"error": ...}` with their HTTP status;
//! and Triton's own Python client (`tritonclient[grpc,http]` from PyPI, in its own venv) works
//! against gRPC and REST unchanged on 1,000 test images.

mod common;

use common::oip::{assert_close, header, http, labeller_answers, le_f32, version};
use common::server::{config, test_images, TestServer};
use serde_json::{json, Value};

/// A binary-extension request header whose tensor bytes are missing.
const BINARY_HEADER: &str = r#"{"inputs":[{"name":"images","datatype":"UINT8","shape":[1,784],"parameters":{"binary_data_size":784}}]}"#;

/// The pinned Triton client the compatibility test installs.
const TRITONCLIENT: &str = "tritonclient[grpc,http]==2.73.0";

/// One refused REST call: what, path, headers, body, HTTP status and the `error` text.
type RestRefusal = (
    &'static str,
    String,
    Vec<(&'static str, String)>,
    Vec<u8>,
    u16,
    String,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_infer_answers_json_and_binary_tensors_like_the_labeller() {
    let server = TestServer::default().await;
    let (pixels, _) = test_images(8);
    let (embeddings, predictions, _) = labeller_answers(&server, &pixels).await;
    let addr = server.http_addr;

    // JSON tensors, `data` nested as [N, 28, 28]: JSON outputs.
    let nested: Vec<Vec<&[u8]>> = pixels
        .chunks_exact(784)
        .map(|image| image.chunks_exact(28).collect())
        .collect();
    let request = json!({
        "id": "rest-1",
        "inputs": [{ "name": "images", "datatype": "UINT8", "shape": [8, 28, 28], "data": nested }],
        "outputs": [{ "name": "class_index" }, { "name": "probabilities" }],
    });
    let (status, headers, body) = http(
        addr,
        "POST",
        "/v2/models/aelabel-classifier/infer",
        &[],
        request.to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["id"], "rest-1");
    assert_eq!(answer["model_version"], version());
    assert_eq!(answer["outputs"][0]["name"], "class_index");
    assert_eq!(answer["outputs"][0]["shape"], json!([8]));
    let classes: Vec<u32> = serde_json::from_value(answer["outputs"][0]["data"].clone()).unwrap();
    let want: Vec<u32> = predictions.iter().map(|p| p.class_index).collect();
    assert_eq!(classes, want);
    let probabilities: Vec<f32> =
        serde_json::from_value(answer["outputs"][1]["data"].clone()).unwrap();
    let want: Vec<f32> = predictions
        .iter()
        .flat_map(|p| p.probabilities.clone())
        .collect();
    assert_close(&probabilities, &want, "probabilities");

    // Triton's binary extension: raw FP32 input after the JSON, binary output asked for.
    let floats: Vec<u8> = pixels
        .iter()
        .flat_map(|&p| (f32::from(p) / 255.0).to_le_bytes())
        .collect();
    let header_json = json!({
        "inputs": [{ "name": "images", "datatype": "FP32", "shape": [8, 784],
                      "parameters": { "binary_data_size": floats.len() } }],
        "parameters": { "binary_data_output": true },
    })
    .to_string();
    let mut body = header_json.clone().into_bytes();
    body.extend_from_slice(&floats);
    let (status, headers, body) = http(
        addr,
        "POST",
        &format!("/v2/models/aelabel-encoder/versions/{}/infer", version()),
        &[(
            "Inference-Header-Content-Length",
            header_json.len().to_string(),
        )],
        &body,
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let json_length: usize = header(&headers, "inference-header-content-length")
        .expect("a binary answer names its JSON length")
        .parse()
        .unwrap();
    let answer: Value = serde_json::from_slice(&body[..json_length]).unwrap();
    assert_eq!(
        answer["outputs"][0],
        json!({ "name": "embedding", "datatype": "FP32", "shape": [8, 30],
                "parameters": { "binary_data_size": 8 * 30 * 4 } })
    );
    assert_close(&le_f32(&body[json_length..]), &embeddings, "embedding");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_refusals_answer_a_json_error_with_their_http_status() {
    let mut cfg = config();
    cfg.max_message_bytes = 1 << 20;
    cfg.engine.max_batch = 64;
    let server = TestServer::start(cfg, true).await;
    let addr = server.http_addr;
    let served = version();
    let image = |datatype: &str, shape: Value, data: Value| {
        json!({ "inputs": [{ "name": "images", "datatype": datatype, "shape": shape, "data": data }] })
            .to_string()
            .into_bytes()
    };
    let zeros = json!(vec![0; 784]);
    let rows: Vec<RestRefusal> = vec![
        ("unknown model", "/v2/models/nope/infer".into(), vec![], image("UINT8", json!([1, 784]), zeros.clone()), 404,
            "model `nope` is not served here; the models are aelabel-encoder, aelabel-classifier and aelabel-decoder".into()),
        ("unknown version", "/v2/models/aelabel-encoder/versions/v0/infer".into(), vec![], image("UINT8", json!([1, 784]), zeros.clone()), 404,
            format!("model aelabel-encoder has no version `v0` here; this server serves version `{served}` (leave the version empty for it)")),
        ("wrong shape", "/v2/models/aelabel-encoder/infer".into(), vec![], image("UINT8", json!([1, 783]), zeros.clone()), 400,
            "images: shape [1, 783] is not [N, 28, 28] or [N, 784] for UINT8 images of this model (28×28)".into()),
        ("short data", "/v2/models/aelabel-encoder/infer".into(), vec![], image("UINT8", json!([2, 784]), zeros.clone()), 400,
            "images: the contents hold 784 elements but UINT8 shape [2, 784] needs 1568".into()),
        ("data that is not a number", "/v2/models/aelabel-encoder/infer".into(), vec![], image("FP32", json!([1, 784]), json!([[0.5], ["a"]])), 400,
            "request body: not an inference request: invalid type: string \"a\", expected numbers, flat or nested in arrays at line 1 column 30".into()),
        ("UINT8 data that is not an integer", "/v2/models/aelabel-encoder/infer".into(), vec![], image("UINT8", json!([1, 784]), json!([0, 1.5])), 400,
            "images: data element 1 is 1.5, not an unsigned integer".into()),
        ("not JSON", "/v2/models/aelabel-encoder/infer".into(), vec![], b"{".to_vec(), 400,
            "request body: not an inference request: EOF while parsing an object at line 1 column 1".into()),
        ("binary size past the body", "/v2/models/aelabel-encoder/infer".into(),
            vec![("Inference-Header-Content-Length", BINARY_HEADER.len().to_string())],
            BINARY_HEADER.as_bytes().to_vec(), 400,
            "images: binary_data_size 784 is more than the 0 bytes left after the JSON header".into()),
        ("a body over the limit", "/v2/models/aelabel-encoder/infer".into(), vec![], vec![b' '; (1 << 20) + 1], 413,
            "the request body is over the server's limit of 1048576 bytes (--max-message-bytes), or was cut off; send fewer images per request".into()),
        ("an unknown route", "/v2/model/aelabel-encoder".into(), vec![], Vec::new(), 404,
            "/v2/model/aelabel-encoder: no such route; the protocol's routes are /v2, /v2/health/{live,ready} and /v2/models/NAME[/versions/V][/ready|/infer]".into()),
        ("unknown model's metadata", "/v2/models/nope".into(), vec![], Vec::new(), 404,
            "model `nope` is not served here; the models are aelabel-encoder, aelabel-classifier and aelabel-decoder".into()),
    ];
    for (what, path, headers, body, want_status, want_error) in rows {
        let method = if path.ends_with("/infer") {
            "POST"
        } else {
            "GET"
        };
        let (status, response_headers, answer) = http(addr, method, &path, &headers, &body).await;
        assert_eq!(
            status,
            want_status,
            "{what}: {}",
            String::from_utf8_lossy(&answer)
        );
        assert_eq!(
            header(&response_headers, "content-type"),
            Some("application/json"),
            "{what}"
        );
        let error: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(error, json!({ "error": want_error }), "{what}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_grpc_and_http_agree_with_label_and_encode() {
    let venv = common::venv::python_venv("tritonclient-2.73.0", &[TRITONCLIENT]);
    let server = TestServer::default().await;
    let (pixels, _) = test_images(1000);
    let mut expected_classes = Vec::new();
    let mut expected_embeddings = Vec::new();
    // The Labeller's answers, in batches under --max-batch.
    for chunk in pixels.chunks(250 * 784) {
        let (embeddings, predictions, _) = labeller_answers(&server, chunk).await;
        expected_embeddings.extend(embeddings);
        expected_classes.extend(predictions.iter().map(|p| p.class_index));
    }
    let dir = tempfile::tempdir().unwrap();
    let expected = dir.path().join("expected.json");
    std::fs::write(
        &expected,
        json!({
            "classes": expected_classes,
            "embeddings": expected_embeddings,
            "version": version(),
            "max_batch": 512,
        })
        .to_string(),
    )
    .unwrap();
    let mut script = std::process::Command::new(venv.join("bin/python"));
    script
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/oip_client.py"
        ))
        .arg(format!("127.0.0.1:{}", server.addr.port()))
        .arg(format!("127.0.0.1:{}", server.http_addr.port()))
        .arg(common::data_dir().join("t10k-images-idx3-ubyte.gz"))
        .arg(&expected);
    let (code, out, err) = tokio::task::spawn_blocking(move || common::output_within(script))
        .await
        .unwrap();
    assert_eq!(code, 0, "the tritonclient script failed:\n{out}\n{err}");
    println!("{out}");
    for transport in ["grpc", "http"] {
        assert!(
            out.contains(&format!("{transport}: 1000 classes equal Label's")),
            "{out}"
        );
    }
    server.shutdown().await;
}
