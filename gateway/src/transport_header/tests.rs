use super::*;

fn header(port: u16, name: Option<&str>, protocol: SessionProtocol) -> TransportHeader {
    TransportHeader {
        port,
        name: name.map(str::to_owned),
        protocol,
    }
}

/// Raw protobuf with an arbitrary (possibly invalid) port and name.
fn raw(port: i32, name: &str) -> Vec<u8> {
    let body = proto::Header {
        port,
        name: name.to_owned(),
        session_protocol: None,
    }
    .encode_to_vec();
    let mut out = PREFACE.to_vec();
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

#[test]
fn roundtrip_prefaced() {
    let h = header(4040, Some("foo.bar.example.com"), SessionProtocol::Http2);
    let mut bytes = encode(&h);
    let len = bytes.len();
    bytes.extend_from_slice(b"12345");
    let (decoded, used) = decode(&bytes).unwrap().unwrap();
    assert_eq!(decoded, h);
    assert_eq!(used, len);
    assert_eq!(&bytes[used..], b"12345");
}

#[test]
fn every_protocol_and_absent_name_roundtrip() {
    for protocol in [
        SessionProtocol::Http1,
        SessionProtocol::Http2,
        SessionProtocol::Opaque,
    ] {
        for name in [None, Some("web.ns.svc.cluster.local")] {
            let h = header(80, name, protocol);
            assert_eq!(decode(&encode(&h)).unwrap().unwrap().0, h);
        }
    }
}

#[test]
fn no_header() {
    assert_eq!(
        decode(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"),
        Err(Error::NoHeader)
    );
    assert_eq!(decode(b"PRI * HTTP/2.0"), Err(Error::NoHeader));
}

#[test]
fn every_prefix_is_incomplete() {
    let bytes = encode(&header(
        8080,
        Some("web.ns.svc.cluster.local"),
        SessionProtocol::Http1,
    ));
    for end in 0..bytes.len() {
        assert_eq!(decode(&bytes[..end]), Ok(None), "prefix of {end} bytes");
    }
    assert!(decode(&bytes).unwrap().is_some());
}

#[test]
fn oversize_length_is_refused_before_reading_it() {
    let mut bytes = PREFACE.to_vec();
    bytes.extend_from_slice(&(MAX_MESSAGE_LEN as u32 + 1).to_be_bytes());
    assert_eq!(decode(&bytes), Err(Error::TooLong(MAX_MESSAGE_LEN + 1)));
}

#[test]
fn bad_ports_are_refused() {
    for port in [0, -1, 65536, i32::MAX] {
        assert_eq!(
            decode(&raw(port, "a.svc.cluster.local")),
            Err(Error::BadPort(port))
        );
    }
    assert!(
        decode(&raw(65535, "a.svc.cluster.local"))
            .unwrap()
            .is_some()
    );
}

#[test]
fn bad_names_are_refused() {
    for name in ["a b.svc", "a..b", &"x".repeat(64), "a/b", "%41.svc"] {
        assert_eq!(decode(&raw(80, name)), Err(Error::BadName), "{name:?}");
    }
}

#[test]
fn garbage_message_is_malformed() {
    let mut bytes = PREFACE.to_vec();
    bytes.extend_from_slice(&3u32.to_be_bytes());
    bytes.extend_from_slice(&[0xff, 0xff, 0xff]);
    assert!(matches!(decode(&bytes), Err(Error::Malformed(_))));
}

#[test]
fn metric_labels_match_linkerd() {
    assert_eq!(SessionProtocol::Http1.label(), "http/1");
    assert_eq!(SessionProtocol::Http2.label(), "http/2");
    assert_eq!(SessionProtocol::Opaque.label(), "");
}

#[tokio::test]
async fn many_reads() {
    let h = header(5555, Some("foo.bar.example.com"), SessionProtocol::Http1);
    let bytes = encode(&h);
    let (mut tx, rx) = tokio::io::duplex(1024);
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt as _;
        for piece in [
            &bytes[..5],
            &bytes[5..12],
            &bytes[12..23],
            &bytes[23..27],
            &bytes[27..],
            b"payload",
        ] {
            tx.write_all(piece).await.unwrap();
            tx.flush().await.unwrap();
            tokio::task::yield_now().await;
        }
    });
    let (decoded, mut io) = read(rx).await.unwrap();
    assert_eq!(decoded, h);
    let mut rest = Vec::new();
    writer.await.unwrap();
    io.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"payload");
}

#[tokio::test]
async fn eof_before_a_header_is_no_header() {
    let bytes = encode(&header(1, Some("a.b"), SessionProtocol::Opaque));
    let short = &bytes[..bytes.len() - 1];
    assert!(matches!(
        read(short).await,
        Err(ReadError::Header(Error::NoHeader))
    ));
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn protocol() -> impl Strategy<Value = SessionProtocol> {
        prop_oneof![
            Just(SessionProtocol::Http1),
            Just(SessionProtocol::Http2),
            Just(SessionProtocol::Opaque)
        ]
    }

    proptest! {
        #[test]
        fn prefixed_io_replays_header_tail_then_inner_under_random_chunking(
            port in 1u16..,
            name in proptest::option::of("[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9-]{0,10}){0,4}"),
            protocol in protocol(),
            payload in proptest::collection::vec(any::<u8>(), 0..2048),
            cuts in proptest::collection::vec(1usize..64, 1..40),
        ) {
            let h = TransportHeader { port, name, protocol };
            let mut stream = encode(&h);
            stream.extend_from_slice(&payload);
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let mut builder = tokio_test_reader(&stream, &cuts);
                let (decoded, mut io) = read(&mut builder).await.unwrap();
                prop_assert_eq!(decoded, h);
                let mut rest = Vec::new();
                io.read_to_end(&mut rest).await.unwrap();
                prop_assert_eq!(rest, payload);
                Ok(())
            })?;
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
            let mut prefaced = PREFACE.to_vec();
            prefaced.extend_from_slice(&bytes);
            let _ = decode(&prefaced);
        }
    }

    /// A reader that hands out `stream` in chunks of the sizes in `cuts` (cycled).
    fn tokio_test_reader(stream: &[u8], cuts: &[usize]) -> ChunkedReader {
        ChunkedReader {
            data: stream.to_vec(),
            pos: 0,
            cuts: cuts.to_vec(),
            turn: 0,
        }
    }

    struct ChunkedReader {
        data: Vec<u8>,
        pos: usize,
        cuts: Vec<usize>,
        turn: usize,
    }

    impl AsyncRead for ChunkedReader {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let cut = self.cuts[self.turn % self.cuts.len()];
            self.turn += 1;
            let n = cut.min(buf.remaining()).min(self.data.len() - self.pos);
            let pos = self.pos;
            buf.put_slice(&self.data[pos..pos + n]);
            self.pos += n;
            Poll::Ready(Ok(()))
        }
    }
}
