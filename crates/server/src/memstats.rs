//! What a connection costs, read while the server runs: the allocator's bytes in use (given by
//! the caller, from `comet_ring::sys::heap_in_use`) and the kernel's socket memory from
//! /proc/net/sockstat{,6} and /proc/slabinfo, rendered as Prometheus gauges for /metrics.
//!
//! The kernel figures are system-wide, not only comet's sockets: sockstat counts every TCP socket
//! of this network namespace, the TCP `mem` pages and the slab caches are shared by the whole
//! machine (every namespace, every process, clients included when they run on the same host).

use std::fmt::Write;

/// Slab caches whose objects a TCP socket owns, one object per socket while it is open. Each
/// was seen to grow by one object per socket when 5,000 loopback connections (10,000 sockets)
/// were opened on the build machine (Linux 6.18, SLUB):
/// - `TCP`: the IPv4 `struct tcp_sock` itself, 2,368 B per object; +0.99 to 1.00 objects per
///   socket, 2,349 to 2,367 B per socket.
/// - `TCPv6`: the same for IPv6 sockets (also IPv4-mapped ones on a `[::]` listener), 2,496 B;
///   +1.00 per socket over `::1`, 2,492 B per socket.
/// - `sock_inode_cache`: the socket's inode with its `struct socket`, 832 B; +0.98 to 0.99 per
///   socket, 818 to 826 B per socket. Shared by every socket family (UDP, unix), so unix sockets
///   of other processes count here too.
///
/// Left out on purpose, though each also grew by about one object per socket: `filp` (192 B,
/// `struct file`; direct io_uring descriptors still have one), `dentry` (192 B, the sockfs
/// pseudo-dentry), `lsm_inode_cache` (32 B) and `lsm_file_cache` (24 B), about 440 B per socket
/// together. Those caches hold every open file and cached path of the machine (dentry held
/// ~150,000 objects here with ~2,000 sockets open), so their totals say nothing about sockets.
/// Also left out: `tw_sock_TCP` and `request_sock_TCP` (TIME_WAIT and half-open connections,
/// not counted in sockstat's `inuse`) and `skbuff_*` (queued data, which the TCP `mem` pages
/// already account for).
pub const SOCKET_SLAB_CACHES: &[&str] = &["TCP", "TCPv6", "sock_inode_cache"];

/// The counts comet takes from /proc/net/sockstat (and /proc/net/sockstat6, when its text is
/// appended).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sockstat {
    /// TCP sockets in use (not TIME_WAIT) in this network namespace: `TCP: inuse`, plus
    /// `TCP6: inuse` when sockstat6's text is included.
    pub tcp_inuse: u64,
    /// Pages charged to TCP buffers (`TCP: ... mem N`), machine-wide, IPv4 and IPv6 together.
    pub tcp_mem_pages: u64,
    /// Sockets of every kind in this network namespace (`sockets: used N`).
    pub sockets_used: u64,
}

/// The kernel's memory for sockets, as read by [`kernel_snapshot`]. A field is `None` where its
/// source could not be read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelMem {
    /// TCP sockets in use (IPv4 + IPv6) in this network namespace.
    pub tcp_sockets: Option<u64>,
    /// Bytes charged to TCP socket buffers, machine-wide (TCP `mem` pages x page size).
    pub tcp_buffer_bytes: Option<u64>,
    /// Bytes of the slab caches in [`SOCKET_SLAB_CACHES`], machine-wide. /proc/slabinfo is
    /// readable by root only; `None` otherwise.
    pub slab_bytes: Option<u64>,
}

/// Parses /proc/net/sockstat text, optionally followed by /proc/net/sockstat6 text. `None`
/// unless both the `sockets:` and the `TCP:` line are present and well formed.
pub fn parse_sockstat(text: &str) -> Option<Sockstat> {
    let mut sockets_used = None;
    let mut tcp = None;
    let mut tcp6_inuse = 0u64;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(proto) = words.next() else {
            continue;
        };
        let rest: Vec<&str> = words.collect();
        match proto {
            "sockets:" => sockets_used = Some(field(&rest, "used")?),
            "TCP:" => tcp = Some((field(&rest, "inuse")?, field(&rest, "mem")?)),
            "TCP6:" => tcp6_inuse = tcp6_inuse.saturating_add(field(&rest, "inuse")?),
            _ => {}
        }
    }
    let (inuse, mem) = tcp?;
    Some(Sockstat {
        tcp_inuse: inuse.saturating_add(tcp6_inuse),
        tcp_mem_pages: mem,
        sockets_used: sockets_used?,
    })
}

/// The number after `key` in a sockstat line's `key value key value ...` words.
fn field(words: &[&str], key: &str) -> Option<u64> {
    let at = words.chunks(2).position(|pair| pair[0] == key)?;
    words.get(at * 2 + 1)?.parse().ok()
}

/// Sums `active_objs * objsize` over the caches named in `caches` in /proc/slabinfo text
/// ("slabinfo - version: 2.1"). Names not present add nothing; malformed lines are skipped.
pub fn parse_slabinfo(text: &str, caches: &[&str]) -> u64 {
    let mut total = 0u64;
    for line in text.lines() {
        if line.starts_with("slabinfo") || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let Some(name) = words.next() else {
            continue;
        };
        if !caches.contains(&name) {
            continue;
        }
        let active: Option<u64> = words.next().and_then(|w| w.parse().ok());
        let objsize: Option<u64> = words.nth(1).and_then(|w| w.parse().ok());
        if let (Some(active), Some(objsize)) = (active, objsize) {
            total = total.saturating_add(active.saturating_mul(objsize));
        }
    }
    total
}

/// The kernel's page size from the auxiliary vector (AT_PAGESZ), read without unsafe from
/// /proc/self/auxv; 4096 (x86_64's only base page size) if that fails. sockstat's `mem` is in
/// these pages.
fn page_size() -> u64 {
    const AT_PAGESZ: usize = 6;
    const WORD: usize = std::mem::size_of::<usize>();
    let Ok(auxv) = std::fs::read("/proc/self/auxv") else {
        return 4096;
    };
    for entry in auxv.chunks_exact(2 * WORD) {
        let word = |i: usize| {
            let mut b = [0u8; WORD];
            b.copy_from_slice(&entry[i * WORD..(i + 1) * WORD]);
            usize::from_ne_bytes(b)
        };
        if word(0) == AT_PAGESZ && word(1) > 0 {
            return word(1) as u64;
        }
    }
    4096
}

/// Reads the kernel's socket memory now: /proc/net/sockstat and /proc/net/sockstat6 for TCP
/// sockets and buffer pages, /proc/slabinfo (root only) for the socket slab caches. A few small
/// reads; meant for a /metrics scrape.
pub fn kernel_snapshot() -> KernelMem {
    let mut k = KernelMem::default();
    if let Ok(mut text) = std::fs::read_to_string("/proc/net/sockstat") {
        if let Ok(v6) = std::fs::read_to_string("/proc/net/sockstat6") {
            text.push('\n');
            text.push_str(&v6);
        }
        if let Some(s) = parse_sockstat(&text) {
            k.tcp_sockets = Some(s.tcp_inuse);
            k.tcp_buffer_bytes = Some(s.tcp_mem_pages.saturating_mul(page_size()));
        }
    }
    if let Ok(text) = std::fs::read_to_string("/proc/slabinfo") {
        k.slab_bytes = Some(parse_slabinfo(&text, SOCKET_SLAB_CACHES));
    }
    k
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

/// Appends the memory families to a /metrics body. `heap_bytes` is the allocator's bytes in use
/// now (`None`: allocator can't tell, heap families omitted); `heap_baseline` the same figure
/// once the server had started, before any connection; `connections` the connections open now.
/// Kernel families whose source was unreadable are omitted.
pub fn render(
    out: &mut String,
    heap_bytes: Option<u64>,
    heap_baseline: u64,
    connections: u64,
    k: &KernelMem,
) {
    if let Some(heap) = heap_bytes {
        gauge(
            out,
            "comet_heap_bytes",
            "Bytes the allocator has handed out and not freed (glibc mallinfo2 uordblks + hblkhd).",
            heap,
        );
        let per_conn = heap
            .saturating_sub(heap_baseline)
            .checked_div(connections)
            .unwrap_or(0);
        gauge(
            out,
            "comet_heap_bytes_per_connection",
            "Heap bytes in use above the heap at startup, divided by open connections (0 with none).",
            per_conn,
        );
    }
    if let Some(sockets) = k.tcp_sockets {
        gauge(
            out,
            "comet_kernel_tcp_sockets",
            "TCP sockets in use in this network namespace, all processes (sockstat inuse, IPv4 + IPv6).",
            sockets,
        );
    }
    if let Some(bytes) = k.tcp_buffer_bytes {
        gauge(
            out,
            "comet_kernel_tcp_buffer_bytes",
            "Bytes charged to TCP socket buffers, machine-wide (sockstat TCP mem pages x page size).",
            bytes,
        );
    }
    if let Some(bytes) = k.slab_bytes {
        gauge(
            out,
            "comet_kernel_socket_slab_bytes",
            "Bytes of the TCP, TCPv6 and sock_inode_cache slab caches, machine-wide (needs root).",
            bytes,
        );
    }
    if let (Some(sockets), Some(slab), Some(buffers)) =
        (k.tcp_sockets, k.slab_bytes, k.tcp_buffer_bytes)
    {
        let per_socket =
            slab.checked_div(sockets).unwrap_or(0) + buffers.checked_div(sockets).unwrap_or(0);
        gauge(
            out,
            "comet_kernel_bytes_per_socket",
            "Socket slab bytes plus TCP buffer bytes, divided by TCP sockets in use; system-wide, not only comet's sockets.",
            per_socket,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Taken from the build machine holding 1,000 IPv4 loopback pairs (one unread 64 B message on
    // each accepted socket) and 10 IPv6 pairs.
    const SOCKSTAT: &str = "sockets: used 2037
TCP: inuse 2002 orphan 0 tw 15002 alloc 2023 mem 902
UDP: inuse 0 mem 0
UDPLITE: inuse 0
RAW: inuse 0
FRAG: inuse 0 memory 0
";
    const SOCKSTAT6: &str = "TCP6: inuse 21
UDP6: inuse 0
UDPLITE6: inuse 0
RAW6: inuse 0
FRAG6: inuse 0 memory 0
";
    const SLABINFO: &str = "slabinfo - version: 2.1
# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>
TCPv6                 78    143   2496   13    8 : tunables    0    0    0 : slabdata     11     11      0
UDP                   24     24   1344   12    4 : tunables    0    0    0 : slabdata      2      2      0
tw_sock_TCP        10016  10016    256   16    1 : tunables    0    0    0 : slabdata    626    626      0
request_sock_TCP      72    132    320   12    1 : tunables    0    0    0 : slabdata     11     11      0
TCP                 2028   2028   2368   13    8 : tunables    0    0    0 : slabdata    156    156      0
sock_inode_cache    2185   2185    832   19    4 : tunables    0    0    0 : slabdata    115    115      0
skbuff_head_cache    303    320    256   16    1 : tunables    0    0    0 : slabdata     20     20      0
filp                2646   2646    192   21    1 : tunables    0    0    0 : slabdata    126    126      0
dentry            157143 157143    192   21    1 : tunables    0    0    0 : slabdata   7483   7483      0
";

    #[test]
    fn sockstat_alone() {
        assert_eq!(
            parse_sockstat(SOCKSTAT),
            Some(Sockstat {
                tcp_inuse: 2002,
                tcp_mem_pages: 902,
                sockets_used: 2037,
            })
        );
    }

    #[test]
    fn sockstat_with_sockstat6_sums_tcp6() {
        let text = format!("{SOCKSTAT}\n{SOCKSTAT6}");
        let s = parse_sockstat(&text).unwrap();
        assert_eq!(s.tcp_inuse, 2023);
        assert_eq!(s.tcp_mem_pages, 902);
        assert_eq!(s.sockets_used, 2037);
    }

    #[test]
    fn sockstat_without_tcp_or_garbled_is_none() {
        assert_eq!(parse_sockstat(SOCKSTAT6), None);
        assert_eq!(parse_sockstat(""), None);
        assert_eq!(
            parse_sockstat("sockets: used 3\nTCP: inuse x orphan 0 tw 0 alloc 1 mem 1\n"),
            None
        );
        assert_eq!(parse_sockstat("sockets: used 3\nTCP: inuse 1\n"), None);
    }

    #[test]
    fn slabinfo_sums_named_caches() {
        assert_eq!(
            parse_slabinfo(SLABINFO, SOCKET_SLAB_CACHES),
            78 * 2496 + 2028 * 2368 + 2185 * 832
        );
        assert_eq!(parse_slabinfo(SLABINFO, &["filp"]), 2646 * 192);
        assert_eq!(parse_slabinfo(SLABINFO, &["nope"]), 0);
        assert_eq!(parse_slabinfo("", SOCKET_SLAB_CACHES), 0);
        // The header's own words are not a cache, and a cut line is skipped.
        assert_eq!(
            parse_slabinfo("slabinfo - version: 2.1\nTCP 5\n", &["TCP"]),
            0
        );
    }

    #[test]
    fn page_size_is_sane() {
        let p = page_size();
        assert!(p.is_power_of_two() && p >= 4096, "{p}");
    }

    #[test]
    fn snapshot_reads_this_machine() {
        let k = kernel_snapshot();
        if std::path::Path::new("/proc/net/sockstat").exists() {
            assert!(
                k.tcp_sockets.is_some() && k.tcp_buffer_bytes.is_some(),
                "{k:?}"
            );
        }
    }

    fn value(text: &str, name: &str) -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .map(|v| v.parse().unwrap())
    }

    #[test]
    fn render_all_families() {
        let k = KernelMem {
            tcp_sockets: Some(2023),
            tcp_buffer_bytes: Some(902 * 4096),
            slab_bytes: Some(6_829_792),
        };
        let mut out = String::new();
        render(
            &mut out,
            Some(1_000_000 + 10_000 * 115),
            1_000_000,
            10_000,
            &k,
        );
        assert_eq!(value(&out, "comet_heap_bytes"), Some(2_150_000));
        assert_eq!(value(&out, "comet_heap_bytes_per_connection"), Some(115));
        assert_eq!(value(&out, "comet_kernel_tcp_sockets"), Some(2023));
        assert_eq!(
            value(&out, "comet_kernel_tcp_buffer_bytes"),
            Some(3_694_592)
        );
        assert_eq!(
            value(&out, "comet_kernel_socket_slab_bytes"),
            Some(6_829_792)
        );
        assert_eq!(
            value(&out, "comet_kernel_bytes_per_socket"),
            Some(6_829_792 / 2023 + 3_694_592 / 2023)
        );
        for name in [
            "comet_heap_bytes",
            "comet_heap_bytes_per_connection",
            "comet_kernel_tcp_sockets",
            "comet_kernel_tcp_buffer_bytes",
            "comet_kernel_socket_slab_bytes",
            "comet_kernel_bytes_per_socket",
        ] {
            assert!(out.contains(&format!("# HELP {name} ")), "{name}");
            assert!(out.contains(&format!("# TYPE {name} gauge\n")), "{name}");
        }
        assert!(out.ends_with('\n'));
    }

    #[test]
    fn render_omits_what_is_unavailable() {
        let mut out = String::new();
        render(&mut out, None, 0, 5, &KernelMem::default());
        assert_eq!(out, "");

        let k = KernelMem {
            tcp_sockets: Some(0),
            tcp_buffer_bytes: Some(4096),
            slab_bytes: None,
        };
        render(&mut out, Some(500), 900, 0, &k);
        assert_eq!(value(&out, "comet_heap_bytes"), Some(500));
        // No connections (and a heap below its baseline) read as 0, not a division by zero.
        assert_eq!(value(&out, "comet_heap_bytes_per_connection"), Some(0));
        assert_eq!(value(&out, "comet_kernel_tcp_sockets"), Some(0));
        assert_eq!(value(&out, "comet_kernel_tcp_buffer_bytes"), Some(4096));
        assert!(!out.contains("comet_kernel_socket_slab_bytes"));
        assert!(!out.contains("comet_kernel_bytes_per_socket"));
    }

    #[test]
    fn render_per_socket_with_no_sockets_is_zero() {
        let k = KernelMem {
            tcp_sockets: Some(0),
            tcp_buffer_bytes: Some(4096),
            slab_bytes: Some(8192),
        };
        let mut out = String::new();
        render(&mut out, None, 0, 0, &k);
        assert_eq!(value(&out, "comet_kernel_bytes_per_socket"), Some(0));
    }
}
