use super::*;
use crate::metrics::Label;

fn route(e: route::Error) -> Error {
    Error::Route(e)
}

fn unauthorized() -> Error {
    let target =
        target::Target::parse("db.ns.svc.cluster.local:5432", &target::Suffixes::default())
            .unwrap();
    route(route::Error::Unauthorized {
        target,
        srv_name: Label::from("deny"),
    })
}

#[test]
fn statuses_follow_design_table() {
    assert_eq!(Error::from(target::Error::NotAllowed).status(), 404);
    assert_eq!(
        Error::from(target::Error::NotAllowed).to_string(),
        "bad gateway domain"
    );
    assert_eq!(Error::from(target::Error::BadName).status(), 400);
    assert_eq!(Error::from(target::Error::IpLiteral).status(), 404);
    assert_eq!(
        Error::from(target::Error::IpLiteral).proxy_error(),
        "bad gateway domain"
    );
    assert_eq!(route(route::Error::Loop).status(), 508);
    assert_eq!(
        route(route::Error::Loop).to_string(),
        "gateway loop detected"
    );
    assert_eq!(unauthorized().status(), 403);
    assert_eq!(unauthorized().to_string(), "unauthorized request on route");
    let refused = Error::Connect(ConnectError::Refused {
        addr: ([127, 0, 0, 1], 1).into(),
        source: std::io::ErrorKind::ConnectionRefused.into(),
    });
    assert_eq!(refused.status(), 502);
    assert!(refused.is_fatal());
    let timeout = Error::Connect(ConnectError::Timeout(Duration::from_secs(1)));
    assert_eq!(timeout.status(), 504);
    assert_eq!(timeout.to_string(), "connect timed out after 1s");
    let unresolved = Error::Connect(ConnectError::Resolve(discover::Error::NoEndpoints(
        "x".into(),
    )));
    assert_eq!(unresolved.status(), 503);
    assert!(!unresolved.is_fatal());
}

#[test]
fn error_upstream_refused_blames_upstream() {
    let e = Error::Upstream("reset".into());
    assert_eq!(e.blame(), Blame::Upstream);
    assert_eq!(e.grpc_status(), 14);
    assert_eq!(route(route::Error::Loop).blame(), Blame::Downstream);
    assert_eq!(route(route::Error::Loop).grpc_status(), 10);
}

#[test]
fn a_name_nobody_serves_is_the_callers_mistake_but_a_failing_resolver_is_not() {
    let nx = Error::Connect(ConnectError::Resolve(discover::Error::NxDomain("x".into())));
    assert_eq!(nx.blame(), Blame::Downstream);
    let dns_down = Error::Connect(ConnectError::Resolve(discover::Error::Dns {
        name: "x".into(),
        reason: "timeout".into(),
    }));
    assert_eq!(dns_down.blame(), Blame::Upstream);
}

#[test]
fn a_local_bug_blames_the_gateway_and_closes_the_connection() {
    let bug = Error::Local("invalid authority for a checked target");
    assert_eq!(bug.blame(), Blame::Local);
    assert_eq!(bug.status(), 500);
    assert!(bug.is_fatal());
    assert_eq!(bug.reason(), "internal");
}

#[test]
fn handshake_refusals_are_counted_as_refusals_only() {
    let refused = Error::Handshake {
        refusal: Refusal::UnknownCa,
        detail: "unknown issuer".into(),
    };
    assert_eq!(refused.refusal().map(Refused::label), Some("unknown_ca"));
    assert_eq!(refused.tcp_error(), None, "one family, not two");
    assert_eq!(
        Error::TransportHeaderTimeout.refusal().map(Refused::label),
        Some("timeout")
    );
}

#[test]
fn opaque_refusals_carry_linkerds_tcp_error_labels() {
    assert_eq!(
        Error::from(target::Error::NotAllowed).tcp_error(),
        Some("gateway domain invalid")
    );
    assert_eq!(route(route::Error::Loop).tcp_error(), Some("gateway loop"));
    assert_eq!(unauthorized().tcp_error(), None);
    let io = Error::Io(std::io::Error::other("boom"));
    assert_eq!(io.tcp_error(), Some("i/o"));
    assert_eq!(io.refusal(), None);
}

#[test]
fn a_reset_or_eof_is_a_normal_end_and_other_io_is_not() {
    for kind in [
        std::io::ErrorKind::ConnectionReset,
        std::io::ErrorKind::BrokenPipe,
        std::io::ErrorKind::UnexpectedEof,
    ] {
        assert!(Error::Io(kind.into()).is_normal_end(), "{kind:?}");
        let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(std::io::Error::from(kind));
        assert!(Error::Http(boxed).is_normal_end(), "{kind:?} under hyper");
    }
    assert!(!Error::Io(std::io::ErrorKind::PermissionDenied.into()).is_normal_end());
    assert!(!route(route::Error::Loop).is_normal_end());
    let timed_out = Error::Io(std::io::ErrorKind::TimedOut.into());
    assert_eq!(timed_out.errno(), "ETIMEDOUT");
}
