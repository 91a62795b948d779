//! The client-facing SMTP submission server.
pub mod wire;
