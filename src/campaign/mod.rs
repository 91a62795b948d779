//! Campaigns: thousands of individual certified notices sent from one
//! mailbox, each tracked to its legal delivery.

pub mod model;
