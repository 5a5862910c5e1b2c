//! The same forward pass written with candle's autograd: the reference the hand-written
//! backward pass in [`super::net`] is tested against.

use super::net::{Activation, Loss, Network, Target, SELU_ALPHA, SELU_LAMBDA};
use candle_core::{DType, Device, Tensor, Var};

/// Loss and gradient of every parameter (same order as `net.params`) computed by candle autograd.
pub fn autograd_gradients(
    net: &Network,
    input: &[f32],
    target: Target<'_>,
    loss: Loss,
    n: usize,
) -> candle_core::Result<(f32, Vec<Vec<f32>>)> {
    let device = Device::Cpu;
    let vars = net
        .params
        .iter()
        .map(|p| Var::from_slice(&p.value, (p.shape[0], p.shape[1]), &device))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let mut x = Tensor::from_slice(
        &input[..n * net.input_size()],
        (n, net.input_size()),
        &device,
    )?;
    for layer in &net.layers {
        let mut w = vars[layer.weight].as_tensor().clone();
        if layer.transposed {
            w = w.t()?;
        }
        let z = x.matmul(&w)?.broadcast_add(vars[layer.bias].as_tensor())?;
        x = match layer.activation {
            Activation::Selu => (z.elu(f64::from(SELU_ALPHA))? * f64::from(SELU_LAMBDA))?,
            Activation::Sigmoid => candle_nn::ops::sigmoid(&z)?,
            Activation::Linear => z,
        };
    }
    let width = net.output_size();
    let value = match (loss, target) {
        (Loss::BinaryCrossEntropy, Target::Values(t)) => {
            let t = Tensor::from_slice(&t[..n * width], (n, width), &device)?;
            let one_minus_t = (1.0 - &t)?;
            let one_minus_p = (1.0 - &x)?;
            ((t * x.log()?)? + (one_minus_t * one_minus_p.log()?)?)?
                .mean_all()?
                .neg()?
        }
        (Loss::MeanSquaredError, Target::Values(t)) => {
            let t = Tensor::from_slice(&t[..n * width], (n, width), &device)?;
            (x - t)?.sqr()?.mean_all()?
        }
        (Loss::SoftmaxCrossEntropy, Target::Classes(c)) => {
            let c: Vec<u32> = c[..n].to_vec();
            let c = Tensor::from_vec(c, n, &device)?;
            candle_nn::loss::cross_entropy(&x, &c)?
        }
        (Loss::SoftmaxCrossEntropy, Target::Values(q)) => {
            let q = Tensor::from_slice(&q[..n * width], (n, width), &device)?;
            let log_p = candle_nn::ops::log_softmax(&x, 1)?;
            (q * log_p)?.sum(1)?.mean_all()?.neg()?
        }
        (loss, _) => candle_core::bail!("loss {loss:?} does not take this kind of target"),
    };
    let grads = value.backward()?;
    let mut out = Vec::with_capacity(vars.len());
    for var in &vars {
        let g = match grads.get(var.as_tensor()) {
            Some(g) => g.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?,
            None => vec![0.0; var.as_tensor().elem_count()],
        };
        out.push(g);
    }
    Ok((value.to_scalar::<f32>()?, out))
}
