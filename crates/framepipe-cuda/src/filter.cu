// Score filter for a YOLOv8 detect head, channels first: `out` is (4 + nc) x n floats, rows
// cx, cy, w, h, then one row per class. One thread per anchor, with exactly the CPU decoder's
// arithmetic (framepipe_vision::Decoder::YoloV8): the best class score (`v > best`, so NaN never
// wins and the first class holding the maximum is the one kept), kept when strictly greater than
// `conf`. Survivors are appended through one atomic counter as 7 words each:
// anchor, class, score, cx, cy, w, h. Their order is not the anchor order: the host sorts.
extern "C" __global__ void framepipe_filter_yolov8(
    const float* __restrict__ out, int n, int nc, float conf,
    unsigned int* __restrict__ count, unsigned int* __restrict__ records, unsigned int capacity)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float* classes = out + 4 * (size_t)n;
    float best = __int_as_float(0xff800000); // -inf
    for (int c = 0; c < nc; ++c) {
        float v = classes[(size_t)c * n + i];
        best = v > best ? v : best;
    }
    if (!(best > conf)) return;
    unsigned int cls = 0;
    for (int c = 0; c < nc; ++c) {
        if (classes[(size_t)c * n + i] == best) { cls = c; break; }
    }
    unsigned int slot = atomicAdd(count, 1u);
    if (slot >= capacity) return;
    unsigned int* r = records + 7 * (size_t)slot;
    r[0] = (unsigned int)i;
    r[1] = cls;
    r[2] = __float_as_uint(best);
    r[3] = __float_as_uint(out[i]);
    r[4] = __float_as_uint(out[(size_t)n + i]);
    r[5] = __float_as_uint(out[2 * (size_t)n + i]);
    r[6] = __float_as_uint(out[3 * (size_t)n + i]);
}
