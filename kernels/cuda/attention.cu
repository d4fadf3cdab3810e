// Scaled dot-product attention, f32, GQA, optional causal mask (CPU twin: src/cpu/attention.rs).
// q [q_len, heads, d], k and v [kv_len, kv_heads, d], out [q_len, heads, d], all contiguous;
// query head h reads kv head h / (heads / kv_heads); with `causal`, query row i sits at absolute
// position kv_len - q_len + i and sees keys 0..=that. A query that sees no key (or whose scores
// are all -inf) gets zeros, as on the CPU. head_dim <= 256.
//
// One block per (query row, head) item (grid-stride over items). Each warp takes a contiguous
// chunk of the visible keys and runs an online softmax over it (running max, running sum, and
// the running weighted sum of V), with the lanes splitting head_dim: a lane holds its slice of
// q, of the accumulator and of each K/V row in registers, so no score buffer is needed and any
// kv_len works. Keys go 2 or 4 at a time so the loads and the warp reductions overlap. At the
// end the warps' (max, sum, acc) states are merged through shared memory.
// Vector path (float4 slices) when d % 4 == 0 and q, k, v, out are 16-byte aligned; otherwise a
// scalar path computes the same values.
// Launch: grid = min(q_len * heads, cap), block = 32 * warps with warps in 1..=8
// (ATT_MAX_WARPS), no dynamic shared memory.
#include "common.cuh"

namespace kiln {

struct AttentionParams {
    const float* q;
    const float* k;
    const float* v;
    float* out;
    uint32_t q_len;
    uint32_t kv_len;
    uint32_t heads;
    uint32_t kv_heads;
    uint32_t head_dim;
    float scale;
    uint32_t causal;  // 0 or 1
};

constexpr int ATT_MAX_D = 256;
constexpr int ATT_MAX_WARPS = 8;

// A lane's slice of one head_dim row: U units, unit i at element (lane + 32 i) * W, where a unit
// is W = 4 floats (vector path) or 1 float (scalar path). Elements past d read as 0.
template <int U, bool VEC> struct Slice {
    static constexpr int W = VEC ? 4 : 1;
    static constexpr int E = U * W;
    float x[E];

    __device__ __forceinline__ void load(const float* row, int lane, uint32_t d) {
#pragma unroll
        for (int i = 0; i < U; ++i) {
            const uint32_t e = uint32_t(lane + 32 * i) * W;
            if constexpr (VEC) {
                float4 t = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                if (e < d) t = *reinterpret_cast<const float4*>(row + e);  // d % 4 == 0
                x[4 * i + 0] = t.x;
                x[4 * i + 1] = t.y;
                x[4 * i + 2] = t.z;
                x[4 * i + 3] = t.w;
            } else {
                x[i] = e < d ? row[e] : 0.0f;
            }
        }
    }
};

// One (query row, head) item on the whole block.
template <int U, bool VEC>
__device__ __forceinline__ void attend_item(const AttentionParams& p, uint64_t item, float* sm_acc,
                                            float* sm_m, float* sm_l) {
    using S = Slice<U, VEC>;
    constexpr int E = S::E, W = S::W;
    // Keys per warp step: enough in flight to overlap loads and reductions, few enough that the
    // K/V slices stay in registers at 128 per thread.
    constexpr int ATT_KB = E >= 8 ? 2 : 4;
    const uint32_t d = p.head_dim;
    const uint64_t t = item / p.heads;
    const uint32_t h = uint32_t(item % p.heads);
    const uint32_t kvh = h / (p.heads / p.kv_heads);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int warps = blockDim.x >> 5;

    // Visible keys, as `visible()` in the CPU twin, in 64 bits.
    uint32_t seen = p.kv_len;
    if (p.causal) {
        const int64_t last = int64_t(t) + int64_t(p.kv_len) - int64_t(p.q_len);
        seen = uint32_t(last + 1 < 0 ? 0 : (last + 1 > int64_t(p.kv_len) ? p.kv_len : last + 1));
    }
    const uint64_t chunk = (uint64_t(seen) + warps - 1) / warps;
    const uint64_t jb = min(uint64_t(seen), uint64_t(warp) * chunk);
    const uint64_t je = min(uint64_t(seen), jb + chunk);

    S q;
    q.load(p.q + item * d, lane, d);
    float acc[E];
#pragma unroll
    for (int e = 0; e < E; ++e) acc[e] = 0.0f;
    float m = -INFINITY, l = 0.0f;

    const uint64_t stride = uint64_t(p.kv_heads) * d;
    const float* kb = p.k + uint64_t(kvh) * d;
    const float* vb = p.v + uint64_t(kvh) * d;
    for (uint64_t j0 = jb; j0 < je; j0 += ATT_KB) {
        float s[ATT_KB];
        S vs[ATT_KB];
#pragma unroll
        for (int b = 0; b < ATT_KB; ++b) {
            float part = 0.0f;
            if (j0 + b < je) {
                S ks;
                ks.load(kb + (j0 + b) * stride, lane, d);
                vs[b].load(vb + (j0 + b) * stride, lane, d);
#pragma unroll
                for (int e = 0; e < E; ++e) part = fmaf(q.x[e], ks.x[e], part);
            }
            s[b] = part;
        }
        // xor butterflies: every lane ends with the same (bitwise) sums.
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
#pragma unroll
            for (int b = 0; b < ATT_KB; ++b) s[b] += __shfl_xor_sync(0xffffffffu, s[b], o);
        }
#pragma unroll
        for (int b = 0; b < ATT_KB; ++b) {
            if (j0 + b >= je) break;
            // __fmul_rn: the score is rounded before the subtraction, as on the CPU.
            const float sc = __fmul_rn(s[b], p.scale);
            if (sc == -INFINITY) continue;  // weight 0; and -inf - -inf would be NaN
            if (sc <= m) {
                const float w = expf(sc - m);
                l += w;
#pragma unroll
                for (int e = 0; e < E; ++e) acc[e] = fmaf(w, vs[b].x[e], acc[e]);
            } else {  // a new maximum (or NaN, which poisons the row as on the CPU)
                const float c = expf(m - sc);
                l = fmaf(l, c, 1.0f);
#pragma unroll
                for (int e = 0; e < E; ++e) acc[e] = fmaf(acc[e], c, vs[b].x[e]);
                m = sc;
            }
        }
    }

    // Merge the warps' states.
    if (lane == 0) {
        sm_m[warp] = m;
        sm_l[warp] = l;
    }
    float* mine = sm_acc + warp * ATT_MAX_D;
#pragma unroll
    for (int i = 0; i < U; ++i) {
        const uint32_t e = uint32_t(lane + 32 * i) * W;
        if (e < d) {
#pragma unroll
            for (int c = 0; c < W; ++c) mine[e + c] = acc[i * W + c];
        }
    }
    __syncthreads();
    float top = -INFINITY;
    bool nan = false;
    for (int w = 0; w < warps; ++w) {
        nan |= isnan(sm_m[w]);
        top = fmaxf(top, sm_m[w]);
    }
    if (nan) top = NAN;
    float* o = p.out + item * d;
    if (top == -INFINITY) {  // no visible key with a finite score: zeros, never NaN
        for (uint32_t i = threadIdx.x; i < d; i += blockDim.x) o[i] = 0.0f;
    } else {
        float sum = 0.0f;
        for (int w = 0; w < warps; ++w)
            if (sm_m[w] != -INFINITY) sum = fmaf(sm_l[w], expf(sm_m[w] - top), sum);
        for (uint32_t i = threadIdx.x; i < d; i += blockDim.x) {
            float a = 0.0f;
            for (int w = 0; w < warps; ++w)
                if (sm_m[w] != -INFINITY) a = fmaf(sm_acc[w * ATT_MAX_D + i], expf(sm_m[w] - top), a);
            o[i] = a / sum;
        }
    }
    __syncthreads();  // the next item reuses the shared state
}

// Layouts shared with src/cuda/params.rs (which asserts the same numbers).
static_assert(sizeof(AttentionParams) == 64 && offsetof(AttentionParams, causal) == 56,
              "params layout");

}  // namespace kiln

using namespace kiln;

extern "C" __global__ void __launch_bounds__(32 * ATT_MAX_WARPS)
    kiln_attention_f32(AttentionParams p) {
    __shared__ __align__(16) float sm_acc[ATT_MAX_WARPS * ATT_MAX_D];
    __shared__ float sm_m[ATT_MAX_WARPS], sm_l[ATT_MAX_WARPS];
    const uint32_t d = p.head_dim;
    if (d == 0 || d > ATT_MAX_D || p.kv_heads == 0 || p.heads % p.kv_heads != 0 ||
        blockDim.x > 32 * ATT_MAX_WARPS)
        return;
    const bool vec = d % 4 == 0 && aligned16(p.q) && aligned16(p.k) && aligned16(p.v) &&
                     aligned16(p.out);
    const uint64_t items = uint64_t(p.q_len) * p.heads;
    for (uint64_t item = blockIdx.x; item < items; item += gridDim.x) {
        if (vec) {
            if (d <= 128)
                attend_item<1, true>(p, item, sm_acc, sm_m, sm_l);
            else
                attend_item<2, true>(p, item, sm_acc, sm_m, sm_l);
        } else if (d <= 32) {
            attend_item<1, false>(p, item, sm_acc, sm_m, sm_l);
        } else if (d <= 64) {
            attend_item<2, false>(p, item, sm_acc, sm_m, sm_l);
        } else if (d <= 128) {
            attend_item<4, false>(p, item, sm_acc, sm_m, sm_l);
        } else {
            attend_item<8, false>(p, item, sm_acc, sm_m, sm_l);
        }
    }
}
