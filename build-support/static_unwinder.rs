// Included by the build scripts of pam_mfa and mfa-bench (`include!`): links GCC's static
// unwinder (`libgcc_eh.a`, whose symbols are hidden) into their `targets` ("cdylib",
// "bins") instead of `libgcc_s.so.1`.
//
// Rust's standard library asks the linker for `-lgcc_s` (unwinding: pam_mfa's `pam_hooks!`
// catches every panic at the PAM boundary). sshd does not load libgcc_s itself, so with it
// each login's `pam_start` loaded a second library beside the module and `pam_end`
// unloaded it: in a C process without it, `dlopen` of the module took 255-291 µs against
// 123-136 µs without the dependency, `dlclose` 48-56 µs against 23-25 µs
// (docs/BENCHMARKS.md, 2026-12-04). This is GCC's own `-static-libgcc`, which rustc's
// explicit `-lgcc_s` would otherwise override: a directory searched first (GNU ld searches
// `-L` directories before its own, wherever they stand) holds a linker script named
// `libgcc_s.so` that points at the static unwinder. The module's panics never unwind into
// the application's frames, so its unwinder need not be the application's.
fn static_unwinder(targets: &str) {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=../build-support/static_unwinder.rs");
    let Some(out) = std::env::var_os("OUT_DIR") else {
        println!("cargo::error=OUT_DIR is not set");
        return;
    };
    let dir = std::path::PathBuf::from(out).join("static-unwinder");
    if let Err(e) = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("libgcc_s.so"), "INPUT ( -lgcc_eh )\n"))
    {
        println!("cargo::error=cannot write the unwinder's linker script: {e}");
        return;
    }
    println!("cargo::rustc-link-arg-{targets}=-L{}", dir.display());
}
