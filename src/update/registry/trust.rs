//! Which CAs the registry client trusts: the system's, or what the environment says.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{pem::PemObject, CertificateDer};

use super::env::TrustEnv;

/// Debian's whole bundle is 0.2 MB.
const CERT_FILE_CAP: u64 = 8 * 1024 * 1024;

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
    let bytes = crate::fsutil::read_regular(path, CERT_FILE_CAP).map_err(|e| bad(e.to_string()))?;
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
