//! The module carries its own copy of GCC's unwinder (`libgcc_eh.a`, whose symbols are
//! hidden) instead of needing `libgcc_s.so.1`.
//!
//! Rust's standard library asks the linker for `-lgcc_s` (unwinding: `pam_hooks!` catches
//! every panic at the PAM boundary). sshd does not load libgcc_s itself, so with it each
//! login's `pam_start` loaded a second library beside the module and `pam_end` unloaded
//! it: in a C process that has not got it, `dlopen` of the module took 353 µs against 174
//! µs once libgcc_s was already there, and `dlclose` 73 µs against 39-46 µs
//! (docs/BENCHMARKS.md, 2026-12-04). This is GCC's own `-static-libgcc` for a shared
//! object, which rustc's explicit `-lgcc_s` would otherwise override: a directory searched
//! first for the cdylib's link holds a linker script named `libgcc_s.so` that points at
//! the static unwinder. The module's panics never unwind into the application's frames, so
//! the module's unwinder need not be the application's.

use std::path::PathBuf;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let Some(out) = std::env::var_os("OUT_DIR") else {
        println!("cargo::error=OUT_DIR is not set");
        return;
    };
    let dir = PathBuf::from(out).join("static-unwinder");
    if let Err(e) = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("libgcc_s.so"), "INPUT ( -lgcc_eh )\n"))
    {
        println!("cargo::error=cannot write the unwinder's linker script: {e}");
        return;
    }
    // Only the cdylib: test binaries and the rlib's users keep the shared unwinder.
    println!("cargo::rustc-link-arg-cdylib=-L{}", dir.display());
}
