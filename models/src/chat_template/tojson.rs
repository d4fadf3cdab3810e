//! The `tojson` filter as transformers defines it for chat templates:
//! `json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`.
//!
//! minijinja's own `tojson` writes compact JSON and HTML-escapes `<`, `>`, `&` and `'`; tool
//! schemas rendered that way would differ from what the model was trained on, so this module
//! reproduces python's `json.dumps` byte for byte: `", "` / `": "` separators, python float
//! repr, `\uXXXX` escapes only for control characters unless `ensure_ascii`.

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Error, ErrorKind, Value};

use super::pyfmt::python_float_repr;

/// Python's json.dumps options, in the positional order of transformers' filter.
struct Options {
    ensure_ascii: bool,
    /// `None`: single line. `Some(s)`: one item a line, `s` repeated per nesting level.
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

/// The filter itself: `{{ x | tojson }}`, `{{ x | tojson(indent=4) }}`; positional
/// `(ensure_ascii, indent)` as in transformers, `separators` and `sort_keys` by keyword only
/// (minijinja functions take at most five arguments).
pub(super) fn tojson(
    value: &Value,
    ensure_ascii: Option<Value>,
    indent: Option<Value>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let pick = |positional: Option<Value>, name: &str| -> Result<Value, Error> {
        match kwargs.get::<Option<Value>>(name)? {
            Some(v) => Ok(v),
            None => Ok(positional.unwrap_or(Value::from(()))),
        }
    };
    let ensure_ascii = pick(ensure_ascii, "ensure_ascii")?.is_true();
    let indent = indent_string(&pick(indent, "indent")?)?;
    let separators = pick(None, "separators")?;
    let sort_keys = pick(None, "sort_keys")?.is_true();
    kwargs.assert_all_used()?;

    // Python's defaults depend on indent: a trailing space after ',' only on one line.
    let (item_sep, key_sep) = if separators.is_none() || separators.is_undefined() {
        let item = if indent.is_some() { "," } else { ", " };
        (item.to_string(), ": ".to_string())
    } else {
        let item = separators.get_item_by_index(0)?;
        let key = separators.get_item_by_index(1)?;
        match (item.as_str(), key.as_str()) {
            (Some(i), Some(k)) => (i.to_string(), k.to_string()),
            _ => return Err(invalid("tojson: separators must be a pair of strings")),
        }
    };
    let opts = Options {
        ensure_ascii,
        indent,
        item_sep,
        key_sep,
        sort_keys,
    };
    let mut out = String::new();
    write_value(&mut out, value, &opts, 0)?;
    Ok(Value::from(out))
}

fn indent_string(indent: &Value) -> Result<Option<String>, Error> {
    if indent.is_none() || indent.is_undefined() {
        return Ok(None);
    }
    if let Some(s) = indent.as_str() {
        return Ok(Some(s.to_string()));
    }
    match indent.as_i64() {
        // python: ' ' * n, so a negative indent means no spaces but still newlines
        Some(n) => Ok(Some(" ".repeat(n.max(0) as usize))),
        None => Err(invalid("tojson: indent must be an integer or a string")),
    }
}

fn invalid(msg: &str) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg.to_string())
}

fn write_value(out: &mut String, value: &Value, opts: &Options, level: usize) -> Result<(), Error> {
    match value.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => write_number(out, value)?,
        ValueKind::String => write_string(out, value.as_str().unwrap_or_default(), opts),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            write_container(out, opts, level, ('[', ']'), &items, |out, item, lvl| {
                write_value(out, item, opts, lvl)
            })?;
        }
        ValueKind::Map => {
            let mut entries = Vec::new();
            for key in value.try_iter()? {
                let item = value.get_item(&key)?;
                entries.push((key_string(&key)?, item));
            }
            if opts.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            write_container(
                out,
                opts,
                level,
                ('{', '}'),
                &entries,
                |out, (k, v), lvl| {
                    write_string(out, k, opts);
                    out.push_str(&opts.key_sep);
                    write_value(out, v, opts, lvl)
                },
            )?;
        }
        // Python's json.dumps raises TypeError for these; so does the template.
        _ => {
            return Err(invalid(&format!(
                "tojson: object of type {} is not JSON serializable",
                value.kind()
            )));
        }
    }
    Ok(())
}

/// Writes `[a, b]` or, with an indent, one item a line; empty containers stay `[]` / `{}`.
fn write_container<T>(
    out: &mut String,
    opts: &Options,
    level: usize,
    (open, close): (char, char),
    items: &[T],
    mut write_item: impl FnMut(&mut String, &T, usize) -> Result<(), Error>,
) -> Result<(), Error> {
    out.push(open);
    if items.is_empty() {
        out.push(close);
        return Ok(());
    }
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(&opts.item_sep);
        }
        if let Some(indent) = &opts.indent {
            out.push('\n');
            out.push_str(&indent.repeat(level + 1));
        }
        write_item(out, item, level + 1)?;
    }
    if let Some(indent) = &opts.indent {
        out.push('\n');
        out.push_str(&indent.repeat(level));
    }
    out.push(close);
    Ok(())
}

/// Python converts non-string dict keys the way it prints them as JSON values.
fn key_string(key: &Value) -> Result<String, Error> {
    match key.kind() {
        ValueKind::String => Ok(key.as_str().unwrap_or_default().to_string()),
        ValueKind::None => Ok("null".to_string()),
        ValueKind::Bool => Ok(if key.is_true() { "true" } else { "false" }.to_string()),
        ValueKind::Number => {
            let mut s = String::new();
            write_number(&mut s, key)?;
            Ok(s)
        }
        kind => Err(invalid(&format!(
            "tojson: keys must be str, int, float, bool or None, not {kind}"
        ))),
    }
}

fn write_number(out: &mut String, value: &Value) -> Result<(), Error> {
    if value.is_integer() {
        out.push_str(&value.to_string());
        return Ok(());
    }
    let f = f64::try_from(value.clone())?;
    out.push_str(&python_float_repr(f));
    Ok(())
}

fn write_string(out: &mut String, s: &str, opts: &Options) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (opts.ensure_ascii && (c as u32) > 0x7e) => {
                // UTF-16 code units, lower-case hex: python's \uXXXX escapes
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}
