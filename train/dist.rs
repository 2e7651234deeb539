//! Data-parallel training: which process this is among how many, and the few
//! collectives a run needs. Nothing here is a protocol of our own: the
//! processes are started by a standard launcher (`mpirun -n N adain-train
//! ...`, Open MPI) and talk through MPI (feature `mpi`), or through NCCL on
//! GPUs (feature `nccl`, with MPI only starting the processes and sharing the
//! NCCL id).
//!
//! Semantics (README "Training on several processes"): `--batch-size` is the
//! global batch, split evenly; every rank draws the same global batch sequence
//! and takes its slice; the gradients (and the step's losses and the stop
//! flag, in the same buffer) are summed with one all-reduce per step and
//! divided by the world size, so every rank applies the same Adam update.
//! Rank 0 alone reads and writes the run directory and sends the starting
//! state to the others.
//!
//! A failure on any rank ends the whole job: an error calls `MPI_Abort`, and
//! Open MPI's `mpirun` kills the job when a rank dies (no rank waits forever
//! in a collective).

use anyhow::{bail, Result};
use candle_core::Tensor;

/// Environment variables a launcher sets in every process it starts, with the
/// world size: Open MPI, MPICH/Hydra and Slurm/PMI, PMIx.
const LAUNCHER_SIZE_VARS: [&str; 3] = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"];

/// The world size a launcher announced, if this process was started by one.
fn launcher_size() -> Option<usize> {
    LAUNCHER_SIZE_VARS
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
}

/// This process's place in a data-parallel job (a world of one when started
/// without a launcher).
pub struct Dist {
    rank: usize,
    size: usize,
    backend: Backend,
    /// NCCL over the ranks' GPUs, once [`Dist::attach_device`] has set it up.
    #[cfg(feature = "nccl")]
    nccl: std::cell::OnceCell<nccl_backend::Nccl>,
}

enum Backend {
    Single,
    #[cfg(feature = "mpi")]
    Mpi(mpi_backend::Mpi),
}

impl Dist {
    /// A world of one: no launcher, no communication.
    pub fn single() -> Self {
        Self {
            rank: 0,
            size: 1,
            backend: Backend::Single,
            #[cfg(feature = "nccl")]
            nccl: Default::default(),
        }
    }

    /// Joins the job the launcher started (MPI), or a world of one. A binary
    /// built without the `mpi` feature refuses to run under a launcher with
    /// more than one process: N independent runs would write one directory.
    pub fn from_launcher() -> Result<Self> {
        let announced = launcher_size();
        #[cfg(feature = "mpi")]
        if announced.is_some() {
            let m = mpi_backend::Mpi::init()?;
            let (rank, size) = (m.rank(), m.size());
            return Ok(Self {
                rank,
                size,
                backend: Backend::Mpi(m),
                #[cfg(feature = "nccl")]
                nccl: Default::default(),
            });
        }
        if let Some(n) = announced.filter(|&n| n > 1) {
            bail!(
                "started by an MPI launcher with {n} processes, but this adain-train was built without MPI: \
                 rebuild with `cargo build --release --features mpi`"
            );
        }
        Ok(Self::single())
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether steps go through the all-reduce: under a launcher, even a
    /// world of one (so `mpirun -n 1` exercises the path, e.g. as a smoke test).
    pub fn reduces(&self) -> bool {
        !matches!(self.backend, Backend::Single)
    }

    /// Rank 0: the one that owns the run directory, the logs and the bar.
    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// This process's index among the ranks on its machine (the GPU it
    /// drives), from the launcher's environment.
    pub fn local_rank(&self) -> usize {
        [
            "OMPI_COMM_WORLD_LOCAL_RANK",
            "MPI_LOCALRANKID",
            "SLURM_LOCALID",
        ]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
        .unwrap_or(0)
    }

    /// The device this rank trains on: with more than one rank and
    /// `--device cuda`, GPU `local_rank` (one process per GPU) and, in a
    /// build with the `nccl` feature, an NCCL communicator over the ranks'
    /// GPUs for the gradients.
    pub fn device(&self, name: &str) -> Result<candle_core::Device> {
        if name != "cuda" || !self.reduces() {
            return adain::runtime::device(name);
        }
        adain::runtime::device(name)?; // the "no CUDA in this build" message
        let device = candle_core::Device::new_cuda(self.local_rank())?;
        #[cfg(feature = "nccl")]
        if let Backend::Mpi(m) = &self.backend {
            let n = nccl_backend::Nccl::init(m, &device)?;
            let _ = self.nccl.set(n);
        }
        Ok(device)
    }

    /// Which backend carries the collectives, for the log.
    pub fn backend_name(&self) -> &'static str {
        #[cfg(feature = "nccl")]
        if self.nccl.get().is_some() {
            return "nccl";
        }
        match &self.backend {
            Backend::Single => "none",
            #[cfg(feature = "mpi")]
            Backend::Mpi(_) => "mpi",
        }
    }

    /// Element-wise sum over all ranks of a 1-D f32 tensor, in one call (the
    /// result is on the tensor's device).
    pub fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
        #[cfg(feature = "nccl")]
        if let (Some(n), true) = (self.nccl.get(), t.device().is_cuda()) {
            return n.all_reduce_sum(t);
        }
        match &self.backend {
            Backend::Single => Ok(t.clone()),
            #[cfg(feature = "mpi")]
            Backend::Mpi(m) => {
                let mut buf = t.to_vec1::<f32>()?;
                m.all_reduce_sum(&mut buf)?;
                Ok(Tensor::from_vec(buf, t.dims1()?, t.device())?)
            }
        }
    }

    /// Rank 0's `buf` on every rank (all ranks pass a buffer of the same length).
    pub fn broadcast_f32(&self, buf: &mut [f32]) -> Result<()> {
        match &self.backend {
            Backend::Single => {
                let _ = buf; // a world of one already holds rank 0's values
                Ok(())
            }
            #[cfg(feature = "mpi")]
            Backend::Mpi(m) => m.broadcast_f32(buf),
        }
    }

    /// Rank 0's bytes on every rank (the others' input is ignored; lengths may differ).
    pub fn broadcast_bytes(&self, bytes: Vec<u8>) -> Result<Vec<u8>> {
        match &self.backend {
            Backend::Single => Ok(bytes),
            #[cfg(feature = "mpi")]
            Backend::Mpi(m) => m.broadcast_bytes(bytes),
        }
    }

    /// Whether `flag` holds on any rank (every rank gets the same answer).
    pub fn any(&self, flag: bool) -> Result<bool> {
        let t = Tensor::new(&[flag as u8 as f32], &candle_core::Device::Cpu)?;
        Ok(self.all_reduce_sum(&t)?.to_vec1::<f32>()?[0] > 0.0)
    }

    /// Ends the whole job after `message` (an error on one rank must not leave
    /// the others waiting in a collective). In a world of one, just exits.
    pub fn fail(&self, message: &str, code: i32) -> ! {
        if self.size > 1 {
            eprintln!("error (rank {} of {}): {message}", self.rank, self.size);
        } else {
            eprintln!("error: {message}");
        }
        match &self.backend {
            Backend::Single => std::process::exit(code),
            #[cfg(feature = "mpi")]
            Backend::Mpi(m) => m.abort(code),
        }
    }
}

#[cfg(feature = "mpi")]
mod mpi_backend {
    use anyhow::{bail, Context, Result};
    use mpi::collective::SystemOperation;
    use mpi::environment::Universe;
    use mpi::topology::SimpleCommunicator;
    use mpi::traits::*;
    use mpi::Threading;

    /// MPI's world communicator; dropping it finalises MPI.
    pub struct Mpi {
        world: SimpleCommunicator,
        _universe: Universe,
    }

    impl Mpi {
        pub fn init() -> Result<Self> {
            // Only the main thread calls MPI (the loader and rayon threads never do).
            let (universe, _level) = mpi::initialize_with_threading(Threading::Funneled)
                .context("MPI could not be initialised (is this process started by mpirun?)")?;
            let world = universe.world();
            Ok(Self {
                world,
                _universe: universe,
            })
        }

        pub fn rank(&self) -> usize {
            self.world.rank() as usize
        }

        pub fn size(&self) -> usize {
            self.world.size() as usize
        }

        pub fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
            if buf.len() > i32::MAX as usize {
                bail!(
                    "all-reduce of {} values: more than MPI can count",
                    buf.len()
                );
            }
            let send = buf.to_vec();
            self.world
                .all_reduce_into(&send[..], buf, SystemOperation::sum());
            Ok(())
        }

        pub fn broadcast_f32(&self, buf: &mut [f32]) -> Result<()> {
            self.world.process_at_rank(0).broadcast_into(buf);
            Ok(())
        }

        pub fn broadcast_bytes(&self, bytes: Vec<u8>) -> Result<Vec<u8>> {
            let root = self.world.process_at_rank(0);
            let mut len = bytes.len() as u64;
            root.broadcast_into(&mut len);
            let mut out = if self.rank() == 0 {
                bytes
            } else {
                vec![0u8; len as usize]
            };
            root.broadcast_into(&mut out[..]);
            Ok(out)
        }

        pub fn abort(&self, code: i32) -> ! {
            self.world.abort(code)
        }
    }
}

/// NCCL on GPUs: MPI started the processes; rank 0 makes an NCCL id and MPI
/// sends it to the others; the gradient buffer is then summed on the GPUs
/// (never through host memory). Untested on hardware so far (README).
#[cfg(feature = "nccl")]
mod nccl_backend {
    use std::sync::Arc;

    use anyhow::{anyhow, bail, Result};
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::nccl::safe::{Comm, Id, ReduceOp};
    use candle_core::{CpuStorage, CudaStorage, CustomOp1, Device, Layout, Shape, Tensor};

    pub struct Nccl {
        comm: Arc<Comm>,
    }

    impl Nccl {
        pub fn init(mpi: &super::mpi_backend::Mpi, device: &Device) -> Result<Self> {
            let Device::Cuda(cuda) = device else {
                bail!("NCCL needs a CUDA device");
            };
            let mine = if mpi.rank() == 0 {
                let id = Id::new().map_err(|e| anyhow!("NCCL: cannot create an id: {e:?}"))?;
                id.internal().iter().map(|&c| c as u8).collect()
            } else {
                Vec::new()
            };
            let bytes = mpi.broadcast_bytes(mine)?;
            if bytes.len() != 128 {
                bail!(
                    "NCCL: the id from rank 0 has {} bytes, expected 128",
                    bytes.len()
                );
            }
            let mut internal = [0 as std::ffi::c_char; 128];
            for (d, b) in internal.iter_mut().zip(&bytes) {
                *d = *b as std::ffi::c_char;
            }
            let comm = Comm::from_rank(
                cuda.cuda_stream(),
                mpi.rank(),
                mpi.size(),
                Id::uninit(internal),
            )
            .map_err(|e| anyhow!("NCCL: cannot join the communicator: {e:?}"))?;
            Ok(Self {
                comm: Arc::new(comm),
            })
        }

        pub fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
            let op = AllReduce {
                comm: self.comm.clone(),
            };
            Ok(t.contiguous()?.apply_op1_no_bwd(&op)?)
        }
    }

    struct AllReduce {
        comm: Arc<Comm>,
    }

    // The communicator is used from the training thread only; candle's
    // CustomOp1 asks for Send + Sync because ops may be shared.
    unsafe impl Send for AllReduce {}
    unsafe impl Sync for AllReduce {}

    impl CustomOp1 for AllReduce {
        fn name(&self) -> &'static str {
            "nccl-all-reduce-sum"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            candle_core::bail!("NCCL all-reduce of a tensor on the CPU")
        }

        fn cuda_fwd(
            &self,
            s: &CudaStorage,
            l: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let n = l.shape().elem_count();
            let Some((start, end)) = l.contiguous_offsets() else {
                candle_core::bail!("NCCL all-reduce of a strided tensor");
            };
            let dev = s.device().clone();
            let src = s.as_cuda_slice::<f32>()?.slice(start..end);
            // SAFETY: every element is written by the all-reduce below.
            let mut dst = unsafe { dev.alloc::<f32>(n) }?;
            self.comm
                .all_reduce(&src, &mut dst, &ReduceOp::Sum)
                .map_err(|e| candle_core::Error::msg(format!("NCCL all-reduce: {e:?}")))?;
            Ok((CudaStorage::wrap_cuda_slice(dst, dev), l.shape().clone()))
        }
    }
}
