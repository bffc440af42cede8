//! The batch publish body of `POST /send`.

/// Split a batch body into messages: one per line, `<id> <message>`.
///
/// The id runs to the first space; the message is the rest of the line (may be
/// empty, never contains LF). A trailing CR is stripped, a last line without LF
/// counts, empty lines are skipped. Items are `Ok((line_number, id, message))`
/// with lines numbered from 1, or `Err(line_number)` for a line without a space.
/// The id bytes are not checked here: the caller parses them
/// (`router::parse_id`). Iteration goes on after an error; stopping is the
/// caller's choice.
pub fn batch_lines(body: &[u8]) -> BatchLines<'_> {
    BatchLines {
        rest: body,
        line_number: 0,
    }
}

/// The iterator [`batch_lines`] returns.
#[derive(Clone, Debug)]
pub struct BatchLines<'a> {
    rest: &'a [u8],
    /// Number of the last line returned or skipped.
    line_number: usize,
}

impl<'a> Iterator for BatchLines<'a> {
    type Item = Result<(usize, &'a [u8], &'a [u8]), usize>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.rest.is_empty() {
            let (line, rest) = match memchr::memchr(b'\n', self.rest) {
                Some(end) => (&self.rest[..end], &self.rest[end + 1..]),
                None => (self.rest, &[][..]),
            };
            self.rest = rest;
            self.line_number += 1;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            return Some(match memchr::memchr(b' ', line) {
                Some(space) => Ok((self.line_number, &line[..space], &line[space + 1..])),
                None => Err(self.line_number),
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Line<'a> = Result<(usize, &'a [u8], &'a [u8]), usize>;

    fn lines(body: &[u8]) -> Vec<Line<'_>> {
        batch_lines(body).collect()
    }

    #[test]
    fn splits_lines() {
        assert_eq!(
            lines(b"1 hello\n2 two words\r\n\n3 \n\r\n4 last"),
            vec![
                Ok((1, &b"1"[..], &b"hello"[..])),
                Ok((2, &b"2"[..], &b"two words"[..])),
                Ok((4, &b"3"[..], &b""[..])),
                Ok((6, &b"4"[..], &b"last"[..])),
            ]
        );
    }

    #[test]
    fn message_keeps_inner_spaces_and_cr() {
        assert_eq!(
            lines(b"7  a \rb \r\r\n"),
            vec![Ok((1, &b"7"[..], &b" a \rb \r"[..]))]
        );
    }

    #[test]
    fn empty_bodies() {
        assert!(lines(b"").is_empty());
        assert!(lines(b"\n\r\n\n").is_empty());
    }

    #[test]
    fn line_without_space_is_an_error_with_its_number() {
        assert_eq!(
            lines(b"1 a\n\nnospace\r\n2 b"),
            vec![
                Ok((1, &b"1"[..], &b"a"[..])),
                Err(3),
                Ok((4, &b"2"[..], &b"b"[..]))
            ]
        );
    }

    #[test]
    fn empty_id_is_for_the_caller() {
        assert_eq!(lines(b" msg"), vec![Ok((1, &b""[..], &b"msg"[..]))]);
    }
}
