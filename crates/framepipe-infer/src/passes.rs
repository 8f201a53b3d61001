//! Model passes of our own, applied to tract's typed model before it is translated for an engine.
//!
//! - [`rewrite_max_pools`]: a stride-1 `MaxPool` becomes `−∞` padding (a `Concat` with constant
//!   blocks), `k` shifted `Slice`s and a running `Max`, one spatial axis after the other. The
//!   result is the same values bit for bit (a max is exact, and the padding is what ONNX MaxPool
//!   pads with). Why: tract-cuda 0.23.9 has no MaxPool kernel, so YOLO's SPPF block (three
//!   5×5 stride-1 MaxPools) runs on the CPU with a device → host → device round trip in the middle
//!   of the network, which costs about 1 ms and makes the run impossible to capture in a CUDA graph.
//!   Slices, Concat and Max all have GPU kernels. tract's `Pad` op is avoided on purpose: its GPU
//!   evaluation uploads the pad value at every run.
//!
//! The separable form is exact: `max` over a `k_h × k_w` window is the `max` over `k_w` columns
//! of the `max` over `k_h` rows.

use tract_onnx::prelude::{tvec, Datum, OutletId, TVec, Tensor, TractResult, TypedModel, TypedModelPatch};
use tract_onnx::tract_core::model::SpecialOps;
use tract_onnx::tract_core::ops::array::{Slice, TypedConcat};
use tract_onnx::tract_core::ops::cnn::MaxPool;

/// What [`rewrite_max_pools`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaxPoolRewrite {
    /// MaxPools replaced.
    pub rewritten: usize,
    /// MaxPools left as they were, with the reason (stride ≠ 1, dilation, index output, a
    /// non-f32 or non-concrete input).
    pub kept: Vec<(String, &'static str)>,
}

/// Rewrites every stride-1, f32 `MaxPool` of `model` as padding, slices and `Max` (see the
/// module docs). Others are kept and listed in the result.
pub fn rewrite_max_pools(model: &mut TypedModel) -> TractResult<MaxPoolRewrite> {
    let mut report = MaxPoolRewrite::default();
    let ids: Vec<usize> = model.nodes().iter().filter(|n| n.op_is::<MaxPool>()).map(|n| n.id).collect();
    for id in ids {
        let node = model.node(id).clone();
        let Some(op) = node.op_as::<MaxPool>() else { continue };
        if let Some(why) = refusal(model, &node.inputs[0], op)? {
            report.kept.push((node.name.clone(), why));
            continue;
        }
        let spec = &op.pool_spec;
        let fact = model.outlet_fact(node.inputs[0])?.clone();
        let shape: Vec<usize> = fact.shape.as_concrete().map(|s| s.to_vec()).unwrap_or_default();
        let data_shape = spec.data_format.shape(shape.clone())?;
        let axes: Vec<usize> = data_shape.hw_axes().collect();
        let padding = spec.computed_padding(data_shape.hw_dims());
        let mut patch = TypedModelPatch::default();
        let mut wire = patch.tap_model(model, node.inputs[0])?;
        let mut current = shape;
        for (g, &axis) in axes.iter().enumerate() {
            let (k, pad) = (spec.kernel_shape[g], &padding[g]);
            let mut parts: TVec<OutletId> = tvec![];
            for (side, len) in [("before", pad.pad_before), ("after", pad.pad_after)] {
                if len == 0 {
                    continue;
                }
                let mut block = current.clone();
                block[axis] = len;
                let values = vec![f32::NEG_INFINITY; block.iter().product()];
                let konst = patch
                    .add_const(format!("{}.neg-inf-{g}-{side}", node.name), Tensor::from_shape(&block, &values)?)?;
                if side == "before" {
                    parts.push(konst);
                    parts.push(wire);
                } else {
                    if parts.is_empty() {
                        parts.push(wire);
                    }
                    parts.push(konst);
                }
            }
            if !parts.is_empty() {
                wire = patch.wire_node(format!("{}.pad-{g}", node.name), TypedConcat::new(axis), &parts)?[0];
            }
            let out = pad.convoluted;
            let mut acc: Option<OutletId> = None;
            for i in 0..k {
                let window =
                    patch.wire_node(format!("{}.window-{g}-{i}", node.name), Slice::new(axis, i, i + out), &[wire])?[0];
                acc = Some(match acc {
                    None => window,
                    Some(a) => patch.wire_node(
                        format!("{}.max-{g}-{i}", node.name),
                        tract_onnx::tract_core::ops::math::max(),
                        &[a, window],
                    )?[0],
                });
            }
            wire = acc.unwrap_or(wire);
            current[axis] = out;
        }
        patch.shunt_outside(model, OutletId::new(id, 0), wire)?;
        patch.apply(model)?;
        report.rewritten += 1;
    }
    if report.rewritten > 0 {
        *model = std::mem::take(model).into_compact()?;
    }
    Ok(report)
}

/// Why a MaxPool cannot be rewritten, if it cannot.
fn refusal(model: &TypedModel, input: &OutletId, op: &MaxPool) -> TractResult<Option<&'static str>> {
    let spec = &op.pool_spec;
    let fact = model.outlet_fact(*input)?;
    Ok(if op.with_index_outputs.is_some() {
        Some("it also outputs indices")
    } else if spec.strides().iter().any(|&s| s != 1) {
        Some("stride is not 1")
    } else if spec.dilations().iter().any(|&d| d != 1) {
        Some("dilated")
    } else if fact.datum_type != f32::datum_type() {
        Some("input is not f32")
    } else if fact.shape.as_concrete().is_none() {
        Some("input shape is not concrete")
    } else {
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use tract_onnx::pb;
    use tract_onnx::prelude::{DatumExt, Framework, InferenceModelExt, IntoRunnable, TValue};

    fn attr_ints(name: &str, v: &[i64]) -> pb::AttributeProto {
        pb::AttributeProto {
            name: name.into(),
            r#type: pb::attribute_proto::AttributeType::Ints as i32,
            ints: v.to_vec(),
            ..Default::default()
        }
    }

    /// `x [1,C,H,W]` → SPPF-like chain of MaxPools (`kernel`, `strides`, `pads` each), every
    /// pool's output concatenated on channels, as the model output.
    fn pools_model(c: i64, h: i64, w: i64, pools: &[([i64; 2], [i64; 2], [i64; 4])]) -> TypedModel {
        let mut nodes = Vec::new();
        let mut prev = "x".to_string();
        let mut outs = vec!["x".to_string()];
        for (i, (k, s, p)) in pools.iter().enumerate() {
            let out = format!("pool{i}");
            nodes.push(pb::NodeProto {
                name: out.clone(),
                op_type: "MaxPool".into(),
                input: vec![prev.clone()],
                output: vec![out.clone()],
                attribute: vec![attr_ints("kernel_shape", k), attr_ints("strides", s), attr_ints("pads", p)],
                ..Default::default()
            });
            // Only same-size pools chain and concatenate.
            if s == &[1, 1] && p[0] + p[2] == k[0] - 1 && p[1] + p[3] == k[1] - 1 {
                outs.push(out.clone());
                prev = out;
            }
        }
        nodes.push(pb::NodeProto {
            name: "y".into(),
            op_type: "Concat".into(),
            input: outs.clone(),
            output: vec!["y".into()],
            attribute: vec![pb::AttributeProto {
                name: "axis".into(),
                r#type: pb::attribute_proto::AttributeType::Int as i32,
                i: 1,
                ..Default::default()
            }],
            ..Default::default()
        });
        let mut outputs = vec!["y".to_string()];
        // Pools that do not keep the size are extra outputs.
        for (i, (k, s, p)) in pools.iter().enumerate() {
            if !(s == &[1, 1] && p[0] + p[2] == k[0] - 1 && p[1] + p[3] == k[1] - 1) {
                outputs.push(format!("pool{i}"));
            }
        }
        let graph = pb::GraphProto {
            name: "pools".into(),
            node: nodes,
            input: vec![crate::testing::f32_value_info("x", &[1, c, h, w])],
            output: outputs.iter().map(|o| pb::ValueInfoProto { name: o.clone(), ..Default::default() }).collect(),
            ..Default::default()
        };
        let model = pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 13 }],
            graph: Some(graph),
            ..Default::default()
        };
        let bytes = model.encode_to_vec();
        tract_onnx::onnx()
            .model_for_read(&mut bytes.as_slice())
            .unwrap()
            .into_typed()
            .unwrap()
            .into_decluttered()
            .unwrap()
    }

    fn run(model: TypedModel, input: &Tensor) -> Vec<Tensor> {
        let plan = model.into_optimized().unwrap().into_runnable().unwrap();
        let out = plan.run(tvec![TValue::from(input.clone())]).unwrap();
        out.iter().map(|v| Tensor::clone(v)).collect()
    }

    /// Values with ties, negatives and a few large magnitudes: a max must pick exactly.
    fn input(c: usize, h: usize, w: usize) -> Tensor {
        let mut s = 0x2545_F491_4F6C_DD1Du64;
        let v: Vec<f32> = (0..c * h * w)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s % 2001) as f32 - 1000.0) / 37.0
            })
            .collect();
        Tensor::from_shape(&[1, c, h, w], &v).unwrap()
    }

    fn assert_bit_identical(a: &[Tensor], b: &[Tensor]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert_eq!(x.shape(), y.shape());
            let (x, y) = (x.try_as_plain_ram().unwrap(), y.try_as_plain_ram().unwrap());
            let (x, y) = (x.as_slice::<f32>().unwrap(), y.as_slice::<f32>().unwrap());
            let differ = x.iter().zip(y).filter(|(p, q)| p.to_bits() != q.to_bits()).count();
            assert_eq!(differ, 0, "{differ} values differ");
        }
    }

    /// YOLO's SPPF: three chained 5×5 stride-1 pad-2 MaxPools; the rewrite gives the same bits
    /// on the CPU runtime and leaves no MaxPool.
    #[test]
    fn the_sppf_rewrite_gives_identical_outputs() {
        let pools = [([5, 5], [1, 1], [2, 2, 2, 2]); 3];
        let stock = pools_model(4, 20, 20, &pools);
        let mut rewritten = stock.clone();
        let report = rewrite_max_pools(&mut rewritten).unwrap();
        assert_eq!(report.rewritten, 3);
        assert!(report.kept.is_empty());
        assert!(!rewritten.nodes().iter().any(|n| n.op_is::<MaxPool>()));
        let x = input(4, 20, 20);
        assert_bit_identical(&run(stock, &x), &run(rewritten, &x));
    }

    /// Asymmetric padding, non-square kernels and no padding at all are exact too; a stride-2
    /// pool is left alone, with its reason.
    #[test]
    fn other_stride_one_shapes_are_exact_and_strided_pools_are_kept() {
        let pools = [
            ([3, 3], [1, 1], [1, 1, 1, 1]),
            ([2, 3], [1, 1], [0, 1, 1, 1]),
            ([3, 1], [1, 1], [0, 0, 2, 0]),
            ([2, 2], [2, 2], [0, 0, 0, 0]),
            ([3, 3], [1, 1], [0, 0, 0, 0]),
        ];
        let stock = pools_model(3, 9, 7, &pools);
        let mut rewritten = stock.clone();
        let report = rewrite_max_pools(&mut rewritten).unwrap();
        assert_eq!(report.rewritten, 4, "{report:?}");
        assert_eq!(report.kept.len(), 1);
        assert_eq!(report.kept[0].1, "stride is not 1");
        let x = input(3, 9, 7);
        assert_bit_identical(&run(stock, &x), &run(rewritten, &x));
    }

    /// The person detector (YOLOv8s, when `scripts/fetch-assets.sh` has run): its SPPF is
    /// rewritten and the outputs stay bit-identical on tract's CPU runtime.
    #[test]
    fn the_person_detector_rewrite_is_exact() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/models/person-yolov8s.onnx");
        if !path.is_file() {
            eprintln!("skipped: {} is missing (run scripts/fetch-assets.sh)", path.display());
            return;
        }
        let stock = tract_onnx::onnx()
            .model_for_path(&path)
            .unwrap()
            .with_input_fact(0, f32::fact([1, 3, 640, 640]).into())
            .unwrap()
            .into_typed()
            .unwrap()
            .into_decluttered()
            .unwrap();
        let mut rewritten = stock.clone();
        let report = rewrite_max_pools(&mut rewritten).unwrap();
        assert_eq!(report.rewritten, 3, "{report:?}");
        let x = {
            let v: Vec<f32> = (0..3 * 640 * 640usize).map(|i| ((i * 7919) % 256) as f32 / 255.0).collect();
            Tensor::from_shape(&[1, 3, 640, 640], &v).unwrap()
        };
        assert_bit_identical(&run(stock, &x), &run(rewritten, &x));
    }
}
