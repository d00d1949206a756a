//! Gives back what start-up left resident and idle mend does not use. Start-up runs code all over the
//! binary once (the CLI, the config and its PromQL, the store's journal, the heal stage), and the kernel
//! maps 64 KiB around every page of it that runs ("fault-around"), so most of the binary's code stays
//! resident though a daemon at rest runs a small part of it; start-up also frees heap that malloc keeps.
//! A while after start, and every ten minutes, the daemon asks the kernel to take back the pages of its
//! own read-only file mappings (`MADV_PAGEOUT`: code that runs again faults back in) and malloc to return
//! its free heap (`malloc_trim`). Both are advice: nothing in use is freed or changed.
//! `BENCHMARKS.md` ("idle RSS") has what it saves.

// This crate is the workspace's one exception to `unsafe_code = "forbid"` (its manifest sets its lints
// itself): the two libc calls below, each advisory, each with its SAFETY argument.

use std::time::Duration;

/// How long after start the first release waits (services started, first scrapes and probes done).
pub const FIRST_RELEASE_AFTER: Duration = Duration::from_secs(10);
/// How often it is done again (what a burst of work left behind).
pub const RELEASE_EVERY: Duration = Duration::from_secs(600);

/// Resident memory before and after a release, bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Released {
    /// Before.
    pub before: u64,
    /// After.
    pub after: u64,
}

/// The read-only mappings of `exe` in a `/proc/PID/maps` text: (start, length) of each (code and
/// read-only data, not writable and not anonymous).
pub fn read_only_mappings_of(maps: &str, exe: &str) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            // start-end perms offset device inode path (the path may hold spaces: " (deleted)").
            let mut fields = line.splitn(6, ' ');
            let range = fields.next()?;
            let perms = fields.next()?;
            let path = fields.nth(3)?.trim_start();
            if path != exe || perms.contains('w') {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            (end > start).then_some((start, end - start))
        })
        .collect()
}

/// Resident set size of this process, bytes (from `/proc/self/statm`), 0 when unreadable.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0);
    pages * 4096
}

/// Gives back start-up's pages and the free heap; what it could not do is logged at debug and skipped.
#[allow(unsafe_code)] // The two advisory calls; each block says why it is sound.
pub fn release_idle_pages() -> Released {
    let before = resident_bytes();
    let exe = std::fs::read_link("/proc/self/exe").map(|path| path.display().to_string()).unwrap_or_default();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    for (start, length) in read_only_mappings_of(&maps, &exe) {
        // SAFETY: `start..start + length` is a whole mapping of this process (from /proc/self/maps, read
        // just now; mappings of the executable do not move while it runs), read-only and backed by the
        // executable's file. MADV_PAGEOUT only drops the page table entries (and reclaims the pages when
        // no one else maps them): the contents stay in the file and fault back in when read or run. On a
        // kernel without MADV_PAGEOUT (before 5.4) the call fails with EINVAL and changes nothing.
        let result = unsafe { libc::madvise(start as *mut libc::c_void, length, libc::MADV_PAGEOUT) };
        if result != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "madvise(MADV_PAGEOUT) refused");
        }
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only returns free memory at the top of the heaps to the kernel (glibc); it
        // takes malloc's own locks and touches no memory in use.
        let _trimmed = unsafe { libc::malloc_trim(0) };
    }
    Released { before, after: resident_bytes() }
}

/// Releases once after [`FIRST_RELEASE_AFTER`], then every [`RELEASE_EVERY`], off the async workers.
pub async fn release_loop() {
    tokio::time::sleep(FIRST_RELEASE_AFTER).await;
    loop {
        match tokio::task::spawn_blocking(release_idle_pages).await {
            Ok(Released { before, after }) => tracing::debug!(
                before_kib = before / 1024,
                after_kib = after / 1024,
                "gave back start-up's code pages and free heap"
            ),
            Err(error) => tracing::debug!(error = %error, "releasing idle pages failed"),
        }
        tokio::time::sleep(RELEASE_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_executables_read_only_mappings() {
        let maps = "\
55d0c0000000-55d0c0100000 r--p 00000000 fd:01 123 /usr/bin/mend
55d0c0100000-55d0c0900000 r-xp 00100000 fd:01 123 /usr/bin/mend
55d0c0900000-55d0c0a00000 r--p 00900000 fd:01 123 /usr/bin/mend
55d0c0a00000-55d0c0a10000 rw-p 00a00000 fd:01 123 /usr/bin/mend
55d0c1000000-55d0c1100000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000100000 r-xp 00000000 fd:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000200000-7f0000201000 r--p 00000000 fd:01 789 /usr/bin/mend (deleted)
garbage line
";
        assert_eq!(
            read_only_mappings_of(maps, "/usr/bin/mend"),
            [(0x55d0c0000000, 0x100000), (0x55d0c0100000, 0x800000), (0x55d0c0900000, 0x100000)]
        );
        assert!(read_only_mappings_of(maps, "/other").is_empty());
    }

    #[test]
    fn a_release_keeps_the_process_running_and_never_grows_it() {
        let Released { before, after } = release_idle_pages();
        assert!(before > 0, "statm readable");
        // The test itself runs on after its own code was paged out: it faults back in.
        assert!(after <= before + 1024 * 1024, "before {before}, after {after}");
        assert_eq!(read_only_mappings_of("", "/usr/bin/mend"), []);
    }
}
