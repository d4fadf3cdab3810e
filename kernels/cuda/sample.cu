// Token sampling and penalties (CPU twin and the full rule: src/cpu/sample.rs).
//
// kiln_sample_f32: one block per row (a row is one sequence), each row with its own
// temperature / top_k / top_p / uniform. Greedy rows are an argmax. Other rows weigh each
// logit with the integer weight(z - m) ~ exp(z - m) * 2^40 (f32 ops with explicit rounding,
// bit-identical to the twin), so every sum below is exact and independent of the order in
// which threads add. No sort:
//   - top-k: radix select (four 8-bit digits of the order key, a count histogram per digit in
//     shared memory) finds the key t of the k-th entry; ties at t are cut by id with a
//     block scan in id order;
//   - top-p: the same radix select on mass histograms (over the top-k survivors) finds the
//     key where the running mass reaches ceil(top_p * kept); ties are cut the same way;
//   - the draw: every thread sums the kept weights of a contiguous chunk of ids, a block
//     scan finds the chunk holding floor(u * kept), and its thread walks it.
// Each step is a full pass over the row (which stays in L2): 2 passes without cuts, 7 with
// top-k, 8 with top-p, 12 with both.
// Launch: grid = min(rows, ~8 * SMs), block = 128..1024 threads (a multiple of 32).
//
// kiln_penalize_f32: in place, one block per row, threads over the row's CSR entries
// (distinct ids): HF repetition penalty, then OpenAI frequency / presence.
// Launch: grid = min(rows, ~8 * SMs), block = 256.
#include "common.cuh"

namespace kiln {

typedef unsigned long long u64;

struct SampleRowParams {
    float temperature;  // not > 0: greedy
    uint32_t top_k;     // 0: off; 1: greedy
    float top_p;        // < 1: nucleus
    uint32_t pad;
    double uniform;     // [0, 1)
};

struct SampleParams {
    const float* logits;                 // [rows, vocab]
    const SampleRowParams* row_params;   // [rows]
    uint32_t* out;                       // [rows]
    uint64_t rows;
    uint32_t vocab;
};

struct PenaltyRowParams {
    float repetition;
    float frequency;
    float presence;
};

struct PenalizeParams {
    float* logits;                       // [rows, vocab], penalised in place
    const uint32_t* offsets;             // [rows + 1] into entries
    const uint32_t* entries;             // [n_entries, 2]: (id, count in the generated text)
    const PenaltyRowParams* row_params;  // [rows]
    uint64_t rows;
    uint32_t n_entries;
    uint32_t vocab;
};

// Layouts shared with src/cuda/params.rs (which asserts the same numbers).
static_assert(sizeof(SampleRowParams) == 24 && offsetof(SampleRowParams, uniform) == 16, "layout");
static_assert(sizeof(SampleParams) == 40 && offsetof(SampleParams, vocab) == 32, "layout");
static_assert(sizeof(PenaltyRowParams) == 12, "layout");
static_assert(sizeof(PenalizeParams) == 48 && offsetof(PenalizeParams, vocab) == 44, "layout");

constexpr uint32_t FULL = 0xffffffffu;
constexpr uint32_t NONE = 0xffffffffu;

// weight(d) of the twin: every operation rounded on its own (no contraction into FMA).
__device__ __forceinline__ u64 weight(float d) {
    float t = __fmul_rn(d, __uint_as_float(0x3fb8aa3bu));
    const bool in_range = t >= -64.0f;
    t = !in_range ? -64.0f : (t > 0.0f ? 0.0f : t);
    // Nearest integer, ties to even: + and - 1.5 * 2^23, as the twin.
    const float n = __fsub_rn(__fadd_rn(t, 12582912.0f), 12582912.0f);
    const float r = __fsub_rn(__fsub_rn(d, __fmul_rn(n, __uint_as_float(0x3f317200u))),
                              __fmul_rn(n, __uint_as_float(0x35bfbe8eu)));
    float p = __uint_as_float(0x39500d01u);
    p = __fadd_rn(__fmul_rn(p, r), __uint_as_float(0x3ab60b61u));
    p = __fadd_rn(__fmul_rn(p, r), __uint_as_float(0x3c088889u));
    p = __fadd_rn(__fmul_rn(p, r), __uint_as_float(0x3d2aaaabu));
    p = __fadd_rn(__fmul_rn(p, r), __uint_as_float(0x3e2aaaabu));
    p = __fadd_rn(__fmul_rn(p, r), __uint_as_float(0x3f000000u));
    p = __fadd_rn(__fmul_rn(p, r), __uint_as_float(0x3f800000u));
    p = __fadd_rn(__fmul_rn(p, r), __uint_as_float(0x3f800000u));
    const uint32_t bits = __float_as_uint(p);
    const int exp = int((bits >> 23) & 0xffu) - 127;
    const u64 mant = (bits & 0x7fffffu) | 0x800000u;
    // mant * 2^shift, rounded half up when shift < 0.
    const int shift = exp + int(n) + (40 - 23);
    const int left = min(max(shift, 0), 40 - 23);
    const int right = min(max(-shift, 0), 63);
    const u64 q = ((mant << left) + ((1ull << right) >> 1)) >> right;
    return in_range ? q : 0;
}

// Orders non-NaN floats as the floats (-0 == +0); 0 for NaN.
__device__ __forceinline__ uint32_t order_key(float z) {
    if (isnan(z)) return 0;
    const uint32_t b = z == 0.0f ? 0u : __float_as_uint(z);
    return (b >> 31) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ float key_value(uint32_t k) {
    return __uint_as_float((k >> 31) ? (k & 0x7fffffffu) : ~k);
}

// A prefix of the sampling order (key descending, id ascending): see Cut in the twin.
struct Cut {
    uint32_t key;
    uint32_t id;
    __device__ __forceinline__ bool keeps(uint32_t k, uint32_t i) const {
        return k != 0 && (k > key || (k == key && i <= id));
    }
};

struct Shared {
    u64 hist[256];
    u64 partial[32];
    float best_val[32];
    uint32_t best_idx[32];
    uint32_t count[32];
    u64 above;
    uint32_t chosen;
    uint32_t found;
};

// What every thread of the block knows about the row being sampled.
struct RowCtx {
    const float* x;
    uint32_t n;
    float inv;  // 1 / temperature
    float m;    // the largest x * inv
    __device__ __forceinline__ float z(uint32_t i) const { return __fmul_rn(x[i], inv); }
    __device__ __forceinline__ u64 w(float z) const {
        return isnan(z) ? 0 : weight(__fsub_rn(z, m));
    }
};

// f(value, index) over x[0..n), coalesced (16-byte loads when aligned).
template <class F>
__device__ __forceinline__ void for_each(const float* x, uint32_t n, F f) {
    const uint32_t nvec = (n % 4 == 0 && aligned16(x)) ? n / 4 : 0;
    for (uint32_t v = threadIdx.x; v < nvec; v += blockDim.x) {
        const float4 q = reinterpret_cast<const float4*>(x)[v];
        f(q.x, 4 * v);
        f(q.y, 4 * v + 1);
        f(q.z, 4 * v + 2);
        f(q.w, 4 * v + 3);
    }
    for (uint32_t i = nvec * 4 + threadIdx.x; i < n; i += blockDim.x) f(x[i], i);
}

__device__ __forceinline__ u64 warp_sum_u64(u64 v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
    return v;
}

// Sum over the block, to every thread. The leading barrier lets callers reuse `sh.partial`.
__device__ __forceinline__ u64 block_sum_u64(u64 v, Shared& sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum_u64(v);
    __syncthreads();
    if (lane == 0) sh.partial[warp] = v;
    __syncthreads();
    const int warps = (blockDim.x + 31) >> 5;
    return warp_sum_u64(lane < warps ? sh.partial[lane] : 0);
}

__device__ __forceinline__ u64 warp_inclusive_scan(u64 v) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const u64 y = __shfl_up_sync(FULL, v, o);
        if (lane >= o) v += y;
    }
    return v;
}

// Exclusive prefix of `v` over threads in order, and the block total. Starts with a barrier.
__device__ __forceinline__ u64 block_exclusive_scan(u64 v, Shared& sh, u64& total) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int warps = (blockDim.x + 31) >> 5;
    const u64 incl = warp_inclusive_scan(v);
    __syncthreads();
    if (lane == 31) sh.partial[warp] = incl;
    __syncthreads();
    const u64 mine = lane < warps ? sh.partial[lane] : 0;
    const u64 scanned = warp_inclusive_scan(mine);
    total = __shfl_sync(FULL, scanned, 31);
    const u64 before_warp = __shfl_sync(FULL, scanned - mine, warp);
    return before_warp + incl - v;
}

// First index of the largest non-NaN value (0 if none) and the count of non-NaN values.
__device__ void block_argmax(const float* x, uint32_t n, Shared& sh, uint32_t& best,
                             float& best_val, uint32_t& valid) {
    float bv = 0.0f;
    uint32_t bi = NONE, cnt = 0;
    auto offer = [&](float v, uint32_t i) {
        if (isnan(v)) return;
        if (bi == NONE || v > bv || (v == bv && i < bi)) {
            bv = v;
            bi = i;
        }
    };
    for_each(x, n, [&](float v, uint32_t i) {
        cnt += isnan(v) ? 0u : 1u;
        offer(v, i);
    });
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float v = __shfl_xor_sync(FULL, bv, o);
        const uint32_t i = __shfl_xor_sync(FULL, bi, o);
        cnt += __shfl_xor_sync(FULL, cnt, o);
        if (i != NONE) offer(v, i);
    }
    __syncthreads();  // the previous row's readers are done with the arrays
    if (lane == 0) {
        sh.best_val[warp] = bv;
        sh.best_idx[warp] = bi;
        sh.count[warp] = cnt;
    }
    __syncthreads();
    const int warps = (blockDim.x + 31) >> 5;
    bv = 0.0f;
    bi = NONE;
    cnt = 0;
    if (lane < warps) {
        bv = sh.best_val[lane];
        bi = sh.best_idx[lane];
        cnt = sh.count[lane];
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float v = __shfl_xor_sync(FULL, bv, o);
        const uint32_t i = __shfl_xor_sync(FULL, bi, o);
        cnt += __shfl_xor_sync(FULL, cnt, o);
        if (i != NONE) offer(v, i);
    }
    best = bi == NONE ? 0 : bi;
    best_val = bv;
    valid = cnt;
}

// The key t with above(t) < target <= above(t) + at(t), where above(t) sums val(z) over the
// entries of `cut` with a larger key: four passes, one 8-bit digit of the key each (most
// significant first), each a histogram of val over the entries matching the digits found so
// far. Threads merge runs of one bin before their atomic add (the first digit puts most
// logits in a handful of bins). Integer sums: the result does not depend on the order.
template <class Val>
__device__ void radix_select(const RowCtx& row, Cut cut, u64 target, Val val, Shared& sh,
                             uint32_t& t_out, u64& above_out) {
    uint32_t prefix = 0;
    u64 above = 0;
    for (int level = 0; level < 4; ++level) {
        const int shift = 24 - 8 * level;
        __syncthreads();  // readers of the previous histogram and choice are done
        for (uint32_t b = threadIdx.x; b < 256; b += blockDim.x) sh.hist[b] = 0;
        if (threadIdx.x == 0) {
            sh.chosen = 0;
            sh.above = above;
        }
        __syncthreads();
        int run_bin = -1;
        u64 run = 0;
        for_each(row.x, row.n, [&](float v, uint32_t i) {
            const float z = __fmul_rn(v, row.inv);
            const uint32_t k = order_key(z);
            if (!cut.keeps(k, i) || (level > 0 && (k >> (shift + 8)) != prefix)) return;
            const int bin = int((k >> shift) & 0xffu);
            if (bin != run_bin) {
                if (run != 0) atomicAdd(&sh.hist[run_bin], run);
                run_bin = bin;
                run = 0;
            }
            run += val(z);
        });
        if (run != 0) atomicAdd(&sh.hist[run_bin], run);
        __syncthreads();
        if (threadIdx.x < 32) {
            // Lane l owns bins 255 - 8l down to 248 - 8l; lanes scan from the top bin.
            const int lane = threadIdx.x;
            u64 mine = 0;
#pragma unroll
            for (int j = 0; j < 8; ++j) mine += sh.hist[255 - 8 * lane - j];
            u64 acc = above + warp_inclusive_scan(mine) - mine;
            if (acc < target && target <= acc + mine) {
                for (int j = 0; j < 8; ++j) {
                    const int b = 255 - 8 * lane - j;
                    const u64 h = sh.hist[b];
                    if (acc + h >= target) {
                        sh.chosen = uint32_t(b);
                        sh.above = acc;
                        break;
                    }
                    acc += h;
                }
            }
        }
        __syncthreads();
        prefix = (prefix << 8) | sh.chosen;
        above = sh.above;
    }
    t_out = prefix;
    above_out = above;
}

// The first index (in id order) where the running sum of val(i) exceeds goal(total), with
// total the sum of val over the row; `fallback` if there is none. Each thread owns a
// contiguous chunk of ids. `side(i)` is summed over the row on the same pass (into
// side_total) for callers that need one more total.
template <class Val, class Side, class Goal>
__device__ uint32_t find_running(uint32_t n, Val val, Side side, Goal goal_of, Shared& sh,
                                 uint32_t fallback, u64& side_total) {
    const uint32_t chunk = (n + blockDim.x - 1) / blockDim.x;
    const uint32_t c0 = min(n, threadIdx.x * chunk), c1 = min(n, c0 + chunk);
    u64 mine = 0, extra = 0;
    for (uint32_t i = c0; i < c1; ++i) {
        mine += val(i);
        extra += side(i);
    }
    side_total = block_sum_u64(extra, sh);
    u64 total;
    const u64 before = block_exclusive_scan(mine, sh, total);
    const u64 goal = goal_of(total);
    if (threadIdx.x == 0) sh.found = fallback;
    __syncthreads();
    if (mine != 0 && before <= goal && goal < before + mine) {
        u64 acc = before;
        for (uint32_t i = c0; i < c1; ++i) {
            acc += val(i);
            if (acc > goal) {
                sh.found = i;
                break;
            }
        }
    }
    __syncthreads();
    return sh.found;
}

// One non-greedy row whose inv and m are finite (the rule in src/cpu/sample.rs).
__device__ uint32_t sample_row(const RowCtx& row, const SampleRowParams& rp, uint32_t valid,
                               uint32_t best, Shared& sh) {
    Cut cut{0, 0xffffffffu};
    u64 kept = 0, unused = 0;
    bool have_kept = false;
    auto none = [](uint32_t) -> u64 { return 0; };
    if (rp.top_k > 0 && rp.top_k < valid) {
        const u64 k = rp.top_k;
        uint32_t t;
        u64 above;
        radix_select(row, cut, k, [](float) -> u64 { return 1; }, sh, t, above);
        const u64 ties = k - above;
        u64 mass_above;
        const uint32_t id = find_running(
            row.n, [&](uint32_t i) -> u64 { return order_key(row.z(i)) == t ? 1 : 0; },
            [&](uint32_t i) -> u64 {
                const float z = row.z(i);
                return order_key(z) > t ? row.w(z) : 0;
            },
            [&](u64) { return ties - 1; }, sh, best, mass_above);
        cut = Cut{t, id};
        kept = mass_above + ties * weight(__fsub_rn(key_value(t), row.m));
        have_kept = true;
    }
    if (rp.top_p < 1.0f) {
        if (!have_kept) {
            u64 mine = 0;
            for_each(row.x, row.n, [&](float v, uint32_t) { mine += row.w(__fmul_rn(v, row.inv)); });
            kept = block_sum_u64(mine, sh);
        }
        if (kept == 0) return best;  // unreachable: the largest logit weighs 2^40
        u64 need = u64(ceil(__dmul_rn(double(rp.top_p), __ull2double_rn(kept))));
        need = need < 1 ? 1 : (need > kept ? kept : need);
        uint32_t t;
        u64 above;
        radix_select(row, cut, need, [&](float z) { return row.w(z); }, sh, t, above);
        const u64 wt = weight(__fsub_rn(key_value(t), row.m));
        const u64 ties = (wt != 0 && need > above) ? (need - above + wt - 1) / wt : 1;
        const Cut prev = cut;
        const uint32_t id = find_running(
            row.n,
            [&](uint32_t i) -> u64 {
                return order_key(row.z(i)) == t && prev.keeps(t, i) ? 1 : 0;
            },
            none, [&](u64) { return ties - 1; }, sh, best, unused);
        cut = Cut{t, id};
    }
    return find_running(
        row.n,
        [&](uint32_t i) -> u64 {
            const float z = row.z(i);
            return cut.keeps(order_key(z), i) ? row.w(z) : 0;
        },
        none,
        [&](u64 total) -> u64 {
            const u64 r = u64(floor(__dmul_rn(rp.uniform, __ull2double_rn(total))));
            return total == 0 ? 0 : (r < total - 1 ? r : total - 1);
        },
        sh, best, unused);
}

__device__ __forceinline__ void sample_rows(const SampleParams& p) {
    __shared__ Shared sh;
    for (uint64_t r = blockIdx.x; r < p.rows; r += gridDim.x) {
        const float* x = p.logits + r * p.vocab;
        const SampleRowParams rp = p.row_params[r];
        uint32_t best, valid;
        float best_val;
        block_argmax(x, p.vocab, sh, best, best_val, valid);
        uint32_t token = best;
        if (rp.temperature > 0.0f && rp.top_k != 1 && valid > 0) {
            const float inv = __fdiv_rn(1.0f, rp.temperature);
            const float m = __fmul_rn(best_val, inv);
            if (isfinite(inv) && isfinite(m)) {
                const RowCtx row{x, p.vocab, inv, m};
                token = sample_row(row, rp, valid, best, sh);
            }
        }
        if (threadIdx.x == 0) p.out[r] = token;
    }
}

__device__ __forceinline__ void penalize_rows(const PenalizeParams& p) {
    for (uint64_t r = blockIdx.x; r < p.rows; r += gridDim.x) {
        const PenaltyRowParams q = p.row_params[r];
        const uint32_t end = min(p.offsets[r + 1], p.n_entries);
        const uint32_t start = min(p.offsets[r], end);
        float* x = p.logits + r * p.vocab;
        for (uint32_t e = start + threadIdx.x; e < end; e += blockDim.x) {
            const uint32_t id = p.entries[2 * uint64_t(e)], count = p.entries[2 * uint64_t(e) + 1];
            if (id >= p.vocab) continue;
            float l = x[id];
            l = l < 0.0f ? __fmul_rn(l, q.repetition) : __fdiv_rn(l, q.repetition);
            if (count > 0) {
                const float f = __fmul_rn(q.frequency, __uint2float_rn(count));
                l = __fsub_rn(l, __fadd_rn(f, q.presence));
            }
            x[id] = l;
        }
    }
}

}  // namespace kiln

using namespace kiln;

extern "C" __global__ void __launch_bounds__(1024) kiln_sample_f32(SampleParams p) {
    sample_rows(p);
}

extern "C" __global__ void kiln_penalize_f32(PenalizeParams p) { penalize_rows(p); }
