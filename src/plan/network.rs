//! The plan's network: which namespace, the proxy's rules and port, the host proxy it
//! chains through, and the variables that point the command's tools at it.

use super::input::PlanInput;
use super::model::{NetPlan, Upstream};
use crate::profile::{Isolation, Network};

/// The port the relay listens on inside, on 127.0.0.1 and ::1. The namespace is the
/// sandbox's own, so any port is free; squid's is the one tools expect of a proxy.
pub const PROXY_PORT: u16 = 3128;

/// Variables the command's tools read for a proxy, lower case first as curl and Claude
/// Code prefer them. Under a network of the sandbox's own the host's values are dropped
/// (the host's proxy is not reachable from inside, and its credentials stay outside).
pub const PROXY_ENV: &[&str] = &[
    "https_proxy",
    "HTTPS_PROXY",
    "http_proxy",
    "HTTP_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
    "ftp_proxy",
    "FTP_PROXY",
    "npm_config_proxy",
    "npm_config_https_proxy",
    "NPM_CONFIG_PROXY",
    "NPM_CONFIG_HTTPS_PROXY",
    "GIT_HTTP_PROXY",
    "NODE_USE_ENV_PROXY",
];

pub fn plan(input: &PlanInput) -> NetPlan {
    let prof = input.profile;
    let sandboxed = prof.isolation == Isolation::Namespaces;
    let mode = if sandboxed {
        prof.network.mode
    } else {
        Network::Host
    };
    let proxy = mode == Network::Proxy;
    NetPlan {
        mode,
        proxy_port: proxy.then_some(PROXY_PORT),
        allow: if proxy {
            prof.network.allow.clone()
        } else {
            Vec::new()
        },
        deny: if proxy {
            prof.network.deny.clone()
        } else {
            Vec::new()
        },
        upstream: if proxy {
            upstream(&input.host_env)
        } else {
            None
        },
        audit: proxy.then(|| "net.jsonl".into()),
    }
}

/// The host's own proxy, as curl picks it (lower case first), with the password elided
/// for display: the launcher reads the variable itself, so no credential is in the plan.
fn upstream(env: &[(String, String)]) -> Option<Upstream> {
    let get = |k: &str| {
        env.iter()
            .find(|(n, v)| n == k && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    let var = ["https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"]
        .into_iter()
        .find(|k| get(k).is_some())?;
    let url = get(var)?;
    Some(Upstream {
        var: var.to_string(),
        shown: elide_password(&url),
        no_proxy: get("no_proxy")
            .or_else(|| get("NO_PROXY"))
            .unwrap_or_default(),
    })
}

/// `http://user:secret@host:3128` → `http://user:***@host:3128`.
pub fn elide_password(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    let user = userinfo.split(':').next().unwrap_or_default();
    let sep = if scheme.is_empty() { "" } else { "://" };
    if userinfo.contains(':') {
        format!("{scheme}{sep}{user}:***@{host}")
    } else {
        format!("{scheme}{sep}{user}@{host}")
    }
}

/// The variables that send the command's tools through the proxy.
pub fn proxy_env(port: u16) -> Vec<(String, String)> {
    let http = format!("http://127.0.0.1:{port}");
    let socks = format!("socks5h://127.0.0.1:{port}");
    let no = "localhost,127.0.0.1,::1".to_string();
    let mut v = Vec::new();
    for k in ["https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"] {
        v.push((k.to_string(), http.clone()));
    }
    for k in ["all_proxy", "ALL_PROXY"] {
        v.push((k.to_string(), socks.clone()));
    }
    for k in ["no_proxy", "NO_PROXY"] {
        v.push((k.to_string(), no.clone()));
    }
    // Node's own fetch (undici) reads the variables only when asked to (Node >= 24).
    v.push(("NODE_USE_ENV_PROXY".to_string(), "1".to_string()));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_elided_and_lower_case_wins() {
        assert_eq!(elide_password("http://u:p@h:3128"), "http://u:***@h:3128");
        assert_eq!(elide_password("http://u@h"), "http://u@h");
        assert_eq!(elide_password("h:3128"), "h:3128");
        let env = vec![
            ("HTTPS_PROXY".to_string(), "http://a:b@up:1".to_string()),
            ("https_proxy".to_string(), "http://c:d@low:2".to_string()),
            ("NO_PROXY".to_string(), "corp".to_string()),
        ];
        let u = upstream(&env).unwrap();
        assert_eq!(
            (u.var.as_str(), u.shown.as_str(), u.no_proxy.as_str()),
            ("https_proxy", "http://c:***@low:2", "corp")
        );
        assert!(upstream(&[]).is_none());
    }
}
