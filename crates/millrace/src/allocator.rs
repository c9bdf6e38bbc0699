//! How the `millrace` binary gets its memory from the kernel.
//!
//! Two defaults cost this engine part of its tails, both through the kernel zeroing
//! fresh pages while a worker waits (on the cloud guests we measure on,
//! several times slower than memory speed; presumably each page first
//! touched also costs the host a fault):
//!
//! - **mimalloc hands freed memory back.** A range that stays free for a
//!   while (1 s in the version we link) goes back to the kernel, and the
//!   next allocation there faults it in again. A pipeline's memory follows
//!   its backlog: a host stall grows the queues and window state, a quiet
//!   second hands the extra back, and the next stall faults it all in again
//!   at the moment the pipeline is furthest behind.
//! - **Transparent huge pages.** mimalloc asks for them on its arenas, and
//!   the kernel then backs a first touch with a 2 MiB page, zeroed in one
//!   go while the worker waits: milliseconds at a time, each a window
//!   result that much later.
//!
//! So the engine keeps what it frees, for reuse (its resident memory stays
//! at its peak, which bounded queues and bounded state already bound), and
//! takes memory in 4 KiB pages: lower p99s and more throughput, measured in
//! docs/benchmarks.md ("Memory from the kernel"). Either can
//! be had back through mimalloc's own variables, which win when set:
//! `MIMALLOC_PURGE_DELAY` (ms) and `MIMALLOC_ALLOW_THP=1`.

use libmimalloc_sys::{mi_option_get, mi_option_set, mi_option_t};

/// `mi_option_purge_delay` in mimalloc's option enum (v3, the version the
/// `mimalloc` crate builds by default). The bindings name no constant for
/// it; a test below checks the number.
const PURGE_DELAY: mi_option_t = 15;

/// The variable mimalloc reads `PURGE_DELAY` from.
const PURGE_DELAY_ENV: &str = "MIMALLOC_PURGE_DELAY";

/// The variable with which mimalloc allows (1) or refuses (0) huge pages.
const ALLOW_THP_ENV: &str = "MIMALLOC_ALLOW_THP";

/// Never purge: a freed range stays committed until it is reused.
const NEVER: i64 = -1;

/// The memory settings in effect ([`settings`]).
#[derive(Debug, PartialEq, Eq)]
pub struct MemorySettings {
    /// mimalloc's delay before it hands freed memory back, in ms; -1: never.
    pub purge_delay_ms: i64,
    /// Whether the kernel may back this process with transparent huge pages
    /// (`None` where the system cannot say).
    pub huge_pages: Option<bool>,
}

/// Keeps freed memory for reuse and turns transparent huge pages off for
/// this process, each unless its mimalloc variable is set. Call at the
/// start of `main`: mimalloc has already started (it did so before `main`),
/// but both settings are read at each purge and each page fault.
pub fn configure() {
    if std::env::var_os(PURGE_DELAY_ENV).is_none() {
        // SAFETY: sets an integer in mimalloc's option table.
        unsafe { mi_option_set(PURGE_DELAY, NEVER as _) };
    }
    if std::env::var_os(ALLOW_THP_ENV).is_none() {
        disable_huge_pages();
    }
}

/// The settings in effect now.
pub fn settings() -> MemorySettings {
    MemorySettings {
        // SAFETY: reads an integer from mimalloc's option table.
        purge_delay_ms: unsafe { mi_option_get(PURGE_DELAY) as i64 },
        huge_pages: huge_pages_allowed(),
    }
}

#[cfg(target_os = "linux")]
fn disable_huge_pages() {
    // A refusal (an old kernel, a sandbox) leaves the default; the engine
    // runs either way.
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments and touches no
    // memory of ours.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

#[cfg(not(target_os = "linux"))]
fn disable_huge_pages() {}

#[cfg(target_os = "linux")]
fn huge_pages_allowed() -> Option<bool> {
    // SAFETY: as above; returns 1 if disabled, 0 if not, -1 on error.
    match unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) } {
        0 => Some(true),
        1 => Some(false),
        _ => None,
    }
}

#[cfg(not(target_os = "linux"))]
fn huge_pages_allowed() -> Option<bool> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_memory_is_kept_and_huge_pages_are_off_unless_the_environment_says_otherwise() {
        // The only test in this process that reads these variables or
        // changes these settings.
        let before = settings();
        configure();
        let after = settings();
        match std::env::var(PURGE_DELAY_ENV) {
            // The option number is right: mimalloc put the variable there.
            Ok(v) => assert_eq!(after.purge_delay_ms, v.trim().parse::<i64>().unwrap()),
            Err(_) => {
                // mimalloc v3's default of 1 s, which only this option has:
                // anything else means the number moved.
                assert_eq!(before.purge_delay_ms, 1000);
                assert_eq!(after.purge_delay_ms, NEVER);
            }
        }
        if std::env::var_os(ALLOW_THP_ENV).is_none() {
            // Off, or a system that cannot say (not Linux, or prctl refused).
            assert_ne!(after.huge_pages, Some(true));
        }
    }
}
