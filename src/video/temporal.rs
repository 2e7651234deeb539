//! Frames stylized one after another with temporal state: what `adain
//! video`, the server's webcam mode and `adain eval-video` share.
//!
//! Modes (`--temporal`):
//! - `none`: every frame on its own, as `adain stylize` would do it;
//! - `stats`: the content's relu4_1 statistics smoothed over time
//!   ([`StatsEma`]): no brightness or colour pumping, the texture still flickers;
//! - `flow`: `stats` plus flow-guided blending, the feed-forward form of Ruder
//!   et al.'s temporal constraint: the previous output is warped along the
//!   dense flow (DIS) into the current frame and blended with the current
//!   stylization wherever the flow is consistent forwards and backwards, so
//!   the texture moves with the scene instead of boiling.

use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use image::{DynamicImage, GrayImage, RgbImage};

use super::blend::{self, Blend};
use super::flow::{self, FrameF};
use crate::engine::{Engine, Job, Request, Settings, Style};
use crate::image_io::Source;
use crate::stylize::StatsEma;

/// `--temporal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Temporal {
    /// Each frame on its own (flickers).
    None,
    /// Content statistics smoothed over time (no colour pumping; texture still flickers).
    Stats,
    /// Statistics smoothed and the previous output carried along the optical flow.
    Flow,
}

/// The defaults, chosen by measurement (README, "Video").
pub const EMA_MOMENTUM: f64 = 0.9;
pub const FLOW_STRENGTH: f32 = 0.35;
/// Below this share of trusted pixels (a cut, a flash) a frame starts afresh.
pub const MIN_TRUSTED: f32 = 0.2;

/// What carries over from one frame to the next.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// The smoothed content statistics (`stats`, `flow`).
    pub ema: Option<StatsEma>,
    /// The previous input and output frames (`flow`).
    pub prev: Option<(RgbImage, RgbImage)>,
}

/// Stylizes the frames of one stream in order.
pub struct FrameStylizer {
    engine: Arc<Engine>,
    styles: Vec<Arc<Style>>,
    job: Job,
    masks: Vec<GrayImage>,
    settings: Settings,
    mode: Temporal,
    strength: f32,
    blend: Blend,
    ema: Option<Arc<Mutex<StatsEma>>>,
    prev: Option<(RgbImage, RgbImage)>,
    dis: Option<flow::Dis>,
}

impl FrameStylizer {
    /// `styles`, `job`, `masks` and `settings` as for [`Engine::stylize`];
    /// `strength` in [0, 1] is how much of the warped previous output the
    /// flow mode keeps where it is trusted, `blend` how it mixes it in.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        engine: Arc<Engine>,
        styles: Vec<Arc<Style>>,
        job: Job,
        masks: Vec<GrayImage>,
        settings: Settings,
        mode: Temporal,
        strength: f32,
        blend: Blend,
    ) -> Result<Self> {
        if !(0.0..=1.0).contains(&strength) {
            bail!("flow strength {strength} is outside [0, 1]");
        }
        let dis = match mode {
            Temporal::Flow => Some(flow::Dis::new()?),
            _ => None,
        };
        let ema = match mode {
            Temporal::None => None,
            _ => Some(Arc::new(Mutex::new(StatsEma::new(EMA_MOMENTUM)))),
        };
        Ok(Self {
            engine,
            styles,
            job,
            masks,
            settings,
            mode,
            strength,
            blend,
            ema,
            prev: None,
            dis,
        })
    }

    pub fn mode(&self) -> Temporal {
        self.mode
    }

    /// The next frame with the styles given at construction.
    pub fn frame(&mut self, rgb: &RgbImage) -> Result<RgbImage> {
        let styles = self.styles.clone();
        self.frame_with(rgb, &styles)
    }

    /// The next frame with these styles (a style video: this frame's).
    pub fn frame_with(&mut self, rgb: &RgbImage, styles: &[Arc<Style>]) -> Result<RgbImage> {
        let src = Source {
            image: DynamicImage::ImageRgb8(rgb.clone()),
            alpha: None,
        };
        let req = Request {
            content: &src,
            content_name: "frame",
            styles,
            job: &self.job,
            masks: &self.masks,
            settings: &self.settings,
        };
        // The motion (two flows, the trust map, the warped previous output)
        // depends on the inputs and the previous output only, so it runs on a
        // second thread beside the network: on 2 cores it fills the gaps
        // between the network's parallel sections (see `Motion`).
        let prev = match (self.mode, self.prev.take()) {
            (Temporal::Flow, Some(p)) if p.0.dimensions() == rgb.dimensions() => Some(p),
            _ => None,
        };
        let (engine, ema, dis) = (&self.engine, self.ema.as_ref(), &mut self.dis);
        let (styled, motion) = std::thread::scope(|scope| {
            let motion = prev.as_ref().map(|(prev_in, prev_out)| {
                scope.spawn(move || Motion::between(dis, prev_in, prev_out, rgb))
            });
            let styled = engine.stylize_smoothed(&req, ema, &mut |_| {});
            let motion = motion.map(|h| h.join().expect("motion thread"));
            (styled, motion)
        });
        let styled = styled?;
        let out = match motion.transpose()?.flatten() {
            Some(m) => m.blend(&styled, self.strength, self.blend),
            None => styled,
        };
        if self.mode == Temporal::Flow {
            self.prev = Some((rgb.clone(), out.clone()));
        }
        Ok(out)
    }

    /// What a resumed job needs to continue exactly.
    pub fn state(&self) -> State {
        State {
            ema: self
                .ema
                .as_ref()
                .map(|e| e.lock().expect("stats lock").clone()),
            prev: self.prev.clone(),
        }
    }

    pub fn restore(&mut self, state: State) {
        if let (Some(e), Some(saved)) = (&self.ema, state.ema) {
            *e.lock().expect("stats lock") = saved;
        }
        self.prev = state.prev;
    }
}

/// What the flow mode carries from the previous frame into this one: the
/// previous output warped along the backward flow, and where that warp is
/// trusted (forward-backward consistent, softened at the edges).
struct Motion {
    warped: FrameF,
    trust: Vec<f32>,
}

impl Motion {
    /// `None` where too little of the frame is trusted (a cut, a flash): the
    /// frame then starts afresh.
    fn between(
        dis: &mut Option<flow::Dis>,
        prev_in: &RgbImage,
        prev_out: &RgbImage,
        cur_in: &RgbImage,
    ) -> Result<Option<Self>> {
        let dis = dis.as_mut().context("flow mode without an estimator")?;
        let bwd = dis.flow(cur_in, prev_in)?;
        let fwd = dis.flow(prev_in, cur_in)?;
        let (w, h) = (bwd.width, bwd.height);
        let trust = flow::consistency(&bwd, &fwd);
        let trusted = trust.iter().sum::<f32>() / trust.len() as f32;
        if trusted < MIN_TRUSTED {
            return Ok(None);
        }
        Ok(Some(Self {
            trust: flow::soften(&trust, w, h, 2),
            warped: flow::warp(&FrameF::of(prev_out), &bwd),
        }))
    }

    /// The warped previous output blended into this frame's stylization,
    /// `strength` of it where fully trusted.
    fn blend(&self, styled: &RgbImage, strength: f32, how: Blend) -> RgbImage {
        let s = FrameF::of(styled);
        let alpha: Vec<f32> = self.trust.iter().map(|t| strength * t).collect();
        let out = match how {
            Blend::KeepContrast => blend::keep_contrast(&s, &self.warped, &alpha),
            Blend::Plain => blend::plain(&s, &self.warped, &alpha),
        };
        out.to_rgb8()
    }
}

/// Flicker of an output sequence, accumulated frame by frame.
///
/// - `e_fd`: the flow-free frame-difference error, mean over t of
///   mean(((O_t - O_{t-1}) - (I_t - I_{t-1}))^2) on 8-bit RGB in [0, 1]:
///   output changes should follow input changes;
/// - `e_warp` (with a flow estimator): the warping error of Lai et al.
///   2018, the mean squared difference between O_t and O_{t-1} warped along
///   the flow of the INPUT frames, over pixels the flow trusts (forward-backward
///   consistent). Uses Farneback, not the flow mode's DIS.
#[derive(Debug, Default)]
pub struct Flicker {
    prev: Option<(RgbImage, RgbImage)>,
    warp: bool,
    fd_sum: f64,
    fd_n: usize,
    warp_sum: f64,
    warp_n: usize,
}

impl Flicker {
    /// `warp`: also the warping error (two Farneback flows a frame).
    pub fn new(warp: bool) -> Self {
        Self {
            warp,
            ..Default::default()
        }
    }

    pub fn add(&mut self, input: &RgbImage, output: &RgbImage) -> Result<()> {
        if let Some((pi, po)) = &self.prev {
            if pi.dimensions() != input.dimensions() || po.dimensions() != output.dimensions() {
                bail!("frames change size mid-stream");
            }
            let mut s = 0f64;
            for (((&a, &b), &c), &d) in output
                .as_raw()
                .iter()
                .zip(po.as_raw())
                .zip(input.as_raw())
                .zip(pi.as_raw())
            {
                let e = (a as f64 - b as f64 - (c as f64 - d as f64)) / 255.0;
                s += e * e;
            }
            self.fd_sum += s / output.as_raw().len() as f64;
            self.fd_n += 1;
            if self.warp {
                let bwd = flow::farneback(input, pi)?;
                let fwd = flow::farneback(pi, input)?;
                let trust = flow::consistency(&bwd, &fwd);
                let warped = flow::warp(&FrameF::of(po), &bwd);
                let cur = FrameF::of(output);
                let (mut s, mut n) = (0f64, 0f64);
                for (i, &t) in trust.iter().enumerate() {
                    if t > 0.0 {
                        for c in 0..3 {
                            let d = (cur.data[i * 3 + c] - warped.data[i * 3 + c]) as f64;
                            s += d * d / 3.0;
                        }
                        n += 1.0;
                    }
                }
                if n > 0.0 {
                    self.warp_sum += s / n;
                    self.warp_n += 1;
                }
            }
        }
        self.prev = Some((input.clone(), output.clone()));
        Ok(())
    }

    pub fn e_fd(&self) -> Option<f64> {
        (self.fd_n > 0).then(|| self.fd_sum / self.fd_n as f64)
    }

    pub fn e_warp(&self) -> Option<f64> {
        (self.warp_n > 0).then(|| self.warp_sum / self.warp_n as f64)
    }
}
