//! The CUDA kernels as compiled by `build.rs`: one fatbin per `cuda/<name>.cu` (SASS for
//! sm_80, sm_89 and sm_90a, PTX for compute_80), embedded in the binary, with the
//! `extern "C"` kernel symbols each declares and the register / spill / stack use ptxas
//! reported for each kernel on each arch. Loading and launching live in the engine.

pub mod params;

/// One compiled `cuda/<name>.cu`.
#[derive(Debug)]
pub struct CudaModule {
    /// File stem: `rmsnorm` for `cuda/rmsnorm.cu`.
    pub name: &'static str,
    /// The fatbin image, 16-byte aligned (ready for `cuModuleLoadData`).
    pub fatbin: &'static [u8],
    /// `extern "C" __global__` symbols, in source order.
    pub kernels: &'static [&'static str],
    /// Compute capabilities with SASS in the fatbin, as major*10+minor (90 is sm_90a).
    /// Any other card of capability >= [`PTX_ARCH`] JIT-compiles the embedded PTX.
    pub archs: &'static [u32],
}

/// The PTX embedded in every module targets this compute capability.
pub const PTX_ARCH: u32 = 80;

/// What ptxas reported for one kernel on one arch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelResources {
    pub module: &'static str,
    pub kernel: &'static str,
    pub arch: u32,
    pub registers: u32,
    /// Bytes of registers spilled to local memory (stores / loads).
    pub spill_stores: u32,
    pub spill_loads: u32,
    /// Bytes of per-thread local stack (arrays indexed at run time end up here).
    pub stack_frame: u32,
}

/// Kernels on the per-token path of the models: a spill or a stack frame in one of these is a
/// performance bug, and the test below fails the build's test run on it.
pub const HOT_KERNELS: &[&str] = &[
    "kiln_embedding_f32",
    "kiln_embedding_bf16",
    "kiln_embedding_f16",
    "kiln_rmsnorm_f32",
    "kiln_rmsnorm_bf16",
    "kiln_residual_rmsnorm_f32",
    "kiln_residual_rmsnorm_bf16",
    "kiln_layernorm_f32",
    "kiln_layernorm_bf16",
    "kiln_rope_f32",
    "kiln_rope_bf16",
    "kiln_silu_mul_f32",
    "kiln_silu_mul_bf16",
    "kiln_gelu_erf_f32",
    "kiln_gelu_tanh_f32",
    "kiln_quick_gelu_f32",
    "kiln_gelu_erf_bf16",
    "kiln_gelu_tanh_bf16",
    "kiln_quick_gelu_bf16",
    "kiln_softmax_f32",
    "kiln_add_f32",
    "kiln_mul_f32",
    "kiln_scale_f32",
    "kiln_cast_f32_bf16",
    "kiln_cast_bf16_f32",
    "kiln_argmax_f32",
    "kiln_sample_f32",
    "kiln_penalize_f32",
    "kiln_gemv_f32_m1",
    "kiln_gemv_f32_m4",
    "kiln_gemv_f32_m8",
    "kiln_gemv_bf16_m1",
    "kiln_gemv_bf16_m4",
    "kiln_gemv_bf16_m8",
    "kiln_gemv_f16_m1",
    "kiln_gemv_f16_m4",
    "kiln_gemv_f16_m8",
    "kiln_gemm_simple_bf16",
    "kiln_gemm_simple_f16",
    "kiln_gemm_pipe_bf16",
    "kiln_gemm_pipe_f16",
    "kiln_gemm_small_bf16",
    "kiln_gemm_small_f16",
    "kiln_gemm_wgmma_bf16",
    "kiln_gemm_wgmma_f16",
    "kiln_matmul_reduce",
    "kiln_sgemm_f32",
    "kiln_attention_f32",
    "kiln_copy_strided_1",
    "kiln_copy_strided_2",
    "kiln_copy_strided_4",
    "kiln_reshape_and_cache_f32",
    "kiln_reshape_and_cache_bf16",
    "kiln_paged_decode_f32_d64",
    "kiln_paged_decode_f32_d80",
    "kiln_paged_decode_f32_d96",
    "kiln_paged_decode_f32_d128",
    "kiln_paged_decode_bf16_d64",
    "kiln_paged_decode_bf16_d80",
    "kiln_paged_decode_bf16_d96",
    "kiln_paged_decode_bf16_d128",
    "kiln_paged_prefill_f32_d64",
    "kiln_paged_prefill_f32_d80",
    "kiln_paged_prefill_f32_d96",
    "kiln_paged_prefill_f32_d128",
    "kiln_paged_prefill_bf16_d64",
    "kiln_paged_prefill_bf16_d80",
    "kiln_paged_prefill_bf16_d96",
    "kiln_paged_prefill_bf16_d128",
    "kiln_attention_combine_f32",
    "kiln_varlen_attention_d64",
    "kiln_varlen_attention_d80",
    "kiln_varlen_attention_d96",
    "kiln_varlen_attention_d128",
    "kiln_attn_wgmma_paged_bf16_d64",
    "kiln_attn_wgmma_paged_bf16_d80",
    "kiln_attn_wgmma_paged_bf16_d96",
    "kiln_attn_wgmma_paged_bf16_d128",
    "kiln_attn_wgmma_varlen_d64",
    "kiln_attn_wgmma_varlen_d80",
    "kiln_attn_wgmma_varlen_d96",
    "kiln_attn_wgmma_varlen_d128",
];

/// `include_bytes!` gives 1-byte alignment; the driver wants the fatbin header aligned.
#[repr(C, align(16))]
struct Aligned<B: ?Sized>(B);

include!(concat!(env!("OUT_DIR"), "/cuda_modules.rs"));

/// Every compiled module, sorted by name.
pub fn modules() -> &'static [CudaModule] {
    MODULES
}

/// The module compiled from `cuda/<name>.cu`.
pub fn module(name: &str) -> Option<&'static CudaModule> {
    MODULES.iter().find(|m| m.name == name)
}

/// The ptxas report: one row per kernel per SASS arch.
pub fn resources() -> &'static [KernelResources] {
    RESOURCES
}

#[cfg(all(test, feature = "cuda"))]
mod tests {
    use super::*;

    /// Fatbin container magic (0xBA55ED50, little endian).
    const FATBIN_MAGIC: [u8; 4] = [0x50, 0xed, 0x55, 0xba];

    fn count(haystack: &[u8], needle: &[u8]) -> usize {
        haystack
            .windows(needle.len())
            .filter(|w| *w == needle)
            .count()
    }

    #[test]
    fn hot_kernels_do_not_spill() {
        let mut bad = Vec::new();
        for &k in HOT_KERNELS {
            let m = modules()
                .iter()
                .find(|m| m.kernels.contains(&k))
                .unwrap_or_else(|| panic!("hot kernel {k} is in no module"));
            for &arch in m.archs {
                let r = resources()
                    .iter()
                    .find(|r| r.kernel == k && r.arch == arch)
                    .unwrap_or_else(|| panic!("no ptxas report for {k} on sm_{arch}"));
                if r.spill_stores + r.spill_loads + r.stack_frame != 0 {
                    bad.push(format!("{r:?}"));
                }
            }
        }
        assert!(
            bad.is_empty(),
            "hot kernels spill or use a stack frame:\n{}",
            bad.join("\n")
        );
    }

    #[test]
    fn every_module_holds_its_kernels() {
        assert!(!modules().is_empty());
        for m in modules() {
            assert_eq!(
                m.fatbin.as_ptr() as usize % 16,
                0,
                "{} fatbin alignment",
                m.name
            );
            assert_eq!(m.fatbin[..4], FATBIN_MAGIC, "{} is not a fatbin", m.name);
            assert_eq!(m.archs, &[80, 89, 90], "{}", m.name);
            assert!(!m.kernels.is_empty(), "{} declares no kernel", m.name);
            for k in m.kernels {
                // Each SASS image is an ELF with a `.text.<kernel>` section (SASS is stored
                // uncompressed; the compressed PTX is not searched).
                let section = format!(".text.{k}\0");
                let n = count(m.fatbin, section.as_bytes());
                assert!(
                    n >= m.archs.len(),
                    "{}: kernel {k} is in {n} SASS images, want {}",
                    m.name,
                    m.archs.len()
                );
                for &arch in m.archs {
                    assert!(
                        resources()
                            .iter()
                            .any(|r| r.module == m.name && r.kernel == *k && r.arch == arch),
                        "{}: no ptxas report for {k} on sm_{arch}",
                        m.name
                    );
                }
            }
            assert_eq!(module(m.name).map(|x| x.name), Some(m.name));
        }
        assert!(module("no-such-module").is_none());
    }

    #[test]
    fn resource_table_is_plausible() {
        for r in resources() {
            assert!(
                (1..=255).contains(&r.registers),
                "{} on sm_{}: {} registers",
                r.kernel,
                r.arch,
                r.registers
            );
        }
    }
}
