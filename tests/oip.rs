//! The Open Inference Protocol's gRPC door on a real server: `ModelInfer` (typed and raw
//! tensors) answers what `Encode`, `Label` and `Reconstruct` answer; every bad request is
//! refused with its exact status and a message naming the tensor; metadata is declared alike
//! over gRPC and REST; readiness follows `grpc.health.v1`; the protocol shares the Labeller's
//! in-flight slots; reflection lists and describes the service. REST and Triton's own client:
//! `tests/oip_rest.rs`.

mod common;

use aelabel::wire as pb;
use aelabel::wire::inference as oip;
use common::oip::{
    assert_close, client, http, input, labeller_answers, le_f32, le_i64, raw_request,
    typed_request, version, wire_images,
};
use common::server::{config, test_images, TestServer};
use oip::model_infer_request::InferRequestedOutputTensor;
use serde_json::{json, Value};
use std::time::Duration;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_infer_answers_what_encode_label_and_reconstruct_answer() {
    let server = TestServer::default().await;
    let mut client = client(&server).await;
    let (pixels, _) = test_images(64);
    let (embeddings, predictions, reconstructions) = labeller_answers(&server, &pixels).await;
    let classes: Vec<i64> = predictions.iter().map(|p| p.class_index as i64).collect();
    let confidence: Vec<f32> = predictions.iter().map(|p| p.confidence).collect();
    let probabilities: Vec<f32> = predictions
        .iter()
        .flat_map(|p| p.probabilities.clone())
        .collect();

    // Raw in, raw out: the encoder.
    let answer = client
        .model_infer(raw_request("aelabel-encoder", &pixels))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.model_name, "aelabel-encoder");
    assert_eq!(answer.model_version, version());
    assert_eq!(answer.outputs.len(), 1);
    let out = &answer.outputs[0];
    assert_eq!(
        (
            out.name.as_str(),
            out.datatype.as_str(),
            out.shape.as_slice()
        ),
        ("embedding", "FP32", &[64, 30][..])
    );
    assert!(out.contents.is_none(), "raw requests get raw outputs");
    assert_close(
        &le_f32(&answer.raw_output_contents[0]),
        &embeddings,
        "embedding",
    );

    // Typed in, typed out: the classifier, every output in the declared order.
    let answer = client
        .model_infer(typed_request("aelabel-classifier", &pixels))
        .await
        .unwrap()
        .into_inner();
    assert!(
        answer.raw_output_contents.is_empty(),
        "typed requests get typed outputs"
    );
    let names: Vec<_> = answer.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["probabilities", "class_index", "confidence"]);
    let contents = |i: usize| answer.outputs[i].contents.clone().unwrap();
    assert_eq!(answer.outputs[0].shape, [64, 10]);
    assert_close(&contents(0).fp32_contents, &probabilities, "probabilities");
    assert_eq!(
        (
            answer.outputs[1].datatype.as_str(),
            answer.outputs[1].shape.as_slice()
        ),
        ("INT64", &[64][..])
    );
    assert_eq!(contents(1).int64_contents, classes);
    assert_close(&contents(2).fp32_contents, &confidence, "confidence");

    // Requested outputs select and order what comes back; UINT8 [N, 784] is accepted too.
    let mut request = raw_request("aelabel-classifier", &pixels);
    request.inputs[0].shape = vec![64, 784];
    request.outputs = ["confidence", "class_index"]
        .into_iter()
        .map(|name| InferRequestedOutputTensor {
            name: name.into(),
            parameters: Default::default(),
        })
        .collect();
    request.id = "call-7".into();
    let answer = client.model_infer(request).await.unwrap().into_inner();
    assert_eq!(answer.id, "call-7");
    let names: Vec<_> = answer.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["confidence", "class_index"]);
    assert_close(
        &le_f32(&answer.raw_output_contents[0]),
        &confidence,
        "confidence",
    );
    assert_eq!(le_i64(&answer.raw_output_contents[1]), classes);

    // The decoder: reconstructions of the images, FP32 [N, 784] in [0, 1].
    let mut request = raw_request("aelabel-decoder", &pixels);
    request.model_version = version();
    let answer = client.model_infer(request).await.unwrap().into_inner();
    assert_eq!(answer.outputs[0].name, "reconstruction");
    assert_eq!(answer.outputs[0].shape, [64, 784]);
    assert_close(
        &le_f32(&answer.raw_output_contents[0]),
        &reconstructions,
        "reconstruction",
    );
    server.shutdown().await;
}

/// One refused `ModelInfer`: a change to a good request, and the exact answer.
struct Refusal {
    what: &'static str,
    request: oip::ModelInferRequest,
    code: Code,
    message: String,
}

fn refusals(pixels: &[u8], served: &str) -> Vec<Refusal> {
    let good = || raw_request("aelabel-encoder", &pixels[..784]);
    let with = |what, change: &dyn Fn(&mut oip::ModelInferRequest), code, message: &str| {
        let mut request = good();
        change(&mut request);
        Refusal {
            what,
            request,
            code,
            message: message.to_string(),
        }
    };
    let typed = |datatype: &str, shape: &[i64], contents: oip::InferTensorContents| {
        let mut images = input(datatype, shape);
        images.contents = Some(contents);
        images
    };
    let invalid = Code::InvalidArgument;
    vec![
        with("unknown model", &|r| r.model_name = "nope".into(), Code::NotFound,
            "model `nope` is not served here; the models are aelabel-encoder, aelabel-classifier and aelabel-decoder"),
        with("unknown version", &|r| r.model_version = "v0".into(), Code::NotFound,
            &format!("model aelabel-encoder has no version `v0` here; this server serves version `{served}` (leave the version empty for it)")),
        with("wrong datatype", &|r| r.inputs[0].datatype = "INT32".into(), invalid,
            "images: datatype INT32 is not accepted; send UINT8 [N, 28, 28] or [N, 784], or FP32 [N, 784] in [0, 1]"),
        with("wrong shape", &|r| r.inputs[0].shape = vec![1, 27, 28], invalid,
            "images: shape [1, 27, 28] is not [N, 28, 28] or [N, 784] for UINT8 images of this model (28×28)"),
        with("FP32 as [N, H, W]", &|r| r.inputs[0].datatype = "FP32".into(), invalid,
            "images: shape [1, 28, 28] is not [N, 784] for FP32 images of this model (28×28)"),
        with("short raw contents", &|r| r.raw_input_contents[0] = vec![0; 783].into(), invalid,
            "images: the raw contents hold 783 bytes but UINT8 shape [1, 28, 28] needs 784"),
        with("FP32 raw contents of UINT8 length", &|r| {
            r.inputs[0].datatype = "FP32".into();
            r.inputs[0].shape = vec![1, 784];
        }, invalid, "images: the raw contents hold 784 bytes but FP32 shape [1, 784] needs 3136"),
        with("batch over --max-batch", &|r| {
            r.inputs[0].shape = vec![513, 784];
            r.raw_input_contents[0] = vec![0; 513 * 784].into();
        }, invalid, "images: a batch of 513 images is more than this server's --max-batch of 512; split the request"),
        with("empty batch", &|r| {
            r.inputs[0].shape = vec![0, 784];
            r.raw_input_contents[0] = Vec::new().into();
        }, invalid, "images: the batch is empty; send at least one image"),
        with("unknown input", &|r| r.inputs[0].name = "pixels".into(), invalid,
            "inputs[0]: unknown input `pixels`; model aelabel-encoder takes one input `images`"),
        with("no input", &|r| {
            r.inputs.clear();
            r.raw_input_contents.clear();
        }, invalid, "inputs: the request has no input; model aelabel-encoder takes one input `images`"),
        with("a second input", &|r| {
            let mut extra = input("UINT8", &[1, 784]);
            extra.name = "extra".into();
            r.inputs.push(extra);
            r.raw_input_contents.push(vec![0; 784].into());
        }, invalid, "inputs[1]: unexpected input `extra`; model aelabel-encoder takes one input `images`"),
        with("unknown output", &|r| {
            r.model_name = "aelabel-classifier".into();
            r.outputs.push(InferRequestedOutputTensor { name: "logits".into(), parameters: Default::default() });
        }, invalid, "outputs[0]: model aelabel-classifier has no output `logits`; its outputs are probabilities, class_index, confidence"),
        with("raw contents for no input", &|r| r.raw_input_contents.push(vec![0].into()), invalid,
            "raw_input_contents: 2 entries for 1 inputs; send one per input, in the order of inputs"),
        with("typed and raw contents", &|r| {
            r.inputs[0].contents = Some(oip::InferTensorContents { uint_contents: vec![0; 784], ..Default::default() });
        }, invalid, "images: both contents and raw_input_contents are set; send one of them"),
        with("typed UINT8 over 255", &|r| {
            r.raw_input_contents.clear();
            let mut values = vec![0; 784];
            values[3] = 256;
            r.inputs[0] = typed("UINT8", &[1, 784], oip::InferTensorContents { uint_contents: values, ..Default::default() });
        }, invalid, "images: element 3 is 256, not a UINT8 in 0..=255"),
        with("typed FP32 outside [0, 1]", &|r| {
            r.raw_input_contents.clear();
            let mut values = vec![0.5; 784];
            values[0] = 1.5;
            r.inputs[0] = typed("FP32", &[1, 784], oip::InferTensorContents { fp32_contents: values, ..Default::default() });
        }, invalid, "images: element 0 is 1.5, outside [0, 1]; FP32 pixels are intensities from 0 to 1"),
        with("typed contents one short", &|r| {
            r.raw_input_contents.clear();
            r.inputs[0] = typed("UINT8", &[1, 784], oip::InferTensorContents { uint_contents: vec![0; 783], ..Default::default() });
        }, invalid, "images: the contents hold 783 elements but UINT8 shape [1, 784] needs 784"),
        with("typed contents of another datatype", &|r| {
            r.raw_input_contents.clear();
            r.inputs[0] = typed("FP32", &[1, 784], oip::InferTensorContents { uint_contents: vec![0; 784], ..Default::default() });
        }, invalid, "images: the contents are not of datatype FP32; fill fp32_contents (or send raw contents)"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_is_refused_with_its_status_naming_the_tensor() {
    let server = TestServer::default().await;
    let mut client = client(&server).await;
    let (pixels, _) = test_images(1);
    let table = refusals(&pixels, &version());
    assert_eq!(table.len(), 19);
    for row in table {
        let status = client.model_infer(row.request).await.expect_err(row.what);
        assert_eq!(
            (status.code(), status.message()),
            (row.code, row.message.as_str()),
            "{}",
            row.what
        );
    }
    // Metadata and readiness refuse unknown models and versions the same way.
    let status = client
        .model_metadata(oip::ModelMetadataRequest {
            name: "nope".into(),
            version: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = client
        .model_ready(oip::ModelReadyRequest {
            name: "aelabel-decoder".into(),
            version: "v0".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status
        .message()
        .contains(&format!("serves version `{}`", version())));
    // Refusals cost nothing lasting: a good request still works on the same connection.
    let answer = client
        .model_infer(raw_request("aelabel-encoder", &pixels))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.outputs[0].shape, [1, 30]);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_metadata_declares_every_tensor_over_grpc_and_rest() {
    let server = TestServer::default().await;
    let mut client = client(&server).await;
    let served = version();
    let images = json!([{ "name": "images", "datatype": "UINT8", "shape": [-1, 28, 28] }]);
    let want = [
        (
            "aelabel-encoder",
            json!([{ "name": "embedding", "datatype": "FP32", "shape": [-1, 30] }]),
        ),
        (
            "aelabel-classifier",
            json!([
                { "name": "probabilities", "datatype": "FP32", "shape": [-1, 10] },
                { "name": "class_index", "datatype": "INT64", "shape": [-1] },
                { "name": "confidence", "datatype": "FP32", "shape": [-1] },
            ]),
        ),
        (
            "aelabel-decoder",
            json!([{ "name": "reconstruction", "datatype": "FP32", "shape": [-1, 784] }]),
        ),
    ];
    for (name, outputs) in want {
        let want = json!({
            "name": name, "versions": [served], "platform": "aelabel",
            "inputs": images, "outputs": outputs,
        });
        let grpc = client
            .model_metadata(oip::ModelMetadataRequest {
                name: name.into(),
                version: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let tensors = |t: &[oip::model_metadata_response::TensorMetadata]| {
            t.iter()
                .map(|t| json!({ "name": t.name, "datatype": t.datatype, "shape": t.shape }))
                .collect::<Vec<_>>()
        };
        let grpc = json!({
            "name": grpc.name, "versions": grpc.versions, "platform": grpc.platform,
            "inputs": tensors(&grpc.inputs), "outputs": tensors(&grpc.outputs),
        });
        assert_eq!(grpc, want, "{name} over gRPC");
        for path in [
            format!("/v2/models/{name}"),
            format!("/v2/models/{name}/versions/{served}"),
        ] {
            let (status, _, body) = http(server.http_addr, "GET", &path, &[], b"").await;
            assert_eq!(status, 200, "{path}");
            assert_eq!(
                serde_json::from_slice::<Value>(&body).unwrap(),
                want,
                "{path}"
            );
        }
    }
    let metadata = client
        .server_metadata(oip::ServerMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(metadata.name, "aelabel");
    assert_eq!(metadata.extensions, ["binary_tensor_data"]);
    let (status, _, body) = http(server.http_addr, "GET", "/v2", &[], b"").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["name"],
        "aelabel"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_labeller_health_status() {
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let server = TestServer::start(config(), false).await;
    let mut client = client(&server).await;
    let mut health = HealthClient::new(server.channel().await);
    let labeller = || HealthCheckRequest {
        service: aelabel::service::LABELLER_HEALTH_NAME.into(),
    };
    let model = || oip::ModelReadyRequest {
        name: "aelabel-classifier".into(),
        version: String::new(),
    };
    // Before warm-up: live, not ready, as grpc.health.v1 says NOT_SERVING.
    assert_eq!(
        health.check(labeller()).await.unwrap().into_inner().status,
        2
    );
    assert!(
        client
            .server_live(oip::ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    assert!(
        !client
            .server_ready(oip::ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert!(
        !client
            .model_ready(model())
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let addr = server.http_addr;
    assert_eq!(http(addr, "GET", "/v2/health/live", &[], b"").await.0, 200);
    assert_eq!(http(addr, "GET", "/v2/health/ready", &[], b"").await.0, 503);
    assert_eq!(
        http(addr, "GET", "/v2/models/aelabel-classifier/ready", &[], b"")
            .await
            .0,
        503
    );

    server.warm_up().await;
    assert_eq!(
        health.check(labeller()).await.unwrap().into_inner().status,
        1
    );
    assert!(
        client
            .server_ready(oip::ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert!(
        client
            .model_ready(model())
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert_eq!(http(addr, "GET", "/v2/health/ready", &[], b"").await.0, 200);
    let path = format!("/v2/models/aelabel-encoder/versions/{}/ready", version());
    assert_eq!(http(addr, "GET", &path, &[], b"").await.0, 200);
    assert_eq!(
        http(addr, "GET", "/v2/models/nope/ready", &[], b"").await.0,
        404
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_infer_takes_the_labellers_in_flight_slots() {
    let mut cfg = config();
    // One slot, and a lone image that waits in the batcher for a second one: the Label call
    // holds the slot until the test lets it go (the queue delay is only a safety net).
    cfg.max_in_flight = 1;
    cfg.engine.max_batch = 2;
    cfg.engine.max_queue_delay = Duration::from_secs(600);
    let server = TestServer::start(cfg, true).await;
    let (pixels, _) = test_images(1);
    let mut labeller = server.client().await;
    let images = wire_images(&pixels);
    let hold = tokio::spawn(async move {
        labeller
            .label(pb::LabelRequest {
                images,
                review_threshold: None,
            })
            .await
    });
    let metrics = server.http_addr;
    common::eventually(
        Duration::from_secs(20),
        "the Label call in flight",
        || async move {
            let scrape = common::metrics::scrape(metrics).await;
            (scrape.value("aelabel_in_flight_requests", &[]) == 1.0).then_some(())
        },
    )
    .await;
    let status = client(&server)
        .await
        .model_infer(raw_request("aelabel-encoder", &pixels))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (
            Code::ResourceExhausted,
            "the server is busy: 1 requests are in flight; retry with back-off"
        )
    );
    let body = json!({ "inputs": [{ "name": "images", "datatype": "UINT8", "shape": [1, 784],
                                     "data": pixels }] });
    let (status, _, answer) = http(
        server.http_addr,
        "POST",
        "/v2/models/aelabel-encoder/infer",
        &[],
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 429, "{}", String::from_utf8_lossy(&answer));
    // The holder gives up: its slot comes back, and a full batch is answered at once.
    hold.abort();
    common::eventually(
        Duration::from_secs(20),
        "the slot given back",
        || async move {
            let scrape = common::metrics::scrape(metrics).await;
            (scrape.value("aelabel_in_flight_requests", &[]) == 0.0).then_some(())
        },
    )
    .await;
    let (two, _) = test_images(2);
    let answer = client(&server)
        .await
        .model_infer(raw_request("aelabel-encoder", &two))
        .await
        .expect("ModelInfer is answered once the slot is back")
        .into_inner();
    assert_eq!(answer.outputs[0].shape, [2, 30]);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_and_describes_the_inference_service() {
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let server = TestServer::default().await;
    let mut client = ServerReflectionClient::new(server.channel().await);
    let requests = [
        MessageRequest::ListServices(String::new()),
        MessageRequest::FileContainingSymbol("inference.GRPCInferenceService".into()),
    ]
    .map(|message| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(message),
    });
    let mut stream = client
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        stream.message().await.unwrap().unwrap().message_response
    else {
        panic!("no service list")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for name in ["inference.GRPCInferenceService", "aelabel.v1.Labeller"] {
        assert!(
            names.iter().any(|n| n == name),
            "{name} missing from {names:?}"
        );
    }
    let Some(MessageResponse::FileDescriptorResponse(files)) =
        stream.message().await.unwrap().unwrap().message_response
    else {
        panic!("no descriptor")
    };
    use prost::Message;
    let file =
        prost_types::FileDescriptorProto::decode(&files.file_descriptor_proto[0][..]).unwrap();
    assert_eq!(file.package(), "inference");
    let methods: Vec<_> = file.service[0].method.iter().map(|m| m.name()).collect();
    assert_eq!(
        methods,
        [
            "ServerLive",
            "ServerReady",
            "ModelReady",
            "ServerMetadata",
            "ModelMetadata",
            "ModelInfer"
        ]
    );
    server.shutdown().await;
}
