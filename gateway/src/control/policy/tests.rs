use super::*;
use crate::target::Suffixes;

fn target(s: &str) -> Target {
    Target::parse(s, &Suffixes::new(["svc.cluster.local"]).unwrap()).unwrap()
}

fn id(s: &str) -> IdentityName {
    s.parse().unwrap()
}

const POLICY: &str = r#"
default: deny
rules:
  - name: east-web
    clients: ["web.east.serviceaccount.identity.linkerd.cluster.local"]
    targets: [{service: web, namespace: prod, port: 8080}]
  - name: east-any-public
    clients: ["*.east.serviceaccount.identity.linkerd.cluster.local"]
    targets: [{namespace: public}]
  - name: spiffe-west
    clients: ["spiffe://west.example.org"]
    targets: [{}]
"#;

/// A policy file in its own directory.
fn policy_file(tag: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meshgate-policy-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("policy.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn denies_by_default(current: &Current) -> bool {
    current.policy.read().unwrap().deny_by_default
}

#[tokio::test(start_paused = true)]
async fn a_file_replaced_before_the_first_poll_is_applied() {
    let path = policy_file("early", "default: deny\n");
    let loaded = Policy::load(&path).unwrap();
    let current = Arc::new(Current::new(loaded.policy));
    let metrics = Arc::new(Metrics::new());
    // Replaced after loading, before the watcher's first poll.
    std::fs::write(&path, "default: all-authenticated\n").unwrap();
    let interval = Duration::from_secs(1);
    let watcher = tokio::spawn(watch(
        path.clone(),
        loaded.bytes,
        current.clone(),
        metrics.clone(),
        interval,
    ));
    assert!(denies_by_default(&current));
    // Paused time: the polls at 0 s and 1 s run while this sleep is advanced past them.
    tokio::time::sleep(interval + interval / 2).await;
    assert!(!denies_by_default(&current), "the new file is in use");
    let ok = metrics
        .policy_reloads
        .get_or_create(&crate::metrics::ResultLabels { result: "ok" })
        .get();
    assert_eq!(ok, 1);
    watcher.abort();
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[tokio::test(start_paused = true)]
async fn the_file_as_loaded_is_not_reloaded() {
    let path = policy_file("same", "default: deny\n");
    let loaded = Policy::load(&path).unwrap();
    let current = Arc::new(Current::new(loaded.policy));
    let metrics = Arc::new(Metrics::new());
    let watcher = tokio::spawn(watch(
        path.clone(),
        loaded.bytes,
        current.clone(),
        metrics.clone(),
        Duration::from_secs(1),
    ));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(denies_by_default(&current));
    let text = metrics.encode();
    for result in ["ok", "error"] {
        let zero = format!("gateway_policy_reloads_total{{result=\"{result}\"}} 0\n");
        assert!(text.contains(&zero), "{text}");
    }
    watcher.abort();
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn rules_match_identity_patterns_and_target_fields() {
    let p = Policy::from_yaml("p", POLICY).unwrap();
    let web = id("web.east.serviceaccount.identity.linkerd.cluster.local");
    let api = id("api.east.serviceaccount.identity.linkerd.cluster.local");
    let allow = |name: &str| Verdict::Allow {
        kind: "rule",
        name: Label::from(name),
    };
    assert_eq!(
        p.decide(&web, &target("web.prod.svc.cluster.local:8080")),
        allow("east-web")
    );
    assert_eq!(
        p.decide(&web, &target("web.prod.svc.cluster.local:9090")),
        Verdict::Deny
    );
    assert_eq!(
        p.decide(&api, &target("web.prod.svc.cluster.local:8080")),
        Verdict::Deny
    );
    assert_eq!(
        p.decide(&api, &target("docs.public.svc.cluster.local:80")),
        allow("east-any-public")
    );
    // A suffix is a label boundary, and not the name itself.
    let outsider = id("web.northeast.serviceaccount.identity.linkerd.cluster.local");
    assert_eq!(
        p.decide(&outsider, &target("docs.public.svc.cluster.local:80")),
        Verdict::Deny
    );
    let spiffe = id("spiffe://west.example.org/ns/a/sa/b");
    assert_eq!(
        p.decide(&spiffe, &target("x.y.svc.cluster.local:1")),
        allow("spiffe-west")
    );
    let other_domain = id("spiffe://west.example.org.evil/ns/a/sa/b");
    assert_eq!(
        p.decide(&other_domain, &target("x.y.svc.cluster.local:1")),
        Verdict::Deny
    );
}

#[test]
fn default_is_all_authenticated_and_audit_allows_what_deny_would_refuse() {
    let caller = id("a.b.serviceaccount.identity.linkerd.cluster.local");
    let t = target("web.prod.svc.cluster.local:80");
    assert_eq!(
        Policy::default().decide(&caller, &t),
        Verdict::Allow {
            kind: "default",
            name: Label::from("all-authenticated")
        }
    );
    let audit = Policy::from_yaml("p", "default: deny\nmode: audit\n").unwrap();
    assert_eq!(audit.decide(&caller, &t), Verdict::AuditDeny);
}

#[test]
fn every_problem_in_a_bad_file_is_reported() {
    let text = r#"
default: maybe
mode: loud
rules:
  - name: a
    clients: ["*.", "spiffe://"]
    targets: []
  - name: a
    clients: []
    targets: [{port: 0}]
"#;
    let problems = Policy::from_yaml("p.yaml", text).unwrap_err();
    for needle in [
        "default \"maybe\"",
        "mode \"loud\"",
        "client pattern \"*.\"",
        "client pattern \"spiffe://\"",
        "needs at least one target",
        "used twice",
        "needs at least one client",
        "port 0",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "{needle}: {problems:?}"
        );
    }
    let unknown =
        Policy::from_yaml("p.yaml", "rules:\n  - name: a\n    clientz: []\n").unwrap_err();
    assert!(unknown[0].contains("clientz"), "{unknown:?}");
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = Policy::from_yaml("p", &text);
        }

        #[test]
        fn a_catch_all_rule_allows_every_caller_and_target(
            sa in "[a-z0-9]{1,10}",
            ns in "[a-z0-9]{1,10}",
            service in "[a-z0-9]{1,10}",
            port in 1u16..,
        ) {
            let p = Policy::from_yaml(
                "p",
                "default: deny\nrules: [{name: all, clients: [\"*\"], targets: [{}]}]\n",
            )
            .unwrap();
            let caller = id(&format!("{sa}.{ns}.serviceaccount.identity.linkerd.cluster.local"));
            let t = target(&format!("{service}.{ns}.svc.cluster.local:{port}"));
            prop_assert_eq!(
                p.decide(&caller, &t),
                Verdict::Allow { kind: "rule", name: Label::from("all") }
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_denial_is_logged_once_per_caller_and_target_per_minute() {
    let current = Current::new(Policy::default());
    let (web, api): (Arc<str>, Arc<str>) = ("web.east".into(), "api.east".into());
    let db: Arc<str> = "db.ns.svc.cluster.local:5432".into();
    assert!(current.log_denial(&web, &db), "the first denial is logged");
    assert!(
        !current.log_denial(&web, &db),
        "a retry within the minute is not"
    );
    assert!(current.log_denial(&api, &db), "another caller is");
    tokio::time::advance(Duration::from_secs(61)).await;
    assert!(
        current.log_denial(&web, &db),
        "and the same pair again after a minute"
    );
}

#[test]
fn a_replaced_policy_reaches_snapshots_by_version() {
    let current = Current::new(Policy::default());
    let mut snapshot = current.snapshot();
    let before = snapshot.clone();
    current.refresh(&mut snapshot);
    assert!(
        Arc::ptr_eq(&before.policy, &snapshot.policy),
        "unchanged: kept"
    );
    current.set(Policy::from_yaml("p", "default: deny\n").unwrap());
    current.refresh(&mut snapshot);
    assert_eq!(
        snapshot.decide(
            &id("web.east.serviceaccount.identity.linkerd.cluster.local"),
            &target("web.prod.svc.cluster.local:80")
        ),
        Verdict::Deny
    );
}

#[tokio::test(start_paused = true)]
async fn the_policy_file_carries_rate_limits_and_names_bad_ones() {
    let policy = Policy::from_yaml(
        "p",
        "rate_limits:\n  - \"web.east.serviceaccount.identity.linkerd.cluster.local=1/2\"\n",
    )
    .unwrap();
    let web = target("web.prod.svc.cluster.local:8080");
    let caller = "web.east.serviceaccount.identity.linkerd.cluster.local";
    let limits = policy.rate_limits();
    assert!(limits.take(caller, &web).is_ok() && limits.take(caller, &web).is_ok());
    assert!(limits.take(caller, &web).is_err(), "a burst of 2 at 1/s");
    assert!(Policy::default().rate_limits().is_empty());
    let e = Policy::from_yaml("p", "rate_limits: [\"*=0\", \"*=5\", \"x y=1\"]\n").unwrap_err();
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].contains("rate limit 1") && e[1].contains("rate limit 3"),
        "{e:?}"
    );
}

#[test]
fn the_policy_file_carries_splits_and_failover_and_names_bad_ones() {
    let policy = Policy::from_yaml(
        "p",
        "splits:\n  Web.Prod.svc.cluster.local.:8080:\n    - {to: web-v2.prod.svc.cluster.local:8080, weight: 3}\nfailover:\n  web.prod.svc.cluster.local:8080:\n    - web-backup.prod.svc.cluster.local:8080\n",
    )
    .unwrap();
    // Keyed as targets are looked up.
    let key = "web.prod.svc.cluster.local:8080";
    assert_eq!(policy.splits()[key][0].weight, 3);
    assert_eq!(
        policy.failover()[key][0].label(),
        "web-backup.prod.svc.cluster.local:8080"
    );
    assert!(Policy::default().splits().is_empty() && Policy::default().failover().is_empty());
    let e = Policy::from_yaml(
        "p",
        "splits:\n  web:\n    - a.ns.svc.cluster.local:80\n  b.ns.svc.cluster.local:80:\n    - {to: a.ns.svc.cluster.local:80, weight: 0}\nfailover:\n  c.ns.svc.cluster.local:80:\n    - c.ns.svc.cluster.local:80\n",
    )
    .unwrap_err();
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(
        e.iter()
            .any(|p| p.contains("\"web\"") && p.contains("name:port")),
        "{e:?}"
    );
    assert!(
        e.iter().any(|p| p.contains("no backend has a weight")),
        "{e:?}"
    );
    assert!(e.iter().any(|p| p.contains("itself")), "{e:?}");
}
