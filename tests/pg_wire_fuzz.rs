//! Fuzz smoke run of the PostgreSQL door's frontend decoding: arbitrary
//! bytes through the startup parser, the options splitter, the frame reader
//! and the error sanitizer never panic, and frames never exceed the limit.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use esq::pgdoor::{startup, wire};
use esq::upstream::redact as sanitize;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn startup_packets_never_panic(code in any::<i32>(), payload in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = startup::parse_startup(code, &payload);
    }

    #[test]
    fn options_never_panic(options in "\\PC{0,200}") {
        let _ = startup::parse_options(&options);
    }

    #[test]
    fn frames_respect_the_limit(bytes in proptest::collection::vec(any::<u8>(), 0..4096), limit in 8usize..2048) {
        let mut reader = wire::FrameReader::new(limit);
        reader.prime(&bytes);
        while let Ok(Some(frame)) = reader.next_buffered() {
            prop_assert!(frame.body.len() + 4 <= limit);
            let mut at = 0;
            let _ = wire::cstr(&frame.body, &mut at);
        }
    }

    #[test]
    fn sanitizing_never_panics_or_leaks_quoted_text(body in proptest::collection::vec(any::<u8>(), 0..512), secret in "[a-z0-9]{12}") {
        let mut out = bytes::BytesMut::new();
        sanitize::sanitized(b'E', &body, &mut out);
        let mut with_value = b"SERROR\0C22P02\0Minvalid input: \"".to_vec();
        with_value.extend_from_slice(secret.as_bytes());
        with_value.extend_from_slice(b"\"\0Dkey=");
        with_value.extend_from_slice(secret.as_bytes());
        with_value.extend_from_slice(b"\0\0");
        let mut out = bytes::BytesMut::new();
        sanitize::sanitized(b'E', &with_value, &mut out);
        let text = String::from_utf8_lossy(&out);
        prop_assert!(!text.contains(&secret));
    }
}
