//! The lexical pieces of JSON below the pushdown level: string contents (escapes,
//! surrogate pairs, UTF-8 exactly as `serde_json` accepts it) and numbers (RFC 8259, with
//! digit caps).

/// Digits allowed in the integer part of an `integer` (so it stays an i64) or a `number`,
/// in the fraction, and in the exponent. Bounded so that serde_json never overflows to an
/// error (1e400 is "number out of range") and the model cannot write digits forever.
pub(crate) const MAX_INTEGER_DIGITS: u8 = 18;
pub(crate) const MAX_NUMBER_DIGITS: u8 = 64;
pub(crate) const MAX_EXPONENT_DIGITS: u8 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StrSub {
    Normal,
    Escape,
    /// `n` hex digits of a `\u` escape read, `low`: it must be a low surrogate.
    Hex {
        n: u8,
        val: u16,
        low: bool,
    },
    /// After a high-surrogate escape: `\` then `u` must follow.
    NeedBackslash,
    NeedU,
    /// Inside a multi-byte character: `left` continuation bytes to go, the next in lo..=hi.
    Utf8 {
        left: u8,
        lo: u8,
        hi: u8,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NumSub {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    Exp,
    ExpSign,
    ExpInt,
}

/// The next string sub-state after `b` (not the closing quote), or None if `b` is invalid.
pub(crate) fn string_sub_step(sub: StrSub, b: u8) -> Option<StrSub> {
    Some(match sub {
        StrSub::Normal => match b {
            b'\\' => StrSub::Escape,
            0..=0x1f => return None,
            0x20..=0x7f => StrSub::Normal,
            0xc2..=0xdf => StrSub::Utf8 {
                left: 1,
                lo: 0x80,
                hi: 0xbf,
            },
            0xe0 => StrSub::Utf8 {
                left: 2,
                lo: 0xa0,
                hi: 0xbf,
            },
            0xed => StrSub::Utf8 {
                left: 2,
                lo: 0x80,
                hi: 0x9f,
            },
            0xe1..=0xef => StrSub::Utf8 {
                left: 2,
                lo: 0x80,
                hi: 0xbf,
            },
            0xf0 => StrSub::Utf8 {
                left: 3,
                lo: 0x90,
                hi: 0xbf,
            },
            0xf1..=0xf3 => StrSub::Utf8 {
                left: 3,
                lo: 0x80,
                hi: 0xbf,
            },
            0xf4 => StrSub::Utf8 {
                left: 3,
                lo: 0x80,
                hi: 0x8f,
            },
            _ => return None,
        },
        StrSub::Utf8 { left, lo, hi } => {
            if b < lo || b > hi {
                return None;
            }
            if left == 1 {
                StrSub::Normal
            } else {
                StrSub::Utf8 {
                    left: left - 1,
                    lo: 0x80,
                    hi: 0xbf,
                }
            }
        }
        StrSub::Escape => match b {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => StrSub::Normal,
            b'u' => StrSub::Hex {
                n: 0,
                val: 0,
                low: false,
            },
            _ => return None,
        },
        StrSub::NeedBackslash if b == b'\\' => StrSub::NeedU,
        StrSub::NeedU if b == b'u' => StrSub::Hex {
            n: 0,
            val: 0,
            low: true,
        },
        StrSub::NeedBackslash | StrSub::NeedU => return None,
        StrSub::Hex { n, val, low } => {
            let digit = (b as char).to_digit(16)? as u16;
            let val = (val << 4) | digit;
            let n = n + 1;
            // Surrogates are checked as soon as the digits decide them: a low surrogate is
            // required after a high one and refused anywhere else (serde_json rejects both).
            let is_low_prefix = match n {
                1 => val == 0xd,
                2 => (0xdc..=0xdf).contains(&val),
                3 => (0xdc0..=0xdff).contains(&val),
                _ => (0xdc00..=0xdfff).contains(&val),
            };
            if low && !is_low_prefix || !low && n >= 2 && is_low_prefix {
                return None;
            }
            if n < 4 {
                StrSub::Hex { n, val, low }
            } else if !low && (0xd800..=0xdbff).contains(&val) {
                StrSub::NeedBackslash
            } else {
                StrSub::Normal
            }
        }
    })
}

pub(crate) enum NumStep {
    Next(NumSub, u8),
    /// The number ended before this byte, which belongs to what follows it.
    End,
    Reject,
}

pub(crate) fn num_accepting(sub: NumSub) -> bool {
    matches!(
        sub,
        NumSub::Zero | NumSub::Int | NumSub::Frac | NumSub::ExpInt
    )
}

pub(crate) fn num_step(int_only: bool, sub: NumSub, digits: u8, b: u8) -> NumStep {
    let int_cap = if int_only {
        MAX_INTEGER_DIGITS
    } else {
        MAX_NUMBER_DIGITS
    };
    let more = |next: NumSub, cap: u8| {
        if digits < cap {
            NumStep::Next(next, digits + 1)
        } else {
            NumStep::Reject
        }
    };
    match (sub, b) {
        // serde_json reads -0 as the float -0.0, which is no integer.
        (NumSub::Minus, b'0') if !int_only => NumStep::Next(NumSub::Zero, 1),
        (NumSub::Minus, b'1'..=b'9') => NumStep::Next(NumSub::Int, 1),
        (NumSub::Int, b'0'..=b'9') => more(NumSub::Int, int_cap),
        (NumSub::Zero | NumSub::Int, b'.') if !int_only => NumStep::Next(NumSub::Dot, 0),
        (NumSub::Zero | NumSub::Int | NumSub::Frac, b'e' | b'E') if !int_only => {
            NumStep::Next(NumSub::Exp, 0)
        }
        (NumSub::Dot | NumSub::Frac, b'0'..=b'9') => more(NumSub::Frac, MAX_NUMBER_DIGITS),
        (NumSub::Exp, b'+' | b'-') => NumStep::Next(NumSub::ExpSign, 0),
        (NumSub::Exp | NumSub::ExpSign | NumSub::ExpInt, b'0'..=b'9') => {
            more(NumSub::ExpInt, MAX_EXPONENT_DIGITS)
        }
        _ if num_accepting(sub) && !matches!(b, b'0'..=b'9' | b'.' | b'e' | b'E') => NumStep::End,
        _ => NumStep::Reject,
    }
}
