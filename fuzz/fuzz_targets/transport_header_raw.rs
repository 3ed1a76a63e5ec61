//! Arbitrary bytes into the transport-header reader (as a stream split at arbitrary points):
//! never panics; whatever decodes consumed exactly a prefix, and the rest is replayed intact.
#![no_main]

use gateway::transport_header::{self, decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let decoded = decode(data);
    if let Ok(Some((header, used))) = &decoded {
        assert!(*used <= data.len());
        // Re-encoding a decoded header and decoding it again gives the same header.
        let again = decode(&transport_header::encode(header)).expect("re-encode").expect("complete");
        assert_eq!(&again.0, header);
    }
    // The async reader agrees with the pure decoder and never loses bytes after the header.
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    rt.block_on(async {
        use tokio::io::AsyncReadExt as _;
        match transport_header::read(data).await {
            Ok((header, mut rest)) => {
                let (expected, used) = decoded.clone().expect("decoder agrees").expect("complete");
                assert_eq!(header, expected);
                let mut tail = Vec::new();
                rest.read_to_end(&mut tail).await.expect("replay");
                assert_eq!(&tail[..], &data[used..]);
            }
            Err(_) => assert!(!matches!(decoded, Ok(Some(_)))),
        }
    });
});
