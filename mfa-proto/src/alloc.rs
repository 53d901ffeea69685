//! Memory given back zeroized: the global allocator of mfa's programs.
//!
//! `Zeroizing` covers the buffers mfa's own code owns. It cannot reach the copies other
//! code makes on the way: serde_json unescapes a string with a `"` or `\` in it (a
//! password typed at the passcode prompt) into a scratch buffer of its own, a `Vec` that
//! grows frees its old buffer as it is, totp-rs returns codes as plain `String`s, and
//! reqwest and hyper buffer request bodies. This crate installs [`ZeroizingAlloc`] as the
//! global allocator of every program that links it (mfad, mfa-web, mfa, mfa-login-prompt,
//! pam_mfa inside sshd or su, and their tests), so every block the Rust side frees is
//! cleared first, whoever made it.
//!
//! It clears with `explicit_bzero`, which the compiler may not drop as a dead store before
//! the free, at memset speed. A reallocation moves the block and clears the old one (the
//! system's `realloc` would free it uncleared when it moves). Memory still in use is not
//! its business, and neither is memory that C libraries (SQLite, OpenSSL, libpam) take
//! from `malloc` themselves.

use std::alloc::{GlobalAlloc, Layout, System};

#[global_allocator]
static ALLOC: ZeroizingAlloc = ZeroizingAlloc::SYSTEM;

/// A global allocator that zeroizes each block before handing it back to `A`.
pub struct ZeroizingAlloc<A = System>(pub A);

impl ZeroizingAlloc<System> {
    /// Over the system allocator: what the programs install.
    pub const SYSTEM: ZeroizingAlloc<System> = ZeroizingAlloc(System);
}

/// Keeps this process's memory out of core files and away from other processes of its user,
/// for the daemons (mfad, mfa-web), which hold the store key, provider tokens, sessions and
/// what users type. Call it first thing in `main`, before any secret is read.
///
/// - The core-file limit goes to 0, soft and hard: no core file on a crash, where the
///   kernel writes one to a file, and none kept by systemd-coredump, which honours it.
/// - The process is no longer dumpable (`PR_SET_DUMPABLE` 0): its `/proc/PID` files belong
///   to root, so another process of the same user (mfa-web's, say) can neither read its
///   memory nor attach a debugger, and no core is written where the system dumps only
///   dumpable processes. Root can still debug it.
///
/// What the process forks inherits both; a program it then executes keeps the core limit
/// (the kernel makes a new program dumpable again).
pub fn keep_memory_private() -> nix::Result<()> {
    use nix::sys::resource::{Resource, setrlimit};
    setrlimit(Resource::RLIMIT_CORE, 0, 0)?;
    nix::sys::prctl::set_dumpable(false)
}

// SAFETY: every call is passed on to `A` with the caller's own pointer and layout; the
// only addition is clearing `layout.size()` bytes of a block the caller gives back, which
// it owns until `A::dealloc` returns. `realloc` is the trait's provided one (allocate,
// copy, deallocate through `self`), which keeps `A`'s contract.
unsafe impl<A: GlobalAlloc> GlobalAlloc for ZeroizingAlloc<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is `A`'s.
        unsafe { self.0.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        unsafe { self.0.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` is a live block of `layout.size()` bytes that the caller gives
        // back; nothing else refers to it any more.
        unsafe {
            libc::explicit_bzero(ptr.cast(), layout.size());
            self.0.dealloc(ptr, layout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn a_private_process_dumps_no_core_and_is_not_dumpable() {
        use nix::sys::resource::{Resource, getrlimit};
        keep_memory_private().unwrap();
        assert_eq!(getrlimit(Resource::RLIMIT_CORE).unwrap(), (0, 0));
        assert!(!nix::sys::prctl::get_dumpable().unwrap());
        // A second call changes nothing and does not fail.
        keep_memory_private().unwrap();
        assert_eq!(getrlimit(Resource::RLIMIT_CORE).unwrap(), (0, 0));
    }

    /// An allocator that records what each block held when it was given back.
    #[derive(Default)]
    struct Probe {
        freed: Mutex<Vec<Vec<u8>>>,
    }

    unsafe impl GlobalAlloc for Probe {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            let held = unsafe { std::slice::from_raw_parts(ptr, layout.size()) }.to_vec();
            self.freed.lock().unwrap().push(held);
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    const SECRET: &[u8] = b"correct horse battery staple";

    #[test]
    fn a_block_is_cleared_before_it_is_given_back() {
        let alloc = ZeroizingAlloc(Probe::default());
        let layout = Layout::from_size_align(SECRET.len(), 1).unwrap();
        unsafe {
            let p = alloc.alloc(layout);
            assert!(!p.is_null());
            std::ptr::copy_nonoverlapping(SECRET.as_ptr(), p, SECRET.len());
            alloc.dealloc(p, layout);
        }
        let freed = alloc.0.freed.lock().unwrap();
        assert_eq!(freed.len(), 1);
        assert_eq!(freed[0], vec![0; SECRET.len()]);
    }

    #[test]
    fn a_block_that_moves_keeps_its_bytes_and_the_old_one_is_cleared() {
        let alloc = ZeroizingAlloc(Probe::default());
        let layout = Layout::from_size_align(SECRET.len(), 1).unwrap();
        for new_size in [4 * SECRET.len(), 4096, 10] {
            unsafe {
                let p = alloc.alloc(layout);
                std::ptr::copy_nonoverlapping(SECRET.as_ptr(), p, SECRET.len());
                let q = alloc.realloc(p, layout, new_size);
                assert!(!q.is_null());
                let kept = SECRET.len().min(new_size);
                assert_eq!(std::slice::from_raw_parts(q, kept), &SECRET[..kept]);
                alloc.dealloc(q, Layout::from_size_align(new_size, 1).unwrap());
            }
        }
        let freed = alloc.0.freed.lock().unwrap();
        assert_eq!(freed.len(), 6, "each block, old and new, given back once");
        for block in freed.iter() {
            assert!(block.iter().all(|&b| b == 0), "{block:?}");
        }
    }
}
