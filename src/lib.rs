//! pecgate: a mail gateway for Italian certified email (PEC).
#![forbid(unsafe_code)]
pub mod pec;
