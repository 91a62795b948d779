//! The client-facing SMTP submission server.
//!
//! * [`wire`]: command lines and DATA bodies cut out of the byte stream.
//! * [`session`]: the protocol as a pure state machine (bytes in, actions out).
//! * [`relay`]: the effects: relay through the provider (no queue), archive
//!   into `Sent`, audit.
//! * [`server`]: listeners, TLS, the thin I/O driver.
pub mod session;
pub mod wire;
pub mod relay;
pub mod server;

pub use server::{start, Ctx, SmtpError};
