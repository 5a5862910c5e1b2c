//! The dynamic batcher: one worker thread that merges queued jobs into large forward passes.

use super::{EngineObserver, ImageBatch, Output, Runner, Task};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// One caller's work: a task on some images and where to send the result.
pub(crate) struct Job {
    task: Task,
    images: ImageBatch,
    reply: oneshot::Sender<Output>,
}

impl Job {
    pub(crate) fn new(task: Task, images: ImageBatch) -> (Self, Pending) {
        let (reply, rx) = oneshot::channel();
        (
            Self {
                task,
                images,
                reply,
            },
            Pending { rx },
        )
    }
}

/// A result still being computed. Await it; drop it to cancel.
pub struct Pending {
    rx: oneshot::Receiver<Output>,
}

impl Future for Pending {
    type Output = Result<Output, super::EngineError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.map_err(|_| super::EngineError::Stopped))
    }
}

/// Starts the worker; it stops when every sender is gone and the queue is drained, or (a test
/// hook, see `Engine::stop_worker`) when `halt` is set, dropping the jobs it holds.
pub(crate) fn spawn(
    runner: Arc<Runner>,
    max_batch: usize,
    max_delay: Duration,
    queued: Arc<AtomicUsize>,
    observer: Arc<dyn EngineObserver>,
    alive: Arc<AtomicBool>,
    halt: Arc<AtomicBool>,
) -> std::io::Result<mpsc::Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("aelabel-batcher".into())
        .spawn(move || {
            // Cleared when the thread ends for any reason, a panic in the maths included.
            let _alive = AliveGuard(alive);
            let mut carry: Option<Job> = None;
            while let Some(first) = carry.take().or_else(|| rx.recv().ok()) {
                let jobs = gather(first, &rx, max_batch, max_delay, &mut carry);
                let taken: usize = jobs.iter().map(|j| j.images.len()).sum();
                let depth = queued.fetch_sub(taken, Ordering::Relaxed) - taken;
                observer.queue_depth(depth);
                if halt.load(Ordering::Acquire) {
                    // Ends like a crash: the jobs are dropped, their callers see `Stopped`.
                    break;
                }
                run_jobs(&runner, jobs, observer.as_ref());
            }
        })?;
    Ok(tx)
}

/// Marks the worker as gone when dropped.
struct AliveGuard(Arc<AtomicBool>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Collects jobs after `first` until `max_batch` images, an empty queue past the deadline, or
/// a job that would overflow the batch (kept in `carry` for the next round).
fn gather(
    first: Job,
    rx: &mpsc::Receiver<Job>,
    max_batch: usize,
    max_delay: Duration,
    carry: &mut Option<Job>,
) -> Vec<Job> {
    let deadline = Instant::now() + max_delay;
    let mut images = first.images.len();
    let mut jobs = vec![first];
    while images < max_batch {
        let next = match rx.try_recv() {
            Ok(job) => job,
            Err(mpsc::TryRecvError::Disconnected) => break,
            Err(mpsc::TryRecvError::Empty) => {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                match rx.recv_timeout(deadline - now) {
                    Ok(job) => job,
                    Err(_) => break,
                }
            }
        };
        if images + next.images.len() > max_batch {
            *carry = Some(next);
            break;
        }
        images += next.images.len();
        jobs.push(next);
    }
    jobs
}

/// Runs the live jobs, one merged forward pass per task, and sends each caller its rows.
fn run_jobs(runner: &Runner, jobs: Vec<Job>, observer: &dyn EngineObserver) {
    // A caller that went away has dropped its receiver: skip its work.
    let mut live: Vec<Job> = jobs.into_iter().filter(|j| !j.reply.is_closed()).collect();
    for task in [Task::Encode, Task::Reconstruct, Task::Label] {
        let (group, rest): (Vec<Job>, Vec<Job>) = live.into_iter().partition(|j| j.task == task);
        live = rest;
        if group.is_empty() {
            continue;
        }
        let started = Instant::now();
        let n: usize = group.iter().map(|j| j.images.len()).sum();
        let output = if let [only] = group.as_slice() {
            runner.run(task, only.images.pixels(), n)
        } else {
            let mut pixels = Vec::with_capacity(n * group[0].images.image_size());
            for job in &group {
                pixels.extend_from_slice(job.images.pixels());
            }
            runner.run(task, &pixels, n)
        };
        observer.batch_done(task, n, group.len(), started.elapsed().as_secs_f64());
        if let [_] = group.as_slice() {
            if let Some(job) = group.into_iter().next() {
                let _ = job.reply.send(output);
            }
            continue;
        }
        let width = output.width;
        let mut start = 0;
        for job in group {
            let end = start + job.images.len() * width;
            let _ = job.reply.send(Output {
                values: output.values[start..end].to_vec(),
                width,
            });
            start = end;
        }
    }
}
