//! Drift guard: the committed include/kiln.h and the library cannot disagree.
//!
//! bindgen (libclang loaded at run time; installed from PyPI by scripts/install-libclang.sh
//! when the machine has none) parses kiln.h. A second route that does not use bindgen parses
//! the Rust sources (src/*.rs) with syn. The test checks that
//! - every function the header declares is an exported `#[no_mangle] extern "C"` function
//!   with the same parameter names and types and the same return type, and the other way
//!   round;
//! - the built libkiln.so exports exactly the header's functions among its `kiln_*` symbols
//!   (`nm -D --defined-only`);
//! - kiln_options has the same fields, types, offsets and size; kiln_status the same values;
//!   kiln_stream_callback the same type; KILN_ABI_VERSION the library's;
//! - every declaration in the header has a doc comment.
//!
//! Without libclang (and no way to install it) the test fails: it never passes silently.

mod common;

use common::{built, ffi_dir, repo};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use syn::{FnArg, Item, Pat, ReturnType, Type};

/// The directory holding libclang.so: $LIBCLANG_PATH when it has one, else the project-local
/// install (running scripts/install-libclang.sh when it is missing).
fn libclang_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("LIBCLANG_PATH") {
        let dir = PathBuf::from(dir);
        if dir.join("libclang.so").is_file() {
            return dir;
        }
    }
    let script = repo().join("scripts/install-libclang.sh");
    let out = Command::new(&script)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "\n*** the header drift test needs libclang and could not install it ***\n{} \
         failed:\n{}\n(install libclang.so and set LIBCLANG_PATH to its directory)",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert!(
        dir.join("libclang.so").is_file(),
        "no libclang.so in {}",
        dir.display()
    );
    dir
}

/// bindgen's Rust for kiln.h.
fn bindgen_output() -> String {
    let dir = libclang_dir();
    // clang-sys reads LIBCLANG_PATH when bindgen loads libclang; this test binary holds one
    // test, so nothing else reads the environment meanwhile.
    std::env::set_var("LIBCLANG_PATH", &dir);
    // The PyPI libclang has no resource headers (stddef.h): use the C compiler's.
    let cc_include = Command::new("cc")
        .arg("-print-file-name=include")
        .output()
        .expect("cc -print-file-name=include");
    let cc_include = String::from_utf8(cc_include.stdout).unwrap();
    bindgen::Builder::default()
        .header(ffi_dir().join("include/kiln.h").to_str().unwrap())
        .clang_arg(format!("-I{}", cc_include.trim()))
        .clang_arg("-std=c11")
        .allowlist_item("(kiln|KILN)_.*")
        .prepend_enum_name(false)
        .generate_comments(true)
        .layout_tests(true)
        .generate()
        .expect("bindgen could not parse include/kiln.h")
        .to_string()
}

/// A type as text with paths cut to their last segment (`::std::os::raw::c_char` and
/// `std::ffi::c_char` are both `c_char`).
fn canon(t: &Type) -> String {
    match t {
        Type::Ptr(p) => format!(
            "*{} {}",
            if p.mutability.is_some() {
                "mut"
            } else {
                "const"
            },
            canon(&p.elem)
        ),
        Type::Path(p) => {
            let seg = p.path.segments.last().unwrap();
            match &seg.arguments {
                syn::PathArguments::AngleBracketed(a) => {
                    let args: Vec<String> = a
                        .args
                        .iter()
                        .map(|g| match g {
                            syn::GenericArgument::Type(t) => canon(t),
                            other => quote::quote!(#other).to_string(),
                        })
                        .collect();
                    format!("{}<{}>", seg.ident, args.join(", "))
                }
                _ => seg.ident.to_string(),
            }
        }
        Type::BareFn(f) => {
            let args: Vec<String> = f
                .inputs
                .iter()
                .map(|a| {
                    let name = a
                        .name
                        .as_ref()
                        .map(|(n, _)| n.to_string())
                        .unwrap_or_default();
                    format!("{name}: {}", canon(&a.ty))
                })
                .collect();
            format!(
                "{}extern \"C\" fn({}) -> {}",
                if f.unsafety.is_some() { "unsafe " } else { "" },
                args.join(", "),
                ret(&f.output)
            )
        }
        Type::Paren(p) => canon(&p.elem),
        Type::Group(g) => canon(&g.elem),
        Type::Tuple(t) if t.elems.is_empty() => "()".into(),
        other => quote::quote!(#other).to_string(),
    }
}

fn ret(r: &ReturnType) -> String {
    match r {
        ReturnType::Default => "()".into(),
        ReturnType::Type(_, t) => canon(t),
    }
}

/// `name(arg: type, ...) -> ret` for a signature.
fn signature(sig: &syn::Signature) -> String {
    let args: Vec<String> = sig
        .inputs
        .iter()
        .map(|a| match a {
            FnArg::Typed(p) => {
                let name = match &*p.pat {
                    Pat::Ident(i) => i.ident.to_string(),
                    other => quote::quote!(#other).to_string(),
                };
                format!("{name}: {}", canon(&p.ty))
            }
            FnArg::Receiver(_) => "self".into(),
        })
        .collect();
    format!("{}({}) -> {}", sig.ident, args.join(", "), ret(&sig.output))
}

fn has_doc(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| a.path().is_ident("doc"))
}

/// What one side declares.
#[derive(Default, Debug)]
struct Api {
    fns: BTreeMap<String, String>,
    /// Struct fields: struct -> [(field, type)].
    structs: BTreeMap<String, Vec<(String, String)>>,
    aliases: BTreeMap<String, String>,
    /// Integer constants (kiln_status values, KILN_ABI_VERSION).
    consts: BTreeMap<String, i64>,
    undocumented: Vec<String>,
}

/// bindgen drops the comment of `typedef struct x x;` (an opaque handle): look for it in the
/// header text, ending right before the typedef.
fn opaque_typedef_documented(name: &str) -> bool {
    let header = std::fs::read_to_string(ffi_dir().join("include/kiln.h")).unwrap();
    let typedef = format!("typedef struct {name} {name};");
    header.find(&typedef).is_some_and(|at| {
        let before = header[..at].trim_end();
        let comment = before.rfind("/*").map(|o| &before[o..]);
        before.ends_with("*/") && comment.is_some_and(|c| c.starts_with("/**"))
    })
}

fn int_of(e: &syn::Expr) -> i64 {
    let text = quote::quote!(#e).to_string().replace(' ', "");
    let digits: String = text.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("not an integer: {text}"))
}

fn from_bindgen(code: &str) -> Api {
    let file = syn::parse_file(code).expect("bindgen output parses");
    let mut api = Api::default();
    for item in &file.items {
        match item {
            Item::ForeignMod(m) => {
                for f in &m.items {
                    if let syn::ForeignItem::Fn(f) = f {
                        if !has_doc(&f.attrs) {
                            api.undocumented.push(f.sig.ident.to_string());
                        }
                        api.fns.insert(f.sig.ident.to_string(), signature(&f.sig));
                    }
                }
            }
            Item::Struct(s) => {
                if !has_doc(&s.attrs) && !opaque_typedef_documented(&s.ident.to_string()) {
                    api.undocumented.push(s.ident.to_string());
                }
                let mut fields = Vec::new();
                for f in &s.fields {
                    let name = f.ident.as_ref().unwrap().to_string();
                    if name == "_unused" {
                        continue; // an opaque handle
                    }
                    if !has_doc(&f.attrs) {
                        api.undocumented.push(format!("{}.{name}", s.ident));
                    }
                    fields.push((name, canon(&f.ty)));
                }
                api.structs.insert(s.ident.to_string(), fields);
            }
            Item::Type(t) => {
                if !has_doc(&t.attrs) {
                    api.undocumented.push(t.ident.to_string());
                }
                api.aliases.insert(t.ident.to_string(), canon(&t.ty));
            }
            Item::Const(c) => {
                let name = c.ident.to_string();
                if name.starts_with("KILN_ERR") || name == "KILN_OK" {
                    if !has_doc(&c.attrs) {
                        api.undocumented.push(name.clone());
                    }
                    api.consts.insert(name, int_of(&c.expr));
                } else if name == "KILN_ABI_VERSION" {
                    api.consts.insert(name, int_of(&c.expr));
                }
            }
            _ => {}
        }
    }
    api
}

/// The same from the Rust sources: `#[no_mangle] extern "C"` functions, `#[repr(C)]`
/// structs, type aliases, the kiln_status enum and the ABI constant.
fn from_rust_sources() -> Api {
    let mut api = Api::default();
    for path in ["src/lib.rs", "src/status.rs"] {
        let text = std::fs::read_to_string(ffi_dir().join(path)).unwrap();
        let file = syn::parse_file(&text).unwrap();
        for item in &file.items {
            match item {
                Item::Fn(f) => {
                    let no_mangle = f.attrs.iter().any(|a| a.path().is_ident("no_mangle"));
                    let extern_c = f
                        .sig
                        .abi
                        .as_ref()
                        .and_then(|a| a.name.as_ref())
                        .is_some_and(|n| n.value() == "C");
                    if no_mangle {
                        assert!(
                            extern_c,
                            "{} is #[no_mangle] but not extern \"C\"",
                            f.sig.ident
                        );
                        api.fns.insert(f.sig.ident.to_string(), signature(&f.sig));
                    }
                }
                Item::Struct(s) if s.ident == "kiln_options" => {
                    let fields = s
                        .fields
                        .iter()
                        .map(|f| (f.ident.as_ref().unwrap().to_string(), canon(&f.ty)))
                        .collect();
                    api.structs.insert(s.ident.to_string(), fields);
                }
                Item::Struct(s) if s.ident.to_string().starts_with("kiln_") => {
                    // An opaque handle: C sees no fields.
                    api.structs.insert(s.ident.to_string(), Vec::new());
                }
                Item::Type(t) if t.ident.to_string().starts_with("kiln_") => {
                    api.aliases.insert(t.ident.to_string(), canon(&t.ty));
                }
                Item::Enum(e) if e.ident == "kiln_status" => {
                    for v in &e.variants {
                        let (_, d) = v.discriminant.as_ref().expect("explicit values");
                        api.consts.insert(v.ident.to_string(), int_of(d));
                    }
                }
                Item::Const(c) if c.ident == "KILN_ABI_VERSION" => {
                    api.consts.insert(c.ident.to_string(), int_of(&c.expr));
                }
                _ => {}
            }
        }
    }
    api
}

/// `[::std::mem::size_of::<T>() - N]` and `offset_of!(T, f) - N` from bindgen's layout
/// assertions.
fn layout_numbers(code: &str, marker: &str) -> Option<usize> {
    let at = code.find(marker)? + marker.len();
    let rest = &code[at..];
    let start = rest.find("- ")? + 2;
    let digits: String = rest[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

#[test]
fn kiln_h_matches_the_library() {
    let code = bindgen_output();
    let header = from_bindgen(&code);
    let rust = from_rust_sources();

    assert!(
        header.undocumented.is_empty(),
        "declarations in kiln.h without a doc comment: {:?}",
        header.undocumented
    );
    assert!(
        header.fns.len() >= 16,
        "bindgen saw {:?}",
        header.fns.keys()
    );

    // Functions: same set, same signatures.
    for (name, sig) in &header.fns {
        match rust.fns.get(name) {
            None => panic!("kiln.h declares {name}, which the library does not define"),
            Some(r) => assert_eq!(r, sig, "signature of {name}: library vs kiln.h"),
        }
    }
    for name in rust.fns.keys() {
        assert!(
            header.fns.contains_key(name),
            "the library exports {name}, which kiln.h does not declare"
        );
    }

    // The built library's dynamic symbols.
    let so = built().shared();
    let nm = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&so)
        .output()
        .expect("nm");
    assert!(nm.status.success());
    let exported: Vec<String> = String::from_utf8(nm.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let (_, kind, name) = (parts.next()?, parts.next()?, parts.next()?);
            (kind == "T" && name.starts_with("kiln_")).then(|| name.to_string())
        })
        .collect();
    let declared: Vec<String> = header.fns.keys().cloned().collect();
    let mut sorted = exported.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        declared,
        "kiln_* symbols exported by {} vs declared in kiln.h",
        so.display()
    );

    // Types.
    assert_eq!(
        header.structs.get("kiln_options"),
        rust.structs.get("kiln_options"),
        "kiln_options fields"
    );
    for opaque in ["kiln_engine", "kiln_cancel_token"] {
        assert_eq!(header.structs.get(opaque), Some(&Vec::new()), "{opaque}");
        assert_eq!(rust.structs.get(opaque), Some(&Vec::new()), "{opaque}");
    }
    assert_eq!(
        header.aliases.get("kiln_stream_callback"),
        rust.aliases.get("kiln_stream_callback"),
        "kiln_stream_callback"
    );
    assert_eq!(
        header.consts, rust.consts,
        "kiln_status values, KILN_ABI_VERSION"
    );
    assert_eq!(
        header.consts.get("KILN_ABI_VERSION").copied(),
        Some(kiln::kiln_abi_version() as i64)
    );
    // kiln_status is a C enum: the size of an int, as the Rust enum.
    assert_eq!(std::mem::size_of::<kiln::kiln_status>(), 4);

    // kiln_options layout: size and each field's offset.
    let size = layout_numbers(&code, "size_of::<kiln_options>()")
        .expect("bindgen's size assertion for kiln_options");
    assert_eq!(
        size,
        std::mem::size_of::<kiln::kiln_options>(),
        "sizeof(kiln_options)"
    );
    macro_rules! offsets {
        ($($f:ident),*) => {
            vec![$((stringify!($f), std::mem::offset_of!(kiln::kiln_options, $f))),*]
        };
    }
    let offsets = offsets!(
        struct_size,
        models,
        device,
        dtype,
        kv_cache_memory,
        max_seqs,
        max_queue,
        max_batched_tokens,
        strict,
        random_weights
    );
    assert_eq!(
        offsets.len(),
        header.structs["kiln_options"].len(),
        "a kiln_options field is missing from this test's offset list"
    );
    for (field, offset) in offsets {
        let marker = format!("offset_of!(kiln_options, {field})");
        let h = layout_numbers(&code, &marker)
            .unwrap_or_else(|| panic!("bindgen's offset assertion for {field}"));
        assert_eq!(h, offset, "offset of kiln_options.{field}");
    }
}
