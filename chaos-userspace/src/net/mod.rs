//! Network plumbing: interface and pod scopes, the rtnetlink calls aya lacks, fq for delay, and
//! the record of TC state that `cleanup` undoes after a SIGKILL.
pub mod fq;
pub mod interface;
pub mod netlink;
pub mod reachability;
pub mod tc_records;
