//! Bounded-memory line splitting for the file sources.
//!
//! [`LineReader`] hands out one physical line at a time (`\n`-terminated, a
//! trailing `\r` removed) and never holds more than `limit` bytes of a single
//! line, however long that line is: the rest of an oversize line is read and
//! dropped, and only its length is reported. This is what lets a source promise
//! bounded memory on hostile input (a multi-gigabyte file with no newline).
//!
//! It also counts the bytes of the lines it has handed out (terminators
//! included), which is the byte offset a reader resumes from: the inner
//! reader's buffer may hold more, but those bytes belong to no line yet.

use std::io::{self, BufRead};

/// What [`LineReader::read_line`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LineInfo {
    /// Length of the line in bytes, without the terminator.
    pub len: usize,
    /// The line was longer than the limit; only its first `limit` bytes were kept.
    pub truncated: bool,
}

pub(crate) struct LineReader<R> {
    inner: R,
    /// Offset in the input just past the last line handed out.
    offset: u64,
}

impl<R: BufRead> LineReader<R> {
    /// Lines of `inner`, which stands at byte `offset` of its input (0 for
    /// a file read from the start, the resumed position after a seek).
    pub(crate) fn new(inner: R, offset: u64) -> Self {
        LineReader { inner, offset }
    }

    /// Byte offset just past the last line [`LineReader::read_line`] returned.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Appends the next line (at most `limit` bytes of it) to `out`.
    /// Returns `None` at end of input. A last line without `\n` still counts.
    pub(crate) fn read_line(
        &mut self,
        out: &mut Vec<u8>,
        limit: usize,
    ) -> io::Result<Option<LineInfo>> {
        let start = out.len();
        let mut total = 0usize;
        let mut seen_any = false;
        let mut last_byte = None;
        loop {
            let avail = match self.inner.fill_buf() {
                Ok(buf) => buf,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if avail.is_empty() {
                if !seen_any {
                    return Ok(None);
                }
                break;
            }
            seen_any = true;
            let (piece_len, consumed, ends_line) = match avail.iter().position(|&b| b == b'\n') {
                Some(i) => (i, i + 1, true),
                None => (avail.len(), avail.len(), false),
            };
            let piece = &avail[..piece_len];
            if let Some(&b) = piece.last() {
                last_byte = Some(b);
            }
            // Keep at most `limit` bytes of the line; count the rest.
            let room = limit.saturating_sub(total);
            out.extend_from_slice(&piece[..piece.len().min(room)]);
            total = total.saturating_add(piece_len);
            self.inner.consume(consumed);
            self.offset += consumed as u64;
            if ends_line {
                break;
            }
        }
        if last_byte == Some(b'\r') {
            // Windows line ending: the `\r` is part of the terminator, not the record.
            total -= 1;
            out.truncate(start + total.min(limit));
        }
        Ok(Some(LineInfo {
            len: total,
            truncated: total > limit,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], cap: usize, limit: usize) -> Vec<(Vec<u8>, LineInfo)> {
        let mut reader = LineReader::new(io::BufReader::with_capacity(cap, input), 0);
        let mut out = Vec::new();
        loop {
            let mut buf = Vec::new();
            match reader.read_line(&mut buf, limit).expect("in-memory read") {
                Some(info) => out.push((buf, info)),
                None => return out,
            }
        }
    }

    #[test]
    fn splits_lines_strips_cr_and_keeps_last_unterminated_line() {
        for cap in [1, 2, 3, 64] {
            let got = lines(b"ab\r\n\ncd\nlast", cap, 100);
            let texts: Vec<&[u8]> = got.iter().map(|(b, _)| b.as_slice()).collect();
            assert_eq!(
                texts,
                vec![&b"ab"[..], b"", b"cd", b"last"],
                "buffer capacity {cap}"
            );
            assert!(got.iter().all(|(_, i)| !i.truncated));
        }
    }

    #[test]
    fn oversize_line_is_truncated_but_measured() {
        for cap in [1, 4, 64] {
            let got = lines(b"0123456789\r\nok\n", cap, 4);
            assert_eq!(got[0].0, b"0123");
            assert_eq!(
                got[0].1,
                LineInfo {
                    len: 10,
                    truncated: true
                }
            );
            assert_eq!(got[1].0, b"ok");
            assert_eq!(
                got[1].1,
                LineInfo {
                    len: 2,
                    truncated: false
                }
            );
            assert_eq!(got.len(), 2);
        }
    }

    #[test]
    fn line_exactly_at_limit_is_not_truncated() {
        let got = lines(b"abcd\r\nabcde\n", 3, 4);
        assert_eq!(got[0].0, b"abcd");
        assert!(!got[0].1.truncated);
        assert_eq!(
            got[1].1,
            LineInfo {
                len: 5,
                truncated: true
            }
        );
    }

    #[test]
    fn offset_is_just_past_the_last_line_returned() {
        let input = b"ab\r\n0123456789\nlast";
        for cap in [1, 3, 64] {
            let mut reader = LineReader::new(io::BufReader::with_capacity(cap, &input[..]), 7);
            let mut offsets = Vec::new();
            let mut buf = Vec::new();
            while reader
                .read_line(&mut buf, 4)
                .expect("in-memory read")
                .is_some()
            {
                offsets.push(reader.offset());
            }
            assert_eq!(
                offsets,
                vec![7 + 4, 7 + 15, 7 + 19],
                "buffer capacity {cap}"
            );
        }
    }

    #[test]
    fn empty_input_has_no_lines() {
        assert!(lines(b"", 8, 8).is_empty());
        assert_eq!(lines(b"\n", 8, 8).len(), 1);
    }
}
