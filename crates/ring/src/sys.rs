//! The few plain syscalls comet needs beside io_uring, wrapped safely.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

/// Raises the soft RLIMIT_NOFILE to the hard limit and returns the new soft limit. A ring's
/// fixed-file table may hold at most this many descriptors.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid rlimit read above; the kernel only reads it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}

/// TCP_RTO_MAX_MS (Linux 6.15), not in the libc crate yet.
const TCP_RTO_MAX_MS: libc::c_int = 44;

/// Caps the socket's retransmission timeout at `ms` (TCP_RTO_MAX_MS, 1,000 to 120,000; the
/// kernel's default is 120,000); a listener's sockets inherit it. Fails with ENOPROTOOPT
/// before Linux 6.15.
pub fn set_tcp_rto_max_ms(fd: &impl AsRawFd, ms: u32) -> io::Result<()> {
    let value =
        libc::c_int::try_from(ms).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: optval points at a c_int that lives for the duration of the call, and optlen is
    // its size; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            TCP_RTO_MAX_MS,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The socket's TCP_RTO_MAX_MS (see [`set_tcp_rto_max_ms`]).
pub fn tcp_rto_max_ms(fd: &impl AsRawFd) -> io::Result<u32> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: optval and optlen point at locals that live for the duration of the call, and
    // optlen says how many bytes optval has room for.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            TCP_RTO_MAX_MS,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value as u32)
}

/// A new non-blocking, close-on-exec eventfd.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes an eventfd readable (adds 1 to its counter).
pub fn eventfd_signal(fd: &OwnedFd) -> io::Result<()> {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from `one`, which lives for the duration of the call.
    let n = unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    if n != 8 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Empties a non-blocking eventfd (its counter back to 0); an eventfd that is empty already is
/// left as it is.
pub fn eventfd_clear(fd: &OwnedFd) -> io::Result<()> {
    let mut count: u64 = 0;
    // SAFETY: reads at most 8 bytes into `count`, which lives for the duration of the call.
    let n = unsafe { libc::read(fd.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
    if n == 8 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) => Ok(()),
        _ => Err(e),
    }
}

/// The kernel's page size in bytes, asked once. /proc/self/statm and sockstat's TCP `mem` count
/// in these pages; 4096 on x86_64, but 16 or 64 KiB on some arm64 and ppc64 kernels.
pub fn page_size() -> u64 {
    static PAGE_SIZE: OnceLock<u64> = OnceLock::new();
    *PAGE_SIZE.get_or_init(|| {
        // SAFETY: sysconf takes no pointers; it only reads a value fixed at exec.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        // POSIX requires _SC_PAGESIZE, and Linux's is a power of two of at least 4096.
        let size = u64::try_from(size).expect("sysconf(_SC_PAGESIZE) answers");
        assert!(size.is_power_of_two() && size >= 4096, "page size {size}");
        size
    })
}

/// Bytes the allocator has handed out and not yet freed: glibc's `mallinfo2()`, `uordblks`
/// (in use from every arena) plus `hblkhd` (in use as separate mmap'd chunks). This is the
/// allocator's own account of live heap, without its free lists, fragmentation or the pages it
/// keeps for reuse (those show in RSS). It locks each arena in turn, so call it per scrape, not
/// per request. `None` where the allocator is not glibc's malloc.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn heap_in_use() -> Option<u64> {
    // SAFETY: mallinfo2 takes no arguments and returns a plain struct by value; glibc (2.33+)
    // takes each arena's lock itself while it sums them.
    let info = unsafe { libc::mallinfo2() };
    Some((info.uordblks as u64).saturating_add(info.hblkhd as u64))
}

/// Hands the allocator's free pages back to the kernel: glibc's `malloc_trim(0)` releases
/// (madvise) every whole free page of every arena, not only the top of the heap, so memory a
/// burst used and freed leaves RSS instead of staying as holes for ever. It locks each arena
/// in turn and walks its free chunks (sub-millisecond at tens of MB of heap): call it from a
/// timer off the hot path. Does nothing where the allocator is not glibc's malloc.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn release_free_memory() {
    // SAFETY: malloc_trim takes a plain integer and hands the kernel only pages glibc owns and
    // has free; it takes each arena's lock itself.
    unsafe { libc::malloc_trim(0) };
}

/// Fixes glibc's mmap threshold at `bytes`: an allocation that large or larger is mapped on
/// its own and unmapped when freed. By default the threshold rises to the size of any mapped
/// block freed (up to 32 MB), so once the history's tables have grown and shrunk, later large
/// blocks come from the arenas instead and hold their pages among small ones that
/// `malloc_trim` cannot release: at 1M, once a burst's messages had aged out of the history,
/// the heap in use was back at its idle size but RSS 1.51x idle
/// (results/1m/2026-11-30-shutdown-no-deadlines); with the threshold fixed at 128 KiB, 1.00x
/// (results/1m/2026-11-30-mmap-threshold). Call before the first large allocation.
/// Does nothing where the allocator is not glibc's malloc.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn fix_mmap_threshold(bytes: usize) {
    let bytes = i32::try_from(bytes).unwrap_or(i32::MAX);
    // SAFETY: mallopt takes two plain integers; glibc takes the main arena's lock itself.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, bytes) };
}

/// Fixes the mmap threshold; only glibc's malloc has it.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn fix_mmap_threshold(_bytes: usize) {}

/// Hands the allocator's free pages back; only glibc's malloc has it.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() {}

/// Bytes the allocator has handed out and not yet freed; only glibc's malloc reports it.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn heap_in_use() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::{heap_in_use, page_size};

    #[test]
    fn page_size_is_the_kernels() {
        // SAFETY: getauxval takes no pointers and reads the auxiliary vector, fixed at exec.
        let from_auxv = unsafe { libc::getauxval(libc::AT_PAGESZ) };
        assert_eq!(page_size(), from_auxv);
        // Asked once: the second answer is the first.
        assert_eq!(page_size(), from_auxv);
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn heap_in_use_counts_a_live_allocation() {
        // Other tests run on other threads of this process and allocate and free while this one
        // reads (CI once saw an 8 MiB block's free hidden by them): the block is 256 MiB so that
        // half of it, the margin, is far above anything they hold. A zeroed block this size is
        // a fresh mmap that is never touched here, so it costs address space, not memory.
        const SIZE: usize = 256 << 20;
        let before = heap_in_use().expect("glibc reports its heap");
        let block = vec![0u8; SIZE];
        let during = heap_in_use().expect("glibc reports its heap");
        assert!(
            during >= before + (SIZE as u64) / 2,
            "heap grew by {} bytes for an {SIZE}-byte block",
            during as i64 - before as i64
        );
        assert_eq!(std::hint::black_box(&block)[4096], 0);
        drop(block);
        let after = heap_in_use().expect("glibc reports its heap");
        assert!(
            after + (SIZE as u64) / 2 <= during,
            "freeing the block shrank the heap by {} bytes only",
            during as i64 - after as i64
        );
    }
}
