// Strided copy: the dense row-major copy of a strided view (Tensor::contiguous of a CUDA view;
// CPU twin: src/cpu/copy.rs), for elements of 1, 2 or 4 bytes (the bits are moved, whatever
// the dtype).
//
// The launcher collapses the view first (size-1 dims dropped, neighbouring dims merged where
// one steps over exactly one run of the next; cpu::copy::collapse) and left-pads it to
// MAX_RANK dims of size 1 and stride 0, so the kernel always walks MAX_RANK dims with
// compile-time indices: the multi-index stays in registers (no stack frame).
//
// Each thread step writes one 16-byte pack of output (16 / sizeof(T) elements): the source
// offset of its first element comes from dividing the linear index by the dims (32-bit
// division while the index fits, uniform in practice), the others from an odometer step. Output
// stores are coalesced 16-byte stores; reads gather single elements. The last n % N elements
// (and everything, should `dst` not be 16-byte aligned) take the scalar path.
// Launch as binary.cu: grid-stride, 256 threads, blocks = min(ceil(n / (256 * N)), 8 * SMs).
#include "common.cuh"

namespace kiln {

constexpr int MAX_RANK = 6;

struct CopyStridedParams {
    const void* src;              // the view's first element
    void* dst;                    // dense [n]
    uint64_t n;                   // elements
    uint32_t shape[MAX_RANK];     // outermost first; leading dims of size 1 pad the rank
    uint64_t strides[MAX_RANK];   // in elements
};

// Multi-index of linear output index `i` (row-major over `shape`) and its source offset.
template <typename I>
__device__ __forceinline__ uint64_t source_offset(const CopyStridedParams& p, I i, uint32_t (&idx)[MAX_RANK]) {
    uint64_t off = 0;
#pragma unroll
    for (int d = MAX_RANK - 1; d > 0; --d) {
        const I s = p.shape[d];
        if (s == 1) {  // padding and collapsed-away dims: uniform over the grid
            idx[d] = 0;
            continue;
        }
        const I q = i / s;
        idx[d] = uint32_t(i - q * s);
        off += uint64_t(idx[d]) * p.strides[d];
        i = q;
    }
    idx[0] = uint32_t(i);
    return off + uint64_t(i) * p.strides[0];
}

__device__ __forceinline__ uint64_t source_offset(const CopyStridedParams& p, uint64_t i, uint32_t (&idx)[MAX_RANK]) {
    return (i >> 32) == 0 ? source_offset<uint32_t>(p, uint32_t(i), idx) : source_offset<uint64_t>(p, i, idx);
}

// Advances the multi-index by one output element, keeping `off` its source offset (unsigned
// wrap-around in the carry is undone by the next add).
__device__ __forceinline__ void step(const CopyStridedParams& p, uint32_t (&idx)[MAX_RANK], uint64_t& off) {
#pragma unroll
    for (int d = MAX_RANK - 1; d >= 0; --d) {
        off += p.strides[d];
        if (++idx[d] < p.shape[d]) return;
        off -= uint64_t(p.shape[d]) * p.strides[d];
        idx[d] = 0;
    }
}

template <typename T> __device__ __forceinline__ void copy_strided(const CopyStridedParams& p) {
    constexpr int N = int(16 / sizeof(T));
    const T* __restrict__ src = static_cast<const T*>(p.src);
    T* __restrict__ dst = static_cast<T*>(p.dst);
    grid_stride<N>(
        p.n, aligned16(dst),
        [&](uint64_t i) {
            uint32_t idx[MAX_RANK];
            uint64_t off = source_offset(p, i, idx);
            Pack<T, N> v;
#pragma unroll
            for (int k = 0; k < N; ++k) {
                v.v[k] = src[off];
                if (k + 1 < N) step(p, idx, off);
            }
            store_pack<T, N>(dst + i, v);
        },
        [&](uint64_t i) {
            uint32_t idx[MAX_RANK];
            dst[i] = src[source_offset(p, i, idx)];
        });
}

// Layouts shared with src/cuda/params.rs (which asserts the same numbers).
static_assert(sizeof(CopyStridedParams) == 96 && offsetof(CopyStridedParams, strides) == 48, "params layout");

}  // namespace kiln

using namespace kiln;

extern "C" __global__ void kiln_copy_strided_1(CopyStridedParams p) { copy_strided<uint8_t>(p); }
extern "C" __global__ void kiln_copy_strided_2(CopyStridedParams p) { copy_strided<uint16_t>(p); }
extern "C" __global__ void kiln_copy_strided_4(CopyStridedParams p) { copy_strided<uint32_t>(p); }
