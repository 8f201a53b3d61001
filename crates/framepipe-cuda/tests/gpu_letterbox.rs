//! The GPU letterbox against the CPU one (`framepipe_vision::Preprocessor`).
//!
//! The tests marked `#[ignore]` need an NVIDIA GPU: `cargo test -p framepipe-cuda -- --ignored`.
//! The others run everywhere (CI has no GPU) and check that the absence of a driver is an error.

use cudarc::driver::CudaSlice;
use framepipe_cuda::letterbox::emulate_kernel;
use framepipe_cuda::{driver, CudaError, GpuPreprocessor};
use framepipe_vision::{
    ChannelOrder, FrameRef, LetterboxStyle, Normalization, PixelFormat, PreprocessConfig, Preprocessor,
};

/// A deterministic frame with every byte value, sharp edges and noise; `pad` extra bytes per row.
fn frame(w: usize, h: usize, format: PixelFormat, pad: usize, seed: u64) -> (Vec<u8>, usize) {
    let stride = w * format.channels() + pad;
    let mut data = vec![0u8; stride * h];
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for y in 0..h {
        for x in 0..w * format.channels() {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            data[y * stride + x] = ((x * 7 + y * 3) as u8).wrapping_add((s >> 58) as u8);
        }
    }
    (data, stride)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max)
}

#[test]
fn without_a_driver_the_gpu_letterbox_is_an_error_not_a_panic() {
    if driver::driver_present() {
        eprintln!("skipped: a CUDA driver is present here (the #[ignore]d tests cover the GPU)");
        return;
    }
    let err = GpuPreprocessor::new(PreprocessConfig::new(640, 640)).unwrap_err();
    assert!(matches!(err, CudaError::NoDriver { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with("no CUDA driver found: the CUDA driver library could not be loaded (tried "), "{msg}");
    assert!(msg.contains("libcuda.so"), "{msg}");
    assert!(matches!(driver::check_driver(), Err(CudaError::NoDriver { .. })));
    assert!(matches!(driver::mem_info(), Err(CudaError::NoDriver { .. })));
    // A bad configuration is refused as such, driver or not.
    let err = GpuPreprocessor::new(PreprocessConfig::new(0, 640)).unwrap_err();
    assert!(matches!(err, CudaError::Vision(_)), "{err:?}");
}

/// Every frame size and format, into the configurations the app uses, within 1/255 of the CPU
/// (the kernel is written to reproduce the CPU's arithmetic, so the difference is expected to be 0).
#[test]
#[ignore = "needs an NVIDIA GPU"]
fn the_gpu_letterbox_matches_the_cpu_within_one_255th() {
    let sizes = [(1920, 1080), (1280, 720), (480, 640), (640, 640), (1601, 899), (333, 777), (17, 9), (4000, 3)];
    let configs = [
        (PreprocessConfig::new(640, 640), 1.0 / 255.0),
        (PreprocessConfig::new(320, 320), 1.0 / 255.0),
        // CenterFace: BGR planes, raw 0..255 values: one grey level is 1.0 there.
        (
            PreprocessConfig::new(640, 384)
                .with_channel_order(ChannelOrder::Bgr)
                .with_normalization(Normalization::RAW),
            1.0,
        ),
        (PreprocessConfig::new(416, 416).with_style(LetterboxStyle::Yolox).with_scale_up(false), 1.0 / 255.0),
        (PreprocessConfig::new(640, 384).with_style(LetterboxStyle::Stretch), 1.0 / 255.0),
    ];
    let mut worst_overall = 0f32;
    for (config, tol) in configs {
        let mut cpu = Preprocessor::new(config).unwrap();
        // One GPU preprocessor per configuration, fed every size: buffers follow the frame size.
        let mut gpu = GpuPreprocessor::new(config).unwrap();
        let mut want = vec![0f32; config.output_len()];
        let mut got = vec![0f32; config.output_len()];
        for (k, &(w, h)) in sizes.iter().enumerate() {
            for (format, pad) in [(PixelFormat::Bgr8, 0), (PixelFormat::Rgb8, 7), (PixelFormat::Gray8, 1)] {
                let (data, stride) = frame(w, h, format, pad, k as u64);
                let f = FrameRef::new(w, h, stride, format, &data).unwrap();
                let p_cpu = cpu.preprocess(f, &mut want).unwrap();
                let p_gpu = gpu.preprocess_to_host(f, &mut got).unwrap();
                assert_eq!(p_cpu, p_gpu, "geometry of {w}x{h}");
                let d = max_diff(&want, &got);
                let mirror = max_diff(&emulate_kernel(&config, f).unwrap(), &got);
                eprintln!(
                    "{w:>4}x{h:<4} {format} -> {:?}: max |gpu - cpu| = {d:e}, |gpu - mirror| = {mirror:e}",
                    (config.input_width, config.input_height)
                );
                assert!(d <= tol, "{w}x{h} {format} into {config:?}: max difference {d} > {tol}");
                worst_overall = worst_overall.max(d / tol * (1.0 / 255.0));
            }
        }
    }
    eprintln!("worst difference over all cases, on the 0..1 scale: {worst_overall:e}");
}

/// The device variants write exactly what the host variant returns.
#[test]
#[ignore = "needs an NVIDIA GPU"]
fn the_device_outputs_hold_the_same_values_as_the_host_output() {
    let config = PreprocessConfig::new(640, 640);
    let mut gpu = GpuPreprocessor::new(config).unwrap();
    let (data, stride) = frame(1280, 720, PixelFormat::Bgr8, 0, 3);
    let f = FrameRef::new(1280, 720, stride, PixelFormat::Bgr8, &data).unwrap();
    let mut host = vec![0f32; config.output_len()];
    gpu.preprocess_to_host(f, &mut host).unwrap();

    let mut dev: CudaSlice<f32> = gpu.stream().alloc_zeros(config.output_len()).unwrap();
    gpu.preprocess_to_device(f, &mut dev).unwrap();
    let back = gpu.stream().clone_dtoh(&dev).unwrap();
    assert_eq!(back, host);

    let mut raw: CudaSlice<f32> = gpu.stream().alloc_zeros(config.output_len()).unwrap();
    {
        use cudarc::driver::DevicePtrMut;
        let stream = gpu.stream().clone();
        let (ptr, _sync) = raw.device_ptr_mut(&stream);
        // SAFETY: `ptr` addresses `raw`, output_len f32 values on this context, alive until the
        // synchronisation below.
        unsafe { gpu.preprocess_to_device_ptr(f, ptr, config.output_len()).unwrap() };
        gpu.synchronize().unwrap();
    }
    assert_eq!(gpu.stream().clone_dtoh(&raw).unwrap(), host);

    // A wrong output length is refused before anything runs.
    let mut short = vec![0f32; 10];
    assert!(matches!(gpu.preprocess_to_host(f, &mut short), Err(CudaError::Vision(_))));
}
