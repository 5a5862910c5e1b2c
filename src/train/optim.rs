//! Optimisers: plain SGD (the reference recipe) and Adam (Keras defaults).

use crate::model::Network;

/// An optimiser and its state; frozen parameters are skipped.
#[derive(Clone, Debug)]
pub enum Optimizer {
    /// `w -= lr · g`.
    Sgd {
        /// Learning rate.
        lr: f32,
    },
    /// Adam with bias correction; moments are allocated on the first step.
    Adam {
        /// Learning rate.
        lr: f32,
        /// Moment decay rates and epsilon (Keras: 0.9, 0.999, 1e-7).
        beta1: f32,
        /// Second-moment decay.
        beta2: f32,
        /// Denominator guard.
        eps: f32,
        /// Steps taken.
        t: i32,
        /// First moments per parameter.
        m: Vec<Vec<f32>>,
        /// Second moments per parameter.
        v: Vec<Vec<f32>>,
    },
}

impl Optimizer {
    /// Stochastic gradient descent with learning rate `lr`.
    pub fn sgd(lr: f32) -> Self {
        Optimizer::Sgd { lr }
    }

    /// Adam with Keras's default betas and epsilon.
    pub fn adam(lr: f32) -> Self {
        Optimizer::Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-7,
            t: 0,
            m: Vec::new(),
            v: Vec::new(),
        }
    }

    /// Short description for reports, e.g. `sgd(lr=1.5)`.
    pub fn describe(&self) -> String {
        match self {
            Optimizer::Sgd { lr } => format!("sgd(lr={lr})"),
            Optimizer::Adam { lr, .. } => format!("adam(lr={lr})"),
        }
    }

    /// The learning rate.
    pub fn learning_rate(&self) -> f32 {
        match self {
            Optimizer::Sgd { lr } | Optimizer::Adam { lr, .. } => *lr,
        }
    }

    /// Changes the learning rate, keeping any moment estimates (for schedules).
    pub fn set_learning_rate(&mut self, rate: f32) {
        match self {
            Optimizer::Sgd { lr } | Optimizer::Adam { lr, .. } => *lr = rate,
        }
    }

    /// Applies one update from `grads` (same layout as `net.params`).
    pub fn step(&mut self, net: &mut Network, grads: &[Vec<f32>]) {
        crate::model::fastmath::wide(|| self.step_scalar(net, grads));
    }

    #[inline(always)]
    fn step_scalar(&mut self, net: &mut Network, grads: &[Vec<f32>]) {
        match self {
            Optimizer::Sgd { lr } => {
                for (p, g) in net.params.iter_mut().zip(grads) {
                    if p.frozen {
                        continue;
                    }
                    for (w, g) in p.value.iter_mut().zip(g) {
                        *w -= *lr * g;
                    }
                }
            }
            Optimizer::Adam {
                lr,
                beta1,
                beta2,
                eps,
                t,
                m,
                v,
            } => {
                if m.len() != net.params.len() {
                    *m = net
                        .params
                        .iter()
                        .map(|p| vec![0.0; p.value.len()])
                        .collect();
                    *v = m.clone();
                }
                *t += 1;
                let c1 = 1.0 - beta1.powi(*t);
                let c2 = 1.0 - beta2.powi(*t);
                // Keras folds bias correction into the step size.
                let step = *lr * c2.sqrt() / c1;
                let eps = *eps;
                for (((p, g), m), v) in net
                    .params
                    .iter_mut()
                    .zip(grads)
                    .zip(m.iter_mut())
                    .zip(v.iter_mut())
                {
                    if p.frozen {
                        continue;
                    }
                    for (((w, &g), m), v) in p
                        .value
                        .iter_mut()
                        .zip(g)
                        .zip(m.iter_mut())
                        .zip(v.iter_mut())
                    {
                        *m = *beta1 * *m + (1.0 - *beta1) * g;
                        *v = *beta2 * *v + (1.0 - *beta2) * g * g;
                        *w -= step * *m / (v.sqrt() + eps);
                    }
                }
            }
        }
    }
}
