//! Handles of submitted jobs: poll them, or wait with or without a timeout. A handle
//! consumes its job's completion exactly once; dropping it first detaches the job, which
//! still runs (its buffers stay alive until the completion is consumed or discarded).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Shared;
use crate::error::{Error, Result};
use crate::job::Completion;
use crate::ring::layout;
use crate::vk::Buffer;

/// A submitted job: poll it, or wait for it with or without a timeout.
/// Dropping an unconsumed handle detaches the job; it still runs.
pub struct JobHandle {
    pub(super) shared: Arc<Shared>,
    pub(super) index: u32,
    pub(super) tag: u64,
    pub(super) consumed: bool,
}

impl JobHandle {
    /// The job's tag.
    pub fn tag(&self) -> u64 {
        self.tag
    }

    /// The job's ring index (its position in submission order).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// A one-line description of the job's ring slot, for diagnostics.
    pub fn describe(&self) -> String {
        self.shared.rings.describe(self.index)
    }

    /// The outcome if the job has finished, without blocking. After an outcome was
    /// returned, every later call returns [`Error::AlreadyConsumed`].
    pub fn poll(&mut self) -> Option<Result<Completion>> {
        self.poll_entry()
            .map(|entry| entry.and_then(|c| outcome(self.tag, c.status, c.results)))
    }

    /// The completion, whatever its status, if the job has finished; errors only for
    /// what the kernel did not report (consumed, runtime failed, cancelled by the sweep).
    fn poll_entry(&mut self) -> Option<Result<Completion>> {
        if self.consumed {
            return Some(Err(Error::AlreadyConsumed { tag: self.tag }));
        }
        match self.shared.rings.take(self.index) {
            Some(entry) => {
                self.consumed = true;
                Some(Ok(Completion {
                    tag: entry.tag,
                    status: entry.status,
                    results: [entry.result0, entry.result1, entry.result2, entry.result3],
                }))
            }
            None => {
                if let Some(failure) = self.shared.failure() {
                    return Some(Err(failure));
                }
                if self.shared.stopped() {
                    // Stopped and not completed: a racing submit published after the sweep.
                    self.consumed = true;
                    return Some(Err(Error::Cancelled { tag: self.tag }));
                }
                None
            }
        }
    }

    /// Waits up to `timeout`; [`Error::Timeout`] leaves the handle usable.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Completion> {
        wait_for(timeout, || self.poll())
    }

    /// Waits until the job finishes, is cancelled, or the runtime fails.
    pub fn wait(mut self) -> Result<Completion> {
        self.wait_timeout(Duration::MAX)
    }
}

impl Drop for JobHandle {
    fn drop(&mut self) {
        if !self.consumed {
            self.shared.rings.detach(self.index);
        }
    }
}

/// Polls until `poll` gives an outcome, backing off, for at most `timeout`.
fn wait_for<T>(timeout: Duration, mut poll: impl FnMut() -> Option<Result<T>>) -> Result<T> {
    let mut backoff = Backoff::new(timeout);
    loop {
        if let Some(outcome) = poll() {
            return outcome;
        }
        if !backoff.snooze() {
            return Err(Error::Timeout(timeout));
        }
    }
}

/// What a completion with `status` and `results` of the job tagged `tag` means.
pub(super) fn outcome(tag: u64, status: u32, results: [u32; 4]) -> Result<Completion> {
    match status {
        layout::STATUS_OK => Ok(Completion { tag, status, results }),
        layout::STATUS_CANCELLED => Err(Error::Cancelled { tag }),
        layout::STATUS_LOST => Err(Error::JobLost { tag }),
        status if status >= layout::STATUS_FAULT_FUEL => Err(Error::Fault(crate::vm::Fault {
            tag,
            status,
            instruction: results[0],
            lane: results[1],
            detail: results[2],
        })),
        status => Err(Error::JobFailed { tag, status }),
    }
}

/// A tiled grid's job ([`crate::Runtime::submit_tiled`]): wait for it to get every tile's
/// results. Dropping it detaches the job; it still runs, and its tile records stay its
/// own until it completes.
pub struct TiledHandle {
    pub(super) handle: JobHandle,
    /// The tiles' `TileResult` records (a spread job), or none for a single tile.
    pub(super) records: Option<Arc<Buffer>>,
    pub(super) tiles: u32,
    /// The job's completion, once taken while some record had not landed yet.
    pub(super) job: Option<Completion>,
}

impl TiledHandle {
    /// Tiles of the grid.
    pub fn tiles(&self) -> u32 {
        self.tiles
    }

    /// The job's tag.
    pub fn tag(&self) -> u64 {
        self.handle.tag
    }

    /// Every tile's outcome if the job has finished, without blocking: the tiles'
    /// completions in order, tagged with their tile number, or the error of the lowest
    /// tile that failed ([`Error::Fault`] tagged with its tile).
    pub fn poll(&mut self) -> Option<Result<Vec<Completion>>> {
        let job = match self.job.take() {
            Some(job) => job,
            None => match self.handle.poll_entry()? {
                Ok(job) => job,
                Err(e) => return Some(Err(e)),
            },
        };
        let Some(records) = &self.records else {
            return Some(outcome(0, job.status, job.results).map(|c| vec![c]));
        };
        if job.status != layout::STATUS_OK && job.status != layout::STATUS_TILE_FAULT {
            let (tag, status) = (job.tag, job.status);
            return Some(outcome(tag, status, job.results).and(Err(Error::JobFailed { tag, status })));
        }
        let size = std::mem::size_of::<layout::TileResult>();
        let mut bytes = vec![0u8; self.tiles as usize * size];
        records.read_bytes(0, &mut bytes);
        let records: Vec<layout::TileResult> = bytes.chunks_exact(size).map(bytemuck::pod_read_unaligned).collect();
        // A device's writes to host memory may land after the completion that follows them:
        // each record says, in its last word, once it is whole.
        let published = u64::from(self.handle.index) + 1;
        if records.iter().any(|r| r.seq != published) {
            self.job = Some(job);
            return None;
        }
        Some(
            records
                .iter()
                .enumerate()
                .map(|(t, r)| outcome(t as u64, r.status, [r.result0, r.result1, r.result2, r.result3]))
                .collect(),
        )
    }

    /// Waits up to `timeout` for every tile; [`Error::Timeout`] leaves the handle usable.
    /// Returns what [`TiledHandle::poll`] returns.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Vec<Completion>> {
        wait_for(timeout, || self.poll())
    }

    /// Waits until every tile has finished, the job is cancelled, or the runtime fails.
    pub fn wait(mut self) -> Result<Vec<Completion>> {
        self.wait_timeout(Duration::MAX)
    }
}

/// Spin briefly, then yield, then sleep: keeps round trips short without burning a core
/// (on lavapipe the "GPU" needs it) when waits are long. A sleep lasts at most 1/16 of the
/// wait so far, so a long job's completion is seen within about 6% of its time.
pub(super) struct Backoff {
    start: Instant,
    timeout: Duration,
    step: u32,
}

impl Backoff {
    pub(super) fn new(timeout: Duration) -> Self {
        Backoff {
            start: Instant::now(),
            timeout,
            step: 0,
        }
    }

    /// Waits a little; false once the timeout has passed.
    pub(super) fn snooze(&mut self) -> bool {
        self.step = self.step.saturating_add(1);
        let waited = self.start.elapsed();
        match Pause::after(self.step, waited) {
            Pause::Spin => std::hint::spin_loop(),
            Pause::Yield => std::thread::yield_now(),
            Pause::Sleep(time) => std::thread::sleep(time),
        }
        waited < self.timeout
    }
}

/// What a waiter does next.
#[derive(Debug, PartialEq, Eq)]
enum Pause {
    Spin,
    Yield,
    Sleep(Duration),
}

impl Pause {
    /// The pause after `step` polls and `waited` time: 2,000 spins, yields until 2 ms, then
    /// sleeps of 1/16 of the wait so far, 20-500 us.
    fn after(step: u32, waited: Duration) -> Pause {
        if step < 2_000 {
            Pause::Spin
        } else if waited < Duration::from_millis(2) {
            Pause::Yield
        } else {
            Pause::Sleep((waited / 16).clamp(Duration::from_micros(20), Duration::from_micros(500)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Duration, Pause};

    #[test]
    fn a_waiter_oversleeps_a_long_job_by_at_most_a_sixteenth() {
        assert_eq!(Pause::after(1, Duration::ZERO), Pause::Spin);
        assert_eq!(Pause::after(5_000, Duration::from_micros(1_999)), Pause::Yield);
        assert_eq!(
            Pause::after(5_000, Duration::from_millis(2)),
            Pause::Sleep(Duration::from_micros(125))
        );
        assert_eq!(
            Pause::after(5_000, Duration::from_millis(4)),
            Pause::Sleep(Duration::from_micros(250))
        );
        assert_eq!(
            Pause::after(5_000, Duration::from_secs(9)),
            Pause::Sleep(Duration::from_micros(500))
        );
        for ms in 2..100 {
            let waited = Duration::from_millis(ms);
            match Pause::after(u32::MAX, waited) {
                Pause::Sleep(time) => assert!(time * 16 <= waited, "{time:?} after {waited:?}"),
                other => panic!("{other:?} after {waited:?}"),
            }
        }
    }
}
