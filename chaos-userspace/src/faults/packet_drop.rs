//! drop and partition: packets of the cgroup's sockets are lost, through cgroup_skb hooks. Egress
//! drops are reported to the stack as congestion, so senders see loss, not errors. A partition is
//! a drop both ways (unless told one) between the scope and its peers, which may be pods chosen
//! by label and followed; with `--keep-established` only connection attempts are lost.
use chaos_common::{FaultKind, flags};

use crate::filters::Filters;
use crate::{
    filters::Direction,
    kernel::programs::{self, ProgramSpec},
};

#[derive(Clone, Debug, PartialEq)]
pub struct PacketDrop {
    pub direction: Direction,
    pub filters: Filters,
    /// A partition rather than a drop (its own kind in views, counters and events).
    pub partition: bool,
    /// partition --keep-established: only TCP SYNs without ACK are lost.
    pub connect_only: bool,
}

impl PacketDrop {
    pub fn programs(&self) -> &'static [&'static ProgramSpec] {
        match self.direction {
            Direction::Egress => &[&programs::SKB_EGRESS],
            Direction::Ingress => &[&programs::SKB_INGRESS],
            Direction::Both => &[&programs::SKB_EGRESS, &programs::SKB_INGRESS],
        }
    }

    pub fn kind(&self) -> FaultKind {
        if self.partition {
            FaultKind::Partition
        } else {
            FaultKind::Drop
        }
    }

    /// The direction's bits, and partition's connection-attempts-only bit.
    pub fn flags(&self) -> u32 {
        let direction = match self.direction {
            Direction::Egress => flags::EGRESS,
            Direction::Ingress => flags::INGRESS,
            Direction::Both => flags::EGRESS | flags::INGRESS,
        };
        if self.connect_only {
            direction | flags::CONNECT_ONLY
        } else {
            direction
        }
    }
}
