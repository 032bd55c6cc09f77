//! Compute pipelines (push constants only: every buffer is reached by device address)
//! and the dispatcher that submits one of them and waits on its fence.

use std::sync::Arc;
use std::time::Duration;

use ash::vk;

use super::device::Context;
use crate::error::{Error, Result};

/// A compute pipeline built from embedded SPIR-V, with one push-constant range.
pub struct ComputePipeline {
    ctx: Arc<Context>,
    module: vk::ShaderModule,
    layout: vk::PipelineLayout,
    pipeline: vk::Pipeline,
    push_size: u32,
}

impl ComputePipeline {
    /// Builds a pipeline from `spirv` whose push-constant block is `push_size` bytes, with
    /// u32 specialization constants given as `(constant id, value)`.
    pub fn new(ctx: &Arc<Context>, spirv: &[u32], push_size: u32, constants: &[(u32, u32)]) -> Result<Self> {
        let device = &ctx.device;
        let mut this = ComputePipeline {
            ctx: ctx.clone(),
            module: vk::ShaderModule::null(),
            layout: vk::PipelineLayout::null(),
            pipeline: vk::Pipeline::null(),
            push_size,
        };
        // SAFETY: valid create info on a live device; the handle is stored in `this` at once, so Drop destroys what exists after an error.
        this.module = unsafe { device.create_shader_module(&vk::ShaderModuleCreateInfo::default().code(spirv), None) }
            .map_err(Error::vk("vkCreateShaderModule"))?;
        let ranges = [vk::PushConstantRange::default()
            .stage_flags(vk::ShaderStageFlags::COMPUTE)
            .offset(0)
            .size(push_size)];
        // SAFETY: valid create info on a live device; the handle is stored in `this` at once, so Drop destroys what exists after an error.
        this.layout = unsafe {
            device.create_pipeline_layout(
                &vk::PipelineLayoutCreateInfo::default().push_constant_ranges(&ranges),
                None,
            )
        }
        .map_err(Error::vk("vkCreatePipelineLayout"))?;
        let entries: Vec<vk::SpecializationMapEntry> = constants
            .iter()
            .enumerate()
            .map(|(i, &(id, _))| vk::SpecializationMapEntry {
                constant_id: id,
                offset: 4 * i as u32,
                size: 4,
            })
            .collect();
        let data: Vec<u8> = constants.iter().flat_map(|&(_, value)| value.to_ne_bytes()).collect();
        let specialization = vk::SpecializationInfo::default().map_entries(&entries).data(&data);
        let stage = vk::PipelineShaderStageCreateInfo::default()
            .stage(vk::ShaderStageFlags::COMPUTE)
            .module(this.module)
            .name(c"main")
            .specialization_info(&specialization);
        let flags = if ctx.pipeline_executable.is_some() {
            vk::PipelineCreateFlags::CAPTURE_STATISTICS_KHR
        } else {
            vk::PipelineCreateFlags::empty()
        };
        let info = [vk::ComputePipelineCreateInfo::default()
            .flags(flags)
            .stage(stage)
            .layout(this.layout)];
        // SAFETY: valid create info on a live device; the handle is stored in `this` at once, so Drop destroys what exists after an error.
        this.pipeline = unsafe { device.create_compute_pipelines(vk::PipelineCache::null(), &info, None) }
            .map_err(|(_, e)| Error::vk("vkCreateComputePipelines")(e))?[0];
        Ok(this)
    }

    /// What the driver reports about the compiled pipeline (`VK_KHR_pipeline_executable_properties`),
    /// as (name, value) pairs, e.g. ("Register Count", "96"); empty where the device has no
    /// such report.
    pub fn statistics(&self) -> Vec<(String, String)> {
        let Some(ext) = &self.ctx.pipeline_executable else {
            return Vec::new();
        };
        let info = vk::PipelineExecutableInfoKHR::default()
            .pipeline(self.pipeline)
            .executable_index(0);
        // SAFETY: the pipeline is live and was created with CAPTURE_STATISTICS_KHR.
        let Ok(stats) = (unsafe { ext.get_pipeline_executable_statistics(&info) }) else {
            return Vec::new();
        };
        stats
            .iter()
            .map(|s| {
                let name = s
                    .name_as_c_str()
                    .map_or_else(|_| "?".into(), |n| n.to_string_lossy().into_owned());
                // SAFETY: `format` says which member of the union the driver wrote.
                let value = unsafe {
                    match s.format {
                        vk::PipelineExecutableStatisticFormatKHR::BOOL32 => (s.value.b32 == vk::TRUE).to_string(),
                        vk::PipelineExecutableStatisticFormatKHR::INT64 => s.value.i64.to_string(),
                        vk::PipelineExecutableStatisticFormatKHR::UINT64 => s.value.u64.to_string(),
                        _ => s.value.f64.to_string(),
                    }
                };
                (name, value)
            })
            .collect()
    }
}

impl Drop for ComputePipeline {
    fn drop(&mut self) {
        if self.ctx.is_poisoned() {
            return;
        }
        // SAFETY: no dispatch of this pipeline is pending (Dispatcher waits before dropping,
        // and owners drop dispatchers first); destroying null handles is a no-op.
        unsafe {
            self.ctx.device.destroy_pipeline(self.pipeline, None);
            self.ctx.device.destroy_pipeline_layout(self.layout, None);
            self.ctx.device.destroy_shader_module(self.module, None);
        }
    }
}

/// One command buffer and fence: submits a dispatch and waits for it.
pub struct Dispatcher {
    ctx: Arc<Context>,
    pool: vk::CommandPool,
    cmd: vk::CommandBuffer,
    fence: vk::Fence,
    pending: bool,
}

impl Dispatcher {
    /// Creates the command pool, buffer and fence.
    pub fn new(ctx: &Arc<Context>) -> Result<Self> {
        let device = &ctx.device;
        let mut this = Dispatcher {
            ctx: ctx.clone(),
            pool: vk::CommandPool::null(),
            cmd: vk::CommandBuffer::null(),
            fence: vk::Fence::null(),
            pending: false,
        };
        // SAFETY: valid create info on a live device; the handle is stored in `this` at once, so Drop destroys what exists after an error.
        this.pool = unsafe {
            device.create_command_pool(
                &vk::CommandPoolCreateInfo::default()
                    .queue_family_index(ctx.queue_family)
                    .flags(vk::CommandPoolCreateFlags::RESET_COMMAND_BUFFER),
                None,
            )
        }
        .map_err(Error::vk("vkCreateCommandPool"))?;
        // SAFETY: valid create info on a live device; the handle is stored in `this` at once, so Drop destroys what exists after an error.
        this.cmd = unsafe {
            device.allocate_command_buffers(
                &vk::CommandBufferAllocateInfo::default()
                    .command_pool(this.pool)
                    .level(vk::CommandBufferLevel::PRIMARY)
                    .command_buffer_count(1),
            )
        }
        .map_err(Error::vk("vkAllocateCommandBuffers"))?[0];
        // SAFETY: valid create info on a live device; the handle is stored in `this` at once, so Drop destroys what exists after an error.
        this.fence = unsafe { device.create_fence(&vk::FenceCreateInfo::default(), None) }
            .map_err(Error::vk("vkCreateFence"))?;
        Ok(this)
    }

    /// Records `groups` workgroups of `pipeline` with `push` constants. Must not be pending.
    pub fn record(&mut self, pipeline: &ComputePipeline, push: &[u8], groups: u32) -> Result<()> {
        assert!(!self.pending, "record while a dispatch is pending");
        assert_eq!(push.len() as u32, pipeline.push_size, "push-constant size mismatch");
        let device = &self.ctx.device;
        // SAFETY: the command buffer is not pending (checked above), the pipeline and
        // layout are live, and `push` matches the layout's range.
        unsafe {
            device
                .reset_command_buffer(self.cmd, vk::CommandBufferResetFlags::empty())
                .map_err(Error::vk("vkResetCommandBuffer"))?;
            device
                .begin_command_buffer(self.cmd, &vk::CommandBufferBeginInfo::default())
                .map_err(Error::vk("vkBeginCommandBuffer"))?;
            device.cmd_bind_pipeline(self.cmd, vk::PipelineBindPoint::COMPUTE, pipeline.pipeline);
            device.cmd_push_constants(self.cmd, pipeline.layout, vk::ShaderStageFlags::COMPUTE, 0, push);
            device.cmd_dispatch(self.cmd, groups, 1, 1);
            device
                .end_command_buffer(self.cmd)
                .map_err(Error::vk("vkEndCommandBuffer"))?;
        }
        Ok(())
    }

    /// Submits the recorded command buffer. Host writes made before this call are visible
    /// to the dispatch (vkQueueSubmit is a host-to-device memory dependency).
    pub fn submit(&mut self) -> Result<()> {
        assert!(!self.pending, "submit while a dispatch is pending");
        let cmds = [self.cmd];
        let info = [vk::SubmitInfo::default().command_buffers(&cmds)];
        let queue = self.ctx.queue();
        // SAFETY: the fence is unsignalled (reset after every completed wait), the command
        // buffer is recorded and not pending, and the queue is guarded by its mutex.
        unsafe { self.ctx.device.queue_submit(*queue, &info, self.fence) }.map_err(Error::vk("vkQueueSubmit"))?;
        self.pending = true;
        Ok(())
    }

    /// Waits up to `timeout` for the pending dispatch; `Ok(true)` once it finished (the
    /// fence is then reset), `Ok(false)` if it is still running.
    pub fn wait(&mut self, timeout: Duration) -> Result<bool> {
        if !self.pending {
            return Ok(true);
        }
        let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        // SAFETY: the fence belongs to this device.
        match unsafe { self.ctx.device.wait_for_fences(&[self.fence], true, nanos) } {
            Ok(()) => {
                // SAFETY: the fence is signalled and no submission uses it any more.
                unsafe { self.ctx.device.reset_fences(&[self.fence]) }.map_err(Error::vk("vkResetFences"))?;
                self.pending = false;
                Ok(true)
            }
            Err(vk::Result::TIMEOUT) => Ok(false),
            Err(e) => Err(Error::vk("vkWaitForFences")(e)),
        }
    }

    /// Whether a submitted dispatch has not been waited for yet.
    pub fn is_pending(&self) -> bool {
        self.pending
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        if self.pending && !matches!(self.wait(Duration::from_secs(5)), Ok(true)) {
            // The dispatch is still running (or the device is lost): nothing it may touch
            // can be destroyed safely, so the whole context leaks from here on.
            self.ctx.poison();
        }
        if self.ctx.is_poisoned() {
            return;
        }
        // SAFETY: nothing is pending; the buffer is freed with its pool.
        unsafe {
            self.ctx.device.destroy_fence(self.fence, None);
            self.ctx.device.destroy_command_pool(self.pool, None);
        }
    }
}
