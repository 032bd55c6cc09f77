//! What a physical device can do, probed once into plain data that `megaring info` prints
//! and tests inspect. Rule for every optional feature: Vulkan >= X, or the extension.

use std::ffi::CStr;

use ash::vk;

/// Kind of physical device, in preference order for automatic choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DeviceKind {
    /// A discrete GPU.
    Discrete,
    /// A GPU sharing memory with the CPU.
    Integrated,
    /// A virtualised GPU.
    Virtual,
    /// A CPU implementation such as lavapipe.
    Cpu,
    /// Anything else.
    Other,
}

impl DeviceKind {
    fn from_vk(ty: vk::PhysicalDeviceType) -> Self {
        match ty {
            vk::PhysicalDeviceType::DISCRETE_GPU => DeviceKind::Discrete,
            vk::PhysicalDeviceType::INTEGRATED_GPU => DeviceKind::Integrated,
            vk::PhysicalDeviceType::VIRTUAL_GPU => DeviceKind::Virtual,
            vk::PhysicalDeviceType::CPU => DeviceKind::Cpu,
            _ => DeviceKind::Other,
        }
    }
}

/// One memory type of the device.
#[derive(Clone, Debug)]
pub struct MemoryType {
    /// Index in the device's memory-type list.
    pub index: u32,
    /// Property flags (DEVICE_LOCAL, HOST_VISIBLE, ...).
    pub flags: vk::MemoryPropertyFlags,
    /// Heap the type allocates from.
    pub heap: u32,
    /// Size of that heap in bytes.
    pub heap_size: u64,
}

/// Everything the runtime needs to know about a physical device, probed once.
#[derive(Clone, Debug)]
pub struct Capabilities {
    /// Index among the instance's physical devices.
    pub index: usize,
    /// Device name.
    pub name: String,
    /// Device kind.
    pub kind: DeviceKind,
    /// Driver name and info, e.g. "llvmpipe" / "Mesa 22.3.6".
    pub driver: String,
    /// Driver is Mesa's lavapipe (loops cut at 65,535 iterations per invocation).
    pub lavapipe: bool,
    /// Vulkan version the device supports (major, minor, patch).
    pub api_version: (u32, u32, u32),
    /// `bufferDeviceAddress` (required).
    pub buffer_device_address: bool,
    /// `shaderInt64` (required).
    pub shader_int64: bool,
    /// `vulkanMemoryModel`.
    pub vulkan_memory_model: bool,
    /// `shaderBufferInt64Atomics`.
    pub shader_buffer_int64_atomics: bool,
    /// `timelineSemaphore`.
    pub timeline_semaphore: bool,
    /// `VK_EXT_external_memory_host`: the import alignment when present.
    pub external_memory_host: Option<u64>,
    /// `VK_KHR_pipeline_executable_properties` with `pipelineExecutableInfo`: the driver
    /// reports what a compiled pipeline uses (registers, code size; `megaring info`).
    pub pipeline_statistics: bool,
    /// Queue family used for compute.
    pub compute_queue_family: Option<u32>,
    /// `maxComputeWorkGroupCount[0]`.
    pub max_workgroups: u32,
    /// Timestamp period in nanoseconds.
    pub timestamp_period_ns: f32,
    /// Memory types.
    pub memory_types: Vec<MemoryType>,
}

impl Capabilities {
    /// Probes `physical` (index `index` in the instance's list).
    pub(crate) fn probe(instance: &ash::Instance, physical: vk::PhysicalDevice, index: usize) -> Self {
        // SAFETY: `physical` comes from this instance's enumeration and the output structs outlive the call.
        let extensions = unsafe { instance.enumerate_device_extension_properties(physical) }.unwrap_or_default();
        let has_ext = |name: &CStr| extensions.iter().any(|e| e.extension_name_as_c_str() == Ok(name));
        let external_memory_host = has_ext(ash::ext::external_memory_host::NAME);

        let mut driver = vk::PhysicalDeviceDriverProperties::default();
        let mut host_mem = vk::PhysicalDeviceExternalMemoryHostPropertiesEXT::default();
        let mut props2 = vk::PhysicalDeviceProperties2::default().push_next(&mut driver);
        if external_memory_host {
            props2 = props2.push_next(&mut host_mem);
        }
        // SAFETY: `physical` comes from this instance's enumeration and the output structs outlive the call.
        unsafe { instance.get_physical_device_properties2(physical, &mut props2) };
        let props = props2.properties;

        let mut f12 = vk::PhysicalDeviceVulkan12Features::default();
        let mut executable = vk::PhysicalDevicePipelineExecutablePropertiesFeaturesKHR::default();
        let mut features2 = vk::PhysicalDeviceFeatures2::default().push_next(&mut f12);
        if has_ext(ash::khr::pipeline_executable_properties::NAME) {
            features2 = features2.push_next(&mut executable);
        }
        // SAFETY: `physical` comes from this instance's enumeration and the output structs outlive the call.
        unsafe { instance.get_physical_device_features2(physical, &mut features2) };
        let shader_int64 = features2.features.shader_int64 == vk::TRUE;

        // SAFETY: `physical` comes from this instance's enumeration and the output structs outlive the call.
        let families = unsafe { instance.get_physical_device_queue_family_properties(physical) };
        // Prefer a compute-only family (no graphics work shares it), else any with compute.
        let compute_queue_family = families
            .iter()
            .position(|f| {
                f.queue_flags.contains(vk::QueueFlags::COMPUTE) && !f.queue_flags.contains(vk::QueueFlags::GRAPHICS)
            })
            .or_else(|| {
                families
                    .iter()
                    .position(|f| f.queue_flags.contains(vk::QueueFlags::COMPUTE))
            })
            .map(|i| i as u32);

        // SAFETY: `physical` comes from this instance's enumeration and the output structs outlive the call.
        let memory = unsafe { instance.get_physical_device_memory_properties(physical) };
        let memory_types = memory
            .memory_types_as_slice()
            .iter()
            .enumerate()
            .map(|(i, t)| MemoryType {
                index: i as u32,
                flags: t.property_flags,
                heap: t.heap_index,
                heap_size: memory.memory_heaps[t.heap_index as usize].size,
            })
            .collect();

        let name = props
            .device_name_as_c_str()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let driver_name = driver
            .driver_name_as_c_str()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let driver_info = driver
            .driver_info_as_c_str()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Capabilities {
            index,
            name,
            kind: DeviceKind::from_vk(props.device_type),
            driver: format!("{driver_name} {driver_info}").trim().to_owned(),
            lavapipe: driver.driver_id == vk::DriverId::MESA_LLVMPIPE,
            api_version: (
                vk::api_version_major(props.api_version),
                vk::api_version_minor(props.api_version),
                vk::api_version_patch(props.api_version),
            ),
            buffer_device_address: f12.buffer_device_address == vk::TRUE,
            shader_int64,
            vulkan_memory_model: f12.vulkan_memory_model == vk::TRUE,
            shader_buffer_int64_atomics: f12.shader_buffer_int64_atomics == vk::TRUE,
            timeline_semaphore: f12.timeline_semaphore == vk::TRUE,
            external_memory_host: external_memory_host.then_some(host_mem.min_imported_host_pointer_alignment),
            pipeline_statistics: executable.pipeline_executable_info == vk::TRUE,
            compute_queue_family,
            max_workgroups: props.limits.max_compute_work_group_count[0],
            timestamp_period_ns: props.limits.timestamp_period,
            memory_types,
        }
    }

    /// Names of the required features this device lacks (empty when usable).
    pub fn missing_requirements(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if self.api_version < (1, 2, 0) {
            missing.push("Vulkan 1.2");
        }
        if !self.buffer_device_address {
            missing.push("bufferDeviceAddress");
        }
        if !self.shader_int64 {
            missing.push("shaderInt64");
        }
        if !self.shader_buffer_int64_atomics {
            missing.push("shaderBufferInt64Atomics (spread jobs' tile counters)");
        }
        if self.compute_queue_family.is_none() {
            missing.push("a compute queue");
        }
        missing
    }

    /// Whether some memory type is device-local and host-visible (resizable BAR or unified).
    pub fn has_host_visible_device_memory(&self) -> bool {
        let want = vk::MemoryPropertyFlags::DEVICE_LOCAL
            | vk::MemoryPropertyFlags::HOST_VISIBLE
            | vk::MemoryPropertyFlags::HOST_COHERENT;
        self.memory_types.iter().any(|t| t.flags.contains(want))
    }
}
