// Embedding gather: out[t, :] = table[ids[t], :] as f32 (CPU twin: src/cpu/embedding.rs), for
// f32, bf16 and f16 tables. One block per token (grid-stride over tokens), threads over the
// row in packs of 8 elements: one 16-byte load of a 16-bit table, two 16-byte f32 stores.
// The engine bounds-checks ids; an id >= vocab that slips through gives a NaN row here rather
// than a read out of bounds. Launch: grid = min(tokens, ~16 * SMs), block = 128..256 threads.
#include "common.cuh"

namespace kiln {

template <typename T> struct EmbeddingParams {
    const T* table;  // [vocab, hidden]
    const uint32_t* ids;  // [tokens]
    float* out;  // [tokens, hidden]
    uint64_t tokens;
    uint32_t hidden;
    uint32_t vocab;
};

template <typename T> __device__ __forceinline__ void embedding(const EmbeddingParams<T>& p) {
    constexpr int N = 8;
    const uint32_t hidden = p.hidden;
    const bool vec_ok = hidden % N == 0 && aligned16(p.table) && aligned16(p.out);
    const uint32_t nvec = vec_ok ? hidden / N : 0;
    for (uint64_t t = blockIdx.x; t < p.tokens; t += gridDim.x) {
        const uint32_t id = p.ids[t];
        float* out = p.out + t * hidden;
        if (id >= p.vocab) {
            for (uint32_t c = threadIdx.x; c < hidden; c += blockDim.x) out[c] = __int_as_float(0x7fffffff);
            continue;
        }
        const T* row = p.table + uint64_t(id) * hidden;
        for (uint32_t v = threadIdx.x; v < nvec; v += blockDim.x) {
            const Pack<T, N> a = load_pack<T, N>(row + uint64_t(v) * N);
            Pack<float, N> b;
#pragma unroll
            for (int k = 0; k < N; ++k) b.v[k] = to_f32(a.v[k]);
            store_pack<float, N>(out + uint64_t(v) * N, b);
        }
        for (uint32_t c = nvec * N + threadIdx.x; c < hidden; c += blockDim.x) out[c] = to_f32(row[c]);
    }
}

// Layouts shared with src/cuda/params.rs (which asserts the same numbers).
static_assert(sizeof(EmbeddingParams<float>) == 40 && offsetof(EmbeddingParams<float>, vocab) == 36, "params layout");

}  // namespace kiln

using namespace kiln;

extern "C" __global__ void kiln_embedding_f32(EmbeddingParams<float> p) { embedding(p); }
extern "C" __global__ void kiln_embedding_bf16(EmbeddingParams<bf16> p) { embedding(p); }
extern "C" __global__ void kiln_embedding_f16(EmbeddingParams<f16> p) { embedding(p); }
