//! Errno names and numbers as on Linux (x86_64 and arm64 share them), without a C library: the
//! model builds anywhere. chaos-userspace checks this table against nix's.
use std::{fmt, str::FromStr};

use crate::values::ValueError;

/// Every named Linux errno, by number (41 and 58 have no name).
const NAMES: &[(u32, &str)] = &[
    (1, "EPERM"),
    (2, "ENOENT"),
    (3, "ESRCH"),
    (4, "EINTR"),
    (5, "EIO"),
    (6, "ENXIO"),
    (7, "E2BIG"),
    (8, "ENOEXEC"),
    (9, "EBADF"),
    (10, "ECHILD"),
    (11, "EAGAIN"),
    (12, "ENOMEM"),
    (13, "EACCES"),
    (14, "EFAULT"),
    (15, "ENOTBLK"),
    (16, "EBUSY"),
    (17, "EEXIST"),
    (18, "EXDEV"),
    (19, "ENODEV"),
    (20, "ENOTDIR"),
    (21, "EISDIR"),
    (22, "EINVAL"),
    (23, "ENFILE"),
    (24, "EMFILE"),
    (25, "ENOTTY"),
    (26, "ETXTBSY"),
    (27, "EFBIG"),
    (28, "ENOSPC"),
    (29, "ESPIPE"),
    (30, "EROFS"),
    (31, "EMLINK"),
    (32, "EPIPE"),
    (33, "EDOM"),
    (34, "ERANGE"),
    (35, "EDEADLK"),
    (36, "ENAMETOOLONG"),
    (37, "ENOLCK"),
    (38, "ENOSYS"),
    (39, "ENOTEMPTY"),
    (40, "ELOOP"),
    (42, "ENOMSG"),
    (43, "EIDRM"),
    (44, "ECHRNG"),
    (45, "EL2NSYNC"),
    (46, "EL3HLT"),
    (47, "EL3RST"),
    (48, "ELNRNG"),
    (49, "EUNATCH"),
    (50, "ENOCSI"),
    (51, "EL2HLT"),
    (52, "EBADE"),
    (53, "EBADR"),
    (54, "EXFULL"),
    (55, "ENOANO"),
    (56, "EBADRQC"),
    (57, "EBADSLT"),
    (59, "EBFONT"),
    (60, "ENOSTR"),
    (61, "ENODATA"),
    (62, "ETIME"),
    (63, "ENOSR"),
    (64, "ENONET"),
    (65, "ENOPKG"),
    (66, "EREMOTE"),
    (67, "ENOLINK"),
    (68, "EADV"),
    (69, "ESRMNT"),
    (70, "ECOMM"),
    (71, "EPROTO"),
    (72, "EMULTIHOP"),
    (73, "EDOTDOT"),
    (74, "EBADMSG"),
    (75, "EOVERFLOW"),
    (76, "ENOTUNIQ"),
    (77, "EBADFD"),
    (78, "EREMCHG"),
    (79, "ELIBACC"),
    (80, "ELIBBAD"),
    (81, "ELIBSCN"),
    (82, "ELIBMAX"),
    (83, "ELIBEXEC"),
    (84, "EILSEQ"),
    (85, "ERESTART"),
    (86, "ESTRPIPE"),
    (87, "EUSERS"),
    (88, "ENOTSOCK"),
    (89, "EDESTADDRREQ"),
    (90, "EMSGSIZE"),
    (91, "EPROTOTYPE"),
    (92, "ENOPROTOOPT"),
    (93, "EPROTONOSUPPORT"),
    (94, "ESOCKTNOSUPPORT"),
    (95, "EOPNOTSUPP"),
    (96, "EPFNOSUPPORT"),
    (97, "EAFNOSUPPORT"),
    (98, "EADDRINUSE"),
    (99, "EADDRNOTAVAIL"),
    (100, "ENETDOWN"),
    (101, "ENETUNREACH"),
    (102, "ENETRESET"),
    (103, "ECONNABORTED"),
    (104, "ECONNRESET"),
    (105, "ENOBUFS"),
    (106, "EISCONN"),
    (107, "ENOTCONN"),
    (108, "ESHUTDOWN"),
    (109, "ETOOMANYREFS"),
    (110, "ETIMEDOUT"),
    (111, "ECONNREFUSED"),
    (112, "EHOSTDOWN"),
    (113, "EHOSTUNREACH"),
    (114, "EALREADY"),
    (115, "EINPROGRESS"),
    (116, "ESTALE"),
    (117, "EUCLEAN"),
    (118, "ENOTNAM"),
    (119, "ENAVAIL"),
    (120, "EISNAM"),
    (121, "EREMOTEIO"),
    (122, "EDQUOT"),
    (123, "ENOMEDIUM"),
    (124, "EMEDIUMTYPE"),
    (125, "ECANCELED"),
    (126, "ENOKEY"),
    (127, "EKEYEXPIRED"),
    (128, "EKEYREVOKED"),
    (129, "EKEYREJECTED"),
    (130, "EOWNERDEAD"),
    (131, "ENOTRECOVERABLE"),
    (132, "ERFKILL"),
    (133, "EHWPOISON"),
];

/// Names the C library spells differently for the same number.
const ALIASES: &[(&str, u32)] = &[("EWOULDBLOCK", 11), ("EDEADLOCK", 35), ("ENOTSUP", 95)];

/// The largest errno the kernel accepts as an error return (`MAX_ERRNO`).
pub const MAX_ERRNO: u32 = 4095;

/// An errno value, written as a name (`ECONNREFUSED`, any case) or a number from 1 to 4095.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Errno(pub u32);

impl Errno {
    pub const ECONNREFUSED: Errno = Errno(111);

    /// The C name (`ECONNRESET`), where the number has one.
    pub fn name(self) -> Option<&'static str> {
        NAMES
            .binary_search_by_key(&self.0, |(number, _)| *number)
            .ok()
            .map(|at| NAMES[at].1)
    }

    /// Parses a name or a number; `None` for anything else.
    pub fn parse(text: &str) -> Option<Errno> {
        let text = text.trim();
        if let Ok(number) = text.parse::<u32>() {
            return (1..=MAX_ERRNO).contains(&number).then_some(Errno(number));
        }
        NAMES
            .iter()
            .find(|(_, name)| name.eq_ignore_ascii_case(text))
            .map(|(number, _)| Errno(*number))
            .or_else(|| {
                ALIASES
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(text))
                    .map(|(_, number)| Errno(*number))
            })
    }

    /// Every named errno, for tests that compare the table with the platform's.
    pub fn all_named() -> impl Iterator<Item = (Errno, &'static str)> {
        NAMES.iter().map(|(number, name)| (Errno(*number), *name))
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

impl FromStr for Errno {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        Errno::parse(text)
            .ok_or_else(|| ValueError::new(format!("{text:?} is not an errno"), describe_list(&[])))
    }
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
        for (name, number) in [
            ("ENOTSOCK", 88),
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

    #[test]
    fn unknown_and_out_of_range_errnos_are_rejected() {
        for bad in ["EFOO", "0", "4096", "-5", ""] {
            assert_eq!(Errno::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_table_is_sorted_for_binary_search() {
        assert!(NAMES.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
