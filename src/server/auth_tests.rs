use super::*;
use crate::config::ServerConfig;

const WEB_SECRET: &str = "web-secret-0123456789";
const DB_SECRET: &str = "db-secret-0123456789";

fn hex(d: [u8; 32]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// A server config with tokens `web` and `db`, outputs `app`, `web-nginx`
/// and `audit`, the default directory, and `rules`.
fn config(rules: &str) -> Result<ServerConfig, crate::config::ConfigError> {
    let text = format!(
        r#"directory = "/srv/logs"
[output.app]
path = "/srv/app/{{host}}.log"
[output.web-nginx]
path = "/srv/nginx/{{host}}.log"
[output.audit]
path = "/srv/audit/{{host}}.log"
[[token]]
name = "web"
sha256 = "{}"
[[token]]
name = "db"
sha256 = "{}"
{rules}"#,
        hex(digest(WEB_SECRET)),
        hex(digest(DB_SECRET))
    );
    ServerConfig::from_toml_str(&text, "server.toml")
}

fn auth(rules: &str) -> AuthConfig {
    config(rules).unwrap().auth
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn stream<'a>(host: &'a str, meta: &'a [(&'a str, &'a str)]) -> StreamInfo<'a> {
    StreamInfo {
        host,
        path: "/var/log/app.log",
        meta,
    }
}

fn tok(name: &str, secret: &str) -> String {
    format!("{name}:{secret}")
}

#[test]
fn the_strongest_credential_is_the_identity() {
    let tokens = auth("").tokens;
    let peer = ip("10.0.0.5");
    let names = ["web1.example.com".to_string(), "web1".to_string()];
    let web = tok("web", WEB_SECRET);
    assert_eq!(
        identify(peer, &names, Some(&web), &tokens),
        Ok(Identity::Cert(names.clone().into()))
    );
    assert_eq!(
        identify(peer, &[], Some(&web), &tokens),
        Ok(Identity::Token("web".into()))
    );
    assert_eq!(
        identify(peer, &[], None, &tokens),
        Ok(Identity::Address(peer))
    );
    // A dual-stack listener's IPv4 peer is shown and matched as IPv4.
    assert_eq!(
        identify(ip("::ffff:10.0.0.5"), &[], None, &tokens)
            .unwrap()
            .to_string(),
        "address:10.0.0.5"
    );
}

#[test]
fn a_token_that_is_sent_is_always_checked() {
    let tokens = auth("").tokens;
    let peer = ip("10.0.0.5");
    let cert = ["web1".to_string()];
    for sent in [tok("web", DB_SECRET), tok("web", "x")] {
        let e = identify(peer, &cert, Some(&sent), &tokens).unwrap_err();
        assert_eq!(e, AuthError::WrongSecret("web".into()));
    }
    let e = identify(peer, &[], Some(&tok("nope", WEB_SECRET)), &tokens).unwrap_err();
    assert_eq!(e, AuthError::UnknownToken("nope".into()));
    assert_eq!(e.reply(), AuthError::WrongSecret("web".into()).reply());
    let e = identify(peer, &[], Some(WEB_SECRET), &tokens).unwrap_err();
    assert!(matches!(e, AuthError::Malformed(_)), "{e:?}");
    // Neither the log text nor the reply shows the secret.
    for e in [
        AuthError::WrongSecret("web".into()),
        AuthError::UnknownToken("x\ny".into()),
        e,
    ] {
        let shown = format!("{e} {}", e.reply());
        assert!(!shown.contains("secret-0123"), "{shown}");
        assert!(!shown.contains('\n'), "{shown}");
    }
}

#[test]
fn digests_compare_in_full() {
    let a = digest(WEB_SECRET);
    assert!(ct_eq(&a, &a));
    for i in [0, 13, 31] {
        let mut b = a;
        b[i] ^= 0x80;
        assert!(!ct_eq(&a, &b), "byte {i}");
    }
    // The well-known SHA-256 of "abc".
    assert_eq!(
        hex(digest("abc")),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn hash_token_prints_a_config_entry() {
    let entry = token_entry(&format!("web:{WEB_SECRET}\n")).unwrap();
    let want = format!(
        "[[token]]\nname = \"web\"\nsha256 = \"{}\"\n",
        hex(digest(WEB_SECRET))
    );
    assert_eq!(entry, want);
    assert_eq!(token_entry("web:short"), Err(TokenError::ShortSecret));
    assert_eq!(token_entry(WEB_SECRET), Err(TokenError::NoSeparator));
}

#[test]
fn rules_allow_hosts_outputs_and_matches_and_say_what_failed() {
    let cfg = auth(
        r#"
[[allow]]
token = "web"
hosts = ["web*"]
outputs = ["app", "web-*"]
[[allow]]
address = "10.1.0.0/16"
hosts = ["*"]
outputs = ["(default)"]
svc = "batch*"
[[allow]]
cert = "*.example.com"
hosts = ["db?"]
outputs = ["*"]
match = { env = "prod" }
"#,
    );
    let web = Identity::Token("web".into());
    let plain: &[(&str, &str)] = &[];
    assert_eq!(
        authorize(&cfg, &web, &stream("web1", plain), Some("app")),
        Ok(())
    );
    assert_eq!(
        authorize(&cfg, &web, &stream("web1", plain), Some("web-nginx")),
        Ok(())
    );
    assert_eq!(
        authorize(&cfg, &web, &stream("db1", plain), Some("app")),
        Err(Denied::Host)
    );
    assert_eq!(
        authorize(&cfg, &web, &stream("web1", plain), Some("audit")),
        Err(Denied::Output)
    );
    assert_eq!(
        authorize(&cfg, &web, &stream("web1", plain), None),
        Err(Denied::Output)
    );
    // A token rule is not an address rule: the token client at 10.1.2.3
    // is judged by the token's rules.
    let db = Identity::Token("db".into());
    assert_eq!(
        authorize(&cfg, &db, &stream("web1", plain), Some("app")),
        Err(Denied::Identity)
    );

    let inside = Identity::Address(ip("10.1.2.3"));
    let batch: &[(&str, &str)] = &[("svc", "batch-nightly")];
    assert_eq!(
        authorize(&cfg, &inside, &stream("anything", batch), None),
        Ok(())
    );
    assert_eq!(
        authorize(&cfg, &inside, &stream("anything", plain), None),
        Err(Denied::Match)
    );
    let outside = Identity::Address(ip("10.2.0.1"));
    assert_eq!(
        authorize(&cfg, &outside, &stream("a", batch), None),
        Err(Denied::Identity)
    );

    let cert = Identity::Cert(Box::new(["db1".into(), "db1.example.com".into()]));
    let prod: &[(&str, &str)] = &[("env", "prod")];
    assert_eq!(
        authorize(&cfg, &cert, &stream("db1", prod), Some("audit")),
        Ok(())
    );
    assert_eq!(
        authorize(&cfg, &cert, &stream("db1", plain), Some("audit")),
        Err(Denied::Match)
    );
    assert_eq!(
        authorize(&cfg, &cert, &stream("db12", prod), Some("audit")),
        Err(Denied::Host)
    );
    let other = Identity::Cert(Box::new(["db1.example.org".into()]));
    assert_eq!(
        authorize(&cfg, &other, &stream("db1", prod), Some("audit")),
        Err(Denied::Identity)
    );

    assert_eq!(
        Denied::Host.explain(&web, "db1", "app"),
        "token:web may not write host db1"
    );
    assert_eq!(
        Denied::Output.explain(&inside, "h", "audit"),
        "address:10.1.2.3 may not write output audit"
    );
}

#[test]
fn the_best_rule_explains_a_denial() {
    // One rule allows the host but not the output, another neither: the
    // refusal names the output.
    let cfg = auth(
        r#"
[[allow]]
token = "web"
hosts = ["db*"]
outputs = ["audit"]
[[allow]]
token = "web"
hosts = ["web*"]
outputs = ["app"]
"#,
    );
    let web = Identity::Token("web".into());
    let s = stream("web1", &[]);
    assert_eq!(
        authorize(&cfg, &web, &s, Some("audit")),
        Err(Denied::Output)
    );
}

#[test]
fn an_open_server_allows_everything_and_enforces_no_owner() {
    let cfg = auth("");
    assert!(cfg.is_open());
    let anyone = Identity::Address(ip("192.0.2.1"));
    assert_eq!(
        authorize(&cfg, &anyone, &stream("web1", &[]), Some("audit")),
        Ok(())
    );
    assert_eq!(
        claim(&cfg, Some("token:web"), &anyone, "web1"),
        Claim::Adopted {
            from: "token:web".into()
        }
    );
}

#[test]
fn only_the_owner_may_take_a_stream_over() {
    let cfg = auth(
        r#"
[[allow]]
token = "web"
hosts = ["web*"]
outputs = ["*"]
[[allow]]
address = "127.0.0.0/8"
hosts = ["*"]
outputs = ["*"]
"#,
    );
    let web = Identity::Token("web".into());
    let local = Identity::Address(ip("127.0.0.2"));
    assert_eq!(claim(&cfg, None, &web, "web1"), Claim::New);
    assert_eq!(claim(&cfg, Some("token:web"), &web, "web1"), Claim::Owned);
    assert_eq!(
        claim(&cfg, Some("token:web"), &local, "web1"),
        Claim::Refused {
            owner: "token:web".into()
        }
    );
    // The rules no longer let the recorded owner claim the host (its
    // credentials changed): the next allowed identity adopts the stream.
    for gone in ["token:retired", "address:192.0.2.7", "cert:old", "garbage"] {
        assert_eq!(
            claim(&cfg, Some(gone), &web, "web1"),
            Claim::Adopted { from: gone.into() },
            "{gone}"
        );
    }
    // The token may not claim db1, so its stream there is adoptable.
    assert_eq!(
        claim(&cfg, Some("token:web"), &local, "db1"),
        Claim::Adopted {
            from: "token:web".into()
        }
    );
}

#[test]
fn owners_read_back_as_the_identity_they_were() {
    for id in [
        Identity::Token("web".into()),
        Identity::Address(ip("2001:db8::1")),
        Identity::Address(ip("10.0.0.1")),
        Identity::Cert(Box::new(["web1.example.com".into()])),
    ] {
        assert_eq!(Identity::from_owner(&id.to_string()), Some(id));
    }
    let odd = Identity::Cert(Box::new(["a\nb".into()]));
    assert_eq!(odd.to_string(), "cert:a\\nb");
    assert_eq!(Identity::from_owner("token:"), None);
    assert_eq!(Identity::from_owner("address:web1"), None);
}

#[test]
fn bad_rules_are_one_clear_config_error() {
    for (rules, says) in [
        ("[[allow]]\nhosts = [\"*\"]\noutputs = [\"*\"]", "allow #1: names no identity"),
        ("[[allow]]\ntoken = \"web\"\naddress = \"10.0.0.0/8\"\nhosts = [\"*\"]\noutputs = [\"*\"]", "more than one identity"),
        ("[[allow]]\ntoken = \"\"\nhosts = [\"*\"]\noutputs = [\"*\"]", "the identity is empty"),
        ("[[allow]]\ncert = \"\"\nhosts = [\"*\"]\noutputs = [\"*\"]", "the identity is empty"),
        ("[[allow]]\ntoken = \"nope\"\nhosts = [\"*\"]\noutputs = [\"*\"]", "`token` \"nope\" is not defined"),
        ("[[allow]]\naddress = \"10.0.0.1/8\"\nhosts = [\"*\"]\noutputs = [\"*\"]", "did you mean \"10.0.0.0/8\""),
        ("[[allow]]\naddress = \"web1\"\nhosts = [\"*\"]\noutputs = [\"*\"]", "not an IP address"),
        ("[[allow]]\ntoken = \"web\"\noutputs = [\"*\"]", "`hosts` is missing"),
        ("[[allow]]\ntoken = \"web\"\nhosts = []\noutputs = [\"*\"]", "`hosts` is empty"),
        ("[[allow]]\ntoken = \"web\"\nhosts = [\"*\"]", "`outputs` is missing"),
        ("[[allow]]\ntoken = \"web\"\nhosts = [\"*\"]\noutputs = [\"nginx\"]", "\"nginx\" names no output"),
        ("[[allow]]\ntoken = \"web\"\nhosts = [\"[\"]\noutputs = [\"*\"]", "allow #1: `hosts`"),
        ("[[allow]]\ntoken = \"web\"\nhosts = [\"*\"]\noutputs = [\"*\"]\nmatch = { \"a b\" = \"x\" }", "`match`: key"),
        ("[[allow]]\ntoken = \"web\"\nhosts = [\"*\"]\noutputs = [\"*\"]\nuser = \"x\"", "unknown field `user`"),
        ("[[token]]\nname = \"web\"\nsha256 = \"00\"", "defined twice"),
        ("[[token]]\nname = \"x\"\nsha256 = \"00\"", "`sha256` must be 64 hex digits"),
        ("[[token]]\nname = \"a b\"\nsha256 = \"00\"", "`token.name`"),
    ] {
        let e = config(rules).unwrap_err();
        assert!(e.to_string().contains(says), "{rules}\n→ {e}");
        assert!(e.line.is_some(), "{rules}\n→ {e} has no line");
    }
}
