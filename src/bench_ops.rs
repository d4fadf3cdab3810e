//! `kiln bench-ops`: throughput of every op of the engine's op set on one device.
//!
//! Inputs are uniform in [-1, 1] (seeded), built on the CPU and moved to the device once.
//! Each case is warmed up, then timed in repetitions of several back-to-back calls, with the
//! device synchronized before every clock read; the median repetition is reported. Bytes are
//! the fewest the op must move (each input read once, the output written once), so GB/s is
//! comparable with a device-to-device copy's; matmul and attention also report TFLOP/s.

mod cases;

use anyhow::Result;
pub use cases::Size;
use cases::{build, f32s, input_dtype, specs, traffic, Fill, Spec};
use clap::Args;
use kiln_engine::backend::backend_for;
use kiln_engine::op::ALL_OPS;
use kiln_engine::{DType, Device, EngineError, Op, Tensor};
use serde_json::Value;
use std::io::Write;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct BenchOpsArgs {
    /// cpu or cuda[:N].
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Shapes to time (default: small on cpu, large elsewhere).
    #[arg(long, value_enum)]
    pub size: Option<Size>,
    /// Only these ops (comma-separated names of the op set, e.g. rmsnorm,matmul).
    #[arg(long, value_delimiter = ',')]
    pub ops: Vec<String>,
    /// Timed repetitions per case; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Wall-time budget per case in milliseconds (sets the calls per repetition).
    #[arg(long, default_value_t = 250)]
    pub budget_ms: u64,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// One JSON object per case, one per line, instead of a table.
    #[arg(long)]
    pub json: bool,
    /// List the cases (op, shapes, dtypes) without building or running them.
    #[arg(long)]
    pub list: bool,
    /// Also time each matmul case that reaches the tensor-core GEMMs (m > 8, 16-bit weights)
    /// under each of these GEMM variants (names as in KILN_GEMM, or `all` for every one this
    /// device runs); one extra row per variant, with a "variant" field. CUDA only.
    #[arg(long, value_delimiter = ',')]
    pub gemm_variants: Vec<String>,
    /// Also time each attention prefill case (paged, not decode-only; varlen) under each of
    /// these attention variants (names as in KILN_ATTN: auto, wgmma, mma, or `all` for every
    /// one this device runs); one extra row per variant, with a "variant" field. CUDA only.
    #[arg(long, value_delimiter = ',')]
    pub attn_variants: Vec<String>,
}

fn to_device(t: Tensor, device: Device) -> Result<Tensor> {
    Ok(t.to_device(device)?)
}

fn sync(device: Device) -> Result<()> {
    Ok(device.synchronize()?)
}

struct Timing {
    median: Duration,
    calls: usize,
}

/// Warm-up, one calibration call, then `reps` repetitions sized to the budget.
fn time(
    device: Device,
    reps: usize,
    budget: Duration,
    f: &mut dyn FnMut() -> Result<()>,
) -> Result<Timing> {
    f()?;
    sync(device)?;
    let t = Instant::now();
    f()?;
    sync(device)?;
    let one = t.elapsed().max(Duration::from_nanos(100));
    let reps = if one * reps as u32 > budget {
        1
    } else {
        reps.max(1)
    };
    let calls =
        (budget.as_secs_f64() / reps as f64 / one.as_secs_f64()).clamp(1.0, 10_000.0) as usize;
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        sync(device)?;
        let t0 = Instant::now();
        for _ in 0..calls {
            f()?;
        }
        sync(device)?;
        samples.push(t0.elapsed() / calls as u32);
    }
    samples.sort();
    Ok(Timing {
        median: samples[samples.len() / 2],
        calls: calls * reps,
    })
}

/// A large input (a matmul weight) kept on the device for the next cases of the same shape.
type Reuse = Option<(Vec<usize>, DType, Tensor)>;
const REUSE_ELEMS: usize = 1 << 24;

/// One case: its status and, when it ran, its figures.
fn bench_case(
    spec: &Spec,
    device: Device,
    args: &BenchOpsArgs,
    seed: u64,
    reuse: &mut Reuse,
) -> Value {
    let shapes: Vec<&Vec<usize>> = spec.inputs.iter().map(|i| &i.shape).collect();
    let dtypes: Vec<DType> = spec.inputs.iter().map(|i| input_dtype(i.fill)).collect();
    let shape: Vec<String> = shapes
        .iter()
        .map(|s| format!("{s:?}").replace(' ', ""))
        .collect();
    let dtype: Vec<String> = dtypes.iter().map(|d| d.to_string()).collect();
    let mut row = serde_json::json!({
        "op": spec.op.name(), "device": device.to_string(), "shape": shape.join("x"),
        "shapes": shapes, "dtype": dtype.join(","), "median_us": null, "gb_s": null,
        "tflop_s": null, "bytes": null, "flops": null,
    });
    if let Op::Cast { to } = &spec.op {
        row["dtype"] = format!("{}->{to}", dtypes[0]).into();
    }
    if args.list {
        row["status"] = "listed".into();
        return row;
    }
    let backend = backend_for(device);
    if !backend.supports(&spec.op, &dtypes) {
        let why = format!("{} has no kernel for {}", backend.name(), dtype.join(","));
        row["status"] = format!("unsupported({why})").into();
        return row;
    }
    match run_case(spec, device, args, seed, reuse) {
        Ok((timing, bytes, flops)) => {
            let s = timing.median.as_secs_f64();
            row["median_us"] = (s * 1e6).into();
            row["bytes"] = bytes.into();
            row["gb_s"] = (bytes / s / 1e9).into();
            if flops > 0.0 {
                row["flops"] = flops.into();
                row["tflop_s"] = (flops / s / 1e12).into();
            }
            row["calls"] = timing.calls.into();
            row["status"] = "ok".into();
        }
        Err(err) => {
            let msg = format!("{err:#}").replace(['(', ')', '\n'], " ");
            let unsupported = matches!(err.downcast_ref(), Some(EngineError::Unsupported { .. }));
            let kind = if unsupported { "unsupported" } else { "error" };
            row["status"] = format!("{kind}({})", msg.trim()).into();
        }
    }
    row
}

fn run_case(
    spec: &Spec,
    device: Device,
    args: &BenchOpsArgs,
    seed: u64,
    reuse: &mut Reuse,
) -> Result<(Timing, f64, f64)> {
    let mut inputs = Vec::with_capacity(spec.inputs.len());
    for (i, input) in spec.inputs.iter().enumerate() {
        let dtype = input_dtype(input.fill);
        // Only the matmul weight is shared between cases: reusing any same-shaped tensor
        // once fed `add` the same buffer twice, and its one DRAM read showed up as 137% of
        // the copy ceiling (ncu: 134 MB read for two 134 MB inputs).
        let weight = matches!(spec.op, Op::Matmul { .. }) && i == 1;
        if let (true, Some((shape, d, t))) = (weight, reuse.as_ref()) {
            if *shape == input.shape && *d == dtype {
                inputs.push(t.clone());
                continue;
            }
        }
        let t = to_device(build(input, seed.wrapping_add(i as u64 * 7919))?, device)?;
        if weight && t.elem_count() >= REUSE_ELEMS && matches!(input.fill, Fill::Uniform(_)) {
            *reuse = None; // free the previous one first
            *reuse = Some((input.shape.clone(), dtype, t.clone()));
        }
        inputs.push(t);
    }
    let mut dst = match &spec.dst {
        Some(shape) => Some(to_device(build(&f32s(shape), seed ^ 0xA5A5)?, device)?),
        None => None,
    };
    let (bytes, flops) = traffic(&spec.op, &inputs, dst.as_ref())?;
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let backend = backend_for(device);
    let budget = Duration::from_millis(args.budget_ms.max(1));
    let timing = time(device, args.reps, budget, &mut || {
        match dst.as_mut() {
            Some(d) => backend.execute_inplace(&spec.op, d, &refs)?,
            None => drop(backend.execute(&spec.op, &refs)?),
        }
        Ok(())
    })?;
    Ok((timing, bytes, flops))
}

fn print_row(out: &mut impl Write, json: bool, row: &Value) -> Result<()> {
    if json {
        writeln!(out, "{row}")?;
    } else {
        let text = |k: &str| row[k].as_str().unwrap_or("-").to_string();
        let num = |k: &str, d: usize| row[k].as_f64().map_or("-".into(), |x| format!("{x:.d$}"));
        let (op, shape, dtype, status) = (text("op"), text("shape"), text("dtype"), text("status"));
        let op = match row["variant"].as_str() {
            Some(v) => format!("{op}[{v}]"),
            None => op,
        };
        let (us, gbs, tfs) = (num("median_us", 1), num("gb_s", 1), num("tflop_s", 3));
        writeln!(
            out,
            "{op:<10} {shape:<34} {dtype:<12} {us:>11} {gbs:>8} {tfs:>8}  {status}"
        )?;
    }
    Ok(out.flush()?)
}

pub fn bench_ops(args: BenchOpsArgs) -> Result<()> {
    let device = Device::parse(&args.device)?;
    let default_size = if device == Device::Cpu {
        Size::Small
    } else {
        Size::Large
    };
    let size = args.size.unwrap_or(default_size);
    for name in &args.ops {
        let known = ALL_OPS.contains(&name.as_str());
        anyhow::ensure!(
            known,
            "--ops: unknown op {name:?} (the op set: {})",
            ALL_OPS.join(", ")
        );
    }
    if !args.list {
        // Fail once, with the engine's own words, when the device cannot be used at all.
        to_device(Tensor::from_vec(vec![0f32; 4], &[4])?, device)?;
        sync(device)?;
    }
    let mut out = std::io::stdout().lock();
    if !args.json {
        let head = ("op", "shape", "dtype", "median_us", "GB/s", "TFLOP/s");
        writeln!(
            out,
            "{:<10} {:<34} {:<12} {:>11} {:>8} {:>8}  status",
            head.0, head.1, head.2, head.3, head.4, head.5
        )?;
    }
    let variants = gemm_variants(&args.gemm_variants, device)?;
    let attn = attn_variants(&args.attn_variants, device)?;
    let (mut failed, mut reuse) = (false, None);
    for (index, name) in ALL_OPS.iter().enumerate() {
        if !args.ops.is_empty() && !args.ops.iter().any(|o| o == name) {
            continue;
        }
        let cases = specs(name, size);
        if cases.is_empty() {
            let status = "unsupported(no bench case for this op)";
            let row =
                serde_json::json!({"op": name, "device": device.to_string(), "status": status});
            print_row(&mut out, args.json, &row)?;
        }
        for (ci, spec) in cases.iter().enumerate() {
            let seed = args
                .seed
                .wrapping_mul(1_000_003)
                .wrapping_add((index * 100 + ci) as u64);
            let row = bench_case(spec, device, &args, seed, &mut reuse);
            failed |= row["status"]
                .as_str()
                .is_some_and(|s| s.starts_with("error"));
            print_row(&mut out, args.json, &row)?;
            let (kind, names): (Kind, &[String]) = if reaches_gemm(spec) {
                (Kind::Gemm, &variants)
            } else if reaches_attn_prefill(spec) {
                (Kind::Attn, &attn)
            } else {
                (Kind::Gemm, &[])
            };
            for v in names {
                let row = variant_row(spec, device, &args, seed, &mut reuse, kind, v)?;
                failed |= row["status"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("error"));
                print_row(&mut out, args.json, &row)?;
            }
        }
        reuse = None;
    }
    anyhow::ensure!(!failed, "some ops failed (status error)");
    Ok(())
}

/// A matmul case the tensor-core GEMM variants serve: m > 8 and 16-bit weights.
fn reaches_gemm(spec: &Spec) -> bool {
    let rows = |s: &[usize]| s[..s.len().saturating_sub(1)].iter().product::<usize>();
    matches!(spec.op, Op::Matmul { .. })
        && spec.inputs.len() >= 2
        && rows(&spec.inputs[0].shape) > 8
        && matches!(input_dtype(spec.inputs[1].fill), DType::BF16 | DType::F16)
}

/// A prefill attention case (paged, not decode-only; varlen): the kernels the attention
/// variants choose between.
fn reaches_attn_prefill(spec: &Spec) -> bool {
    matches!(
        spec.op,
        Op::PagedAttention {
            decode_only: false,
            ..
        } | Op::VarlenAttention { .. }
    )
}

/// Which variant switch a row forces.
#[derive(Clone, Copy)]
enum Kind {
    Gemm,
    Attn,
}

/// The variants `--attn-variants` names (`all`: every one the device runs), checked up front.
#[cfg(feature = "cuda")]
fn attn_variants(names: &[String], device: Device) -> Result<Vec<String>> {
    use kiln_engine::backend::cuda::{attn_variants, attn_wgmma_unavailable, AttnVariant};
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let Device::Cuda(ordinal) = device else {
        anyhow::bail!("--attn-variants: the attention variants are CUDA kernels (--device cuda)");
    };
    if let Some(why) = attn_wgmma_unavailable(ordinal)? {
        eprintln!("--attn-variants: {why}");
    }
    if names.iter().any(|n| n == "all") {
        return Ok(attn_variants(ordinal)?
            .iter()
            .map(|v| v.name().to_string())
            .collect());
    }
    for n in names {
        anyhow::ensure!(
            AttnVariant::parse(n).is_some(),
            "--attn-variants: unknown variant {n:?} (auto, wgmma, mma, all)"
        );
    }
    Ok(names.to_vec())
}

#[cfg(not(feature = "cuda"))]
fn attn_variants(names: &[String], _device: Device) -> Result<Vec<String>> {
    anyhow::ensure!(
        names.is_empty(),
        "--attn-variants: this build of kiln has no CUDA backend"
    );
    Ok(Vec::new())
}

/// The variants `--gemm-variants` names (`all`: every one the device runs), checked up front.
#[cfg(feature = "cuda")]
fn gemm_variants(names: &[String], device: Device) -> Result<Vec<String>> {
    use kiln_engine::backend::cuda::{gemm_variants, GemmVariant};
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let Device::Cuda(ordinal) = device else {
        anyhow::bail!("--gemm-variants: the GEMM variants are CUDA kernels (--device cuda)");
    };
    if names.iter().any(|n| n == "all") {
        return Ok(gemm_variants(ordinal)?
            .iter()
            .map(|v| v.name().to_string())
            .collect());
    }
    for n in names {
        anyhow::ensure!(
            GemmVariant::parse(n).is_some(),
            "--gemm-variants: unknown variant {n:?} (auto, wgmma, mma_pipe, mma_small, mma_simple, all)"
        );
    }
    Ok(names.to_vec())
}

#[cfg(not(feature = "cuda"))]
fn gemm_variants(names: &[String], _device: Device) -> Result<Vec<String>> {
    anyhow::ensure!(
        names.is_empty(),
        "--gemm-variants: this build of kiln has no CUDA backend"
    );
    Ok(Vec::new())
}

/// One case timed under GEMM or attention variant `name` (forced for the duration of the case).
fn variant_row(
    spec: &Spec,
    device: Device,
    args: &BenchOpsArgs,
    seed: u64,
    reuse: &mut Reuse,
    kind: Kind,
    name: &str,
) -> Result<Value> {
    set_variant(kind, Some(name))?;
    let mut row = bench_case(spec, device, args, seed, reuse);
    set_variant(kind, None)?;
    row["variant"] = name.into();
    Ok(row)
}

#[cfg(feature = "cuda")]
fn set_variant(kind: Kind, name: Option<&str>) -> Result<()> {
    use kiln_engine::backend::cuda::{
        set_attn_variant, set_gemm_variant, AttnVariant, GemmVariant,
    };
    match kind {
        Kind::Gemm => set_gemm_variant(match name {
            Some(n) => Some(
                GemmVariant::parse(n)
                    .ok_or_else(|| anyhow::anyhow!("unknown GEMM variant {n:?}"))?,
            ),
            None => None,
        }),
        Kind::Attn => set_attn_variant(match name {
            Some(n) => Some(
                AttnVariant::parse(n)
                    .ok_or_else(|| anyhow::anyhow!("unknown attention variant {n:?}"))?,
            ),
            None => None,
        }),
    }
    Ok(())
}

#[cfg(not(feature = "cuda"))]
fn set_variant(_kind: Kind, _name: Option<&str>) -> Result<()> {
    Ok(())
}
