//! The read buffer of one followed file: bytes read at known file offsets,
//! the part not sent yet, and the last bytes before the read position kept
//! to prove the file was not rewritten under the reader.
//!
//! Invariants (checked by `debug_assert`s and the tests at the bottom):
//! - `head <= end <= data.len()`;
//! - `data[..end]` are the file's bytes `[start, start + end)` as read;
//! - `data[head..end]` is read but not sent; `data[..head]` was sent and is
//!   kept only so the next read can re-read its last bytes and compare;
//! - `tail`, when set, holds the last `tail.2` (at most [`OVERLAP`])
//!   bytes before file offset `tail.0`, at the end of `tail.1`, kept when
//!   the allocation was given up while idle; it is only used while
//!   `end == 0` and `start == tail.0`.
//!
//! An idle buffer holds no allocation ([`ReadBuf::release`]); a file that
//! is behind grows it by doubling up to a limit ([`ReadBuf::prepare`]).
//!
//! Sizing: a followed file that appends a line or two per `linger` needs a
//! few hundred bytes, a file being caught up needs the full `max_batch`,
//! and a client follows thousands of the former. So the first allocation
//! is small (the caller's `initial`), and each buffer remembers the size
//! its file needed (`next`): an allocation that filled up is remembered
//! at its full size (a busy file gets it back at once, without doubling
//! through the small sizes again); one that used at most a quarter is
//! remembered at half its size, so a file gone quiet gives its memory
//! back step by step, down to `initial`. Invariant: `next` is 0 (nothing
//! allocated yet) or the size of an allocation this buffer held.

/// Bytes before the read position that each first read re-reads and
/// compares: a file truncated and rewritten past the reader's position
/// between two looks (so it never looked shorter) has other bytes there.
pub const OVERLAP: usize = 256;

#[derive(Debug, Default)]
pub struct ReadBuf {
    data: Vec<u8>,
    start: u64,
    head: usize,
    end: usize,
    tail: Option<(u64, [u8; OVERLAP], usize)>,
    /// The last read filled the buffer: the file is behind.
    behind: bool,
    /// Some read filled the current allocation (see the module docs).
    filled_up: bool,
    /// Size of the next allocation (see the module docs); 0 before the
    /// first.
    next: usize,
}

/// What a checked read found (see [`ReadBuf::check_window`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Nothing to compare against: read at the position, unchecked.
    None,
    /// Re-read `len` bytes before the position into `data[at..]` and
    /// compare them with what is expected there.
    Overlap { at: usize, len: usize },
}

impl ReadBuf {
    /// File offset of the first unsent byte.
    pub fn sent_pos(&self) -> u64 {
        self.start + self.head as u64
    }

    /// File offset where the next read starts.
    pub fn read_pos(&self) -> u64 {
        self.start + self.end as u64
    }

    /// The bytes read and not sent yet.
    pub fn unsent(&self) -> &[u8] {
        &self.data[self.head..self.end]
    }

    /// True when no byte room is left to read into.
    pub fn full(&self) -> bool {
        self.end >= self.data.len()
    }

    /// True when the last read filled the buffer.
    pub fn behind(&self) -> bool {
        self.behind
    }

    /// The file's first bytes (at most `max`), when the buffer holds them
    /// (it starts at offset 0).
    pub fn file_head(&self, max: usize) -> Option<&[u8]> {
        (self.start == 0 && self.end > 0).then(|| &self.data[..self.end.min(max)])
    }

    /// Bytes allocated (for the memory gauge and tests).
    pub fn capacity(&self) -> usize {
        self.data.len()
    }

    /// Drops everything and starts over at file offset `pos` (a new file,
    /// a reconnect that falls back to the acknowledged offset). Keeps the
    /// allocation.
    pub fn reset(&mut self, pos: u64) {
        self.start = pos;
        self.head = 0;
        self.end = 0;
        self.tail = None;
        self.behind = false;
    }

    /// `n` of the unsent bytes went out.
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.end - self.head);
        self.head += n.min(self.end - self.head);
    }

    /// Makes room to read: an empty buffer gets `initial` bytes; a buffer
    /// whose room is used up moves its unsent bytes (and up to
    /// [`OVERLAP`] sent ones before them, for the next check) to the
    /// front, and doubles up to `max` while the file is behind.
    /// An empty buffer's first allocation is the size its file needed last
    /// time, if it needed more than `initial` (see the module docs).
    pub fn prepare(&mut self, initial: usize, max: usize) {
        if self.data.is_empty() {
            let floor = initial.max(OVERLAP * 2);
            self.data = vec![0; self.next.min(max).max(floor)];
            self.filled_up = false;
        } else if self.end == self.data.len() && self.head > 0 {
            let keep = self.head.min(OVERLAP);
            let from = self.head - keep;
            self.data.copy_within(from..self.end, 0);
            self.start += from as u64;
            self.head -= from;
            self.end -= from;
        }
        if self.behind && self.data.len() < max {
            let grown = (self.data.len() * 2).min(max);
            self.data.resize(grown, 0);
        }
    }

    /// Where the next read goes and what it must re-check: with the last
    /// bytes before the read position known (in the buffer or the saved
    /// tail), the read starts that many bytes earlier. The caller reads
    /// into `room_from(check)` at `read_pos() - overlap` and then calls
    /// [`filled`](Self::filled).
    pub fn check_window(&mut self) -> Check {
        let pos = self.read_pos();
        let l = pos.min(OVERLAP as u64) as usize;
        if l == 0 {
            return Check::None;
        }
        if self.end > 0 {
            // The bytes read just before the position (as many as the
            // buffer holds, at most OVERLAP: a buffer that started at a
            // server's offset holds fewer).
            if self.end >= self.data.len() {
                return Check::None;
            }
            let l = l.min(self.end);
            return Check::Overlap {
                at: self.end - l,
                len: l,
            };
        }
        match self.tail {
            Some((p, bytes, k)) if self.end == 0 && p == pos && k > 0 && self.data.len() > k => {
                // Put the saved bytes where the re-read will land, as if
                // they had stayed in the buffer.
                self.data[..k].copy_from_slice(&bytes[OVERLAP - k..]);
                self.start = pos - k as u64;
                self.head = k;
                self.end = k;
                self.tail = None;
                Check::Overlap { at: 0, len: k }
            }
            _ => Check::None,
        }
    }

    /// The room a read goes into: for an overlap check it starts at the
    /// re-read bytes, else at `end`.
    pub fn room(&mut self, check: Check) -> &mut [u8] {
        match check {
            Check::None => &mut self.data[self.end..],
            Check::Overlap { at, .. } => &mut self.data[at..],
        }
    }

    /// A read of `n` bytes into [`room`](Self::room) finished. For an
    /// overlap check, the re-read bytes are compared with the ones kept
    /// (a copy of them is passed in `expected`); on a mismatch the buffer
    /// is left as it was and false is returned: the file changed under the
    /// reader. Returns true otherwise.
    pub fn filled(&mut self, check: Check, expected: &[u8], n: usize) -> bool {
        match check {
            Check::None => {
                self.end += n;
            }
            Check::Overlap { at, len } => {
                if n < len || self.data[at..at + len] != *expected {
                    self.data[at..at + len].copy_from_slice(expected);
                    return false;
                }
                self.end = at + n;
            }
        }
        self.behind = self.end == self.data.len();
        self.filled_up |= self.behind;
        debug_assert!(self.head <= self.end && self.end <= self.data.len());
        true
    }

    /// The bytes the overlap check of `check` expects (copied out before
    /// the read overwrites them).
    pub fn expected(&self, check: Check) -> ([u8; OVERLAP], usize) {
        let mut e = [0; OVERLAP];
        match check {
            Check::None => (e, 0),
            Check::Overlap { at, len } => {
                e[..len].copy_from_slice(&self.data[at..at + len]);
                (e, len)
            }
        }
    }

    /// The last bytes read before file offset `pos` (at most
    /// [`OVERLAP`]), from the buffer or the saved tail: what a copy of the
    /// file must hold there.
    pub fn before(&self, pos: u64) -> Option<Vec<u8>> {
        let l = pos.min(OVERLAP as u64) as usize;
        if l == 0 {
            return None;
        }
        if self.read_pos() == pos && self.end > 0 {
            let l = l.min(self.end);
            return Some(self.data[self.end - l..self.end].to_vec());
        }
        match self.tail {
            Some((p, bytes, k)) if p == pos && self.end == 0 && k > 0 => {
                Some(bytes[OVERLAP - k..].to_vec())
            }
            _ => None,
        }
    }

    /// Everything read was sent: gives the allocation up, keeping the last
    /// bytes for the next check. Returns the freed allocation (for a pool).
    pub fn release(&mut self) -> Option<Vec<u8>> {
        if self.head != self.end || self.data.is_empty() {
            return None;
        }
        let pos = self.read_pos();
        let k = (pos.min(OVERLAP as u64) as usize).min(self.end);
        if k > 0 {
            let mut bytes = [0; OVERLAP];
            bytes[OVERLAP - k..].copy_from_slice(&self.data[self.end - k..self.end]);
            self.tail = Some((pos, bytes, k));
        }
        let cap = self.data.len();
        self.next = match self.end {
            _ if self.filled_up => cap,
            used if used <= cap / 4 => cap / 2,
            _ => cap,
        };
        self.start = pos;
        self.head = 0;
        self.end = 0;
        self.behind = false;
        self.filled_up = false;
        Some(std::mem::take(&mut self.data))
    }

    /// Offers a pooled allocation to an empty buffer: taken when it is at
    /// least the size the buffer's file needed last time, else given back.
    pub fn adopt(&mut self, data: Vec<u8>) -> Option<Vec<u8>> {
        if self.data.is_empty() && data.len() >= self.next {
            self.data = data;
            self.filled_up = false;
            return None;
        }
        Some(data)
    }

    /// Size of the next allocation an empty buffer makes (before the
    /// caller's `initial` floor and `max`); 0 before the first.
    pub fn next_size(&self) -> usize {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `file[at..]` into the buffer's room the way the executor does.
    fn read(b: &mut ReadBuf, file: &[u8]) -> bool {
        let check = b.check_window();
        let (exp, l) = b.expected(check);
        let at = b.read_pos() - l as u64;
        let room = b.room(check);
        let src = file.get(at as usize..).unwrap_or(&[]);
        let n = src.len().min(room.len());
        room[..n].copy_from_slice(&src[..n]);
        b.filled(check, &exp[..l], n)
    }

    #[test]
    fn reads_sends_and_checks_at_odd_capacities() {
        let file: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        for cap in [1, 2, 7, 255, 256, 257, 511, 1000] {
            let mut b = ReadBuf::default();
            let mut got = Vec::new();
            while (got.len() as u64) < file.len() as u64 {
                b.prepare(cap, cap * 4);
                assert!(read(&mut b, &file), "cap {cap}");
                let n = b.unsent().len();
                got.extend_from_slice(b.unsent());
                b.consume(n);
                assert_eq!(b.sent_pos(), got.len() as u64);
                if got.len() % 3 == 0 {
                    b.release();
                }
            }
            assert_eq!(got, file, "cap {cap}");
        }
    }

    #[test]
    fn rewritten_before_the_position_is_noticed_from_the_buffer_and_the_tail() {
        let mut file = b"line one\nline two\n".to_vec();
        let mut b = ReadBuf::default();
        b.prepare(64, 64);
        assert!(read(&mut b, &file));
        let n = b.unsent().len();
        b.consume(n);
        // Rewritten past the position with other bytes: the buffer notices.
        let rewritten = b"LINE ONE\nLINE TWO\nthree\n".to_vec();
        assert!(!read(&mut b, &rewritten));
        assert_eq!(b.read_pos(), file.len() as u64, "nothing taken");
        // After releasing the allocation, the saved tail notices too.
        b.release();
        b.prepare(64, 64);
        assert!(!read(&mut b, &rewritten));
        // An append is fine.
        file.extend_from_slice(b"three\n");
        b.release();
        b.prepare(64, 64);
        assert!(read(&mut b, &file));
        assert_eq!(b.unsent(), b"three\n");
    }

    #[test]
    fn a_buffer_that_started_at_an_offset_checks_the_bytes_it_has() {
        // Resumed at a server's offset: fewer than OVERLAP bytes before the
        // position are known, and those few are still checked.
        let mut file = vec![b'a'; 1000];
        let mut b = ReadBuf::default();
        b.reset(980);
        b.prepare(64, 64);
        assert!(read(&mut b, &file));
        assert_eq!(b.unsent().len(), 20);
        b.consume(20);
        file.truncate(0);
        file.extend(vec![b'z'; 1100]); // rewritten past the position
        assert!(!read(&mut b, &file));
        b.release();
        b.prepare(64, 64);
        assert!(!read(&mut b, &file), "the saved tail checks too");
    }

    #[test]
    fn a_shorter_file_fails_the_check() {
        let file = vec![b'x'; 300];
        let mut b = ReadBuf::default();
        b.prepare(1024, 1024);
        assert!(read(&mut b, &file));
        assert!(!read(&mut b, &file[..100]));
    }

    #[test]
    fn before_gives_the_bytes_a_copy_must_hold() {
        let file = b"abcdefgh".to_vec();
        let mut b = ReadBuf::default();
        b.prepare(16, 16);
        read(&mut b, &file);
        assert_eq!(b.before(8).as_deref(), Some(&b"abcdefgh"[..]));
        b.consume(8);
        b.release();
        assert_eq!(b.before(8).as_deref(), Some(&b"abcdefgh"[..]));
        assert_eq!(b.before(7), None);
    }

    #[test]
    fn reset_drops_everything_and_grows_while_behind() {
        let file = vec![b'a'; 4096];
        let mut b = ReadBuf::default();
        b.prepare(512, 2048);
        read(&mut b, &file);
        assert!(b.behind());
        b.prepare(512, 2048);
        assert_eq!(b.capacity(), 1024);
        b.reset(10);
        assert_eq!((b.sent_pos(), b.read_pos(), b.unsent().len()), (10, 10, 0));
    }

    /// Reads `file` to its end (growing while behind) and sends it all,
    /// then releases the allocation; returns the most capacity held.
    fn drain(b: &mut ReadBuf, file: &[u8], initial: usize, max: usize) -> usize {
        let mut most = 0;
        loop {
            b.prepare(initial, max);
            most = most.max(b.capacity());
            assert!(read(b, file));
            let n = b.unsent().len();
            b.consume(n);
            if !b.behind() {
                break;
            }
        }
        b.release();
        assert_eq!(b.capacity(), 0, "an idle buffer holds nothing");
        most
    }

    #[test]
    fn a_busy_file_keeps_its_size_and_a_quiet_one_shrinks_back() {
        let (initial, max) = (1024, 64 * 1024);
        let mut file = vec![b'a'; 300];
        let mut b = ReadBuf::default();
        // A line or two per look: the initial size, again and again.
        assert_eq!(drain(&mut b, &file, initial, max), initial);
        file.extend(vec![b'b'; 200]);
        assert_eq!(drain(&mut b, &file, initial, max), initial);
        // A burst: grows by doubling up to `max` while behind...
        file.extend(vec![b'c'; 500_000]);
        assert_eq!(drain(&mut b, &file, initial, max), max);
        assert_eq!(b.next_size(), max);
        // ...and the next look starts at that size at once.
        file.extend(vec![b'd'; 100_000]);
        b.prepare(initial, max);
        assert_eq!(b.capacity(), max);
        assert_eq!(drain(&mut b, &file, initial, max), max);
        // Quiet again: each look that uses at most a quarter halves it,
        // down to `initial` and no further.
        let mut sizes = Vec::new();
        for _ in 0..8 {
            file.extend(vec![b'e'; 100]);
            sizes.push(drain(&mut b, &file, initial, max));
        }
        assert_eq!(
            sizes,
            [
                max,
                max / 2,
                max / 4,
                max / 8,
                max / 16,
                max / 32,
                1024,
                1024
            ]
        );
        assert_eq!(b.read_pos(), file.len() as u64, "every byte read once");
    }

    #[test]
    fn a_half_used_buffer_keeps_its_size() {
        let mut b = ReadBuf::default();
        let mut file = vec![b'a'; 10_000];
        drain(&mut b, &file, 1024, 8192);
        assert_eq!(b.next_size(), 8192);
        // 3000 of 8192 bytes: more than a quarter, kept.
        file.extend(vec![b'b'; 3000 - 256]);
        drain(&mut b, &file, 1024, 8192);
        assert_eq!(b.next_size(), 8192);
        // A smaller `max` (a reload) caps the next allocation.
        b.prepare(1024, 4096);
        assert_eq!(b.capacity(), 4096);
    }

    #[test]
    fn adopt_takes_a_pooled_allocation_only_when_big_enough_and_empty() {
        let mut b = ReadBuf::default();
        assert_eq!(b.adopt(vec![0; 1024]), None, "a fresh buffer takes any");
        assert_eq!(b.capacity(), 1024);
        let file = vec![b'a'; 100];
        assert!(read(&mut b, &file));
        assert_eq!(
            b.adopt(vec![0; 1024]).map(|v| v.len()),
            Some(1024),
            "holds one"
        );
        drain(&mut b, &vec![b'a'; 20_000], 1024, 16 * 1024);
        assert_eq!(b.next_size(), 16 * 1024);
        assert!(b.adopt(vec![0; 1024]).is_some(), "its file needs more");
        assert_eq!(b.adopt(vec![0; 16 * 1024]), None);
        assert_eq!(b.capacity(), 16 * 1024);
    }
}
