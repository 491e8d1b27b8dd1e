//! `CSBOX_TRACE=1`: where a launch's time goes. csbox marks the end of each phase of
//! `csbox run` (profile resolution, session creation, the layers, preparing the plan,
//! the clone, each stage of the sandbox's setup, the exec, the command, the end record)
//! and prints one line per phase on stderr at exit, `csbox-trace: PHASE MICROSECONDS`,
//! which bench/startup.sh aggregates. The sandbox's child writes its stage times into a
//! page shared with the supervisor (MAP_SHARED survives the clone), with raw
//! clock_gettime calls: no allocation between clone and exec.

use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Mutex;

/// The most child stages recorded.
pub const CHILD_SLOTS: usize = 32;

static MARKS: Mutex<Vec<(&'static str, u64)>> = Mutex::new(Vec::new());
static CHILD: AtomicPtr<u64> = AtomicPtr::new(std::ptr::null_mut());

pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("CSBOX_TRACE").is_some_and(|v| v == "1"))
}

/// CLOCK_MONOTONIC in nanoseconds (no allocation: fit for the child).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the struct we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The end of a phase of the supervisor.
pub fn mark(phase: &'static str) {
    if enabled() {
        MARKS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((phase, now_ns()));
    }
}

/// Before the clone: the page the child writes its stage times into (null when off).
pub fn child_page() -> *mut u64 {
    if !enabled() {
        return std::ptr::null_mut();
    }
    let p = CHILD.load(Ordering::SeqCst);
    if !p.is_null() {
        // SAFETY: the page is ours and CHILD_SLOTS u64 long; a new launch starts clean.
        unsafe { std::ptr::write_bytes(p, 0, CHILD_SLOTS) };
        return p;
    }
    // SAFETY: an anonymous shared mapping of one page.
    let m = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if m == libc::MAP_FAILED {
        return std::ptr::null_mut();
    }
    CHILD.store(m.cast(), Ordering::SeqCst);
    m.cast()
}

/// In the child: the end of stage `i`.
///
/// # Safety
/// `page` is null or the page [`child_page`] returned.
pub unsafe fn child_mark(page: *mut u64, i: usize) {
    if !page.is_null() && i < CHILD_SLOTS {
        std::ptr::write_volatile(page.add(i), now_ns());
    }
}

/// Print every phase with its duration, in order, then the largest first.
pub fn report(child_stages: &[&'static str]) {
    if !enabled() {
        return;
    }
    let mut all = MARKS.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let page = CHILD.load(Ordering::SeqCst);
    if !page.is_null() {
        for (i, name) in child_stages.iter().enumerate().take(CHILD_SLOTS) {
            // SAFETY: the child wrote these slots before exec; we only read them.
            let t = unsafe { std::ptr::read_volatile(page.add(i)) };
            if t != 0 {
                all.push((name, t));
            }
        }
    }
    all.sort_by_key(|(_, t)| *t);
    let mut prev = match START.get() {
        Some(t) => *t,
        None => return,
    };
    let mut phases: Vec<(&str, u64)> = Vec::new();
    for (name, t) in all {
        phases.push((name, t.saturating_sub(prev) / 1000));
        prev = prev.max(t);
    }
    for (name, us) in &phases {
        eprintln!("csbox-trace: {name} {us}");
    }
}

static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// At the start of main.
pub fn start() {
    if enabled() {
        let _ = START.set(now_ns());
    }
}
