//! tract-cuda's run as one CUDA graph per session (cargo feature `cuda`), with the model's input
//! and outputs kept on the device.
//!
//! tract-cuda dispatches every kernel from the host: for YOLOv8n-640 about 40 µs of host time per
//! cuDNN convolution and 4–10 µs per small op, so a run is host-bound (4.1–4.6 ms on an H200
//! against 1.7 ms of GPU work; `../shared/cuda-graph.md`). Capturing one run with
//! `cuStreamBeginCapture` and replaying it with `cuGraphLaunch` hands the whole network to the
//! GPU in one call. What capture needs, and how the engine gives it:
//!
//! 1. **No host round trip inside the run.** YOLO's MaxPools run on the CPU in tract-cuda 0.23.9;
//!    [`crate::passes::rewrite_max_pools`] turns them into GPU ops first.
//! 2. **No output sync.** The model outputs' `DeviceSync(ToHost)` synchronizes the stream;
//!    [`detach_output_syncs`] points each model output at the device tensor before it, so that a
//!    run ends on the device. Each session then copies the outputs (views into tract's arena)
//!    into device buffers of its own, inside the graph.
//! 3. **A fixed device input.** The input is one device tensor per session, handed to tract
//!    wrapped as a `LazyHostStorage`, which the input's `DeviceSync(ToDevice)` passes through
//!    without a copy. A new frame is written into that buffer before each replay: by
//!    [`Session::run`] from a pinned host buffer, or by a GPU kernel through
//!    [`CudaGraphSession::input_device_ptr`].
//! 4. **Memory.** tract's per-run arena allocations are captured as graph memory nodes; the graph
//!    is instantiated with `AUTO_FREE_ON_LAUNCH`.
//! 5. **Threads.** tract-cuda gives each OS thread its own stream; a session captures on the
//!    thread that makes it, after warm-up runs (kernel loads, cuDNN descriptors), and replays on
//!    that stream.
//!
//! Capture is done once, when the session is made. Any failure is an
//! [`InferError::CudaGraph`] then, never a retry in a running process (a failed capture can leave
//! the CUDA context unusable). Each new session also checks that one replay gives bit-for-bit the
//! outputs of one plain run on the same input before it is handed out.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use cudarc::driver::{result, sys, CudaEvent, CudaFunction, CudaGraph, CudaStream, LaunchConfig, PushKernelArg};
use tract_gpu::device::get_context;
use tract_gpu::sync::{DeviceSync, DeviceSyncKind};
use tract_gpu::tensor::{DeviceTensor, DeviceTensorExt, IntoDevice, LazyHostStorage};
use tract_onnx::prelude::{Datum, TValue, TractResult, TypedFact, TypedModel, TypedSimplePlan, TypedSimpleState};

use crate::{
    check_run_inputs, fill_tensor, Engine, EngineKind, InferError, ModelInfo, Session, Tensor, TensorInfo, TensorRef,
};

type TractTensor = tract_onnx::prelude::Tensor;

/// Points every model output that ends in a `DeviceSync(ToHost)` at the device tensor feeding it,
/// and drops the syncs. Returns the host facts the outputs had (their shapes and types, for the
/// model's description). Run after `CudaTransform` and `optimize`.
pub(crate) fn detach_output_syncs(model: &mut TypedModel) -> TractResult<Vec<TypedFact>> {
    let outputs = model.output_outlets()?.to_vec();
    let mut facts = Vec::with_capacity(outputs.len());
    let mut detached = outputs.clone();
    for (ix, outlet) in outputs.iter().enumerate() {
        facts.push(model.outlet_fact(*outlet)?.clone());
        let node = model.node(outlet.node);
        if let Some(sync) = node.op_as::<DeviceSync>() {
            if sync.kind == DeviceSyncKind::ToHost {
                detached[ix] = node.inputs[0];
            }
        }
    }
    model.select_output_outlets(&detached)?;
    *model = std::mem::take(model).into_compact()?;
    Ok(facts)
}

/// Whether `model` still has a host sync other than at its input (what capture cannot cross).
pub(crate) fn host_syncs(model: &TypedModel) -> Vec<String> {
    model
        .nodes()
        .iter()
        .filter(|n| n.op_as::<DeviceSync>().is_some_and(|s| s.kind == DeviceSyncKind::ToHost))
        .map(|n| n.name.clone())
        .collect()
}

/// The tract-cuda engine with CUDA graphs: the plan (weights on the device, shared), and the
/// description of the model; each session captures its own graph.
pub(crate) struct CudaGraphEngine {
    pub info: Arc<ModelInfo>,
    pub plan: Arc<TypedSimplePlan>,
}

impl Engine for CudaGraphEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::TractCuda
    }

    fn model(&self) -> &ModelInfo {
        &self.info
    }

    fn session(&self) -> Result<Box<dyn Session>, InferError> {
        Ok(Box::new(self.graph_session()?))
    }

    fn cuda_graph_session(&self) -> Option<Result<CudaGraphSession, InferError>> {
        Some(self.graph_session())
    }
}

impl CudaGraphEngine {
    fn graph_session(&self) -> Result<CudaGraphSession, InferError> {
        let path = self.info.path.clone();
        catch_unwind(AssertUnwindSafe(|| CudaGraphSession::new(self))).map_err(|p| InferError::CudaGraph {
            path,
            step: "make a session",
            reason: format!("tract-cuda panicked: {}", crate::tract_cuda_engine::panic_text(&*p)),
        })?
    }
}

/// Page-locked host memory for `len` `f32`s (`cuMemHostAlloc`), freed on drop.
struct Pinned {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: the buffer is plain host memory owned by this value alone; moving it to another thread
// moves the only pointer to it.
unsafe impl Send for Pinned {}

impl Pinned {
    fn new(len: usize) -> Result<Pinned, cudarc::driver::DriverError> {
        // SAFETY: `cuMemHostAlloc` of `len * 4` bytes (flags 0: the host reads and writes it) in
        // the context bound to this thread; the memory is zeroed below before any read.
        let ptr = unsafe { result::malloc_host(len.max(1) * std::mem::size_of::<f32>(), 0) }? as *mut f32;
        // SAFETY: `ptr` is a fresh allocation of `len` f32s, aligned (page-aligned by the driver).
        unsafe { std::ptr::write_bytes(ptr, 0, len) };
        Ok(Pinned { ptr, len })
    }

    fn as_slice(&self) -> &[f32] {
        // SAFETY: `ptr` holds `len` initialised f32s for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    fn as_mut_slice(&mut self) -> &mut [f32] {
        // SAFETY: as above, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `cuMemHostAlloc` and is freed once; every copy that used it was
        // synchronised by the owning session before it could be dropped.
        let _ = unsafe { result::free_host(self.ptr as *mut std::ffi::c_void) };
    }
}

/// A captured graph, owned by one session.
struct Graph(CudaGraph);

// SAFETY: CUDA graph execs may be launched from any thread as long as calls on one exec are not
// concurrent. The graph is only reached through its session, which is `Send` but not `Sync`, so
// there is never more than one caller.
unsafe impl Send for Graph {}

/// One replica of a tract-cuda model whose run is a CUDA graph, with a device-resident input and
/// outputs (see the module docs). Made by [`Engine::cuda_graph_session`] (or as a plain
/// [`Session`] by [`Engine::session`]) on the thread that will run it.
///
/// Two ways to use it:
/// - as a [`Session`]: [`run`](Session::run) copies the host input into a pinned buffer,
///   uploads it, replays the graph, downloads the outputs and waits: one host → device copy, one
///   launch, one device → host copy per output;
/// - device-resident: write the input at [`input_device_ptr`](Self::input_device_ptr) with work
///   ordered before [`launch`](Self::launch) on [`stream`](Self::stream) (or made to wait through
///   an event), then read the outputs at [`output_device_ptr`](Self::output_device_ptr) after the
///   stream is done.
pub struct CudaGraphSession {
    info: Arc<ModelInfo>,
    /// tract's state, the device input (aliasing `input_ptr`) and the session's own device outputs
    /// (aliasing `output_ptrs`): what the graph was captured from.
    turn: Turn,
    stream: Arc<CudaStream>,
    input_shape: Vec<usize>,
    input_ptr: sys::CUdeviceptr,
    output_ptrs: Vec<sys::CUdeviceptr>,
    output_shapes: Vec<Vec<usize>>,
    pinned_in: Pinned,
    pinned_out: Vec<Pinned>,
    host_outputs: Vec<Tensor>,
    graph: Graph,
    capture_ms: f64,
}

impl std::fmt::Debug for CudaGraphSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaGraphSession")
            .field("model", &self.info.path)
            .field("input_shape", &self.input_shape)
            .field("output_shapes", &self.output_shapes)
            .finish_non_exhaustive()
    }
}

fn concrete(info: &TensorInfo) -> Option<Vec<usize>> {
    info.shape.iter().copied().collect()
}

impl CudaGraphSession {
    fn new(engine: &CudaGraphEngine) -> Result<CudaGraphSession, InferError> {
        let info = Arc::clone(&engine.info);
        let path = info.path.clone();
        let fail = |step: &'static str| {
            let path = path.clone();
            move |e: &dyn std::fmt::Display| InferError::CudaGraph {
                path: path.clone(),
                step,
                reason: format!("{e:#}"),
            }
        };
        let input_shape = match info.inputs.as_slice() {
            [one] => concrete(one),
            _ => None,
        }
        .ok_or_else(|| InferError::UnsupportedModel {
            path: path.clone(),
            reason: "CUDA graphs need one input of fixed shape (set EngineOptions::input_shape)".into(),
        })?;
        let output_shapes: Vec<Vec<usize>> =
            info.outputs.iter().map(concrete).collect::<Option<_>>().ok_or_else(|| InferError::UnsupportedModel {
                path: path.clone(),
                reason: "CUDA graphs need outputs of fixed shape".into(),
            })?;
        if let Some(o) = info.outputs.iter().find(|o| o.dtype != crate::DType::F32) {
            return Err(InferError::UnsupportedModel {
                path: path.clone(),
                reason: format!("output `{}` is {}, CUDA graph sessions return f32 only", o.name, o.dtype),
            });
        }
        let stream =
            tract_cuda::with_cuda_stream(|s| Ok(Arc::clone(&**s))).map_err(|e| fail("get the thread's stream")(&e))?;
        stream.context().bind_to_thread().map_err(|e| fail("bind the CUDA context")(&e))?;
        let state = engine.plan.spawn().map_err(|e| fail("start a session")(&e))?;
        let device_input: DeviceTensor = TractTensor::zero::<f32>(&input_shape)
            .and_then(|t| t.into_device())
            .map_err(|e| fail("allocate the device input")(&e))?;
        let input_ptr = device_input.device_buffer_ptr() as sys::CUdeviceptr;
        let lazy = LazyHostStorage::new(device_input).map_err(|e| fail("wrap the device input")(&e))?;
        let input_value = TValue::from_const(Arc::new(lazy.into_tensor()));
        let mut outputs_dev = Vec::with_capacity(output_shapes.len());
        for shape in &output_shapes {
            outputs_dev
                .push(DeviceTensor::uninitialized::<f32>(shape).map_err(|e| fail("allocate the device outputs")(&e))?);
        }
        let output_ptrs = outputs_dev.iter().map(|t| t.device_buffer_ptr() as sys::CUdeviceptr).collect();
        let pin = |len: usize| Pinned::new(len).map_err(|e| fail("allocate pinned host buffers")(&e));
        let pinned_in = pin(input_shape.iter().product())?;
        let pinned_out = output_shapes.iter().map(|s| pin(s.iter().product())).collect::<Result<Vec<_>, _>>()?;
        let host_outputs = info
            .outputs
            .iter()
            .zip(&output_shapes)
            .map(|(o, s)| Tensor { name: o.name.clone(), shape: s.clone(), data: vec![0.0; s.iter().product()] })
            .collect();

        // Warm-up: kernel loads, cuDNN descriptors and the arena's first allocation happen outside
        // the capture.
        let mut turn = Turn { state, input_value, outputs_dev };
        for _ in 0..3 {
            turn.run().map_err(|e| fail("warm up")(&e))?;
        }
        stream.synchronize().map_err(|e| fail("warm up")(&e))?;

        let start = Instant::now();
        stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(|e| fail("begin the capture")(&e))?;
        let captured = catch_unwind(AssertUnwindSafe(|| turn.run()));
        // The capture is always ended, whatever happened inside it.
        let ended = stream.end_capture(sys::CUgraphInstantiate_flags::CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH);
        match captured {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(fail("capture")(&e)),
            Err(p) => {
                return Err(fail("capture")(&format!(
                    "tract-cuda panicked: {}",
                    crate::tract_cuda_engine::panic_text(&*p)
                )))
            }
        }
        let graph = match ended {
            Ok(Some(g)) => g,
            Ok(None) => return Err(fail("capture")(&"the capture recorded nothing")),
            Err(e) => return Err(fail("instantiate")(&e)),
        };
        graph.upload().map_err(|e| fail("upload the graph")(&e))?;
        let capture_ms = start.elapsed().as_secs_f64() * 1e3;
        let mut session = CudaGraphSession {
            info,
            turn,
            stream,
            input_shape,
            input_ptr,
            output_ptrs,
            output_shapes,
            pinned_in,
            pinned_out,
            host_outputs,
            graph: Graph(graph),
            capture_ms,
        };
        session.check_replay()?;
        Ok(session)
    }

    /// One replay against one plain run on the same input: the outputs must be bit-identical.
    fn check_replay(&mut self) -> Result<(), InferError> {
        let path = self.info.path.clone();
        let fail = |e: &dyn std::fmt::Display| InferError::CudaGraph {
            path: path.clone(),
            step: "check the replay",
            reason: e.to_string(),
        };
        for (i, v) in self.pinned_in.as_mut_slice().iter_mut().enumerate() {
            *v = ((i * 7919) % 255) as f32 / 255.0;
        }
        self.upload_input().map_err(|e| fail(&e))?;
        self.turn.run().map_err(|e| fail(&e))?;
        self.download_outputs().map_err(|e| fail(&e))?;
        let plain: Vec<Vec<f32>> = self.pinned_out.iter().map(|p| p.as_slice().to_vec()).collect();
        // Scribble over the outputs so that a replay that writes nothing cannot pass.
        for (ptr, shape) in self.output_ptrs.iter().zip(&self.output_shapes) {
            let bytes = shape.iter().product::<usize>() * std::mem::size_of::<f32>();
            // SAFETY: `ptr` is the session's own output buffer of `bytes` bytes, used only on this
            // stream.
            unsafe { result::memset_d8_async(*ptr, 0xff, bytes, self.stream.cu_stream()) }.map_err(|e| fail(&e))?;
        }
        self.launch()?;
        self.download_outputs().map_err(|e| fail(&e))?;
        for (ix, (a, b)) in plain.iter().zip(&self.pinned_out).enumerate() {
            let differ = a.iter().zip(b.as_slice()).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
            if differ > 0 {
                return Err(fail(&format!(
                    "output {ix}: {differ} of {} values differ between the replay and a plain run",
                    a.len()
                )));
            }
        }
        Ok(())
    }

    /// Queues the copy of the pinned input buffer to the device input.
    fn upload_input(&self) -> Result<(), cudarc::driver::DriverError> {
        // SAFETY: the destination is the session's device input of `pinned_in.len` f32s; the
        // source stays alive and untouched until the stream is synchronised (every caller does so
        // before it next writes the pinned buffer).
        unsafe { result::memcpy_htod_async(self.input_ptr, self.pinned_in.as_slice(), self.stream.cu_stream()) }
    }

    /// Queues the copies of the device outputs into the pinned buffers and waits for them.
    fn download_outputs(&mut self) -> Result<(), cudarc::driver::DriverError> {
        let stream = self.stream.cu_stream();
        for (pinned, ptr) in self.pinned_out.iter_mut().zip(&self.output_ptrs) {
            // SAFETY: `ptr` is the session's device output of `pinned.len` f32s; the stream is
            // synchronised below before the pinned buffer is read or dropped.
            unsafe { result::memcpy_dtoh_async(pinned.as_mut_slice(), *ptr, stream) }?;
        }
        self.stream.synchronize()
    }

    /// The stream the graph runs on (tract-cuda's stream of the thread that made the session).
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The device address of the model input: `input_shape().iter().product()` f32 values,
    /// planar, that the next [`launch`](Self::launch) reads.
    pub fn input_device_ptr(&self) -> sys::CUdeviceptr {
        self.input_ptr
    }

    /// The model input's shape.
    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    /// The device address of output `ix` (as many f32 values as `output_shape(ix)` holds), written
    /// by each [`launch`](Self::launch). Panics if `ix` is out of range.
    pub fn output_device_ptr(&self, ix: usize) -> sys::CUdeviceptr {
        self.output_ptrs[ix]
    }

    /// Output `ix`'s shape. Panics if `ix` is out of range.
    pub fn output_shape(&self, ix: usize) -> &[usize] {
        &self.output_shapes[ix]
    }

    /// The number of outputs.
    pub fn output_count(&self) -> usize {
        self.output_shapes.len()
    }

    /// How long the capture and instantiation took, in milliseconds.
    pub fn capture_ms(&self) -> f64 {
        self.capture_ms
    }

    /// Queues one replay of the graph on [`stream`](Self::stream), without waiting: it reads the
    /// device input and writes the device outputs.
    pub fn launch(&self) -> Result<(), InferError> {
        self.graph.0.launch().map_err(|e| self.run_error("replay the CUDA graph of", e))
    }

    /// Waits until everything queued on [`stream`](Self::stream) is done.
    pub fn synchronize(&self) -> Result<(), InferError> {
        self.stream.synchronize().map_err(|e| self.run_error("wait for", e))
    }

    fn run_error(&self, action: &'static str, e: impl std::fmt::Display) -> InferError {
        InferError::Engine {
            engine: EngineKind::TractCuda,
            action,
            path: self.info.path.clone(),
            message: e.to_string(),
        }
    }

    /// Per-op GPU time of one run, without host gaps: the stream is first held by a kernel that
    /// spins on the GPU's clock while the whole run is queued behind it with an event after each
    /// node, so the nodes then execute back to back as in the graph. Median over `runs` runs.
    ///
    /// Runs tract's plan node by node (not the graph) on this session's state and buffers.
    pub fn profile(&mut self, runs: usize) -> Result<OpProfile, InferError> {
        let path = self.info.path.clone();
        let fail = |e: &dyn std::fmt::Display| InferError::Engine {
            engine: EngineKind::TractCuda,
            action: "profile",
            path: path.clone(),
            message: e.to_string(),
        };
        let hold = hold_kernel(&self.stream).map_err(|e| fail(&e))?;
        let nodes =
            self.turn.state.plan().order_without_consts().len().max(self.turn.state.plan().model().nodes().len());
        let flags = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let ctx = self.stream.context();
        let events: Vec<CudaEvent> =
            (0..nodes + 2).map(|_| ctx.new_event(flags)).collect::<Result<_, _>>().map_err(|e| fail(&e))?;
        let mut per_run: Vec<Vec<(String, String, f64)>> = Vec::new();
        let mut enqueue_us = Vec::new();
        let mut hold_ms = 20.0f64;
        for _ in 0..runs.max(1) {
            let ns: u64 = (hold_ms * 1e6) as u64;
            let mut launch = self.stream.launch_builder(&hold);
            launch.arg(&ns);
            // SAFETY: `framepipe_hold(unsigned long long)` takes one by-value u64 and touches no
            // memory.
            unsafe { launch.launch(LaunchConfig { grid_dim: (1, 1, 1), block_dim: (1, 1, 1), shared_mem_bytes: 0 }) }
                .map_err(|e| fail(&e))?;
            events[0].record(&self.stream).map_err(|e| fail(&e))?;
            let t0 = Instant::now();
            let mut names: Vec<(String, String)> = Vec::with_capacity(nodes);
            let stream = Arc::clone(&self.stream);
            let mut k = 1usize;
            let ran = self.turn.run_with(|ctx, state, node, inputs| {
                let r = tract_onnx::tract_core::plan::eval(ctx, state, node, inputs);
                if k < events.len() - 1 {
                    let _ = events[k].record(&stream);
                    names.push((node.op().name().to_string(), node.name.clone()));
                    k += 1;
                }
                r
            });
            let last = k;
            events[last].record(&self.stream).map_err(|e| fail(&e))?;
            names.push(("output copies".into(), "outputs".into()));
            let enqueued = t0.elapsed().as_secs_f64() * 1e6;
            self.stream.synchronize().map_err(|e| fail(&e))?;
            ran.map_err(|e| fail(&e))?;
            enqueue_us.push(enqueued);
            if enqueued > hold_ms * 1e3 * 0.8 {
                // The host was still queueing when the hold ran out: this run has gaps. Hold longer.
                hold_ms *= 2.0;
                continue;
            }
            let mut times = Vec::with_capacity(last);
            for i in 1..=last {
                let ms = events[i - 1].elapsed_ms(&events[i]).map_err(|e| fail(&e))?;
                let (op, name) = names[i - 1].clone();
                times.push((op, name, f64::from(ms) * 1e3));
            }
            per_run.push(times);
        }
        if per_run.is_empty() {
            return Err(fail(&"the host could not queue a run within the hold time"));
        }
        Ok(OpProfile::from_runs(&per_run, median(enqueue_us)))
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A kernel that holds its stream for a given number of nanoseconds of GPU time.
fn hold_kernel(stream: &Arc<CudaStream>) -> Result<CudaFunction, String> {
    const SRC: &str = r#"
extern "C" __global__ void framepipe_hold(unsigned long long ns) {
    unsigned long long t0, t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    do {
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    } while (t - t0 < ns);
}
"#;
    static PTX: OnceLock<Result<String, String>> = OnceLock::new();
    let ptx = PTX
        .get_or_init(|| cudarc::nvrtc::compile_ptx(SRC).map(|p| p.to_src()).map_err(|e| format!("{e:?}")))
        .clone()?;
    let module = stream.context().load_module(cudarc::nvrtc::Ptx::from_src(ptx)).map_err(|e| e.to_string())?;
    module.load_function("framepipe_hold").map_err(|e| e.to_string())
}

/// GPU time of one op class in a run.
#[derive(Debug, Clone, PartialEq)]
pub struct OpClassTime {
    /// The class (`conv`, `matmul`, `bias / binary`, `activation`, `transpose / axes`, ...).
    pub class: &'static str,
    /// Nodes of that class in the plan.
    pub nodes: usize,
    /// GPU microseconds per run (median over the profiled runs).
    pub us: f64,
}

/// Where the GPU time of one run goes ([`CudaGraphSession::profile`]).
#[derive(Debug, Clone, PartialEq)]
pub struct OpProfile {
    /// Sum over all nodes, GPU microseconds per run (median run).
    pub total_us: f64,
    /// Host time to queue one run node by node (what a graph replay saves), microseconds.
    pub enqueue_us: f64,
    /// Per class, largest first.
    pub classes: Vec<OpClassTime>,
    /// Per tract op name (`count`, GPU µs per run), largest first: what the classes are made of.
    pub ops: Vec<(String, usize, f64)>,
}

/// The class of a node, from its op's name and, for our MaxPool rewrite, its node name.
pub(crate) fn op_class(op: &str, node: &str) -> &'static str {
    let has = |k: &str| op.contains(k);
    if node.contains(".window-") || node.contains(".max-") || node.contains(".pad-") {
        "maxpool (rewritten: pad, slices, max)"
    } else if has("Conv") {
        "conv"
    } else if has("Gemm") || has("MatMul") || has("Matmul") {
        "matmul / gemm"
    } else if has("Sigmoid") || has("Silu") || has("SiLU") || has("Tanh") || has("Exp") || has("Relu") || has("Gelu") {
        "activation (sigmoid, SiLU)"
    } else if has("Add") || has("Mul") || has("Sub") || has("Div") || has("BinOp") || has("Binary") || has("Max") {
        "binary (bias add, SiLU's multiply)"
    } else if has("Transpose") || has("AxisOp") || has("Axis") || has("Permute") || has("Reshape") {
        "transpose / axis ops"
    } else if has("Concat") {
        "concat"
    } else if has("Slice") {
        "slice"
    } else if has("Softmax") {
        "softmax"
    } else if has("Reduce") {
        "reduce"
    } else if has("output copies") {
        "output copies"
    } else if has("Sync") || has("Copy") || has("Cast") {
        "sync / copy / cast"
    } else {
        "other"
    }
}

impl OpProfile {
    fn from_runs(runs: &[Vec<(String, String, f64)>], enqueue_us: f64) -> OpProfile {
        // The median run by total time stands for all (the runs have the same nodes).
        let mut order: Vec<usize> = (0..runs.len()).collect();
        let total = |r: &Vec<(String, String, f64)>| r.iter().map(|t| t.2).sum::<f64>();
        order.sort_by(|a, b| total(&runs[*a]).total_cmp(&total(&runs[*b])));
        let run = &runs[order[order.len() / 2]];
        let mut classes: Vec<OpClassTime> = Vec::new();
        let mut ops: Vec<(String, usize, f64)> = Vec::new();
        for (op, node, us) in run {
            let class = op_class(op, node);
            match classes.iter_mut().find(|c| c.class == class) {
                Some(c) => {
                    c.nodes += 1;
                    c.us += us;
                }
                None => classes.push(OpClassTime { class, nodes: 1, us: *us }),
            }
            match ops.iter_mut().find(|o| &o.0 == op) {
                Some(o) => {
                    o.1 += 1;
                    o.2 += us;
                }
                None => ops.push((op.clone(), 1, *us)),
            }
        }
        classes.sort_by(|a, b| b.us.total_cmp(&a.us));
        ops.sort_by(|a, b| b.2.total_cmp(&a.2));
        OpProfile { total_us: total(run), enqueue_us, classes, ops }
    }
}

/// The tract state of a session with its device input and output buffers: one run of the plan,
/// ending with the outputs copied into the session's own device buffers. What gets captured.
struct Turn {
    state: TypedSimpleState,
    input_value: TValue,
    outputs_dev: Vec<DeviceTensor>,
}

type EvalResult = TractResult<tract_onnx::prelude::TVec<TValue>>;

impl Turn {
    fn run(&mut self) -> TractResult<()> {
        self.run_with(tract_onnx::tract_core::plan::eval)
    }

    fn run_with<E>(&mut self, eval: E) -> TractResult<()>
    where
        E: for<'a, 'b, 'c> FnMut(
            &'a tract_onnx::tract_core::plan::EvalContext<'a>,
            Option<&'b mut (dyn tract_onnx::tract_core::ops::OpState + 'static)>,
            &'c tract_onnx::prelude::TypedNode,
            tract_onnx::prelude::TVec<TValue>,
        ) -> EvalResult,
    {
        let result = (|| -> TractResult<()> {
            self.state.set_input(0, self.input_value.clone())?;
            self.state.exec_plan_with_eval(eval)?;
            let ctx = get_context()?;
            for (ix, dst) in self.outputs_dev.iter().enumerate() {
                let value = self.state.output(ix)?;
                let src = value.to_device_tensor()?;
                let bytes = dst.len() * f32::datum_type().size_of();
                ctx.flat_copy(src, 0, dst, 0, bytes)?;
            }
            Ok(())
        })();
        let reset = self.state.reset_turn();
        result.and(reset)
    }
}

impl Session for CudaGraphSession {
    fn inputs(&self) -> &[TensorInfo] {
        &self.info.inputs
    }

    fn outputs(&self) -> &[TensorInfo] {
        &self.info.outputs
    }

    fn run(&mut self, inputs: &[TensorRef<'_>]) -> Result<&[Tensor], InferError> {
        check_run_inputs(&self.info.path, &self.info.inputs, inputs)?;
        self.pinned_in.as_mut_slice().copy_from_slice(inputs[0].data);
        self.upload_input().map_err(|e| self.run_error("upload the input of", e))?;
        self.launch()?;
        self.download_outputs().map_err(|e| self.run_error("download the outputs of", e))?;
        for ((dst, pinned), shape) in self.host_outputs.iter_mut().zip(&self.pinned_out).zip(&self.output_shapes) {
            fill_tensor(dst, shape, pinned.as_slice());
        }
        Ok(&self.host_outputs)
    }
}
