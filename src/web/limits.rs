//! What one client may hold of the web server: connections (total and per
//! address, each closed when idle) and event streams (per session or token
//! and per address). Every refusal is counted in `/metrics`.
//!
//! The connection caps are enforced as connections are accepted
//! ([`LimitAcceptor`], before any byte is read), so a flood of idle sockets
//! from one host is closed at once instead of exhausting the process's file
//! descriptors, and a screen from another address (or one already
//! connected) keeps its answers. A reverse proxy in `web.trusted_proxies`
//! carries every client and is held only to the total.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::config::WebConfig;
use crate::telemetry::Metrics;

/// The caps and the counts against them.
#[derive(Debug)]
pub struct Limits {
    max_connections: usize,
    max_connections_per_address: usize,
    max_streams_per_session: usize,
    max_streams_per_address: usize,
    /// No byte read or written for this long closes a connection.
    pub idle_timeout: Duration,
    /// A new connection's first request must arrive within this.
    pub first_request_timeout: Duration,
    /// Each request's headers (and the next request on a kept-alive connection).
    pub header_timeout: Duration,
    trusted: Arc<[IpAddr]>,
    conns: Mutex<crate::counts::Counts<IpAddr>>,
    streams: Mutex<(crate::counts::Counts<String>, crate::counts::Counts<String>)>,
    metrics: Arc<Metrics>,
}

impl Limits {
    /// The caps of `web`.
    pub fn new(web: &WebConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            max_connections: web.max_connections,
            max_connections_per_address: web.max_connections_per_address,
            max_streams_per_session: web.max_streams_per_session,
            max_streams_per_address: web.max_streams_per_address,
            idle_timeout: web.idle_timeout,
            first_request_timeout: web.first_request_timeout,
            header_timeout: web.header_timeout,
            trusted: web.trusted_proxies.clone().into(),
            conns: Mutex::new(crate::counts::Counts::default()),
            streams: Mutex::new(Default::default()),
            metrics,
        }
    }

    /// Takes a connection slot for a peer, or says which cap is reached.
    fn connect(self: &Arc<Self>, ip: IpAddr) -> Result<ConnSlot, &'static str> {
        let mut c = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if c.total >= self.max_connections {
            return Err("total");
        }
        if !self.trusted.contains(&ip) && c.of(&ip) >= self.max_connections_per_address {
            return Err("per_address");
        }
        c.add(&ip);
        self.metrics.web.connections.set(c.total as i64);
        Ok(ConnSlot {
            limits: self.clone(),
            ip,
        })
    }

    /// Takes an event-stream slot for a session (or token) key and a
    /// client address, or says which cap is reached.
    pub fn open_stream(
        self: &Arc<Self>,
        session: &str,
        addr: &str,
    ) -> Result<StreamSlot, &'static str> {
        let mut s = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        let (sessions, addrs) = &mut *s;
        let (session, addr) = (session.to_owned(), addr.to_owned());
        let refused = if sessions.of(&session) >= self.max_streams_per_session {
            Some("per_session")
        } else if addrs.of(&addr) >= self.max_streams_per_address {
            Some("per_address")
        } else {
            None
        };
        if let Some(reason) = refused {
            self.metrics.web.stream_refused(reason);
            return Err(reason);
        }
        sessions.add(&session);
        addrs.add(&addr);
        self.metrics.web.streams.set(sessions.total as i64);
        Ok(StreamSlot {
            limits: self.clone(),
            session,
            addr,
        })
    }
}

/// An open connection's place in the counts, given back when it closes.
#[derive(Debug)]
struct ConnSlot {
    limits: Arc<Limits>,
    ip: IpAddr,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut c = self.limits.conns.lock().unwrap_or_else(|e| e.into_inner());
        c.remove(&self.ip);
        self.limits.metrics.web.connections.set(c.total as i64);
    }
}

/// An open event stream's place in the counts, given back when it ends.
#[derive(Debug)]
pub struct StreamSlot {
    limits: Arc<Limits>,
    session: String,
    addr: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut s = self
            .limits
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (sessions, addrs) = &mut *s;
        sessions.remove(&self.session);
        addrs.remove(&self.addr);
        self.limits.metrics.web.streams.set(sessions.total as i64);
    }
}

/// Accepts a TCP connection only within the caps, with `TCP_NODELAY` (an
/// event is one small write that must go out now, not wait for the
/// acknowledgement of the previous one) and the idle timeout.
#[derive(Debug, Clone)]
pub struct LimitAcceptor {
    limits: Arc<Limits>,
}

impl LimitAcceptor {
    /// An acceptor counting against `limits`.
    pub fn new(limits: Arc<Limits>) -> Self {
        Self { limits }
    }
}

impl<S: Send + 'static> Accept<TcpStream, S> for LimitAcceptor {
    type Stream = Guarded<TcpStream>;
    type Service = S;
    type Future = std::future::Ready<io::Result<(Self::Stream, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let accepted = (|| {
            let ip = stream.peer_addr()?.ip();
            let slot = self.limits.connect(ip).map_err(|reason| {
                self.limits.metrics.web.connection_refused(reason);
                io::Error::other(format!("connection cap ({reason}) reached"))
            })?;
            stream.set_nodelay(true)?;
            Ok((
                Guarded::new(stream, self.limits.idle_timeout, slot),
                service,
            ))
        })();
        // Refused: the stream is dropped here, which closes it.
        std::future::ready(accepted)
    }
}

/// A connection that holds its slot and fails with `TimedOut` once
/// nothing was read or written for the idle timeout.
#[derive(Debug)]
pub struct Guarded<S> {
    inner: S,
    idle: Duration,
    last: Instant,
    timer: Pin<Box<Sleep>>,
    _slot: ConnSlot,
}

impl<S> Guarded<S> {
    fn new(inner: S, idle: Duration, slot: ConnSlot) -> Self {
        let now = Instant::now();
        Self {
            inner,
            idle,
            last: now,
            timer: Box::pin(tokio::time::sleep_until(now + idle)),
            _slot: slot,
        }
    }

    /// Whether the connection has been idle too long; registers the waker otherwise.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        // The timer is moved on lazily, only when it fires, not at every read.
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            let deadline = self.last + self.idle;
            if Instant::now() >= deadline {
                return true;
            }
            self.timer.as_mut().reset(deadline);
        }
    }

    fn timed_out() -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, "idle connection closed")
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.last = Instant::now();
                Poll::Ready(r)
            }
            Poll::Pending if this.idle_expired(cx) => Poll::Ready(Err(Self::timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                this.last = Instant::now();
                Poll::Ready(r)
            }
            Poll::Pending if this.idle_expired(cx) => Poll::Ready(Err(Self::timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                this.last = Instant::now();
                Poll::Ready(r)
            }
            Poll::Pending if this.idle_expired(cx) => Poll::Ready(Err(Self::timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(text: &str) -> Arc<Limits> {
        let cfg = crate::config::Config::from_toml(
            &format!("[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n[web]\n{text}"),
            Vec::new(),
        )
        .expect("config")
        .config;
        Arc::new(Limits::new(&cfg.web, Arc::new(Metrics::new())))
    }

    #[test]
    fn caps_per_address_and_in_total_and_slots_come_back() {
        let l = limits("max_connections = 3\nmax_connections_per_address = 2\ntrusted_proxies = [\"10.0.0.2\"]\n");
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let proxy: IpAddr = "10.0.0.2".parse().expect("ip");
        let a1 = l.connect(a).expect("1");
        let _a2 = l.connect(a).expect("2");
        assert_eq!(l.connect(a).err(), Some("per_address"));
        let _b1 = l.connect(b).expect("another address");
        assert_eq!(l.connect(b).err(), Some("total"));
        drop(a1);
        let _p1 = l.connect(proxy).expect("a slot came back");

        let l = limits("max_connections = 10\nmax_connections_per_address = 1\ntrusted_proxies = [\"10.0.0.2\"]\n");
        let _p1 = l.connect(proxy).expect("1");
        let _p2 = l
            .connect(proxy)
            .expect("a trusted proxy is held to the total only");
    }

    #[test]
    fn streams_per_session_and_per_address() {
        let l = limits("max_streams_per_session = 2\nmax_streams_per_address = 3\n");
        let s1 = l.open_stream("s", "a").expect("1");
        let _s2 = l.open_stream("s", "a").expect("2");
        assert_eq!(l.open_stream("s", "b").err(), Some("per_session"));
        let _t1 = l.open_stream("t", "a").expect("3");
        assert_eq!(l.open_stream("u", "a").err(), Some("per_address"));
        drop(s1);
        let _u1 = l.open_stream("u", "a").expect("a slot came back");
    }
}
