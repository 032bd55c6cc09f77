//! The supervisor: one host thread that owns the queue, launches the megakernel in epochs
//! while work is pending, watches each launch for progress, and turns what it sees into
//! outcomes: jobs a cut loop left unfinished end as `STATUS_LOST`, a kernel that stops
//! answering or a lost device fails the runtime, so that no waiter waits forever
//! (docs/protocol.md, "The supervisor").

use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Failure, Shared, OPEN};
use crate::error::Result;
use crate::job::Job;
use crate::ring::ControlWord;
use crate::vk::{ComputePipeline, Dispatcher};

/// Everything the supervisor thread owns.
pub(super) struct Supervisor {
    pub(super) shared: Arc<Shared>,
    pub(super) dispatcher: Dispatcher,
    /// `unplanned_exits` as last seen.
    pub(super) unplanned_seen: u32,
    /// Drop the pipeline after the dispatcher (which waits for the last launch).
    pub(super) _pipeline: ComputePipeline,
}

/// The control-block words that move when the kernel makes progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Progress {
    heartbeat: u32,
    sq_head: u32,
    tiles_done: u32,
    jobs_done: u32,
}

impl Progress {
    fn read(shared: &Shared) -> Self {
        let rings = &shared.rings;
        Progress {
            heartbeat: rings.load(ControlWord::HEARTBEAT),
            sq_head: rings.load(ControlWord::SQ_HEAD),
            tiles_done: rings.load(ControlWord::TILES_DONE),
            jobs_done: rings.load(ControlWord::JOBS_DONE),
        }
    }

    /// Whether work moved since `before`: a claim, a finished tile, or (counted at exit)
    /// a completed job. A heartbeat alone says the kernel runs, not that it gets anywhere.
    fn work_moved_since(&self, before: &Progress) -> bool {
        (self.sq_head, self.tiles_done, self.jobs_done) != (before.sq_head, before.tiles_done, before.jobs_done)
    }
}

/// How long the first launch may take to become resident. lavapipe (llvmpipe) compiles a
/// compute shader at its first dispatch, not at pipeline creation: from a cold shader cache
/// the megakernel took 8.6-25 s on a 2-core machine (more with 8 VM lanes per invocation),
/// longer than `hang_timeout`.
const FIRST_DISPATCH_TIMEOUT: Duration = Duration::from_secs(180);

/// Launches the kernel, waits for it to be resident, and pings it through the ring.
pub(super) fn self_test(
    shared: &Arc<Shared>,
    dispatcher: &mut Dispatcher,
    hang_timeout: Duration,
) -> Result<std::result::Result<Duration, String>> {
    let rings = &shared.rings;
    rings.store(ControlWord::EPOCH, 1);
    shared.launches.fetch_add(1, Ordering::SeqCst);
    shared.ctx.launch_started();
    dispatcher.submit()?;
    let start = Instant::now();
    let mut resident = false;
    while start.elapsed() < hang_timeout.max(FIRST_DISPATCH_TIMEOUT) {
        if rings.load(ControlWord::RESIDENT) > 0 {
            resident = true;
            break;
        }
        if dispatcher.wait(Duration::ZERO)? {
            break;
        }
        std::thread::yield_now();
    }
    let outcome = if !resident {
        Err("the kernel did not become resident".to_owned())
    } else {
        let (index, _) = rings.try_reserve_run(1).expect("fresh ring has room");
        let ping = Job::echo([0x5049_4E47, 1, 2, 3]).with_tag(u64::MAX);
        let sent = Instant::now();
        rings.publish(index, std::iter::once((ping.entry, Vec::new())));
        let mut answer = None;
        while sent.elapsed() < Duration::from_secs(1) && answer.is_none() {
            answer = rings.take(index);
            if answer.is_none() && dispatcher.wait(Duration::ZERO)? {
                break; // the kernel left without answering
            }
        }
        let rtt = sent.elapsed();
        match answer {
            Some(a) if a.tag == u64::MAX && [a.result0, a.result1, a.result2, a.result3] == [0x5049_4E47, 1, 2, 3] => {
                Ok(rtt)
            }
            Some(a) => Err(format!("the kernel answered the ping with a corrupt completion {a:?}")),
            None => {
                rings.detach(index); // the supervisor's first epoch serves it; nobody waits
                Err("a job published while the kernel ran was not seen within 1 s".to_owned())
            }
        }
    };
    // Stop this launch; the supervisor starts the real epochs (and serves an unanswered ping).
    rings.store(ControlWord::SHUTDOWN, 1);
    if !dispatcher.wait(hang_timeout)? {
        shared.ctx.poison();
        return Err(crate::Error::KernelUnresponsive(hang_timeout));
    }
    rings.store(ControlWord::SHUTDOWN, 0);
    shared.ctx.launch_ended();
    Ok(outcome)
}

impl Supervisor {
    pub(super) fn run(mut self) {
        let shared = self.shared.clone();
        // Since when work has been pending through launches that moved none of it.
        let mut stuck_since: Option<Instant> = None;
        loop {
            // Park until work is pending or shutdown begins.
            {
                let mut guard = shared.wake.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    shared.kernel_running.store(false, Ordering::SeqCst);
                    fence(Ordering::SeqCst);
                    if shared.lifecycle.load(Ordering::SeqCst) != OPEN || shared.rings.has_pending() {
                        break;
                    }
                    stuck_since = None;
                    guard = shared
                        .wake_cv
                        .wait_timeout(guard, Duration::from_millis(50))
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
            // Shutting down: claimed spread jobs still finish (a launch with the shutdown flag
            // up runs their tiles, then exits).
            if shared.lifecycle.load(Ordering::SeqCst) != OPEN && !shared.rings.spread_open() {
                return;
            }
            shared.kernel_running.store(true, Ordering::SeqCst);
            let before = Progress::read(&shared);
            let open_before = shared.rings.load(ControlWord::SPREAD_OPEN);
            let draining = shared.lifecycle.load(Ordering::SeqCst) != OPEN;
            shared.rings.store(ControlWord::YIELD, 0);
            let epoch = shared.launches.fetch_add(1, Ordering::SeqCst) + 1;
            shared.rings.store(ControlWord::EPOCH, epoch as u32);
            if let Err(failure) = self.launch() {
                shared.fail(failure);
                shared.kernel_running.store(false, Ordering::SeqCst);
                return;
            }
            // Every job claimed in an epoch completes before the epoch ends, unless the
            // kernel's loop was cut (a driver's iteration limit), or it is a spread job whose
            // tiles go on in the next launch (counted open). A cut loop may skip the kernel's
            // own bookkeeping too, so compare claims with completions and open spread jobs as
            // well as its exit report.
            let after = Progress::read(&shared);
            let claimed = after.sq_head.wrapping_sub(before.sq_head);
            let done = after.jobs_done.wrapping_sub(before.jobs_done);
            let opened = shared.rings.load(ControlWord::SPREAD_OPEN).wrapping_sub(open_before);
            // While shutting down, a launch only drains spread jobs; one that finished no
            // tile would repeat forever, so its jobs are failed instead.
            let stalled = draining && done == 0 && after.tiles_done == before.tiles_done;
            let unplanned = shared.rings.load(ControlWord::UNPLANNED_EXITS);
            if shared.trace {
                let c = shared.rings.control_snapshot();
                eprintln!(
                    "epoch {epoch}: head {}->{} claimed {claimed} done {done} tiles {} exit {} budget {} idle {} max_it {}",
                    before.sq_head,
                    after.sq_head,
                    after.tiles_done.wrapping_sub(before.tiles_done),
                    c.exit_reason,
                    c.budget_exits,
                    c.idle_exits,
                    c.max_iterations
                );
            }
            if unplanned != self.unplanned_seen || claimed.wrapping_sub(done) != opened || stalled {
                self.unplanned_seen = unplanned;
                // Spread jobs of earlier epochs may be among the casualties: fail every
                // claimed job without a completion, and forget the board's.
                let window = after.sq_head.wrapping_sub(shared.rings.entries());
                let lost = shared.rings.fail_unfinished(window, after.sq_head);
                shared.rings.reset_board();
                shared.lost.fetch_add(lost, Ordering::SeqCst);
            }
            // A kernel that keeps being launched with work pending and moves none of it
            // (no claim, no tile, no completion) for `hang_timeout` has stopped answering,
            // even if each launch returns.
            if after.work_moved_since(&before) || !shared.rings.has_pending() {
                stuck_since = None;
            } else if stuck_since.get_or_insert_with(Instant::now).elapsed() > shared.hang_timeout {
                shared.fail(Failure::Unresponsive);
                shared.kernel_running.store(false, Ordering::SeqCst);
                return;
            }
        }
    }

    /// Submits one launch and waits for it to end, watching its progress.
    fn launch(&mut self) -> std::result::Result<(), Failure> {
        #[cfg(feature = "fault-injection")]
        if self.shared.faults.device_lost() {
            self.shared.ctx.poison();
            return Err(Failure::DeviceLost);
        }
        self.shared.ctx.launch_started();
        let outcome = match self.dispatcher.submit() {
            // vkQueueSubmit fails only for lost devices or exhausted memory: either way
            // no kernel can run any more.
            Err(_) => Err(Failure::DeviceLost),
            Ok(()) => self.watch(),
        };
        // The dispatch is over (or the context poisoned, which keeps what it held).
        self.shared.ctx.launch_ended();
        outcome
    }

    /// Waits for the current launch to end. No heartbeat, claim or finished tile for
    /// `hang_timeout` means the kernel stopped answering: it is asked to stop, and if it
    /// does not within another `hang_timeout` the context is poisoned (nothing the
    /// dispatch may use is ever destroyed).
    fn watch(&mut self) -> std::result::Result<(), Failure> {
        let rings = &self.shared.rings;
        let hang_timeout = self.shared.hang_timeout;
        let mut last = Progress::read(&self.shared);
        let mut progress_at = Instant::now();
        loop {
            #[cfg(feature = "fault-injection")]
            if self.shared.faults.device_lost() {
                // As a real loss: the dispatch is beyond reach. It is told to stop, so that
                // a test process is not left with a kernel spinning on its CPU.
                rings.store(ControlWord::SHUTDOWN, 1);
                let _ = self.dispatcher.wait(hang_timeout);
                self.shared.ctx.poison();
                return Err(Failure::DeviceLost);
            }
            match self.dispatcher.wait(Duration::from_millis(5)) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(_) => {
                    self.shared.ctx.poison();
                    return Err(Failure::DeviceLost);
                }
            }
            let now = Progress::read(&self.shared);
            if now != last {
                last = now;
                progress_at = Instant::now();
            } else if progress_at.elapsed() > hang_timeout {
                rings.store(ControlWord::SHUTDOWN, 1);
                if !matches!(self.dispatcher.wait(hang_timeout), Ok(true)) {
                    self.shared.ctx.poison();
                }
                return Err(Failure::Unresponsive);
            }
        }
    }
}
