//! The module carries its own unwinder instead of needing libgcc_s, which sshd does not
//! load (see build-support/static_unwinder.rs). Only the cdylib: the crate's test binaries
//! and the rlib's users keep the shared one.

include!("../build-support/static_unwinder.rs");

fn main() {
    static_unwinder("cdylib");
}
