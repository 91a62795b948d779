//! Campaigns: thousands of individual certified notices sent from one
//! mailbox, each tracked to its legal delivery.
//!
//! * [`input`]: the recipients' CSV as offices export it, validated row by row.
//! * [`template`]: the notice template (`Subject:`, body, `{{field}}`), rendered.
//! * [`model`]: what the journal records and the index folds (pure).

pub mod api;
pub mod cli;
pub mod create;
pub mod input;
pub mod model;
pub mod report;
pub mod run;
pub mod template;
