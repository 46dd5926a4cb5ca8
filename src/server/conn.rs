//! Connections: accepted up to a limit, each closed when it idles, stalls before a request, or the
//! server stops. Everything a connection may hold is bounded here or in `body`.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use super::metrics::Metrics;

/// A client must send each request's headers once it has started one (its first request, on a
/// new connection), within this time.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// A TLS handshake must end within this: the API server's take milliseconds.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// Handshakes under way at once per listener (a burst of new connections fits), apart from the
/// established connections; past it the oldest is dropped for the newest, so connections that never start TLS cannot keep the
/// API server's new ones out.
pub const MAX_HANDSHAKES: usize = 256;
/// In-flight requests get this long to finish after shutdown begins.
const GRACE: Duration = Duration::from_secs(25);
/// HTTP/2 flow control: what a client may send before the server reads it. Reviews are a few KB;
/// small windows keep a connection whose requests wait for the body budget from holding
/// megabytes (hyper's default is 1 MiB per connection). The connection's window covers every
/// stream's, so that streams waiting for the budget (their data unread) never use up the
/// window of the one being read: an API server sends many reviews over one connection.
const H2_STREAMS: u32 = 32;
const H2_STREAM_WINDOW: u32 = 16 * 1024;
const H2_CONNECTION_WINDOW: u32 = H2_STREAMS * H2_STREAM_WINDOW;
/// Largest HTTP/1.1 read buffer (request line and headers); the API server's are a few hundred bytes.
const H1_MAX_BUF: usize = 64 * 1024;

/// The bounds of one listener's connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub idle_timeout: Duration,
}

/// Where the TLS settings of a listener come from: swapped whole on a reload (a new client CA),
/// read once per handshake.
pub type TlsConfig = Arc<ArcSwap<rustls::ServerConfig>>;

/// Accepts connections until told to stop, then waits for those open to finish their requests.
/// The TLS handshake, within `HANDSHAKE_TIMEOUT`, unless a newer connection takes its turn.
async fn handshake(
    tls: TlsAcceptor,
    tcp: TcpStream,
    turn: Turn,
    metrics: &Metrics,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp));
    let stream = tokio::select! {
        done = handshake => done,
        () = turn.dropped() => {
            metrics.connections.refused.inc();
            tracing::debug!("handshake dropped for a newer connection");
            return None;
        }
    };
    drop(turn);
    match stream {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            None
        }
    }
}

pub async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsConfig>,
    app: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
) {
    let max = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let slots = Arc::new(Semaphore::new(max as usize));
    let handshakes = Arc::new(Handshakes::default());
    let mut stopping = stop.clone();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopping.wait_for(|s| *s) => break,
        };
        let tcp = match accepted {
            Ok((tcp, _peer)) => tcp,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let stop = stop.clone();
        let metrics = metrics.clone();
        let Some(tls) = tls.as_ref().map(|t| TlsAcceptor::from(t.load_full())) else {
            // Over the limit the connection is closed at once, as Envoy does: a client learns
            // it now instead of waiting in the backlog for its own timeout.
            let Some(slot) = take_slot(&slots, &metrics) else {
                continue;
            };
            tokio::spawn(async move {
                metrics.connections.open.inc();
                serve_connection(tcp, Protocol::Either, app, limits, stop).await;
                metrics.connections.open.dec();
                drop(slot);
            });
            continue;
        };
        // A handshake holds no connection slot: only connections that finished one do.
        let turn = handshakes.begin();
        let slots = slots.clone();
        tokio::spawn(async move {
            let Some(stream) = handshake(tls, tcp, turn, &metrics).await else {
                return;
            };
            let Some(slot) = take_slot(&slots, &metrics) else {
                return;
            };
            metrics.connections.open.inc();
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            let protocol = if h2 { Protocol::Http2 } else { Protocol::Http1 };
            serve_connection(stream, protocol, app, limits, stop).await;
            metrics.connections.open.dec();
            drop(slot);
        });
    }
    drop(listener);
    // Every open connection holds a slot: all of them back means all have finished.
    if tokio::time::timeout(GRACE, slots.acquire_many(max))
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the grace period; closing them");
    }
}

/// One of `max_connections` slots, or `None` (counted) when all are taken.
fn take_slot(slots: &Arc<Semaphore>, metrics: &Metrics) -> Option<OwnedSemaphorePermit> {
    let slot = slots.clone().try_acquire_owned().ok();
    if slot.is_none() {
        metrics.connections.refused.inc();
        tracing::debug!("connection limit reached; connection closed");
    }
    slot
}

/// The handshakes under way, oldest first; past `MAX_HANDSHAKES` the oldest is told to stop.
#[derive(Default)]
struct Handshakes {
    next: AtomicU64,
    pending: std::sync::Mutex<std::collections::VecDeque<(u64, Arc<tokio::sync::Notify>)>>,
}

impl Handshakes {
    fn begin(self: &Arc<Self>) -> Turn {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let stop = Arc::new(tokio::sync::Notify::new());
        let mut pending = crate::sync::lock(&self.pending);
        if pending.len() >= MAX_HANDSHAKES {
            if let Some((_, oldest)) = pending.pop_front() {
                // Stored if its task is not waiting yet: it stops at its first look.
                oldest.notify_one();
            }
        }
        pending.push_back((id, stop.clone()));
        Turn {
            id,
            stop,
            all: self.clone(),
        }
    }
}

/// A handshake's place among those under way; leaves it when dropped.
struct Turn {
    id: u64,
    stop: Arc<tokio::sync::Notify>,
    all: Arc<Handshakes>,
}

impl Turn {
    async fn dropped(&self) {
        self.stop.notified().await;
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        crate::sync::lock(&self.all.pending).retain(|(id, _)| *id != self.id);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
    /// Plain HTTP: whichever the client speaks.
    Either,
}

/// What a connection is doing, for its timers. Request handlers and socket reads report here;
/// the connection's own task reads it when a deadline comes.
struct Activity {
    start: Instant,
    /// Requests being handled.
    busy: AtomicUsize,
    /// A request has begun arriving (HTTP/1.1 bytes while no request is handled).
    reading: AtomicBool,
    /// Milliseconds from `start` at the last change of phase.
    changed: AtomicU64,
    /// Wakes the connection's timer when the phase changes.
    wake: tokio::sync::Notify,
}

enum Phase {
    Busy,
    /// Waiting for a request's headers since this long after `start`.
    Reading(Duration),
    /// No request since this long after `start`.
    Idle(Duration),
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            busy: AtomicUsize::new(0),
            // A new connection must send its first request within CLIENT_TIMEOUT.
            reading: AtomicBool::new(true),
            changed: AtomicU64::new(0),
            wake: tokio::sync::Notify::new(),
        }
    }

    fn mark(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.changed.store(ms, Ordering::Relaxed);
    }

    fn phase(&self) -> Phase {
        let since = Duration::from_millis(self.changed.load(Ordering::Relaxed));
        if self.busy.load(Ordering::Relaxed) > 0 {
            Phase::Busy
        } else if self.reading.load(Ordering::Relaxed) {
            Phase::Reading(since)
        } else {
            Phase::Idle(since)
        }
    }

    fn request_started(&self) {
        self.busy.fetch_add(1, Ordering::Relaxed);
        self.reading.store(false, Ordering::Relaxed);
    }

    fn request_ended(&self) {
        self.mark();
        if self.busy.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.wake.notify_one();
        }
    }

    fn bytes_arrived(&self) {
        if self.busy.load(Ordering::Relaxed) == 0 && !self.reading.swap(true, Ordering::Relaxed) {
            self.mark();
            self.wake.notify_one();
        }
    }

    /// When the connection must be closed, or `None` while a request is handled (its own
    /// deadline bounds it); checked again at the returned instant.
    fn deadline(&self, idle_timeout: Duration) -> Option<Instant> {
        match self.phase() {
            Phase::Busy => None,
            Phase::Reading(since) => Some(self.start + since + CLIENT_TIMEOUT),
            Phase::Idle(since) => Some(self.start + since + idle_timeout),
        }
    }
}

/// Counts reads: on HTTP/1.1, the first bytes of a request start its header deadline.
struct Watched<IO> {
    io: IO,
    activity: Option<Arc<Activity>>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(a)) = (&polled, &self.activity) {
            if buf.filled().len() > before {
                a.bytes_arrived();
            }
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Reports each request's start and end to the connection's `Activity`.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

impl<S, R> hyper::service::Service<R> for Tracked<S>
where
    S: hyper::service::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn call(&self, req: R) -> Self::Future {
        self.activity.request_started();
        let in_flight = InFlight(self.activity.clone());
        let answer = self.inner.call(req);
        Box::pin(async move {
            let answered = answer.await;
            drop(in_flight);
            answered
        })
    }
}

/// hyper's connection settings for `protocol`: buffers and HTTP/2 windows bounded.
fn http_builder(protocol: Protocol) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The header deadline is ours (`Activity`): hyper's would also close idle keep-alive
        // connections after it, racing the API server's reuse of them.
        .header_read_timeout(None)
        .max_buf_size(H1_MAX_BUF)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_STREAMS)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    match protocol {
        Protocol::Http1 => builder.http1_only(),
        Protocol::Http2 => builder.http2_only(),
        Protocol::Either => builder,
    }
}

async fn serve_connection<IO>(
    io: IO,
    protocol: Protocol,
    app: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    // HTTP/2 reads pings and settings between requests; only HTTP/1.1 bytes mean a request.
    let watch_reads = protocol != Protocol::Http2;
    let io = Watched {
        io,
        activity: watch_reads.then(|| activity.clone()),
    };
    let builder = http_builder(protocol);
    let service = Tracked {
        inner: TowerToHyperService::new(app),
        activity: activity.clone(),
    };
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .into_owned();
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        let deadline = match closing {
            true => None,
            false => activity.deadline(limits.idle_timeout),
        };
        let timer = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                // Busy: look again after a while (the request's own deadline bounds it).
                None => tokio::time::sleep(limits.idle_timeout.min(CLIENT_TIMEOUT)).await,
            }
        };
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = activity.wake.notified(), if !closing => {}
            _ = stop.wait_for(|s| *s), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            () = timer, if !closing => {
                if deadline.is_some_and(|at| Instant::now() >= at)
                    && activity.deadline(limits.idle_timeout).is_some_and(|at| Instant::now() >= at)
                {
                    if let Phase::Reading(_) = activity.phase() {
                        // Half a request: a graceful close would wait for the rest of it.
                        tracing::debug!("no request within the header timeout; connection dropped");
                        return;
                    }
                    tracing::debug!("idle connection closed");
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
