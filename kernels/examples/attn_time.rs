//! Attention timing by CPU time (robust to other processes on a shared machine):
//! `cargo run --release -p kiln-kernels --example attn_time -- [encoder|prefill|decode] [iters]`.
mod common;

use common::{cpu_ns, data};
use kiln_kernels::cpu::attention::{attention, AttentionParams};
use kiln_kernels::cpu::paged_attention::{
    paged_attention, reshape_and_cache, CacheShape, PagedAttentionParams, PagedBatch,
};
use kiln_kernels::cpu::varlen_attention::{varlen_attention, VarlenAttentionParams, VarlenBatch};
use std::time::Instant;

fn time(name: &str, iters: usize, flops: f64, mut f: impl FnMut()) {
    f();
    let (w, c) = (Instant::now(), cpu_ns());
    for _ in 0..iters {
        f();
    }
    let (w, c) = (w.elapsed().as_secs_f64(), (cpu_ns() - c) as f64 * 1e-9);
    println!(
        "{name}: {:.3} ms wall/iter, {:.3} ms cpu/iter, {:.1} GFLOP/s wall, {:.1} GFLOP/cpu-s",
        w * 1e3 / iters as f64,
        c * 1e3 / iters as f64,
        flops * iters as f64 / w / 1e9,
        flops * iters as f64 / c / 1e9
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let what = args.get(1).map(|s| s.as_str()).unwrap_or("encoder");
    let iters: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    match what {
        "encoder" => {
            let (seqs, len, heads, d) = (8, 502, 12, 32);
            let n = seqs * len * heads * d;
            let (q, k, v) = (data(n, 21), data(n, 22), data(n, 23));
            let mut o = vec![0f32; n];
            let cu: Vec<u32> = (0..=seqs).map(|s| (s * len) as u32).collect();
            let batch = VarlenBatch {
                cu_seqlens_q: &cu,
                cu_seqlens_k: &cu,
            };
            let p = VarlenAttentionParams {
                num_heads: heads,
                num_kv_heads: heads,
                head_dim: d,
                scale: 0.17,
                causal: false,
            };
            let flops = (seqs * len * len * heads * d * 4) as f64;
            time("encoder 8x502 h12 d32", iters, flops, || {
                varlen_attention(&q, &k, &v, &mut o, &batch, p)
            });
        }
        "prefill" => {
            let (len, heads, kvh, d) = (512, 9, 3, 64);
            let p = AttentionParams {
                q_len: len,
                kv_len: len,
                num_heads: heads,
                num_kv_heads: kvh,
                head_dim: d,
                scale: 0.125,
                causal: true,
            };
            let q = data(len * heads * d, 24);
            let (k, v) = (data(len * kvh * d, 25), data(len * kvh * d, 26));
            let mut o = vec![0f32; q.len()];
            let flops = ((1..=len).sum::<usize>() * heads * d * 4) as f64;
            time("causal prefill 512 h9/3 d64", iters, flops, || {
                attention(&q, &k, &v, &mut o, p)
            });
        }
        _ => {
            let (seqs, ctx, heads, kvh, d, bs) = (32usize, 192usize, 9, 3, 64, 16usize);
            let pages = ctx.div_ceil(bs);
            let shape = CacheShape {
                num_blocks: seqs * pages * 2,
                num_kv_heads: kvh,
                block_size: bs,
                head_dim: d,
            };
            let (mut kc, mut vc) = (vec![0f32; shape.len()], vec![0f32; shape.len()]);
            let tables: Vec<u32> = (0..seqs * pages)
                .map(|i| ((i * 7919) % (seqs * pages * 2)) as u32)
                .collect();
            for s in 0..seqs {
                let slots: Vec<u32> = (0..ctx)
                    .map(|j| tables[s * pages + j / bs] * bs as u32 + (j % bs) as u32)
                    .collect();
                reshape_and_cache(&data(ctx * kvh * d, 30 + s as u32), &slots, &mut kc, shape)
                    .unwrap();
                reshape_and_cache(&data(ctx * kvh * d, 90 + s as u32), &slots, &mut vc, shape)
                    .unwrap();
            }
            let q = data(seqs * heads * d, 5);
            let mut o = vec![0f32; q.len()];
            let ctxs = vec![ctx as u32; seqs];
            let cu: Vec<u32> = (0..=seqs as u32).collect();
            let batch = PagedBatch {
                block_tables: &tables,
                context_lens: &ctxs,
                cu_seqlens: &cu,
            };
            let p = PagedAttentionParams {
                num_heads: heads,
                cache: shape,
                max_blocks: pages,
                scale: 0.125,
                causal: true,
                decode_only: true,
            };
            batch.validate(seqs, &p).unwrap();
            let flops = (seqs * ctx * heads * d * 4) as f64;
            time("paged decode b32 ctx192 h9/3 d64", iters, flops, || {
                paged_attention(&q, &kc, &vc, &mut o, &batch, p)
            });
            let k16: Vec<half::bf16> = kc.iter().map(|&x| half::bf16::from_f32(x)).collect();
            let v16: Vec<half::bf16> = vc.iter().map(|&x| half::bf16::from_f32(x)).collect();
            time(
                "paged decode bf16 b32 ctx192 h9/3 d64",
                iters,
                flops,
                || paged_attention(&q, &k16, &v16, &mut o, &batch, p),
            );
        }
    }
}
