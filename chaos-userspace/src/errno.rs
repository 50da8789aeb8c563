//! Errnos come from the fault model, which carries its own table so it needs no C library; this
//! checks that table against nix's, the platform's own.
pub use chaos_model::{Errno, errno::describe_list};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_table_names_every_errno_as_the_platform_does() {
        let mut checked = 0;
        for number in 1..=200 {
            let platform = nix::errno::Errno::from_raw(number);
            let ours = Errno(number as u32).name();
            if platform == nix::errno::Errno::UnknownErrno {
                assert_eq!(ours, None, "{number} has no name on this platform");
            } else {
                assert_eq!(ours, Some(format!("{platform:?}").as_str()), "{number}");
                checked += 1;
            }
        }
        assert_eq!(checked, Errno::all_named().count());
    }
}
