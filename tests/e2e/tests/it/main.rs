//! Browser tests: real Chromium against the real server and the real Trunk build.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod login;
