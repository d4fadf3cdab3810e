//! Compiles `cuda/*.cu` to fatbins when the `cuda` feature is on (nothing otherwise, so the
//! CPU-only build stays fast and needs no CUDA). Each module gets SASS for sm_80, sm_89 and
//! sm_90a plus compute_80 PTX (for newer cards, JIT-compiled by the driver). The fatbins are
//! embedded through a generated table (`OUT_DIR/cuda_modules.rs`, included by `src/cuda.rs`)
//! together with the per-kernel resource usage parsed from `-Xptxas -v`, which is also saved
//! to `OUT_DIR/ptxas-report.txt` and `<target>/ptxas-report.txt` for people to read.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;

/// (nvcc -gencode value, SASS arch recorded in the table; None for the PTX-only entry).
const GENCODES: &[(&str, Option<u32>)] = &[
    ("arch=compute_80,code=sm_80", Some(80)),
    ("arch=compute_89,code=sm_89", Some(89)),
    // The `a` target enables wgmma/setmaxnreg; the -gencode form is the one that works on 13.0.
    ("arch=compute_90a,code=sm_90a", Some(90)),
    ("arch=compute_80,code=compute_80", None),
];

const FLAGS: &[&str] = &[
    "-fatbin",
    "-O3",
    "-std=c++17",
    "--expt-relaxed-constexpr",
    "-Xptxas",
    "-v",
];

const ENV_VARS: &[&str] = &[
    "NVCC",
    "CUDA_HOME",
    "CUDA_PATH",
    "PATH",
    "CARGO_TARGET_DIR",
    "KILN_NVCC_CACHE",
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    for var in ENV_VARS {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let manifest_dir = PathBuf::from(env_or_panic("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env_or_panic("OUT_DIR"));
    let workspace = manifest_dir.parent().unwrap_or(&manifest_dir).to_path_buf();
    let cuda_dir = manifest_dir.join("cuda");
    println!("cargo:rerun-if-changed={}", cuda_dir.display());

    let nvcc = find_nvcc(&workspace);
    let (sources, headers) = list_sources(&cuda_dir);
    let target_dir = target_dir(&out_dir, &workspace);
    let cache = FatbinCache::new(&nvcc, &headers, &target_dir);
    let modules = compile_all(&nvcc, &cuda_dir, &out_dir, &sources, &cache);

    let mut report = String::new();
    for m in &modules {
        let _ = writeln!(
            report,
            "== module {} ({})\n{}",
            m.name,
            m.source.display(),
            m.log
        );
    }
    write_file(&out_dir.join("ptxas-report.txt"), &report);
    if fs::create_dir_all(&target_dir).is_ok() {
        // A convenience copy; the build does not depend on it.
        let _ = fs::write(target_dir.join("ptxas-report.txt"), &report);
    }
    write_file(&out_dir.join("cuda_modules.rs"), &generate_table(&modules));
}

fn env_or_panic(name: &str) -> String {
    env::var(name).unwrap_or_else(|_| panic!("kiln-kernels build: cargo did not set {name}"))
}

/// Looks for nvcc in the documented order; fails the build listing every place it looked.
fn find_nvcc(workspace: &Path) -> PathBuf {
    if let Some(explicit) = env::var_os("NVCC") {
        let p = PathBuf::from(explicit);
        if p.is_file() {
            return p;
        }
        panic!("kiln-kernels build: NVCC={} is not a file", p.display());
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    let mut unset = vec!["$NVCC"];
    for (var, label) in [("CUDA_HOME", "$CUDA_HOME"), ("CUDA_PATH", "$CUDA_PATH")] {
        match env::var_os(var) {
            Some(root) => candidates.push(PathBuf::from(root).join("bin").join("nvcc")),
            None => unset.push(label),
        }
    }
    if let Some(path) = env::var_os("PATH") {
        candidates.extend(env::split_paths(&path).map(|d| d.join("nvcc")));
    }
    candidates.push(PathBuf::from("/usr/local/cuda/bin/nvcc"));
    candidates.push(workspace.join(".cuda-toolchain").join("bin").join("nvcc"));
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return found.clone();
    }
    let looked: Vec<String> = candidates
        .iter()
        .map(|p| format!("  {}", p.display()))
        .collect();
    panic!(
        "kiln-kernels build: the `cuda` feature needs nvcc, and none was found.\n\
         Looked at ({} unset):\n{}\n\
         Install one with scripts/install-cuda-toolchain.sh, or set NVCC or CUDA_HOME.",
        unset.join(", "),
        looked.join("\n")
    );
}

/// The `.cu` files (one module each) and the `.cuh` headers they may include, sorted.
fn list_sources(cuda_dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let entries = fs::read_dir(cuda_dir).unwrap_or_else(|e| {
        panic!(
            "kiln-kernels build: cannot read {}: {e}",
            cuda_dir.display()
        )
    });
    let (mut sources, mut headers) = (Vec::new(), Vec::new());
    for entry in entries.flatten() {
        let path = entry.path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("cu") => sources.push(path),
            Some("cuh") => headers.push(path),
            _ => continue,
        }
        println!("cargo:rerun-if-changed={}", entry.path().display());
    }
    sources.sort();
    headers.sort();
    (sources, headers)
}

/// Fatbins and ptxas logs of earlier builds in `<target>/nvcc-cache`, keyed by a hash of
/// everything nvcc sees: the source, every header, the flags, and nvcc's path and version.
/// Cargo runs this script once per profile (clippy's check build, the test build and the
/// release build each get their own OUT_DIR), and each run used to recompile every module
/// (~2.5 CPU-minutes); with the cache only the first does. `KILN_NVCC_CACHE=0` turns it off.
struct FatbinCache {
    dir: Option<PathBuf>,
    salt: u64,
}

impl FatbinCache {
    fn new(nvcc: &Path, headers: &[PathBuf], target_dir: &Path) -> FatbinCache {
        let off = env::var("KILN_NVCC_CACHE").is_ok_and(|v| v == "0");
        let dir = target_dir.join("nvcc-cache");
        let dir = (!off && fs::create_dir_all(&dir).is_ok()).then_some(dir);
        let version = Command::new(nvcc)
            .arg("--version")
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default();
        let mut h = fnv1a(FNV_SEED, nvcc.as_os_str().as_encoded_bytes());
        h = fnv1a(h, &version);
        for part in FLAGS.iter().chain(GENCODES.iter().map(|(g, _)| g)) {
            h = fnv1a(fnv1a(h, part.as_bytes()), b"\0");
        }
        for header in headers {
            h = fnv1a(h, header.as_os_str().as_encoded_bytes());
            h = fnv1a(h, &fs::read(header).unwrap_or_default());
        }
        FatbinCache { dir, salt: h }
    }

    /// (fatbin, log) paths of module `name` built from `code`; None when the cache is off.
    fn entry(&self, name: &str, code: &str) -> Option<(PathBuf, PathBuf)> {
        let dir = self.dir.as_ref()?;
        let key = fnv1a(fnv1a(self.salt, name.as_bytes()), code.as_bytes());
        let stem = format!("{name}-{key:016x}");
        Some((
            dir.join(format!("{stem}.fatbin")),
            dir.join(format!("{stem}.log")),
        ))
    }

    /// The cached log, after copying the cached fatbin to `fatbin`; None on a miss.
    fn get(&self, name: &str, code: &str, fatbin: &Path) -> Option<String> {
        let (cached, log) = self.entry(name, code)?;
        let log = fs::read_to_string(log).ok()?;
        fs::copy(cached, fatbin).ok()?;
        Some(log)
    }

    /// Stores a fresh build (best effort: a failure only costs the next build its hit) and
    /// removes older builds of the same module.
    fn put(&self, name: &str, code: &str, fatbin: &Path, log: &str) {
        let (Some(dir), Some((cached, cached_log))) = (self.dir.as_ref(), self.entry(name, code))
        else {
            return;
        };
        if let Ok(entries) = fs::read_dir(dir) {
            let prefix = format!("{name}-");
            for e in entries.flatten() {
                let file = e.file_name().to_string_lossy().into_owned();
                let stale = file.strip_prefix(&prefix).is_some_and(|rest| {
                    rest.len() > 16 && rest.as_bytes()[..16].iter().all(u8::is_ascii_hexdigit)
                });
                if stale {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        // The log last, written through a rename: `get` trusts an entry once its log exists.
        let tmp = cached_log.with_extension(format!("log.tmp{}", std::process::id()));
        if fs::copy(fatbin, &cached).is_ok()
            && fs::write(&tmp, log).is_ok()
            && fs::rename(&tmp, &cached_log).is_ok()
        {
            return;
        }
        let _ = fs::remove_file(&tmp);
    }
}

const FNV_SEED: u64 = 0xcbf2_9ce4_8422_2325;

/// 64-bit FNV-1a: stable across Rust releases (unlike `DefaultHasher`), so cache keys are too.
fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

struct Module {
    name: String,
    source: PathBuf,
    fatbin: PathBuf,
    kernels: Vec<String>,
    log: String,
    resources: Vec<Resources>,
}

struct Resources {
    kernel: String,
    arch: u32,
    registers: u32,
    spill_stores: u32,
    spill_loads: u32,
    stack_frame: u32,
}

/// One nvcc per source file, all at once: nvcc is single-threaded per gencode and most of
/// the time goes to cicc/ptxas, so files are the natural unit of parallelism.
fn compile_all(
    nvcc: &Path,
    cuda_dir: &Path,
    out_dir: &Path,
    sources: &[PathBuf],
    cache: &FatbinCache,
) -> Vec<Module> {
    let results: Vec<Result<Module, String>> = thread::scope(|s| {
        let handles: Vec<_> = sources
            .iter()
            .map(|src| s.spawn(move || compile_one(nvcc, cuda_dir, out_dir, src, cache)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("an nvcc worker thread panicked".into()))
            })
            .collect()
    });
    let mut modules = Vec::new();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(m) => modules.push(m),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        panic!(
            "kiln-kernels build: CUDA compilation failed\n{}",
            errors.join("\n")
        );
    }
    modules
}

fn compile_one(
    nvcc: &Path,
    cuda_dir: &Path,
    out_dir: &Path,
    src: &Path,
    cache: &FatbinCache,
) -> Result<Module, String> {
    let name = src
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| format!("{}: file name is not UTF-8", src.display()))?
        .to_string();
    let code = fs::read_to_string(src).map_err(|e| format!("{}: {e}", src.display()))?;
    let kernels = kernel_symbols(&code);
    if kernels.is_empty() {
        return Err(format!(
            "{}: no extern \"C\" __global__ kernels",
            src.display()
        ));
    }
    let fatbin = out_dir.join(format!("{name}.fatbin"));
    let log = match cache.get(&name, &code, &fatbin) {
        Some(log) => log,
        None => {
            let log = run_nvcc(nvcc, cuda_dir, src, &fatbin)?;
            cache.put(&name, &code, &fatbin, &log);
            log
        }
    };
    let resources = parse_ptxas(&log);
    for k in &kernels {
        for (_, arch) in GENCODES {
            if let Some(arch) = arch {
                if !resources.iter().any(|r| &r.kernel == k && r.arch == *arch) {
                    return Err(format!(
                        "{}: kernel {k} has no ptxas report for sm_{arch}",
                        src.display()
                    ));
                }
            }
        }
    }
    Ok(Module {
        name,
        source: src.to_path_buf(),
        fatbin,
        kernels,
        log,
        resources,
    })
}

/// One nvcc run: `src` to `fatbin`; returns nvcc's output (the ptxas report).
fn run_nvcc(nvcc: &Path, cuda_dir: &Path, src: &Path, fatbin: &Path) -> Result<String, String> {
    let mut cmd = Command::new(nvcc);
    cmd.args(FLAGS);
    for (gencode, _) in GENCODES {
        cmd.arg(format!("-gencode={gencode}"));
    }
    cmd.arg("-I").arg(cuda_dir).arg("-o").arg(fatbin).arg(src);
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {}: {e}", nvcc.display()))?;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(format!(
            "nvcc failed on {} ({}):\n{log}",
            src.display(),
            out.status
        ));
    }
    Ok(log)
}

/// Names of `extern "C" __global__` functions: the symbols a launcher looks up.
fn kernel_symbols(code: &str) -> Vec<String> {
    let mut names = Vec::new();
    let marker = "extern \"C\" __global__";
    let mut rest = code;
    while let Some(at) = rest.find(marker) {
        rest = &rest[at + marker.len()..];
        // `... void [__launch_bounds__(..)] name(`: the identifier just before the first '('
        // that is not part of __launch_bounds__.
        let head = rest.split('{').next().unwrap_or("");
        let head = match head.find("__launch_bounds__") {
            Some(lb) => head[lb..].split_once(')').map_or("", |(_, t)| t),
            None => head,
        };
        if let Some((before, _)) = head.split_once('(') {
            if let Some(ident) = before.split_whitespace().last() {
                names.push(ident.to_string());
            }
        }
    }
    names
}

/// Parses nvcc's `-Xptxas -v` lines:
///   ptxas info    : Compiling entry function 'NAME' for 'sm_90a'
///   ptxas info    : Function properties for NAME
///       0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
///   ptxas info    : Used 28 registers, used 0 barriers, ...
fn parse_ptxas(log: &str) -> Vec<Resources> {
    let mut out: Vec<Resources> = Vec::new();
    let mut current_props_for = String::new();
    for line in log.lines() {
        let line = line.trim();
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let mut parts = rest.split('\'');
            let kernel = parts.next().unwrap_or("").to_string();
            let arch = parts
                .nth(1)
                .and_then(|a| a.strip_prefix("sm_"))
                .map(|a| a.trim_end_matches(|c: char| c.is_ascii_alphabetic()))
                .and_then(|a| a.parse().ok())
                .unwrap_or(0);
            out.push(Resources {
                kernel,
                arch,
                registers: 0,
                spill_stores: 0,
                spill_loads: 0,
                stack_frame: 0,
            });
        } else if let Some(rest) = line.split("Function properties for ").nth(1) {
            current_props_for = rest.trim().to_string();
        } else if line.contains("bytes stack frame") {
            // Properties of a non-inlined device function belong to no entry row.
            if let Some(r) = out.last_mut().filter(|r| r.kernel == current_props_for) {
                r.stack_frame = number_before(line, "bytes stack frame");
                r.spill_stores = number_before(line, "bytes spill stores");
                r.spill_loads = number_before(line, "bytes spill loads");
            }
        } else if let Some(rest) = line.split("Used ").nth(1) {
            if let (Some(r), Some(n)) = (out.last_mut(), registers(rest)) {
                r.registers = n;
            }
        }
    }
    out
}

/// "28 registers, used 0 barriers" -> 28.
fn registers(rest: &str) -> Option<u32> {
    let (n, tail) = rest.split_once(' ')?;
    if tail.starts_with("registers") {
        n.parse().ok()
    } else {
        None
    }
}

/// The integer just before `label` in `line` ("12 bytes spill stores" -> 12); 0 if absent.
fn number_before(line: &str, label: &str) -> u32 {
    line.split(',')
        .find(|part| part.contains(label))
        .and_then(|part| part.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn generate_table(modules: &[Module]) -> String {
    let archs: Vec<String> = GENCODES
        .iter()
        .filter_map(|(_, a)| a.map(|a| a.to_string()))
        .collect();
    let mut s = String::from("// @generated by kernels/build.rs from cuda/*.cu\n\n");
    for (i, m) in modules.iter().enumerate() {
        let _ = writeln!(
            s,
            "static FATBIN_{i}: &Aligned<[u8]> = &Aligned(*include_bytes!({:?}));",
            m.fatbin.display().to_string()
        );
    }
    s.push_str("\nstatic MODULES: &[CudaModule] = &[\n");
    for (i, m) in modules.iter().enumerate() {
        let kernels: Vec<String> = m.kernels.iter().map(|k| format!("{k:?}")).collect();
        let _ = writeln!(
            s,
            "    CudaModule {{ name: {:?}, fatbin: &FATBIN_{i}.0, kernels: &[{}], archs: &[{}] }},",
            m.name,
            kernels.join(", "),
            archs.join(", ")
        );
    }
    s.push_str("];\n\nstatic RESOURCES: &[KernelResources] = &[\n");
    for m in modules {
        for r in &m.resources {
            let _ = writeln!(
                s,
                "    KernelResources {{ module: {:?}, kernel: {:?}, arch: {}, registers: {}, \
                 spill_stores: {}, spill_loads: {}, stack_frame: {} }},",
                m.name, r.kernel, r.arch, r.registers, r.spill_stores, r.spill_loads, r.stack_frame
            );
        }
    }
    s.push_str("];\n");
    s
}

/// Where `target/ptxas-report.txt` goes: $CARGO_TARGET_DIR, else the ancestor of OUT_DIR that
/// cargo marked with CACHEDIR.TAG (the target directory), else `<workspace>/target`.
fn target_dir(out_dir: &Path, workspace: &Path) -> PathBuf {
    if let Some(dir) = env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        return if dir.is_absolute() {
            dir
        } else {
            workspace.join(dir)
        };
    }
    out_dir
        .ancestors()
        .find(|a| a.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| workspace.join("target"))
}

fn write_file(path: &Path, contents: &str) {
    fs::write(path, contents)
        .unwrap_or_else(|e| panic!("kiln-kernels build: cannot write {}: {e}", path.display()));
}
