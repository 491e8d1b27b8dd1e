//! A setting and where it came from.

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
