//! Integration tests against the real `manifest-server` binary on
//! 127.0.0.1:0, with stores built at test time (issue #3's acceptance list;
//! device reports and the fleet view: issue #5).

mod common;
mod http;
mod reload;
mod reports;
mod startup;
mod traversal;
