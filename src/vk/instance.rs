//! Vulkan instance: the loader, the optional Khronos validation layer, and the debug
//! messenger that records every validation error so tests can fail on it.

use std::ffi::{c_void, CStr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use ash::vk;

use crate::error::{Error, Result};

const VALIDATION_LAYER: &CStr = c"VK_LAYER_KHRONOS_validation";

/// Messages the validation layer reported, shared with the debug callback.
#[derive(Debug, Default)]
pub struct ValidationLog {
    errors: AtomicUsize,
    messages: Mutex<Vec<String>>,
    /// Print each message on stderr as it comes.
    echo: bool,
}

impl ValidationLog {
    /// Number of validation errors reported so far.
    pub fn error_count(&self) -> usize {
        self.errors.load(Ordering::SeqCst)
    }

    /// The text of every error and warning reported so far.
    pub fn messages(&self) -> Vec<String> {
        self.messages.lock().map(|m| m.clone()).unwrap_or_default()
    }

    fn record(&self, error: bool, text: String) {
        if error {
            self.errors.fetch_add(1, Ordering::SeqCst);
        }
        if self.echo {
            eprintln!("[vulkan validation] {text}");
        }
        if let Ok(mut messages) = self.messages.lock() {
            if messages.len() < 1000 {
                messages.push(text);
            }
        }
    }
}

/// The loader, the instance and (with validation) the debug messenger, destroyed in reverse.
pub(crate) struct Instance {
    pub(crate) entry: ash::Entry,
    pub(crate) raw: ash::Instance,
    debug: Option<(ash::ext::debug_utils::Instance, vk::DebugUtilsMessengerEXT)>,
    /// Boxed so the callback's user-data pointer stays valid while the messenger lives.
    pub(crate) validation: Box<ValidationLog>,
}

impl Instance {
    /// With `validation`, the Khronos layer and a messenger recording its messages (and
    /// printing them on stderr with `echo`).
    pub(crate) fn new(validation: bool, echo: bool) -> Result<Self> {
        // SAFETY: loading the system Vulkan loader runs its initialisers; we keep `entry`
        // alive for as long as anything created from it (it is dropped last).
        let entry = unsafe { ash::Entry::load() }.map_err(|e| Error::LoaderMissing(e.to_string()))?;
        let mut layers = Vec::new();
        let mut extensions = Vec::new();
        if validation {
            // SAFETY: plain query on a loaded entry.
            let available = unsafe { entry.enumerate_instance_layer_properties() }
                .map_err(Error::vk("vkEnumerateInstanceLayerProperties"))?;
            if !available
                .iter()
                .any(|l| l.layer_name_as_c_str() == Ok(VALIDATION_LAYER))
            {
                return Err(Error::ValidationLayerMissing);
            }
            layers.push(VALIDATION_LAYER.as_ptr());
            extensions.push(ash::ext::debug_utils::NAME.as_ptr());
        }
        let app = vk::ApplicationInfo::default()
            .application_name(c"megaring")
            .engine_name(c"megaring")
            .api_version(vk::API_VERSION_1_2);
        let info = vk::InstanceCreateInfo::default()
            .application_info(&app)
            .enabled_layer_names(&layers)
            .enabled_extension_names(&extensions);
        // SAFETY: `info` and the name arrays it points to outlive the call.
        let raw = unsafe { entry.create_instance(&info, None) }.map_err(Error::vk("vkCreateInstance"))?;
        let mut instance = Instance {
            entry,
            raw,
            debug: None,
            validation: Box::new(ValidationLog {
                echo,
                ..Default::default()
            }),
        };
        if validation {
            let loader = ash::ext::debug_utils::Instance::new(&instance.entry, &instance.raw);
            let user_data = &*instance.validation as *const ValidationLog as *mut c_void;
            let info = vk::DebugUtilsMessengerCreateInfoEXT::default()
                .message_severity(
                    vk::DebugUtilsMessageSeverityFlagsEXT::ERROR | vk::DebugUtilsMessageSeverityFlagsEXT::WARNING,
                )
                .message_type(
                    vk::DebugUtilsMessageTypeFlagsEXT::GENERAL
                        | vk::DebugUtilsMessageTypeFlagsEXT::VALIDATION
                        | vk::DebugUtilsMessageTypeFlagsEXT::PERFORMANCE,
                )
                .pfn_user_callback(Some(debug_callback))
                .user_data(user_data);
            // SAFETY: `user_data` points into a Box owned by `instance`, which destroys the
            // messenger (in Drop) before the Box is freed.
            let messenger = unsafe { loader.create_debug_utils_messenger(&info, None) }
                .map_err(Error::vk("vkCreateDebugUtilsMessengerEXT"))?;
            instance.debug = Some((loader, messenger));
        }
        Ok(instance)
    }

    pub(crate) fn validation_enabled(&self) -> bool {
        self.debug.is_some()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some((loader, messenger)) = self.debug.take() {
            // SAFETY: the messenger was created from this instance and is destroyed once.
            unsafe { loader.destroy_debug_utils_messenger(messenger, None) };
        }
        // SAFETY: every child of the instance (the device) was destroyed by its owner first.
        unsafe { self.raw.destroy_instance(None) };
    }
}

unsafe extern "system" fn debug_callback(
    severity: vk::DebugUtilsMessageSeverityFlagsEXT,
    _types: vk::DebugUtilsMessageTypeFlagsEXT,
    data: *const vk::DebugUtilsMessengerCallbackDataEXT<'_>,
    user_data: *mut c_void,
) -> vk::Bool32 {
    if std::thread::panicking() || data.is_null() || user_data.is_null() {
        return vk::FALSE;
    }
    // SAFETY: the layer passes a valid callback-data pointer for the duration of the call,
    // and `user_data` is the ValidationLog registered with the messenger, alive until it is
    // destroyed.
    let (log, message) = unsafe {
        (
            &*(user_data as *const ValidationLog),
            (*data)
                .message_as_c_str()
                .map(|m| m.to_string_lossy().into_owned())
                .unwrap_or_default(),
        )
    };
    let error = severity.contains(vk::DebugUtilsMessageSeverityFlagsEXT::ERROR);
    log.record(error, format!("{severity:?}: {message}"));
    vk::FALSE
}
