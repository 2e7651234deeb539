//! Adam optimiser (as `torch.optim.Adam`, no weight decay) with an
//! inverse-time learning-rate decay and checkpointable moment state.
//!
//! candle-nn's optimisers keep their state private; this one exposes the
//! first/second moments so a resumed run continues bit-identically.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

/// Hyper-parameters of [`Adam`].
#[derive(Debug, Clone, PartialEq)]
pub struct AdamConfig {
    /// Initial learning rate `lr0`.
    pub lr: f64,
    /// Inverse-time decay: `lr_i = lr0 / (1 + lr_decay * i)`.
    pub lr_decay: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            lr: 1e-4,
            lr_decay: 5e-5,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// Adam over named `f32` variables.
///
/// For step `t` (1-based) with gradient `g`:
/// `m = b1 m + (1-b1) g`, `v = b2 v + (1-b2) g²`,
/// `p -= lr_{t-1} / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)`.
pub struct Adam {
    cfg: AdamConfig,
    step: u64,
    params: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
}

impl Adam {
    /// New optimiser with zero moments. All parameters must be `f32`.
    pub fn new(params: Vec<(String, Var)>, cfg: AdamConfig) -> Result<Self> {
        let mut m = Vec::with_capacity(params.len());
        for (name, var) in &params {
            if var.dtype() != DType::F32 {
                bail!(
                    "Adam: parameter {name} has dtype {:?}, expected f32",
                    var.dtype()
                );
            }
            m.push(var.zeros_like()?);
        }
        let v = m.clone(); // never mutated in place, so sharing is safe
        Ok(Self {
            cfg,
            step: 0,
            params,
            m,
            v,
        })
    }

    /// Number of updates applied so far.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Learning rate of the iteration with 0-based index `iteration`.
    pub fn lr_at(&self, iteration: u64) -> f64 {
        self.cfg.lr / (1.0 + self.cfg.lr_decay * iteration as f64)
    }

    /// Learning rate the next [`Adam::step_grads`] will use.
    pub fn current_lr(&self) -> f64 {
        self.lr_at(self.step)
    }

    /// Apply one update from `grads`. Every parameter needs a gradient; if one
    /// is missing nothing is changed and the error names it.
    pub fn step_grads(&mut self, grads: &GradStore) -> Result<()> {
        let gs = self
            .params
            .iter()
            .map(|(name, var)| {
                let g = grads
                    .get(var.as_tensor())
                    .with_context(|| format!("Adam: no gradient for parameter {name}"))?;
                Ok(g.detach().to_dtype(DType::F32)?)
            })
            .collect::<Result<Vec<_>>>()?;

        let lr = self.current_lr();
        self.step += 1;
        let t = self.step as i32;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let step_size = lr / (1.0 - b1.powi(t));
        let bc2_sqrt = (1.0 - b2.powi(t)).sqrt();

        for (i, g) in gs.iter().enumerate() {
            let name = &self.params[i].0;
            let update = || -> candle_core::Result<(Tensor, Tensor, Tensor)> {
                let m = (self.m[i].affine(b1, 0.0)? + g.affine(1.0 - b1, 0.0)?)?;
                let v = (self.v[i].affine(b2, 0.0)? + g.sqr()?.affine(1.0 - b2, 0.0)?)?;
                let denom = (v.sqrt()? / bc2_sqrt)?.affine(1.0, self.cfg.eps)?;
                let p = self.params[i].1.as_detached_tensor();
                let p = (p - m.div(&denom)?.affine(step_size, 0.0)?)?;
                Ok((m, v, p))
            };
            let (m, v, p) = update().with_context(|| format!("Adam: updating {name}"))?;
            self.params[i]
                .1
                .set(&p)
                .with_context(|| format!("Adam: setting {name}"))?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// Moment tensors for a checkpoint, named `adam.m.<name>` / `adam.v.<name>`.
    /// They are snapshots: later steps create new tensors rather than
    /// mutating these.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.params.len());
        for (i, (name, _)) in self.params.iter().enumerate() {
            out.push((format!("adam.m.{name}"), self.m[i].clone()));
            out.push((format!("adam.v.{name}"), self.v[i].clone()));
        }
        out
    }

    /// Restore moments written by [`Adam::state`] and the step counter. A
    /// missing tensor or a shape mismatch is an error naming it; nothing is
    /// changed unless every tensor is valid.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, step: u64) -> Result<()> {
        let mut m = Vec::with_capacity(self.params.len());
        let mut v = Vec::with_capacity(self.params.len());
        for (name, var) in &self.params {
            for (kind, dst) in [("m", &mut m), ("v", &mut v)] {
                let key = format!("adam.{kind}.{name}");
                let t = tensors
                    .get(&key)
                    .with_context(|| format!("optimizer state: missing tensor {key}"))?;
                if t.shape() != var.shape() {
                    bail!(
                        "optimizer state: tensor {key} has shape {:?}, parameter has {:?}",
                        t.dims(),
                        var.dims()
                    );
                }
                let t = t
                    .to_dtype(DType::F32)?
                    .to_device(var.device())
                    .with_context(|| format!("optimizer state: moving {key}"))?;
                dst.push(t);
            }
        }
        self.m = m;
        self.v = v;
        self.step = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Loss `sum_j a_j (p_j - c_j)^2` with gradient `2 a_j (p_j - c_j)`.
    const A: [f64; 3] = [1.0, 0.5, 3.0];
    const C: [f64; 3] = [0.3, -1.2, 2.0];
    const P0: [f32; 3] = [1.0, 0.5, -0.7];

    fn grads_for(var: &Var) -> GradStore {
        let a = Tensor::new(&A.map(|x| x as f32), &Device::Cpu).unwrap();
        let c = Tensor::new(&C.map(|x| x as f32), &Device::Cpu).unwrap();
        let loss = (var.as_tensor() - c)
            .unwrap()
            .sqr()
            .unwrap()
            .mul(&a)
            .unwrap()
            .sum_all()
            .unwrap();
        loss.backward().unwrap()
    }

    fn make(cfg: AdamConfig) -> (Var, Adam) {
        let var = Var::new(&P0, &Device::Cpu).unwrap();
        let opt = Adam::new(vec![("w".into(), var.clone())], cfg).unwrap();
        (var, opt)
    }

    fn values(var: &Var) -> Vec<f32> {
        var.as_tensor().to_vec1::<f32>().unwrap()
    }

    #[test]
    fn matches_scalar_reference() {
        let cfg = AdamConfig {
            lr: 0.05,
            lr_decay: 0.1,
            ..Default::default()
        };
        let (var, mut opt) = make(cfg.clone());
        // Scalar f64 reference, written out as torch.optim.Adam does it.
        let mut p = P0.map(|x| x as f64);
        let (mut m, mut v) = ([0f64; 3], [0f64; 3]);
        for t in 1..=8 {
            opt.step_grads(&grads_for(&var)).unwrap();
            let lr = cfg.lr / (1.0 + cfg.lr_decay * (t - 1) as f64);
            for j in 0..3 {
                let g = 2.0 * A[j] * (p[j] - C[j]);
                m[j] = cfg.beta1 * m[j] + (1.0 - cfg.beta1) * g;
                v[j] = cfg.beta2 * v[j] + (1.0 - cfg.beta2) * g * g;
                let step_size = lr / (1.0 - cfg.beta1.powi(t));
                let denom = v[j].sqrt() / (1.0 - cfg.beta2.powi(t)).sqrt() + cfg.eps;
                p[j] -= step_size * m[j] / denom;
            }
            for (got, want) in values(&var).iter().zip(p) {
                let rel = (*got as f64 - want).abs() / want.abs().max(1e-3);
                assert!(rel < 1e-6, "step {t}: got {got}, want {want}");
            }
        }
        assert_eq!(opt.step(), 8);
    }

    #[test]
    fn resume_from_state_is_bit_identical() {
        let cfg = AdamConfig {
            lr: 0.01,
            ..Default::default()
        };
        let (var_a, mut a) = make(cfg.clone());
        for _ in 0..6 {
            a.step_grads(&grads_for(&var_a)).unwrap();
        }

        let (var_b, mut b) = make(cfg.clone());
        for _ in 0..3 {
            b.step_grads(&grads_for(&var_b)).unwrap();
        }
        let state: HashMap<String, Tensor> = b.state().into_iter().collect();
        assert_eq!(state.len(), 2);
        assert!(state.contains_key("adam.m.w") && state.contains_key("adam.v.w"));
        // Fresh variable and optimiser, as after loading a checkpoint.
        let var_c = Var::new(values(&var_b).as_slice(), &Device::Cpu).unwrap();
        let mut c = Adam::new(vec![("w".into(), var_c.clone())], cfg).unwrap();
        c.load_state(&state, b.step()).unwrap();
        assert_eq!(c.current_lr(), b.current_lr());
        for _ in 0..3 {
            c.step_grads(&grads_for(&var_c)).unwrap();
        }
        let bits = |v: &Var| values(v).iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&var_a), bits(&var_c));
    }

    #[test]
    fn lr_decay_values() {
        let (_, opt) = make(AdamConfig::default());
        assert_eq!(opt.lr_at(0), 1e-4);
        assert!((opt.lr_at(20_000) - 1e-4 / 2.0).abs() < 1e-18);
        assert!((opt.lr_at(160_000) - 1e-4 / 9.0).abs() < 1e-18);
        assert_eq!(opt.current_lr(), opt.lr_at(0));
    }

    #[test]
    fn errors_name_the_parameter_or_tensor() {
        let (_, mut opt) = make(AdamConfig::default());
        // Gradients of an unrelated variable: "w" has none.
        let other = Var::new(&P0, &Device::Cpu).unwrap();
        let e = format!("{:#}", opt.step_grads(&grads_for(&other)).unwrap_err());
        assert!(e.contains("w"), "{e}");
        assert_eq!(opt.step(), 0, "failed step must not count");

        let mut state: HashMap<String, Tensor> = opt.state().into_iter().collect();
        state.remove("adam.v.w");
        let e = format!("{:#}", opt.load_state(&state, 5).unwrap_err());
        assert!(e.contains("adam.v.w"), "{e}");
        state.insert(
            "adam.v.w".into(),
            Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap(),
        );
        let e = format!("{:#}", opt.load_state(&state, 5).unwrap_err());
        assert!(e.contains("adam.v.w") && e.contains("shape"), "{e}");
        assert_eq!(opt.step(), 0);

        let f64_var = Var::zeros(2, DType::F64, &Device::Cpu).unwrap();
        assert!(Adam::new(vec![("d".into(), f64_var)], AdamConfig::default()).is_err());
    }
}
