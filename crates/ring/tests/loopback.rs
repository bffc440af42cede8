//! The reactor against real sockets on loopback: accept into the fixed-file table, multishot
//! recv through the provided buffer ring (wrapping it many times), sends from the write pool,
//! MSG_RING between two rings, close.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;

use comet_ring::{Completion, Config, Ring, Sent};

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

#[test]
fn accept_recv_send_close_on_loopback() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut ring = Ring::new(CONFIG).unwrap();
    ring.accept_multi(listener.as_raw_fd(), ACCEPT);
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let accepted = wait_for(&mut ring, ACCEPT);
    assert!(accepted.result >= 0 && accepted.more(), "{accepted:?}");
    let slot = accepted.result as u32;

    // 4 read buffers of 512 bytes: 40 messages wrap the buffer ring ten times.
    ring.recv_multi(slot, RECV);
    for i in 0..40u32 {
        let msg = format!("message {i:04}");
        client.write_all(msg.as_bytes()).unwrap();
        let c = wait_for(&mut ring, RECV);
        assert!(c.more(), "multishot recv ended: {c:?}");
        let bid = c.buffer().expect("a provided buffer");
        assert_eq!(ring.reads.get(bid, c.result as usize), msg.as_bytes());
        ring.reads.recycle(bid);
    }

    let buf = ring.writes.alloc();
    ring.writes.get_mut(buf).extend_from_slice(b"pong");
    ring.send(slot, buf, SEND);
    let c = wait_for(&mut ring, SEND);
    assert_eq!(ring.writes.complete(buf, c.result as usize), Sent::All);
    let mut pong = [0u8; 4];
    client.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"pong");

    // Closing the peer ends the multishot recv with 0 (EOF).
    drop(client);
    let c = wait_for(&mut ring, RECV);
    assert_eq!(c.result, 0);
    ring.close_slot(slot, 99);
    ring.submit_and_wait(0).unwrap();
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
