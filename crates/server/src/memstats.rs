//! What the kernel tells of comet's memory and of the process, read while the server runs, for
//! /metrics (`metrics.rs` writes them): the kernel's socket memory from /proc/net/sockstat{,6}
//! and /proc/slabinfo, and the standard `process_*` figures from /proc/self and /proc/stat.
//! Parsers are pure functions over the files' text; the `*_snapshot` functions read the files.
//!
//! The kernel figures are system-wide, not only comet's sockets: sockstat counts every TCP socket
//! of this network namespace, the TCP `mem` pages and the slab caches are shared by the whole
//! machine (every namespace, every process, clients included when they run on the same host).

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

/// The auxiliary vector's value for `key`, read without unsafe from /proc/self/auxv.
fn auxv(key: usize) -> Option<u64> {
    const WORD: usize = std::mem::size_of::<usize>();
    let auxv = std::fs::read("/proc/self/auxv").ok()?;
    auxv.chunks_exact(2 * WORD).find_map(|entry| {
        let word = |i: usize| {
            let mut b = [0u8; WORD];
            b.copy_from_slice(&entry[i * WORD..(i + 1) * WORD]);
            usize::from_ne_bytes(b)
        };
        (word(0) == key && word(1) > 0).then(|| word(1) as u64)
    })
}

/// The kernel's page size: sockstat's `mem` and /proc/self/stat's `rss` are in these pages.
fn page_size() -> u64 {
    comet_ring::sys::page_size()
}

/// Clock ticks per second (AT_CLKTCK, what sysconf(_SC_CLK_TCK) returns); 100 (USER_HZ on
/// every Linux architecture comet runs on) if unreadable. /proc/self/stat's times are in these.
fn clock_ticks() -> u64 {
    const AT_CLKTCK: usize = 17;
    auxv(AT_CLKTCK).unwrap_or(100)
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

/// The fields comet takes from /proc/self/stat (proc(5)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// `utime` + `stime`, in clock ticks.
    pub cpu_ticks: u64,
    /// `starttime`: clock ticks after boot.
    pub start_ticks: u64,
    /// `vsize`, bytes.
    pub virtual_bytes: u64,
    /// `rss`, pages.
    pub resident_pages: u64,
}

/// Parses /proc/<pid>/stat. The command name (field 2) is in parentheses and may hold spaces
/// and parentheses itself, so fields are counted after its last `)`.
pub fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After ")" the fields are numbered from 3 (state): field N is at index N - 3.
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(ProcStat {
        cpu_ticks: field(14)? + field(15)?,
        start_ticks: field(22)?,
        virtual_bytes: field(23)?,
        resident_pages: field(24)?,
    })
}

/// Boot time, seconds since the epoch: the `btime` line of /proc/stat.
pub fn parse_btime(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// The soft limit of open files from /proc/self/limits (`None` when "unlimited").
pub fn parse_max_open_files(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The standard `process_*` figures of this process; a field is `None` where its source could
/// not be read.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Process {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub start_time_seconds: Option<f64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
}

/// Reads the process's figures now: /proc/self/stat, /proc/stat (boot time), /proc/self/limits
/// and the entries of /proc/self/fd. A few small reads; meant for a /metrics scrape.
pub fn process_snapshot() -> Process {
    let mut p = Process::default();
    let ticks = clock_ticks() as f64;
    let stat = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|t| parse_proc_stat(&t));
    if let Some(stat) = stat {
        p.cpu_seconds = Some(stat.cpu_ticks as f64 / ticks);
        p.resident_bytes = Some(stat.resident_pages.saturating_mul(page_size()));
        p.virtual_bytes = Some(stat.virtual_bytes);
        let btime = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|t| parse_btime(&t));
        p.start_time_seconds = btime.map(|b| b as f64 + stat.start_ticks as f64 / ticks);
    }
    p.open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|dir| dir.count() as u64);
    p.max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| parse_max_open_files(&t));
    p
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
    fn snapshot_reads_this_machine() {
        let k = kernel_snapshot();
        if std::path::Path::new("/proc/net/sockstat").exists() {
            assert!(
                k.tcp_sockets.is_some() && k.tcp_buffer_bytes.is_some(),
                "{k:?}"
            );
        }
    }

    #[test]
    fn proc_stat() {
        // A command name with spaces and parentheses; fields 14, 15, 22, 23 and 24 set.
        let stat = "4242 (co m) et)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 \
                    1234 56789 300 18446744073709551615";
        assert_eq!(
            parse_proc_stat(stat),
            Some(ProcStat {
                cpu_ticks: 325,
                start_ticks: 1234,
                virtual_bytes: 56789,
                resident_pages: 300,
            })
        );
        assert_eq!(parse_proc_stat("4242 (x) S 1 2"), None);
        assert_eq!(parse_proc_stat(""), None);
    }

    #[test]
    fn boot_time_and_limits() {
        assert_eq!(
            parse_btime("cpu  1 2 3\nintr 5\nbtime 1764151234\nprocesses 9\n"),
            Some(1_764_151_234)
        );
        assert_eq!(parse_btime("cpu 1\n"), None);
        let limits =
            "Limit                     Soft Limit           Hard Limit           Units     
Max cpu time              unlimited            unlimited            seconds   
Max open files            1024                 524288               files     
";
        assert_eq!(parse_max_open_files(limits), Some(1024));
        assert_eq!(
            parse_max_open_files(
                "Max open files            unlimited            unlimited            files\n"
            ),
            None
        );
    }

    #[test]
    fn process_snapshot_reads_this_process() {
        let p = process_snapshot();
        assert!(p.resident_bytes.is_some_and(|b| b > 0), "{p:?}");
        assert!(p.virtual_bytes >= p.resident_bytes, "{p:?}");
        assert!(p.cpu_seconds.is_some_and(|s| s >= 0.0), "{p:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        // Started within the last day, and not in the future (btime is whole seconds).
        assert!(
            p.start_time_seconds
                .is_some_and(|t| t <= now + 1.0 && t > now - 86_400.0),
            "{p:?}"
        );
        assert!(p.open_fds.is_some_and(|n| n >= 3), "{p:?}");
        assert!(p.max_fds.is_some_and(|n| n >= p.open_fds.unwrap()), "{p:?}");
    }

    #[test]
    fn clock_ticks_are_sane() {
        assert_eq!(clock_ticks(), 100);
    }
}
