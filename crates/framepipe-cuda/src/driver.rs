//! Finding the CUDA driver without panicking, and the process's CUDA context.
//!
//! cudarc (with `dynamic-loading`) loads `libcuda` on the first driver call and panics when it
//! cannot. Everything here asks first: [`driver_present`] is a plain `dlopen` probe, and
//! [`check_driver`] turns every failure into [`CudaError::NoDriver`].

use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{result, sys, CudaContext};

use crate::CudaError;

/// What [`check_driver`] found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceInfo {
    /// The device ordinal used (always 0: the process's primary device).
    pub ordinal: usize,
    /// The device's name, e.g. `NVIDIA H200`.
    pub name: String,
    /// How many CUDA devices the process sees.
    pub devices: usize,
    /// The driver's CUDA API version, e.g. `(13, 0)`.
    pub driver_api: (i32, i32),
    /// Compute capability, e.g. `(9, 0)`.
    pub compute_capability: (i32, i32),
    /// Device memory in bytes.
    pub total_bytes: usize,
}

impl std::fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (sm_{}{}, {:.1} GiB), driver API {}.{}",
            self.name,
            self.compute_capability.0,
            self.compute_capability.1,
            self.total_bytes as f64 / (1u64 << 30) as f64,
            self.driver_api.0,
            self.driver_api.1
        )
    }
}

/// The library names cudarc tries for the driver, shortened for a message: `libcuda.so,
/// libcuda.so.1 and 32 other names`.
fn driver_candidates() -> String {
    let mut all: Vec<String> = ["cuda", "nvcuda"].iter().flat_map(|l| cudarc::get_lib_name_candidates(l)).collect();
    all.dedup();
    let main: Vec<&String> =
        all.iter().filter(|n| n.as_str() == "libcuda.so" || n.as_str() == "libcuda.so.1").collect();
    let others = all.len() - main.len();
    let main: Vec<&str> = main.iter().map(|s| s.as_str()).collect();
    format!("{} and {others} other names", main.join(", "))
}

/// Whether the CUDA driver library can be loaded. Never panics, makes no CUDA call.
pub fn driver_present() -> bool {
    // SAFETY: `is_culib_present` only `dlopen`s candidate library names and drops the handles;
    // loading the NVIDIA driver library runs its initialisers, nothing else.
    unsafe { sys::is_culib_present() }
}

/// Whether NVRTC (the run-time CUDA compiler the letterbox kernel is built with) can be loaded.
pub fn nvrtc_present() -> bool {
    // SAFETY: as for `driver_present`: a `dlopen` probe only.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Checks that a CUDA driver and at least one device are there, and describes device 0.
///
/// Never panics: a missing `libcuda` or a failing `cuInit` is [`CudaError::NoDriver`] with the
/// reason. The result is computed once per process.
pub fn check_driver() -> Result<DeviceInfo, CudaError> {
    static CHECKED: OnceLock<Result<DeviceInfo, String>> = OnceLock::new();
    CHECKED.get_or_init(probe).clone().map_err(|reason| CudaError::NoDriver { reason })
}

fn probe() -> Result<DeviceInfo, String> {
    if !driver_present() {
        return Err(format!(
            "the CUDA driver library could not be loaded (tried {}); is an NVIDIA driver installed and, in a \
             container, are the GPUs passed through?",
            driver_candidates()
        ));
    }
    // From here on cudarc finds `libcuda` (the probe above loaded it), so its calls do not panic.
    result::init().map_err(|e| format!("cuInit failed ({e}): no usable CUDA device is visible to this process"))?;
    let devices = result::device::get_count().map_err(|e| format!("cuDeviceGetCount failed ({e})"))?;
    if devices < 1 {
        return Err("the driver is loaded but sees no CUDA device".into());
    }
    let dev = result::device::get(0).map_err(|e| format!("cuDeviceGet(0) failed ({e})"))?;
    let name = result::device::get_name(dev).map_err(|e| format!("cuDeviceGetName failed ({e})"))?;
    let attr = |a| {
        // SAFETY: `dev` is a valid device handle returned by `cuDeviceGet` after `cuInit`.
        unsafe { result::device::get_attribute(dev, a) }.map_err(|e| format!("cuDeviceGetAttribute failed ({e})"))
    };
    let major = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
    let minor = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
    // SAFETY: as above.
    let total_bytes =
        unsafe { result::device::total_mem(dev) }.map_err(|e| format!("cuDeviceTotalMem failed ({e})"))?;
    let mut version = 0;
    // SAFETY: `cuDriverGetVersion` writes one int through a valid pointer.
    unsafe { sys::cuDriverGetVersion(&mut version) }
        .result()
        .map_err(|e| format!("cuDriverGetVersion failed ({e})"))?;
    Ok(DeviceInfo {
        ordinal: 0,
        name,
        devices: devices as usize,
        driver_api: (version / 1000, (version % 1000) / 10),
        compute_capability: (major, minor),
        total_bytes,
    })
}

/// The process's CUDA context on device 0 (the device's primary context, the one tract-cuda uses
/// too), after [`check_driver`]. Created once, then shared.
pub fn context() -> Result<Arc<CudaContext>, CudaError> {
    static CONTEXT: Mutex<Option<Arc<CudaContext>>> = Mutex::new(None);
    check_driver()?;
    let mut slot = CONTEXT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(ctx) = slot.as_ref() {
        return Ok(Arc::clone(ctx));
    }
    let ctx = CudaContext::new(0).map_err(|e| CudaError::driver("create a context on device 0", e))?;
    *slot = Some(Arc::clone(&ctx));
    Ok(ctx)
}

/// Free and total device memory, in bytes, as the driver reports them (`cuMemGetInfo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct MemInfo {
    /// Free bytes.
    pub free: usize,
    /// Total bytes.
    pub total: usize,
}

impl MemInfo {
    /// `total - free`: what every process on the device uses now.
    pub fn used(&self) -> usize {
        self.total.saturating_sub(self.free)
    }
}

/// The device's memory now (`mem_get_info` on the shared context).
pub fn mem_info() -> Result<MemInfo, CudaError> {
    let ctx = context()?;
    let (free, total) = ctx.mem_get_info().map_err(|e| CudaError::driver("read the device memory", e))?;
    Ok(MemInfo { free, total })
}

/// One kernel source compiled to PTX by NVRTC once per process (`cache` holds the result, success
/// or failure), for the letterbox and the score filter: [`CudaError::MissingLibrary`] without
/// NVRTC, [`CudaError::Compile`] with NVRTC's log if it refuses the source.
pub(crate) fn compiled_ptx(
    cache: &'static OnceLock<Result<String, String>>,
    source: &str,
    options: cudarc::nvrtc::CompileOptions,
) -> Result<cudarc::nvrtc::Ptx, CudaError> {
    let src = cache.get_or_init(|| {
        if !nvrtc_present() {
            return Err(String::new());
        }
        match cudarc::nvrtc::compile_ptx_with_opts(source, options) {
            Ok(ptx) => Ok(ptx.to_src()),
            Err(cudarc::nvrtc::CompileError::CompileError { log, .. }) => Err(log.to_string_lossy().into_owned()),
            Err(e) => Err(format!("{e:?}")),
        }
    });
    match src {
        Ok(s) => Ok(cudarc::nvrtc::Ptx::from_src(s.clone())),
        Err(log) if log.is_empty() => Err(CudaError::MissingLibrary {
            library: "nvrtc",
            hint: "libnvrtc.so (CUDA 13) is needed to build framepipe's GPU kernels (letterbox, score filter); add \
                   the CUDA toolkit's lib directory to LD_LIBRARY_PATH",
        }),
        Err(log) => Err(CudaError::Compile { log: log.clone() }),
    }
}
