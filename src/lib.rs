//! # loghamster
//!
//! A log shipper in two daemons. **loghamsterc** follows log files and
//! streams every appended line to **loghamsterd**, which writes each stream
//! to an output file chosen by the stream's metadata. Between them is the
//! LogHamster protocol: a tiny text handshake, then raw bytes.
//!
//! ```text
//!  >> TCP connect
//!  << ### Welcome to LogHamster server v0.1.0
//!  << STREAMID 6745a1f0-1
//!  >> INIT STREAM web1:/var/log/app.log svc:app id:fd01-83a2-1 offset:0 ack:1
//!  << 200 OK Ready to accept data offset:0
//!  >> raw bytes ...                 << ACK 65536 ...
//! ```
//!
//! ## Layers
//! - [`reactor`]: the event loop (mio/epoll), timers, generation-tagged
//!   tokens, and every raw syscall in `reactor::sys` (the only `unsafe`).
//! - [`proto`]: bytes on the wire. A pure, incremental handshake parser and
//!   the emitters for every line.
//! - [`codec`]: wire compression (gzip, LZ4, zstd) as push-style
//!   encoders and decoders, so both loops feed them bytes as they come.
//! - [`tail`]: files on the client: identity, batching rule, state file.
//! - [`sink`]: outputs on the server: routing and line-aligned writing.
//! - [`config`]: the TOML files of both daemons.
//! - [`rate`]: the token bucket behind every `rate_limit` (pure, time
//!   passed in), used by both daemons.
//! - [`metrics`]: what each daemon counts, and the `/metrics` endpoint it
//!   serves from its own loop (`[prometheus]`).
//! - [`client`] and [`server`]: the two daemons, wiring the layers into one
//!   loop each. `src/bin/` holds thin `main`s over them.
//!
//! ## Invariants that hold across layers
//! - One thread per daemon; nothing blocks the loop except regular-file I/O
//!   (and with `engine = "auto"` the server's `fdatasync`s run on an
//!   io_uring instead of blocking it).
//! - The client's state file records what the server *acknowledged*, never
//!   merely what was sent; the source file is the only buffer that matters,
//!   so a broken connection loses nothing and memory stays bounded.
//! - Streams that share an output are written as whole lines (`writev`
//!   on `O_APPEND`), so they never interleave inside a line; a stream alone
//!   on its output is spliced from the socket as it comes, and a second
//!   writer only joins at the end of the first one's line.
//! - Nothing a client sends can make the server write outside its output
//!   directory or configured outputs.
//!
//! ## Library use
//! ```
//! use std::time::{Duration, Instant};
//! # let tmp = tempfile::tempdir().unwrap();
//! # let log = tmp.path().join("app.log");
//! # std::fs::write(&log, "hello\nworld\n").unwrap();
//! # let out = tmp.path().join("out");
//! // A server on an ephemeral port, writing to `out/<host>/<path>`.
//! let server = loghamster::Server::builder().listen("127.0.0.1:0".parse().unwrap()).directory(&out).bind().unwrap();
//! let addr = server.local_addr();
//! let server_stop = server.stop_handle();
//! let server_thread = std::thread::spawn(move || server.run());
//!
//! // A client shipping one file (the seed's `client.StreamFile(...)`).
//! let mut client = loghamster::Client::new(&addr.to_string());
//! client.stream_file(&log).hostname("demo").state_file(tmp.path().join("client.state"));
//! let client = client.build().unwrap();
//! let client_stop = client.stop_handle();
//! let client_thread = std::thread::spawn(move || client.run());
//!
//! let shipped = out.join("demo").join(log.strip_prefix("/").unwrap());
//! let deadline = Instant::now() + Duration::from_secs(20);
//! while std::fs::read(&shipped).unwrap_or_default() != b"hello\nworld\n" {
//!     assert!(Instant::now() < deadline, "file did not arrive");
//!     std::thread::sleep(Duration::from_millis(10));
//! }
//! client_stop.stop();
//! client_thread.join().unwrap().unwrap();
//! server_stop.stop();
//! server_thread.join().unwrap().unwrap();
//! ```

#![deny(unsafe_code)]

#[macro_use]
pub mod log;
pub mod cli;
pub mod client;
pub mod codec;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod once;
pub mod persist;
pub mod proto;
pub mod rate;
pub mod reactor;
pub mod server;
pub mod sink;
pub mod tail;
pub mod tls;
pub mod writable;

pub use client::api::Client;
pub use client::{ClientDaemon, ClientError};
pub use reactor::StopHandle;
pub use server::api::ServerBuilder;
pub use server::{Server, ServerError};
