//! Errno names and numbers (Linux, as on x86_64 and arm64).
use std::fmt;

/// Names the C library spells differently for the same number (nix names the first).
const ALIASES: &[(&str, u32)] = &[("EWOULDBLOCK", 11), ("EDEADLOCK", 35), ("ENOTSUP", 95)];

/// The highest errno with a name on Linux (EHWPOISON).
const LAST_NAMED: u32 = 133;

/// The largest errno the kernel accepts as an error return (`MAX_ERRNO`).
const MAX_ERRNO: u32 = 4095;

/// An errno value with its name where one is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub u32);

impl Errno {
    pub const ECONNREFUSED: Errno = Errno(111);

    /// The C name (`ECONNRESET`), from nix's table of this platform's errnos.
    pub fn name(self) -> Option<String> {
        let errno = nix::errno::Errno::from_raw(i32::try_from(self.0).ok()?);
        (errno != nix::errno::Errno::UnknownErrno).then(|| format!("{errno:?}"))
    }

    /// Parses a name (`ECONNREFUSED`, case-insensitive) or a number (`111`) from 1 to 4095.
    pub fn parse(text: &str) -> Option<Errno> {
        let text = text.trim();
        if let Ok(number) = text.parse::<u32>() {
            return (1..=MAX_ERRNO).contains(&number).then_some(Errno(number));
        }
        (1..=LAST_NAMED)
            .map(Errno)
            .find(|errno| errno.name().is_some_and(|n| n.eq_ignore_ascii_case(text)))
            .or_else(|| {
                ALIASES
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(text))
                    .map(|(_, number)| Errno(*number))
            })
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
    fn every_linux_errno_name_parses_and_aliases_too() {
        for (name, number) in [
            ("ENOTSOCK", 88),
            ("ECANCELED", 125),
            ("ESTALE", 116),
            ("EHWPOISON", 133),
            ("EWOULDBLOCK", 11),
            ("ENOTSUP", 95),
            ("EAGAIN", 11),
        ] {
            assert_eq!(Errno::parse(name), Some(Errno(number)), "{name}");
        }
        assert_eq!(Errno(104).to_string(), "ECONNRESET (104)");
        assert_eq!(Errno(4000).to_string(), "errno 4000");
    }
}
