//! Campaigns: one certified notice per row of a recipients CSV, rendered from a template.
//! Pure input side, no I/O: [`input`] reads the recipients list, [`template`] parses and renders the notice.

pub mod input;
pub mod template;
