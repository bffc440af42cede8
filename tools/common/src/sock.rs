//! Socket options that std and socket2 lack, for the load tools.
//!
//! Source addresses for many client connections to one server on loopback ([`start_connect`]):
//! Linux picks a connect()'s source port by scanning the ephemeral range for one whose 4-tuple
//! is free; with tens of thousands of connections (and their TIME_WAITs) to one address and
//! port, that scan slows every connect (resume p99 505 ms against 4.0 ms from 15 addresses:
//! `results/restart/2026-11-30-15k-one-source`, `-15k-sources`). Spread over
//! several source addresses (127.0.0.2 onwards), each with IP_BIND_ADDRESS_NO_PORT (the port
//! is still chosen at connect time, against the whole 4-tuple), the scan ends at once.
//!
//! Arrival times: with SO_TIMESTAMPNS on, [`recv_timestamped`] returns when the kernel
//! received the data read, so that a client on a busy machine can time a server's answer
//! without its own scheduling delays (resumetest's resume times).

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use socket2::{Domain, Protocol, Socket, Type};

/// The size of the ephemeral port range (`net.ipv4.ip_local_port_range`).
pub fn ephemeral_ports() -> u64 {
    let range =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut it = range
        .split_whitespace()
        .filter_map(|v| v.parse::<u64>().ok());
    match (it.next(), it.next()) {
        (Some(lo), Some(hi)) if hi > lo => hi - lo + 1,
        _ => 28_232, // the default range 32768-60999
    }
}

/// The `k`-th automatic source address: 127.0.0.2 onwards.
pub fn loopback_source(k: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 2)) + k)
}

/// Creates a non-blocking socket, binds it to `source` if given (port 0: the address only,
/// the port chosen by the connect; an explicit port with SO_REUSEADDR) and starts connect().
pub fn start_connect(target: SocketAddr, source: Option<SocketAddrV4>) -> io::Result<TcpStream> {
    let socket = Socket::new(
        Domain::for_address(target),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    if let Some(source) = source {
        if source.port() == 0 {
            set_bind_address_no_port(socket.as_fd())?;
        } else {
            // An explicit port may still have a TIME_WAIT socket from an earlier run.
            socket.set_reuse_address(true)?;
        }
        socket.bind(&SocketAddr::V4(source).into())?;
    }
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(socket.into())
}

/// Sets IP_BIND_ADDRESS_NO_PORT on a socket about to be bound to a source address with port 0:
/// the bind takes the address only and connect() picks the port.
pub fn set_bind_address_no_port(socket: BorrowedFd<'_>) -> io::Result<()> {
    set_int_option(socket, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, 1)
}

/// Sets SO_TIMESTAMPNS: each segment received carries its arrival time (CLOCK_REALTIME), which
/// [`recv_timestamped`] returns.
pub fn set_timestamp_ns(socket: BorrowedFd<'_>) -> io::Result<()> {
    set_int_option(socket, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)
}

fn set_int_option(
    socket: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the fd is an open socket, borrowed for the duration of the call; optval points
    // at a live c_int and optlen is its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// recv(2) into `buf`, with the arrival time of the first segment read when the socket has
/// SO_TIMESTAMPNS on ([`set_timestamp_ns`]); None without it.
pub fn recv_timestamped(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<(usize, Option<SystemTime>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for one SCM_TIMESTAMPNS message (a cmsghdr and a timespec), 8-byte aligned.
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data (integers and pointers); all zero is a valid, empty one.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: the fd is an open socket borrowed for the call; `msg` points at `iov` (which
    // points at `buf`) and at `control`, all live until the call returns, with their lengths.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut at = None;
    // SAFETY: `msg` was filled by recvmsg: its control pointer and length describe `control`,
    // and the CMSG_* macros stay inside them.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: a non-null header from CMSG_FIRSTHDR/CMSG_NXTHDR lies inside `control`.
        let header = unsafe { &*cmsg };
        if header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == libc::SCM_TIMESTAMPNS {
            // SAFETY: an SCM_TIMESTAMPNS message's data is one timespec, maybe unaligned.
            let ts: libc::timespec =
                unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast()) };
            at = Some(UNIX_EPOCH + Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
        }
        // SAFETY: as above; CMSG_NXTHDR returns null past the last header.
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    Ok((n as usize, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_start_at_127_0_0_2_and_carry_over() {
        assert_eq!(loopback_source(0), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(loopback_source(254), Ipv4Addr::new(127, 0, 1, 0));
    }

    #[test]
    fn a_connect_from_a_source_address_gets_its_port_at_connect() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let source = SocketAddrV4::new(loopback_source(3), 0);
        let stream = start_connect(listener.local_addr().unwrap(), Some(source)).unwrap();
        let (_, peer) = listener.accept().unwrap();
        let local = stream.local_addr().unwrap();
        assert_eq!(local.ip(), *source.ip());
        assert_ne!(local.port(), 0);
        assert_eq!(peer, local);
    }

    #[test]
    fn a_timestamped_receive_says_when_the_data_arrived() {
        use std::io::Write;
        use std::os::fd::AsFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let pair = || {
            let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            (client, listener.accept().unwrap().0)
        };
        let (plain, mut plain_server) = pair();
        let (stamped, mut server) = pair();
        set_timestamp_ns(stamped.as_fd()).unwrap();
        let mut buf = [0u8; 16];

        plain_server.write_all(b"plain").unwrap();
        let (n, at) = recv_timestamped(plain.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"plain");
        assert_eq!(at, None, "no arrival time without SO_TIMESTAMPNS");

        // The first socket to ask turns the kernel's receive stamps on from a work queue, with no
        // event to wait for: segments come without one until it has run (milliseconds).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            server.write_all(b"x").unwrap();
            let (n, at) = recv_timestamped(stamped.as_fd(), &mut buf).unwrap();
            assert_eq!(&buf[..n], b"x");
            if at.is_some() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no segment came with an arrival time in 5 s"
            );
            std::thread::sleep(Duration::from_millis(1));
        }

        let sent = SystemTime::now();
        server.write_all(b"later").unwrap();
        // Read a while later: the time is the arrival's, not the read's.
        std::thread::sleep(Duration::from_millis(200));
        let read = SystemTime::now();
        let (n, at) = recv_timestamped(stamped.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"later");
        let at = at.expect("an arrival time");
        assert!(at >= sent - Duration::from_millis(5), "{at:?} {sent:?}");
        assert!(at + Duration::from_millis(100) < read, "{at:?} {read:?}");
    }
}
