//! What a runtime is built from: the settings a user gives ([`RuntimeConfig`]), the
//! environment (read once, by `RuntimeConfig::default`, never while a runtime runs), and
//! the per-device defaults, in one place ([`DeviceDefaults`]).

use std::time::Duration;

use crate::error::{Error, Result};
use crate::ring::layout;
use crate::vk::{Capabilities, DeviceSelector, Placement};

/// Persistent or batch, as asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ModeRequest {
    /// Persistent if the start-up self-test passes, else batch.
    #[default]
    Auto,
    /// Persistent, or fail to start.
    Persistent,
    /// Batch, without trying persistent.
    Batch,
}

/// Runtime settings. `Default` reads the environment once: `MEGARING_DEVICE`,
/// `MEGARING_VALIDATION`, `MEGARING_VALIDATION_QUIET`, `MEGARING_IDLE_POLLS` and
/// `MEGARING_TRACE`. A running runtime never reads the environment.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Physical device to use.
    pub device: DeviceSelector,
    /// Enable the Khronos validation layer and record its messages.
    pub validation: bool,
    /// Print validation messages on stderr as they come (they are recorded either way;
    /// `Runtime::validation_messages`). Off with `MEGARING_VALIDATION_QUIET`.
    pub validation_echo: bool,
    /// Ring entries (a power of two): the most jobs in flight at once.
    pub ring_entries: u32,
    /// Resident workgroups; `None` picks per device ([`DeviceDefaults`]).
    pub workgroups: Option<u32>,
    /// Lanes per workgroup, a power of two up to 64; `None` picks per device.
    pub lanes: Option<u32>,
    /// VM lanes each invocation interprets in lock step, 4 or 8 (docs/bytecode.md,
    /// "Lanes"): a bytecode job sees `lanes * vm_sublanes` lanes per workgroup. `None`
    /// picks 4 (docs/benchmarks.md compares both).
    pub vm_sublanes: Option<u32>,
    /// Whether the interpreter runs lanes in lock step through its converged dispatcher
    /// (docs/bytecode.md, "Lanes in lock step"). `None` picks per device. Results are the
    /// same either way.
    pub vm_converged: Option<bool>,
    /// Loop iterations one invocation may run per epoch; `None` picks per device. At most
    /// 65,535 on lavapipe (which cuts loops there) and 2^31 elsewhere.
    pub epoch_budget: Option<u32>,
    /// Consecutive empty polls before a workgroup parks; `None` picks per device.
    pub idle_polls: Option<u32>,
    /// Where completion entries live (host memory by default: cheap host polling,
    /// docs/protocol.md).
    pub cq_placement: Placement,
    /// Persistent or batch.
    pub mode: ModeRequest,
    /// No progress for this long while work is pending means the kernel stopped answering
    /// (docs/protocol.md, "The supervisor").
    pub hang_timeout: Duration,
    /// How long a blocking `submit` waits for a free ring entry.
    pub submit_timeout: Duration,
    /// One line per epoch on stderr (`MEGARING_TRACE`).
    pub trace: bool,
    /// The ring index of the first job. Indices wrap at 2^32 whatever the start; tests
    /// start near the wrap to cross it within seconds (docs/protocol.md, "Indices and
    /// slots").
    #[doc(hidden)]
    pub first_index: u32,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        let var = |name: &str| std::env::var(name).ok();
        RuntimeConfig {
            device: DeviceSelector::from_env(),
            validation: var("MEGARING_VALIDATION").is_some_and(|v| v == "1"),
            validation_echo: var("MEGARING_VALIDATION_QUIET").is_none(),
            ring_entries: 1024,
            workgroups: None,
            lanes: None,
            vm_sublanes: None,
            vm_converged: None,
            epoch_budget: None,
            idle_polls: var("MEGARING_IDLE_POLLS").and_then(|v| v.parse().ok()),
            cq_placement: Placement::HostCached,
            mode: ModeRequest::Auto,
            hang_timeout: Duration::from_secs(10),
            submit_timeout: Duration::from_secs(30),
            trace: var("MEGARING_TRACE").is_some(),
            first_index: 0,
        }
    }
}

/// What megaring picks on a device when the configuration leaves a choice open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceDefaults {
    /// Resident workgroups: 1 on lavapipe (a spinning workgroup holds one of the CPU's
    /// cores), 32 elsewhere.
    pub workgroups: u32,
    /// Lanes per workgroup: 8 on lavapipe (one SIMD chunk, no coroutine switch at a
    /// barrier), 64 elsewhere.
    pub lanes: u32,
    /// VM lanes per invocation.
    pub vm_sublanes: u32,
    /// The converged dispatcher: off on lavapipe, where it made scans about 2x slower.
    pub vm_converged: bool,
    /// Loop iterations per epoch: 60,000 on lavapipe (it cuts loops at 65,535), 2^24
    /// elsewhere (long enough that relaunches are rare, short enough that the supervisor
    /// sees the kernel return).
    pub epoch_budget: u32,
    /// Empty polls before parking: about 2,000 passes (milliseconds) on lavapipe, about a
    /// second on a GPU.
    pub idle_polls: u32,
    /// Bytes per chunk of a scan: 64 KiB on lavapipe, 4 MiB elsewhere.
    pub scan_chunk_bytes: usize,
    /// Chunks of a scan in flight: 4 on lavapipe, 16 elsewhere.
    pub scan_slots: usize,
}

impl DeviceDefaults {
    /// The defaults for `caps`' device.
    pub fn for_device(caps: &Capabilities) -> Self {
        if caps.lavapipe {
            DeviceDefaults {
                workgroups: 1,
                lanes: 8,
                vm_sublanes: 4,
                vm_converged: false,
                epoch_budget: 60_000,
                idle_polls: 2_000,
                scan_chunk_bytes: 64 << 10,
                scan_slots: 4,
            }
        } else {
            DeviceDefaults {
                workgroups: 32,
                lanes: 64,
                vm_sublanes: 4,
                vm_converged: true,
                epoch_budget: 1 << 24,
                idle_polls: 1 << 20,
                scan_chunk_bytes: 4 << 20,
                scan_slots: 16,
            }
        }
    }
}

/// The largest epoch budget: the kernel's iteration count must not wrap (a job may add
/// up to a budget's worth past the check that admitted it).
pub const MAX_EPOCH_BUDGET: u32 = 1 << 31;

/// A configuration checked against a device, every choice made.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) defaults: DeviceDefaults,
    pub(crate) workgroups: u32,
    pub(crate) lanes: u32,
    pub(crate) sublanes: u32,
    pub(crate) converged: bool,
    pub(crate) epoch_budget: u32,
    pub(crate) idle_polls: u32,
}

impl RuntimeConfig {
    /// Checks the configuration against the device and fills in its defaults.
    pub(crate) fn settle(&self, caps: &Capabilities) -> Result<Settings> {
        let defaults = DeviceDefaults::for_device(caps);
        if !self.ring_entries.is_power_of_two() || self.ring_entries < 2 || self.ring_entries > 1 << 20 {
            return Err(Error::InvalidConfig(format!(
                "ring_entries = {} must be a power of two between 2 and 2^20",
                self.ring_entries
            )));
        }
        let workgroups = self.workgroups.unwrap_or(defaults.workgroups);
        if workgroups == 0 || workgroups > caps.max_workgroups {
            return Err(Error::InvalidConfig(format!(
                "workgroups = {workgroups}; this device allows 1..={}",
                caps.max_workgroups
            )));
        }
        let lanes = self.lanes.unwrap_or(defaults.lanes);
        if !lanes.is_power_of_two() || lanes > layout::MAX_LANES {
            return Err(Error::InvalidConfig(format!(
                "lanes = {lanes}; use a power of two up to {}",
                layout::MAX_LANES
            )));
        }
        let sublanes = self.vm_sublanes.unwrap_or(defaults.vm_sublanes);
        if sublanes != 4 && sublanes != 8 {
            return Err(Error::InvalidConfig(format!("vm_sublanes = {sublanes}; use 4 or 8")));
        }
        let epoch_budget = self.epoch_budget.unwrap_or(defaults.epoch_budget);
        let min_budget = 2
            * (crate::Job::launch_cost(lanes)
                + layout::EPOCH_RESERVE
                + layout::ITERATIONS_PER_PASS
                + layout::ITERATIONS_PER_JOB);
        let max_budget = if caps.lavapipe { 65_535 } else { MAX_EPOCH_BUDGET };
        if !(min_budget..=max_budget).contains(&epoch_budget) {
            return Err(Error::InvalidConfig(format!(
                "epoch_budget = {epoch_budget}; use {min_budget}..={max_budget} on this device"
            )));
        }
        Ok(Settings {
            defaults,
            workgroups,
            lanes,
            sublanes,
            converged: self.vm_converged.unwrap_or(defaults.vm_converged),
            epoch_budget,
            idle_polls: self.idle_polls.unwrap_or(defaults.idle_polls).min(epoch_budget),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every `.rs` file under `dir`, with its text.
    fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push((path.display().to_string(), std::fs::read_to_string(&path).unwrap()));
            }
        }
    }

    #[test]
    fn the_environment_is_read_only_into_the_configuration_and_never_written() {
        // A runtime that reads the environment while tests (or an application's threads)
        // change it races them; so it is read once, by RuntimeConfig::default.
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        for dir in ["src", "tests", "benches"] {
            sources(&root.join(dir), &mut files);
        }
        let readers = ["src/runtime/config.rs", "src/vk/device.rs"];
        for (path, text) in &files {
            // Strings split so that this file does not name what it looks for.
            for (what, call) in [
                ("reads", concat!("env::", "var")),
                ("writes", concat!("env::", "set_var")),
            ] {
                let allowed =
                    what == "reads" && (readers.iter().any(|r| path.ends_with(r)) || path.contains("/tests/"));
                assert!(
                    allowed || !text.contains(call),
                    "{path} {what} the environment ({call}); read it into RuntimeConfig::default instead"
                );
            }
            assert!(
                !text.contains(concat!("env::", "remove_var")),
                "{path} writes the environment"
            );
        }
    }
}
