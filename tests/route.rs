//! Routing rules and escape attempts.

use std::path::Path;

use loghamster::config::ServerConfig;
use loghamster::sink::route::{Route, RouteError, Router, StreamInfo};

/// Key/value pairs as a client sends them.
type Meta<'a> = &'a [(&'a str, &'a str)];

const CONFIG: &str = r#"
directory = "/srv/logs"

[output.nginx]
path = "/var/log/remote/{host}/nginx-{file}"
match = { host = "web*", path = "/var/log/nginx/*" }

[output.prod]
path = "/var/log/prod/{svc}/{meta.dc}/{path}"
match = { env = "prod" }

[output.message]
path = "/var/log/messages"

[output.app]
path = "apps/{host}.{svc}.log"

[output.guarded]
path = "/var/log/guarded.log"
match = { host = "trusted" }
"#;

fn router(src: &str) -> Router {
    Router::new(&ServerConfig::from_toml_str(src, "server.toml").unwrap())
}

fn route(r: &Router, host: &str, path: &str, meta: &[(&str, &str)]) -> Result<Route, RouteError> {
    r.route(&StreamInfo { host, path, meta })
}

#[test]
fn rules_table() {
    let r = router(CONFIG);
    // (host, path, meta, output, full path)
    let cases: &[(&str, &str, Meta, Option<&str>, &str)] = &[
        // rule 1: first match table whose every pattern matches
        (
            "web1",
            "/var/log/nginx/access.log",
            &[],
            Some("nginx"),
            "/var/log/remote/web1/nginx-access.log",
        ),
        // `*` does not cross '/': falls through to the default route
        (
            "web1",
            "/var/log/nginx/old/access.log",
            &[],
            None,
            "/srv/logs/web1/var/log/nginx/old/access.log",
        ),
        // only one of two patterns matches
        (
            "db1",
            "/var/log/nginx/access.log",
            &[],
            None,
            "/srv/logs/db1/var/log/nginx/access.log",
        ),
        // meta key match; earlier output wins over later ones
        (
            "web1",
            "/var/log/nginx/a.log",
            &[("env", "prod"), ("svc", "x"), ("dc", "vie")],
            Some("nginx"),
            "/var/log/remote/web1/nginx-a.log",
        ),
        (
            "db1",
            "/var/lib/pg/pg.log",
            &[("svc", "pg"), ("env", "prod"), ("dc", "vie")],
            Some("prod"),
            "/var/log/prod/pg/vie/var/lib/pg/pg.log",
        ),
        // rule 2: svc names an output without match table
        (
            "db1",
            "/x.log",
            &[("svc", "message")],
            Some("message"),
            "/var/log/messages",
        ),
        (
            "db1",
            "/x.log",
            &[("svc", "app")],
            Some("app"),
            "/srv/logs/apps/db1.app.log",
        ),
        // an output with a match table cannot be selected by name
        (
            "db1",
            "/x.log",
            &[("svc", "guarded")],
            None,
            "/srv/logs/db1/x.log",
        ),
        (
            "trusted",
            "/x.log",
            &[],
            Some("guarded"),
            "/var/log/guarded.log",
        ),
        // rule 3: default route, '.' and empty components dropped
        (
            "db1",
            "/var/log/./syslog",
            &[],
            None,
            "/srv/logs/db1/var/log/syslog",
        ),
        (
            "db1",
            "relative//x",
            &[("svc", "unknown")],
            None,
            "/srv/logs/db1/relative/x",
        ),
    ];
    for (host, path, meta, output, full) in cases {
        let got = route(&r, host, path, meta).unwrap_or_else(|e| panic!("{host} {path}: {e}"));
        assert_eq!(got.output.as_deref(), *output, "{host} {path} {meta:?}");
        assert_eq!(got.full_path(), Path::new(full), "{host} {path} {meta:?}");
    }
}

#[test]
fn base_is_trusted_prefix() {
    let r = router(CONFIG);
    let got = route(&r, "web1", "/var/log/nginx/a.log", &[]).unwrap();
    assert_eq!(got.base, Path::new("/var/log/remote"));
    assert_eq!(got.relative, Path::new("web1/nginx-a.log"));
    let got = route(&r, "h", "/x", &[("svc", "message")]).unwrap();
    assert_eq!(
        (got.base.as_path(), got.relative.as_path()),
        (Path::new("/var/log"), Path::new("messages"))
    );
    let got = route(&r, "h", "/x/y", &[]).unwrap();
    assert_eq!(got.base, Path::new("/srv/logs"));
    assert_eq!(got.relative, Path::new("h/x/y"));
}

#[test]
fn missing_match_key_never_matches() {
    let r = router("[output.a]\npath = \"/o/{host}\"\nmatch = { dc = \"*\" }\n");
    assert_eq!(route(&r, "h", "/x", &[]), Err(RouteError::NoOutput));
    assert_eq!(
        route(&r, "h", "/x", &[("dc", "vie")])
            .unwrap()
            .output
            .as_deref(),
        Some("a")
    );
}

#[test]
fn no_directory_means_no_default_route() {
    let r = router("[output.a]\npath = \"/o/a.log\"\n");
    assert_eq!(
        route(&r, "h", "/x", &[("svc", "b")]),
        Err(RouteError::NoOutput)
    );
    assert_eq!(RouteError::NoOutput.reply_code(), 404);
    let r = Router::new(&ServerConfig::from_flags(None, None, false));
    assert_eq!(route(&r, "h", "/x", &[]), Err(RouteError::NoOutput));
}

#[test]
fn template_values_are_checked() {
    let r = router(
        r#"
[output.f]
path = "/o/{file}"
match = { kind = "file" }
[output.m]
path = "/o/{meta.dc}/x.log"
match = { kind = "meta" }
[output.p]
path = "/o/p-{path}"
match = { kind = "path" }
[output.s]
path = "/o/{svc}.log"
match = { kind = "svc" }
"#,
    );
    let bad_value = |k: &str| Err(RouteError::BadValue { key: k.to_string() });
    assert_eq!(
        route(&r, "h", "/var/log/", &[("kind", "file")]),
        bad_value("file")
    );
    assert_eq!(
        route(&r, "h", "/var/..", &[("kind", "file")]),
        bad_value("file")
    );
    assert_eq!(
        route(&r, "h", "/a", &[("kind", "meta")]),
        bad_value("meta.dc")
    );
    assert_eq!(
        route(&r, "h", "/a", &[("kind", "meta"), ("dc", "..")]),
        bad_value("meta.dc")
    );
    assert_eq!(
        route(&r, "h", "/a", &[("kind", "meta"), ("dc", "a/b")]),
        bad_value("meta.dc")
    );
    assert_eq!(route(&r, "h", "/a", &[("kind", "svc")]), bad_value("svc"));
    assert_eq!(
        route(&r, "h", "/a", &[("kind", "svc"), ("svc", "/etc")]),
        bad_value("svc")
    );
    assert_eq!(
        route(&r, "h", "/a", &[("kind", "svc"), ("svc", "")]),
        bad_value("svc")
    );
    let got = route(&r, "h", "/a/b", &[("kind", "path")]).unwrap();
    assert_eq!(got.full_path(), Path::new("/o/p-a/b"));
    assert_eq!(
        route(&r, "h", "/", &[("kind", "path")]),
        Err(RouteError::BadPath)
    );
    assert_eq!(bad_value("svc").unwrap_err().reply_code(), 400);
}

#[test]
fn escape_attempts_are_rejected() {
    let r = router(&format!(
        "{CONFIG}\n[output.esc]\npath = \"/var/log/esc/{{svc}}/{{path}}\"\nmatch = {{ svc = \"**\" }}\n"
    ));
    let cases: &[(&str, &str, Meta, RouteError)] = &[
        ("h", "..", &[], RouteError::BadPath),
        ("h", "/../etc/passwd", &[], RouteError::BadPath),
        ("h", "a/../../b", &[], RouteError::BadPath),
        ("h", "/var/log/\0x", &[], RouteError::BadPath),
        ("h", "/", &[], RouteError::BadPath),
        ("h", "", &[], RouteError::BadPath),
        ("../x", "/a", &[], RouteError::BadHost),
        ("..", "/a", &[], RouteError::BadHost),
        (".", "/a", &[], RouteError::BadHost),
        ("", "/a", &[], RouteError::BadHost),
        ("a/b", "/a", &[], RouteError::BadHost),
        ("a\0", "/a", &[], RouteError::BadHost),
        (
            "h",
            "/a",
            &[("svc", "../../etc")],
            RouteError::BadValue { key: "svc".into() },
        ),
        (
            "h",
            "/a",
            &[("svc", "/abs")],
            RouteError::BadValue { key: "svc".into() },
        ),
        (
            "h",
            "/a",
            &[("svc", "..")],
            RouteError::BadValue { key: "svc".into() },
        ),
        (
            "h",
            "/a",
            &[("svc", "x\0")],
            RouteError::BadValue { key: "svc".into() },
        ),
        ("h", "a/../../b", &[("svc", "ok")], RouteError::BadPath),
        ("h", "/a/..", &[("svc", "ok")], RouteError::BadPath),
    ];
    for (host, path, meta, want) in cases {
        assert_eq!(
            route(&r, host, path, meta).as_ref(),
            Err(want),
            "{host:?} {path:?} {meta:?}"
        );
        assert_eq!(want.reply_code(), 400);
    }
    // Absolute stream paths stay below the base.
    let got = route(&r, "h", "/etc/passwd", &[]).unwrap();
    assert_eq!(got.full_path(), Path::new("/srv/logs/h/etc/passwd"));
    let got = route(&r, "h", "//etc/passwd", &[("svc", "x")]).unwrap();
    assert_eq!(got.full_path(), Path::new("/var/log/esc/x/etc/passwd"));
}

#[test]
fn relative_is_always_normal_components() {
    let r = router(CONFIG);
    let paths = ["/a", "a", "./a/./b", "/x//y/", "/var/log/nginx/a.log"];
    for p in paths {
        for meta in [&[][..], &[("svc", "app")], &[("svc", "message")]] {
            let got = route(&r, "h-1.x_y", p, meta).unwrap();
            assert!(got
                .relative
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_))));
            assert!(got.full_path().starts_with(&got.base));
        }
    }
}

#[test]
fn errors_display() {
    assert_eq!(RouteError::BadHost.to_string(), "invalid host name");
    assert_eq!(
        RouteError::BadValue { key: "svc".into() }.to_string(),
        "missing or invalid value for svc"
    );
}
