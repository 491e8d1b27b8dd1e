//! `CSBOX_LOG=debug` turns on debug lines on stderr. Nothing else logs.

use std::sync::atomic::{AtomicBool, Ordering};

static DEBUG: AtomicBool = AtomicBool::new(false);

pub fn init_from_env() {
    if let Ok(v) = std::env::var("CSBOX_LOG") {
        DEBUG.store(
            matches!(v.as_str(), "debug" | "trace" | "1"),
            Ordering::Relaxed,
        );
    }
}

pub fn enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => {
        if $crate::log::enabled() {
            eprintln!("csbox[debug]: {}", format_args!($($arg)*));
        }
    };
}

/// One warning line on stderr, always shown.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => {
        eprintln!("csbox: warning: {}", format_args!($($arg)*));
    };
}
