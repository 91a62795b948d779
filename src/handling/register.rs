//! The handling register (filled in below).
