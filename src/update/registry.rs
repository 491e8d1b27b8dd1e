//! Asking the npm registry which version each dist-tag points to.
//!
//! The answer is hostile input: it may come from a captive portal, a broken mirror or a
//! proxy's login page. Everything is bounded: one 5 s deadline for the whole request
//! (connect, headers and body), and a cap on the bytes read.

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

pub const PACKAGE: &str = "@anthropic-ai/claude-code";
/// The package name with its `/` escaped, as registries expect it in a path.
const PACKAGE_PATH: &str = "@anthropic-ai%2fclaude-code";
pub const DEFAULT_REGISTRY: &str = "https://registry.npmjs.org";
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// The dist-tags document is a few dozen bytes.
const TAGS_BODY_CAP: u64 = 64 * 1024;
/// The package document lists every version; Claude Code's was 0.7 MB in 2026.
const DOC_BODY_CAP: u64 = 16 * 1024 * 1024;

/// Proxy settings as the environment gave them (curl's and npm's variable names).
#[derive(Debug, Default, Clone)]
pub struct ProxyEnv {
    pub https: Option<String>,
    pub http: Option<String>,
    pub all: Option<String>,
    pub no_proxy: Option<String>,
}

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

/// The proxy for `url`, as curl and npm choose it: the scheme's variable, else ALL_PROXY,
/// unless NO_PROXY lists the host (exactly, as a domain suffix, or `*`). ureq 2 reads
/// the variables itself but ignores NO_PROXY, so the choice is made here.
pub fn proxy_for(url: &str, env: &ProxyEnv) -> Option<String> {
    let host = host_of(url);
    if let Some(list) = &env.no_proxy {
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
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
    scheme_var.clone().or_else(|| env.all.clone())
}

/// GET the dist-tags of the package: `{"latest":"2.1.330", …}`. Registries without the
/// dist-tags endpoint (it answers 404) are asked for the package document instead.
pub fn fetch_dist_tags(base: &str, proxy: &ProxyEnv) -> Result<BTreeMap<String, String>, String> {
    let tags_url = format!("{base}/-/package/{PACKAGE_PATH}/dist-tags");
    match get(&tags_url, proxy, TAGS_BODY_CAP) {
        Err(Fetch::NotFound(_)) => {
            let doc_url = format!("{base}/{PACKAGE_PATH}");
            let body = get(&doc_url, proxy, DOC_BODY_CAP).map_err(|e| e.to_string())?;
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

fn get(url: &str, proxy_env: &ProxyEnv, cap: u64) -> Result<Vec<u8>, Fetch> {
    let mut agent = ureq::AgentBuilder::new()
        .timeout(TIMEOUT)
        .user_agent(concat!("csbox/", env!("CARGO_PKG_VERSION")));
    if let Some(p) = proxy_for(url, proxy_env) {
        let proxy = ureq::Proxy::new(&p).map_err(|e| {
            Fetch::Failed(format!(
                "proxy {p:?} from the environment is not usable ({e}); fix HTTPS_PROXY/HTTP_PROXY or add the registry to NO_PROXY"
            ))
        })?;
        agent = agent.proxy(proxy);
    }
    let resp = agent
        .build()
        .get(url)
        // The abbreviated ("corgi") document when the full one is asked for: far smaller.
        .set(
            "Accept",
            "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8",
        )
        .call()
        .map_err(|e| describe_error(url, e))?;
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
        .map_err(|e| Fetch::Failed(describe_io(url, &e)))?;
    if body.len() as u64 > cap {
        return Err(too_big(url, cap));
    }
    Ok(body)
}

fn too_big(url: &str, cap: u64) -> Fetch {
    Fetch::Failed(format!(
        "{url} answered with more than {} KiB, which is not an npm document; check CSBOX_REGISTRY",
        cap / 1024
    ))
}

fn describe_error(url: &str, e: ureq::Error) -> Fetch {
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
            let io = std::error::Error::source(&t).and_then(|s| s.downcast_ref::<std::io::Error>());
            match io {
                Some(io) => Fetch::Failed(describe_io(url, io)),
                None => Fetch::Failed(format!(
                    "cannot reach {url}: {t}; check the network, HTTPS_PROXY and CSBOX_REGISTRY"
                )),
            }
        }
    }
}

fn describe_io(url: &str, e: &std::io::Error) -> String {
    use std::io::ErrorKind::{TimedOut, WouldBlock};
    if matches!(e.kind(), TimedOut | WouldBlock) {
        format!(
            "no complete answer from {url} within {} s; check the network, HTTPS_PROXY and CSBOX_REGISTRY",
            TIMEOUT.as_secs()
        )
    } else {
        format!("cannot read from {url}: {e}; check the network, HTTPS_PROXY and CSBOX_REGISTRY")
    }
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
    use super::*;

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
            https: Some("http://sp:3128".into()),
            http: None,
            all: Some("http://ap:3128".into()),
            no_proxy: Some("localhost, .corp.example,127.0.0.1:4873".into()),
        };
        assert_eq!(
            proxy_for("https://registry.npmjs.org", &env).as_deref(),
            Some("http://sp:3128")
        );
        assert_eq!(
            proxy_for("http://registry.npmjs.org", &env).as_deref(),
            Some("http://ap:3128")
        );
        assert_eq!(proxy_for("https://npm.corp.example/x", &env), None);
        assert_eq!(proxy_for("http://127.0.0.1:9/x", &env), None);
        assert_eq!(proxy_for("http://localhost:9", &env), None);
        let star = ProxyEnv {
            no_proxy: Some("*".into()),
            ..env
        };
        assert_eq!(proxy_for("https://registry.npmjs.org", &star), None);
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
