//! A fixed number of worker threads fed by a bounded queue: stylization runs
//! here, never on the async threads. When every worker is busy and the queue
//! is full, [`Pool::submit`] refuses at once (the handler answers 503), so
//! waiting work never grows without bound. A job whose requester has gone
//! (timed out, cancelled by the page) is skipped when a worker reaches it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::oneshot;

use super::error::ApiError;

type Job = Box<dyn FnOnce() + Send>;

/// Queue and worker counts, read by `/metrics` and for `Retry-After`.
#[derive(Default)]
pub struct Load {
    /// Jobs waiting for a worker.
    pub queued: AtomicUsize,
    /// Jobs a worker is running.
    pub running: AtomicUsize,
    /// Jobs skipped because their requester had gone.
    pub skipped: AtomicU64,
    /// Mean job time in microseconds (exponentially weighted).
    mean_us: AtomicU64,
}

pub struct Pool {
    tx: Mutex<Option<SyncSender<Job>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    n_workers: usize,
    closed: AtomicBool,
    pub load: Arc<Load>,
}

impl Pool {
    /// `workers` threads (at least 1) and room for `queue` waiting jobs.
    pub fn new(workers: usize, queue: usize) -> Pool {
        let n = workers.max(1);
        let (tx, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        let handles = (0..n)
            .map(|i| {
                let rx = rx.clone();
                std::thread::Builder::new()
                    .name(format!("adain-worker-{i}"))
                    .spawn(move || loop {
                        // the lock is held only while waiting for the next job
                        let job = match rx.lock().expect("queue lock").recv() {
                            Ok(job) => job,
                            Err(_) => return, // the pool closed
                        };
                        job();
                    })
                    .expect("spawn worker thread")
            })
            .collect();
        Pool {
            tx: Mutex::new(Some(tx)),
            workers: Mutex::new(handles),
            n_workers: n,
            closed: AtomicBool::new(false),
            load: Arc::new(Load::default()),
        }
    }

    /// Queues `f`; its result comes back on the receiver. Refuses when the
    /// queue is full ([`ApiError::Busy`]) or the pool is closing.
    pub fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<oneshot::Receiver<T>, ApiError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(ApiError::ShuttingDown);
        }
        let (done, rx) = oneshot::channel();
        let load = self.load.clone();
        let job: Job = Box::new(move || {
            load.queued.fetch_sub(1, Ordering::SeqCst);
            if done.is_closed() {
                load.skipped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            load.running.fetch_add(1, Ordering::SeqCst);
            let t = Instant::now();
            let r = f();
            let us = t.elapsed().as_micros() as u64;
            let old = load.mean_us.load(Ordering::Relaxed);
            let new = if old == 0 { us } else { (old * 7 + us) / 8 };
            load.mean_us.store(new, Ordering::Relaxed);
            load.running.fetch_sub(1, Ordering::SeqCst);
            let _ = done.send(r);
        });
        let guard = self.tx.lock().expect("pool lock");
        let Some(tx) = guard.as_ref() else {
            return Err(ApiError::ShuttingDown);
        };
        self.load.queued.fetch_add(1, Ordering::SeqCst);
        match tx.try_send(job) {
            Ok(()) => Ok(rx),
            Err(e) => {
                self.load.queued.fetch_sub(1, Ordering::SeqCst);
                match e {
                    TrySendError::Full(_) => Err(ApiError::Busy(self.retry_after())),
                    TrySendError::Disconnected(_) => Err(ApiError::ShuttingDown),
                }
            }
        }
    }

    /// Seconds until a slot is likely free: the mean job time times the jobs
    /// ahead, per worker (at least 1).
    pub fn retry_after(&self) -> u64 {
        let mean = self.load.mean_us.load(Ordering::Relaxed) as f64 / 1e6;
        let ahead = (self.load.queued.load(Ordering::SeqCst)
            + self.load.running.load(Ordering::SeqCst)) as f64;
        ((mean * ahead / self.n_workers as f64).ceil() as u64).max(1)
    }

    pub fn workers(&self) -> usize {
        self.n_workers
    }

    /// Refuses new jobs, lets the queued and running ones finish, joins the workers.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        drop(self.tx.lock().expect("pool lock").take());
        let handles = std::mem::take(&mut *self.workers.lock().expect("pool lock"));
        for h in handles {
            let _ = h.join();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_full_queue_refuses_and_the_rest_run() {
        let pool = Pool::new(1, 1);
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        // the worker takes the first job and blocks on `go`
        let first = pool.submit(move || go_rx.recv().is_ok()).unwrap();
        while pool.load.running.load(Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let second = pool.submit(|| 2).unwrap(); // waits in the queue
        assert!(matches!(pool.submit(|| 3), Err(ApiError::Busy(_))));
        go_tx.send(()).unwrap();
        assert!(first.blocking_recv().unwrap());
        assert_eq!(second.blocking_recv().unwrap(), 2);
        pool.close();
        assert!(matches!(pool.submit(|| 4), Err(ApiError::ShuttingDown)));
    }

    #[test]
    fn a_job_whose_requester_left_is_skipped() {
        let pool = Pool::new(1, 2);
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let first = pool.submit(move || go_rx.recv().is_ok()).unwrap();
        while pool.load.running.load(Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let ran = Arc::new(AtomicBool::new(false));
        let r = ran.clone();
        drop(
            pool.submit(move || r.store(true, Ordering::SeqCst))
                .unwrap(),
        );
        go_tx.send(()).unwrap();
        assert!(first.blocking_recv().unwrap());
        pool.close();
        assert!(!ran.load(Ordering::SeqCst));
        assert_eq!(pool.load.skipped.load(Ordering::SeqCst), 1);
    }
}
