//! Structured inputs of the paged KV and varlen attention cases: their tensors depend on each
//! other (page tables into a cache, context lengths and sequence boundaries that agree), so
//! each case is drawn here from a fixed seed as a whole and handed to the suite as exact u32
//! metadata plus uniform tensors.
//!
//! Page tables are random permutations of the pool (a sequence's pages are scattered), the last
//! page of a sequence is usually partial, unused table columns hold valid but unrelated pages,
//! and every cache slot outside the batch's contexts is NaN: a kernel that reads a slot it
//! should not makes the output NaN, which fails the case.

use super::*;

/// Tolerance of the tensor-core attention kernels against the f32 CPU twin. q, k, v and the
/// probabilities are rounded to bf16 (relative error <= 2^-9 each): on uniform inputs that is
/// an NMSE of a few 1e-6, so 1e-4 leaves a margin while still failing on one dropped or
/// doubled key out of a few thousand (about 2e-4 at 4096 keys).
const ATTENTION_TOL: Check = Check::Nmse(1e-4);

fn u32s(v: Vec<u32>) -> Input {
    let n = v.len();
    inp(&[n], DType::U32).fill(Fill::U32s(v))
}

/// A random permutation of 0..n.
fn permutation(rng: &mut Rng, n: usize) -> Vec<u32> {
    let mut p: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        p.swap(i, rng.below(i + 1) as usize);
    }
    p
}

/// `ReshapeAndCache` into a uniform cache: `tokens` distinct random slots, every 7th token
/// skipped (u32::MAX). The whole cache is compared, exactly.
pub fn reshape_case(
    dtype: DType,
    tokens: usize,
    kv_heads: usize,
    head_dim: usize,
    block_size: usize,
    num_blocks: usize,
    seed: u64,
) -> Case {
    let mut rng = Rng(seed);
    let slots_total = num_blocks * block_size;
    assert!(tokens <= slots_total, "more tokens than slots");
    let perm = permutation(&mut rng, slots_total);
    let slots = (0..tokens)
        .map(|t| if t % 7 == 3 { u32::MAX } else { perm[t] })
        .collect();
    case(
        Op::ReshapeAndCache,
        vec![
            inp(&[num_blocks, kv_heads, block_size, head_dim], dtype),
            inp(&[tokens, kv_heads, head_dim], dtype),
            u32s(slots),
        ],
        Check::Exact,
    )
}

/// One paged-attention batch: (new tokens, context length) per sequence.
pub struct PagedSpec {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
    pub cache: DType,
    pub causal: bool,
    pub decode_only: bool,
    pub seqs: Vec<(usize, usize)>,
}

fn paged(
    (heads, kv_heads, head_dim): (usize, usize, usize),
    block_size: usize,
    cache: DType,
    causal: bool,
    decode_only: bool,
    seqs: &[(usize, usize)],
) -> PagedSpec {
    PagedSpec {
        heads,
        kv_heads,
        head_dim,
        block_size,
        cache,
        causal,
        decode_only,
        seqs: seqs.to_vec(),
    }
}

/// Decode-only batches (the split-KV kernel; 4096 keys make it split), the same rows through
/// the general kernel, prefill, chunked prefill and prefix hits (q_len < context), mixed
/// batches; GQA 1, 3, 4, 8 and 32 (two decode head chunks); head_dim 64, 80, 96, 128 and ones
/// below a tile (72, 40) or not a multiple of 16 bytes (33, the scalar path); block size 16,
/// 1 and 4; f32 and bf16 caches; then `prefill_variant_specs`.
pub fn paged_specs() -> Vec<PagedSpec> {
    use DType::{BF16 as B, F32 as F};
    let d1 = |c: usize| (1, c);
    vec![
        paged(
            (32, 8, 128),
            16,
            B,
            true,
            true,
            &[d1(1), d1(17), d1(4096), d1(33), d1(300)],
        ),
        paged(
            (32, 8, 128),
            16,
            F,
            true,
            true,
            &[d1(1), d1(17), d1(4096), d1(33), d1(300)],
        ),
        paged(
            (8, 8, 64),
            1,
            F,
            true,
            true,
            &[d1(31), d1(32), d1(33), d1(1)],
        ),
        paged(
            (8, 8, 64),
            1,
            B,
            true,
            true,
            &[d1(31), d1(32), d1(33), d1(1)],
        ),
        paged((16, 2, 80), 16, B, true, true, &[d1(100), d1(1000)]),
        paged((24, 3, 96), 16, F, true, true, &[d1(65), d1(129), d1(2000)]),
        paged((32, 1, 64), 16, B, true, true, &[d1(77), d1(500)]),
        paged((8, 2, 40), 16, B, true, true, &[d1(9), d1(70)]),
        paged((32, 8, 128), 16, B, true, false, &[d1(50), d1(500)]),
        paged(
            (8, 2, 64),
            16,
            F,
            true,
            false,
            &[(31, 31), (33, 33), (1, 40), (5, 100), (64, 64)],
        ),
        paged(
            (32, 8, 128),
            16,
            B,
            true,
            false,
            &[(128, 128), (17, 300), (1, 77), (200, 1000)],
        ),
        paged(
            (32, 8, 128),
            16,
            F,
            true,
            false,
            &[(128, 128), (17, 300), (1, 77), (200, 1000)],
        ),
        paged((16, 2, 80), 1, B, true, false, &[(40, 40), (7, 50)]),
        paged(
            (12, 12, 96),
            16,
            F,
            false,
            false,
            &[(65, 65), (3, 3), (2, 90)],
        ),
        paged((12, 4, 96), 16, B, true, false, &[(33, 97), (64, 64)]),
        paged((8, 1, 128), 16, F, true, false, &[(100, 180)]),
        paged((4, 2, 33), 4, F, true, false, &[(9, 20), (1, 5)]),
        paged((10, 5, 72), 16, B, true, false, &[(10, 30), (1, 8)]),
        paged((32, 8, 128), 16, B, true, false, &[(512, 1536)]),
    ]
    .into_iter()
    .chain(prefill_variant_specs())
    .collect()
}

/// Lengths at and around the 64-row / 64-key tile edges, each a full prefill (q_len = ctx).
const EDGES: [usize; 9] = [1, 31, 32, 33, 64, 65, 127, 128, 129];

/// For the prefill kernels under every attention variant (the suite runs each non-decode case
/// as `attn=mma` and, on an H100, `attn=wgmma`): one batch of every edge length plus two
/// prefix hits (q_len < ctx) per head_dim 64 / 128, GQA 1 / 4 / 8, causal or not, on a bf16
/// cache; then large batches (1024 new tokens, a 1500-token context, 700 x 700 non-causal).
fn prefill_variant_specs() -> Vec<PagedSpec> {
    let mut seqs: Vec<(usize, usize)> = EDGES.iter().map(|&n| (n, n)).collect();
    seqs.extend([(17, 300), (64, 129)]);
    let mut v = Vec::new();
    for d in [64, 128] {
        for (heads, kv_heads) in [(8, 8), (16, 4), (32, 4)] {
            for causal in [true, false] {
                v.push(paged(
                    (heads, kv_heads, d),
                    16,
                    DType::BF16,
                    causal,
                    false,
                    &seqs,
                ));
            }
        }
    }
    v.push(paged(
        (16, 2, 128),
        16,
        DType::BF16,
        true,
        false,
        &[(1024, 1024), (300, 1500)],
    ));
    v.push(paged(
        (16, 4, 128),
        16,
        DType::BF16,
        false,
        false,
        &[(700, 700)],
    ));
    v
}

/// The inputs of one paged batch: q, both caches (NaN outside the contexts), block tables
/// (pages drawn from a shuffled pool with a few to spare, padding columns pointing at unrelated
/// pages), context lengths and cu_seqlens.
pub fn paged_case(spec: &PagedSpec, seed: u64) -> Case {
    let mut rng = Rng(seed);
    let bs = spec.block_size;
    let pages: Vec<usize> = spec.seqs.iter().map(|&(_, c)| c.div_ceil(bs)).collect();
    let max_blocks = pages.iter().copied().max().unwrap_or(1).max(1) + 1;
    let num_blocks = pages.iter().sum::<usize>() + 5;
    let pool = permutation(&mut rng, num_blocks);
    let mut live = vec![false; num_blocks * bs];
    let (mut tables, mut ctx, mut cu) = (Vec::new(), Vec::new(), vec![0u32]);
    let mut next = 0;
    for (&(q_len, c), &n) in spec.seqs.iter().zip(&pages) {
        let row: Vec<u32> = pool[next..next + n].to_vec();
        next += n;
        for j in 0..c {
            live[row[j / bs] as usize * bs + j % bs] = true;
        }
        tables.extend_from_slice(&row);
        tables.extend((n..max_blocks).map(|_| rng.below(num_blocks)));
        ctx.push(c as u32);
        cu.push(cu.last().unwrap() + q_len as u32);
    }
    let rows = *cu.last().unwrap() as usize;
    let seqs = spec.seqs.len();
    let cache_shape = [num_blocks, spec.kv_heads, bs, spec.head_dim];
    let cache = inp(&cache_shape, spec.cache).fill(Fill::PagedCache(live));
    let op = Op::PagedAttention {
        scale: 1.0 / (spec.head_dim as f32).sqrt(),
        causal: spec.causal,
        decode_only: spec.decode_only,
    };
    let tables = inp(&[seqs, max_blocks], DType::U32).fill(Fill::U32s(tables));
    let mut c = case(
        op,
        vec![
            inp(&[rows, spec.heads, spec.head_dim], F32),
            cache.clone(),
            cache,
            tables,
            u32s(ctx),
            u32s(cu),
        ],
        ATTENTION_TOL,
    );
    c.note = format!(" bs={bs} (q_len,ctx)={}", seq_list(&spec.seqs));
    c
}

/// "[(1,17),(5,100)]", cut short after 6 sequences.
fn seq_list(seqs: &[(usize, usize)]) -> String {
    let shown: Vec<String> = seqs
        .iter()
        .take(6)
        .map(|(a, b)| format!("({a},{b})"))
        .collect();
    let more = if seqs.len() > 6 { ",.." } else { "" };
    format!("[{}{more}]", shown.join(","))
}

/// One varlen batch: (queries, keys) per sequence.
pub struct VarlenSpec {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    causal: bool,
    seqs: Vec<(usize, usize)>,
}

/// Encoders (BERT/CLIP-like self-attention, equal lengths), Whisper-like cross-attention
/// (few queries over 1500 keys), causal with queries aligned at the end, GQA, head_dim 64,
/// 80, 96, 128 and 33 (scalar path), empty sequences on either side.
pub fn varlen_specs() -> Vec<VarlenSpec> {
    let v =
        |(heads, kv_heads, head_dim): (usize, usize, usize), causal, seqs: &[(usize, usize)]| {
            VarlenSpec {
                heads,
                kv_heads,
                head_dim,
                causal,
                seqs: seqs.to_vec(),
            }
        };
    vec![
        v(
            (12, 12, 64),
            false,
            &[(1, 1), (31, 31), (33, 33), (128, 128), (7, 7)],
        ),
        v((8, 8, 64), false, &[(10, 1500), (3, 1500)]),
        v((16, 4, 80), false, &[(20, 5), (64, 64)]),
        v((16, 16, 96), true, &[(40, 40), (5, 60)]),
        v((8, 2, 128), true, &[(200, 300), (1, 1)]),
        v((4, 4, 33), false, &[(9, 12)]),
        v((4, 2, 64), false, &[(0, 5), (5, 0), (3, 3)]),
        v((16, 16, 64), false, &[(257, 257); 8]),
        // Every tile edge, GQA 1 / 4 / 8, causal or not (also run as attn=wgmma on an H100).
        v((8, 8, 64), false, &EDGES.map(|n| (n, n))),
        v((16, 4, 128), true, &EDGES.map(|n| (n, n))),
        v((32, 4, 128), false, &EDGES.map(|n| (n, n + 7))),
        v((32, 4, 96), true, &[(129, 200), (1, 1), (64, 64)]),
        v((16, 2, 80), false, &[(65, 300), (33, 1)]),
    ]
}

pub fn varlen_case(spec: &VarlenSpec) -> Case {
    let (mut cq, mut ck) = (vec![0u32], vec![0u32]);
    for &(q, k) in &spec.seqs {
        cq.push(cq.last().unwrap() + q as u32);
        ck.push(ck.last().unwrap() + k as u32);
    }
    let (tq, tk) = (*cq.last().unwrap() as usize, *ck.last().unwrap() as usize);
    let op = Op::VarlenAttention {
        scale: 1.0 / (spec.head_dim as f32).sqrt(),
        causal: spec.causal,
    };
    let kv = inp(&[tk, spec.kv_heads, spec.head_dim], F32);
    let mut c = case(
        op,
        vec![
            inp(&[tq, spec.heads, spec.head_dim], F32),
            kv.clone(),
            kv,
            u32s(cq),
            u32s(ck),
        ],
        ATTENTION_TOL,
    );
    c.note = format!(" (q,k)={}", seq_list(&spec.seqs));
    c
}
