//! What the targets in `fuzz_targets/` share.

/// True when `part` lies inside `whole` (same memory): a parser's answer borrows the input
/// rather than some other buffer.
pub fn within(part: &[u8], whole: &[u8]) -> bool {
    let start = whole.as_ptr() as usize;
    let at = part.as_ptr() as usize;
    at >= start && at + part.len() <= start + whole.len()
}

/// True when `text` is one line of printable text (what a 400 body or a close reason may hold).
pub fn one_printable_line(text: &str) -> bool {
    !text.chars().any(char::is_control)
}
