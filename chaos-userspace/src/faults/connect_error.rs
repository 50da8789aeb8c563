//! connect-error: `connect()` fails with a chosen errno, through cgroup connect4/connect6 hooks
//! and `bpf_set_retval`.
use super::Filters;
use crate::{errno::Errno, mechanism::Mechanism, programs};

/// Errnos `connect(2)` can really return, so applications meet failures they must handle.
pub const ALLOWED_ERRNOS: &[Errno] = &[
    Errno(111), // ECONNREFUSED
    Errno(110), // ETIMEDOUT
    Errno(101), // ENETUNREACH
    Errno(113), // EHOSTUNREACH
    Errno(13),  // EACCES
    Errno(1),   // EPERM
    Errno(104), // ECONNRESET
    Errno(99),  // EADDRNOTAVAIL
];

pub const PROGRAMS: &[&programs::ProgramSpec] = &[&programs::CONNECT4, &programs::CONNECT6];

pub const MECHANISMS: &[Mechanism] = &[
    Mechanism::CgroupSockAddr,
    Mechanism::BpfLink,
    Mechanism::Ringbuf,
];

#[derive(Clone, Debug, PartialEq)]
pub struct ConnectError {
    pub errno: Errno,
    pub filters: Filters,
}

/// clap value parser for `--errno`.
pub fn parse_errno(text: &str) -> Result<Errno, String> {
    Errno::parse_one_of(text, ALLOWED_ERRNOS).map_err(|accepted| format!("accepted: {accepted}"))
}
