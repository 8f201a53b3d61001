//! The GPU letterbox: a frame in pinned host memory is uploaded, letterboxed, normalised and
//! reordered to planar `f32` by one NVRTC kernel (`letterbox.cu`), with exactly the geometry and
//! the arithmetic of [`framepipe_vision::Preprocessor`].
//!
//! Two ways out:
//! - [`GpuPreprocessor::preprocess_to_host`]: the result is copied back into a host slice (what a
//!   CPU-input engine needs today: upload + kernel + download);
//! - [`GpuPreprocessor::preprocess_to_device`] / [`preprocess_to_device_ptr`](GpuPreprocessor::preprocess_to_device_ptr):
//!   the kernel writes straight into a device buffer, e.g. a model's device input (tract-gpu's
//!   `DeviceTensor::device_buffer_ptr`), on the preprocessor's stream, without any download.

use std::sync::{Arc, OnceLock};

use cudarc::driver::{
    result, sys, CudaFunction, CudaSlice, CudaStream, DevicePtrMut, DeviceRepr, LaunchConfig, PinnedHostSlice,
    PushKernelArg,
};
use cudarc::nvrtc::{CompileOptions, Ptx};
use framepipe_vision::frame::validate_layout;
use framepipe_vision::{ChannelOrder, FrameRef, LetterboxParams, PixelFormat, PreprocessConfig, VisionError};

use crate::{driver, CudaError};

/// The kernel's source (compiled at run time by NVRTC, once per process).
pub const KERNEL_SOURCE: &str = include_str!("letterbox.cu");

/// The kernel's entry point.
const KERNEL_NAME: &str = "framepipe_letterbox";

/// Threads per block: 32 output columns (one warp, coalesced stores) by 8 rows.
const BLOCK: (u32, u32) = (32, 8);

/// The kernel's by-value argument; mirrors `LetterboxArgs` in `letterbox.cu` field for field.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
struct KernelArgs {
    scale_x: f64,
    scale_y: f64,
    src_stride: i64,
    mean: [f32; 3],
    std: [f32; 3],
    pad: [f32; 3],
    src_w: i32,
    src_h: i32,
    channels: i32,
    swap: i32,
    dst_w: i32,
    dst_h: i32,
    new_w: i32,
    new_h: i32,
    pad_x: i32,
    pad_y: i32,
}

// The C struct has the same fields in the same order, so the same size (3 × 8 + 9 × 4 + 10 × 4,
// rounded up to the 8-byte alignment).
const _: () = assert!(std::mem::size_of::<KernelArgs>() == 104);

// SAFETY: `KernelArgs` is `repr(C)` plain old data (numbers only) laid out exactly like the kernel's
// `LetterboxArgs`, so passing its bytes as the kernel parameter is sound.
unsafe impl DeviceRepr for KernelArgs {}

fn i32_of(what: &'static str, v: usize) -> Result<i32, CudaError> {
    i32::try_from(v).map_err(|_| CudaError::TooLarge { what, detail: format!("{v} does not fit in 32 bits") })
}

impl KernelArgs {
    fn new(
        config: &PreprocessConfig,
        p: &LetterboxParams,
        format: PixelFormat,
        stride: usize,
    ) -> Result<KernelArgs, CudaError> {
        let channels = format.channels();
        let swap = match (format, config.channel_order) {
            (PixelFormat::Bgr8, ChannelOrder::Rgb) | (PixelFormat::Rgb8, ChannelOrder::Bgr) => 1,
            _ => 0,
        };
        let n = config.normalization;
        let pad = f32::from(config.pad_value);
        // The kernel indexes a row with `x * channels + c` in 32 bits.
        i32_of("frame row", p.src_w * channels)?;
        i32_of("model input", 3 * p.dst_w * p.dst_h)?;
        Ok(KernelArgs {
            // What `build_taps` uses: source size over resized size, in f64.
            scale_x: p.src_w as f64 / p.new_w as f64,
            scale_y: p.src_h as f64 / p.new_h as f64,
            src_stride: i64::try_from(stride)
                .map_err(|_| CudaError::TooLarge { what: "frame stride", detail: stride.to_string() })?,
            mean: n.mean,
            std: n.std,
            pad: std::array::from_fn(|c| n.apply(c, pad)),
            src_w: i32_of("frame width", p.src_w)?,
            src_h: i32_of("frame height", p.src_h)?,
            channels: i32_of("channels", channels)?,
            swap,
            dst_w: i32_of("model input width", p.dst_w)?,
            dst_h: i32_of("model input height", p.dst_h)?,
            new_w: i32_of("resized width", p.new_w)?,
            new_h: i32_of("resized height", p.new_h)?,
            pad_x: p.pad_x as i32,
            pad_y: p.pad_y as i32,
        })
    }

    fn launch_config(&self) -> LaunchConfig {
        LaunchConfig {
            grid_dim: ((self.dst_w as u32).div_ceil(BLOCK.0), (self.dst_h as u32).div_ceil(BLOCK.1), 1),
            block_dim: (BLOCK.0, BLOCK.1, 1),
            shared_mem_bytes: 0,
        }
    }
}

/// The kernel's PTX, compiled once per process.
fn ptx() -> Result<Ptx, CudaError> {
    static PTX: OnceLock<Result<String, String>> = OnceLock::new();
    let opts = CompileOptions {
        // Bit-for-bit the CPU's arithmetic: no fused multiply-add, IEEE division, denormals kept.
        fmad: Some(false),
        prec_div: Some(true),
        ftz: Some(false),
        name: Some("framepipe_letterbox.cu".into()),
        ..Default::default()
    };
    driver::compiled_ptx(&PTX, KERNEL_SOURCE, opts)
}

/// Fused letterbox + normalisation + HWC→CHW on the GPU, for one replica (it owns its buffers and
/// works on one CUDA stream; make one per thread).
///
/// Every operation is queued on [`stream`](GpuPreprocessor::stream); [`preprocess_to_host`]
/// (GpuPreprocessor::preprocess_to_host) waits for its result, the device variants do not.
///
/// The frame is first copied into a pinned (page-locked) host buffer, then uploaded
/// asynchronously: that host copy goes away once frames are decoded straight into pinned
/// memory. Buffers are allocated at the first frame and whenever the frame size changes.
pub struct GpuPreprocessor {
    config: PreprocessConfig,
    stream: Arc<CudaStream>,
    function: CudaFunction,
    /// Pinned staging copy of the frame (write-combined: the host only writes it).
    staging: Option<PinnedHostSlice<u8>>,
    /// The frame on the device.
    frame: Option<CudaSlice<u8>>,
    /// The model input on the device, for `preprocess_to_host`.
    output: Option<CudaSlice<f32>>,
    /// Pinned landing buffer for the download (not write-combined: the host reads it).
    download: Option<PinnedHostSlice<f32>>,
    /// The geometry of the last frame size.
    cached: Option<((usize, usize, usize), LetterboxParams)>,
}

impl std::fmt::Debug for GpuPreprocessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuPreprocessor").field("config", &self.config).finish_non_exhaustive()
    }
}

impl GpuPreprocessor {
    /// A GPU preprocessor with its own stream on device 0.
    ///
    /// Fails with [`CudaError::NoDriver`] when there is no CUDA driver or device (never panics),
    /// [`CudaError::MissingLibrary`] without NVRTC, or [`CudaError::Vision`] for an invalid
    /// configuration (the same checks as [`framepipe_vision::Preprocessor::new`]).
    pub fn new(config: PreprocessConfig) -> Result<Self, CudaError> {
        // Validate first: a bad configuration is refused the same way with or without a GPU.
        framepipe_vision::Preprocessor::new(config)?;
        let ctx = driver::context()?;
        let stream = ctx.new_stream().map_err(|e| CudaError::driver("create a stream", e))?;
        Self::with_stream(config, stream)
    }

    /// A GPU preprocessor that queues its work on `stream` (for example tract-cuda's stream of
    /// the calling thread, `tract_cuda::with_cuda_stream`), so that a consumer on the same stream
    /// needs no synchronisation.
    pub fn with_stream(config: PreprocessConfig, stream: Arc<CudaStream>) -> Result<Self, CudaError> {
        framepipe_vision::Preprocessor::new(config)?;
        driver::check_driver()?;
        let module =
            stream.context().load_module(ptx()?).map_err(|e| CudaError::driver("load the letterbox kernel", e))?;
        let function =
            module.load_function(KERNEL_NAME).map_err(|e| CudaError::driver("find the letterbox kernel", e))?;
        Ok(GpuPreprocessor {
            config,
            stream,
            function,
            staging: None,
            frame: None,
            output: None,
            download: None,
            cached: None,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PreprocessConfig {
        &self.config
    }

    /// The number of `f32` values of one output tensor: `3 * width * height`.
    pub fn output_len(&self) -> usize {
        self.config.output_len()
    }

    /// The stream every operation is queued on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Waits until everything queued on the stream is done.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        self.stream.synchronize().map_err(|e| CudaError::driver("synchronize the stream", e))
    }

    /// The geometry a `src_w x src_h` frame gets (no pixel touched).
    pub fn params_for(&self, src_w: usize, src_h: usize) -> Result<LetterboxParams, CudaError> {
        Ok(LetterboxParams::compute(src_w, src_h, &self.config)?)
    }

    /// Letterboxes `frame` on the GPU and copies the result into `out`, a `1x3xHxW` planar `f32`
    /// tensor (`out.len()` must be [`output_len`](Self::output_len)); returns the geometry.
    ///
    /// Copies made: frame → pinned staging (host), staging → device, kernel, device → pinned
    /// landing buffer, landing buffer → `out` (host). Blocks until the result is in `out`.
    pub fn preprocess_to_host(&mut self, frame: FrameRef<'_>, out: &mut [f32]) -> Result<LetterboxParams, CudaError> {
        self.check_output_len(out.len())?;
        let (params, args) = self.upload(frame)?;
        let len = self.output_len();
        let mut output = match self.output.take() {
            Some(o) if o.len() == len => o,
            _ => {
                // SAFETY: the kernel writes every one of the `len` values before anything reads them.
                unsafe { self.stream.alloc::<f32>(len) }
                    .map_err(|e| CudaError::driver("allocate the model input", e))?
            }
        };
        let launched = {
            let (ptr, _record) = output.device_ptr_mut(&self.stream);
            // SAFETY: `ptr` is `output`, `len` f32 values on this context; `_record` keeps the
            // slice's write event pending until the launch is queued.
            unsafe { self.launch(&args, ptr) }
        };
        let downloaded = launched.and_then(|()| {
            let download = match self.download.take() {
                Some(d) if d.len() == len => d,
                _ => {
                    // SAFETY: the download below overwrites all `len` values before they are read.
                    // Flags 0 (not write-combined): the host reads this buffer.
                    unsafe { self.stream.context().alloc_pinned_with_flags::<f32>(len, 0) }
                        .map_err(|e| CudaError::driver("allocate the pinned landing buffer", e))?
                }
            };
            let mut download = download;
            self.stream
                .memcpy_dtoh(&output, &mut download)
                .map_err(|e| CudaError::driver("download the model input", e))?;
            // `as_slice` waits for the download (the pinned buffer's event).
            let host = download.as_slice().map_err(|e| CudaError::driver("wait for the download", e))?;
            out.copy_from_slice(host);
            self.download = Some(download);
            Ok(())
        });
        self.output = Some(output);
        downloaded?;
        Ok(params)
    }

    /// Letterboxes `frame` into the device buffer `out` (a `CudaSlice<f32>` or `CudaViewMut<f32>`
    /// of [`output_len`](Self::output_len) values), queued on [`stream`](Self::stream); returns
    /// without waiting. Work queued later on the same stream sees the result; anything else must
    /// [`synchronize`](Self::synchronize) first.
    pub fn preprocess_to_device<D: DevicePtrMut<f32>>(
        &mut self,
        frame: FrameRef<'_>,
        out: &mut D,
    ) -> Result<LetterboxParams, CudaError> {
        self.check_output_len(out.len())?;
        let (params, args) = self.upload(frame)?;
        let (ptr, _record) = out.device_ptr_mut(&self.stream);
        // SAFETY: `ptr` addresses `out`, which holds `output_len` f32 values (checked above);
        // `_record` makes `out`'s users on other streams wait for this launch.
        unsafe { self.launch(&args, ptr)? };
        Ok(params)
    }

    /// Like [`preprocess_to_device`](Self::preprocess_to_device), into a raw device pointer: for
    /// buffers cudarc does not own, such as tract-gpu's `DeviceTensor::device_buffer_ptr()`.
    ///
    /// # Safety
    ///
    /// `out` must point to at least `len` writable `f32` values in device memory of this
    /// preprocessor's context, stay valid until the queued work is done, and not be read or written
    /// by other streams until then without synchronisation.
    pub unsafe fn preprocess_to_device_ptr(
        &mut self,
        frame: FrameRef<'_>,
        out: sys::CUdeviceptr,
        len: usize,
    ) -> Result<LetterboxParams, CudaError> {
        self.check_output_len(len)?;
        let (params, args) = self.upload(frame)?;
        // SAFETY: the caller guarantees `out` holds `len` (= output_len) device f32 values.
        unsafe { self.launch(&args, out)? };
        Ok(params)
    }

    /// Times `iters` frames in two parts: the upload (host copy into the pinned buffer and the
    /// host → device copy, host clock, synchronised) and the letterbox kernel alone (CUDA events
    /// around the launch, queued behind the upload so no host gap is counted). Returns the
    /// microseconds of each, per frame.
    pub fn time_upload_and_kernel(
        &mut self,
        frame: FrameRef<'_>,
        out: &mut CudaSlice<f32>,
        iters: usize,
    ) -> Result<(Vec<f64>, Vec<f64>), CudaError> {
        self.check_output_len(out.len())?;
        let flags = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let ctx = self.stream.context().clone();
        let (start, end) = (
            ctx.new_event(flags).map_err(|e| CudaError::driver("create an event", e))?,
            ctx.new_event(flags).map_err(|e| CudaError::driver("create an event", e))?,
        );
        let (mut upload, mut kernel) = (Vec::with_capacity(iters), Vec::with_capacity(iters));
        for _ in 0..iters {
            let t0 = std::time::Instant::now();
            self.upload(frame)?;
            self.synchronize()?;
            upload.push(t0.elapsed().as_secs_f64() * 1e6);
            // Again, unsynchronised: the copy keeps the stream busy while the kernel is queued.
            let (_, args) = self.upload(frame)?;
            start.record(&self.stream).map_err(|e| CudaError::driver("record an event", e))?;
            {
                let (ptr, _record) = out.device_ptr_mut(&self.stream);
                // SAFETY: `ptr` addresses `out`, `output_len` f32 values (checked above).
                unsafe { self.launch(&args, ptr)? };
            }
            end.record(&self.stream).map_err(|e| CudaError::driver("record an event", e))?;
            end.synchronize().map_err(|e| CudaError::driver("wait for an event", e))?;
            let ms = start.elapsed_ms(&end).map_err(|e| CudaError::driver("read an event", e))?;
            kernel.push(f64::from(ms) * 1e3);
        }
        Ok((upload, kernel))
    }

    fn check_output_len(&self, got: usize) -> Result<(), CudaError> {
        let need = self.output_len();
        if got != need {
            return Err(VisionError::OutputSize {
                width: self.config.input_width,
                height: self.config.input_height,
                need,
                got,
            }
            .into());
        }
        Ok(())
    }

    /// Copies the frame into the pinned staging buffer and queues its upload; returns the geometry
    /// and the kernel's arguments.
    fn upload(&mut self, frame: FrameRef<'_>) -> Result<(LetterboxParams, KernelArgs), CudaError> {
        self.upload_from(frame, None)
    }

    /// The geometry and kernel arguments of `frame`, then its upload: from `pinned` when given
    /// (the frame already lives in page-locked memory: no host copy), else through the staging
    /// buffer.
    fn upload_from(
        &mut self,
        frame: FrameRef<'_>,
        pinned: Option<&PinnedHostSlice<u8>>,
    ) -> Result<(LetterboxParams, KernelArgs), CudaError> {
        let (w, h, stride, format) = (frame.width(), frame.height(), frame.stride(), frame.format());
        let need = validate_layout(w, h, stride, format, frame.data().len())?;
        let key = (w, h, format.channels());
        let params = match self.cached {
            Some((k, p)) if k == key => p,
            _ => {
                let p = LetterboxParams::compute(w, h, &self.config)?;
                self.cached = Some((key, p));
                p
            }
        };
        let args = KernelArgs::new(&self.config, &params, format, stride)?;
        let mut device = match self.frame.take() {
            Some(d) if d.len() == need => d,
            _ => {
                // SAFETY: the upload below writes all `need` bytes before the kernel reads them.
                unsafe { self.stream.alloc::<u8>(need) }
                    .map_err(|e| CudaError::driver("allocate the device frame", e))?
            }
        };
        let uploaded = match pinned {
            Some(src) => {
                let (dst, _record) = device.device_ptr_mut(&self.stream);
                let bytes = src.len().min(need);
                // SAFETY: `src` is page-locked host memory of at least `bytes` bytes (the frame's
                // layout, validated above) that the caller keeps unchanged until the stream is done
                // (see `preprocess_pinned_to_device`); `dst` holds `need` bytes.
                unsafe { result::memcpy_htod_async(dst, &src_slice(src)?[..bytes], self.stream.cu_stream()) }
            }
            None => {
                let mut staging = match self.staging.take() {
                    Some(s) if s.len() == need => s,
                    _ => {
                        // SAFETY: every byte is written below before the upload reads it.
                        unsafe { self.stream.context().alloc_pinned::<u8>(need) }
                            .map_err(|e| CudaError::driver("allocate the pinned staging buffer", e))?
                    }
                };
                // `as_mut_slice` waits until the previous upload from this buffer is done.
                let host = staging.as_mut_slice().map_err(|e| CudaError::driver("wait for the previous upload", e))?;
                host.copy_from_slice(&frame.data()[..need]);
                let r = self.stream.memcpy_htod(&staging, &mut device);
                self.staging = Some(staging);
                r
            }
        };
        self.frame = Some(device);
        uploaded.map_err(|e| CudaError::driver("upload the frame", e))?;
        Ok((params, args))
    }

    /// Like [`preprocess_to_device`](Self::preprocess_to_device) for a frame that already lives in
    /// page-locked memory (decoded straight into it): the upload reads it in place, without the
    /// host copy into the staging buffer (6 MB, 0.3–0.6 ms for a 1080p BGR frame).
    ///
    /// The frame must not be written until the stream is done with it (the next
    /// [`synchronize`](Self::synchronize), or an event recorded after this call).
    pub fn preprocess_pinned_to_device<D: DevicePtrMut<f32>>(
        &mut self,
        frame: &PinnedFrame,
        out: &mut D,
    ) -> Result<LetterboxParams, CudaError> {
        self.check_output_len(out.len())?;
        let view = frame.frame_ref()?;
        let (params, args) = self.upload_from(view, Some(&frame.pixels))?;
        let (ptr, _record) = out.device_ptr_mut(&self.stream);
        // SAFETY: `ptr` addresses `out`, which holds `output_len` f32 values (checked above).
        unsafe { self.launch(&args, ptr)? };
        Ok(params)
    }

    /// Queues the kernel: device frame → `out`.
    ///
    /// # Safety
    ///
    /// `out` must address `output_len` writable device `f32` values of this context that stay
    /// valid until the kernel has run.
    unsafe fn launch(&self, args: &KernelArgs, out: sys::CUdeviceptr) -> Result<(), CudaError> {
        let Some(frame) = self.frame.as_ref() else {
            return Err(CudaError::Driver {
                action: "launch the letterbox kernel",
                message: "no frame uploaded".into(),
            });
        };
        let cfg = args.launch_config();
        let mut launch = self.stream.launch_builder(&self.function);
        launch.arg(frame).arg(&out).arg(args);
        // SAFETY: the arguments match the kernel's signature (const u8*, float*, LetterboxArgs by
        // value); the kernel reads `frame` within `src_stride * (src_h - 1) + src_w * channels`
        // bytes (the uploaded length, see `validate_layout`) and writes `3 * dst_w * dst_h` values
        // of `out` (the caller's guarantee), and nothing else.
        unsafe { launch.launch(cfg) }.map_err(|e| CudaError::driver("launch the letterbox kernel", e))?;
        Ok(())
    }
}

/// The bytes of a pinned slice (uploads from it are raw copies ordered by the stream, which
/// cudarc's event on the slice does not track: see [`PinnedFrame`]).
fn src_slice(p: &PinnedHostSlice<u8>) -> Result<&[u8], CudaError> {
    let ptr = p.as_ptr().map_err(|e| CudaError::driver("read a pinned frame", e))?;
    // SAFETY: `PinnedHostSlice` owns `len` bytes at `ptr` for as long as it lives, all written
    // (`PinnedFrame::from_frame` fills them before it returns).
    Ok(unsafe { std::slice::from_raw_parts(ptr, p.len()) })
}

/// A frame that lives in page-locked host memory (what a decoder would write into), so that its
/// upload is one DMA without a host copy. Host writes go through [`PinnedFrame::fill`].
pub struct PinnedFrame {
    pixels: PinnedHostSlice<u8>,
    width: usize,
    height: usize,
    format: PixelFormat,
}

impl std::fmt::Debug for PinnedFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PinnedFrame({}x{} {:?})", self.width, self.height, self.format)
    }
}

impl PinnedFrame {
    /// A pinned copy of `frame` (packed rows).
    pub fn from_frame(frame: FrameRef<'_>) -> Result<PinnedFrame, CudaError> {
        let (w, h, format) = (frame.width(), frame.height(), frame.format());
        let row = w * format.channels();
        let ctx = driver::context()?;
        // SAFETY: every byte is written below before it is read.
        let pixels =
            unsafe { ctx.alloc_pinned::<u8>(row * h) }.map_err(|e| CudaError::driver("allocate a pinned frame", e))?;
        let mut pf = PinnedFrame { pixels, width: w, height: h, format };
        pf.fill(frame)?;
        Ok(pf)
    }

    /// Overwrites the pixels with `frame`'s (same size and format). Uploads are not tracked: the
    /// caller must know that none still reads this frame (its stream was synchronised since).
    pub fn fill(&mut self, frame: FrameRef<'_>) -> Result<(), CudaError> {
        let row = self.width * self.format.channels();
        if (frame.width(), frame.height(), frame.format()) != (self.width, self.height, self.format) {
            return Err(CudaError::Unsupported {
                what: format!(
                    "a {}x{} frame into a {}x{} pinned frame",
                    frame.width(),
                    frame.height(),
                    self.width,
                    self.height
                ),
            });
        }
        let dst = self.pixels.as_mut_slice().map_err(|e| CudaError::driver("wait for the frame's upload", e))?;
        for (y, out) in dst.chunks_exact_mut(row).enumerate() {
            let start = y * frame.stride();
            out.copy_from_slice(&frame.data()[start..start + row]);
        }
        Ok(())
    }

    /// The frame, borrowed (packed rows).
    pub fn frame_ref(&self) -> Result<FrameRef<'_>, CudaError> {
        let row = self.width * self.format.channels();
        Ok(FrameRef::new(self.width, self.height, row, self.format, src_slice(&self.pixels)?)?)
    }
}

/// The kernel's arithmetic on the CPU, value for value (for tests on machines without a GPU: they
/// check that this mirror matches [`framepipe_vision::Preprocessor`]; the GPU tests check the kernel
/// against it too).
#[doc(hidden)]
pub fn emulate_kernel(config: &PreprocessConfig, frame: FrameRef<'_>) -> Result<Vec<f32>, CudaError> {
    let p = LetterboxParams::compute(frame.width(), frame.height(), config)?;
    let a = KernelArgs::new(config, &p, frame.format(), frame.stride())?;
    let tap = |d: i32, scale: f64, src: i32| -> (i32, i32, f32) {
        let last = src - 1;
        let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
        let fl = f.floor();
        let (i0, w) = if fl < 0.0 {
            (0, 0.0)
        } else if fl >= last as f32 {
            (last, 0.0)
        } else {
            (fl as i32, f - fl)
        };
        (i0, if w == 0.0 { i0 } else { (i0 + 1).min(last) }, w)
    };
    let (dw, dh) = (a.dst_w as usize, a.dst_h as usize);
    let plane = dw * dh;
    let mut out = vec![0f32; 3 * plane];
    let src = frame.data();
    for y in 0..a.dst_h {
        for x in 0..a.dst_w {
            let o = y as usize * dw + x as usize;
            let (ix, iy) = (x - a.pad_x, y - a.pad_y);
            if ix < 0 || iy < 0 || ix >= a.new_w || iy >= a.new_h {
                for c in 0..3 {
                    out[c * plane + o] = a.pad[c];
                }
                continue;
            }
            let (x0, x1, wx) = tap(ix, a.scale_x, a.src_w);
            let (y0, y1, wy) = tap(iy, a.scale_y, a.src_h);
            let r0 = y0 as usize * a.src_stride as usize;
            let r1 = y1 as usize * a.src_stride as usize;
            let ch = a.channels as usize;
            for c in 0..3 {
                let k = if ch == 1 {
                    0
                } else if a.swap == 1 {
                    2 - c
                } else {
                    c
                };
                let px = |r: usize, xi: i32| f32::from(src[r + xi as usize * ch + k]);
                let (a00, a01, a10, a11) = (px(r0, x0), px(r0, x1), px(r1, x0), px(r1, x1));
                let v0 = a00 + (a10 - a00) * wy;
                let v1 = a01 + (a11 - a01) * wy;
                let v = v0 + (v1 - v0) * wx;
                out[c * plane + o] = (v - a.mean[c]) / a.std[c];
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use framepipe_vision::{Frame, LetterboxStyle, Normalization, Preprocessor};

    use super::*;

    /// A deterministic frame with every byte value and sharp edges.
    fn frame(w: usize, h: usize, format: PixelFormat, stride_pad: usize) -> (Vec<u8>, usize) {
        let ch = format.channels();
        let stride = w * ch + stride_pad;
        let mut data = vec![0u8; stride * h];
        let mut s = 0x1234_5678_9abc_def0u64 ^ (w * 31 + h) as u64;
        for y in 0..h {
            for x in 0..w * ch {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let noise = (s >> 59) as u8;
                data[y * stride + x] = ((x * 7 + y * 3) as u8).wrapping_add(noise);
            }
        }
        (data, stride)
    }

    /// The CPU mirror of the kernel gives exactly the CPU preprocessor's values, for every fast
    /// path of the latter (integer ratios, halves, general interpolation, upscaling, odd sizes,
    /// portrait frames, padded strides, gray, RGB and BGR output, YOLOX and stretch styles).
    #[test]
    fn the_kernel_arithmetic_matches_the_cpu_preprocessor_exactly() {
        let sizes = [(1920, 1080), (1280, 720), (480, 640), (1601, 899), (333, 777), (640, 640), (17, 9), (4000, 3)];
        let configs = [
            PreprocessConfig::new(640, 640),
            PreprocessConfig::new(320, 192).with_channel_order(ChannelOrder::Bgr),
            PreprocessConfig::new(640, 384).with_normalization(Normalization::RAW).with_style(LetterboxStyle::Stretch),
            PreprocessConfig::new(416, 416).with_style(LetterboxStyle::Yolox).with_scale_up(false),
            PreprocessConfig::new(224, 224)
                .with_normalization(Normalization::from_unit_mean_std([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])),
        ];
        for config in configs {
            let mut cpu = Preprocessor::new(config).unwrap();
            for &(w, h) in &sizes {
                for (format, pad) in [(PixelFormat::Bgr8, 0), (PixelFormat::Rgb8, 5), (PixelFormat::Gray8, 3)] {
                    let (data, stride) = frame(w, h, format, pad);
                    let f = FrameRef::new(w, h, stride, format, &data).unwrap();
                    let mut want = vec![0f32; config.output_len()];
                    cpu.preprocess(f, &mut want).unwrap();
                    let got = emulate_kernel(&config, f).unwrap();
                    let worst = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                    assert_eq!(worst, 0.0, "{w}x{h} {format} into {config:?}");
                }
            }
        }
    }

    #[test]
    fn the_kernel_arguments_carry_the_geometry() {
        let config = PreprocessConfig::new(640, 640);
        let f = Frame::new(1920, 1080, PixelFormat::Bgr8).unwrap();
        let p = LetterboxParams::compute(1920, 1080, &config).unwrap();
        let a = KernelArgs::new(&config, &p, f.format(), f.stride()).unwrap();
        assert_eq!((a.new_w, a.new_h, a.pad_x, a.pad_y, a.swap, a.channels), (640, 360, 0, 140, 1, 3));
        assert_eq!((a.scale_x, a.scale_y), (3.0, 3.0));
        assert_eq!(a.pad, [114.0 / 255.0; 3]);
        let cfg = a.launch_config();
        assert_eq!((cfg.grid_dim, cfg.block_dim), ((20, 80, 1), (32, 8, 1)));
    }
}
