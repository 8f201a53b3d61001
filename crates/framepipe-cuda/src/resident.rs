//! Device-resident frames through the three stages: the frame goes to the GPU once, and only the
//! detections that survive the score filter come back.
//!
//! ```text
//! pre   (its stream):  pinned frame ──H2D──▶ device frame ──letterbox──▶ DeviceInput.buf ─▶ record `ready`
//! infer (tract's stream of its thread): wait `ready` ─▶ copy into the graph's input ─▶ replay the
//!                      CUDA graph ─▶ copy its outputs into DeviceOutputs ─▶ synchronize
//! post  (its stream):  score filter kernel ─▶ survivors written into mapped host memory, count ──D2H──▶
//!                      one wait ─▶ sort, NMS on the CPU
//! ```
//!
//! - Each worker ([`DevicePre`], [`DeviceInfer`], [`DevicePost`]) belongs to one thread and owns
//!   its stream and its scratch buffers; nothing here starts a thread (the runtime does).
//! - The items that travel between stages ([`DeviceInput`], [`DeviceOutputs`]) are meant to come
//!   from pools sized by the links' capacities, so that frames overlap without copies. Their device
//!   buffers are allocated at their first use, then reused: no allocation per frame in steady
//!   state.
//! - Ordering between streams: `pre` records an event after its kernel and `infer` makes its
//!   stream wait on it (no host wait); `infer` waits for its stream before handing the outputs on,
//!   so `post` and the next frame's `pre` never see a buffer in use. cudarc's own per-buffer events
//!   (event tracking, on for framepipe's context) add the same waits for the buffers it owns.
//! - The graph's input and outputs are fixed addresses captured in the graph; the per-frame device
//!   copies in and out of them (4.9 MB and 0.2–2.8 MB for YOLOv8 at 640, device to device) are what
//!   lets several frames be in flight at once.

use std::sync::{Arc, OnceLock};

use cudarc::driver::{
    result, sys, CudaEvent, CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, LaunchConfig,
    PinnedHostSlice, PushKernelArg,
};
use framepipe_infer::{CudaGraphSession, Engine};
use framepipe_vision::{
    BBox, Decoder, Detection, FrameRef, LetterboxParams, PostprocessConfig, Postprocessor, PreprocessConfig, TensorView,
};

use crate::{driver, CudaError, GpuPreprocessor, PinnedFrame};

/// A preprocessed frame on the device: the model input (`3 x H x W` planar f32), the event that
/// marks it written, and the letterbox geometry. Allocated at its first use by [`DevicePre`].
#[derive(Default)]
pub struct DeviceInput {
    buf: Option<CudaSlice<f32>>,
    ready: Option<CudaEvent>,
    /// The geometry of the frame it holds (`None` before the first frame).
    pub letterbox: Option<LetterboxParams>,
}

impl DeviceInput {
    /// An empty slot (no device memory yet): what a pool makes.
    pub fn empty() -> DeviceInput {
        DeviceInput::default()
    }
}

/// A model's outputs on the device, copied out of a graph session's fixed output buffers.
#[derive(Default)]
pub struct DeviceOutputs {
    bufs: Vec<CudaSlice<f32>>,
    shapes: Vec<Vec<usize>>,
}

impl DeviceOutputs {
    /// An empty set (no device memory yet): what a pool makes.
    pub fn empty() -> DeviceOutputs {
        DeviceOutputs::default()
    }

    /// The outputs' shapes (empty before the first run).
    pub fn shapes(&self) -> &[Vec<usize>] {
        &self.shapes
    }

    /// A host copy of the outputs (allocates: for checks, not for the hot path).
    pub fn to_host(&self) -> Result<Vec<Vec<f32>>, CudaError> {
        self.bufs
            .iter()
            .map(|b| b.stream().clone().clone_dtoh(b).map_err(|e| CudaError::driver("download the outputs", e)))
            .collect()
    }
}

/// Where a frame comes from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// Ordinary host memory: copied into a pinned staging buffer, then uploaded.
    Host(FrameRef<'a>),
    /// Page-locked memory: uploaded in place (one DMA, no host copy).
    Pinned(&'a PinnedFrame),
}

/// The pre stage's GPU worker: upload from pinned memory, then the letterbox kernel writes
/// straight into a [`DeviceInput`] on the device; nothing comes back.
pub struct DevicePre {
    gpu: GpuPreprocessor,
}

impl DevicePre {
    /// A worker with its own stream (see [`GpuPreprocessor::new`] for the errors).
    pub fn new(config: PreprocessConfig) -> Result<DevicePre, CudaError> {
        Ok(DevicePre { gpu: GpuPreprocessor::new(config)? })
    }

    /// The letterbox kernel's worker.
    pub fn preprocessor(&self) -> &GpuPreprocessor {
        &self.gpu
    }

    /// The letterbox kernel's worker, mutably (e.g. to time it).
    pub fn preprocessor_mut(&mut self) -> &mut GpuPreprocessor {
        &mut self.gpu
    }

    /// Uploads `frame`, letterboxes it into `slot` and records `slot`'s ready event; returns
    /// without waiting for the GPU.
    pub fn process(&mut self, frame: Source<'_>, slot: &mut DeviceInput) -> Result<LetterboxParams, CudaError> {
        let len = self.gpu.output_len();
        let stream = Arc::clone(self.gpu.stream());
        let buf = match slot.buf.take() {
            Some(b) if b.len() == len => b,
            _ => {
                // SAFETY: the letterbox kernel writes all `len` values before anything reads them.
                unsafe { stream.alloc::<f32>(len) }.map_err(|e| CudaError::driver("allocate a device input", e))?
            }
        };
        let buf = slot.buf.insert(buf);
        let params = match frame {
            Source::Host(f) => self.gpu.preprocess_to_device(f, buf)?,
            Source::Pinned(f) => self.gpu.preprocess_pinned_to_device(f, buf)?,
        };
        let ready = match slot.ready.take() {
            Some(e) => e,
            None => stream
                .context()
                .new_event(Some(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING))
                .map_err(|e| CudaError::driver("create an event", e))?,
        };
        let ready = slot.ready.insert(ready);
        ready.record(&stream).map_err(|e| CudaError::driver("record the input's event", e))?;
        slot.letterbox = Some(params);
        Ok(params)
    }
}

/// The infer stage's GPU worker: one CUDA graph session, made on the worker's thread.
pub struct DeviceInfer {
    session: CudaGraphSession,
}

impl std::fmt::Debug for DeviceInfer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceInfer").field("session", &self.session).finish()
    }
}

impl DeviceInfer {
    /// Makes the calling thread's graph session of `engine` (tract-cuda with CUDA graphs).
    pub fn new(engine: &dyn Engine) -> Result<DeviceInfer, CudaError> {
        let session = engine.cuda_graph_session().ok_or_else(|| CudaError::Unsupported {
            what: format!(
                "device-resident frames need the tract-cuda engine with CUDA graphs; {} has none",
                engine.kind()
            ),
        })??;
        Ok(DeviceInfer { session })
    }

    /// The graph session.
    pub fn session(&self) -> &CudaGraphSession {
        &self.session
    }

    /// The graph session, mutably (e.g. to profile it).
    pub fn session_mut(&mut self) -> &mut CudaGraphSession {
        &mut self.session
    }

    /// Runs the model on `input` into `out`: waits (on the GPU) for `input`'s event, copies it into
    /// the graph's input, replays the graph, copies the outputs into `out` and waits for the stream.
    pub fn process(&mut self, input: &DeviceInput, out: &mut DeviceOutputs) -> Result<(), CudaError> {
        let (Some(buf), Some(ready)) = (input.buf.as_ref(), input.ready.as_ref()) else {
            return Err(CudaError::Unsupported {
                what: "an empty device input (no frame was preprocessed into it)".into(),
            });
        };
        let stream = Arc::clone(self.session.stream());
        let need: usize = self.session.input_shape().iter().product();
        if buf.len() != need {
            return Err(CudaError::Unsupported {
                what: format!("a device input of {} values for a model input of {need}", buf.len()),
            });
        }
        stream.wait(ready).map_err(|e| CudaError::driver("wait for the input's event", e))?;
        {
            let (src, _read) = buf.device_ptr(&stream);
            // SAFETY: both buffers hold `need` f32 values on this context; the copy is queued on
            // `stream`, after the wait on the event that marks `src` written, and before the graph
            // that reads the destination.
            unsafe { result::memcpy_dtod_async(self.session.input_device_ptr(), src, need * 4, stream.cu_stream()) }
                .map_err(|e| CudaError::driver("copy the input into the graph's input", e))?;
        }
        self.session.launch()?;
        let outputs = self.session.output_count();
        if out.bufs.len() != outputs {
            out.bufs.clear();
            out.shapes.clear();
        }
        for ix in 0..outputs {
            let shape = self.session.output_shape(ix);
            let len: usize = shape.iter().product();
            if out.bufs.len() <= ix || out.bufs[ix].len() != len {
                // SAFETY: the copy below writes all `len` values before anything reads them.
                let b =
                    unsafe { stream.alloc::<f32>(len) }.map_err(|e| CudaError::driver("allocate device outputs", e))?;
                if out.bufs.len() <= ix {
                    out.bufs.push(b);
                    out.shapes.push(shape.to_vec());
                } else {
                    out.bufs[ix] = b;
                    out.shapes[ix] = shape.to_vec();
                }
            }
            let (dst, _write) = out.bufs[ix].device_ptr_mut(&stream);
            // SAFETY: both hold `len` f32 values; queued after the graph that writes the source.
            unsafe { result::memcpy_dtod_async(dst, self.session.output_device_ptr(ix), len * 4, stream.cu_stream()) }
                .map_err(|e| CudaError::driver("copy the graph's outputs", e))?;
        }
        self.session.synchronize()?;
        Ok(())
    }
}

/// The post stage's GPU worker: a score filter on the device (YOLOv8 heads), the survivors copied
/// back, NMS and the mapping to the frame on the CPU with [`Postprocessor`], so the detections are
/// those of the CPU path. Other decoders download the whole output and run the CPU path.
pub struct DevicePost {
    stream: Arc<CudaStream>,
    post: Postprocessor,
    /// `(classes, anchors)` when the decoder is a channels-first YOLOv8 head.
    yolo: Option<(usize, usize)>,
    function: CudaFunction,
    count: Option<CudaSlice<u32>>,
    /// The device address of `records_host` (mapped pinned memory).
    records_dev: sys::CUdeviceptr,
    count_host: Option<PinnedHostSlice<u32>>,
    records_host: Option<PinnedHostSlice<u32>>,
    keyed: Vec<(u32, Detection)>,
    candidates: Vec<Detection>,
    host: Vec<Vec<f32>>,
    /// Survivors of the last filter (what was copied back), for reports.
    pub last_survivors: usize,
}

impl DevicePost {
    /// A worker with its own stream for `decoder` with `config`.
    pub fn new(decoder: Decoder, config: PostprocessConfig) -> Result<DevicePost, CudaError> {
        let post = Postprocessor::new(decoder.clone(), config)?;
        let ctx = driver::context()?;
        let stream = ctx.new_stream().map_err(|e| CudaError::driver("create a stream", e))?;
        let module = ctx.load_module(filter_ptx()?).map_err(|e| CudaError::driver("load the filter kernel", e))?;
        let function = module
            .load_function("framepipe_filter_yolov8")
            .map_err(|e| CudaError::driver("find the filter kernel", e))?;
        let yolo = match decoder {
            Decoder::YoloV8 { num_classes, transposed: false } => Some((num_classes, 0)),
            _ => None,
        };
        Ok(DevicePost {
            stream,
            post,
            yolo,
            function,
            count: None,
            records_dev: 0,
            count_host: None,
            records_host: None,
            keyed: Vec::new(),
            candidates: Vec::new(),
            host: Vec::new(),
            last_survivors: 0,
        })
    }

    /// Whether the score filter runs on the GPU (a channels-first YOLOv8 head).
    pub fn filters_on_gpu(&self) -> bool {
        self.yolo.is_some()
    }

    /// Turns `outputs` into detections in frame coordinates (into `out`, cleared first).
    pub fn process(
        &mut self,
        outputs: &DeviceOutputs,
        letterbox: &LetterboxParams,
        out: &mut Vec<Detection>,
    ) -> Result<(), CudaError> {
        let Some((nc, _)) = self.yolo else { return self.process_on_host(outputs, letterbox, out) };
        let (Some(buf), Some(shape)) = (outputs.bufs.first(), outputs.shapes.first()) else {
            return Err(CudaError::Unsupported { what: "no model output to postprocess".into() });
        };
        let n = match shape.as_slice() {
            [1, rows, n] | [rows, n] if *rows == 4 + nc => *n,
            _ => {
                return Err(CudaError::Vision(framepipe_vision::VisionError::TensorShape {
                    decoder: "YOLOv8",
                    shape: shape.clone(),
                    reason: format!("expected 4 + {nc} rows (channels first)"),
                }))
            }
        };
        let stream = Arc::clone(&self.stream);
        let words = 7 * n;
        if self.records_host.as_ref().map(|r| r.len()) != Some(words) {
            // SAFETY: as above. Mapped into the device's address space (DEVICEMAP): the kernel writes
            // the survivors straight into host memory, so no copy (and no second wait) follows it.
            let host =
                unsafe { stream.context().alloc_pinned_with_flags::<u32>(words, sys::CU_MEMHOSTALLOC_DEVICEMAP) }
                    .map_err(|e| CudaError::driver("allocate the filter", e))?;
            let mut dptr: sys::CUdeviceptr = 0;
            let hptr = host.as_ptr().map_err(|e| CudaError::driver("allocate the filter", e))?;
            // SAFETY: `hptr` is the start of a live DEVICEMAP allocation; the driver writes one
            // device address into `dptr`.
            unsafe { sys::cuMemHostGetDevicePointer_v2(&mut dptr, hptr as *mut std::ffi::c_void, 0) }
                .result()
                .map_err(|e| CudaError::driver("map the filter's host buffer", e))?;
            self.records_host = Some(host);
            self.records_dev = dptr;
        }
        if self.count.is_none() {
            self.count = Some(stream.alloc_zeros::<u32>(1).map_err(|e| CudaError::driver("allocate the filter", e))?);
            // SAFETY: the copy below writes it before it is read.
            self.count_host = Some(
                unsafe { stream.context().alloc_pinned_with_flags::<u32>(1, 0) }
                    .map_err(|e| CudaError::driver("allocate the filter", e))?,
            );
        }
        let (Some(count), Some(count_host), Some(records_host)) =
            (self.count.as_mut(), self.count_host.as_mut(), self.records_host.as_ref())
        else {
            unreachable!("allocated above");
        };
        let records = self.records_dev;
        stream.memset_zeros(count).map_err(|e| CudaError::driver("reset the filter's count", e))?;
        let conf = self.post.config().conf_threshold;
        let (n32, nc32, cap) = (n as i32, nc as i32, n as u32);
        {
            let mut launch = stream.launch_builder(&self.function);
            launch.arg(buf).arg(&n32).arg(&nc32).arg(&conf).arg(&mut *count).arg(&records).arg(&cap);
            let cfg =
                LaunchConfig { grid_dim: (n.div_ceil(256) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
            // SAFETY: the arguments match `framepipe_filter_yolov8`'s signature; the kernel reads
            // `(4 + nc) * n` floats of `buf` (its shape, checked above) and writes at most `cap = n`
            // records of 7 words (`records` holds 7n) and the one counter.
            unsafe { launch.launch(cfg) }.map_err(|e| CudaError::driver("launch the filter kernel", e))?;
        }
        stream.memcpy_dtoh(count, count_host).map_err(|e| CudaError::driver("download the survivors' count", e))?;
        // The one wait: for the kernel (its survivors are then in mapped host memory) and the count.
        stream.synchronize().map_err(|e| CudaError::driver("wait for the filter", e))?;
        let k = (count_host.as_slice().map_err(|e| CudaError::driver("wait for the count", e))?[0] as usize).min(n);
        self.last_survivors = k;
        self.keyed.clear();
        if k > 0 {
            let ptr = records_host.as_ptr().map_err(|e| CudaError::driver("read the survivors", e))?;
            // SAFETY: `records_host` holds 7n ≥ 7k words; the kernel that wrote the first 7k has
            // completed (the stream was synchronised above) and nothing writes them until the next
            // launch, which this `&mut self` call sequence orders after this read.
            let host = unsafe { std::slice::from_raw_parts(ptr, 7 * k) };
            for r in host.chunks_exact(7) {
                let f = |i: usize| f32::from_bits(r[i]);
                self.keyed.push((
                    r[0],
                    Detection {
                        class_id: r[1],
                        score: f(2),
                        bbox: BBox::from_cxcywh(f(3), f(4), f(5), f(6)),
                        landmarks: None,
                    },
                ));
            }
            // The CPU decoder's order: by anchor.
            self.keyed.sort_unstable_by_key(|(anchor, _)| *anchor);
        }
        self.candidates.clear();
        self.candidates.extend(self.keyed.iter().map(|(_, d)| *d));
        self.post.process_decoded(&mut self.candidates, letterbox, out);
        Ok(())
    }

    /// Any decoder: the whole output comes back and the CPU postprocessor runs.
    fn process_on_host(
        &mut self,
        outputs: &DeviceOutputs,
        letterbox: &LetterboxParams,
        out: &mut Vec<Detection>,
    ) -> Result<(), CudaError> {
        self.host.resize_with(outputs.bufs.len(), Vec::new);
        for (buf, host) in outputs.bufs.iter().zip(self.host.iter_mut()) {
            host.resize(buf.len(), 0.0);
            self.stream
                .memcpy_dtoh(buf, host.as_mut_slice())
                .map_err(|e| CudaError::driver("download the outputs", e))?;
        }
        self.stream.synchronize().map_err(|e| CudaError::driver("download the outputs", e))?;
        let views: Vec<TensorView<'_>> =
            self.host.iter().zip(&outputs.shapes).map(|(d, s)| TensorView { shape: s, data: d }).collect();
        self.last_survivors = 0;
        Ok(self.post.process(&views, letterbox, out)?)
    }
}

/// The filter kernel's PTX, compiled once per process.
fn filter_ptx() -> Result<cudarc::nvrtc::Ptx, CudaError> {
    static PTX: OnceLock<Result<String, String>> = OnceLock::new();
    let opts = cudarc::nvrtc::CompileOptions { name: Some("framepipe_filter.cu".into()), ..Default::default() };
    driver::compiled_ptx(&PTX, include_str!("filter.cu"), opts)
}
