//! The gRPC server, end to end: a real server on 127.0.0.1:0 and real tonic clients.

mod common;

use aelabel::model::{encoder_depth, top_class, Model};
use aelabel::pipeline::probabilities;
use aelabel::wire as pb;
use common::server::{config, model_path, raw_image, test_images, TestServer};
use tokio_stream::StreamExt;
use tonic::Code;

fn model() -> Model {
    Model::load(model_path()).unwrap()
}

fn as_floats(pixels: &[u8]) -> Vec<f32> {
    pixels.iter().map(|&p| f32::from(p) / 255.0).collect()
}

fn wire_images(pixels: &[u8]) -> Vec<pb::Image> {
    pixels
        .chunks_exact(784)
        .enumerate()
        .map(|(i, px)| raw_image(&format!("img-{i}"), px))
        .collect()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    // The server's packed kernel sums in another order than the training code's products.
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-5 * w.abs().max(1.0),
            "{what}[{i}]: server {g} vs in-process {w}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_returns_what_the_in_process_model_computes() {
    let model = model();
    let server = TestServer::default().await;
    let mut client = server.client().await;
    let (pixels, _) = test_images(64);
    let x = as_floats(&pixels);

    let encoded = client
        .encode(pb::EncodeRequest {
            images: wire_images(&pixels),
        })
        .await
        .unwrap()
        .into_inner();
    let want = model
        .autoencoder
        .forward_range(&x, 64, 0..encoder_depth(&model.autoencoder), 1);
    assert_eq!(encoded.embedding_size, 30);
    assert_eq!(encoded.model_version, model.meta.version);
    for (i, e) in encoded.embeddings.iter().enumerate() {
        assert_eq!(e.id, format!("img-{i}"));
        assert_close(&e.values, &want[i * 30..(i + 1) * 30], "embedding");
    }

    let rebuilt = client
        .reconstruct(pb::ReconstructRequest {
            images: wire_images(&pixels),
            include_values: true,
        })
        .await
        .unwrap()
        .into_inner();
    let want = model.autoencoder.forward(&x, 64, 1);
    assert_eq!((rebuilt.width, rebuilt.height), (28, 28));
    for (i, r) in rebuilt.reconstructions.iter().enumerate() {
        let row = &want[i * 784..(i + 1) * 784];
        assert_close(&r.values, row, "reconstruction");
        let px: Vec<u8> = row
            .iter()
            .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
            .collect();
        assert_eq!(r.pixels, px);
    }

    let labelled = client
        .label(pb::LabelRequest {
            images: wire_images(&pixels),
            review_threshold: Some(0.8),
        })
        .await
        .unwrap()
        .into_inner();
    let probs = probabilities(&model.classifier, &x, 1);
    assert_eq!(labelled.review_threshold, 0.8);
    for (i, p) in labelled.predictions.iter().enumerate() {
        let row = &probs[i * 10..(i + 1) * 10];
        assert_close(&p.probabilities, row, "probabilities");
        let (best, confidence) = top_class(row);
        assert_eq!(p.class_index as usize, best);
        assert_eq!(p.class_name, model.meta.class_names[best]);
        assert_eq!(p.confidence, p.probabilities[best]);
        assert_close(&[p.confidence], &[confidence], "confidence");
        assert_eq!(p.needs_review, p.confidence < 0.8);
    }

    let info = client
        .get_model_info(pb::GetModelInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.version, model.meta.version);
    assert_eq!(
        (info.input_width, info.input_height, info.embedding_size),
        (28, 28, 30)
    );
    assert_eq!(info.class_names, model.meta.class_names);
    assert_eq!(info.auto_accept_threshold, model.meta.auto_accept_threshold);
    assert!(
        info.training_metrics.contains_key("test_accuracy"),
        "{:?}",
        info.training_metrics
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_accuracy_over_the_test_slice_equals_in_process_accuracy() {
    let model = model();
    let server = TestServer::default().await;
    let mut client = server.client().await;
    let (pixels, labels) = test_images(1000);
    let probs = probabilities(&model.classifier, &as_floats(&pixels), 1);
    let local: usize = probs
        .chunks_exact(10)
        .zip(&labels)
        .filter(|(p, &l)| top_class(p).0 == usize::from(l))
        .count();
    let mut remote = 0;
    for (chunk, truth) in pixels.chunks(250 * 784).zip(labels.chunks(250)) {
        let response = client
            .label(pb::LabelRequest {
                images: wire_images(chunk),
                review_threshold: None,
            })
            .await
            .unwrap()
            .into_inner();
        remote += response
            .predictions
            .iter()
            .zip(truth)
            .filter(|(p, &l)| p.class_index == u32::from(l))
            .count();
    }
    assert_eq!(remote, local);
    server.shutdown().await;
}

/// A small PNG whose header declares `width × height` and whose data is a few kilobytes of
/// deflated zeros: decoding it naively would allocate width × height bytes.
fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    use std::io::Write;
    fn chunk(png: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        let mut crc = flate2::Crc::new();
        crc.update(&body);
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        png.extend_from_slice(&body);
        png.extend_from_slice(&crc.sum().to_be_bytes());
    }
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    let mut zeros = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    zeros.write_all(&vec![0; 1 << 20]).unwrap();
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &zeros.finish().unwrap());
    chunk(&mut png, b"IEND", &[]);
    png
}

fn encoded(id: &str, bytes: Vec<u8>) -> pb::Image {
    pb::Image {
        id: id.into(),
        data: Some(pb::image::Data::Encoded(bytes.into())),
    }
}

/// A real 28×28 JPEG file.
fn real_jpeg() -> Vec<u8> {
    let image = image::GrayImage::from_fn(28, 28, |x, y| image::Luma([(x * 9 + y * 5) as u8]));
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&image)
        .unwrap();
    out
}

fn raw(width: u32, height: u32, pixels: Vec<u8>) -> pb::Image {
    pb::Image {
        id: String::new(),
        data: Some(pb::image::Data::Raw(pb::RawImage {
            width,
            height,
            pixels: pixels.into(),
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_is_refused_naming_field_and_index_and_the_server_keeps_working() {
    let server = TestServer::default().await;
    let mut client = server.client().await;
    let good = || raw(28, 28, vec![128; 784]);
    let cases: Vec<(&str, Vec<pb::Image>, &str)> = vec![
        ("empty batch", vec![], "images: the batch is empty"),
        (
            "over --max-batch",
            (0..513).map(|_| good()).collect(),
            "513 images is more than this server's --max-batch of 512",
        ),
        (
            "pixel count",
            vec![good(), good(), raw(28, 28, vec![0; 780])],
            "images[2].raw: image 2 has 780 pixel bytes but width × height = 28 × 28 = 784",
        ),
        (
            "zero width",
            vec![raw(0, 28, vec![])],
            "images[0].raw: image 0 has a zero dimension (0×28)",
        ),
        (
            "oversized",
            vec![good(), raw(2000, 1, vec![0; 2000])],
            "images[1].raw: image 1 is 2000×1, over the 1024-pixel side limit",
        ),
        (
            "not an image file",
            vec![good(), encoded("x", b"hello".to_vec())],
            "images[1].encoded: image 1 is not a PNG or JPEG file",
        ),
        (
            "undecodable PNG",
            vec![encoded("x", b"\x89PNG\r\n\x1a\nbroken".to_vec())],
            "images[0].encoded: image 0 cannot be decoded as PNG",
        ),
        (
            "truncated JPEG",
            vec![encoded("x", vec![0xff, 0xd8, 0xff, 0xe0, 0, 0x10])],
            "images[0].encoded: image 0 cannot be decoded as JPEG",
        ),
        (
            "JPEG cut in half",
            vec![good(), encoded("half", {
                let whole = real_jpeg();
                whole[..whole.len() / 2].to_vec()
            })],
            "images[1].encoded: image 1 cannot be decoded as JPEG: the file ends before its end-of-image marker (it is truncated)",
        ),
        (
            "JPEG whose header claims more than its data",
            vec![encoded("lying", {
                let mut lying = real_jpeg();
                let sof = lying.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
                lying[sof + 5..sof + 9].copy_from_slice(&[0x04, 0x00, 0x04, 0x00]);
                lying
            })],
            "images[0].encoded: image 0 cannot be decoded as JPEG: it holds",
        ),
        (
            "decompression bomb",
            vec![
                good(),
                good(),
                good(),
                encoded("bomb", png_declaring(100_000, 100_000)),
            ],
            "images[3].encoded: image 3 is 100000×100000, over the 1024-pixel side limit",
        ),
        (
            "no data",
            vec![pb::Image {
                id: "empty".into(),
                data: None,
            }],
            "images[0].data: image 0 has no data",
        ),
    ];
    for (what, images, message) in cases {
        for rpc in ["encode", "label", "reconstruct"] {
            let result = match rpc {
                "encode" => client
                    .encode(pb::EncodeRequest {
                        images: images.clone(),
                    })
                    .await
                    .map(|_| ()),
                "label" => client
                    .label(pb::LabelRequest {
                        images: images.clone(),
                        review_threshold: None,
                    })
                    .await
                    .map(|_| ()),
                _ => client
                    .reconstruct(pb::ReconstructRequest {
                        images: images.clone(),
                        include_values: false,
                    })
                    .await
                    .map(|_| ()),
            };
            let status = result.expect_err(what);
            assert_eq!(
                status.code(),
                Code::InvalidArgument,
                "{what} via {rpc}: {status:?}"
            );
            assert!(
                status.message().contains(message),
                "{what} via {rpc}: `{}` lacks `{message}`",
                status.message()
            );
        }
    }
    let status = client
        .label(pb::LabelRequest {
            images: vec![good()],
            review_threshold: Some(1.5),
        })
        .await
        .expect_err("threshold 1.5");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("review_threshold: 1.5 is not a probability"),
        "{}",
        status.message()
    );

    // A stream stops at its first bad message with the same status.
    let requests = vec![
        pb::LabelRequest {
            images: vec![good()],
            review_threshold: None,
        },
        pb::LabelRequest {
            images: vec![raw(28, 28, vec![1; 3])],
            review_threshold: None,
        },
    ];
    let mut stream = client
        .label_stream(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        stream.message().await.unwrap().unwrap().predictions.len(),
        1
    );
    let status = stream.message().await.expect_err("second message is bad");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("images[0].raw"),
        "{}",
        status.message()
    );

    // Still serving: raw images of another size and a real PNG are resized and answered.
    let (pixels, _) = test_images(1);
    let mut png = Vec::new();
    image::GrayImage::from_raw(28, 28, pixels.clone())
        .unwrap()
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let response = client
        .label(pb::LabelRequest {
            images: vec![
                good(),
                raw(56, 14, vec![200; 56 * 14]),
                encoded("png", png),
                raw_image("raw", &pixels),
            ],
            review_threshold: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.predictions.len(), 4);
    // The PNG of an image and its raw pixels are the same input.
    assert_eq!(
        response.predictions[2].probabilities,
        response.predictions[3].probabilities
    );
    assert_eq!(response.predictions[2].id, "png");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_goes_not_serving_then_serving_then_not_serving_at_shutdown() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let mut server = TestServer::start(config(), false).await;
    let mut health = HealthClient::new(server.channel().await);
    let ask = |service: &str| HealthCheckRequest {
        service: service.into(),
    };
    // The whole server ("") and the Labeller service report the same status.
    async fn assert_both_services(
        health: &mut HealthClient<aelabel::client::Connection>,
        want: ServingStatus,
        when: &str,
    ) {
        for service in ["", "aelabel.v1.Labeller"] {
            let request = HealthCheckRequest {
                service: service.into(),
            };
            let status = health.check(request).await.unwrap().into_inner().status;
            assert_eq!(status, want as i32, "{service:?} {when}");
        }
    }
    assert_both_services(&mut health, ServingStatus::NotServing, "before warm-up").await;
    let mut watch = health
        .watch(ask("aelabel.v1.Labeller"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status,
        ServingStatus::NotServing as i32
    );

    server.warm_up().await;
    assert_eq!(
        watch.message().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );
    assert_both_services(&mut health, ServingStatus::Serving, "after warm-up").await;

    server.begin_shutdown();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status,
        ServingStatus::NotServing as i32
    );
    drop(watch);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_turns_not_serving_through_the_server_when_the_engines_worker_dies() {
    use std::time::Duration;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let server = TestServer::default().await;
    let mut health = HealthClient::new(server.channel().await);
    let ask = |service: &str| HealthCheckRequest {
        service: service.into(),
    };
    let mut watch = health
        .watch(ask("aelabel.v1.Labeller"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );

    server.stop_engine_worker();
    // The server looks at its engine every registry poll (1 s for a model file).
    let next = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("health changed within 10 s of the worker's death")
        .unwrap()
        .expect("the watch goes on");
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    for service in ["", "aelabel.v1.Labeller"] {
        let status = health
            .check(ask(service))
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::NotServing as i32, "{service:?}");
    }
    // Calls are refused with the reason, not left waiting.
    let (pixels, _) = test_images(1);
    let refused = server
        .client()
        .await
        .label(pb::LabelRequest {
            images: wire_images(&pixels),
            review_threshold: None,
        })
        .await
        .unwrap_err();
    assert_eq!(
        (refused.code(), refused.message()),
        (Code::Unavailable, "the inference engine has stopped")
    );
    drop(watch);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_v1_and_v1alpha_list_the_services() {
    let server = TestServer::default().await;
    let want = ["aelabel.v1.Labeller", "grpc.health.v1.Health"];
    {
        use tonic_reflection::pb::v1::{
            server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
            ServerReflectionRequest,
        };
        let mut client = ServerReflectionClient::new(server.channel().await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) =
            stream.message().await.unwrap().unwrap().message_response
        else {
            panic!("no list")
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for name in want.iter().chain(&["grpc.reflection.v1.ServerReflection"]) {
            assert!(
                names.iter().any(|n| n == name),
                "v1 lacks {name}: {names:?}"
            );
        }
    }
    {
        use tonic_reflection::pb::v1alpha::{
            server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
            ServerReflectionRequest,
        };
        let mut client = ServerReflectionClient::new(server.channel().await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "aelabel.v1.Labeller".into(),
            )),
        };
        let mut stream = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::FileDescriptorResponse(files)) =
            stream.message().await.unwrap().unwrap().message_response
        else {
            panic!("no descriptor")
        };
        assert!(!files.file_descriptor_proto.is_empty());
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_and_a_long_stream_get_correct_ordered_results() {
    let model = model();
    let (pixels, _) = test_images(4000);
    let probs = probabilities(&model.classifier, &as_floats(&pixels), 1);
    let expected: Vec<u32> = probs
        .chunks_exact(10)
        .map(|p| top_class(p).0 as u32)
        .collect();
    let server = TestServer::default().await;

    // 16 clients, each sending 1- to 3-image requests over its own connection.
    let mut tasks = Vec::new();
    for c in 0..16usize {
        let mut client = server.client().await;
        let pixels = pixels.clone();
        let expected = expected.clone();
        tasks.push(tokio::spawn(async move {
            for r in 0..20usize {
                let start = (c * 20 + r) * 3 % 3990;
                let n = 1 + r % 3;
                let images: Vec<pb::Image> = (start..start + n)
                    .map(|i| raw_image(&i.to_string(), &pixels[i * 784..(i + 1) * 784]))
                    .collect();
                let response = client
                    .encode(pb::EncodeRequest {
                        images: images.clone(),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(response.embeddings.len(), n);
                let labels = client
                    .label(pb::LabelRequest {
                        images,
                        review_threshold: None,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                for (k, p) in labels.predictions.iter().enumerate() {
                    assert_eq!(p.id, (start + k).to_string());
                    assert_eq!(p.class_index, expected[start + k], "image {}", start + k);
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }

    // One stream of 4,000 images in 40 messages comes back complete and in order.
    let mut client = server.client().await;
    let requests: Vec<pb::LabelRequest> = (0..40)
        .map(|m| pb::LabelRequest {
            images: (m * 100..(m + 1) * 100)
                .map(|i| raw_image(&i.to_string(), &pixels[i * 784..(i + 1) * 784]))
                .collect(),
            review_threshold: None,
        })
        .collect();
    let mut stream = client
        .label_stream(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut seen = 0usize;
    while let Some(response) = stream.next().await {
        for p in response.unwrap().predictions {
            assert_eq!(p.id, seen.to_string());
            assert_eq!(p.class_index, expected[seen]);
            seen += 1;
        }
    }
    assert_eq!(seen, 4000);
    server.shutdown().await;
}
