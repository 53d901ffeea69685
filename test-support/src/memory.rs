//! Reading another process's memory (as root), to show that a secret it handled is gone.

/// Where in the process `pid`'s writable memory (heap, arenas, stacks) `needle` occurs:
/// one line of `/proc/PID/maps` per mapping that holds it.
pub fn found_in_memory(pid: u32, needle: &[u8]) -> Vec<String> {
    use std::os::unix::fs::FileExt;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut found = Vec::new();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !perms.starts_with("rw") {
            continue;
        }
        let (start, end) = range.split_once('-').unwrap();
        let start = u64::from_str_radix(start, 16).unwrap();
        let end = u64::from_str_radix(end, 16).unwrap();
        let mut bytes = vec![0u8; (end - start) as usize];
        if mem.read_exact_at(&mut bytes, start).is_err() {
            continue; // [vvar] and the like cannot be read
        }
        if bytes.windows(needle.len()).any(|w| w == needle) {
            found.push(line.to_string());
        }
    }
    found
}
