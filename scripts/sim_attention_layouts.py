#!/usr/bin/env python3
"""Checks the shared-memory and fragment index math of kernels/cuda/attention_wgmma.cu without
a GPU (needs numpy).

    python3 scripts/sim_attention_layouts.py

Re-implements the kernel's addressing for one CTA (64 query rows, several 64-key tiles):
`wg_at` placement of Q, K and V rows in the 128B-swizzle tiles, the K-major descriptors of
S = Q K^T (k-step ks at block ks / 4, +32 bytes per step inside it), the MN-major descriptor of
O += P V (k-step j at +2048 bytes, LBO = 8192 between 64-column blocks, SBO = 1024 between
8-key groups, imm-trans-b), the wgmma m64nNk16 accumulator layout, and the re-packing of the
S accumulators into the bf16 A registers of P (fa_p_frags). Operand reads follow the canonical
layouts of the PTX ISA (as CUTLASS spells them, in 16-byte units: K-major ((8,m),(8)) :
((8,SBO),(1)); MN-major ((8,n),(8,k)) : ((1,LBO),(8,SBO))) with the 128B swizzle applied to
the final address (bits 4-6 ^= bits 7-9). The online softmax is the kernel's (log2 domain,
per-tile rescale). The result is compared with softmax(Q K^T * scale) V in float64. It checks
the kernel's own arithmetic against that model of the hardware, not the hardware itself: keep
it in step with the .cu file.
"""

import numpy as np


def wg_at(r, c):
    """attention_wgmma.cu `wg_at`: element index of (row r, column c) in a 64-row tile."""
    return ((c >> 6) * 64 + r) * 64 + ((((c >> 3) & 7) ^ (r & 7)) << 3) + (c & 7)


def swz(u):
    return u ^ (((u >> 7) & 7) << 4)


def read_kmajor(smem, start, row, k):
    """Element (row, k) of a K-major 128B-swizzled operand (SBO 1024), descriptor start `start`."""
    u = start + (row >> 3) * 1024 + (row & 7) * 128 + 2 * k
    return smem[swz(u) // 2]


def read_mnmajor(smem, start, k, n, lbo, sbo=1024):
    """Element (k, n) of an MN-major 128B-swizzled operand, descriptor start `start`."""
    u = start + (k >> 3) * sbo + (k & 7) * 128 + (n >> 6) * lbo + 2 * (n & 63)
    return smem[swz(u) // 2]


def acc_to_matrix(acc, n_cols):
    """wgmma m64nN f32 accumulators [thread][4i + q] -> the 64 x N matrix they hold."""
    m = np.zeros((64, n_cols))
    for th in range(128):
        wp, lane = divmod(th, 32)
        g, t = lane >> 2, lane & 3
        for i in range(n_cols // 8):
            for q in range(4):
                m[16 * wp + g + 8 * (q >> 1), 8 * i + 2 * t + (q & 1)] = acc[th][4 * i + q]
    return m


def matrix_to_acc(m, acc):
    for th in range(128):
        wp, lane = divmod(th, 32)
        g, t = lane >> 2, lane & 3
        for i in range(m.shape[1] // 8):
            for q in range(4):
                acc[th][4 * i + q] = m[16 * wp + g + 8 * (q >> 1), 8 * i + 2 * t + (q & 1)]


def p_frags(s_acc):
    """fa_p_frags<8>: per thread, p[j] = 4 registers of 2 values (lo, hi) from s[n-tile][4]."""
    out = []
    for th in range(128):
        s = s_acc[th]  # s[4 * n + e]
        p = []
        for j in range(4):
            p.append([(s[4 * (2 * j) + 0], s[4 * (2 * j) + 1]), (s[4 * (2 * j) + 2], s[4 * (2 * j) + 3]),
                      (s[4 * (2 * j + 1) + 0], s[4 * (2 * j + 1) + 1]), (s[4 * (2 * j + 1) + 2], s[4 * (2 * j + 1) + 3])])
        out.append(p)
    return out


def a_regs_to_matrix(p, j):
    """The A operand (64 x 16) that registers p[thread][j] hold (m16n8k16 A fragment per warp)."""
    a = np.zeros((64, 16))
    for th in range(128):
        wp, lane = divmod(th, 32)
        g, t = lane >> 2, lane & 3
        r0 = 16 * wp
        for reg, row, k0 in [(0, g, 2 * t), (1, g + 8, 2 * t), (2, g, 2 * t + 8), (3, g + 8, 2 * t + 8)]:
            a[r0 + row, k0], a[r0 + row, k0 + 1] = p[th][j][reg]
    return a


def cta(q, k, v, scale):
    """One CTA of wg_prefill (non-causal, every row valid): q [64, d], k and v [keys, d]."""
    d = q.shape[1]
    dp = next(t for t in (64, 80, 96, 128) if d <= t)
    db = (dp + 63) // 64
    tile = db * 64 * 64
    block_bytes = 64 * 128
    smem = np.zeros(5 * tile)  # Q, K[2], V[2] (bf16 elements); zero-filled as for d < DP
    qs, ks, vs = 0, tile, 3 * tile
    for r in range(64):
        for c in range(d):
            smem[qs + wg_at(r, c)] = q[r, c]
    o = [[0.0] * (dp // 2) for _ in range(128)]
    m = np.full(64, -np.inf)
    l = np.zeros(64)
    n_tiles = -(-k.shape[0] // 64)
    for jt in range(n_tiles):
        st = jt & 1
        for r in range(64):
            j = jt * 64 + r
            for c in range(dp):
                smem[ks + st * tile + wg_at(r, c)] = k[j, c] if j < k.shape[0] and c < d else 0.0
                smem[vs + st * tile + wg_at(r, c)] = v[j, c] if j < k.shape[0] and c < d else 0.0
        # S = Q K^T: DP / 16 wgmma m64n64k16, start addresses as wg_qk.
        s_acc = [[0.0] * 32 for _ in range(128)]
        for kk in range(dp // 16):
            at = (kk // 4) * block_bytes + (kk % 4) * 32
            sa, sb = 2 * qs + at, 2 * (ks + st * tile) + at
            a = np.array([[read_kmajor(smem, sa, r, x) for x in range(16)] for r in range(64)])
            b = np.array([[read_kmajor(smem, sb, n, x) for x in range(16)] for n in range(64)])
            cur = acc_to_matrix(s_acc, 64) if kk > 0 else np.zeros((64, 64))
            matrix_to_acc(cur + a @ b.T, s_acc)
        s = acc_to_matrix(s_acc, 64) * scale * np.log2(np.e)
        keys = np.arange(jt * 64, jt * 64 + 64)
        s[:, keys >= k.shape[0]] = -np.inf
        # fa_softmax (per row; the kernel does it per quad of lanes).
        mx = np.maximum(m, s.max(axis=1))
        base = np.where(mx == -np.inf, 0.0, mx)
        corr = np.exp2(m - base)
        p = np.exp2(s - base[:, None])
        l = l * corr + p.sum(axis=1)
        m = mx
        om = acc_to_matrix(o, dp) * corr[:, None]
        matrix_to_acc(om, o)
        matrix_to_acc(p, s_acc)
        pf = p_frags(s_acc)
        # O += P V: 4 wgmma m64n{DP}k16, A from registers, B MN-major (wg_pv).
        for j in range(4):
            a = a_regs_to_matrix(pf, j)
            start = 2 * (vs + st * tile) + j * 2048
            b = np.array([[read_mnmajor(smem, start, x, n, block_bytes) for n in range(dp)] for x in range(16)])
            matrix_to_acc(acc_to_matrix(o, dp) + a @ b, o)
    return (acc_to_matrix(o, dp) / l[:, None])[:, :d]


def main():
    rng = np.random.default_rng(11)
    for d, keys in [(64, 64), (128, 200), (80, 130), (96, 65), (72, 100)]:
        q, k, v = (rng.uniform(-1, 1, (n, d)) for n in (64, keys, keys))
        scale = 1 / np.sqrt(d)
        got = cta(q, k, v, scale)
        s = q @ k.T * scale
        w = np.exp(s - s.max(axis=1, keepdims=True))
        ref = (w / w.sum(axis=1, keepdims=True)) @ v
        err = np.abs(got - ref).max()
        print(f"wgmma attention d={d:<4} keys={keys:<4} max |err| {err:.1e}")
        assert not np.isnan(got).any() and err < 1e-9, d
    print("ok")


if __name__ == "__main__":
    main()
