//! The device context: physical-device choice, the logical device with the features the
//! megakernel needs, one compute queue, and the memory allocator. Teardown order is
//! allocator, device, instance (messenger first), loader last.

use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use ash::vk;
use gpu_allocator::vulkan::{Allocator, AllocatorCreateDesc};

use super::caps::Capabilities;
use super::instance::{Instance, ValidationLog};
use super::memory::Memory;
use crate::error::{AllocationError, Error, Result};

/// Which physical device to use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum DeviceSelector {
    /// Discrete > integrated > virtual > CPU, first in the list on ties.
    #[default]
    Auto,
    /// The device at this index in `megaring info`'s list.
    Index(usize),
    /// The first device whose name contains this text (case-insensitive).
    Name(String),
}

impl DeviceSelector {
    /// Reads `MEGARING_DEVICE` (see [`DeviceSelector::parse`]); `Auto` when unset.
    pub fn from_env() -> Self {
        std::env::var("MEGARING_DEVICE").map_or(DeviceSelector::Auto, |s| Self::parse(&s))
    }

    /// An index, or a name substring; `Auto` for an empty text.
    pub fn parse(text: &str) -> Self {
        match text.trim() {
            "" => DeviceSelector::Auto,
            s => s
                .parse::<usize>()
                .map_or_else(|_| DeviceSelector::Name(s.to_owned()), DeviceSelector::Index),
        }
    }
}

/// Lists every physical device the loader exposes, without creating a device.
pub fn list_devices() -> Result<Vec<Capabilities>> {
    let instance = Instance::new(false, false)?;
    probe_all(&instance)
}

fn probe_all(instance: &Instance) -> Result<Vec<Capabilities>> {
    // SAFETY: plain query on a live instance.
    let physicals =
        unsafe { instance.raw.enumerate_physical_devices() }.map_err(Error::vk("vkEnumeratePhysicalDevices"))?;
    Ok(physicals
        .iter()
        .enumerate()
        .map(|(i, &p)| Capabilities::probe(&instance.raw, p, i))
        .collect())
}

/// A logical device ready for compute, with its queue and allocator.
pub struct Context {
    /// `VK_EXT_external_memory_host`'s functions, where the device has it.
    pub(crate) external_memory_host: Option<ash::ext::external_memory_host::Device>,
    /// `VK_KHR_pipeline_executable_properties`' functions, where the device has them.
    pub(crate) pipeline_executable: Option<ash::khr::pipeline_executable_properties::Device>,
    allocator: ManuallyDrop<Mutex<Allocator>>,
    pub(crate) device: ash::Device,
    queue: Mutex<vk::Queue>,
    pub(crate) queue_family: u32,
    pub(crate) caps: Capabilities,
    /// Set when a dispatch could not be stopped: the device may still be executing, so
    /// nothing may be destroyed and Drop leaks every Vulkan object on purpose.
    poisoned: AtomicBool,
    /// Memory of buffers dropped while a launch of the persistent kernel runs.
    quarantine: Mutex<Quarantine>,
    instance: ManuallyDrop<Instance>,
}

impl Context {
    /// Creates an instance (with validation when asked; its messages also printed on
    /// stderr with `echo`) and a device chosen by `selector`.
    pub fn new(selector: &DeviceSelector, validation: bool, echo: bool) -> Result<Self> {
        let instance = Instance::new(validation, echo)?;
        let all = probe_all(&instance)?;
        let caps = choose(&all, selector)?;
        let missing = caps.missing_requirements();
        if !missing.is_empty() {
            return Err(Error::MissingFeatures {
                device: caps.name.clone(),
                missing: missing.join(", "),
            });
        }
        // SAFETY: plain query on a live instance.
        let physical = unsafe { instance.raw.enumerate_physical_devices() }
            .map_err(Error::vk("vkEnumeratePhysicalDevices"))?[caps.index];
        let queue_family = caps.compute_queue_family.expect("checked by missing_requirements");

        let priorities = [1.0f32];
        let queues = [vk::DeviceQueueCreateInfo::default()
            .queue_family_index(queue_family)
            .queue_priorities(&priorities)];
        let mut extensions = Vec::new();
        if caps.external_memory_host.is_some() {
            extensions.push(ash::ext::external_memory_host::NAME.as_ptr());
        }
        let mut f12 = vk::PhysicalDeviceVulkan12Features::default()
            .buffer_device_address(true)
            .vulkan_memory_model(caps.vulkan_memory_model)
            .vulkan_memory_model_device_scope(caps.vulkan_memory_model)
            .shader_buffer_int64_atomics(caps.shader_buffer_int64_atomics)
            .timeline_semaphore(caps.timeline_semaphore);
        let mut executable =
            vk::PhysicalDevicePipelineExecutablePropertiesFeaturesKHR::default().pipeline_executable_info(true);
        if caps.pipeline_statistics {
            extensions.push(ash::khr::pipeline_executable_properties::NAME.as_ptr());
        }
        let features = vk::PhysicalDeviceFeatures::default().shader_int64(true);
        let mut info = vk::DeviceCreateInfo::default()
            .queue_create_infos(&queues)
            .enabled_extension_names(&extensions)
            .enabled_features(&features)
            .push_next(&mut f12);
        if caps.pipeline_statistics {
            info = info.push_next(&mut executable);
        }
        // SAFETY: `physical` belongs to this instance; every pointer in `info` outlives the call.
        let device =
            unsafe { instance.raw.create_device(physical, &info, None) }.map_err(Error::vk("vkCreateDevice"))?;
        // SAFETY: family and index 0 were requested in `queues`.
        let queue = unsafe { device.get_device_queue(queue_family, 0) };
        let allocator = Allocator::new(&AllocatorCreateDesc {
            instance: instance.raw.clone(),
            device: device.clone(),
            physical_device: physical,
            debug_settings: Default::default(),
            buffer_device_address: true,
            allocation_sizes: Default::default(),
        });
        let allocator = match allocator {
            Ok(a) => a,
            Err(e) => {
                // SAFETY: nothing was created from the device yet.
                unsafe { device.destroy_device(None) };
                return Err(Error::Allocation {
                    what: "the memory allocator".into(),
                    source: AllocationError::Allocator(e),
                });
            }
        };
        let external_memory_host = caps
            .external_memory_host
            .map(|_| ash::ext::external_memory_host::Device::new(&instance.raw, &device));
        let pipeline_executable = caps
            .pipeline_statistics
            .then(|| ash::khr::pipeline_executable_properties::Device::new(&instance.raw, &device));
        Ok(Context {
            external_memory_host,
            pipeline_executable,
            allocator: ManuallyDrop::new(Mutex::new(allocator)),
            device,
            queue: Mutex::new(queue),
            queue_family,
            caps,
            poisoned: AtomicBool::new(false),
            quarantine: Mutex::default(),
            instance: ManuallyDrop::new(instance),
        })
    }

    /// The chosen device's capabilities.
    pub fn caps(&self) -> &Capabilities {
        &self.caps
    }

    /// Validation messages so far (empty unless validation is on).
    pub fn validation(&self) -> &ValidationLog {
        &self.instance.validation
    }

    /// Whether the validation layer is active.
    pub fn validation_enabled(&self) -> bool {
        self.instance.validation_enabled()
    }

    pub(crate) fn allocator(&self) -> MutexGuard<'_, Allocator> {
        self.allocator.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn queue(&self) -> MutexGuard<'_, vk::Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the device as possibly still executing: Drop will leak instead of destroy.
    pub(crate) fn poison(&self) {
        self.poisoned.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::SeqCst)
    }

    fn quarantine(&self) -> MutexGuard<'_, Quarantine> {
        self.quarantine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Frees a dropped buffer's memory, or holds it until the running launch ends. A
    /// launch's device caches may hold lines of memory it read (host memory on an NVIDIA
    /// GPU is cached and not invalidated by host writes), and a launch starts with them
    /// clean: memory freed while no launch runs, or held until its launch ended, is never
    /// seen stale by a buffer allocated in it later.
    pub(crate) fn release(&self, memory: Memory) {
        let mut quarantine = self.quarantine();
        if quarantine.launch_running {
            quarantine.held.push(memory);
        } else {
            drop(quarantine);
            memory.free(self);
        }
    }

    /// A launch of the persistent kernel is about to be submitted.
    pub(crate) fn launch_started(&self) {
        self.quarantine().launch_running = true;
    }

    /// The launch ended (its fence signalled): the memory held since it began is freed,
    /// unless the context is poisoned.
    pub(crate) fn launch_ended(&self) {
        let held = {
            let mut quarantine = self.quarantine();
            quarantine.launch_running = false;
            std::mem::take(&mut quarantine.held)
        };
        if self.is_poisoned() {
            std::mem::forget(held);
            return;
        }
        for memory in held {
            memory.free(self);
        }
    }
}

fn choose(all: &[Capabilities], selector: &DeviceSelector) -> Result<Capabilities> {
    let found = match selector {
        DeviceSelector::Auto => all
            .iter()
            .filter(|c| c.missing_requirements().is_empty())
            .min_by_key(|c| (c.kind, c.index))
            .or_else(|| all.iter().min_by_key(|c| (c.kind, c.index))),
        DeviceSelector::Index(i) => all.get(*i),
        DeviceSelector::Name(name) => {
            let name = name.to_lowercase();
            all.iter().find(|c| c.name.to_lowercase().contains(&name))
        }
    };
    found.cloned().ok_or_else(|| match selector {
        DeviceSelector::Auto => Error::NoDevice("found".into()),
        DeviceSelector::Index(i) => Error::NoDevice(format!("at index {i} ({} devices exist)", all.len())),
        DeviceSelector::Name(n) => Error::NoDevice(format!("whose name contains `{n}`")),
    })
}

/// Memory held back while a launch runs ([`Context::release`]).
#[derive(Default)]
struct Quarantine {
    launch_running: bool,
    held: Vec<Memory>,
}

impl Drop for Context {
    fn drop(&mut self) {
        if self.is_poisoned() {
            // A dispatch may still run: destroying memory it uses would be undefined
            // behaviour, so every object is leaked on purpose (the process keeps them).
            return;
        }
        // SAFETY: the device is idle after the wait; held memory and the allocator's are
        // freed before the device, the device before the instance, which drops its loader
        // last.
        unsafe {
            let _ = self.device.device_wait_idle();
            for memory in std::mem::take(&mut self.quarantine().held) {
                memory.free(self);
            }
            ManuallyDrop::drop(&mut self.allocator);
            self.device.destroy_device(None);
            ManuallyDrop::drop(&mut self.instance);
        }
    }
}
