//! Random bytes from the kernel (`getrandom(2)`): the client's secret.

use std::io;

use super::retry;

/// Fills `buf` with random bytes from the kernel's pool (blocking only
/// until the pool is first initialized, early at boot).
pub fn fill(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        let n = retry(|| {
            // SAFETY: `rest` is valid for writes of `rest.len()` bytes.
            let r = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
            if r < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(r as usize)
            }
        })?;
        done += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn two_fills_differ() {
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        super::fill(&mut a).unwrap();
        super::fill(&mut b).unwrap();
        assert_ne!(a, b);
        super::fill(&mut []).unwrap();
    }
}
