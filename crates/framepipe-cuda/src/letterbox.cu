// framepipe's GPU letterbox: an 8-bit interleaved frame (BGR8, RGB8 or GRAY8) in device memory
// becomes a planar f32 model input (1x3xHxW), in one pass that writes every output value once.
//
// It reproduces framepipe_vision::Preprocessor exactly (same geometry, same arithmetic, same order
// of operations; compiled with --fmad=false so that no multiply-add is fused):
// - the letterbox geometry (new size, padding) comes from the host (LetterboxParams::compute);
// - source coordinates follow OpenCV INTER_LINEAR: src = (d + 0.5) * (src_size / new_size) - 0.5,
//   computed in double and rounded to float, clamped to the image; a clamped or integral coordinate
//   has weight 0 and a single tap;
// - the vertical blend comes first, then the horizontal one: v = a + (b - a) * w in f32;
// - each output plane c is normalised as (v - mean[c]) / std[c]; padding gets the host-computed
//   normalised pad value of its plane.
//
// No header is included and no library function is called: NVRTC compiles it as it is.

// Passed by value; its layout is mirrored by `KernelArgs` (repr(C)) on the Rust side.
struct LetterboxArgs {
    double scale_x;        // src_w / new_w (build_taps' `scale` for the x axis)
    double scale_y;        // src_h / new_h
    long long src_stride;  // bytes between source rows
    float mean[3];         // per output plane, on the 0..255 scale
    float std_[3];         // per output plane
    float pad[3];          // normalised pad value per output plane
    int src_w;
    int src_h;
    int channels;          // 1 or 3
    int swap;              // 1: output plane c reads source channel 2 - c (BGR <-> RGB)
    int dst_w;
    int dst_h;
    int new_w;
    int new_h;
    int pad_x;
    int pad_y;
};

// One axis of OpenCV's INTER_LINEAR mapping, as framepipe_vision's build_taps computes it.
__device__ __forceinline__ void tap(int d, double scale, int src, int* i0, int* i1, float* w) {
    const int last = src - 1;
    const float f = (float)(((double)d + 0.5) * scale - 0.5);
    // floor(f) without the math library: |f| is far below 2^31, so the cast is exact.
    const float t = (float)(int)f;
    const float fl = (t > f) ? t - 1.0f : t;
    if (fl < 0.0f) {
        *i0 = 0;
        *w = 0.0f;
    } else if (fl >= (float)last) {
        *i0 = last;
        *w = 0.0f;
    } else {
        *i0 = (int)fl;
        *w = f - fl;
    }
    *i1 = (*w == 0.0f) ? *i0 : ((*i0 + 1 < last) ? *i0 + 1 : last);
}

extern "C" __global__ void framepipe_letterbox(const unsigned char* __restrict__ src,
                                               float* __restrict__ dst,
                                               const LetterboxArgs a) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= a.dst_w || y >= a.dst_h) {
        return;
    }
    const long long plane = (long long)a.dst_w * (long long)a.dst_h;
    const long long o = (long long)y * (long long)a.dst_w + (long long)x;
    const int ix = x - a.pad_x;
    const int iy = y - a.pad_y;
    if (ix < 0 || iy < 0 || ix >= a.new_w || iy >= a.new_h) {
        dst[o] = a.pad[0];
        dst[plane + o] = a.pad[1];
        dst[2 * plane + o] = a.pad[2];
        return;
    }
    int x0, x1, y0, y1;
    float wx, wy;
    tap(ix, a.scale_x, a.src_w, &x0, &x1, &wx);
    tap(iy, a.scale_y, a.src_h, &y0, &y1, &wy);
    const unsigned char* r0 = src + (long long)y0 * a.src_stride;
    const unsigned char* r1 = src + (long long)y1 * a.src_stride;
    const int c = a.channels;
#pragma unroll
    for (int p = 0; p < 3; ++p) {
        const int ch = (c == 1) ? 0 : (a.swap ? 2 - p : p);
        const float a00 = (float)r0[x0 * c + ch];
        const float a01 = (float)r0[x1 * c + ch];
        const float a10 = (float)r1[x0 * c + ch];
        const float a11 = (float)r1[x1 * c + ch];
        // Vertical first (the CPU blends whole rows, then samples them horizontally).
        const float v0 = a00 + (a10 - a00) * wy;
        const float v1 = a01 + (a11 - a01) * wy;
        const float v = v0 + (v1 - v0) * wx;
        dst[p * plane + o] = (v - a.mean[p]) / a.std_[p];
    }
}
