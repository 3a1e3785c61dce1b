use super::*;

fn host_alt(h: &str) -> Alternative {
    Alternative {
        host: Some(h.into()),
        path: None,
    }
}

fn alt(h: Option<&str>, path: Option<PathMatch>) -> Alternative {
    Alternative {
        host: h.map(Into::into),
        path,
    }
}

fn prefix(p: &str) -> Option<PathMatch> {
    Some(PathMatch::Prefix(p.into()))
}

fn exact(p: &str) -> Option<PathMatch> {
    Some(PathMatch::Exact(p.into()))
}

#[test]
fn the_seed_rule_is_one_host() {
    assert_eq!(
        parse("Host(`your-domain.com`)").unwrap(),
        [host_alt("your-domain.com")]
    );
}

#[test]
fn several_hosts_read_the_same_in_the_v2_and_v3_spellings() {
    let v2 = parse("Host(`a.example`, `B.example`)").unwrap();
    let v3 = parse("Host(`a.example`) || Host(`b.example`)").unwrap();
    assert_eq!(v2, [host_alt("a.example"), host_alt("b.example")]);
    assert_eq!(v2, v3);
    assert_eq!(
        parse("host(\"a.example\")").unwrap(),
        [host_alt("a.example")]
    );
}

#[test]
fn and_distributes_over_or_with_parentheses() {
    let alts =
        parse("(Host(`a`) || Host(`b`)) && (PathPrefix(`/api`) || Path(`/health`))").unwrap();
    assert_eq!(
        alts,
        [
            alt(Some("a"), prefix("/api")),
            alt(Some("a"), exact("/health")),
            alt(Some("b"), prefix("/api")),
            alt(Some("b"), exact("/health")),
        ]
    );
    // && binds tighter than ||.
    assert_eq!(
        parse("Host(`a`) && PathPrefix(`/x`) || PathPrefix(`/y`)").unwrap(),
        [alt(Some("a"), prefix("/x")), alt(None, prefix("/y"))]
    );
}

#[test]
fn conjunctions_that_cannot_match_are_dropped_and_nested_prefixes_narrow() {
    assert_eq!(
        parse("Host(`a`) && Host(`b`) || Host(`c`)").unwrap(),
        [host_alt("c")]
    );
    assert_eq!(
        parse("PathPrefix(`/api`) && PathPrefix(`/api/v2`)").unwrap(),
        [alt(None, prefix("/api/v2"))]
    );
    assert_eq!(
        parse("PathPrefix(`/api`) && Path(`/api/x`)").unwrap(),
        [alt(None, exact("/api/x"))]
    );
    let never = parse("Host(`a`) && Host(`b`)").unwrap_err();
    assert!(never.message.contains("never match"), "{never}");
    assert!(parse("Path(`/a`) && Path(`/b`)").is_err());
    assert!(parse("PathPrefix(`/a`) && PathPrefix(`/b`)").is_err());
}

#[test]
fn what_cutover_does_not_route_on_is_refused_where_it_is() {
    let cases = [
        ("!Host(`a`)", 1, "negation"),
        (
            "Host(`a`) && Headers(`X`, `y`)",
            14,
            "Headers is not supported",
        ),
        ("PathRegexp(`^/a`)", 1, "not supported"),
        ("Host(`a`", 9, "expected `)`"),
        ("Host(a)", 6, "quoted values"),
        ("Host(`a`) & Host(`b`)", 11, "`&` alone"),
        ("Host(`a`) Host(`b`)", 11, "unexpected `Host`"),
        ("Host(`a:80`)", 6, "has a port"),
        ("Host(`a b`)", 6, "not a host name"),
        ("PathPrefix(`api`)", 12, "does not start with /"),
        ("Host(`a)", 6, "not closed"),
        ("", 1, "ends early"),
    ];
    for (rule, at, part) in cases {
        let err = parse(rule).unwrap_err();
        assert_eq!(err.at, at, "{rule:?}: {err}");
        assert!(err.message.contains(part), "{rule:?}: {err}");
    }
}
