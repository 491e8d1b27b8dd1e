use super::*;

fn policy(allow: &[&str], deny: &[&str]) -> Policy {
    Policy::new("default", allow, deny).unwrap()
}

fn ok(p: &Policy, host: &str, port: u16) -> bool {
    p.decide(host, port).allowed
}

#[test]
fn rules_parse_hosts_wildcards_ports_and_ip_literals() {
    let r = Rule::parse("API.Example.COM.").unwrap();
    assert_eq!(r.host, RuleHost::Exact("api.example.com".into()));
    assert_eq!(r.port, None);
    let r = Rule::parse("*.example.com:8443").unwrap();
    assert_eq!(r.host, RuleHost::Below("example.com".into()));
    assert_eq!(r.port, Some(8443));
    let r = Rule::parse("[::1]:8080").unwrap();
    assert_eq!(r.host, RuleHost::Ip("::1".parse().unwrap()));
    assert_eq!(r.port, Some(8080));
    let r = Rule::parse("10.0.0.5").unwrap();
    assert_eq!(r.host, RuleHost::Ip("10.0.0.5".parse().unwrap()));
    assert_eq!(r.as_str(), "10.0.0.5");
}

#[test]
fn bad_rules_are_refused_with_a_reason() {
    for (text, says) in [
        ("*.", "needs a domain"),
        ("", "empty"),
        ("*", "only allowed as a leading"),
        ("a.*.com", "only allowed as a leading"),
        ("*.10.0.0.1", "wildcard cannot stand before an IP"),
        ("::1", "brackets"),
        ("[::1", "closing ']'"),
        ("[::1]x", "unexpected"),
        ("example.com:0", "1 to 65535"),
        ("example.com:99999", "1 to 65535"),
        ("example.com:", "1 to 65535"),
        ("exa mple.com", "only letters"),
        ("example..com", "empty label"),
        ("2130706433", "numeric"),
        ("[nothex]", "not an IPv6"),
    ] {
        let e = Rule::parse(text).unwrap_err();
        assert!(e.contains(says), "{text:?}: {e}");
        assert!(e.starts_with("network rule"), "{text:?}: {e}");
    }
}

#[test]
fn a_rule_without_port_covers_443_and_80_only() {
    let p = policy(&["example.com"], &[]);
    assert!(ok(&p, "example.com", 443));
    assert!(ok(&p, "example.com", 80));
    assert!(!ok(&p, "example.com", 8443));
    let p = policy(&["example.com:8443"], &[]);
    assert!(ok(&p, "example.com", 8443));
    assert!(!ok(&p, "example.com", 443));
}

#[test]
fn matching_ignores_case_and_a_trailing_dot() {
    let p = policy(&["Example.COM"], &[]);
    assert!(ok(&p, "EXAMPLE.com.", 443));
    assert!(ok(&p, "example.com", 443));
}

#[test]
fn wildcard_matches_subdomains_but_not_the_bare_domain() {
    let p = policy(&["*.example.test"], &[]);
    assert!(ok(&p, "a.example.test", 443));
    assert!(ok(&p, "a.b.example.test", 443));
    assert!(!ok(&p, "example.test", 443));
    assert!(!ok(&p, "badexample.test", 443));
    assert!(!ok(&p, "example.test.evil", 443));
    let d = p.decide("a.example.test", 443);
    assert_eq!(d.rule, "*.example.test");
    assert!(!d.exact);
}

#[test]
fn deny_beats_allow_and_a_portless_deny_covers_every_port() {
    let p = policy(
        &["*.example.test", "x.example.test:22"],
        &["x.example.test"],
    );
    assert!(ok(&p, "y.example.test", 443));
    for port in [443, 80, 22] {
        let d = p.decide("x.example.test", port);
        assert!(!d.allowed);
        assert_eq!(d.rule, "x.example.test");
        assert!(d.reason.contains("network.deny"), "{}", d.reason);
    }
    let p = policy(&["*.example.test"], &["*.bad.example.test"]);
    assert!(!ok(&p, "a.bad.example.test", 443));
    assert!(ok(&p, "bad.example.test", 443));
}

#[test]
fn ip_literals_and_localhost_need_an_exact_rule() {
    let p = policy(&["*.localhost", "*.example.test"], &[]);
    for (host, port) in [
        ("127.0.0.1", 443),
        ("[::1]", 443),
        ("8.8.8.8", 443),
        ("localhost", 443),
        ("a.localhost", 443),
    ] {
        let d = p.decide(host, port);
        assert!(!d.allowed, "{host}");
        assert!(d.reason.contains("add --allow-host"), "{}", d.reason);
    }
    let p = policy(&["127.0.0.1:8080", "[::1]:8080", "a.localhost"], &[]);
    assert!(ok(&p, "127.0.0.1", 8080));
    assert!(!ok(&p, "127.0.0.1", 8081));
    assert!(ok(&p, "[::1]", 8080));
    assert!(ok(&p, "::1", 8080));
    assert!(
        ok(&p, "[::ffff:127.0.0.1]", 8080),
        "mapped form is the same address"
    );
    assert!(ok(&p, "a.localhost", 443));
    assert!(!ok(&p, "b.localhost", 443));
}

#[test]
fn refusal_names_profile_and_suggests_the_rule_to_add() {
    let p = Policy::new("work", &["*.example.test"], &[] as &[&str]).unwrap();
    let d = p.decide("evil.example", 443);
    assert_eq!(d.rule, "not in network.allow");
    assert_eq!(
        d.reason,
        "not in profile \"work\"'s network.allow; add --allow-host evil.example"
    );
    let d = p.decide("evil.example", 8443);
    assert!(
        d.reason.ends_with("add --allow-host evil.example:8443"),
        "{}",
        d.reason
    );
    let d = p.decide("10.1.2.3", 22);
    assert!(d.reason.starts_with("a private address,"), "{}", d.reason);
    assert!(
        d.reason.ends_with("add --allow-host 10.1.2.3:22"),
        "{}",
        d.reason
    );
}

#[test]
fn numeric_and_malformed_destinations_are_invalid() {
    let p = policy(&["*.example.test"], &[]);
    for h in [
        "2130706433",
        "127.1",
        "0x7f000001",
        "a b",
        "",
        "ex%41mple.test",
        "[::1",
    ] {
        let d = p.decide(h, 443);
        assert!(!d.allowed, "{h}");
        assert_eq!(d.rule, "invalid host", "{h}");
    }
}

#[test]
fn private_ranges_are_classified() {
    for a in [
        "0.0.0.0",
        "0.1.2.3",
        "10.0.0.1",
        "100.64.0.1",
        "100.127.255.255",
        "127.0.0.1",
        "127.255.0.1",
        "169.254.169.254",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::",
        "::1",
        "fc00::1",
        "fdff::1",
        "fe80::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::127.0.0.1",
        "64:ff9b::a9fe:a9fe",
    ] {
        assert!(is_private(a.parse().unwrap()), "{a} should be private");
    }
    for a in [
        "1.1.1.1",
        "100.63.255.255",
        "100.128.0.1",
        "172.15.0.1",
        "172.32.0.1",
        "192.167.1.1",
        "223.255.255.255",
        "2606:4700::1111",
        "::ffff:1.1.1.1",
        "64:ff9b::101:101",
    ] {
        assert!(!is_private(a.parse().unwrap()), "{a} should be public");
    }
}

fn resolved(p: &Policy, host: &str, port: u16, ips: &[&str]) -> Decision {
    let r = StaticResolver::new().with(
        host,
        &ips.iter().map(|s| s.parse().unwrap()).collect::<Vec<_>>(),
    );
    let addrs = r.resolve(host, port).unwrap();
    p.check_resolved(host, port, &p.decide(host, port), &addrs)
}

#[test]
fn a_name_resolving_to_loopback_is_refused_unless_named_exactly() {
    let p = policy(&["*.test"], &[]);
    let d = resolved(&p, "evil.test", 443, &["93.184.216.34", "127.0.0.1"]);
    assert!(!d.allowed);
    assert_eq!(d.rule, "private address");
    assert!(d.reason.contains("resolves to 127.0.0.1"), "{}", d.reason);
    assert!(
        d.reason.contains("add --allow-host evil.test"),
        "{}",
        d.reason
    );
    assert!(resolved(&p, "good.test", 443, &["93.184.216.34"]).allowed);
    assert!(!resolved(&p, "v6.test", 443, &["::ffff:10.0.0.1"]).allowed);

    let p = policy(&["*.test", "evil.test"], &[]);
    let d = resolved(&p, "evil.test", 443, &["127.0.0.1"]);
    assert!(d.allowed, "{d:?}");
    assert_eq!(d.rule, "evil.test", "the exact rule is the one reported");
}

#[test]
fn a_resolved_address_named_by_a_deny_rule_is_refused() {
    let p = policy(&["metadata.test"], &["169.254.169.254"]);
    let d = resolved(&p, "metadata.test", 80, &["169.254.169.254"]);
    assert!(!d.allowed);
    assert_eq!(d.rule, "169.254.169.254");
}

#[test]
fn static_resolver_fails_unknown_names_and_passes_literals() {
    let r = StaticResolver::new().with("Known.Test", &["192.0.2.1".parse().unwrap()]);
    assert_eq!(r.resolve("known.test.", 80).unwrap()[0].port(), 80);
    assert!(r.resolve("unknown.test", 80).is_err());
    assert_eq!(
        r.resolve("[::1]", 8).unwrap(),
        vec!["[::1]:8".parse().unwrap()]
    );
}

#[test]
fn system_resolver_resolves_localhost_on_its_small_helper_thread() {
    let a = SystemResolver::default().resolve("localhost", 9).unwrap();
    assert!(
        a.iter().all(|a| a.ip().is_loopback() && a.port() == 9),
        "{a:?}"
    );
}
