//! Structured headers: encode → decode roundtrips for every port, protocol and DNS-valid name,
//! with trailing payload left untouched.
#![no_main]

use gateway::transport_header::{SessionProtocol, TransportHeader, decode, encode};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    name: String,
    port: u16,
    protocol: u8,
    payload: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let protocol = match input.protocol % 3 {
        0 => SessionProtocol::Http1,
        1 => SessionProtocol::Http2,
        _ => SessionProtocol::Opaque,
    };
    let header = TransportHeader {
        port: input.port.max(1),
        name: (!input.name.is_empty()).then_some(input.name),
        protocol,
    };
    let mut bytes = encode(&header);
    let len = bytes.len();
    bytes.extend_from_slice(&input.payload);
    match decode(&bytes) {
        Ok(Some((decoded, used))) => {
            assert_eq!(decoded, header);
            assert_eq!(used, len);
        }
        Ok(None) => panic!("a complete header decoded as incomplete"),
        // Names that are not DNS names are refused, never mangled.
        Err(_) => assert!(header.name.is_some()),
    }
});
