//! Errno names and numbers (Linux, as on x86_64 and arm64).
use std::fmt;

/// (name, number) for the errnos a fault may plausibly inject.
const TABLE: &[(&str, u32)] = &[
    ("EPERM", 1),
    ("ENOENT", 2),
    ("EINTR", 4),
    ("EIO", 5),
    ("EBADF", 9),
    ("EAGAIN", 11),
    ("ENOMEM", 12),
    ("EACCES", 13),
    ("EFAULT", 14),
    ("EBUSY", 16),
    ("EINVAL", 22),
    ("ENFILE", 23),
    ("EMFILE", 24),
    ("ENOSPC", 28),
    ("EPIPE", 32),
    ("ENOSYS", 38),
    ("EPROTO", 71),
    ("EMSGSIZE", 90),
    ("EPROTONOSUPPORT", 93),
    ("EOPNOTSUPP", 95),
    ("EAFNOSUPPORT", 97),
    ("EADDRINUSE", 98),
    ("EADDRNOTAVAIL", 99),
    ("ENETDOWN", 100),
    ("ENETUNREACH", 101),
    ("ENETRESET", 102),
    ("ECONNABORTED", 103),
    ("ECONNRESET", 104),
    ("ENOBUFS", 105),
    ("EISCONN", 106),
    ("ENOTCONN", 107),
    ("ESHUTDOWN", 108),
    ("ETIMEDOUT", 110),
    ("ECONNREFUSED", 111),
    ("EHOSTDOWN", 112),
    ("EHOSTUNREACH", 113),
    ("EALREADY", 114),
    ("EINPROGRESS", 115),
];

/// The largest errno the kernel accepts as an error return (`MAX_ERRNO`).
const MAX_ERRNO: u32 = 4095;

/// An errno value with its name where one is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub u32);

impl Errno {
    pub const ECONNREFUSED: Errno = Errno(111);

    pub fn name(self) -> Option<&'static str> {
        TABLE
            .iter()
            .find(|(_, n)| *n == self.0)
            .map(|(name, _)| *name)
    }

    /// Parses a name (`ECONNREFUSED`, case-insensitive) or a number (`111`) from 1 to 4095.
    pub fn parse(text: &str) -> Option<Errno> {
        let text = text.trim();
        if let Ok(number) = text.parse::<u32>() {
            return (1..=MAX_ERRNO).contains(&number).then_some(Errno(number));
        }
        TABLE
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(text))
            .map(|(_, number)| Errno(*number))
    }

    /// Parses `text` and requires it to be one of `allowed`; the error names what is accepted.
    pub fn parse_one_of(text: &str, allowed: &[Errno]) -> Result<Errno, String> {
        match Errno::parse(text) {
            Some(errno) if allowed.is_empty() || allowed.contains(&errno) => Ok(errno),
            _ => Err(describe_list(allowed)),
        }
    }
}

/// "ECONNREFUSED (111), ..." or the generic description when any errno is allowed.
pub fn describe_list(allowed: &[Errno]) -> String {
    if allowed.is_empty() {
        return "an errno name such as ECONNRESET, or a number from 1 to 4095".into();
    }
    let names: Vec<String> = allowed.iter().map(Errno::to_string).collect();
    format!("{} (by name or number)", names.join(", "))
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({})", self.0),
            None => write!(f, "errno {}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_parse_to_the_same_errno() {
        assert_eq!(Errno::parse("ECONNREFUSED"), Some(Errno(111)));
        assert_eq!(Errno::parse("econnrefused"), Some(Errno(111)));
        assert_eq!(Errno::parse("111"), Some(Errno(111)));
        assert_eq!(Errno::parse("ETIMEDOUT"), Some(Errno(110)));
    }

    #[test]
    fn unknown_and_out_of_range_errnos_are_rejected() {
        assert_eq!(Errno::parse("EFOO"), None);
        assert_eq!(Errno::parse("0"), None);
        assert_eq!(Errno::parse("4096"), None);
        assert_eq!(Errno::parse("-5"), None);
    }

    #[test]
    fn allowed_list_is_enforced_and_described() {
        let allowed = [Errno(111), Errno(110)];
        assert_eq!(Errno::parse_one_of("110", &allowed), Ok(Errno(110)));
        let err = Errno::parse_one_of("EIO", &allowed).unwrap_err();
        assert_eq!(
            err,
            "ECONNREFUSED (111), ETIMEDOUT (110) (by name or number)"
        );
    }

    #[test]
    fn table_has_unique_names_and_numbers() {
        for (i, (name, number)) in TABLE.iter().enumerate() {
            for (other_name, other_number) in &TABLE[i + 1..] {
                assert_ne!(name, other_name);
                assert_ne!(number, other_number);
            }
        }
    }
}
