//! Fault injection for the crash tests: `CSBOX_TEST_CRASH_AT=NAME` (or `NAME#N`, the Nth
//! time the point is reached) makes csbox SIGKILL itself at the named point of session
//! creation or teardown, so a test can show that a crash at any step loses no session.
//!
//! Debug builds only (`cargo test` builds them): in a release build [`point`] is empty and
//! the variable means nothing, so nobody can make an installed csbox kill itself mid-write.

/// A named point where a test may crash csbox.
#[inline]
pub fn point(name: &str) {
    #[cfg(debug_assertions)]
    crash_if_asked(name);
    #[cfg(not(debug_assertions))]
    let _ = name;
}

#[cfg(debug_assertions)]
fn crash_if_asked(name: &str) {
    use std::sync::Mutex;
    static SEEN: Mutex<Vec<(String, u32)>> = Mutex::new(Vec::new());
    let Some(want) = std::env::var_os("CSBOX_TEST_CRASH_AT") else {
        return;
    };
    let want = want.to_string_lossy();
    let (want_name, nth) = match want.split_once('#') {
        Some((n, k)) => (n, k.parse::<u32>().unwrap_or(1)),
        None => (&*want, 1),
    };
    if want_name != name {
        return;
    }
    let count = {
        let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
        match seen.iter_mut().find(|(n, _)| n == name) {
            Some((_, c)) => {
                *c += 1;
                *c
            }
            None => {
                seen.push((name.to_string(), 1));
                1
            }
        }
    };
    if count == nth {
        eprintln!("csbox: test: crashing at {name}#{nth} (CSBOX_TEST_CRASH_AT)");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}
