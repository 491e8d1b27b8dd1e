//! Asking the npm registry which version each dist-tag points to.
//!
//! The answer is hostile input: it may come from a captive portal, a broken mirror or a
//! proxy's login page. Everything is bounded: one 5 s deadline for the whole check (both
//! requests, connect, headers and body), and a cap on the bytes read.
//!
//! The client is set up the way the rest of the machine reaches the registry, because
//! corporate networks intercept TLS and force a proxy: it trusts the system's CA store
//! (or `SSL_CERT_FILE`/`SSL_CERT_DIR`) plus `NODE_EXTRA_CA_CERTS` and npm's `cafile`, and
//! takes its proxy from the curl variables, then from npm's config.

mod env;
mod npmrc;
mod setting;
mod trust;

pub use env::{NetEnv, ProxyEnv, TrustEnv};
pub use npmrc::{parse_npmrc, read_npmrc, NpmRc};
pub use setting::Setting;
pub use trust::{load_trust, Trust};

use std::collections::BTreeMap;
use std::io::Read;

use std::time::{Duration, Instant};

pub const PACKAGE: &str = "@anthropic-ai/claude-code";
/// The package name with its `/` escaped, as registries expect it in a path.
const PACKAGE_PATH: &str = "@anthropic-ai%2fclaude-code";
pub const DEFAULT_REGISTRY: &str = "https://registry.npmjs.org";
/// For the whole check: the dist-tags request and, when it answers 404, the package
/// document together.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// The dist-tags document is a few dozen bytes.
const TAGS_BODY_CAP: u64 = 64 * 1024;
/// The package document lists every version; Claude Code's was 0.7 MB in 2026.
const DOC_BODY_CAP: u64 = 16 * 1024 * 1024;

/// The registry base URL, without a trailing `/`.
pub fn registry_base(csbox: Option<&str>, npm: Option<&str>) -> Result<String, String> {
    let (var, url) = match (csbox, npm) {
        (Some(u), _) => ("CSBOX_REGISTRY", u),
        (None, Some(u)) => ("npm_config_registry", u),
        (None, None) => return Ok(DEFAULT_REGISTRY.into()),
    };
    if !(url.starts_with("https://") || url.starts_with("http://")) || host_of(url).is_empty() {
        return Err(format!(
            "{var}={url:?} is not an http(s) URL (e.g. https://registry.npmjs.org)"
        ));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// `host` of `scheme://user@host:port/path`, lower-case, without brackets or port.
fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = hostport.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        hostport.split(':').next().unwrap_or("")
    };
    host.to_ascii_lowercase()
}

/// A URL as it may be shown or logged: a proxy's `user:password@` becomes `***@`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return match url.rsplit_once('@') {
            Some((_, host)) => format!("***@{host}"),
            None => url.to_string(),
        };
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_string(),
    }
}

/// The proxy for `url`, as curl chooses it: the scheme's variable, else ALL_PROXY; only
/// when none of those is set, npm's `https-proxy`, else its `proxy` (npm uses the pair for
/// both schemes). NO_PROXY (else npm's `noproxy`) lists hosts that go direct: exactly, as
/// a domain suffix, or `*`. ureq 2 would read only the variables and ignore NO_PROXY, so
/// the choice is made here.
pub fn proxy_for<'a>(url: &str, env: &'a ProxyEnv) -> Option<&'a Setting> {
    let host = host_of(url);
    if let Some(list) = env.no_proxy.as_ref().or(env.npm_noproxy.as_ref()) {
        for entry in list
            .value
            .split([',', ' '])
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let entry = entry.to_ascii_lowercase();
            if entry == "*" {
                return None;
            }
            let name = host_of(&format!("x://{}", entry.trim_start_matches('.')));
            if host == name || host.ends_with(&format!(".{name}")) {
                return None;
            }
        }
    }
    let scheme_var = if url.starts_with("https://") {
        &env.https
    } else {
        &env.http
    };
    scheme_var
        .as_ref()
        .or(env.all.as_ref())
        .or(env.npm_https.as_ref())
        .or(env.npm_proxy.as_ref())
}

/// GET the dist-tags of the package: `{"latest":"2.1.330", …}`. Registries without the
/// dist-tags endpoint (it answers 404) are asked for the package document instead, within
/// what is left of the same [`TIMEOUT`].
pub fn fetch_dist_tags(base: &str, net: &NetEnv) -> Result<BTreeMap<String, String>, String> {
    let deadline = Instant::now() + TIMEOUT;
    if let Some(p) = &net.npmrc_problem {
        return Err(p.clone());
    }
    let trust = if base.starts_with("https://") {
        Some(load_trust(&net.trust)?)
    } else {
        None
    };
    let client = Client {
        net,
        trust: trust.as_ref(),
        deadline,
    };
    let tags_url = format!("{base}/-/package/{PACKAGE_PATH}/dist-tags");
    match client.get(&tags_url, TAGS_BODY_CAP) {
        Err(Fetch::NotFound(_)) => {
            let doc_url = format!("{base}/{PACKAGE_PATH}");
            let body = client
                .get(&doc_url, DOC_BODY_CAP)
                .map_err(|e| e.to_string())?;
            parse_dist_tags(&body).map_err(|e| format!("{doc_url}: {e}"))
        }
        Err(e) => Err(e.to_string()),
        Ok(body) => parse_dist_tags(&body).map_err(|e| format!("{tags_url}: {e}")),
    }
}

enum Fetch {
    NotFound(String),
    Failed(String),
}

impl std::fmt::Display for Fetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fetch::NotFound(m) | Fetch::Failed(m) => f.write_str(m),
        }
    }
}

/// What every request of one check shares.
struct Client<'a> {
    net: &'a NetEnv,
    trust: Option<&'a Trust>,
    deadline: Instant,
}

impl Client<'_> {
    fn get(&self, url: &str, cap: u64) -> Result<Vec<u8>, Fetch> {
        let proxy = proxy_for(url, &self.net.proxy);
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left < Duration::from_millis(1) {
            return Err(Fetch::Failed(timed_out(url, proxy)));
        }
        // ureq's connect timeout is its own (30 s unless set) and ignores the request's
        // deadline, so it gets what is left too.
        let mut agent = ureq::AgentBuilder::new()
            .timeout_connect(left)
            .user_agent(concat!("csbox/", env!("CARGO_PKG_VERSION")));
        if let Some(trust) = self.trust {
            agent = agent.tls_config(trust.config.clone());
        }
        if let Some(p) = proxy {
            // An HTTP proxy gets CONNECT for an https:// URL: TLS stays end to end.
            let parsed = ureq::Proxy::new(&p.value).map_err(|e| {
                Fetch::Failed(format!(
                    "the proxy {} from {} is not usable ({e}); use http://host:port, or list the registry in NO_PROXY",
                    redact(&p.value),
                    p.from
                ))
            })?;
            agent = agent.proxy(parsed);
        }
        let resp = agent
            .build()
            .get(url)
            .timeout(left)
            // The abbreviated ("corgi") document when the full one is asked for: far smaller.
            .set(
                "Accept",
                "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8",
            )
            .call()
            .map_err(|e| self.describe_error(url, proxy, e))?;
        if let Some(len) = resp
            .header("Content-Length")
            .and_then(|l| l.parse::<u64>().ok())
        {
            if len > cap {
                return Err(too_big(url, cap));
            }
        }
        let mut body = Vec::new();
        resp.into_reader()
            .take(cap + 1)
            .read_to_end(&mut body)
            .map_err(|e| Fetch::Failed(self.describe_io(url, proxy, &e)))?;
        if body.len() as u64 > cap {
            return Err(too_big(url, cap));
        }
        Ok(body)
    }

    fn describe_error(&self, url: &str, proxy: Option<&Setting>, e: ureq::Error) -> Fetch {
        match e {
            ureq::Error::Status(404, _) => Fetch::NotFound(format!(
                "{url} answered 404 Not Found: the registry has no {PACKAGE}; check CSBOX_REGISTRY or npm_config_registry"
            )),
            ureq::Error::Status(code @ (401 | 403), _) => Fetch::Failed(format!(
                "{url} answered {code}: the registry wants credentials, which csbox does not send; point CSBOX_REGISTRY at a registry that serves {PACKAGE} anonymously"
            )),
            ureq::Error::Status(code, _) if code >= 500 => Fetch::Failed(format!(
                "{url} answered {code}: the registry is failing; try again later"
            )),
            ureq::Error::Status(code, _) => Fetch::Failed(format!("{url} answered HTTP {code}")),
            ureq::Error::Transport(t) => {
                let io = std::error::Error::source(&t)
                    .and_then(|s| s.downcast_ref::<std::io::Error>());
                if let Some(io) = io {
                    return Fetch::Failed(self.describe_io(url, proxy, io));
                }
                let via = match proxy {
                    Some(p) => format!(" through the proxy {} (from {})", redact(&p.value), p.from),
                    None => String::new(),
                };
                Fetch::Failed(format!(
                    "cannot reach {url}{via}: {t}; check the network, HTTPS_PROXY and CSBOX_REGISTRY"
                ))
            }
        }
    }

    fn describe_io(&self, url: &str, proxy: Option<&Setting>, e: &std::io::Error) -> String {
        use std::io::ErrorKind::{TimedOut, WouldBlock};
        if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            return self.describe_tls(url, tls);
        }
        if matches!(e.kind(), TimedOut | WouldBlock) {
            timed_out(url, proxy)
        } else {
            format!(
                "cannot read from {url}: {e}; check the network, HTTPS_PROXY and CSBOX_REGISTRY"
            )
        }
    }

    fn describe_tls(&self, url: &str, e: &rustls::Error) -> String {
        use rustls::CertificateError::UnknownIssuer;
        let trusted = self.trust.map_or("nothing", |t| t.summary.as_str());
        match e {
            rustls::Error::InvalidCertificate(UnknownIssuer) => format!(
                "{url}: the server's certificate is not signed by a CA csbox trusts ({e}); csbox trusts {trusted}. Behind a TLS-intercepting proxy, point NODE_EXTRA_CA_CERTS or SSL_CERT_FILE at its CA"
            ),
            rustls::Error::InvalidCertificate(_) => format!(
                "{url}: the server's certificate is not valid for it ({e}); check the clock and CSBOX_REGISTRY"
            ),
            _ => format!("{url}: TLS handshake failed ({e}); check HTTPS_PROXY and CSBOX_REGISTRY"),
        }
    }
}

fn timed_out(url: &str, proxy: Option<&Setting>) -> String {
    let via = match proxy {
        Some(p) => format!(" through the proxy {} (from {})", redact(&p.value), p.from),
        None => String::new(),
    };
    format!(
        "no complete answer from {url}{via} within {} s; check the network, HTTPS_PROXY and CSBOX_REGISTRY",
        TIMEOUT.as_secs()
    )
}

fn too_big(url: &str, cap: u64) -> Fetch {
    Fetch::Failed(format!(
        "{url} answered with more than {} KiB, which is not an npm document; check CSBOX_REGISTRY",
        cap / 1024
    ))
}

/// Accepts the dist-tags document or a package document (which carries `dist-tags`).
pub fn parse_dist_tags(body: &[u8]) -> Result<BTreeMap<String, String>, String> {
    let trimmed = body.trim_ascii_start();
    if trimmed.starts_with(b"<") {
        return Err("the answer is HTML, not JSON (a proxy login page or the wrong URL?); check CSBOX_REGISTRY".into());
    }
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| format!("the answer is not JSON ({e}); check CSBOX_REGISTRY"))?;
    let tags = match value.get("dist-tags") {
        Some(t) => t,
        None => &value,
    };
    let obj = tags
        .as_object()
        .ok_or("the answer is JSON but not a dist-tags object; check CSBOX_REGISTRY")?;
    let mut out = BTreeMap::new();
    for (k, v) in obj {
        // Only string values are versions; ignore anything else rather than guess.
        if let Some(s) = v.as_str() {
            out.insert(k.clone(), s.to_string());
        }
    }
    if out.is_empty() {
        return Err("the answer has no dist-tags; check CSBOX_REGISTRY".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::env::npm_is_set;
    use super::npmrc::{ini_value, NPMRC_CAP};
    use super::*;

    fn set(v: &str, from: &str) -> Option<Setting> {
        Some(Setting::new(v, from))
    }

    fn chosen(url: &str, env: &ProxyEnv) -> Option<String> {
        proxy_for(url, env).map(|s| s.value.clone())
    }

    #[test]
    fn registry_comes_from_csbox_then_npm_then_default() {
        assert_eq!(registry_base(None, None).unwrap(), DEFAULT_REGISTRY);
        assert_eq!(
            registry_base(None, Some("https://npm.corp/artifactory/api/npm/npm/")).unwrap(),
            "https://npm.corp/artifactory/api/npm/npm"
        );
        assert_eq!(
            registry_base(Some("http://127.0.0.1:4873"), Some("https://x")).unwrap(),
            "http://127.0.0.1:4873"
        );
        let e = registry_base(Some("registry.npmjs.org"), None).unwrap_err();
        assert!(
            e.starts_with("CSBOX_REGISTRY=") && e.contains("http(s) URL"),
            "{e}"
        );
    }

    #[test]
    fn hosts_are_extracted_from_urls() {
        assert_eq!(
            host_of("https://u:p@Registry.Example.com:8443/a"),
            "registry.example.com"
        );
        assert_eq!(host_of("http://[::1]:8080/"), "::1");
        assert_eq!(host_of("http://127.0.0.1"), "127.0.0.1");
    }

    #[test]
    fn proxy_follows_scheme_then_all_and_honours_no_proxy() {
        let env = ProxyEnv {
            https: set("http://sp:3128", "HTTPS_PROXY"),
            all: set("http://ap:3128", "ALL_PROXY"),
            no_proxy: set("localhost, .corp.example,127.0.0.1:4873", "NO_PROXY"),
            ..Default::default()
        };
        assert_eq!(
            chosen("https://registry.npmjs.org", &env).as_deref(),
            Some("http://sp:3128")
        );
        assert_eq!(
            proxy_for("https://registry.npmjs.org", &env).unwrap().from,
            "HTTPS_PROXY"
        );
        assert_eq!(
            chosen("http://registry.npmjs.org", &env).as_deref(),
            Some("http://ap:3128")
        );
        assert_eq!(chosen("https://npm.corp.example/x", &env), None);
        assert_eq!(chosen("http://127.0.0.1:9/x", &env), None);
        assert_eq!(chosen("http://localhost:9", &env), None);
        let star = ProxyEnv {
            no_proxy: set("*", "NO_PROXY"),
            ..env
        };
        assert_eq!(chosen("https://registry.npmjs.org", &star), None);
    }

    #[test]
    fn npm_proxy_config_applies_only_when_the_curl_variables_say_nothing() {
        let npm = ProxyEnv {
            npm_https: set("http://npm-https:1", "npm_config_https_proxy"),
            npm_proxy: set("http://npm-proxy:2", "proxy in /h/.npmrc"),
            npm_noproxy: set("internal.example", "noproxy in /h/.npmrc"),
            ..Default::default()
        };
        // npm uses https-proxy, else proxy, for both schemes.
        assert_eq!(
            chosen("https://registry.npmjs.org", &npm).as_deref(),
            Some("http://npm-https:1")
        );
        assert_eq!(
            chosen("http://registry.npmjs.org", &npm).as_deref(),
            Some("http://npm-https:1")
        );
        let only_proxy = ProxyEnv {
            npm_https: None,
            ..npm.clone()
        };
        assert_eq!(
            proxy_for("https://registry.npmjs.org", &only_proxy)
                .unwrap()
                .from,
            "proxy in /h/.npmrc"
        );
        assert_eq!(chosen("https://npm.internal.example", &npm), None);

        // The environment wins, NO_PROXY included.
        let both = ProxyEnv {
            https: set("http://env:3", "HTTPS_PROXY"),
            no_proxy: set("other.example", "NO_PROXY"),
            ..npm
        };
        assert_eq!(
            chosen("https://registry.npmjs.org", &both).as_deref(),
            Some("http://env:3")
        );
        assert_eq!(
            chosen("https://npm.internal.example", &both).as_deref(),
            Some("http://env:3"),
            "NO_PROXY replaces npm's noproxy"
        );
    }

    #[test]
    fn proxy_credentials_are_never_shown() {
        assert_eq!(
            redact("http://alice:s3cret@proxy.corp:3128"),
            "http://***@proxy.corp:3128"
        );
        assert_eq!(redact("alice:s3cret@proxy:3128"), "***@proxy:3128");
        assert_eq!(redact("http://proxy:3128/a@b"), "http://proxy:3128/a@b");
        assert_eq!(redact("http://proxy:3128"), "http://proxy:3128");
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn npmrc_gives_its_four_keys_and_nothing_else() {
        let text = "\
; a comment
# another
registry=https://registry.npmjs.org/
//registry.npmjs.org/:_authToken=npm_SECRET
https-proxy = http://proxy.corp:3128 ; trailing comment
proxy=\"http://quoted:8080\"
noproxy[]=localhost
noproxy[] = .corp.example
cafile='/etc/ssl/corp.pem'
strict-ssl=false
";
        let rc = parse_npmrc(text, "/h/.npmrc", &no_env);
        assert_eq!(
            rc.https_proxy,
            set("http://proxy.corp:3128", "https-proxy in /h/.npmrc")
        );
        assert_eq!(rc.proxy.unwrap().value, "http://quoted:8080");
        assert_eq!(rc.noproxy.unwrap().value, "localhost,.corp.example");
        assert_eq!(rc.cafile.unwrap().value, "/etc/ssl/corp.pem");
    }

    #[test]
    fn npmrc_last_line_wins_sections_end_top_level_and_env_expands() {
        let env = |k: &str| (k == "CORP_PROXY").then(|| "http://from-env:1".to_string());
        let text = "\
proxy=http://first:1
proxy=${CORP_PROXY}
https-proxy=${UNSET}
cafile=${UNSET?}/ca.pem
[section]
noproxy=ignored
";
        let rc = parse_npmrc(text, "f", &env);
        assert_eq!(rc.proxy.unwrap().value, "http://from-env:1");
        assert_eq!(rc.https_proxy.unwrap().value, "${UNSET}");
        assert_eq!(rc.cafile.unwrap().value, "/ca.pem");
        assert_eq!(rc.noproxy, None);
        assert_eq!(ini_value(r"a\;b ; c"), "a;b");
        assert!(!npm_is_set("false") && !npm_is_set(" ") && npm_is_set("http://p:1"));
    }

    #[test]
    fn a_missing_npmrc_is_empty_and_a_fifo_is_an_error_not_a_hang() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            read_npmrc(&d.path().join("none"), &no_env).unwrap(),
            NpmRc::default()
        );
        let fifo = d.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let t0 = Instant::now();
        let e = read_npmrc(&fifo, &no_env).unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(1));
        assert!(
            e.contains("not a regular file") && e.contains("fifo"),
            "{e}"
        );
        let big = d.path().join("big");
        std::fs::write(&big, vec![b'#'; NPMRC_CAP as usize + 1]).unwrap();
        assert!(read_npmrc(&big, &no_env)
            .unwrap_err()
            .contains("larger than"));
    }

    fn test_ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn extra_ca_files_add_to_the_roots_and_bad_ones_name_the_variable() {
        let d = tempfile::tempdir().unwrap();
        let ca = d.path().join("ca.pem");
        std::fs::write(&ca, test_ca_pem()).unwrap();
        let only_file = TrustEnv {
            ssl_cert_file: Some(ca.clone()),
            ..Default::default()
        };
        let t = load_trust(&only_file).unwrap();
        assert_eq!(t.summary, format!("SSL_CERT_FILE={} (1 CA)", ca.display()));

        let extra = TrustEnv {
            node_extra_ca_certs: Some(ca.clone()),
            npm_cafile: set(ca.to_str().unwrap(), "cafile in /h/.npmrc"),
            ..only_file.clone()
        };
        let t = load_trust(&extra).unwrap();
        assert!(
            t.summary.contains("NODE_EXTRA_CA_CERTS=")
                && t.summary.contains("cafile in /h/.npmrc=")
        );

        let junk = d.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        for (env, var, path, why) in [
            (
                TrustEnv {
                    node_extra_ca_certs: Some(junk.clone()),
                    ..only_file.clone()
                },
                "NODE_EXTRA_CA_CERTS",
                &junk,
                "holds no PEM certificate",
            ),
            (
                TrustEnv {
                    ssl_cert_file: Some(d.path().join("missing.pem")),
                    ..Default::default()
                },
                "SSL_CERT_FILE",
                &d.path().join("missing.pem"),
                "No such file",
            ),
            (
                TrustEnv {
                    npm_cafile: set(d.path().to_str().unwrap(), "npm_config_cafile"),
                    ..only_file.clone()
                },
                "npm_config_cafile",
                &d.path().to_path_buf(),
                "is a directory",
            ),
        ] {
            let e = load_trust(&env).err().expect("a bad file is an error");
            assert!(
                e.starts_with(&format!("{var}={}: ", path.display())) && e.contains(why),
                "{e}"
            );
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn ssl_cert_dir_replaces_the_system_store() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.pem"), test_ca_pem()).unwrap();
        std::fs::write(d.path().join("b.pem"), test_ca_pem()).unwrap();
        let env = TrustEnv {
            ssl_cert_dir: Some(format!("{}:", d.path().display()).into()),
            ..Default::default()
        };
        let t = load_trust(&env).unwrap();
        assert_eq!(
            t.summary,
            format!("SSL_CERT_DIR={} (2 CAs)", d.path().display())
        );
        let missing = TrustEnv {
            ssl_cert_dir: Some(d.path().join("nope").into()),
            ..Default::default()
        };
        let e = load_trust(&missing).err().unwrap();
        assert!(e.starts_with("SSL_CERT_DIR=") && e.contains("nope"), "{e}");
    }

    #[test]
    fn both_document_shapes_give_the_tags() {
        let t = parse_dist_tags(br#"{"latest":"2.1.330"}"#).unwrap();
        assert_eq!(t["latest"], "2.1.330");
        let t = parse_dist_tags(
            br#"{"name":"x","dist-tags":{"latest":"2.1.330","next":"3.0.0-a"},"versions":{}}"#,
        )
        .unwrap();
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn garbage_answers_are_one_line_errors() {
        for (body, want) in [
            (&b"<!DOCTYPE html><html>login</html>"[..], "HTML"),
            (b"{\"latest\":", "not JSON"),
            (b"[1,2]", "not a dist-tags object"),
            (b"{\"latest\":5}", "no dist-tags"),
            (b"\xff\xfe", "not JSON"),
        ] {
            let e = parse_dist_tags(body).unwrap_err();
            assert!(e.contains(want) && !e.contains('\n'), "{e}");
        }
    }
}
