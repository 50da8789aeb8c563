//! delay needs the fq qdisc, which honours each packet's departure time. chaos-bpf puts fq in
//! place of an interface's *default* root qdisc and deletes it again on exit, so the kernel
//! restores the default; it never replaces a root qdisc somebody configured. Objects of one
//! process (an agent's delay faults) share the fq chaos-bpf installed: it goes with the last.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
};

use crate::{
    error::{ChaosError, Result},
    net::interface::InterfaceScope,
    net::netlink::{self, CHAOS_FQ_HANDLE, TC_H_ROOT},
    net::tc_records::Recorder,
};

/// fq as the interface's root for as long as this lives (when chaos-bpf installed it).
#[derive(Debug)]
pub struct FqInstalled {
    ifindex: i32,
}

/// A delay object's hold on the fq root chaos-bpf installed on one interface.
pub type FqRoot = Arc<FqInstalled>;

/// The fq roots this process installed, by ifindex, while any object holds them.
static INSTALLED: Mutex<Option<HashMap<i32, Weak<FqInstalled>>>> = Mutex::new(None);

impl Drop for FqInstalled {
    fn drop(&mut self) {
        // Failing means it is already gone (say, with the interface): nothing left to restore.
        let _ = netlink::delete_root(self.ifindex, CHAOS_FQ_HANDLE, "fq");
    }
}

/// Makes sure the interface's root qdisc is fq; returns a guard when chaos-bpf installed it.
pub fn ensure(interface: &InterfaceScope, recorder: &Recorder) -> Result<Option<FqRoot>> {
    let ifindex = interface.ifindex as i32;
    // Held while checking and installing, so two objects never both install (or both skip).
    let mut installed = INSTALLED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let installed = installed.get_or_insert_with(HashMap::new);
    if let Some(ours) = installed.get(&ifindex).and_then(Weak::upgrade) {
        return Ok(Some(ours));
    }
    let root = netlink::qdiscs()
        .map_err(|err| ChaosError::io("listing qdiscs", err))?
        .into_iter()
        .find(|q| q.ifindex == ifindex && q.parent == TC_H_ROOT);
    match root {
        Some(q) if q.kind == "fq" => Ok(None),
        // Handle 0: the default the kernel attached (noqueue, pfifo_fast, mq, fq_codel...).
        Some(q) if q.handle != 0 => Err(ChaosError::input(
            "scope.iface",
            format!(
                "{} has a configured root qdisc ({} {:x}:), and delay needs fq there; chaos-bpf will not replace it",
                interface.name,
                q.kind,
                q.handle >> 16
            ),
            "an interface whose root qdisc is the kernel's default or fq",
        )),
        _ => {
            recorder
                .mark_fq(interface.ifindex)
                .map_err(|err| ChaosError::io("recording the fq qdisc", err))?;
            // ENOENT (no fq in this kernel) is kept in the error for the caller, who names the
            // mechanism that is missing.
            netlink::replace_root_with_fq(ifindex).map_err(|err| {
                ChaosError::io(format!("installing fq on {}", interface.name), err)
            })?;
            let ours = Arc::new(FqInstalled { ifindex });
            installed.insert(ifindex, Arc::downgrade(&ours));
            Ok(Some(ours))
        }
    }
}
