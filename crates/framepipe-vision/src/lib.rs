//! Pure image and tensor math for framepipe: frames, letterbox
//! preprocessing, detection decoders, NMS, labels and drawing.
//!
//! This crate knows nothing of threads, engines or the runtime. Everything
//! works on caller-provided buffers; the hot-path types ([`Preprocessor`],
//! [`Postprocessor`], [`Nms`]) keep their scratch buffers between calls so
//! steady-state frames allocate nothing.
//!
//! # Pipeline
//!
//! frame → [`Preprocessor::preprocess`] (letterbox into an NCHW `f32`
//! tensor, returns [`LetterboxParams`]) → model (elsewhere) →
//! [`Postprocessor::process`] (decode → threshold → NMS → map back to the
//! frame and clip) → [`draw::draw_detections`].
//!
//! ```
//! use framepipe_vision::{
//!     draw, BBox, Decoder, Frame, Labels, PixelFormat, PostprocessConfig, Postprocessor,
//!     PreprocessConfig, Preprocessor, TensorView,
//! };
//!
//! // A 1280x720 BGR camera frame.
//! let mut frame = Frame::new(1280, 720, PixelFormat::Bgr8)?;
//!
//! // Letterbox into a 640x640 model input: scale 0.5, 140 px bars top and bottom.
//! let mut pre = Preprocessor::new(PreprocessConfig::new(640, 640))?;
//! let mut input = vec![0.0f32; pre.output_len()];
//! let lb = pre.preprocess(frame.as_ref(), &mut input)?;
//! assert_eq!((lb.new_w, lb.new_h, lb.pad_x, lb.pad_y), (640, 360, 0.0, 140.0));
//!
//! // A hand-made YOLOv8 output, 1 x (4 + 2 classes) x 3 anchors, channels first.
//! #[rustfmt::skip]
//! let output = [
//!     320.0, 322.0, 100.0, // cx
//!     320.0, 320.0, 400.0, // cy
//!     100.0, 100.0,  40.0, // w
//!      50.0,  50.0,  40.0, // h
//!       0.9,   0.8,   0.1, // class 0 scores
//!       0.1,  0.05,   0.6, // class 1 scores
//! ];
//! let shape = [1, 6, 3];
//! // Class names from the ONNX metadata `names` entry; they also tell the decoder nc = 2.
//! let labels = Labels::parse_names_dict("{0: 'Normal', 1: 'Fall'}")?;
//! let decoder = Decoder::from_output_shape(&shape, Some(labels.len()))?;
//! assert_eq!(decoder, Decoder::YoloV8 { num_classes: 2, transposed: false });
//! let mut post = Postprocessor::new(decoder, PostprocessConfig::default())?;
//! let mut dets = Vec::new();
//! post.process(&[TensorView::new(&shape, &output)?], &lb, &mut dets)?;
//!
//! // Anchor 1 overlaps anchor 0 (same class, IoU = 4900/5100 ≈ 0.96) and is suppressed.
//! assert_eq!(dets.len(), 2);
//! assert_eq!((dets[0].class_id, dets[0].score), (0, 0.9));
//! // cx 320 → 640, cy 320 → (320 - 140) / 0.5 = 360, w 100 → 200, h 50 → 100.
//! assert_eq!(dets[0].bbox, BBox::new(540.0, 310.0, 740.0, 410.0));
//! assert_eq!(dets[1].class_id, 1);
//!
//! // Draw them in place.
//! draw::draw_detections(&mut frame.as_mut(), &dets, Some(&labels), &draw::DrawStyle::default());
//! # Ok::<(), framepipe_vision::VisionError>(())
//! ```
//!
//! # Coordinates
//!
//! Boxes use continuous pixel coordinates: pixel `i` covers `[i, i + 1)`.
//! Decoders emit model-input coordinates; [`LetterboxParams`] maps between
//! model input and frame.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod decode;
pub mod draw;
pub mod error;
pub mod font;
pub mod frame;
pub mod geometry;
pub mod labels;
pub mod letterbox;
pub mod nms;
pub mod postprocess;
pub mod tensor;

pub use decode::{DecodeScratch, Decoder};
pub use draw::{Color, DrawStyle};
pub use error::VisionError;
pub use frame::{Frame, FrameMut, FrameRef, PixelFormat};
pub use geometry::{BBox, Detection};
pub use labels::Labels;
pub use letterbox::{ChannelOrder, LetterboxParams, LetterboxStyle, Normalization, PreprocessConfig, Preprocessor};
pub use nms::{Nms, NmsConfig};
pub use postprocess::{PostprocessConfig, Postprocessor};
pub use tensor::TensorView;
