//! The one integration-test binary: pure snapshot tests of render and plan, and the real tier
//! that drives a real systemd booted in a namespace with real git repositories.

mod apply;
mod build;
mod calendar;
mod cli;
mod common;
mod crash;
mod daemon;
mod daytwo;
mod faults;
mod gate;
mod hostile;
mod hostile_corpus;
mod hostile_daemon;
mod hostile_faults;
mod hostile_gate;
mod hostile_ops;
mod hostile_output;
mod http;
mod notify;
mod plan;
mod real;
mod render;
mod secrets;
mod tools;
mod tutorial;
