use super::*;

#[test]
fn a_panic_becomes_internal_with_its_message() {
    let status = guard(|| panic!("boom {}", 7));
    assert_eq!(status, KILN_ERR_INTERNAL);
    let msg = unsafe { CStr::from_ptr(kiln_last_error_message()) };
    assert_eq!(msg.to_str().unwrap(), "internal error (panic): boom 7");
    assert_eq!(kiln_last_error_code(), 3001);
    // The next successful call clears it.
    assert_eq!(guard(|| Ok(())), KILN_OK);
    let msg = unsafe { CStr::from_ptr(kiln_last_error_message()) };
    assert!(msg.to_bytes().is_empty());
    assert_eq!(kiln_last_error_code(), 0);
}

#[test]
fn errors_are_per_thread() {
    assert_eq!(guard(|| Err(Failure::null("x"))), KILN_ERR_NULL_ARGUMENT);
    std::thread::spawn(|| {
        let msg = unsafe { CStr::from_ptr(kiln_last_error_message()) };
        assert!(msg.to_bytes().is_empty());
    })
    .join()
    .unwrap();
    let msg = unsafe { CStr::from_ptr(kiln_last_error_message()) };
    assert_eq!(msg.to_str().unwrap(), "x is NULL");
}

#[test]
fn run_errors_map_to_statuses_and_keep_their_codes() {
    let cases = [
        (RunError::no_such_model("m"), KILN_ERR_UNKNOWN_MODEL, 5007),
        (RunError::bad_input("m"), KILN_ERR_BAD_INPUT, 5006),
        (RunError::capacity("m"), KILN_ERR_BUSY, 3040),
        (RunError::internal("m"), KILN_ERR_INTERNAL, 3001),
    ];
    for (e, status, code) in cases {
        let f = Failure::from(e);
        assert_eq!((f.status, f.code), (status, code));
    }
}

#[test]
fn float_arrays_round_trip() {
    for n in [0usize, 1, 5, 384] {
        let v: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
        let p = alloc_floats(&v).unwrap();
        assert_eq!(p as usize % 16, 0);
        let back = unsafe { std::slice::from_raw_parts(p, n) };
        assert_eq!(back, &v[..]);
        assert_eq!(unsafe { kiln_embeddings_free(p) }, KILN_OK);
    }
}

#[test]
fn strings_with_nul_survive() {
    let c = c_string("a\0b".into());
    assert_eq!(c.to_str().unwrap(), "a\u{FFFD}b");
}
