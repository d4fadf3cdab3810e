#!/usr/bin/env python3
"""Checks the index math of the tensor-core GEMMs without a GPU (needs numpy).

    python3 scripts/sim_gemm_layouts.py

Re-implements, line for line, the addressing of kernels/cuda/gemm_mma.cu (swizzled cp.async
placement, ldmatrix.x4 lane addresses, raster, split-K) and kernels/cuda/gemm_wgmma.cu (TMA
128B-swizzle boxes, wgmma descriptors with 32-byte k16 steps, consumer / accumulator mapping),
executes them on random matrices with the operand semantics the PTX ISA defines (ldmatrix
fragments, mma.m16n8k16 A/B/C fragments, wgmma m64nNk16 D fragments, 128B swizzle = XOR of
address bits 4-6 with bits 7-9), and compares with x @ w.T + bias + residual. It also checks
that every ldmatrix phase of gemm_mma.cu touches 8 distinct 16-byte bank groups. It verifies
the kernels' own arithmetic, not the hardware: keep it in step with the .cu files.
"""

import numpy as np


# ---- gemm_mma.cu ----------------------------------------------------------------------------

LARGE = dict(BM=128, BN=128, BK=32, WM=2, WN=4, STAGES=4, RASTER=8)
SMALL = dict(BM=32, BN=64, BK=64, WM=1, WN=4, STAGES=4, RASTER=1 << 30)


def swizzled(ch, r, c):
    return r * (ch * 16) + ((c ^ ((r // (8 // ch)) % ch)) << 4)


def raster(pid, tiles_m, tiles_n, group):
    group = min(group, tiles_m)
    per_group = group * tiles_n
    first = pid // per_group * group
    rows = min(tiles_m - first, group)
    r = pid % per_group
    return first + r % rows, r // rows


def ldmatrix_x4(smem, addrs):
    """regs[lane][i] = (lo, hi): row lane/4 of matrix i, whose row address lane 8i + lane/4 gave."""
    return [[(smem[addrs[8 * i + t // 4] // 2 + 2 * (t % 4)], smem[addrs[8 * i + t // 4] // 2 + 2 * (t % 4) + 1])
             for i in range(4)] for t in range(32)]


def mma_16816(acc, af, bf):
    a, b, c = np.zeros((16, 16)), np.zeros((16, 8)), np.zeros((16, 8))
    for lane in range(32):
        g, t = lane // 4, lane % 4
        for reg, row, k0 in [(0, g, 2 * t), (1, g + 8, 2 * t), (2, g, 2 * t + 8), (3, g + 8, 2 * t + 8)]:
            a[row, k0], a[row, k0 + 1] = af[lane][reg]
        for reg, k0 in [(0, 2 * t), (1, 2 * t + 8)]:
            b[k0, g], b[k0 + 1, g] = bf[lane][reg]
        c[g, 2 * t], c[g, 2 * t + 1], c[g + 8, 2 * t], c[g + 8, 2 * t + 1] = acc[lane]
    c += a @ b
    for lane in range(32):
        g, t = lane // 4, lane % 4
        acc[lane] = [c[g, 2 * t], c[g, 2 * t + 1], c[g + 8, 2 * t], c[g + 8, 2 * t + 1]]


def gemm_pipe(cfg, x, w, bias, res, splits, k_split):
    BM, BN, BK, WM, WN, STAGES = (cfg[key] for key in ("BM", "BN", "BK", "WM", "WN", "STAGES"))
    threads, tm_, tn_ = WM * WN * 32, BM // WM, BN // WN
    mi, nj, ch = tm_ // 16, tn_ // 8, BK // 8
    a_bytes, stage_bytes = BM * BK * 2, (BM + BN) * BK * 2
    m, k = x.shape
    n = w.shape[0]
    out = np.full((m, n), np.nan)
    partial = np.full((splits, m, n), np.nan)
    tiles_m, tiles_n = -(-m // BM), -(-n // BN)
    for pid in range(tiles_m * tiles_n):
        for split in range(splits):
            tm, tn = raster(pid, tiles_m, tiles_n, cfg["RASTER"])
            m0, n0 = tm * BM, tn * BN
            k_begin = split * k_split
            k_end = min(k, k_begin + k_split)
            k_tiles = -(-(k_end - k_begin) // BK)
            smem = np.full(STAGES * stage_bytes // 2, np.nan)

            def load_tile(dst, src, rows, row0, k0, tile_rows):
                assert tile_rows * ch % threads == 0
                for tid in range(threads):
                    for i in range(tile_rows * ch // threads):
                        r, c = divmod(tid + i * threads, ch)
                        grow, gk = row0 + r, k0 + c * 8
                        e = (dst + swizzled(ch, r, c)) // 2
                        smem[e:e + 8] = src[grow, gk:gk + 8] if grow < rows and gk < k_end else 0.0

            def load_stage(stage, kt):
                sa, k0 = stage * stage_bytes, k_begin + kt * BK
                load_tile(sa, x, m, m0, k0, BM)
                load_tile(sa + a_bytes, w, n, n0, k0, BN)

            acc = {(wp, i, j): [[0.0] * 4 for _ in range(32)] for wp in range(WM * WN) for i in range(mi) for j in range(nj)}
            for s in range(STAGES - 1):
                if s < k_tiles:
                    load_stage(s, s)
            for kt in range(k_tiles):
                if kt + STAGES - 1 < k_tiles:  # after the barrier: stage (kt - 1) % STAGES is free
                    load_stage((kt + STAGES - 1) % STAGES, kt + STAGES - 1)
                sa = (kt % STAGES) * stage_bytes
                sb = sa + a_bytes
                for wp in range(WM * WN):
                    wm, wn = divmod(wp, WN)
                    for kk in range(BK // 16):
                        af = [ldmatrix_x4(smem, [sa + swizzled(ch, wm * tm_ + (l & 15) + i * 16, 2 * kk + (l >> 4))
                                                 for l in range(32)]) for i in range(mi)]
                        bfr = []
                        for jj in range(nj // 2):
                            r = ldmatrix_x4(smem, [sb + swizzled(ch, wn * tn_ + (l & 7) + ((l >> 4) << 3) + jj * 16,
                                                                 2 * kk + ((l >> 3) & 1)) for l in range(32)])
                            bfr += [[[r[l][0], r[l][1]] for l in range(32)], [[r[l][2], r[l][3]] for l in range(32)]]
                        for i in range(mi):
                            for j in range(nj):
                                mma_16816(acc[(wp, i, j)], af[i], bfr[j])
            for (wp, i, j), a in acc.items():
                wm, wn = divmod(wp, WN)
                for lane in range(32):
                    g, t = lane >> 2, lane & 3
                    row, col = m0 + wm * tm_ + i * 16 + g, n0 + wn * tn_ + j * 8 + 2 * t
                    for rr, c0 in [(row, 0), (row + 8, 2)]:
                        for cc, v in [(col, a[lane][c0]), (col + 1, a[lane][c0 + 1])]:
                            if rr >= m or cc >= n:
                                continue
                            dst = partial[split] if splits > 1 else out
                            assert np.isnan(dst[rr, cc]), "written twice"
                            dst[rr, cc] = v if splits > 1 else v + bias[cc] + res[rr, cc]
    if splits > 1:  # kiln_matmul_reduce
        out = partial.sum(0) + bias[None, :] + res
    return out


def bank_conflicts(cfg):
    """ldmatrix phases (8 lanes) whose 16-byte chunks share a bank group."""
    BM, BN, BK, WM, WN = (cfg[key] for key in ("BM", "BN", "BK", "WM", "WN"))
    ch, tm_, tn_, bad = BK // 8, BM // WM, BN // WN, 0
    for wp in range(WM * WN):
        wm, wn = divmod(wp, WN)
        for kk in range(BK // 16):
            addrs = [[swizzled(ch, wm * tm_ + (l & 15) + i * 16, 2 * kk + (l >> 4)) for l in range(32)]
                     for i in range(tm_ // 16)]
            addrs += [[swizzled(ch, wn * tn_ + (l & 7) + ((l >> 4) << 3) + jj * 16, 2 * kk + ((l >> 3) & 1))
                       for l in range(32)] for jj in range(tn_ // 16)]
            for a in addrs:
                bad += sum(len({(x // 16) % 8 for x in a[8 * p:8 * p + 8]}) != 8 for p in range(4))
    return bad


# ---- gemm_wgmma.cu --------------------------------------------------------------------------

WG_BM, WG_BN, WG_BK, WG_STAGES = 128, 256, 64, 4
WG_A_BYTES, WG_B_BYTES = WG_BM * WG_BK * 2, WG_BN * WG_BK * 2


def tma_box(smem, dst, src, row0, k0, box_rows):
    """cp.async.bulk.tensor.2d with CU_TENSOR_MAP_SWIZZLE_128B, box {64, box_rows}, zero fill."""
    rows, k = src.shape
    for r in range(box_rows):
        for c in range(WG_BK):
            b = 2 * c
            off = r * 128 + ((((b >> 4) ^ (r & 7)) << 4) | (b & 15))
            smem[(dst + off) // 2] = src[row0 + r, k0 + c] if row0 + r < rows and k0 + c < k else 0.0


def desc_read(smem, start, row, k):
    """Element (row, k) of a K-major 128B-swizzled operand, descriptor start `start`, SBO 1024."""
    u = start + (row >> 3) * 1024 + (row & 7) * 128 + 2 * k
    return smem[(u ^ (((u >> 7) & 7) << 4)) // 2]


def wgmma_m64nk16(smem, acc, sa, sb, n_cols):
    a = np.array([[desc_read(smem, sa, r, k) for k in range(16)] for r in range(64)])
    b = np.array([[desc_read(smem, sb, c, k) for k in range(16)] for c in range(n_cols)])
    d = a @ b.T
    for th in range(128):
        wp, lane = divmod(th, 32)
        g, t = lane >> 2, lane & 3
        for i in range(n_cols // 8):
            for q in range(4):
                acc[th][4 * i + q] += d[16 * wp + g + 8 * (q >> 1), 8 * i + 2 * t + (q & 1)]


def gemm_wgmma(x, w, bias, res):
    m, k = x.shape
    n = w.shape[0]
    out = np.full((m, n), np.nan)
    tiles_m, tiles_n = -(-m // WG_BM), -(-n // WG_BN)
    for pid in range(tiles_m * tiles_n):
        tm, tn = raster(pid, tiles_m, tiles_n, 8)
        m0, n0 = tm * WG_BM, tn * WG_BN
        a_base, b_base = 0, WG_STAGES * WG_A_BYTES  # 1024-aligned
        smem = np.full(WG_STAGES * (WG_A_BYTES + WG_B_BYTES) // 2, np.nan)
        acc = [[[[0.0] * 64 for _ in range(128)] for _ in range(2)] for _ in range(2)]  # [consumer][j][thread]
        for it in range(-(-k // WG_BK)):
            s = it % WG_STAGES
            tma_box(smem, a_base + s * WG_A_BYTES, x, m0, it * WG_BK, WG_BM)
            tma_box(smem, b_base + s * WG_B_BYTES, w, n0, it * WG_BK, WG_BN)
            for c in range(2):
                sa, sb = a_base + s * WG_A_BYTES + c * 64 * 128, b_base + s * WG_B_BYTES
                for kk in range(WG_BK // 16):
                    wgmma_m64nk16(smem, acc[c][0], sa + kk * 32, sb + kk * 32, 128)
                    wgmma_m64nk16(smem, acc[c][1], sa + kk * 32, sb + 128 * 128 + kk * 32, 128)
        for c in range(2):
            for th in range(128):
                wp, lane = divmod(th, 32)
                g, t = lane >> 2, lane & 3
                row = m0 + c * 64 + wp * 16 + g
                for j in range(2):
                    a = acc[c][j][th]
                    for i in range(16):
                        col = n0 + j * 128 + i * 8 + 2 * t
                        for rr, q in [(row, 0), (row + 8, 2)]:
                            for cc, v in [(col, a[4 * i + q]), (col + 1, a[4 * i + q + 1])]:
                                if rr < m and cc < n:
                                    assert np.isnan(out[rr, cc]), "written twice"
                                    out[rr, cc] = v + bias[cc] + res[rr, cc]
    return out


def main():
    rng = np.random.default_rng(7)

    def check(name, f, m, n, k):
        x, w = rng.uniform(-1, 1, (m, k)), rng.uniform(-1, 1, (n, k))
        bias, res = rng.uniform(-1, 1, n), rng.uniform(-1, 1, (m, n))
        got = f(x, w, bias, res)
        err = np.abs(got - (x @ w.T + bias[None, :] + res)).max()
        print(f"{name:<28} m={m:<4} n={n:<4} k={k:<4} max |err| {err:.1e}")
        assert not np.isnan(got).any() and err < 1e-9, name

    for cfg, name in [(LARGE, "pipe"), (SMALL, "small")]:
        bad = bank_conflicts(cfg)
        print(f"{name}: {bad} ldmatrix phases with bank conflicts")
        assert bad == 0
    check("pipe 128x128x32", lambda *a: gemm_pipe(LARGE, *a, 1, 72), 130, 136, 72)
    check("pipe 128x128x32", lambda *a: gemm_pipe(LARGE, *a, 1, 40), 9, 200, 40)
    check("small 32x64x64", lambda *a: gemm_pipe(SMALL, *a, 1, 200), 33, 70, 200)
    check("small, 3 splits of 128", lambda *a: gemm_pipe(SMALL, *a, 3, 128), 40, 130, 328)
    check("wgmma 128x256x64", gemm_wgmma, 130, 260, 136)
    check("wgmma 128x256x64", gemm_wgmma, 9, 40, 64)
    print("ok")


if __name__ == "__main__":
    main()
