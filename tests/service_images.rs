//! PNG and JPEG inputs give the same answers as raw pixels: real Fashion-MNIST test images
//! encoded in the test with the `image` crate as 8- and 16-bit gray, colour, larger than the
//! model's input, and JPEG, each sent beside the raw pixels the `image` crate itself makes of
//! that file (decoded, to 8-bit luma, triangle-resized), and beside the original image.

mod common;

use aelabel::wire as pb;
use common::server::{raw_image, test_images, TestServer};
use common::within;
use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, ImageBuffer, ImageFormat, Luma, Rgb, RgbImage};
use std::time::Duration;

/// Test images the variants are made of: the first ones whose top class leads the runner-up
/// by at least this much probability, so a lossy encoding cannot flip them.
const CLEAR_MARGIN: f32 = 0.5;
const IMAGES: usize = 8;

/// How a variant's answer must compare with the raw pixels `image` makes of its file.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Match {
    /// Bit-identical probabilities: the server and `image` do the same integer steps.
    Exact,
    /// Same class, probabilities within 0.02: colour becomes luma by fixed-point maths on
    /// the server and by floats in `image`, one level apart on a few colours.
    Close,
}

struct Variant {
    name: &'static str,
    file: Vec<u8>,
    matching: Match,
}

fn encode(image: DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    if format == ImageFormat::Jpeg {
        image
            .write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(
                &mut out, 95,
            ))
            .unwrap();
    } else {
        image
            .write_to(&mut std::io::Cursor::new(&mut out), format)
            .unwrap();
    }
    out
}

/// A colour image whose Rec. 709 luma stays close to `gray` (red up, green and blue down).
fn tinted(gray: &GrayImage) -> RgbImage {
    RgbImage::from_fn(gray.width(), gray.height(), |x, y| {
        let v = f32::from(gray.get_pixel(x, y)[0]);
        let channel = |scale: f32| (v * scale).round().min(255.0) as u8;
        Rgb([channel(1.25), channel(0.9375), channel(0.883)])
    })
}

/// Every encoded form of one 28×28 gray test image.
fn variants(gray: &GrayImage) -> Vec<Variant> {
    let wide = image::imageops::resize(gray, 84, 84, FilterType::Nearest);
    let sixteen = |image: &GrayImage| {
        ImageBuffer::<Luma<u16>, Vec<u16>>::from_fn(image.width(), image.height(), |x, y| {
            Luma([u16::from(image.get_pixel(x, y)[0]) * 257])
        })
    };
    let gray_rgb = RgbImage::from_fn(28, 28, |x, y| {
        let v = gray.get_pixel(x, y)[0];
        Rgb([v, v, v])
    });
    let png = ImageFormat::Png;
    let jpeg = ImageFormat::Jpeg;
    vec![
        Variant {
            name: "png-gray8",
            file: encode(DynamicImage::ImageLuma8(gray.clone()), png),
            matching: Match::Exact,
        },
        Variant {
            name: "png-gray16",
            file: encode(DynamicImage::ImageLuma16(sixteen(gray)), png),
            matching: Match::Exact,
        },
        Variant {
            name: "png-rgb-gray",
            file: encode(DynamicImage::ImageRgb8(gray_rgb), png),
            matching: Match::Exact,
        },
        Variant {
            name: "png-rgb-colour",
            file: encode(DynamicImage::ImageRgb8(tinted(gray)), png),
            matching: Match::Close,
        },
        Variant {
            name: "png-rgba-colour-84",
            file: encode(
                DynamicImage::ImageRgba8(DynamicImage::ImageRgb8(tinted(&wide)).to_rgba8()),
                png,
            ),
            matching: Match::Close,
        },
        Variant {
            name: "png-gray16-84",
            file: encode(DynamicImage::ImageLuma16(sixteen(&wide)), png),
            matching: Match::Exact,
        },
        Variant {
            name: "jpeg-gray",
            file: encode(DynamicImage::ImageLuma8(gray.clone()), jpeg),
            matching: Match::Exact,
        },
        Variant {
            name: "jpeg-colour-84",
            file: encode(DynamicImage::ImageRgb8(tinted(&wide)), jpeg),
            matching: Match::Close,
        },
    ]
}

/// The model input `image` makes of a file: decoded, 8-bit luma, triangle-resized to 28×28.
fn reference_pixels(file: &[u8]) -> Vec<u8> {
    let gray = image::load_from_memory(file).unwrap().to_luma8();
    if gray.dimensions() == (28, 28) {
        return gray.into_raw();
    }
    image::imageops::resize(&gray, 28, 28, FilterType::Triangle).into_raw()
}

fn margin(probabilities: &[f32]) -> f32 {
    let mut sorted = probabilities.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    sorted[0] - sorted[1]
}

async fn label(server: &TestServer, images: Vec<pb::Image>) -> Vec<pb::Prediction> {
    server
        .client()
        .await
        .label(pb::LabelRequest {
            images,
            review_threshold: None,
        })
        .await
        .expect("labelled")
        .into_inner()
        .predictions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn png_and_jpeg_images_get_the_class_of_their_raw_pixels() {
    within(Duration::from_secs(120), async {
        let server = TestServer::default().await;
        let (pixels, _) = test_images(200);
        let originals: Vec<pb::Image> = pixels
            .chunks_exact(784)
            .enumerate()
            .map(|(i, px)| raw_image(&i.to_string(), px))
            .collect();
        let answers = label(&server, originals).await;
        let chosen: Vec<&pb::Prediction> = answers
            .iter()
            .filter(|p| margin(&p.probabilities) >= CLEAR_MARGIN)
            .take(IMAGES)
            .collect();
        assert_eq!(
            chosen.len(),
            IMAGES,
            "too few test images with a clear margin"
        );

        let mut checked = 0;
        for original in chosen {
            let i: usize = original.id.parse().unwrap();
            let gray =
                GrayImage::from_raw(28, 28, pixels[i * 784..(i + 1) * 784].to_vec()).unwrap();
            let variants = variants(&gray);
            // Each file and, beside it, the raw pixels `image` decodes it to.
            let mut images = Vec::new();
            for v in &variants {
                images.push(pb::Image {
                    id: v.name.into(),
                    data: Some(pb::image::Data::Encoded(v.file.clone().into())),
                });
                images.push(raw_image("reference", &reference_pixels(&v.file)));
            }
            let answers = label(&server, images).await;
            for (v, pair) in variants.iter().zip(answers.chunks_exact(2)) {
                let (file, reference) = (&pair[0], &pair[1]);
                let what = format!("test image {i} as {}", v.name);
                assert_eq!(file.id, v.name);
                match v.matching {
                    Match::Exact => {
                        assert_eq!(file.probabilities, reference.probabilities, "{what}")
                    }
                    Match::Close => {
                        for (f, r) in file.probabilities.iter().zip(&reference.probabilities) {
                            assert!((f - r).abs() <= 0.02, "{what}: {f} vs {r}");
                        }
                    }
                }
                assert_eq!(file.class_index, reference.class_index, "{what}");
                assert_eq!(
                    file.class_index, original.class_index,
                    "{what}: not the class of the original pixels"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, IMAGES * 8);
        server.shutdown().await;
    })
    .await;
}
