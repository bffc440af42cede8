//! The reactor against real sockets on loopback: accept into the fixed-file table, multishot
//! recv through the provided buffer ring (wrapping it many times), sends from the write pool,
//! MSG_RING between two rings, a last send and the shutdown that ends a poll, a reset close,
//! close; several rings driven by one thread asleep on the first; a burst of deferred task
//! work run in one enter.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;

use comet_ring::{Completion, Config, Ring, Rings, Sent};

const CONFIG: Config = Config {
    sq_entries: 64,
    files: 16,
    read_bufs: 4,
    read_buf_size: 512,
};

const ACCEPT: u64 = 1;
const RECV: u64 = 2;
const SEND: u64 = 3;
const DOORBELL: u64 = 4;

fn wait_for(ring: &mut Ring, user_data: u64) -> Completion {
    let mut cqes = Vec::new();
    for _ in 0..1000 {
        ring.submit_and_wait(1).unwrap();
        ring.drain(&mut cqes, 1);
        if let Some(c) = cqes.first() {
            assert_eq!(c.user_data, user_data, "unexpected completion {c:?}");
            return *c;
        }
    }
    panic!("no completion for {user_data}");
}

/// A client connected to a listener whose connections the primary ring of `rings` accepts
/// (multishot); the listener (kept open), the client and the accepted slot.
fn connected(rings: &mut Rings) -> (TcpListener, TcpStream, u32) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let ring = rings.primary();
    ring.accept_multi(listener.as_raw_fd(), ACCEPT);
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let accepted = wait_for(ring, ACCEPT);
    assert!(accepted.result >= 0 && accepted.more(), "{accepted:?}");
    (listener, client, accepted.result as u32)
}

#[test]
fn accept_recv_send_close_on_loopback() {
    let mut rings = Rings::new(CONFIG, 1).unwrap();
    let (_listener, mut client, slot) = connected(&mut rings);
    let ring = rings.primary();

    // 4 read buffers of 512 bytes: 40 messages wrap the buffer ring ten times.
    ring.recv_multi(slot, RECV);
    for i in 0..40u32 {
        let msg = format!("message {i:04}");
        client.write_all(msg.as_bytes()).unwrap();
        let c = wait_for(ring, RECV);
        assert!(c.more(), "multishot recv ended: {c:?}");
        let bid = c.buffer().expect("a provided buffer");
        assert_eq!(ring.reads.get(bid, c.result as usize), msg.as_bytes());
        ring.reads.recycle(bid);
    }

    let buf = rings.writes.alloc();
    rings.writes.get_mut(buf).extend_from_slice(b"pong");
    rings.send(slot, buf, SEND, false);
    let ring = rings.primary();
    let c = wait_for(ring, SEND);
    assert_eq!(rings.writes.complete(buf, c.result as usize), Sent::All);
    let ring = rings.primary();
    let mut pong = [0u8; 4];
    client.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"pong");

    // Closing the peer ends the multishot recv with 0 (EOF).
    drop(client);
    let c = wait_for(ring, RECV);
    assert_eq!(c.result, 0);
    ring.close_slot(slot, 99);
    ring.submit_and_wait(0).unwrap();
}

/// Segments the socket has received (TCP_INFO's `tcpi_segs_in`).
fn segments_in(stream: &TcpStream) -> u32 {
    // SAFETY: all zeroes is a valid tcp_info (integers only).
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `info`; both outlive the call.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    info.tcpi_segs_in
}

const WATCH: u64 = 7;
const SHUT: u64 = 8;

/// Ends a connection as a worker ends a stream at shutdown: its last bytes (`last`: sent as the
/// last), then the socket's shutdown, a one-shot poll armed all along. Returns the segments
/// the client received meanwhile, what it read to EOF, and the poll's completion.
fn end_stream(last: bool) -> (u32, Vec<u8>, Completion) {
    let mut rings = Rings::new(CONFIG, 1).unwrap();
    let (_listener, mut client, slot) = connected(&mut rings);
    let ring = rings.primary();
    ring.poll_read(slot, WATCH);
    ring.submit_and_wait(0).unwrap();
    let before = segments_in(&client);

    ring.send_static(slot, b"0\r\n\r\n", SEND, last);
    assert_eq!(wait_for(ring, SEND).result, 5);
    ring.shutdown_slot(slot, true, SHUT);
    let (mut cqes, mut watch) = (Vec::new(), None);
    let mut shut = None;
    while watch.is_none() || shut.is_none() {
        ring.submit_and_wait(1).unwrap();
        cqes.clear();
        ring.drain(&mut cqes, 8);
        for c in &cqes {
            match c.user_data {
                WATCH => watch = Some(*c),
                SHUT => shut = Some(*c),
                _ => panic!("unexpected completion {c:?}"),
            }
        }
    }
    assert_eq!(shut.unwrap().result, 0, "{shut:?}");
    let mut got = Vec::new();
    client.read_to_end(&mut got).unwrap();
    let segments = segments_in(&client) - before;
    ring.close_slot(slot, 99);
    ring.submit_and_wait(0).unwrap();
    (segments, got, watch.unwrap())
}

/// A shutdown ends the poll armed on the socket (no cancel needed), and a last send's bytes
/// go out with its FIN in one segment; an ordinary send goes at once, and the FIN after it.
#[test]
fn a_last_send_goes_out_with_the_shutdowns_fin() {
    let (segments, got, watch) = end_stream(true);
    assert_eq!(got, b"0\r\n\r\n");
    let hup = (libc::POLLIN | libc::POLLRDHUP) as i32;
    assert!(watch.result > 0 && watch.result & hup != 0, "{watch:?}");
    assert_eq!(segments, 1, "the bytes and the FIN in one segment");

    let (segments, got, _) = end_stream(false);
    assert_eq!(got, b"0\r\n\r\n");
    assert_eq!(segments, 2, "the bytes, then the FIN");
}

const LINGER: u64 = 9;

/// A reset close: SO_LINGER 0, then the reading side shut down, which ends the poll armed on
/// the socket and sends nothing; the close then resets the connection, so the client gets no
/// FIN (no EOF) but ECONNRESET.
#[test]
fn a_reset_close_ends_the_poll_and_sends_an_rst() {
    let mut rings = Rings::new(CONFIG, 1).unwrap();
    let (_listener, mut client, slot) = connected(&mut rings);
    let ring = rings.primary();
    ring.poll_read(slot, WATCH);
    ring.linger_zero(slot, LINGER);
    ring.shutdown_slot(slot, false, SHUT);
    let mut seen = std::collections::HashMap::new();
    let mut cqes = Vec::new();
    while seen.len() < 3 {
        ring.submit_and_wait(1).unwrap();
        cqes.clear();
        ring.drain(&mut cqes, 8);
        for c in &cqes {
            assert!(seen.insert(c.user_data, c.result).is_none(), "twice: {c:?}");
        }
    }
    assert_eq!(seen[&LINGER], 0, "SO_LINGER through IORING_OP_URING_CMD");
    assert_eq!(seen[&SHUT], 0);
    let hup = (libc::POLLIN | libc::POLLRDHUP) as i32;
    assert!(seen[&WATCH] > 0 && seen[&WATCH] & hup != 0, "{seen:?}");
    ring.close_slot(slot, 99);
    ring.submit_and_wait(0).unwrap();
    let mut byte = [0u8; 1];
    let err = client.read(&mut byte).expect_err("a reset, not an EOF");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
}

#[test]
fn msg_ring_posts_on_the_other_ring() {
    let mut a = Ring::new(CONFIG).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    // Each ring is driven by the thread that created it (single issuer).
    let t = std::thread::spawn(move || {
        let mut b = Ring::new(CONFIG).unwrap();
        tx.send(b.fd()).unwrap();
        go_rx.recv().unwrap();
        wait_for(&mut b, DOORBELL).result
    });
    let b_fd = rx.recv().unwrap();
    go_tx.send(()).unwrap();
    a.msg_ring(b_fd, 7, DOORBELL, 55);
    a.submit_and_wait(0).unwrap();
    assert_eq!(t.join().unwrap(), 7);
}

const WAKE: u64 = 5;
const TIMEOUT: u64 = 6;

/// Waits on the set as a worker does until the completion for `user_data` (the eventfd's poll
/// is re-armed on the way, the timer's ticks skipped); returns it and how many times the
/// thread woke for the eventfd meanwhile. The timer ticks every 200 ms: a test that never gets
/// its completion fails by its tick count, not by hanging.
fn next(rings: &mut Rings, user_data: u64) -> (Completion, u32) {
    let mut cqes = Vec::new();
    let (mut wakes, mut ticks) = (0, 0);
    loop {
        rings.wait(true).unwrap();
        rings.drain(&mut cqes, 1);
        let Some(&c) = cqes.first() else { continue };
        match c.user_data {
            u if u == user_data => return (c, wakes),
            WAKE => {
                wakes += 1;
                rings.woken();
            }
            TIMEOUT => {
                ticks += 1;
                assert!(ticks < 50, "no completion for {user_data} in 10 s");
            }
            _ => panic!("unexpected completion {c:?}"),
        }
    }
}

#[test]
fn a_thread_sleeping_on_the_primary_wakes_for_a_secondary() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut rings = Rings::new(CONFIG, 3).unwrap();
    rings.primary().tick_every(200, TIMEOUT);
    assert_eq!(rings.add(WAKE).unwrap(), 1);
    assert_eq!(rings.add(WAKE).unwrap(), 2);
    assert!(!rings.can_add());
    // Accepts on the last ring; the thread sleeps on the primary.
    rings.ring(2).accept_multi(listener.as_raw_fd(), ACCEPT);
    let addr = listener.local_addr().unwrap();
    let client = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(b"hello").unwrap();
        let mut pong = [0u8; 4];
        c.read_exact(&mut pong).unwrap();
        pong
    });
    let (accepted, _) = next(&mut rings, ACCEPT);
    assert!(accepted.result >= 0, "{accepted:?}");
    let slot = rings.slot(2, accepted.result as u32);
    assert_eq!(rings.ring_of(slot), 2);
    assert_eq!(slot, 2 * CONFIG.files + accepted.result as u32);
    // Deferred work of a secondary (the recv's data) wakes the thread too.
    rings.recv_multi(slot, RECV);
    let (c, _) = next(&mut rings, RECV);
    let bid = c.buffer().expect("a provided buffer");
    assert_eq!(rings.read(slot, bid, c.result as usize), b"hello");
    rings.recycle(slot, bid);
    let buf = rings.writes.alloc();
    rings.writes.get_mut(buf).extend_from_slice(b"pong");
    rings.send(slot, buf, SEND, false);
    let (c, _) = next(&mut rings, SEND);
    assert_eq!(rings.writes.complete(buf, c.result as usize), Sent::All);
    assert_eq!(&client.join().unwrap(), b"pong");
    // The peer closed: EOF on the secondary.
    let (c, _) = next(&mut rings, RECV);
    assert_eq!(c.result, 0, "{c:?}");
    rings.close_slot(slot, 99);
    // Idle: the thread sleeps until the timer (at most the one wake our own completions above
    // signalled, never a spin on the eventfd).
    let (_, wakes) = next(&mut rings, TIMEOUT);
    let (_, wakes_idle) = next(&mut rings, TIMEOUT);
    assert!(
        wakes <= 1 && wakes_idle == 0,
        "{wakes} and {wakes_idle} wakes while idle"
    );
}

/// A ring hands the kernel 8 read buffers at first (a quiet ring touches no more), and 8 more
/// each time a recv finds none: 10 connections with data and no buffer recycled meanwhile
/// need a second step.
#[test]
fn read_buffers_are_given_to_the_kernel_as_needed() {
    let config = Config {
        read_bufs: 32,
        ..CONFIG
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut rings = Rings::new(config, 1).unwrap();
    let ring = rings.primary();
    assert_eq!(ring.reads.given(), comet_ring::reads::GROW_STEP);
    ring.accept_multi(listener.as_raw_fd(), ACCEPT);
    let mut clients = Vec::new();
    let mut slots = Vec::new();
    for _ in 0..10 {
        clients.push(TcpStream::connect(listener.local_addr().unwrap()).unwrap());
        let c = wait_for(ring, ACCEPT);
        assert!(c.result >= 0, "{c:?}");
        slots.push(c.result as u32);
    }
    for c in &mut clients {
        c.write_all(b"data").unwrap();
    }
    // Each slot's recv is its index + 100; a recv that found no buffer is armed again.
    for (i, &slot) in slots.iter().enumerate() {
        ring.recv_multi(slot, 100 + i as u64);
    }
    let (mut got, mut ran_out, mut held) = (vec![false; 10], 0, Vec::new());
    let mut cqes = Vec::new();
    for _ in 0..1000 {
        if got.iter().all(|&g| g) {
            break;
        }
        ring.submit_and_wait(1).unwrap();
        ring.drain(&mut cqes, 64);
        for c in &cqes {
            let i = (c.user_data - 100) as usize;
            if c.result == -libc::ENOBUFS {
                ran_out += 1;
                ring.recv_multi(slots[i], c.user_data);
            } else if c.result > 0 {
                got[i] = true;
                // Held, not recycled: the buffers in use add up.
                held.push(c.buffer().expect("a provided buffer"));
            }
        }
    }
    assert!(got.iter().all(|&g| g), "{got:?}");
    assert!(ran_out >= 1, "10 reads in flight from 8 buffers");
    assert_eq!(ring.reads.given(), 2 * comet_ring::reads::GROW_STEP);
    for bid in held {
        ring.reads.recycle(bid);
    }
}

/// The kernel runs at most 20 items of a ring's deferred task work per enter unless the enter
/// waits; one `submit_and_wait(0)` must run them all (as far as the completion queue has room):
/// 100 polls made ready at once all complete in it.
#[test]
fn one_enter_runs_a_burst_of_deferred_work() {
    const POLLS: u64 = 100;
    let mut ring = Ring::new(CONFIG).unwrap();
    let fds: Vec<_> = (0..POLLS)
        .map(|_| comet_ring::sys::eventfd().unwrap())
        .collect();
    for (i, fd) in fds.iter().enumerate() {
        ring.poll_fd(fd.as_raw_fd(), 1000 + i as u64);
    }
    ring.submit_and_wait(0).unwrap();
    let mut cqes = Vec::new();
    ring.drain(&mut cqes, POLLS as usize);
    assert!(cqes.is_empty(), "nothing is readable yet: {cqes:?}");
    // Each wake-up queues one item of deferred work on the ring.
    for fd in &fds {
        comet_ring::sys::eventfd_signal(fd).unwrap();
    }
    ring.submit_and_wait(0).unwrap();
    ring.drain(&mut cqes, 2 * POLLS as usize);
    assert_eq!(cqes.len() as u64, POLLS, "completions after one enter");
    assert!(cqes.iter().all(|c| c.result > 0));
}

/// A ring quiet for a whole trim period gives its read buffers' pages back (they cost nothing
/// until the kernel writes them again), but not while a buffer is out or right after a read;
/// reads after a trim see their bytes as before.
#[test]
fn a_quiet_ring_gives_its_read_buffers_back() {
    let config = Config {
        read_bufs: 8,
        read_buf_size: 4096,
        ..CONFIG
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut ring = Ring::new(config).unwrap();
    ring.accept_multi(listener.as_raw_fd(), ACCEPT);
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let slot = wait_for(&mut ring, ACCEPT).result as u32;
    ring.recv_multi(slot, RECV);
    // One read per buffer, each recycled before the next write: every buffer is written once.
    let mut read = |ring: &mut Ring, text: &[u8], recycle: bool| {
        client.write_all(text).unwrap();
        let c = wait_for(ring, RECV);
        assert_eq!(c.result as usize, text.len(), "{c:?}");
        let bid = c.buffer().expect("a provided buffer");
        assert_eq!(ring.reads.get(bid, text.len()), text);
        if recycle {
            ring.reads.recycle(bid);
        }
        bid
    };
    for i in 0..8u8 {
        read(&mut ring, &[b'a' + i; 100], true);
    }
    assert_eq!(ring.reads.resident().unwrap(), 8 * 4096);
    assert_eq!(ring.trim_reads(), 0, "a read came in this period");
    assert_eq!(ring.trim_reads(), 8 * 4096, "quiet for a period");
    assert_eq!(ring.reads.resident().unwrap(), 0);
    assert_eq!(ring.trim_reads(), 0, "already given back");
    // Reads go on; one page is touched again.
    read(&mut ring, b"after the trim", true);
    assert_eq!(ring.reads.resident().unwrap(), 4096);
    // A buffer still out keeps the pages, however quiet the ring.
    let bid = read(&mut ring, b"held", false);
    assert_eq!(ring.trim_reads(), 0);
    assert_eq!(ring.trim_reads(), 0);
    assert_eq!(ring.reads.get(bid, 4), b"held");
    ring.reads.recycle(bid);
    assert_eq!(ring.trim_reads(), 8 * 4096);
}
