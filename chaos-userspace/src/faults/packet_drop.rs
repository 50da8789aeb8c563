//! drop: packets of the cgroup's sockets are lost, through cgroup_skb hooks. Egress drops are
//! reported to the stack as congestion, so senders see loss, not errors.
use chaos_common::flags;

use crate::filters::Filters;
use crate::{
    filters::Direction,
    kernel::programs::{self, ProgramSpec},
};

#[derive(Clone, Debug, PartialEq)]
pub struct PacketDrop {
    pub direction: Direction,
    pub filters: Filters,
}

impl PacketDrop {
    pub fn programs(&self) -> &'static [&'static ProgramSpec] {
        match self.direction {
            Direction::Egress => &[&programs::SKB_EGRESS],
            Direction::Ingress => &[&programs::SKB_INGRESS],
            Direction::Both => &[&programs::SKB_EGRESS, &programs::SKB_INGRESS],
        }
    }

    pub fn direction_flags(&self) -> u32 {
        match self.direction {
            Direction::Egress => flags::EGRESS,
            Direction::Ingress => flags::INGRESS,
            Direction::Both => flags::EGRESS | flags::INGRESS,
        }
    }
}
