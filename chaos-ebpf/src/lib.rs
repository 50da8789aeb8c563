//! Empty on purpose: the library target lets `chaos-userspace` take a build-dependency on this
//! crate, so cargo rebuilds the loader whenever the kernel programs change.
#![no_std]
