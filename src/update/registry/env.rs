//! What the registry client takes from the environment and the user's npmrc.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::npmrc::{read_npmrc, NpmRc};
use super::setting::Setting;

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
pub(super) fn npm_is_set(v: &str) -> bool {
    !matches!(v.trim(), "" | "false" | "null")
}

/// npm expands a leading `~/` in path settings.
fn expand_home(p: &str) -> String {
    match (p.strip_prefix("~/"), std::env::var("HOME")) {
        (Some(rest), Ok(home)) if !home.is_empty() => format!("{home}/{rest}"),
        _ => p.to_string(),
    }
}
