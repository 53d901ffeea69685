//! What one message between two waiting threads costs on this machine, the CPUs idle in
//! between: a byte sent over a Unix socket pair and sent back, each side blocked in read(2),
//! with both threads on one CPU and on two.
//!
//! pam_mfa's conversation with mfad is made of such messages (hello, prompt, answer,
//! verdict), each waking a thread that was waiting; google-authenticator's module sends
//! none. On a virtual machine whose idle CPUs halt at once (no guest halt-polling), waking
//! a thread on another, idle CPU costs far more than on the waker's own: this probe gives
//! both costs, so the PAM-call tables can be read against them.

use crate::BenchError;
use crate::stats::Samples;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// Round trips measured per placement.
pub const ROUND_TRIPS: usize = 1000;

/// The pause before each round trip, long enough for an idle CPU to halt.
pub const GAP: Duration = Duration::from_micros(500);

/// Round trips with both threads on one CPU, and with the two on two CPUs (`None` when the
/// process may use only one).
pub struct Messages {
    pub same_cpu: Samples,
    pub two_cpus: Option<Samples>,
    /// The CPUs used: the sender's, and the other one.
    pub cpus: (usize, Option<usize>),
    /// Round trips whose answering thread said it ran on another CPU than it was pinned to
    /// (none unless the pinning failed silently).
    pub misplaced: usize,
}

/// Measures [`ROUND_TRIPS`] round trips per placement, the two placements alternating.
pub fn measure() -> Result<Messages, BenchError> {
    let allowed = allowed_cpus()?;
    let Some(&first) = allowed.first() else {
        return Err(BenchError("no CPU is allowed to this process".into()));
    };
    let second = allowed.get(1).copied();
    let sender = std::thread::spawn(move || -> Result<Messages, String> {
        pin(first)?;
        let mut same = echo_on(first)?;
        let mut other = second.map(echo_on).transpose()?;
        let mut messages = Messages {
            same_cpu: Samples::default(),
            two_cpus: second.map(|_| Samples::default()),
            cpus: (first, second),
            misplaced: 0,
        };
        for _ in 0..ROUND_TRIPS {
            std::thread::sleep(GAP);
            let (took, cpu) = round_trip(&mut same)?;
            messages.same_cpu.push(took);
            messages.misplaced += usize::from(cpu != Some(first));
            if let (Some(stream), Some(samples)) = (other.as_mut(), messages.two_cpus.as_mut()) {
                std::thread::sleep(GAP);
                let (took, cpu) = round_trip(stream)?;
                samples.push(took);
                messages.misplaced += usize::from(cpu != second);
            }
        }
        Ok(messages)
    });
    sender
        .join()
        .map_err(|_| BenchError("the message probe's thread panicked".into()))?
        .map_err(|e| BenchError(format!("the message probe: {e}")))
}

/// A thread pinned to `cpu` that answers each byte it reads with the number of the CPU it
/// runs on, until the stream closes; returns the other end.
fn echo_on(cpu: usize) -> Result<UnixStream, String> {
    let (mine, theirs) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    std::thread::spawn(move || {
        if pin(cpu).is_err() {
            return;
        }
        let mut stream = theirs;
        let mut byte = [0u8; 1];
        while let Ok(1) = stream.read(&mut byte) {
            // SAFETY: sched_getcpu has no arguments and only reads the calling thread's CPU.
            let cpu = unsafe { libc::sched_getcpu() };
            byte[0] = u8::try_from(cpu).unwrap_or(u8::MAX);
            if stream.write_all(&byte).is_err() {
                return;
            }
        }
    });
    Ok(mine)
}

/// One round trip: its time, and the CPU the answering thread ran on.
fn round_trip(stream: &mut UnixStream) -> Result<(Duration, Option<usize>), String> {
    let mut byte = [7u8; 1];
    let started = Instant::now();
    stream
        .write_all(&byte)
        .and_then(|()| stream.read_exact(&mut byte))
        .map_err(|e| format!("a round trip failed: {e}"))?;
    let took = started.elapsed();
    Ok((took, (byte[0] != u8::MAX).then_some(usize::from(byte[0]))))
}

/// The CPUs this process may run on, in order.
fn allowed_cpus() -> Result<Vec<usize>, BenchError> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity writes at most its
    // size into it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return Err(BenchError(format!(
            "sched_getaffinity: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, within the set.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// Pins the calling thread to `cpu`.
fn pin(cpu: usize) -> Result<(), String> {
    // SAFETY: as in `allowed_cpus`; CPU_SET stays within the set for `cpu` < CPU_SETSIZE,
    // which `allowed_cpus` guarantees for the CPUs it returns.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 {
        return Err(format!(
            "cannot pin a thread to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_round_trip_is_measured_with_each_thread_on_its_cpu() {
        let m = measure().unwrap();
        assert_eq!(m.same_cpu.len(), ROUND_TRIPS);
        assert_eq!(m.misplaced, 0);
        if allowed_cpus().unwrap().len() >= 2 {
            assert_eq!(m.two_cpus.map(|s| s.len()), Some(ROUND_TRIPS));
            assert!(m.cpus.1.is_some_and(|b| b != m.cpus.0));
        } else {
            assert!(m.two_cpus.is_none());
        }
    }
}
