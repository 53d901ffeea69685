//! mfa-bench carries its own unwinder, as pam_mfa does (build-support/static_unwinder.rs):
//! its PAM calls run in a process that, like sshd's, has no libgcc_s loaded, so a module
//! that needs libgcc_s pays for loading it at each pam_start, as it would in sshd.

include!("../build-support/static_unwinder.rs");

fn main() {
    static_unwinder("bins");
}
