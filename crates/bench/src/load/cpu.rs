//! The two things a load generator's threads need from the scheduler:
//! a CPU of their own (`sched_setaffinity`), and their CPU time, read with
//! nanosecond resolution from any thread of the process through the
//! thread's CPU clock (`pthread_getcpuclockid`; the same
//! `sum_exec_runtime` that `getrusage(RUSAGE_THREAD)` reports in ticks).

use std::io;

/// The CPUs this process may run on, lowest first.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; all zeroes is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: sched_getaffinity writes at most size_of::<cpu_set_t>()
    // bytes into `set`, which outlives the call.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: CPU_ISSET reads the set within its size.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Pins the calling thread (only it) to `cpu`.
pub fn pin_here(cpu: usize) -> io::Result<()> {
    // SAFETY: as above.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes within the set; `cpu` < CPU_SETSIZE is checked
    // by the kernel's answer below (an empty set is EINVAL).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; the set outlives the call.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The CPU clock of the calling thread, readable from the other threads
/// of this process while it runs.
pub fn own_clock() -> io::Result<libc::clockid_t> {
    let mut id: libc::clockid_t = 0;
    // SAFETY: pthread_self is always valid for the calling thread; `id`
    // outlives the call.
    let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut id) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(id)
}

/// The time on a CPU clock, in seconds.
pub fn read(clock: libc::clockid_t) -> io::Result<f64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` outlives the call; an invalid clock is an error return.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_thread_clock_advances_and_cpus_are_listed() {
        let clock = own_clock().unwrap();
        let before = read(clock).unwrap();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(read(clock).unwrap() > before);
        let cpus = allowed_cpus();
        assert!(!cpus.is_empty());
        // Pinning a scratch thread to a CPU we may use works.
        let cpu = cpus[0];
        std::thread::spawn(move || pin_here(cpu).unwrap())
            .join()
            .unwrap();
    }
}
