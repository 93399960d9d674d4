//! Faults of the host, told apart from failures of a commit ("transient is transient").
//!
//! The bus daemon dies, the manager re-executes or reloads, a disk fills up or fails, the
//! process runs out of descriptors or memory: none of these says anything about the commit
//! being applied. They are retried with backoff and reported as the host's condition; only
//! failures of the units a commit changed, observed with a working manager, count against it
//! (`host::apply::ApplyError::is_transient`, the daemon's retry).

use std::io;

/// What an I/O error says about the host, in words for a report; `None` when it is not one of
/// the host's conditions that go away by themselves or by an operator's hand (space, quota,
/// a failing disk, descriptors, memory, a read-only or busy file system).
pub fn io_condition(e: &io::Error) -> Option<&'static str> {
    Some(match e.raw_os_error()? {
        libc::ENOSPC => "no space left on the file system",
        libc::EDQUOT => "the disk quota is exceeded",
        libc::EIO => "the disk reported an I/O error",
        libc::EMFILE => "this process is out of file descriptors",
        libc::ENFILE => "the system is out of file descriptors",
        libc::ENOMEM | libc::ENOBUFS => "out of memory",
        libc::EROFS => "the file system is read-only",
        libc::EAGAIN | libc::EINTR | libc::EBUSY | libc::ETIMEDOUT | libc::ENOLCK => "a resource is busy",
        _ => return None,
    })
}

/// Whether a D-Bus error is the bus's or the manager's condition rather than an answer about a
/// unit: the connection lost or refused, no reply (the manager re-executed or reloaded while
/// the call was in flight), the manager not on the bus (yet), a timeout, limits or memory.
/// A refusal by the manager itself (no such unit, a bad unit file, access denied) is not.
pub fn bus_is_transient(e: &zbus::Error) -> bool {
    use zbus::fdo::Error as F;
    match e {
        zbus::Error::InputOutput(_) | zbus::Error::Connection(..) | zbus::Error::Handshake(_) | zbus::Error::InvalidReply => true,
        zbus::Error::FDO(f) => match f.as_ref() {
            F::ZBus(inner) => bus_is_transient(inner),
            F::NoReply(_)
            | F::ServiceUnknown(_)
            | F::NameHasNoOwner(_)
            | F::Disconnected(_)
            | F::Timeout(_)
            | F::TimedOut(_)
            | F::LimitsExceeded(_)
            | F::NoMemory(_)
            | F::NoServer(_)
            | F::IOError(_) => true,
            _ => false,
        },
        zbus::Error::MethodError(name, ..) => matches!(
            name.as_str(),
            "org.freedesktop.DBus.Error.NoReply"
                | "org.freedesktop.DBus.Error.ServiceUnknown"
                | "org.freedesktop.DBus.Error.NameHasNoOwner"
                | "org.freedesktop.DBus.Error.Disconnected"
                | "org.freedesktop.DBus.Error.Timeout"
                | "org.freedesktop.DBus.Error.TimedOut"
                | "org.freedesktop.DBus.Error.LimitsExceeded"
                | "org.freedesktop.DBus.Error.NoMemory"
                // The manager is going down, or is busy with a reload or a re-execution.
                | "org.freedesktop.systemd1.ShuttingDown"
                | "org.freedesktop.systemd1.TransactionIsDestructive"
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hosts_conditions_are_told_from_other_errors() {
        for (errno, words) in [(libc::ENOSPC, "no space"), (libc::EIO, "I/O error"), (libc::EMFILE, "descriptors"), (libc::EDQUOT, "quota")] {
            assert!(io_condition(&io::Error::from_raw_os_error(errno)).is_some_and(|w| w.contains(words)), "{errno}");
        }
        assert_eq!(io_condition(&io::Error::from_raw_os_error(libc::ENOENT)), None);
        assert_eq!(io_condition(&io::Error::other("x")), None);
        assert!(bus_is_transient(&zbus::Error::InputOutput(std::sync::Arc::new(io::Error::from_raw_os_error(libc::EPIPE)))));
        assert!(bus_is_transient(&zbus::Error::FDO(Box::new(zbus::fdo::Error::NoReply("gone".into())))));
        assert!(bus_is_transient(&zbus::Error::FDO(Box::new(zbus::fdo::Error::ServiceUnknown("not there".into())))));
        assert!(!bus_is_transient(&zbus::Error::FDO(Box::new(zbus::fdo::Error::AccessDenied("no".into())))));
        assert!(!bus_is_transient(&zbus::Error::Failure("bad".into())));
    }
}
