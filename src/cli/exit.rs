//! How a command ends: every command returns `Result<Outcome, Error>`, and `finish` alone
//! turns that into what the user sees last and the exit code. An error cannot go unsaid: the
//! only way out of a command is through here, and every `Error` has a message.
//!
//! The exit codes are the table in README.md (spec-v1 fixes validate's, plan's and apply's).

use std::process::ExitCode;

/// A command that ran to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Valid, nothing to do, converged, done.
    Done,
    /// `plan`: changes are pending.
    Changes,
    /// `apply`, `restore`: applied, but a unit failed (what failed is printed).
    UnitFailed,
    /// The command ran in the sandbox (`--sandbox`): it said how it ended, and this is its code.
    #[cfg_attr(not(feature = "sandbox"), allow(dead_code))]
    Exit(u8),
}

/// A command that did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The specs are invalid; each diagnostic is printed already, this is their count.
    #[error("{count} error{}", if *.count == 1 { "" } else { "s" })]
    Invalid { count: usize },
    /// `apply`: nothing was applied by decision (a plan with errors: a foreign file, an empty
    /// fleet without --allow-empty).
    #[error("{0}")]
    Refused(anyhow::Error),
    /// It could not be done; nothing on the host was changed by it.
    #[error("{0}")]
    Failed(anyhow::Error),
    /// `apply`: stopped part-way by a fault of the host, after changing some of it: nothing is
    /// lost, the next apply finishes it.
    #[error("{0}")]
    Interrupted(anyhow::Error),
    /// A helper job did its work and some of it failed (a backup not taken, files not removed,
    /// no slot within the timeout): a failed unit, for `status` and the journal.
    #[error("{0}")]
    JobFailed(anyhow::Error),
}

impl Error {
    pub fn failed(message: impl std::fmt::Display) -> Error {
        Error::Failed(anyhow::anyhow!("{message}"))
    }
    pub fn job_failed(message: impl std::fmt::Display) -> Error {
        Error::JobFailed(anyhow::anyhow!("{message}"))
    }
}

/// The commands whose codes differ from the rest (README.md, "Exit codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `validate`: 1 invalid, or the directory cannot be read.
    Validate,
    /// `apply` (and `apply --sandbox`): 1 nothing applied (invalid commit, refused plan).
    Apply,
    /// Everything else: an invalid commit is an error (2).
    Other,
}

/// The exit code of a command's result.
pub fn code(kind: Kind, result: &Result<Outcome, Error>) -> u8 {
    if kind == Kind::Validate {
        return if matches!(result, Ok(Outcome::Done)) { 0 } else { 1 };
    }
    match result {
        Ok(Outcome::Done) => 0,
        Ok(Outcome::Changes) => 1,
        Ok(Outcome::UnitFailed) => 4,
        Ok(Outcome::Exit(code)) => *code,
        Err(Error::Invalid { .. } | Error::Refused(_)) => match kind {
            Kind::Apply => 1,
            Kind::Validate | Kind::Other => 2,
        },
        Err(Error::JobFailed(_)) => 1,
        Err(Error::Failed(_)) => 2,
        Err(Error::Interrupted(_)) => 3,
    }
}

/// Say how the command ended (on stderr, once) and give its exit code.
pub fn finish(kind: Kind, result: Result<Outcome, Error>) -> ExitCode {
    let code = code(kind, &result);
    match &result {
        Ok(_) => {}
        // Below the diagnostics, which say what and where: just how many.
        Err(e @ Error::Invalid { .. }) => eprintln!("{e}"),
        Err(e) => {
            let text = e.to_string();
            let mut lines = text.lines();
            eprintln!("error: {}", lines.next().unwrap_or("failed"));
            for line in lines {
                eprintln!("{line}");
            }
        }
    }
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(f: fn(anyhow::Error) -> Error) -> Result<Outcome, Error> {
        Err(f(anyhow::anyhow!("x")))
    }

    /// README.md's table, row by row.
    #[test]
    fn the_exit_codes_are_the_documented_table() {
        // validate: 0 valid, 1 invalid or the directory cannot be read.
        assert_eq!(code(Kind::Validate, &Ok(Outcome::Done)), 0);
        assert_eq!(code(Kind::Validate, &Err(Error::Invalid { count: 3 })), 1);
        assert_eq!(code(Kind::Validate, &err(Error::Failed)), 1);
        // plan: 0 nothing to do, 1 changes pending, 2 error (an invalid commit or a plan that
        // cannot be applied included).
        assert_eq!(code(Kind::Other, &Ok(Outcome::Done)), 0);
        assert_eq!(code(Kind::Other, &Ok(Outcome::Changes)), 1);
        assert_eq!(code(Kind::Other, &Err(Error::Invalid { count: 1 })), 2);
        assert_eq!(code(Kind::Other, &err(Error::Refused)), 2);
        assert_eq!(code(Kind::Other, &err(Error::Failed)), 2);
        // apply: 0 converged, 1 nothing applied, 2 error with nothing changed, 3 stopped
        // part-way by a fault of the host, 4 a unit failed.
        assert_eq!(code(Kind::Apply, &Ok(Outcome::Done)), 0);
        assert_eq!(code(Kind::Apply, &Err(Error::Invalid { count: 1 })), 1);
        assert_eq!(code(Kind::Apply, &err(Error::Refused)), 1);
        assert_eq!(code(Kind::Apply, &err(Error::Failed)), 2);
        assert_eq!(code(Kind::Apply, &err(Error::Interrupted)), 3);
        assert_eq!(code(Kind::Apply, &Ok(Outcome::UnitFailed)), 4);
        // Helper jobs (slot, logs-clean, backup): 1 when their work failed, 2 on an error.
        assert_eq!(code(Kind::Other, &err(Error::JobFailed)), 1);
        // A command run in the sandbox ends as it ended there.
        for c in [0, 1, 2, 3, 4] {
            assert_eq!(code(Kind::Apply, &Ok(Outcome::Exit(c))), c);
        }
    }

    #[test]
    fn every_error_has_something_to_say() {
        for e in [Error::Invalid { count: 1 }, Error::failed("the bus is gone"), Error::job_failed("no slot")] {
            assert!(!e.to_string().trim().is_empty(), "{e:?}");
        }
        assert_eq!(Error::Invalid { count: 2 }.to_string(), "2 errors");
        assert_eq!(Error::Invalid { count: 1 }.to_string(), "1 error");
    }
}
