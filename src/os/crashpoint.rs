//! Crash points for tests: named places where the agent kills itself with SIGKILL when asked to, so a test can
//! stop it exactly between two steps (blob downloaded but not committed, container created but not started) and
//! check that the next start repairs and converges.
//!
//! `JETSHIP_CRASH_AT=<point>` kills the process the first time it reaches `<point>`; `<point>@<n>` the n-th time.
//! The hook exists in debug builds only (the tests' builds): in a release build [`hit`] is an empty inline
//! function and the variable is ignored. The points are listed in [`POINTS`] and in docs/reliability.md.

/// Every crash point, as the variable names them.
#[cfg_attr(not(debug_assertions), allow(dead_code))] // release builds never read the variable
pub(crate) const POINTS: &[&str] = &[
    "blob-downloaded",
    "mid-unpack",
    "snapshot-renamed",
    "conmon-spawned",
    "container-created",
    "container-started",
    "mid-spool-append",
];

/// The environment variable that arms a crash point.
#[cfg_attr(not(debug_assertions), allow(dead_code))]
pub(crate) const VAR: &str = "JETSHIP_CRASH_AT";

/// Says once per process that the variable names no crash point (a typo would otherwise never fire).
#[cfg(debug_assertions)]
fn warn_unknown(name: &str) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| eprintln!("jetship: {VAR}={name} names no crash point; the points are {}", POINTS.join(", ")));
}

/// Whether `point` is armed to fire at this hit (counting hits per process). Always false in release builds.
pub(crate) fn armed(point: &str) -> bool {
    #[cfg(debug_assertions)]
    {
        use std::sync::atomic::{AtomicU64, Ordering};
        static HITS: AtomicU64 = AtomicU64::new(0);
        let Some(spec) = std::env::var_os(VAR) else { return false };
        let spec = spec.to_string_lossy();
        let (name, nth) = match spec.split_once('@') {
            Some((n, k)) => (n, k.parse::<u64>().unwrap_or(1)),
            None => (spec.as_ref(), 1),
        };
        if name != point {
            if !POINTS.contains(&name) {
                warn_unknown(name);
            }
            return false;
        }
        HITS.fetch_add(1, Ordering::SeqCst) + 1 == nth
    }
    #[cfg(not(debug_assertions))]
    {
        let _ = point;
        false
    }
}

/// Kills the process with SIGKILL (no destructor, no flush: what `kill -9` does) when `point` is armed.
#[inline]
pub(crate) fn hit(point: &str) {
    if armed(point) {
        die(point);
    }
}

/// Kills the process now, saying which point fired on stderr first (the tests look for that line).
pub fn die(point: &str) -> ! {
    eprintln!("jetship: crash point {point} reached; killing the process");
    let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
    // SIGKILL cannot be caught; this only runs if the signal could not be sent.
    std::process::abort()
}
