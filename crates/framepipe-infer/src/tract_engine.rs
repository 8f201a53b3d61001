//! The tract engine: one optimized plan per model, shared by sessions that each own a
//! `SimpleState`.

use std::sync::Arc;

use tract_linalg::multithread::{multithread_tract_scope, Executor};
use tract_onnx::prelude::{
    Datum, DatumExt, InferenceFact, InferenceModelExt, IntoRunnable, TValue, TypedFact, TypedSimplePlan,
    TypedSimpleState,
};
use tract_onnx::tract_hir::internal::DimLike;

use crate::model::ModelFile;
use crate::{
    check_run_inputs, fill_tensor, DType, Engine, EngineKind, EngineOptions, InferError, ModelInfo, Session, Tensor,
    TensorInfo, TensorRef,
};

/// tract's tensor type (ours is [`crate::Tensor`]).
type TractTensor = tract_onnx::prelude::Tensor;

/// A model optimized by tract, shared by its sessions. The tract-cuda engine is this too, with a
/// plan built for the GPU (`EngineKind::TractCuda`, see `tract_cuda_engine`).
pub(crate) struct TractEngine {
    kind: EngineKind,
    info: Arc<ModelInfo>,
    plan: Arc<TypedSimplePlan>,
    intra_threads: usize,
}

impl TractEngine {
    /// Parses, types and optimizes the model (see [`parse`]).
    pub fn load(file: &ModelFile, opts: &EngineOptions) -> Result<TractEngine, InferError> {
        let fail = engine_error(EngineKind::Tract, file);
        let model = parse(file, opts, EngineKind::Tract)?;
        let typed = model.into_optimized().map_err(|e| fail("optimize", e))?;
        let plan = typed.into_runnable().map_err(|e| fail("plan", e))?;
        TractEngine::from_plan(EngineKind::Tract, file, plan, opts.intra_threads)
    }

    /// An engine of `kind` around a plan built from `file`.
    pub fn from_plan(
        kind: EngineKind,
        file: &ModelFile,
        plan: Arc<TypedSimplePlan>,
        intra_threads: usize,
    ) -> Result<TractEngine, InferError> {
        let fail = engine_error(kind, file);
        let m = plan.model();
        let mut inputs = Vec::with_capacity(file.inputs.len());
        for (ix, declared) in file.inputs.iter().enumerate() {
            let fact = m.input_fact(ix).map_err(|e| fail("load", e))?;
            inputs.push(info_from_fact(&declared.name, fact));
        }
        let mut outputs = Vec::with_capacity(m.outputs.len());
        for ix in 0..m.outputs.len() {
            let fact = m.output_fact(ix).map_err(|e| fail("load", e))?;
            let name = file.outputs.get(ix).map(|o| o.name.clone()).unwrap_or_else(|| format!("output{ix}"));
            outputs.push(info_from_fact(&name, fact));
        }
        let info = ModelInfo { path: file.path.clone(), inputs, outputs, metadata: file.metadata.clone() };
        Ok(TractEngine { kind, info: Arc::new(info), plan, intra_threads })
    }
}

/// Maps a tract error to [`InferError::Engine`] for `kind` and `file`.
pub(crate) fn engine_error(
    kind: EngineKind,
    file: &ModelFile,
) -> impl Fn(&'static str, tract_onnx::prelude::TractError) -> InferError + '_ {
    move |action, e| InferError::Engine { engine: kind, action, path: file.path.clone(), message: format!("{e:#}") }
}

/// Parses the model and sets its concrete input shapes, ready for typing and optimization.
///
/// Declared shapes of intermediate values (`value_info`) and of outputs are ignored: tract
/// infers them from the input shapes, and old exports (CenterFace) declare wrong ones.
pub(crate) fn parse(
    file: &ModelFile,
    opts: &EngineOptions,
    kind: EngineKind,
) -> Result<tract_onnx::prelude::InferenceModel, InferError> {
    let shapes = file.input_shapes(opts.input_shape.as_deref())?;
    let fail = engine_error(kind, file);
    let onnx = tract_onnx::onnx().with_ignore_value_info(true).with_ignore_output_shapes(true);
    let model_dir = file.path.parent().and_then(|d| d.to_str());
    let parsed = onnx.parse(&file.proto, model_dir).map_err(|e| fail("load", e))?;
    if !parsed.unresolved_inputs.is_empty() {
        return Err(InferError::InvalidModel {
            path: file.path.clone(),
            reason: format!("nodes read values nothing defines: {:?}", parsed.unresolved_inputs),
        });
    }
    let mut model = parsed.model;
    for (ix, shape) in shapes.iter().enumerate() {
        // Concrete shapes let tract pick its kernels once; dynamic axes stay symbolic.
        if let Some(concrete) = shape.iter().copied().collect::<Option<Vec<usize>>>() {
            if !concrete.is_empty() {
                let fact: InferenceFact = f32::fact(concrete).into();
                model.set_input_fact(ix, fact).map_err(|e| fail("load", e))?;
            }
        }
    }
    Ok(model)
}

/// What tract knows of an input or output after optimization.
pub(crate) fn info_from_fact(name: &str, fact: &TypedFact) -> TensorInfo {
    let shape = fact.shape.iter().map(|d| d.to_usize().ok()).collect();
    let dt = fact.datum_type;
    let dtype = if dt == f32::datum_type() {
        DType::F32
    } else if dt == tract_onnx::prelude::f16::datum_type() {
        DType::F16
    } else if dt == i64::datum_type() {
        DType::I64
    } else if dt == u8::datum_type() {
        DType::U8
    } else {
        DType::Other
    };
    TensorInfo { name: name.to_string(), shape, dtype }
}

impl Engine for TractEngine {
    fn kind(&self) -> EngineKind {
        self.kind
    }

    fn model(&self) -> &ModelInfo {
        &self.info
    }

    fn session(&self) -> Result<Box<dyn Session>, InferError> {
        Ok(Box::new(self.new_session()?))
    }
}

impl TractEngine {
    fn new_session(&self) -> Result<TractSession, InferError> {
        let state = self.plan.spawn().map_err(|e| InferError::Engine {
            engine: self.kind,
            action: "start a session for",
            path: self.info.path.clone(),
            message: format!("{e:#}"),
        })?;
        let executor = if self.intra_threads > 1 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(self.intra_threads)
                .thread_name(|i| format!("framepipe-tract-{i}"))
                .build()
                .map_err(|e| {
                    InferError::InvalidOptions(format!("cannot start {} tract threads: {e}", self.intra_threads))
                })?;
            Some(Executor::MultiThread(Arc::new(pool)))
        } else {
            None
        };
        // Input tensors are allocated now when their shape is known, else at the first run.
        let input_slots = self
            .info
            .inputs
            .iter()
            .map(|i| {
                let shape: Option<Vec<usize>> = i.shape.iter().copied().collect();
                let shape = shape.unwrap_or_default();
                Arc::new(TractTensor::zero::<f32>(&shape).unwrap_or_else(|_| TractTensor::default()))
            })
            .collect();
        let outputs = self
            .info
            .outputs
            .iter()
            .map(|o| {
                let known: Option<Vec<usize>> = o.shape.iter().copied().collect();
                let len = known.as_ref().map_or(0, |s| s.iter().product());
                Tensor { name: o.name.clone(), shape: known.unwrap_or_default(), data: Vec::with_capacity(len) }
            })
            .collect();
        Ok(TractSession { kind: self.kind, info: Arc::clone(&self.info), state, input_slots, outputs, executor })
    }
}

/// One replica: its own tract state, input tensors and output buffers.
struct TractSession {
    kind: EngineKind,
    info: Arc<ModelInfo>,
    state: TypedSimpleState,
    /// The tensors handed to tract as inputs. tract takes inputs as `Arc`s; we keep one
    /// reference, and once the run is over and tract has dropped its own (`reset_turn`), ours is
    /// the only one left, so the tensor can be refilled in place for the next run.
    input_slots: Vec<Arc<TractTensor>>,
    outputs: Vec<Tensor>,
    executor: Option<Executor>,
}

impl TractSession {
    fn engine_error(&self, action: &'static str, e: tract_onnx::prelude::TractError) -> InferError {
        InferError::Engine { engine: self.kind, action, path: self.info.path.clone(), message: format!("{e:#}") }
    }

    /// Sets the inputs, runs the plan and copies the outputs out. The caller resets the turn.
    fn run_turn(&mut self, inputs: &[TensorRef<'_>]) -> Result<(), InferError> {
        for (ix, input) in inputs.iter().enumerate() {
            let slot = &mut self.input_slots[ix];
            match Arc::get_mut(slot) {
                Some(t) if t.shape() == input.shape => {
                    let mut view = t.try_as_plain_ram_mut().map_err(|e| InferError::Engine {
                        engine: self.kind,
                        action: "prepare the input of",
                        path: self.info.path.clone(),
                        message: format!("{e:#}"),
                    })?;
                    let dst = view.as_slice_mut::<f32>().map_err(|e| InferError::Engine {
                        engine: self.kind,
                        action: "prepare the input of",
                        path: self.info.path.clone(),
                        message: format!("{e:#}"),
                    })?;
                    dst.copy_from_slice(input.data);
                }
                // First run with a new shape (or tract kept a reference): one allocation.
                _ => {
                    let t = TractTensor::from_shape(input.shape, input.data)
                        .map_err(|e| self.engine_error("prepare the input of", e))?;
                    self.input_slots[ix] = Arc::new(t);
                }
            }
            let value = TValue::from_const(Arc::clone(&self.input_slots[ix]));
            self.state.set_input(ix, value).map_err(|e| self.engine_error("run", e))?;
        }
        let result = match &self.executor {
            Some(executor) => multithread_tract_scope(executor.clone(), || self.state.exec()),
            None => self.state.exec(),
        };
        result.map_err(|e| self.engine_error("run", e))?;
        for ix in 0..self.outputs.len() {
            let value = self.state.output(ix).map_err(|e| self.engine_error("run", e))?;
            let copied = if value.datum_type() == f32::datum_type() {
                value
                    .try_as_plain_ram()
                    .and_then(|v| v.as_slice::<f32>())
                    .map(|data| fill_tensor(&mut self.outputs[ix], value.shape(), data))
            } else {
                // Rare (models here output f32): converted through a temporary.
                value.cast_to::<f32>().and_then(|c| {
                    c.try_as_plain_ram()
                        .and_then(|v| v.as_slice::<f32>())
                        .map(|data| fill_tensor(&mut self.outputs[ix], c.shape(), data))
                })
            };
            if let Err(e) = copied {
                return Err(InferError::Engine {
                    engine: self.kind,
                    action: "read the outputs of",
                    path: self.info.path.clone(),
                    message: format!("{e:#}"),
                });
            }
        }
        Ok(())
    }
}

impl Session for TractSession {
    fn inputs(&self) -> &[TensorInfo] {
        &self.info.inputs
    }

    fn outputs(&self) -> &[TensorInfo] {
        &self.info.outputs
    }

    fn run(&mut self, inputs: &[TensorRef<'_>]) -> Result<&[Tensor], InferError> {
        check_run_inputs(&self.info.path, &self.info.inputs, inputs)?;
        let result = self.run_turn(inputs);
        // Drops tract's references to the inputs, intermediates and outputs, whatever happened.
        let reset = self.state.reset_turn().map_err(|e| self.engine_error("run", e));
        result?;
        reset?;
        Ok(&self.outputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn affine_engine(tag: &str, threads: usize) -> TractEngine {
        let dir = std::env::temp_dir().join(format!("framepipe-infer-unit-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("affine.onnx");
        std::fs::write(&path, crate::testing::affine_model(4, 2.0, 0.5)).unwrap();
        let file = ModelFile::read(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let opts = EngineOptions { intra_threads: threads, ..EngineOptions::default() };
        TractEngine::load(&file, &opts).unwrap()
    }

    /// The input tensor handed to tract comes back to the session after each run and is
    /// refilled in place: no allocation per run.
    #[test]
    fn the_input_tensor_is_reused_across_runs() {
        for threads in [1, 3] {
            let engine = affine_engine("reuse", threads);
            let mut session = engine.new_session().unwrap();
            assert_eq!(session.executor.is_some(), threads > 1);
            let before = Arc::as_ptr(&session.input_slots[0]);
            let mut output_ptr = None;
            for round in 0..4 {
                let x = [round as f32, 1.0, 2.0, 3.0];
                let out = session.run(&[TensorRef::new(&[1, 4], &x)]).unwrap();
                assert_eq!(out[0].data, x.map(|v| 2.0 * v + 0.5));
                let ptr = out[0].data.as_ptr();
                assert_eq!(*output_ptr.get_or_insert(ptr), ptr, "output buffer reused");
                assert_eq!(Arc::strong_count(&session.input_slots[0]), 1, "tract let go");
                assert_eq!(Arc::as_ptr(&session.input_slots[0]), before, "same input tensor");
            }
        }
    }

    /// A failed run leaves the session usable.
    #[test]
    fn a_session_recovers_after_an_error() {
        let engine = affine_engine("recover", 1);
        let mut session = engine.new_session().unwrap();
        assert!(session.run(&[TensorRef::new(&[1, 3], &[0.0; 3])]).is_err());
        let out = session.run(&[TensorRef::new(&[1, 4], &[1.0; 4])]).unwrap();
        assert_eq!(out[0].data, vec![2.5; 4]);
    }
}
