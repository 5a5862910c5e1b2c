//! Stacked autoencoders, classifiers built on a transferred encoder, and their checkpoint.

mod checkpoint;
pub mod fastmath;
mod inputs;
pub mod linalg;
pub mod net;
pub mod oracle;
mod packed;

pub use checkpoint::{
    sha256_hex, CheckpointError, Model, ModelMeta, OutOfFold, MODEL_FORMAT, PREPROCESSING,
};
pub use inputs::{Inputs, CHUNK_ROWS};
pub use net::{Activation, Layer, Loss, Network, Param, StepStats, Target, Workspace};
pub use packed::PackedNetwork;

use net::{glorot_uniform, lecun_normal};
use rand::Rng;

/// How the decoder of a stacked autoencoder gets its weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decoder {
    /// Own weight matrices.
    Separate,
    /// The encoder's matrices transposed (own biases), halving the weights to learn.
    Tied,
}

/// Builds an autoencoder over `widths` (e.g. `[784, 100, 30]`): SELU encoder layers, a mirrored
/// decoder with SELU hidden layers and `output` on the last one.
///
/// Parameters are named `encoder.{i}.weight|bias` (shape `[in, out]`) and `decoder.{i}.weight|bias`;
/// a tied decoder has biases only and reads `encoder.{depth-1-i}.weight` transposed.
pub fn autoencoder(
    widths: &[usize],
    decoder: Decoder,
    output: Activation,
    rng: &mut impl Rng,
) -> Network {
    assert!(widths.len() >= 2, "an autoencoder needs at least one layer");
    let depth = widths.len() - 1;
    let mut net = Network {
        params: Vec::new(),
        layers: Vec::new(),
    };
    let mut encoder_weights = Vec::new();
    for i in 0..depth {
        let (fan_in, fan_out) = (widths[i], widths[i + 1]);
        let mut w = Param::zeros(format!("encoder.{i}.weight"), fan_in, fan_out);
        w.value = lecun_normal(rng, fan_in, fan_in * fan_out);
        let weight = net.push_param(w);
        let bias = net.push_param(Param::zeros(format!("encoder.{i}.bias"), 1, fan_out));
        encoder_weights.push(weight);
        net.layers.push(Layer {
            weight,
            transposed: false,
            bias,
            activation: Activation::Selu,
        });
    }
    for j in 0..depth {
        let (fan_in, fan_out) = (widths[depth - j], widths[depth - j - 1]);
        let activation = if j + 1 == depth {
            output
        } else {
            Activation::Selu
        };
        let (weight, transposed) = match decoder {
            Decoder::Tied => (encoder_weights[depth - 1 - j], true),
            Decoder::Separate => {
                let mut w = Param::zeros(format!("decoder.{j}.weight"), fan_in, fan_out);
                w.value = init_for(activation, rng, fan_in, fan_out);
                (net.push_param(w), false)
            }
        };
        let bias = net.push_param(Param::zeros(format!("decoder.{j}.bias"), 1, fan_out));
        net.layers.push(Layer {
            weight,
            transposed,
            bias,
            activation,
        });
    }
    net
}

fn init_for(activation: Activation, rng: &mut impl Rng, fan_in: usize, fan_out: usize) -> Vec<f32> {
    match activation {
        Activation::Selu => lecun_normal(rng, fan_in, fan_in * fan_out),
        Activation::Sigmoid | Activation::Linear => glorot_uniform(rng, fan_in, fan_out),
    }
}

/// The embeddings (innermost codes, `n × code width`) of `images` under `autoencoder`'s encoder.
pub fn encode(autoencoder: &Network, images: &[f32], threads: usize) -> Vec<f32> {
    encode_rows(autoencoder, Inputs::Floats(images), threads)
}

/// [`encode`] for floats or 8-bit rows, converted [`CHUNK_ROWS`] at a time.
pub fn encode_rows(autoencoder: &Network, images: Inputs<'_>, threads: usize) -> Vec<f32> {
    forward_rows(autoencoder, images, 0..encoder_depth(autoencoder), threads)
}

/// Class probabilities (`n × classes`, softmax of the logits) of `images` under a classifier.
pub fn probabilities(classifier: &Network, images: &[f32], threads: usize) -> Vec<f32> {
    probabilities_rows(classifier, Inputs::Floats(images), threads)
}

/// [`probabilities`] for floats or 8-bit rows, converted [`CHUNK_ROWS`] at a time.
pub fn probabilities_rows(classifier: &Network, images: Inputs<'_>, threads: usize) -> Vec<f32> {
    let logits = forward_rows(classifier, images, 0..classifier.layers.len(), threads);
    softmax_rows(logits, classifier.output_size())
}

/// Softmax of every `classes`-wide row of `logits`, in place.
pub fn softmax_rows(mut logits: Vec<f32>, classes: usize) -> Vec<f32> {
    let mut row = vec![0.0; classes];
    for chunk in logits.chunks_exact_mut(classes) {
        net::softmax_into(chunk, &mut row);
        chunk.copy_from_slice(&row);
    }
    logits
}

/// Layers `range` of `net` over every row of `images`, [`CHUNK_ROWS`] rows at a time, so 8-bit
/// sets are never converted to floats whole.
pub fn forward_rows(
    net: &Network,
    images: Inputs<'_>,
    range: std::ops::Range<usize>,
    threads: usize,
) -> Vec<f32> {
    let width = net.layer_dims(range.start).0;
    let out_width = net.layer_dims(range.end - 1).1;
    let n = images.rows(width);
    let mut out = Vec::with_capacity(n * out_width);
    let mut scratch = Vec::new();
    let mut start = 0;
    while start < n {
        let m = CHUNK_ROWS.min(n - start);
        let x = images.chunk(start, m, width, &mut scratch);
        out.extend_from_slice(&net.forward_range(x, m, range.clone(), threads));
        start += m;
    }
    out
}

/// The most probable class in one image's `probabilities` and its probability (the
/// prediction's confidence). The first index wins a tie; an empty slice gives `(0, 0.0)`.
pub fn top_class(probabilities: &[f32]) -> (usize, f32) {
    let class = net::argmax(probabilities);
    (class, probabilities.get(class).copied().unwrap_or(0.0))
}

/// Number of encoder layers of an autoencoder built by [`autoencoder`].
pub fn encoder_depth(autoencoder: &Network) -> usize {
    autoencoder.layers.len() / 2
}

/// A classifier whose hidden layers are copies of `autoencoder`'s encoder, topped by a fresh
/// linear layer whose logits go through softmax in the loss.
pub fn classifier_from_encoder(
    autoencoder: &Network,
    classes: usize,
    rng: &mut impl Rng,
) -> Network {
    let mut net = Network {
        params: Vec::new(),
        layers: Vec::new(),
    };
    for (i, layer) in autoencoder.layers[..encoder_depth(autoencoder)]
        .iter()
        .enumerate()
    {
        let mut w = autoencoder.params[layer.weight].clone();
        w.name = format!("classifier.{i}.weight");
        w.frozen = false;
        let mut b = autoencoder.params[layer.bias].clone();
        b.name = format!("classifier.{i}.bias");
        b.frozen = false;
        let weight = net.push_param(w);
        let bias = net.push_param(b);
        net.layers.push(Layer {
            weight,
            transposed: false,
            bias,
            activation: Activation::Selu,
        });
    }
    push_head(&mut net, classes, rng);
    net
}

/// A classifier of the same shape as [`classifier_from_encoder`] with random weights: the
/// from-scratch baseline. With `widths = [784]` it is multinomial logistic regression.
pub fn classifier_from_scratch(widths: &[usize], classes: usize, rng: &mut impl Rng) -> Network {
    let mut net = Network {
        params: Vec::new(),
        layers: Vec::new(),
    };
    for i in 0..widths.len() - 1 {
        let (fan_in, fan_out) = (widths[i], widths[i + 1]);
        let mut w = Param::zeros(format!("classifier.{i}.weight"), fan_in, fan_out);
        w.value = lecun_normal(rng, fan_in, fan_in * fan_out);
        let weight = net.push_param(w);
        let bias = net.push_param(Param::zeros(format!("classifier.{i}.bias"), 1, fan_out));
        net.layers.push(Layer {
            weight,
            transposed: false,
            bias,
            activation: Activation::Selu,
        });
    }
    if widths.len() == 1 {
        // No hidden layer: the head reads the raw input.
        let mut w = Param::zeros("classifier.head.weight", widths[0], classes);
        w.value = glorot_uniform(rng, widths[0], classes);
        let weight = net.push_param(w);
        let bias = net.push_param(Param::zeros("classifier.head.bias", 1, classes));
        net.layers.push(Layer {
            weight,
            transposed: false,
            bias,
            activation: Activation::Linear,
        });
        return net;
    }
    push_head(&mut net, classes, rng);
    net
}

fn push_head(net: &mut Network, classes: usize, rng: &mut impl Rng) {
    let fan_in = net.output_size();
    let mut w = Param::zeros("classifier.head.weight", fan_in, classes);
    w.value = glorot_uniform(rng, fan_in, classes);
    let weight = net.push_param(w);
    let bias = net.push_param(Param::zeros("classifier.head.bias", 1, classes));
    net.layers.push(Layer {
        weight,
        transposed: false,
        bias,
        activation: Activation::Linear,
    });
}

/// Stacks greedily trained single-layer autoencoders (outermost first) into one deep one: the
/// encoders in order, then the decoders in reverse, as the reference does.
pub fn stack_autoencoders(parts: &[Network]) -> Network {
    let mut net = Network {
        params: Vec::new(),
        layers: Vec::new(),
    };
    let depth = parts.len();
    for (i, part) in parts.iter().enumerate() {
        let layer = part.layers[0];
        let mut w = part.params[layer.weight].clone();
        w.name = format!("encoder.{i}.weight");
        let mut b = part.params[layer.bias].clone();
        b.name = format!("encoder.{i}.bias");
        let weight = net.push_param(w);
        let bias = net.push_param(b);
        net.layers.push(Layer {
            weight,
            transposed: false,
            bias,
            activation: layer.activation,
        });
    }
    for (j, part) in parts.iter().rev().enumerate() {
        let layer = part.layers[1];
        let mut w = part.params[layer.weight].clone();
        w.name = format!("decoder.{j}.weight");
        let mut b = part.params[layer.bias].clone();
        b.name = format!("decoder.{j}.bias");
        let weight = net.push_param(w);
        let bias = net.push_param(b);
        let activation = if j + 1 == depth {
            layer.activation
        } else {
            Activation::Selu
        };
        net.layers.push(Layer {
            weight,
            transposed: false,
            bias,
            activation,
        });
    }
    net
}

#[cfg(test)]
mod tests {
    use super::top_class;

    #[test]
    fn top_class_takes_the_largest_value_and_the_first_on_ties() {
        assert_eq!(top_class(&[0.1, 0.6, 0.3]), (1, 0.6));
        assert_eq!(top_class(&[0.2, 0.4, 0.4]), (1, 0.4));
        assert_eq!(top_class(&[0.25, 0.25, 0.25, 0.25]), (0, 0.25));
    }

    #[test]
    fn top_class_of_a_single_value_is_that_value() {
        assert_eq!(top_class(&[0.7]), (0, 0.7));
        assert_eq!(top_class(&[]), (0, 0.0));
    }
}
