//! Fault injection for tests (feature `fault-injection`, never in a default build): a
//! kernel that stops answering, a kernel that cannot be stopped, a claim a cut loop
//! leaves unfinished, and a lost device. Each drives the runtime's real recovery paths
//! (docs/protocol.md, "Guarantees").

use std::sync::atomic::{AtomicBool, Ordering};

use super::Runtime;
use crate::ring::{layout, ControlWord};

/// A fault to inject into a running [`Runtime`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFault {
    /// Workgroups stop claiming jobs, taking tiles and beating the heartbeat; they still
    /// leave for budget and shutdown. The supervisor declares the kernel unresponsive.
    Stall,
    /// As `Stall`, and shutdown is ignored too: only the epoch budget ends a launch. If
    /// a launch outlasts two `hang_timeout`s, the context is poisoned.
    Hang,
    /// The next workgroup about to run a job or a tile leaves the loop instead, its claim
    /// unfinished, as when a driver cuts the loop: the supervisor fails the claimed jobs
    /// with `STATUS_LOST` and resets the board. One-shot.
    DropNextClaim,
    /// The next time the supervisor looks, the device is lost: the context is poisoned
    /// and the runtime fails with `Error::DeviceLost`.
    DeviceLost,
}

/// Host-side injected state.
#[derive(Debug, Default)]
pub(super) struct Injected {
    device_lost: AtomicBool,
}

impl Injected {
    pub(super) fn device_lost(&self) -> bool {
        self.device_lost.load(Ordering::SeqCst)
    }
}

impl Runtime {
    /// Injects `fault` (tests only: feature `fault-injection`).
    pub fn inject_fault(&self, fault: KernelFault) {
        let word = match fault {
            KernelFault::Stall => layout::FAULT_STALL,
            KernelFault::Hang => layout::FAULT_HANG,
            KernelFault::DropNextClaim => layout::FAULT_DROP,
            KernelFault::DeviceLost => {
                self.shared.faults.device_lost.store(true, Ordering::SeqCst);
                self.shared.wake_supervisor();
                return;
            }
        };
        self.shared.rings.store(ControlWord::FAULT, word);
    }

    /// Ends an injected `Stall`, `Hang` or pending `DropNextClaim` (a lost device stays lost).
    pub fn clear_fault(&self) {
        self.shared.rings.store(ControlWord::FAULT, layout::FAULT_NONE);
    }

    /// Whether the device context is poisoned (a dispatch could not be stopped, or the
    /// device was lost): nothing it may use is ever destroyed.
    pub fn poisoned(&self) -> bool {
        self.shared.ctx.is_poisoned()
    }
}
