//! The allocator's mmap threshold stays where comet fixes it (glibc's malloc only). Its own
//! test binary: the threshold is process-wide, and the reading below must not see other
//! tests' allocations.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn a_large_block_is_mapped_apart_after_a_larger_one_was_freed() {
    comet_ring::sys::fix_mmap_threshold(128 * 1024);
    // SAFETY: mallinfo2 takes no arguments and returns a plain struct by value.
    let mapped = || unsafe { libc::mallinfo2() }.hblkhd;
    // A 16 MiB block is mapped; freeing it would raise a moving threshold to its size (glibc
    // raises it for blocks up to 32 MiB).
    drop(std::hint::black_box(vec![1u8; 16 << 20]));
    let before = mapped();
    let block = std::hint::black_box(vec![1u8; 1 << 20]);
    assert!(
        mapped() >= before + (1 << 20),
        "a 1 MiB block came from an arena: {} -> {} mapped bytes",
        before,
        mapped()
    );
    drop(block);
    assert_eq!(mapped(), before, "unmapped once freed");
}
