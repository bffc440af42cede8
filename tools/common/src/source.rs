//! Source addresses for many client connections to one server on loopback.
//!
//! Linux picks a connect()'s source port by scanning the ephemeral range for one whose
//! 4-tuple is free; with tens of thousands of connections (and their TIME_WAITs) to one
//! address and port, that scan took ~1 ms per connect here (resumetest, 15,000 subscribers).
//! Spread over several source addresses (127.0.0.2 onwards), each with
//! IP_BIND_ADDRESS_NO_PORT (the port is still chosen at connect time, against the whole
//! 4-tuple), the scan ends at once.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd};

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

/// Sets IP_BIND_ADDRESS_NO_PORT on a socket about to be bound to a source address with port 0:
/// the bind takes the address only and connect() picks the port.
pub fn set_bind_address_no_port(socket: BorrowedFd<'_>) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: the fd is an open socket, borrowed for the duration of the call; optval points
    // at a live c_int and optlen is its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
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
    fn a_socket_bound_with_no_port_gets_its_port_at_connect() {
        use std::os::fd::AsFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        set_bind_address_no_port(socket.as_fd()).unwrap();
        let source = std::net::SocketAddr::from((loopback_source(3), 0));
        socket.bind(&source.into()).unwrap();
        let bound = socket.local_addr().unwrap().as_socket().unwrap();
        assert_eq!(bound.port(), 0, "no port before the connect");
        socket
            .connect(&listener.local_addr().unwrap().into())
            .unwrap();
        let local = socket.local_addr().unwrap().as_socket().unwrap();
        assert_eq!(local.ip(), source.ip());
        assert_ne!(local.port(), 0);
        let (_, peer) = listener.accept().unwrap();
        assert_eq!(peer, local);
    }
}
