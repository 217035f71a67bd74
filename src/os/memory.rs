//! The resident agent's own memory: fewer malloc arenas, freed heap handed back to the kernel, and the pages of
//! start-up code unmapped once start-up is over (docs/benchmarks.md, agent footprint).
//!
//! A Jetson shares its 4-8 GiB between the CPU and the GPU, so what the idle agent keeps resident is taken from the
//! containers it runs. Nothing here changes behaviour: the kernel maps any unmapped code page again on its next
//! use (a minor fault from the page cache). Must not touch writable or relocated mappings: only read-only file
//! mappings that were never written are ever unmapped.

/// At most this many glibc malloc arenas. The agent's tasks run on one thread, but tokio's blocking pool starts
/// threads for sysfs reads, fsync and unpacking, and glibc gives each thread that allocates an arena of its own
/// (up to 8 per core), each keeping freed memory. Two keep contention away for the blocking pool.
const MALLOC_ARENAS: i32 = 2;

/// Caps glibc's malloc arenas (two: enough for the blocking pool). Call once at start, before threads allocate.
pub(crate) fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets a tunable of the allocator; it is documented as safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
    }
}

/// Hands the heap's free pages back to the kernel (glibc keeps freed memory for reuse otherwise). Cheap: call it
/// after bursts of allocation such as a host probe or a telemetry sample.
pub(crate) fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free memory of the allocator's own arenas to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Unmaps the resident pages of the program's and its libraries' code and read-only data, so that only what is
/// used from now on (the idle loops) is mapped again as it runs. Call once, when start-up (config, probe, TLS
/// set-up, the first connection) is over. Returns the bytes of address space advised.
///
/// Only file mappings that are read-only (`r-xp`, `r--p`) and hold no anonymous page are touched: such a mapping
/// was never written (relocated data, RELRO, has copied pages and is left alone), so dropping its page-table
/// entries loses nothing (`MADV_DONTNEED` on a private file mapping reverts to the file's pages, which is what they
/// are). The page cache keeps the pages, so a page used again is a minor fault, not a disk read.
pub(crate) fn unmap_startup_code() -> std::io::Result<u64> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut advised = 0;
    for (start, end) in clean_read_only_file_ranges(&smaps) {
        let len = (end - start) as usize;
        // SAFETY: the range is a whole mapping of the kernel's own list for this process, read-only, backed by a
        // file and without a single copied (anonymous) page; MADV_DONTNEED on it only drops page-table entries.
        let rc = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        advised += end - start;
    }
    Ok(advised)
}

/// The ranges of `/proc/self/smaps` text that are private, read-only mappings of a file (`r-xp`, `r--p`, a path)
/// with `Anonymous: 0 kB`.
fn clean_read_only_file_ranges(smaps: &str) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    // The mapping being read: its range, and whether it is a read-only file mapping so far.
    let mut current: Option<(u64, u64, bool)> = None;
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let Some(first) = f.next() else { continue };
        if let Some((a, b)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
            let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
                current = None;
                continue;
            };
            let perms = f.next().unwrap_or("");
            // Offset, device and inode come before the path; an inode of 0 is no file.
            let inode = f.nth(2).unwrap_or("0");
            let path = f.next().unwrap_or("");
            let read_only_file = matches!(perms, "r-xp" | "r--p") && inode != "0" && path.starts_with('/');
            current = Some((a, b, read_only_file && a < b));
        } else if first == "Anonymous:" {
            if let Some((a, b, true)) = current {
                if f.next() == Some("0") {
                    out.push((a, b));
                }
            }
            current = None;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_read_only_file_mappings_without_copied_pages_are_chosen() {
        let smaps = "\
55d0a0000000-55d0a0100000 r--p 00000000 fe:01 123 /usr/bin/jetship
Rss:                 900 kB
Anonymous:             0 kB
55d0a0100000-55d0a0900000 r-xp 00100000 fe:01 123 /usr/bin/jetship
Anonymous:             0 kB
55d0a0900000-55d0a0a00000 r--p 00900000 fe:01 123 /usr/bin/jetship
Anonymous:           376 kB
55d0a0a00000-55d0a0a10000 rw-p 00a00000 fe:01 123 /usr/bin/jetship
Anonymous:             0 kB
7f0000000000-7f0000100000 r-xp 00000000 fe:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7f0000200000-7f0000210000 r-xp 00000000 00:00 0
Anonymous:             0 kB
7f0000300000-7f0000310000 r--p 00000000 00:00 0                          [vvar]
Anonymous:             0 kB
";
        assert_eq!(
            clean_read_only_file_ranges(smaps),
            vec![(0x55d0a0000000, 0x55d0a0100000), (0x55d0a0100000, 0x55d0a0900000), (0x7f0000000000, 0x7f0000100000)]
        );
    }

    #[test]
    fn unmapping_the_code_of_a_running_program_keeps_it_running() {
        // The test binary unmaps its own code and goes on running it: the pages come back on use.
        let advised = unmap_startup_code().unwrap();
        assert!(advised > 0, "the test binary's own code mapping was not found");
        assert_eq!(clean_read_only_file_ranges(""), vec![]);
        release_free_heap();
        limit_malloc_arenas();
    }
}
