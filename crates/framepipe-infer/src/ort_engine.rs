//! The ONNX Runtime engine: the library is loaded once per process; each replica gets its own
//! ORT session, optionally sharing the weights.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use ort::ep::ExecutionProvider as _;
use ort::memory::Allocator;
use ort::session::builder::{GraphOptimizationLevel, PrepackedWeights, SessionBuilder};
use ort::session::{HasSelectedOutputs, OutputSelector, RunOptions, SessionInputValue};
use ort::value::{DynValue, TensorElementType, ValueType};
use prost::Message;
use tract_onnx::pb;

use crate::model::{dtype_of, dynamicize, ModelFile};
use crate::{
    check_run_inputs, DType, Engine, EngineKind, EngineOptions, ExecutionProvider, GraphOptimization, InferError,
    ModelInfo, OrtOptions, Session, Tensor, TensorInfo, TensorRef,
};

/// The ONNX Runtime loaded in this process (there can be only one).
pub(crate) struct OrtRuntime {
    /// The library file.
    pub path: PathBuf,
    /// Its version, e.g. `1.31.1`.
    pub version: String,
    env: ort::environment::Environment,
}

static RUNTIME: OnceLock<OrtRuntime> = OnceLock::new();
/// Serialises load attempts (a failed attempt leaves `RUNTIME` empty so a later one may
/// succeed).
static LOADING: Mutex<()> = Mutex::new(());

/// Loads ONNX Runtime (once per process) from `opts.dylib` or the first existing
/// [`ort_library_candidates`](crate::ort_library_candidates) entry, and creates the process's
/// ORT environment.
pub(crate) fn runtime(opts: &OrtOptions) -> Result<&'static OrtRuntime, InferError> {
    let _guard = LOADING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(rt) = RUNTIME.get() {
        if let Some(requested) = &opts.dylib {
            if !same_file(requested, &rt.path) {
                return Err(InferError::OrtAlreadyLoaded { loaded: rt.path.clone(), requested: requested.clone() });
            }
        }
        return Ok(rt);
    }
    let candidates = match &opts.dylib {
        Some(p) => vec![p.clone()],
        None => crate::ort_library_candidates(),
    };
    let mut tried = Vec::with_capacity(candidates.len());
    for path in candidates {
        if !path.is_file() {
            tried.push((path, "not found".to_string()));
            continue;
        }
        // `init_from` (not `init`) returns an error instead of panicking when the library
        // cannot be loaded or is too old.
        let builder = match ort::init_from(&path) {
            Ok(b) => b,
            Err(e) => {
                tried.push((path, format!("failed to load: {e}")));
                continue;
            }
        };
        match builder.with_name("framepipe").with_telemetry(false).build() {
            Ok(env) => {
                let version = library_version(&path).unwrap_or_else(|| "(unknown version)".into());
                let path = path.canonicalize().unwrap_or(path);
                return Ok(RUNTIME.get_or_init(|| OrtRuntime { path, version, env }));
            }
            Err(e) => {
                tried.push((path, format!("loaded but cannot create an environment: {e}")));
                // The library stays loaded in the process; trying another file would not help.
                break;
            }
        }
    }
    Err(InferError::OrtNotFound { tried })
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The version string of the ONNX Runtime library at `path` (already loaded by ort).
fn library_version(path: &Path) -> Option<String> {
    type GetApiBase = unsafe extern "C" fn() -> *const ort::sys::OrtApiBase;
    // SAFETY: ort has just loaded this very library successfully (its initialisers have run);
    // opening it again only takes another reference on the same loaded image.
    let lib = unsafe { libloading::Library::new(path) }.ok()?;
    // SAFETY: `OrtGetApiBase` is the C entry point every ONNX Runtime exports, with this
    // signature (`const OrtApiBase* ORT_API_CALL OrtGetApiBase(void)`; `ORT_API_CALL` is the C
    // calling convention on Linux); ort itself found it in this library.
    let get: libloading::Symbol<'_, GetApiBase> = unsafe { lib.get(b"OrtGetApiBase") }.ok()?;
    // SAFETY: `OrtGetApiBase` takes no argument and returns a pointer to a static struct.
    let base = unsafe { get() };
    if base.is_null() {
        return None;
    }
    // SAFETY: `base` is non-null and points to ONNX Runtime's static `OrtApiBase`;
    // `GetVersionString` returns a pointer to a static NUL-terminated string.
    let version = unsafe { std::ffi::CStr::from_ptr(((*base).GetVersionString)()) };
    Some(version.to_string_lossy().into_owned())
}

/// Where an engine gets its model from when it makes a session.
enum ModelSource {
    /// The file as it is.
    File(PathBuf),
    /// A rewritten model (shapes made dynamic), kept in memory.
    Bytes(Arc<[u8]>),
}

/// Initializers decoded once and handed to every session, plus ORT's shared pre-packed weights
/// container.
struct SharedWeights {
    initializers: Vec<(String, Arc<DynValue>)>,
    prepacked: PrepackedWeights,
}

/// A model loaded into ONNX Runtime, shared by its sessions.
pub(crate) struct OrtEngine {
    info: Arc<ModelInfo>,
    runtime: &'static OrtRuntime,
    source: ModelSource,
    opts: EngineOptions,
    shared: Option<SharedWeights>,
    /// The session built by `load` to check that ORT accepts the model, handed out by the first
    /// `session()` call.
    spare: Mutex<Option<ort::session::Session>>,
}

impl OrtEngine {
    /// Prepares the model for ONNX Runtime and builds a first session to check that ORT accepts
    /// it.
    pub fn load(file: &ModelFile, opts: &EngineOptions, runtime: &'static OrtRuntime) -> Result<OrtEngine, InferError> {
        let shapes = file.input_shapes(opts.input_shape.as_deref())?;
        check_provider(&opts.ort.execution_provider, runtime)?;
        // Static dims that the caller overrides must be made symbolic, or ORT refuses the input.
        let rewrite =
            shapes[0].iter().zip(&file.inputs[0].shape).any(|(want, declared)| declared.is_some() && want != declared);
        let source = if rewrite {
            let mut proto = file.proto.clone();
            dynamicize(&mut proto);
            ModelSource::Bytes(proto.encode_to_vec().into())
        } else {
            ModelSource::File(file.path.clone())
        };
        let shared = if opts.ort.share_weights {
            Some(SharedWeights {
                initializers: shared_initializers(&file.proto, &file.path)?,
                prepacked: PrepackedWeights::new(),
            })
        } else {
            None
        };
        let mut engine = OrtEngine {
            info: Arc::new(ModelInfo {
                path: file.path.clone(),
                inputs: vec![],
                outputs: vec![],
                metadata: file.metadata.clone(),
            }),
            runtime,
            source,
            opts: opts.clone(),
            shared,
            spare: Mutex::new(None),
        };
        let session = engine.new_ort_session()?;

        let mut inputs: Vec<TensorInfo> = session.inputs().iter().map(outlet_info).collect();
        for (info, shape) in inputs.iter_mut().zip(&shapes) {
            info.shape = shape.clone();
        }
        let outputs: Vec<TensorInfo> = session.outputs().iter().map(outlet_info).collect();
        if inputs.len() != file.inputs.len() {
            return Err(InferError::UnsupportedModel {
                path: file.path.clone(),
                reason: format!("ONNX Runtime sees {} input(s), the file declares {}", inputs.len(), file.inputs.len()),
            });
        }
        engine.info = Arc::new(ModelInfo { path: file.path.clone(), inputs, outputs, metadata: file.metadata.clone() });
        engine.spare = Mutex::new(Some(session));
        Ok(engine)
    }

    fn error(&self, action: &'static str, e: impl std::fmt::Display) -> InferError {
        InferError::Engine { engine: EngineKind::Ort, action, path: self.info.path.clone(), message: e.to_string() }
    }

    /// Builds one ORT session with this engine's options.
    fn new_ort_session(&self) -> Result<ort::session::Session, InferError> {
        let cfg = |e: ort::Error<SessionBuilder>| self.error("configure a session for", e);
        let o = &self.opts;
        let mut builder = ort::session::Session::builder(&self.runtime.env)
            .map_err(|e| self.error("configure a session for", e))?
            .with_optimization_level(match o.ort.graph_optimization {
                GraphOptimization::Disable => GraphOptimizationLevel::Disable,
                GraphOptimization::Basic => GraphOptimizationLevel::Level1,
                GraphOptimization::Extended => GraphOptimizationLevel::Level2,
                GraphOptimization::All => GraphOptimizationLevel::All,
            })
            .map_err(cfg)?
            .with_intra_threads(o.intra_threads)
            .map_err(cfg)?
            .with_inter_threads(1)
            .map_err(cfg)?
            .with_parallel_execution(false)
            .map_err(cfg)?
            // We pin our threads ourselves: ORT's threads must sleep, not spin, when idle.
            .with_intra_op_spinning(false)
            .map_err(cfg)?
            .with_inter_op_spinning(false)
            .map_err(cfg)?;
        // The GPU provider (if any) first, then the CPU one, which only sets the arena flag.
        let cpu = ort::ep::CPU::default().with_arena_allocator(o.ort.cpu_arena).build();
        let providers: Vec<_> = provider_dispatch(&o.ort.execution_provider).into_iter().chain([cpu]).collect();
        builder =
            builder.with_execution_providers(providers).map_err(|e| InferError::ExecutionProviderUnavailable {
                provider: o.ort.execution_provider.ort_name().into(),
                library: self.runtime.path.clone(),
                reason: e.to_string(),
            })?;
        if let Some(shared) = &self.shared {
            builder = builder.with_prepacked_weights(&shared.prepacked).map_err(cfg)?;
            for (name, value) in &shared.initializers {
                builder = builder.with_initializer(name, Arc::clone(value)).map_err(cfg)?;
            }
        }
        match &self.source {
            ModelSource::File(path) => builder.commit_from_file(path),
            ModelSource::Bytes(bytes) => builder.commit_from_memory(bytes),
        }
        .map_err(|e| self.error("load", e))
    }
}

/// Refuses an execution provider that the loaded ONNX Runtime was built without.
fn check_provider(ep: &ExecutionProvider, runtime: &OrtRuntime) -> Result<(), InferError> {
    let available = match ep {
        ExecutionProvider::Cpu => return Ok(()),
        ExecutionProvider::Cuda { .. } => ort::ep::CUDA::is_available(),
        ExecutionProvider::TensorRt { .. } => ort::ep::TensorRT::is_available(),
    };
    let unavailable = |reason: String| InferError::ExecutionProviderUnavailable {
        provider: ep.ort_name().into(),
        library: runtime.path.clone(),
        reason,
    };
    match available {
        Ok(true) => Ok(()),
        Ok(false) => Err(unavailable(
            "this ONNX Runtime build does not include it (the `onnxruntime` PyPI build is CPU-only; \
             use an `onnxruntime-gpu` build)"
                .into(),
        )),
        Err(e) => Err(unavailable(e.to_string())),
    }
}

/// The ort registration of a requested GPU provider (`None` for the CPU).
fn provider_dispatch(ep: &ExecutionProvider) -> Option<ort::ep::ExecutionProviderDispatch> {
    match ep {
        ExecutionProvider::Cpu => None,
        ExecutionProvider::Cuda { device_id } => {
            Some(ort::ep::CUDA::default().with_device_id(*device_id).build().error_on_failure())
        }
        ExecutionProvider::TensorRt { device_id, fp16, engine_cache_dir } => {
            let mut trt = ort::ep::TensorRT::default().with_device_id(*device_id).with_fp16(*fp16);
            if let Some(dir) = engine_cache_dir {
                trt = trt.with_engine_cache(true).with_engine_cache_path(dir.display());
            }
            Some(trt.build().error_on_failure())
        }
    }
}

/// Decodes the model's `f32` initializers (stored in the file, not external) into ORT values.
fn shared_initializers(proto: &pb::ModelProto, path: &Path) -> Result<Vec<(String, Arc<DynValue>)>, InferError> {
    let Some(graph) = proto.graph.as_ref() else {
        return Ok(vec![]);
    };
    let mut out = Vec::with_capacity(graph.initializer.len());
    for t in &graph.initializer {
        let external = t.data_location == Some(pb::tensor_proto::DataLocation::External as i32);
        if dtype_of(t.data_type) != DType::F32 || external || t.name.is_empty() {
            continue;
        }
        let count = t.dims.iter().try_fold(1usize, |acc, d| usize::try_from(*d).ok().and_then(|d| acc.checked_mul(d)));
        let data: Vec<f32> = if !t.raw_data.is_empty() {
            t.raw_data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
        } else {
            t.float_data.clone()
        };
        if count != Some(data.len()) {
            return Err(InferError::InvalidModel {
                path: path.to_path_buf(),
                reason: format!("initializer `{}` has dims {:?} but {} values", t.name, t.dims, data.len()),
            });
        }
        let value = ort::value::Tensor::<f32>::from_array((t.dims.clone(), data)).map_err(|e| InferError::Engine {
            engine: EngineKind::Ort,
            action: "share the weights of",
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        out.push((t.name.clone(), Arc::new(value.into_dyn())));
    }
    Ok(out)
}

/// Our view of an ORT input/output declaration.
fn outlet_info(outlet: &ort::value::Outlet) -> TensorInfo {
    let (shape, dtype) = match outlet.dtype() {
        ValueType::Tensor { ty, shape, .. } => {
            let shape = shape.iter().map(|d| usize::try_from(*d).ok()).collect();
            let dtype = match ty {
                TensorElementType::Float32 => DType::F32,
                TensorElementType::Float16 => DType::F16,
                TensorElementType::Int64 => DType::I64,
                TensorElementType::Uint8 => DType::U8,
                _ => DType::Other,
            };
            (shape, dtype)
        }
        _ => (vec![], DType::Other),
    };
    TensorInfo { name: outlet.name().to_string(), shape, dtype }
}

impl Engine for OrtEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Ort
    }

    fn model(&self) -> &ModelInfo {
        &self.info
    }

    fn session(&self) -> Result<Box<dyn Session>, InferError> {
        Ok(Box::new(self.new_session()?))
    }
}

impl OrtEngine {
    fn new_session(&self) -> Result<OrtSession, InferError> {
        let spare = self.spare.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        let session = match spare {
            Some(s) => s,
            None => self.new_ort_session()?,
        };
        let outputs =
            self.info.outputs.iter().map(|o| Tensor { name: o.name.clone(), shape: vec![], data: vec![] }).collect();
        Ok(OrtSession { info: Arc::clone(&self.info), session, outputs, prealloc: None, prealloc_disabled: false })
    }
}

/// Output tensors that ORT writes into directly, valid while the input shapes stay the same.
struct Prealloc {
    input_shapes: Vec<Vec<usize>>,
    options: RunOptions<HasSelectedOutputs>,
}

/// One replica: its own ORT session and output buffers.
struct OrtSession {
    info: Arc<ModelInfo>,
    session: ort::session::Session,
    outputs: Vec<Tensor>,
    prealloc: Option<Prealloc>,
    /// Set when a pre-allocated run failed: this session's outputs are not pre-allocated again.
    prealloc_disabled: bool,
}

impl OrtSession {
    fn error(&self, action: &'static str, e: impl std::fmt::Display) -> InferError {
        InferError::Engine { engine: EngineKind::Ort, action, path: self.info.path.clone(), message: e.to_string() }
    }

    /// After a run without pre-allocated outputs: allocates ORT tensors of the shapes just seen,
    /// for the next runs with the same input shapes.
    fn preallocate(&mut self, inputs: &[TensorRef<'_>]) -> Result<(), InferError> {
        let allocator = Allocator::default();
        let mut selector = OutputSelector::default();
        for out in &self.outputs {
            let value = ort::value::Tensor::<f32>::new(&allocator, out.shape.as_slice())
                .map_err(|e| self.error("pre-allocate the outputs of", e))?;
            selector = selector.preallocate(out.name.as_str(), value);
        }
        let options =
            RunOptions::new().map_err(|e| self.error("pre-allocate the outputs of", e))?.with_outputs(selector);
        let input_shapes = inputs.iter().map(|i| i.shape.to_vec()).collect();
        self.prealloc = Some(Prealloc { input_shapes, options });
        Ok(())
    }
}

/// Copies ORT's outputs into ours. Returns whether they were all `f32` (only then can they be
/// pre-allocated).
fn copy_outputs(values: &ort::session::SessionOutputs<'_>, outputs: &mut [Tensor]) -> Result<bool, String> {
    let mut all_f32 = true;
    for (value, out) in values.values().zip(outputs.iter_mut()) {
        out.shape.clear();
        out.data.clear();
        if let Ok((shape, data)) = value.try_extract_tensor::<f32>() {
            out.shape.extend(shape.iter().map(|d| usize::try_from(*d).unwrap_or(0)));
            out.data.extend_from_slice(data);
        } else if let Ok((shape, data)) = value.try_extract_tensor::<i64>() {
            all_f32 = false;
            out.shape.extend(shape.iter().map(|d| usize::try_from(*d).unwrap_or(0)));
            out.data.extend(data.iter().map(|v| *v as f32));
        } else {
            return Err(format!(
                "output `{}` is {:?}; only f32 and i64 outputs are supported",
                out.name,
                value.dtype()
            ));
        }
    }
    Ok(all_f32)
}

/// One run with outputs allocated by ORT.
fn run_plain(
    session: &mut ort::session::Session,
    values: &[SessionInputValue<'_>],
    outputs: &mut [Tensor],
) -> Result<bool, String> {
    let result = session.run(values);
    result.map_err(|e| e.to_string()).and_then(|v| copy_outputs(&v, outputs))
}

impl Session for OrtSession {
    fn inputs(&self) -> &[TensorInfo] {
        &self.info.inputs
    }

    fn outputs(&self) -> &[TensorInfo] {
        &self.info.outputs
    }

    fn run(&mut self, inputs: &[TensorRef<'_>]) -> Result<&[Tensor], InferError> {
        check_run_inputs(&self.info.path, &self.info.inputs, inputs)?;
        // The caller's slices are wrapped, not copied.
        let mut values: Vec<SessionInputValue<'_>> = Vec::with_capacity(inputs.len());
        for input in inputs {
            let value = ort::value::TensorRef::from_array_view((input.shape, input.data))
                .map_err(|e| self.error("wrap the inputs of", e))?;
            values.push(value.into());
        }
        let OrtSession { session, outputs, prealloc, info, prealloc_disabled } = self;
        let fits = prealloc.as_ref().filter(|p| {
            p.input_shapes.len() == inputs.len()
                && p.input_shapes.iter().zip(inputs).all(|(s, i)| s.as_slice() == i.shape)
        });
        let used_prealloc = fits.is_some();
        let copied = match fits {
            Some(p) => {
                let result = session.run_with_options(values.as_slice(), &p.options);
                match result.map_err(|e| e.to_string()).and_then(|v| copy_outputs(&v, outputs)) {
                    Ok(all_f32) => Ok(all_f32),
                    // Output shapes that depend on the data do not fit pre-allocated tensors:
                    // run again without, and stop pre-allocating in this session.
                    Err(_) => {
                        *prealloc = None;
                        *prealloc_disabled = true;
                        run_plain(session, &values, outputs)
                    }
                }
            }
            None => run_plain(session, &values, outputs),
        };
        let all_f32 = copied.map_err(|message| InferError::Engine {
            engine: EngineKind::Ort,
            action: "run",
            path: info.path.clone(),
            message,
        })?;
        // After a plain run the output shapes for these input shapes are known.
        if !used_prealloc && all_f32 && !self.prealloc_disabled {
            self.preallocate(inputs)?;
        }
        Ok(&self.outputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// From the second run on, ORT writes into the session's pre-allocated output tensors.
    #[test]
    fn outputs_are_preallocated_after_the_first_run() {
        let dir = std::env::temp_dir().join(format!("framepipe-infer-unit-ort-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("affine.onnx");
        std::fs::write(&path, crate::testing::affine_model(3, -1.0, 1.0)).unwrap();
        let file = ModelFile::read(&path).unwrap();
        let opts = EngineOptions::default();
        let rt =
            runtime(&opts.ort).expect("ONNX Runtime not found: run scripts/fetch-assets.sh (or set ORT_DYLIB_PATH)");
        let engine = OrtEngine::load(&file, &opts, rt).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let mut session = engine.new_session().unwrap();
        assert!(session.prealloc.is_none());
        for round in 0..3 {
            let x = [round as f32, 2.0, 3.0];
            let out = session.run(&[TensorRef::new(&[1, 3], &x)]).unwrap();
            assert_eq!(out[0].data, x.map(|v| 1.0 - v));
            assert!(session.prealloc.is_some());
        }
        // Pre-allocated outputs that do not fit (as with data-dependent output shapes): the run
        // falls back to ORT-allocated outputs and pre-allocation stops for this session.
        let x = [1.0, 2.0, 3.0];
        session.outputs[0].shape = vec![1, 5];
        session.preallocate(&[TensorRef::new(&[1, 3], &x)]).unwrap();
        let out = session.run(&[TensorRef::new(&[1, 3], &x)]).unwrap();
        assert_eq!(out[0].data, vec![0.0, -1.0, -2.0]);
        assert_eq!(out[0].shape, vec![1, 3]);
        assert!(session.prealloc.is_none() && session.prealloc_disabled);
        session.run(&[TensorRef::new(&[1, 3], &x)]).unwrap();
        assert!(session.prealloc.is_none());
        // A second session is built from the file (gone now): a clear error, no panic.
        let err = engine.new_session().err().unwrap();
        assert!(matches!(err, InferError::Engine { .. }), "{err:?}");
    }
}
