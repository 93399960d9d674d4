//! The `fleetwright` binary, in the ripgrep manner: parse the command line, run one command
//! (`cli::run`: every command returns `Result<Outcome, Error>`), and let `cli::exit::finish`
//! say how it ended and map it to the exit code. The library does the work.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // SAFETY: first thing, before any thread is started.
    unsafe { fleetwright::source::init_libgit2() };
    let args = cli::args::Args::parse();
    // A command whose output is piped into `head` ends quietly when the pipe closes, like any
    // Unix tool (Rust ignores SIGPIPE, and println! would panic). Not the daemon: a client
    // closing its connection must not kill it.
    if !matches!(args.command, cli::args::Command::Daemon(_)) {
        // SAFETY: restoring a default signal disposition before any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    cli::logging::init(args.log_format);
    let kind = cli::kind(&args.command);
    cli::exit::finish(kind, cli::run(args))
}
