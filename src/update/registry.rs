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

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{pem::PemObject, CertificateDer};

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
/// A user's npmrc is a few lines; one this big is not an npmrc.
const NPMRC_CAP: u64 = 256 * 1024;
/// Debian's whole bundle is 0.2 MB.
const CERT_FILE_CAP: u64 = 8 * 1024 * 1024;

/// A setting and where it came from, so errors can name the variable or file to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub value: String,
    /// `HTTPS_PROXY`, `npm_config_https_proxy`, `https-proxy in /home/u/.npmrc`.
    pub from: String,
}

impl Setting {
    pub fn new(value: impl Into<String>, from: impl Into<String>) -> Self {
        Setting {
            value: value.into(),
            from: from.into(),
        }
    }
}

/// Proxy settings: curl's variables, then npm's config (its `npm_config_*` variables, then
/// the user's npmrc). The curl variables win, so a shell's `HTTPS_PROXY` is what counts.
#[derive(Debug, Default, Clone)]
pub struct ProxyEnv {
    pub https: Option<Setting>,
    pub http: Option<Setting>,
    pub all: Option<Setting>,
    pub no_proxy: Option<Setting>,
    /// npm's `https-proxy`.
    pub npm_https: Option<Setting>,
    /// npm's `proxy`.
    pub npm_proxy: Option<Setting>,
    /// npm's `noproxy`.
    pub npm_noproxy: Option<Setting>,
}

/// Where trusted CA certificates come from besides (or instead of) the system store.
#[derive(Debug, Default, Clone)]
pub struct TrustEnv {
    /// `SSL_CERT_FILE`. With `SSL_CERT_DIR`, it replaces the system store, as in OpenSSL
    /// and in rustls-native-certs' `load_native_certs`.
    pub ssl_cert_file: Option<PathBuf>,
    /// `SSL_CERT_DIR`: directories separated by `:`.
    pub ssl_cert_dir: Option<OsString>,
    /// `NODE_EXTRA_CA_CERTS`: added to the roots, as Node adds it to its own.
    pub node_extra_ca_certs: Option<PathBuf>,
    /// npm's `cafile`: added to the roots too (npm uses it alone; adding keeps the system
    /// store working for a registry the cafile's CA did not sign).
    pub npm_cafile: Option<Setting>,
}

/// Everything the registry client takes from the environment and the user's npmrc.
#[derive(Debug, Default, Clone)]
pub struct NetEnv {
    pub proxy: ProxyEnv,
    pub trust: TrustEnv,
    /// The npmrc exists but cannot be used; reported when the registry is asked.
    pub npmrc_problem: Option<String>,
}

impl NetEnv {
    pub fn from_process() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let path_var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        // curl and npm accept both spellings; the upper-case one wins, as in curl.
        let either = |a: &str, b: &str| {
            var(a)
                .map(|v| Setting::new(v, a))
                .or_else(|| var(b).map(|v| Setting::new(v, b)))
        };
        // npm reads `npm_config_*` case-insensitively; these are the two spellings in use.
        let npm_var = |key: &str| {
            let lower = format!("npm_config_{key}");
            either(&lower, &lower.to_ascii_uppercase())
        };

        let userconfig = npm_var("userconfig")
            .map(|s| PathBuf::from(s.value))
            .or_else(|| path_var("HOME").map(|h| Path::new(&h).join(".npmrc")));
        let (rc, npmrc_problem) = match &userconfig {
            Some(path) => match read_npmrc(path, &|k| std::env::var(k).ok()) {
                Ok(rc) => (rc, None),
                Err(e) => (NpmRc::default(), Some(e)),
            },
            None => (NpmRc::default(), None),
        };
        // npm's own order: its environment variables over its config file.
        let npm = |key: &str, from_file: Option<Setting>| {
            npm_var(&key.replace('-', "_"))
                .or(from_file)
                .filter(|s| npm_is_set(&s.value))
        };
        NetEnv {
            proxy: ProxyEnv {
                https: either("HTTPS_PROXY", "https_proxy"),
                http: either("HTTP_PROXY", "http_proxy"),
                all: either("ALL_PROXY", "all_proxy"),
                no_proxy: either("NO_PROXY", "no_proxy"),
                npm_https: npm("https-proxy", rc.https_proxy),
                npm_proxy: npm("proxy", rc.proxy),
                npm_noproxy: npm("noproxy", rc.noproxy),
            },
            trust: TrustEnv {
                ssl_cert_file: path_var("SSL_CERT_FILE").map(PathBuf::from),
                ssl_cert_dir: path_var("SSL_CERT_DIR"),
                node_extra_ca_certs: path_var("NODE_EXTRA_CA_CERTS").map(PathBuf::from),
                npm_cafile: npm("cafile", rc.cafile).map(|mut s| {
                    s.value = expand_home(&s.value);
                    s
                }),
            },
            npmrc_problem,
        }
    }
}

/// npm spells "no proxy" `false` or `null` as well as empty.
fn npm_is_set(v: &str) -> bool {
    !matches!(v.trim(), "" | "false" | "null")
}

/// npm expands a leading `~/` in path settings.
fn expand_home(p: &str) -> String {
    match (p.strip_prefix("~/"), std::env::var("HOME")) {
        (Some(rest), Ok(home)) if !home.is_empty() => format!("{home}/{rest}"),
        _ => p.to_string(),
    }
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

/// The keys of an npmrc that csbox uses; everything else (tokens above all) is skipped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NpmRc {
    pub https_proxy: Option<Setting>,
    pub proxy: Option<Setting>,
    pub noproxy: Option<Setting>,
    pub cafile: Option<Setting>,
}

/// Read the user's npmrc: a missing file is an empty one; anything that is not a small
/// regular file is an error (opened non-blocking: a FIFO there must not hang the check).
pub fn read_npmrc(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<NpmRc, String> {
    match super::read_regular(path, NPMRC_CAP) {
        Ok(bytes) => Ok(parse_npmrc(
            &String::from_utf8_lossy(&bytes),
            &path.display().to_string(),
            env,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(NpmRc::default()),
        Err(e) => Err(format!(
            "cannot read the npm config {}: {e}; fix it or point NPM_CONFIG_USERCONFIG elsewhere",
            path.display()
        )),
    }
}

/// npm's ini dialect, for four keys: `key = value` lines before any `[section]`; `;` and
/// `#` start comments; a value may be quoted; `key[] = v` lines add to a list; `${VAR}`
/// expands from the environment (`${VAR?}` to nothing when unset); the last line wins.
pub fn parse_npmrc(text: &str, file: &str, env: &dyn Fn(&str) -> Option<String>) -> NpmRc {
    let mut rc = NpmRc::default();
    let mut lists: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            // Keys in sections are not top-level npm config.
            break;
        }
        if line.is_empty() || line.starts_with([';', '#']) {
            continue;
        }
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        let (key, is_list) = match key.strip_suffix("[]") {
            Some(k) => (k, true),
            None => (key, false),
        };
        let slot = match key {
            "https-proxy" => &mut rc.https_proxy,
            "proxy" => &mut rc.proxy,
            "noproxy" => &mut rc.noproxy,
            "cafile" => &mut rc.cafile,
            _ => continue,
        };
        let value = expand_env(&ini_value(raw), env);
        let value = if is_list {
            let list = lists.entry(key).or_default();
            list.push(value);
            list.join(",")
        } else {
            value
        };
        *slot = Some(Setting::new(value, format!("{key} in {file}")));
    }
    rc
}

/// An ini value: quoted (`"…"` with JSON escapes, or `'…'`), or bare up to an unescaped
/// `;` or `#`, as npm's ini parser reads it.
fn ini_value(raw: &str) -> String {
    let v = raw.trim();
    if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
        if let Ok(s) = serde_json::from_str::<String>(v) {
            return s;
        }
    }
    if v.len() >= 2 && v.starts_with('\'') && v.ends_with('\'') {
        return v[1..v.len() - 1].to_string();
    }
    let mut out = String::new();
    let mut escaped = false;
    for c in v.chars() {
        if escaped {
            if !matches!(c, '\\' | ';' | '#') {
                out.push('\\');
            }
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if matches!(c, ';' | '#') {
            break;
        } else {
            out.push(c);
        }
    }
    if escaped {
        out.push('\\');
    }
    out.trim().to_string()
}

/// npm's `${NAME}` substitution: an unset NAME stays as written, `${NAME?}` becomes "".
fn expand_env(v: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut rest = v;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start + 2..].find('}') else {
            break;
        };
        let inner = &rest[start + 2..start + 2 + len];
        let (name, optional) = match inner.strip_suffix('?') {
            Some(n) => (n, true),
            None => (inner, false),
        };
        out.push_str(&rest[..start]);
        match env(name) {
            Some(val) => out.push_str(&val),
            None if optional => {}
            None => out.push_str(&rest[start..start + 3 + len]),
        }
        rest = &rest[start + 3 + len..];
    }
    out.push_str(rest);
    out
}

/// The TLS client configuration and, for error messages, what it trusts.
pub struct Trust {
    pub config: Arc<rustls::ClientConfig>,
    /// `the system store (146 CAs), NODE_EXTRA_CA_CERTS=/etc/corp.pem (1 CA)`.
    pub summary: String,
}

/// Build the roots: `SSL_CERT_FILE`/`SSL_CERT_DIR` when either is set, else the system
/// store (found by openssl-probe, as rustls-native-certs does; Mozilla's roots built into
/// csbox when the machine has none); then `NODE_EXTRA_CA_CERTS` and npm's `cafile` on top.
/// A file named by a variable that cannot be used is an error naming both.
pub fn load_trust(t: &TrustEnv) -> Result<Trust, String> {
    let mut roots = rustls::RootCertStore::empty();
    let mut parts = Vec::new();
    if t.ssl_cert_file.is_some() || t.ssl_cert_dir.is_some() {
        if let Some(file) = &t.ssl_cert_file {
            let n = add_pem_file(&mut roots, "SSL_CERT_FILE", file)?;
            parts.push(format!("SSL_CERT_FILE={} ({})", file.display(), cas(n)));
        }
        for dir in t
            .ssl_cert_dir
            .iter()
            .flat_map(std::env::split_paths)
            .filter(|d| !d.as_os_str().is_empty())
        {
            let found = rustls_native_certs::load_certs_from_paths(None, Some(&dir));
            if let Some(e) = found.errors.first() {
                return Err(format!(
                    "SSL_CERT_DIR={}: {e}; point it at a directory of PEM CA certificates or unset it",
                    dir.display()
                ));
            }
            let (n, _) = roots.add_parsable_certificates(found.certs);
            parts.push(format!("SSL_CERT_DIR={} ({})", dir.display(), cas(n)));
        }
    } else {
        let probe = openssl_probe::probe();
        let mut dirs = probe.cert_dir.iter().map(PathBuf::as_path);
        // One call with the bundle and the first directory: it skips the directory's
        // links to the bundle's own file, read already.
        let mut found =
            rustls_native_certs::load_certs_from_paths(probe.cert_file.as_deref(), dirs.next());
        for d in dirs {
            let more = rustls_native_certs::load_certs_from_paths(None, Some(d));
            found.certs.extend(more.certs);
            found.errors.extend(more.errors);
        }
        // A broken link or an unreadable file in /etc/ssl/certs must not stop the check
        // while the rest of the store loads.
        for e in &found.errors {
            crate::debug!("system CA store: {e}");
        }
        let (n, _) = roots.add_parsable_certificates(found.certs);
        if n == 0 {
            roots
                .roots
                .extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            parts.push(format!(
                "Mozilla's roots built into csbox ({}; no system CA store found)",
                cas(roots.len())
            ));
        } else {
            parts.push(format!("the system store ({})", cas(n)));
        }
    }
    if let Some(file) = &t.node_extra_ca_certs {
        let n = add_pem_file(&mut roots, "NODE_EXTRA_CA_CERTS", file)?;
        parts.push(format!(
            "NODE_EXTRA_CA_CERTS={} ({})",
            file.display(),
            cas(n)
        ));
    }
    if let Some(cafile) = &t.npm_cafile {
        let n = add_pem_file(&mut roots, &cafile.from, Path::new(&cafile.value))?;
        parts.push(format!("{}={} ({})", cafile.from, cafile.value, cas(n)));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS setup: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Trust {
        config: Arc::new(config),
        summary: parts.join(", "),
    })
}

fn cas(n: usize) -> String {
    match n {
        1 => "1 CA".into(),
        n => format!("{n} CAs"),
    }
}

/// Add the PEM certificates of `path` (named by `var`); returns how many were added.
fn add_pem_file(
    roots: &mut rustls::RootCertStore,
    var: &str,
    path: &Path,
) -> Result<usize, String> {
    let bad = |why: String| {
        format!(
            "{var}={}: {why}; point it at a PEM file of CA certificates or unset it",
            path.display()
        )
    };
    let bytes = super::read_regular(path, CERT_FILE_CAP).map_err(|e| bad(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM file ({e})")))?;
    if certs.is_empty() {
        return Err(bad(
            "it holds no PEM certificate (no -----BEGIN CERTIFICATE----- line)".into(),
        ));
    }
    let total = certs.len();
    match roots.add_parsable_certificates(certs) {
        (0, _) => Err(bad(format!(
            "none of its {total} certificates can be parsed"
        ))),
        (n, _) => Ok(n),
    }
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
                "not a regular file",
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
