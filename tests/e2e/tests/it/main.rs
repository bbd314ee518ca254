//! Browser and lab tests: real Chromium and real libvirt hosts against the real server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod advice;
mod audiences;
mod cards;
mod concurrency;
mod control;
mod drain;
mod forecast;
mod harness;
mod login;
mod migration;
mod outside;
mod restart;
mod streams;
