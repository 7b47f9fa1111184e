//! Runtime configuration: one plain struct, every field with its default and what it protects.

use std::time::Duration;

use crate::frame::{Limits, MetadataLimits, DEFAULT_MAX_PAYLOAD};

/// How a [`Manager`](crate::Manager) and its connections behave.
///
/// Every node of a cluster should use the same values for the liveness settings; the limits may
/// differ (each side enforces its own).
///
/// # Example
///
/// Change the fields that matter and keep the defaults for the rest:
///
/// ```
/// # use grid_core as grid;
/// use std::net::TcpListener;
/// use std::time::Duration;
///
/// use grid::{Config, Manager};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config = Config {
///     default_timeout: Duration::from_secs(5), // unary calls without a timeout of their own
///     ping_interval: Duration::from_secs(2),
///     idle_timeout: Duration::from_secs(8),
///     ..Config::default()
/// };
/// let listener = TcpListener::bind("127.0.0.1:0")?;
/// let name = format!("http://{}", listener.local_addr()?);
/// let node = Manager::builder(name)
///     .secret("shared cluster secret")
///     .config(config.clone())
///     .listener(listener)
///     .start()
///     .await?;
/// assert_eq!(node.config().default_timeout, Duration::from_secs(5));
/// # node.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// URL path the WebSocket upgrade is served on. Default `/grid/v1`.
    pub route: String,
    /// Largest payload of one request, response or stream message. Default 64 MiB. Protects
    /// memory: a larger frame is refused before it is buffered, and a local call with a larger
    /// payload fails with [`Error::PayloadTooLarge`](crate::Error::PayloadTooLarge).
    pub max_payload: usize,
    /// Timeout of a unary call that sets none. Default 60 s.
    pub default_timeout: Duration,
    /// Timeout of the whole handshake. Default 5 s. Protects against peers that connect and stall.
    pub handshake_timeout: Duration,
    /// Most sockets that may be in their TLS, WebSocket or grid handshake at once (not yet
    /// authenticated). Default 64. An excess socket is closed at once, before any TLS or WebSocket
    /// work, and counted in [`ManagerStats`](crate::ManagerStats). Stops a flood of sockets that
    /// connect and stall (or trickle bytes) from costing a task, buffers and a timer each for up to
    /// `handshake_timeout`; honest peers get in again as soon as the stallers time out.
    pub max_pending_handshakes: usize,
    /// Refused incoming sockets are logged at most once per peer address per this interval; the
    /// next line says how many were refused in between. Default 10 s. Stops anyone who can reach
    /// the port from flooding the log with one WARN line per refused connection attempt.
    pub refusal_log_interval: Duration,
    /// Largest accepted difference between the peer's clock and ours. Default 5 min. Limits how
    /// long a captured handshake could be useful, with the nonces.
    pub max_clock_skew: Duration,
    /// Interval of connection-level pings. Default 5 s.
    pub ping_interval: Duration,
    /// A connection with no inbound traffic for this long is declared dead. Default 20 s.
    pub idle_timeout: Duration,
    /// One WebSocket write (a batch) that takes longer than this kills the connection: the peer
    /// stopped reading. Default 15 s.
    pub write_timeout: Duration,
    /// First reconnect delay; doubles per failure, with jitter. Default 50 ms.
    pub reconnect_min: Duration,
    /// Cap of the reconnect delay. Default 2 s.
    pub reconnect_max: Duration,
    /// Timeout of one TCP/TLS dial. Default 2 s.
    pub dial_timeout: Duration,
    /// Interval of stream-level pings sent by callers of long-lived streams. Default 15 s.
    pub stream_ping_interval: Duration,
    /// Silence on a stream after which either side gives up. Default 60 s.
    pub stream_liveness_timeout: Duration,
    /// Largest input capacity a caller may ask this node to buffer per stream. Default 4096.
    pub max_stream_capacity: u32,
    /// Bytes of data frames queued for one socket before senders wait. Default 8 MiB. Bounds
    /// memory when the peer reads slowly; control frames (credits, pongs, cancels) bypass it.
    pub max_queued_bytes: usize,
    /// Control frames queued for one socket before the connection is declared stuck. Default
    /// 65 536. A peer that floods pings but never reads cannot grow our memory without bound.
    pub max_queued_control: usize,
    /// Bytes one connection holds for its peer's requests and streams: request payloads of calls
    /// still running, plus stream messages received and not yet consumed. Default 64 MiB. While
    /// full, new calls are refused with `Overloaded` and stream credit is held back
    /// (back-pressure); a stream whose peer keeps sending past twice this bound (with credit it
    /// had before the budget filled) fails with `BudgetExceeded`. Stops a member that opens many
    /// streams of large items it never lets the handler catch up with, or floods large requests
    /// to slow handlers, from growing this node's memory.
    pub max_inbound_bytes: usize,
    /// Bytes of responses one connection's finished handlers may hold while they wait for room
    /// in the data lane. Default 32 MiB. While full, new calls are refused with `Overloaded`.
    /// Stops a member that floods requests but reads its socket slowly (never slowly enough to
    /// trip `write_timeout`) from making this node hold every response it cannot write.
    pub max_pending_response_bytes: usize,
    /// Bytes packed into one WebSocket message by the writer (a single larger frame still goes
    /// alone). Default 256 KiB.
    pub max_batch_bytes: usize,
    /// Most unary calls and streams served at once per connection. Default 100 000. Beyond it a
    /// call is refused with `Overloaded`. A call holds its place until its handler task has
    /// completely ended: cancel grace, panic and writing its last frame included, so a member
    /// looping request/cancel cannot run more handlers than this.
    pub max_incoming_calls: usize,
    /// Most metadata entries one call may carry. Default 64. This node refuses to send a call
    /// with more (or more than the peer announced it accepts), and refuses a call that arrives
    /// with more (`ErrorCode::TooLarge`, the connection stays). Bounds per-call memory and the
    /// work of metadata lookups; announced to peers in the handshake.
    pub max_metadata_entries: usize,
    /// Most bytes of metadata keys and values together one call may carry. Default 16 KiB.
    /// Enforced and announced like `max_metadata_entries`.
    pub max_metadata_bytes: usize,
    /// Add a CRC-32 to every batch (WebSocket message). Default: on for `http://` names, off
    /// for `https://` (TLS already protects integrity). Agreed per connection: on if either side
    /// wants it.
    pub checksum: Option<bool>,
    /// Largest part of a frame sent in one piece: a request, response, stream message or
    /// initial payload whose encoded frame is longer travels as `Chunk` frames of at most this
    /// many bytes, interleaved with other calls' frames, so small calls, credits and pings never
    /// wait behind a whole large payload. Default 64 KiB (see `BENCHMARKS.md`). 0 turns it off
    /// (nor is it offered to peers); it is used only with peers that agree to it in the
    /// handshake. The payload limit still holds for the whole message.
    pub chunk_size: usize,
    /// Smallest payload of a unary request or response that is sent LZ4-compressed, with peers
    /// that agree to compression in the handshake. Default 0: off (nor offered). A payload
    /// whose first 4 KiB do not shrink by a tenth (random, already compressed or encrypted
    /// data) is sent as it is, and so is one that does not shrink by a tenth as a whole. Worth
    /// it on links slower than the CPU (LZ4 compresses at 0.5–0.8 GB/s and decompresses at
    /// 2.6–3.9 GB/s per core, msgpack listings 2.9× smaller: `BENCHMARKS.md`), not on loopback.
    pub compress_threshold: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            route: "/grid/v1".into(),
            max_payload: DEFAULT_MAX_PAYLOAD,
            default_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(5),
            max_pending_handshakes: 64,
            refusal_log_interval: Duration::from_secs(10),
            max_clock_skew: Duration::from_secs(300),
            ping_interval: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(20),
            write_timeout: Duration::from_secs(15),
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(2),
            dial_timeout: Duration::from_secs(2),
            stream_ping_interval: Duration::from_secs(15),
            stream_liveness_timeout: Duration::from_secs(60),
            max_stream_capacity: 4096,
            max_queued_bytes: 8 << 20,
            max_queued_control: 65_536,
            max_inbound_bytes: 64 << 20,
            max_pending_response_bytes: 32 << 20,
            max_batch_bytes: 256 << 10,
            max_incoming_calls: 100_000,
            max_metadata_entries: 64,
            max_metadata_bytes: 16 << 10,
            checksum: None,
            chunk_size: DEFAULT_CHUNK_SIZE,
            compress_threshold: 0,
        }
    }
}

/// The default [`Config::chunk_size`]: 64 KiB.
pub(crate) const DEFAULT_CHUNK_SIZE: usize = 64 << 10;

impl Config {
    /// The frame decoder's limits derived from this configuration.
    pub(crate) fn limits(&self) -> Limits {
        Limits::for_payload(self.max_payload)
    }

    /// The metadata limits of one call, from `max_metadata_entries` and `max_metadata_bytes`.
    pub fn metadata_limits(&self) -> MetadataLimits {
        MetadataLimits {
            entries: self.max_metadata_entries,
            bytes: self.max_metadata_bytes,
        }
    }
}
