#!/usr/bin/env bash
# Installs the CUDA compiler (nvcc, cicc, ptxas, fatbinary, headers) from PyPI into the
# project-local, git-ignored .cuda-toolchain/, so kernels/build.rs can compile every kernel on
# a machine with no CUDA installed and no GPU. Pinned to 13.0.x: the GPU machines run the R580
# driver, whose JIT rejects PTX from a newer toolkit.
#
# Layout:  .cuda-toolchain/pkgs/nvidia/cu13/{bin,nvvm,include,lib}  (the wheels, as pip lays them)
#          .cuda-toolchain/bin/nvcc                                  (wrapper: the path build.rs finds)
#          .cuda-toolchain/.stamp                                    (the pins it was built from)
# Safe to rerun: an install whose stamp matches the pins is left alone. Prints the nvcc path last.
set -euo pipefail

repo_root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${repo_root}/.cuda-toolchain"
pkgs="${dest}/pkgs"
stamp="${dest}/.stamp"

# nvidia-cuda-cccl is not optional: cuda_fp16.h includes <nv/target>, which only cccl ships.
pins=(
    nvidia-cuda-nvcc==13.0.88
    nvidia-cuda-crt==13.0.88
    nvidia-cuda-runtime==13.0.96
    nvidia-nvvm==13.0.88
    nvidia-cuda-cccl==13.0.85
)
want="${pins[*]} layout=1"

# The wheels put everything under nvidia/cu13; nvcc.profile there points nvcc at
# ../nvvm/bin (cicc), its own dir (ptxas, fatbinary) and ../include (+ include/cccl).
cuda_root="${pkgs}/nvidia/cu13"
wrapper="${dest}/bin/nvcc"

if [[ -f "${stamp}" && "$(cat "${stamp}")" == "${want}" && -x "${wrapper}" \
      && -x "${cuda_root}/bin/nvcc" ]]; then
    echo "${wrapper}"
    exit 0
fi

if ! command -v python3 >/dev/null 2>&1; then
    echo "error: python3 not found; it is needed to install the CUDA toolchain from PyPI" >&2
    exit 1
fi

echo "installing the CUDA toolchain (${pins[*]}) into ${dest}" >&2
# A fresh directory each time: pip --target does not remove files of an older version.
rm -rf "${pkgs}" "${dest}/bin" "${stamp}"
mkdir -p "${pkgs}" "${dest}/bin"
if ! python3 -m pip install --quiet --disable-pip-version-check --no-deps \
        --target "${pkgs}" "${pins[@]}" >&2; then
    echo "error: pip could not install the CUDA toolchain wheels (${pins[*]})." >&2
    echo "       Is this machine offline, or is PyPI unreachable? The build needs them only" >&2
    echo "       with --features cuda; set NVCC or CUDA_HOME to use an installed toolkit." >&2
    exit 1
fi

for tool in nvcc ptxas fatbinary cudafe++; do
    if [[ ! -x "${cuda_root}/bin/${tool}" ]]; then
        echo "error: ${tool} missing from ${cuda_root}/bin after install" >&2
        exit 1
    fi
done
for path in nvvm/bin/cicc include/cuda_fp16.h include/cuda_bf16.h include/cccl/nv/target; do
    if [[ ! -e "${cuda_root}/${path}" ]]; then
        echo "error: ${path} missing from ${cuda_root} after install" >&2
        exit 1
    fi
done

# A wrapper rather than a symlink: nvcc reads nvcc.profile from the directory it was started
# from, so it must be exec'd by its real path.
cat > "${wrapper}" <<'EOF'
#!/usr/bin/env bash
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "${here}/../pkgs/nvidia/cu13/bin/nvcc" "$@"
EOF
chmod +x "${wrapper}"

# Smoke test: the sm_90a target and the fp16/bf16 headers are what the kernels need.
smoke="$(mktemp -d)"
trap 'rm -rf "${smoke}"' EXIT
cat > "${smoke}/smoke.cu" <<'EOF'
#include <cuda_bf16.h>
#include <cuda_fp16.h>
extern "C" __global__ void smoke(float* out, const __nv_bfloat16* a, const __half* b) {
    out[threadIdx.x] = __bfloat162float(a[threadIdx.x]) + __half2float(b[threadIdx.x]);
}
EOF
if ! "${wrapper}" -fatbin -gencode=arch=compute_90a,code=sm_90a -O3 \
        -o "${smoke}/smoke.fatbin" "${smoke}/smoke.cu" >&2; then
    echo "error: the installed nvcc failed to compile a test kernel for sm_90a" >&2
    exit 1
fi

echo "${want}" > "${stamp}"
echo "CUDA toolchain ready ($("${wrapper}" --version | tail -n 2 | head -n 1))" >&2
echo "${wrapper}"
