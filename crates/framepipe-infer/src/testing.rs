//! Tiny ONNX models built in code, for examples, doctests and tests that must not depend on
//! downloaded files.

use prost::Message;
use tract_onnx::pb;

/// The bytes of an ONNX model computing `y = a * x + b` over an `f32` input `x` of shape
/// `[1, n]`, with output `y` of shape `[1, n]` and metadata `names` = `{0: 'thing'}`.
///
/// ```
/// let bytes = framepipe_infer::testing::affine_model(4, 2.0, 1.0);
/// assert!(!bytes.is_empty());
/// ```
pub fn affine_model(n: usize, a: f32, b: f32) -> Vec<u8> {
    let dims = [1, n as i64];
    let scalar = |name: &str, v: f32| pb::TensorProto {
        name: name.into(),
        data_type: pb::tensor_proto::DataType::Float as i32,
        dims: vec![],
        raw_data: v.to_le_bytes().to_vec(),
        ..Default::default()
    };
    let node = |op: &str, inputs: [&str; 2], output: &str| pb::NodeProto {
        name: output.into(),
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    };
    let graph = pb::GraphProto {
        name: "affine".into(),
        node: vec![node("Mul", ["x", "a"], "ax"), node("Add", ["ax", "b"], "y")],
        initializer: vec![scalar("a", a), scalar("b", b)],
        input: vec![f32_value_info("x", &dims)],
        output: vec![f32_value_info("y", &dims)],
        ..Default::default()
    };
    let model = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 13 }],
        producer_name: "framepipe-infer".into(),
        graph: Some(graph),
        metadata_props: vec![pb::StringStringEntryProto { key: "names".into(), value: "{0: 'thing'}".into() }],
        ..Default::default()
    };
    model.encode_to_vec()
}

pub(crate) fn f32_value_info(name: &str, dims: &[i64]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension, Dimension};
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            denotation: String::new(),
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension { denotation: String::new(), value: Some(dimension::Value::DimValue(*d)) })
                        .collect(),
                }),
            })),
        }),
        doc_string: String::new(),
    }
}
