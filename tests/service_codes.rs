//! Errors tonic raises before a handler runs get gRPC's conventional codes: an oversized
//! message is RESOURCE_EXHAUSTED, bytes that are not a valid request are INVALID_ARGUMENT.

mod common;

use aelabel::wire as pb;
use common::server::{raw_image, test_images, TestServer};
use tonic::Code;

/// The wire shape of `LabelRequest`, with the image id as raw bytes so a test can send a
/// non-UTF-8 id that the real types cannot express.
#[derive(Clone, PartialEq, prost::Message)]
struct LooseLabelRequest {
    #[prost(message, repeated, tag = "1")]
    images: Vec<LooseImage>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct LooseImage {
    #[prost(bytes = "vec", tag = "1")]
    id: Vec<u8>,
    #[prost(message, optional, tag = "2")]
    raw: Option<pb::RawImage>,
}

async fn send_loose(server: &TestServer, request: LooseLabelRequest) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/aelabel.v1.Labeller/Label");
    grpc.unary::<_, pb::LabelResponse, _>(
        tonic::Request::new(request),
        path,
        tonic_prost::ProstCodec::default(),
    )
    .await
    .expect_err("the server refuses it")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_undecodable_requests_get_conventional_codes() {
    let server = TestServer::default().await;
    let mut client = server.client().await;
    let (pixels, _) = test_images(1);

    // Over the test server's 4 MiB --max-message-bytes.
    let big = pb::LabelRequest {
        images: vec![raw_image("big", &pixels); 6_000],
        review_threshold: None,
    };
    let status = client.label(big).await.expect_err("too large");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("--max-message-bytes"),
        "{status:?}"
    );

    // The same message on LabelStream ends the stream with the same code.
    let oversized = pb::LabelRequest {
        images: vec![raw_image("big", &pixels); 6_000],
        review_threshold: None,
    };
    let result = client
        .label_stream(tokio_stream::iter(vec![oversized]))
        .await;
    let status = match result {
        Err(status) => status,
        Ok(response) => {
            let mut stream = response.into_inner();
            loop {
                match stream.message().await {
                    Err(status) => break status,
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("the stream ended without refusing the message"),
                }
            }
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    // A non-UTF-8 id: not a valid aelabel.v1 message.
    let raw = Some(pb::RawImage {
        width: 28,
        height: 28,
        pixels: pixels.clone().into(),
    });
    let status = send_loose(
        &server,
        LooseLabelRequest {
            images: vec![LooseImage {
                id: vec![0xff, 0xfe, b'x'],
                raw: raw.clone(),
            }],
        },
    )
    .await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("ids must be UTF-8"), "{status:?}");

    // The server keeps answering, and a well-formed request through the same path works.
    let ok = client
        .label(pb::LabelRequest {
            images: vec![raw_image("fine", &pixels)],
            review_threshold: None,
        })
        .await
        .unwrap();
    assert_eq!(ok.into_inner().predictions.len(), 1);
    server.shutdown().await;
}
