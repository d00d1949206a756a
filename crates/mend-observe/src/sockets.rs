//! Listening TCP sockets, from the kernel's socket diagnostics (netlink `sock_diag`, what `ss -lt` uses).
//!
//! mend asks "does anything listen on this port?" before every start of a replica. `/proc/net/tcp` answers
//! too, but the kernel writes out every socket it has to answer, `TIME_WAIT` ones included: a host that
//! serves traffic (or a probe every second for hours) has thousands, and reading the table took 10 ms
//! here with 3,600 of them. `sock_diag` is asked for listening sockets only, which the kernel keeps in a
//! table of their own, so its cost follows the listeners, not the traffic. Where netlink is not allowed
//! (some sandboxes), the `/proc/net` tables are read instead.

use std::os::fd::AsRawFd;

use nix::sys::socket::{AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType};

/// A socket that listens for TCP connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    /// Local port.
    pub port: u16,
    /// The socket's inode: what `/proc/PID/fd/N` links to as `socket:[INODE]`.
    pub inode: u64,
}

/// Every TCP socket that listens, on IPv4 and IPv6.
pub fn tcp_listeners() -> Vec<Listener> {
    match [libc_family::INET, libc_family::INET6].into_iter().map(dump_listeners).collect::<Result<Vec<_>, _>>() {
        Ok(per_family) => per_family.into_iter().flatten().collect(),
        Err(error) => {
            tracing::debug!(%error, "sock_diag unavailable: reading /proc/net/tcp");
            from_proc_net()
        }
    }
}

/// Address families as `sock_diag` wants them (a byte).
mod libc_family {
    pub(super) const INET: u8 = 2;
    pub(super) const INET6: u8 = 10;
}

const NETLINK_HEADER_LEN: usize = 16;
/// `SOCK_DIAG_BY_FAMILY`.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
/// `NLM_F_ROOT | NLM_F_MATCH`.
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const IPPROTO_TCP: u8 = 6;
const TCP_LISTEN: u32 = 10;
/// `struct inet_diag_req_v2`: family, protocol, ext, pad, states, then a 48-byte `inet_diag_sockid`.
const REQUEST_LEN: usize = 56;
/// `struct inet_diag_msg` up to and including `idiag_inode`.
const MESSAGE_LEN: usize = 72;

/// Asks the kernel for the listening TCP sockets of one address family.
fn dump_listeners(family: u8) -> nix::Result<Vec<Listener>> {
    let socket = nix::sys::socket::socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )?;
    let fd = socket.as_raw_fd();
    let mut request = Vec::with_capacity(NETLINK_HEADER_LEN + REQUEST_LEN);
    request.extend(((NETLINK_HEADER_LEN + REQUEST_LEN) as u32).to_ne_bytes());
    request.extend(SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    request.extend((NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    request.extend(1u32.to_ne_bytes()); // sequence number
    request.extend(0u32.to_ne_bytes()); // port id: the kernel fills it in
    request.extend([family, IPPROTO_TCP, 0, 0]);
    request.extend((1u32 << TCP_LISTEN).to_ne_bytes());
    request.resize(NETLINK_HEADER_LEN + REQUEST_LEN, 0); // any address, any port
    nix::sys::socket::sendto(fd, &request, &NetlinkAddr::new(0, 0), MsgFlags::empty())?;

    let mut listeners = Vec::new();
    let mut buffer = vec![0u8; 32 * 1024];
    loop {
        let received = nix::sys::socket::recv(fd, &mut buffer, MsgFlags::empty())?;
        if received == 0 {
            return Ok(listeners);
        }
        match parse_messages(&buffer[..received], &mut listeners) {
            Parsed::More => {}
            Parsed::Done => return Ok(listeners),
            Parsed::Error(errno) => return Err(nix::errno::Errno::from_raw(errno)),
        }
    }
}

enum Parsed {
    More,
    Done,
    Error(i32),
}

/// Reads the netlink messages in one datagram, adding the listeners they describe.
fn parse_messages(mut datagram: &[u8], listeners: &mut Vec<Listener>) -> Parsed {
    while datagram.len() >= NETLINK_HEADER_LEN {
        let length = u32_at(datagram, 0) as usize;
        let kind = u16::from_ne_bytes([datagram[4], datagram[5]]);
        if length < NETLINK_HEADER_LEN || length > datagram.len() {
            return Parsed::Error(nix::errno::Errno::EBADMSG as i32);
        }
        let body = &datagram[NETLINK_HEADER_LEN..length];
        match kind {
            NLMSG_DONE => return Parsed::Done,
            NLMSG_ERROR => {
                let errno =
                    body.get(..4).map_or(0, |bytes| i32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]));
                return if errno == 0 { Parsed::Done } else { Parsed::Error(-errno) };
            }
            SOCK_DIAG_BY_FAMILY if body.len() >= MESSAGE_LEN && u32::from(body[1]) == TCP_LISTEN => {
                // inet_diag_sockid starts at byte 4 with the source port in network order.
                let port = u16::from_be_bytes([body[4], body[5]]);
                let inode = u32_at(body, 68);
                listeners.push(Listener { port, inode: u64::from(inode) });
            }
            _ => {}
        }
        // Messages are aligned to 4 bytes.
        let aligned = (length + 3) & !3;
        datagram = datagram.get(aligned..).unwrap_or_default();
    }
    Parsed::More
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// The same, from `/proc/net/tcp` and `tcp6`.
fn from_proc_net() -> Vec<Listener> {
    use procfs::net::TcpState;
    [procfs::net::tcp(), procfs::net::tcp6()]
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.state == TcpState::Listen)
        .map(|entry| Listener { port: entry.local_address.port(), inode: entry.inode })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_listeners_on_both_families_as_proc_net_does() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").expect("bind v4");
        let v6 = std::net::TcpListener::bind("[::1]:0").ok();
        // Netlink answers here (elsewhere the fallback would hide a broken request).
        let found = dump_listeners(libc_family::INET).expect("sock_diag answers");
        let v4_port = v4.local_addr().expect("addr").port();
        assert!(found.iter().any(|l| l.port == v4_port), "{v4_port} not in {found:?}");
        if let Some(v6) = &v6 {
            let v6_port = v6.local_addr().expect("addr").port();
            let found = tcp_listeners();
            assert!(found.iter().any(|l| l.port == v6_port), "{v6_port} not in {found:?}");
        }
        // The same sockets, with the same inodes, as the kernel's text tables list (only this test's:
        // other tests open and close theirs meanwhile).
        let ours = |listeners: Vec<Listener>| {
            let mut ours: Vec<Listener> = listeners.into_iter().filter(|l| l.port == v4_port).collect();
            ours.sort_by_key(|l| l.inode);
            ours
        };
        assert_eq!(ours(found), ours(from_proc_net()));
        assert_eq!(ours(tcp_listeners()).len(), 1);
        // A connected (not listening) socket is not a listener.
        let client = std::net::TcpStream::connect(v4.local_addr().expect("addr")).expect("connect");
        let client_port = client.local_addr().expect("addr").port();
        assert!(!tcp_listeners().iter().any(|l| l.port == client_port));
    }

    #[test]
    fn a_truncated_message_is_an_error_not_a_panic() {
        let mut listeners = Vec::new();
        let mut datagram = vec![0u8; 20];
        datagram[..4].copy_from_slice(&200u32.to_ne_bytes());
        assert!(matches!(parse_messages(&datagram, &mut listeners), Parsed::Error(_)));
        assert!(matches!(parse_messages(&[1, 2, 3], &mut listeners), Parsed::More));
    }
}
