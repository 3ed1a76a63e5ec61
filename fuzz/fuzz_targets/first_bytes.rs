//! An upstream's first bytes, split into reads at fuzzed points: classifying never panics, and
//! the split never changes the answer.
#![no_main]

use gateway::upstream::version::{First, Head};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let mut whole = Head::default();
    let all = whole.push(bytes, false).unwrap_or_else(|| whole.end());
    let mut parts = Head::default();
    let at = usize::from(split).min(bytes.len());
    let split_answer = parts
        .push(&bytes[..at], false)
        .or_else(|| parts.push(&bytes[at..], false))
        .unwrap_or_else(|| parts.end());
    assert_eq!(all, split_answer);
    if all == First::Http2 {
        assert!(bytes.len() >= 9 && bytes[3] == 4);
    }
});
