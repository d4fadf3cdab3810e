//! Human-readable memory sizes and the out-of-memory messages built from them (the numbers
//! come from the device; the wording is decided here, where it can be unit tested).

use crate::backend::Device;

/// `bytes` in the largest binary unit that keeps the number at least 1, with three
/// significant digits: "512 B", "1.50 KiB", "79.1 GiB", "2.00 GiB".
pub fn format_bytes(bytes: usize) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    // Rounding may carry to 1024 (1023.99 KiB): say 1.00 of the next unit instead.
    if v >= 1023.995 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    let digits = if v >= 99.95 {
        0
    } else if v >= 9.995 {
        1
    } else {
        2
    };
    format!("{v:.digits$} {}", UNITS[unit])
}

/// "cuda:0 out of memory: needs 2.00 GiB, 1.10 GiB free of 79.1 GiB": what an allocation of
/// `needs` bytes got from a device with `(free, total)` bytes (`None` when even that query
/// failed).
pub fn oom_message(device: Device, needs: usize, free_total: Option<(usize, usize)>) -> String {
    let head = format!("{device} out of memory: needs {}", format_bytes(needs));
    match free_total {
        Some((free, total)) => {
            format!(
                "{head}, {} free of {}",
                format_bytes(free),
                format_bytes(total)
            )
        }
        None => format!("{head} (free memory unknown)"),
    }
}

/// Whether `needs` bytes of model weights fit in `free` bytes of `device`: the error reads
/// "model needs 15.0 GiB of weights, cuda:0 has 9.50 GiB free".
pub fn check_weights_fit(device: Device, needs: usize, free: usize) -> Result<(), String> {
    if needs <= free {
        Ok(())
    } else {
        Err(format!(
            "model needs {} of weights, {device} has {} free",
            format_bytes(needs),
            format_bytes(free)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: usize = 1 << 30;

    #[test]
    fn sizes_read_with_three_digits() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1024), "1.00 KiB");
        assert_eq!(format_bytes(1536), "1.50 KiB");
        assert_eq!(format_bytes(10 * 1024 * 1024 + 512 * 1024), "10.5 MiB");
        assert_eq!(format_bytes(2 * GIB), "2.00 GiB");
        assert_eq!(format_bytes(GIB * 791 / 10), "79.1 GiB");
        assert_eq!(format_bytes(GIB * 512), "512 GiB");
        assert_eq!(format_bytes(1024 * 1024 - 1), "1.00 MiB");
        assert_eq!(format_bytes(usize::MAX), "16384 PiB");
    }

    #[test]
    fn oom_message_says_needed_free_and_total() {
        let m = oom_message(
            Device::Cuda(0),
            2 * GIB,
            Some((GIB * 11 / 10, GIB * 791 / 10)),
        );
        assert_eq!(
            m,
            "cuda:0 out of memory: needs 2.00 GiB, 1.10 GiB free of 79.1 GiB"
        );
        let m = oom_message(Device::Cuda(1), 300, None);
        assert_eq!(m, "cuda:1 out of memory: needs 300 B (free memory unknown)");
    }

    #[test]
    fn weights_fit_or_say_by_how_much() {
        assert!(check_weights_fit(Device::Cuda(0), 15 * GIB, 16 * GIB).is_ok());
        assert!(check_weights_fit(Device::Cuda(0), 16 * GIB, 16 * GIB).is_ok());
        let e = check_weights_fit(Device::Cuda(0), 15 * GIB, GIB * 95 / 10).unwrap_err();
        assert_eq!(
            e,
            "model needs 15.0 GiB of weights, cuda:0 has 9.50 GiB free"
        );
    }
}
