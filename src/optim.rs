//! Optimisers: Adam (as `torch.optim.Adam`, no weight decay) with an
//! inverse-time learning-rate decay and checkpointable moment state, and
//! L-BFGS (as `torch.optim.LBFGS`, for `adain optimize`).
//!
//! candle-nn's optimisers keep their state private; Adam here exposes its
//! first/second moments so a resumed run continues bit-identically. candle
//! has no L-BFGS; ours is a port of torch's, tested against it in
//! `tests/optimize.rs`.

use std::collections::{HashMap, VecDeque};

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
        let gs = self.gradients(grads)?;
        self.step_with(&gs)
    }

    /// The gradient of every parameter, in parameter order (the order
    /// [`Adam::step_with`] takes). A missing one is an error naming it.
    pub fn gradients(&self, grads: &GradStore) -> Result<Vec<Tensor>> {
        self.params
            .iter()
            .map(|(name, var)| {
                let g = grads
                    .get(var.as_tensor())
                    .with_context(|| format!("Adam: no gradient for parameter {name}"))?;
                Ok(g.detach().to_dtype(DType::F32)?)
            })
            .collect()
    }

    /// Apply one update from gradients given in parameter order (e.g. after
    /// averaging them across data-parallel processes).
    pub fn step_with(&mut self, gs: &[Tensor]) -> Result<()> {
        if gs.len() != self.params.len() {
            bail!(
                "Adam: {} gradients for {} parameters",
                gs.len(),
                self.params.len()
            );
        }
        for ((name, var), g) in self.params.iter().zip(gs) {
            if g.shape() != var.shape() {
                bail!(
                    "Adam: gradient of {name} has shape {:?}, expected {:?}",
                    g.dims(),
                    var.dims()
                );
            }
        }
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

// ------------------------------------------------------------------- L-BFGS

/// Line search of [`Lbfgs`], as `torch.optim.LBFGS`'s `line_search_fn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LineSearch {
    /// A fixed step of `lr` along the L-BFGS direction (torch's `None`).
    None,
    /// Strong Wolfe conditions by bracketing and cubic interpolation (torch's
    /// `"strong_wolfe"`, c1 = 1e-4, c2 = 0.9).
    #[default]
    StrongWolfe,
}

/// Settings of [`Lbfgs`]; the defaults are `torch.optim.LBFGS`'s.
#[derive(Debug, Clone, PartialEq)]
pub struct LbfgsConfig {
    /// Step length (multiplies the first trial step of the line search).
    pub lr: f64,
    /// Iterations per [`Lbfgs::step`].
    pub max_iter: usize,
    /// Function evaluations per [`Lbfgs::step`]; `None`: `max_iter * 5 / 4`.
    pub max_eval: Option<usize>,
    /// Stop when the largest gradient component is at most this.
    pub tolerance_grad: f64,
    /// Stop when the step or the loss change is below this.
    pub tolerance_change: f64,
    /// Correction pairs kept (memory: `2 * history_size` copies of the variable).
    pub history_size: usize,
    pub line_search: LineSearch,
}

impl Default for LbfgsConfig {
    fn default() -> Self {
        Self {
            lr: 1.0,
            max_iter: 20,
            max_eval: None,
            tolerance_grad: 1e-7,
            tolerance_change: 1e-9,
            history_size: 100,
            line_search: LineSearch::None,
        }
    }
}

/// Why [`Lbfgs::step`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbfgsStop {
    /// `max_iter` iterations done.
    MaxIter,
    /// `max_eval` function evaluations done.
    MaxEval,
    /// The gradient is below `tolerance_grad` (a minimum).
    Gradient,
    /// The step or the loss change is below `tolerance_change`.
    NoProgress,
    /// The direction is not a descent direction (`g.d > -tolerance_change`).
    NoDescent,
    /// The per-iteration callback asked to stop.
    Stopped,
}

/// What one [`Lbfgs::step`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LbfgsReport {
    /// The loss at the starting point (what torch's `step` returns).
    pub initial_loss: f64,
    /// Iterations and function evaluations in this step.
    pub iterations: usize,
    pub evals: usize,
    pub stop: LbfgsStop,
}

/// State after one iteration, given to the callback of [`Lbfgs::step`].
pub struct LbfgsIteration<'a> {
    /// Iterations since the optimiser was created (1-based).
    pub iter: usize,
    /// Function evaluations since the optimiser was created.
    pub evals: usize,
    /// The point after this iteration.
    pub x: &'a [f32],
    /// The loss at `x`, when it was evaluated: it is not after the last
    /// iteration of a step without line search (torch skips that evaluation).
    pub loss: Option<f64>,
}

/// Limited-memory BFGS, a line-for-line port of `torch.optim.LBFGS.step`
/// (torch 2.x, `lbfgs.py`): the two-loop recursion over the last
/// `history_size` pairs (s, y), the initial Hessian scale `s.y / y.y`, the
/// first step `min(1, 1/|g|_1) * lr`, torch's stopping tests and its strong
/// Wolfe line search. The variable is one flat `f32` vector (as torch's
/// flattened parameters); dot products are accumulated in `f64` and in a
/// fixed order, so results do not depend on the thread count.
///
/// State carries over between calls of [`Lbfgs::step`], as in torch.
pub struct Lbfgs {
    cfg: LbfgsConfig,
    n_iter: usize,
    func_evals: usize,
    d: Vec<f32>,
    t: f64,
    old_dirs: VecDeque<Vec<f32>>,
    old_stps: VecDeque<Vec<f32>>,
    ro: VecDeque<f64>,
    h_diag: f64,
    prev_flat_grad: Option<Vec<f32>>,
}

impl Lbfgs {
    pub fn new(cfg: LbfgsConfig) -> Result<Self> {
        if !(cfg.lr > 0.0 && cfg.lr.is_finite()) {
            bail!("L-BFGS: learning rate {} must be positive", cfg.lr);
        }
        if cfg.history_size == 0 {
            bail!("L-BFGS: history size must be at least 1");
        }
        Ok(Self {
            cfg,
            n_iter: 0,
            func_evals: 0,
            d: Vec::new(),
            t: 0.0,
            old_dirs: VecDeque::new(),
            old_stps: VecDeque::new(),
            ro: VecDeque::new(),
            h_diag: 1.0,
            prev_flat_grad: None,
        })
    }

    pub fn config(&self) -> &LbfgsConfig {
        &self.cfg
    }

    /// Iterations and function evaluations since creation.
    pub fn counts(&self) -> (usize, usize) {
        (self.n_iter, self.func_evals)
    }

    /// Up to `max_iter` iterations from `x` (updated in place), as one call of
    /// torch's `step(closure)`. `f(x)` returns the loss and its gradient at
    /// `x`; it may change `x` in place before evaluating (a projection, as
    /// clamping in a torch closure does). `on_iter` runs after every
    /// iteration; returning `false` stops after that iteration.
    pub fn step<F, C>(&mut self, x: &mut [f32], mut f: F, mut on_iter: C) -> Result<LbfgsReport>
    where
        F: FnMut(&mut [f32]) -> Result<(f64, Vec<f32>)>,
        C: FnMut(LbfgsIteration) -> bool,
    {
        let cfg = self.cfg.clone();
        let max_eval = cfg.max_eval.unwrap_or(cfg.max_iter * 5 / 4);
        let n = x.len();
        let mut eval = |x: &mut [f32]| -> Result<(f64, Vec<f32>)> {
            let (loss, g) = f(x)?;
            if g.len() != n {
                bail!("L-BFGS: gradient has {} values for {n} variables", g.len());
            }
            Ok((loss, g))
        };

        let (mut loss, mut flat_grad) = eval(x)?;
        let initial_loss = loss;
        let mut current_evals = 1;
        self.func_evals += 1;
        let mut report = LbfgsReport {
            initial_loss,
            iterations: 0,
            evals: 1,
            stop: LbfgsStop::Gradient,
        };
        if vec::max_abs(&flat_grad) <= cfg.tolerance_grad {
            return Ok(report);
        }

        let mut opt_cond = false;
        let mut n_iter = 0;
        report.stop = LbfgsStop::MaxIter;
        while n_iter < cfg.max_iter {
            n_iter += 1;
            self.n_iter += 1;

            // direction
            if self.n_iter == 1 {
                self.d = vec::scaled(&flat_grad, -1.0);
                self.old_dirs.clear();
                self.old_stps.clear();
                self.ro.clear();
                self.h_diag = 1.0;
            } else {
                let prev = self.prev_flat_grad.as_ref().expect("set after iteration 1");
                let y = vec::sub(&flat_grad, prev);
                let s = vec::scaled(&self.d, self.t);
                let ys = vec::dot(&y, &s);
                if ys > 1e-10 {
                    if self.old_dirs.len() == cfg.history_size {
                        self.old_dirs.pop_front();
                        self.old_stps.pop_front();
                        self.ro.pop_front();
                    }
                    self.h_diag = ys / vec::dot(&y, &y);
                    self.old_dirs.push_back(y);
                    self.old_stps.push_back(s);
                    self.ro.push_back(1.0 / ys);
                }
                // two-loop recursion: d = -H g
                let num_old = self.old_dirs.len();
                let mut al = vec![0.0; num_old];
                let mut q = vec::scaled(&flat_grad, -1.0);
                for i in (0..num_old).rev() {
                    al[i] = vec::dot(&self.old_stps[i], &q) * self.ro[i];
                    vec::axpy(&mut q, -al[i], &self.old_dirs[i]);
                }
                let mut r = vec::scaled(&q, self.h_diag);
                for (i, al_i) in al.iter().enumerate() {
                    let be_i = vec::dot(&self.old_dirs[i], &r) * self.ro[i];
                    vec::axpy(&mut r, al_i - be_i, &self.old_stps[i]);
                }
                self.d = r;
            }
            match &mut self.prev_flat_grad {
                Some(p) => p.copy_from_slice(&flat_grad),
                None => self.prev_flat_grad = Some(flat_grad.clone()),
            }
            let prev_loss = loss;

            // step length
            let t = if self.n_iter == 1 {
                py_min(1.0, 1.0 / vec::abs_sum(&flat_grad)) * cfg.lr
            } else {
                cfg.lr
            };
            let gtd = vec::dot(&flat_grad, &self.d);
            if gtd > -cfg.tolerance_change {
                report.stop = LbfgsStop::NoDescent;
                break;
            }

            let mut ls_func_evals = 0;
            let mut evaluated = false;
            match cfg.line_search {
                LineSearch::StrongWolfe => {
                    let d = &self.d;
                    let x0: &[f32] = x;
                    let mut xt = vec![0f32; n];
                    let obj = |t: f64| -> Result<(f64, Vec<f32>)> {
                        vec::add_scaled(&mut xt, x0, t, d);
                        eval(&mut xt)
                    };
                    let ls = strong_wolfe(
                        obj,
                        t,
                        d,
                        loss,
                        &flat_grad,
                        gtd,
                        cfg.tolerance_change,
                        max_eval.saturating_sub(current_evals),
                    )?;
                    (loss, flat_grad, self.t, ls_func_evals) = ls;
                    vec::axpy(x, self.t, &self.d);
                    opt_cond = vec::max_abs(&flat_grad) <= cfg.tolerance_grad;
                    evaluated = true;
                }
                LineSearch::None => {
                    self.t = t;
                    vec::axpy(x, t, &self.d);
                    if n_iter != cfg.max_iter {
                        (loss, flat_grad) = eval(x)?;
                        opt_cond = vec::max_abs(&flat_grad) <= cfg.tolerance_grad;
                        ls_func_evals = 1;
                        evaluated = true;
                    }
                }
            }
            current_evals += ls_func_evals;
            self.func_evals += ls_func_evals;

            let go_on = on_iter(LbfgsIteration {
                iter: self.n_iter,
                evals: self.func_evals,
                x,
                loss: evaluated.then_some(loss),
            });

            // stopping tests, in torch's order
            if n_iter == cfg.max_iter {
                report.stop = LbfgsStop::MaxIter;
                break;
            }
            if current_evals >= max_eval {
                report.stop = LbfgsStop::MaxEval;
                break;
            }
            if opt_cond {
                report.stop = LbfgsStop::Gradient;
                break;
            }
            if vec::max_abs(&self.d) * self.t.abs() <= cfg.tolerance_change
                || (loss - prev_loss).abs() < cfg.tolerance_change
            {
                report.stop = LbfgsStop::NoProgress;
                break;
            }
            if !go_on {
                report.stop = LbfgsStop::Stopped;
                break;
            }
        }
        report.iterations = n_iter;
        report.evals = current_evals;
        Ok(report)
    }
}

/// Python's `min(a, b)`/`max(a, b)`: the first argument unless the second
/// compares smaller/larger (so NaN propagates as in torch's line search).
fn py_min(a: f64, b: f64) -> f64 {
    if b < a {
        b
    } else {
        a
    }
}
fn py_max(a: f64, b: f64) -> f64 {
    if b > a {
        b
    } else {
        a
    }
}

/// torch's `_cubic_interpolate`: minimiser of the cubic through (x1, f1, g1)
/// and (x2, f2, g2), clamped to `bounds` (default: between x1 and x2).
fn cubic_interpolate(
    (x1, f1, g1): (f64, f64, f64),
    (x2, f2, g2): (f64, f64, f64),
    bounds: Option<(f64, f64)>,
) -> f64 {
    let (lo, hi) = bounds.unwrap_or(if x1 <= x2 { (x1, x2) } else { (x2, x1) });
    let d1 = g1 + g2 - 3.0 * (f1 - f2) / (x1 - x2);
    let d2_square = d1 * d1 - g1 * g2;
    if d2_square >= 0.0 {
        let d2 = d2_square.sqrt();
        let min_pos = if x1 <= x2 {
            x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2.0 * d2))
        } else {
            x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2.0 * d2))
        };
        py_min(py_max(min_pos, lo), hi)
    } else {
        (lo + hi) / 2.0
    }
}

/// torch's `_strong_wolfe` (c1 = 1e-4, c2 = 0.9): a step `t` along `d` from
/// the point where the loss is `f`, the gradient `g` and `g.d = gtd`.
/// `obj(t)` evaluates at `x + t d`. Returns (loss, gradient, t, evaluations).
#[allow(clippy::too_many_arguments)]
fn strong_wolfe<F>(
    mut obj: F,
    mut t: f64,
    d: &[f32],
    f: f64,
    g: &[f32],
    gtd: f64,
    tolerance_change: f64,
    max_ls: usize,
) -> Result<(f64, Vec<f32>, f64, usize)>
where
    F: FnMut(f64) -> Result<(f64, Vec<f32>)>,
{
    const C1: f64 = 1e-4;
    const C2: f64 = 0.9;
    let d_norm = vec::max_abs(d);
    let (mut f_new, mut g_new) = obj(t)?;
    let mut ls_func_evals = 1;
    let mut gtd_new = vec::dot(&g_new, d);

    // bracket an interval containing a point satisfying the Wolfe criteria
    let (mut t_prev, mut f_prev, mut g_prev, mut gtd_prev) = (0.0, f, g.to_vec(), gtd);
    let mut done = false;
    let mut ls_iter = 0;
    let mut bracket: Vec<f64> = Vec::new();
    let mut bracket_f: Vec<f64> = Vec::new();
    let mut bracket_g: Vec<Vec<f32>> = Vec::new();
    let mut bracket_gtd: Vec<f64> = Vec::new();
    while ls_iter < max_ls {
        if f_new > f + C1 * t * gtd || (ls_iter > 1 && f_new >= f_prev) {
            bracket = vec![t_prev, t];
            bracket_f = vec![f_prev, f_new];
            bracket_g = vec![g_prev, std::mem::take(&mut g_new)];
            bracket_gtd = vec![gtd_prev, gtd_new];
            break;
        }
        if gtd_new.abs() <= -C2 * gtd {
            bracket = vec![t];
            bracket_f = vec![f_new];
            bracket_g = vec![std::mem::take(&mut g_new)];
            done = true;
            break;
        }
        if gtd_new >= 0.0 {
            bracket = vec![t_prev, t];
            bracket_f = vec![f_prev, f_new];
            bracket_g = vec![g_prev, std::mem::take(&mut g_new)];
            bracket_gtd = vec![gtd_prev, gtd_new];
            break;
        }
        // interpolate
        let min_step = t + 0.01 * (t - t_prev);
        let max_step = t * 10.0;
        let tmp = t;
        t = cubic_interpolate(
            (t_prev, f_prev, gtd_prev),
            (t, f_new, gtd_new),
            Some((min_step, max_step)),
        );
        // next step
        t_prev = tmp;
        f_prev = f_new;
        g_prev = g_new;
        gtd_prev = gtd_new;
        (f_new, g_new) = obj(t)?;
        ls_func_evals += 1;
        gtd_new = vec::dot(&g_new, d);
        ls_iter += 1;
    }
    // reached the maximum number of evaluations?
    if ls_iter == max_ls {
        bracket = vec![0.0, t];
        bracket_f = vec![f, f_new];
        bracket_g = vec![g.to_vec(), g_new];
    }

    // zoom: refine the bracket until a point satisfies the criteria
    let mut insuf_progress = false;
    let order = |bf: &[f64]| {
        if bf[0] <= bf[bf.len() - 1] {
            (0, 1)
        } else {
            (1, 0)
        }
    };
    let (mut low_pos, mut high_pos) = order(&bracket_f);
    while !done && ls_iter < max_ls {
        if (bracket[1] - bracket[0]).abs() * d_norm < tolerance_change {
            break;
        }
        t = cubic_interpolate(
            (bracket[0], bracket_f[0], bracket_gtd[0]),
            (bracket[1], bracket_f[1], bracket_gtd[1]),
            None,
        );
        // keep t away from the ends of the bracket when progress is slow
        let (b_max, b_min) = (
            py_max(bracket[0], bracket[1]),
            py_min(bracket[0], bracket[1]),
        );
        let eps = 0.1 * (b_max - b_min);
        if py_min(b_max - t, t - b_min) < eps {
            if insuf_progress || t >= b_max || t <= b_min {
                t = if (t - b_max).abs() < (t - b_min).abs() {
                    b_max - eps
                } else {
                    b_min + eps
                };
                insuf_progress = false;
            } else {
                insuf_progress = true;
            }
        } else {
            insuf_progress = false;
        }

        (f_new, g_new) = obj(t)?;
        ls_func_evals += 1;
        gtd_new = vec::dot(&g_new, d);
        ls_iter += 1;

        if f_new > f + C1 * t * gtd || f_new >= bracket_f[low_pos] {
            // Armijo condition not met, or not lower than the lowest point
            bracket[high_pos] = t;
            bracket_f[high_pos] = f_new;
            bracket_g[high_pos] = g_new;
            bracket_gtd[high_pos] = gtd_new;
            (low_pos, high_pos) = order(&bracket_f);
        } else {
            if gtd_new.abs() <= -C2 * gtd {
                done = true;
            } else if gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0.0 {
                // old high becomes new low
                bracket[high_pos] = bracket[low_pos];
                bracket_f[high_pos] = bracket_f[low_pos];
                bracket_g[high_pos] = bracket_g[low_pos].clone();
                bracket_gtd[high_pos] = bracket_gtd[low_pos];
            }
            // new point becomes new low
            bracket[low_pos] = t;
            bracket_f[low_pos] = f_new;
            bracket_g[low_pos] = g_new;
            bracket_gtd[low_pos] = gtd_new;
        }
    }
    let g_low = bracket_g.swap_remove(low_pos);
    Ok((bracket_f[low_pos], g_low, bracket[low_pos], ls_func_evals))
}

/// Vector arithmetic of L-BFGS on flat `f32` slices, parallel over fixed-size
/// chunks (a fixed reduction order: the same result with any thread count).
mod vec {
    use rayon::prelude::*;

    const CHUNK: usize = 1 << 14;

    pub fn dot(a: &[f32], b: &[f32]) -> f64 {
        let parts: Vec<f64> = a
            .par_chunks(CHUNK)
            .zip(b.par_chunks(CHUNK))
            .map(|(a, b)| a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum())
            .collect();
        parts.iter().sum()
    }

    pub fn abs_sum(a: &[f32]) -> f64 {
        let parts: Vec<f64> = a
            .par_chunks(CHUNK)
            .map(|a| a.iter().map(|x| x.abs() as f64).sum())
            .collect();
        parts.iter().sum()
    }

    pub fn max_abs(a: &[f32]) -> f64 {
        a.par_chunks(CHUNK)
            .map(|a| a.iter().fold(0f32, |m, x| m.max(x.abs())))
            .reduce(|| 0f32, f32::max) as f64
    }

    /// `alpha * a`.
    pub fn scaled(a: &[f32], alpha: f64) -> Vec<f32> {
        let alpha = alpha as f32;
        a.par_iter().map(|x| alpha * x).collect()
    }

    /// `a - b`.
    pub fn sub(a: &[f32], b: &[f32]) -> Vec<f32> {
        a.par_iter().zip(b).map(|(x, y)| x - y).collect()
    }

    /// `y += alpha * x`.
    pub fn axpy(y: &mut [f32], alpha: f64, x: &[f32]) {
        let alpha = alpha as f32;
        y.par_iter_mut().zip(x).for_each(|(y, x)| *y += alpha * x);
    }

    /// `out = x0 + t * d`.
    pub fn add_scaled(out: &mut [f32], x0: &[f32], t: f64, d: &[f32]) {
        let t = t as f32;
        out.par_iter_mut()
            .zip(x0.par_iter().zip(d))
            .for_each(|(o, (x, d))| *o = x + t * d);
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

#[cfg(test)]
mod lbfgs_tests {
    use super::*;

    /// f(x) = 1/2 x^T A x - b^T x with A = M^T M + I (symmetric positive
    /// definite), b = A x*: the minimum is at x*, where f = -1/2 x*^T A x*.
    struct Quadratic {
        a: Vec<Vec<f64>>,
        b: Vec<f64>,
        x_star: Vec<f64>,
    }

    impl Quadratic {
        fn new(n: usize) -> Self {
            let m: Vec<Vec<f64>> = (0..n)
                .map(|i| {
                    (0..n)
                        .map(|j| ((i * 7 + j * 3) as f64 * 0.61).sin())
                        .collect()
                })
                .collect();
            let a: Vec<Vec<f64>> = (0..n)
                .map(|i| {
                    (0..n)
                        .map(|j| {
                            (0..n).map(|k| m[k][i] * m[k][j]).sum::<f64>()
                                + if i == j { 1.0 } else { 0.0 }
                        })
                        .collect()
                })
                .collect();
            let x_star: Vec<f64> = (0..n).map(|i| (i as f64 * 0.9).cos()).collect();
            let b = a
                .iter()
                .map(|row| row.iter().zip(&x_star).map(|(a, x)| a * x).sum())
                .collect();
            Self { a, b, x_star }
        }

        fn eval(&self, x: &[f32]) -> (f64, Vec<f32>) {
            let x: Vec<f64> = x.iter().map(|v| *v as f64).collect();
            let ax: Vec<f64> = self
                .a
                .iter()
                .map(|row| row.iter().zip(&x).map(|(a, x)| a * x).sum())
                .collect();
            let f = 0.5 * ax.iter().zip(&x).map(|(a, x)| a * x).sum::<f64>()
                - self.b.iter().zip(&x).map(|(b, x)| b * x).sum::<f64>();
            let g = ax
                .iter()
                .zip(&self.b)
                .map(|(a, b)| (a - b) as f32)
                .collect();
            (f, g)
        }

        fn minimum(&self) -> f64 {
            let x: Vec<f32> = self.x_star.iter().map(|v| *v as f32).collect();
            self.eval(&x).0
        }
    }

    fn solve(q: &Quadratic, cfg: LbfgsConfig) -> (Vec<f32>, LbfgsReport, Vec<f64>) {
        let mut x = vec![0f32; q.b.len()];
        let mut opt = Lbfgs::new(cfg).unwrap();
        let mut losses = Vec::new();
        let rep = opt
            .step(
                &mut x,
                |x| Ok(q.eval(x)),
                |it| {
                    losses.extend(it.loss);
                    true
                },
            )
            .unwrap();
        (x, rep, losses)
    }

    #[test]
    fn quadratic_reaches_the_known_minimum() {
        let q = Quadratic::new(12);
        for line_search in [LineSearch::StrongWolfe, LineSearch::None] {
            let cfg = LbfgsConfig {
                max_iter: 200,
                max_eval: Some(400),
                tolerance_grad: 1e-5,
                history_size: 10,
                line_search,
                ..Default::default()
            };
            let (x, rep, losses) = solve(&q, cfg);
            let err = x
                .iter()
                .zip(&q.x_star)
                .map(|(a, b)| (*a as f64 - b).abs())
                .fold(0.0, f64::max);
            assert!(err < 1e-3, "{line_search:?}: |x - x*| = {err} ({rep:?})");
            let fmin = q.minimum();
            let last = *losses.last().unwrap();
            assert!(
                (last - fmin).abs() < 1e-6 * fmin.abs(),
                "{line_search:?}: {last} vs {fmin}"
            );
            assert!(rep.initial_loss > last);
            // converged (a tolerance test), not cut off by a limit
            assert!(
                !matches!(rep.stop, LbfgsStop::MaxIter | LbfgsStop::MaxEval),
                "{line_search:?}: {rep:?}"
            );
        }
    }

    #[test]
    fn strong_wolfe_never_increases_the_loss() {
        let q = Quadratic::new(8);
        let cfg = LbfgsConfig {
            max_iter: 15,
            line_search: LineSearch::StrongWolfe,
            ..Default::default()
        };
        let (_, rep, losses) = solve(&q, cfg);
        assert!(rep.iterations >= 2);
        let mut prev = rep.initial_loss;
        for l in losses {
            assert!(l <= prev, "{l} > {prev}");
            prev = l;
        }
    }

    #[test]
    fn limits_history_and_callback_stop() {
        let q = Quadratic::new(10);
        // max_iter: the last iteration of a fixed-step run is not evaluated
        let cfg = LbfgsConfig {
            max_iter: 4,
            history_size: 2,
            lr: 0.1,
            ..Default::default()
        };
        let mut opt = Lbfgs::new(cfg).unwrap();
        let mut x = vec![0f32; 10];
        let mut seen = Vec::new();
        let rep = opt
            .step(
                &mut x,
                |x| Ok(q.eval(x)),
                |it| {
                    seen.push((it.iter, it.loss.is_some()));
                    true
                },
            )
            .unwrap();
        assert_eq!(rep.stop, LbfgsStop::MaxIter);
        assert_eq!((rep.iterations, rep.evals), (4, 4));
        assert_eq!(seen, vec![(1, true), (2, true), (3, true), (4, false)]);
        assert!(opt.old_dirs.len() <= 2);
        // state carries over: the next step continues the iteration count
        let mut stops = 0;
        let rep = opt
            .step(
                &mut x,
                |x| Ok(q.eval(x)),
                |_| {
                    stops += 1;
                    false
                },
            )
            .unwrap();
        assert_eq!(
            (rep.stop, rep.iterations, stops),
            (LbfgsStop::Stopped, 1, 1)
        );
        assert_eq!(opt.counts(), (5, 6));
    }

    #[test]
    fn errors_are_reported() {
        assert!(Lbfgs::new(LbfgsConfig {
            history_size: 0,
            ..Default::default()
        })
        .is_err());
        let mut opt = Lbfgs::new(LbfgsConfig::default()).unwrap();
        let mut x = vec![1f32; 3];
        let e = opt
            .step(&mut x, |_| Ok((1.0, vec![1.0; 2])), |_| true)
            .unwrap_err();
        assert!(e.to_string().contains("gradient"), "{e}");
        let e = opt
            .step(&mut x, |_| bail!("objective failed"), |_| true)
            .unwrap_err();
        assert!(e.to_string().contains("objective failed"));
    }

    #[test]
    fn cubic_interpolation_finds_the_minimum_of_a_cubic() {
        // f(t) = (t - 0.3)^2 (a quadratic is a cubic): derivative 2 (t - 0.3)
        let f = |t: f64| (t - 0.3) * (t - 0.3);
        let g = |t: f64| 2.0 * (t - 0.3);
        let t = cubic_interpolate((0.0, f(0.0), g(0.0)), (1.0, f(1.0), g(1.0)), None);
        assert!((t - 0.3).abs() < 1e-12, "{t}");
        // bounded
        let t = cubic_interpolate(
            (0.0, f(0.0), g(0.0)),
            (1.0, f(1.0), g(1.0)),
            Some((0.5, 2.0)),
        );
        assert_eq!(t, 0.5);
    }
}
