//! Helpers of the Open Inference Protocol tests (`tests/oip.rs`, `tests/oip_rest.rs`):
//! requests, the Labeller's answers to compare with, and a minimal HTTP/1.0 client.

use super::server::{model_path, TestServer};
use aelabel::client::Connection;
use aelabel::wire as pb;
use aelabel::wire::inference as oip;
use oip::grpc_inference_service_client::GrpcInferenceServiceClient;
use oip::model_infer_request::InferInputTensor;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The served test model's version.
pub fn version() -> String {
    aelabel::model::Model::load(model_path())
        .unwrap()
        .meta
        .version
}

/// An `inference` client on a fresh connection.
pub async fn client(server: &TestServer) -> GrpcInferenceServiceClient<Connection> {
    GrpcInferenceServiceClient::new(server.channel().await)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

/// An `images` input tensor header without contents.
pub fn input(datatype: &str, shape: &[i64]) -> InferInputTensor {
    InferInputTensor {
        name: "images".into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
        parameters: Default::default(),
        contents: None,
    }
}

/// `n` images as one raw UINT8 [n, 28, 28] tensor for `model`.
pub fn raw_request(model: &str, pixels: &[u8]) -> oip::ModelInferRequest {
    let n = (pixels.len() / 784) as i64;
    oip::ModelInferRequest {
        model_name: model.into(),
        inputs: vec![input("UINT8", &[n, 28, 28])],
        raw_input_contents: vec![pixels.to_vec().into()],
        ..Default::default()
    }
}

/// `n` images as one typed FP32 [n, 784] tensor for `model`.
pub fn typed_request(model: &str, pixels: &[u8]) -> oip::ModelInferRequest {
    let n = (pixels.len() / 784) as i64;
    let mut images = input("FP32", &[n, 784]);
    images.contents = Some(oip::InferTensorContents {
        fp32_contents: pixels.iter().map(|&p| f32::from(p) / 255.0).collect(),
        ..Default::default()
    });
    oip::ModelInferRequest {
        model_name: model.into(),
        inputs: vec![images],
        ..Default::default()
    }
}

/// `pixels` as `aelabel.v1` raw 28×28 images.
pub fn wire_images(pixels: &[u8]) -> Vec<pb::Image> {
    pixels
        .chunks_exact(784)
        .map(|px| super::server::raw_image("", px))
        .collect()
}

/// Little-endian FP32 bytes as floats.
pub fn le_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Little-endian INT64 bytes as integers.
pub fn le_i64(bytes: &[u8]) -> Vec<i64> {
    bytes
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Asserts `got` equals `want` within 1e-6 each.
pub fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-6, "{what}[{i}]: {g} vs {w}");
    }
}

/// What the `aelabel.v1` Labeller answers for `pixels`: embeddings, predictions and
/// reconstruction values.
pub async fn labeller_answers(
    server: &TestServer,
    pixels: &[u8],
) -> (Vec<f32>, Vec<pb::Prediction>, Vec<f32>) {
    let mut labeller = server.client().await;
    let encoded = labeller
        .encode(pb::EncodeRequest {
            images: wire_images(pixels),
        })
        .await
        .unwrap()
        .into_inner();
    let labelled = labeller
        .label(pb::LabelRequest {
            images: wire_images(pixels),
            review_threshold: None,
        })
        .await
        .unwrap()
        .into_inner();
    let reconstructed = labeller
        .reconstruct(pb::ReconstructRequest {
            images: wire_images(pixels),
            include_values: true,
        })
        .await
        .unwrap()
        .into_inner();
    (
        encoded
            .embeddings
            .into_iter()
            .flat_map(|e| e.values)
            .collect(),
        labelled.predictions,
        reconstructed
            .reconstructions
            .into_iter()
            .flat_map(|r| r.values)
            .collect(),
    )
}

/// One HTTP/1.0 exchange: status, lower-case headers and body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.0\r\nHost: test\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    // A refused body may be answered before it is all sent; the answer is what counts.
    let _ = tcp.write_all(body).await;
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response");
    let head = String::from_utf8(response[..split].to_vec()).unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, response[split + 4..].to_vec())
}

/// The value of header `name` (lower case).
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}
