//! The Prometheus text format (0.0.4) writer: the one place that knows its syntax.

use std::fmt::{self, Display, Write as _};
use std::io::Write as _;

/// A family's type, as `# TYPE` writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A sample value as the text format writes it.
pub trait Value {
    fn write_to(&self, out: &mut Vec<u8>);
}

impl Value for u64 {
    fn write_to(&self, out: &mut Vec<u8>) {
        let _ = write!(out, "{self}");
    }
}

impl Value for f64 {
    fn write_to(&self, out: &mut Vec<u8>) {
        // Rust's `inf`/`NaN` are not the format's spellings; finite values print exactly
        // (shortest round-trip decimal, no exponent).
        if self.is_nan() {
            out.extend_from_slice(b"NaN");
        } else if self.is_infinite() {
            out.extend_from_slice(if *self > 0.0 { b"+Inf" } else { b"-Inf" });
        } else {
            let _ = write!(out, "{self}");
        }
    }
}

/// The Prometheus text format writer, appending to a response body: `family` (its `# HELP`
/// and `# TYPE`), then its samples. Names and label names are comet's own constants (checked
/// in debug builds); help text and label values are escaped. Label values are anything
/// `Display` (a worker's index, a reason's name), formatted as they are escaped: nothing is
/// allocated but the body's growth.
pub struct Text<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Text<'a> {
    pub fn new(out: &'a mut Vec<u8>) -> Text<'a> {
        Text { out }
    }

    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        debug_assert!(valid_name(name), "{name}");
        let _ = write!(self.out, "# HELP {name} ");
        let _ = fmt::Write::write_str(&mut Escape::help(self.out), help);
        let _ = writeln!(self.out, "\n# TYPE {name} {}", kind.as_str());
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &dyn Display)], value: impl Value) {
        self.series(name, "", labels, value);
    }

    /// A family with one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: impl Value) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// A histogram without labels: `counts` holds the observations per bucket, not cumulative,
    /// one per bound and a last one above every bound; written cumulative with `+Inf`, then
    /// `_sum` and `_count`.
    pub fn histogram(&mut self, name: &str, help: &str, bounds: &[f64], counts: &[u64], sum: f64) {
        assert_eq!(
            counts.len(),
            bounds.len() + 1,
            "one count per bucket and +Inf"
        );
        self.family(name, Kind::Histogram, help);
        let mut cumulative = 0;
        for (i, count) in counts.iter().enumerate() {
            cumulative += count;
            let le = Le(bounds.get(i).copied().unwrap_or(f64::INFINITY));
            self.series(name, "_bucket", &[("le", &le)], cumulative);
        }
        self.series(name, "_sum", &[], sum);
        self.series(name, "_count", &[], cumulative);
    }

    /// `<name><suffix>{<label>="<value>",...} <value>`.
    fn series(
        &mut self,
        name: &str,
        suffix: &str,
        labels: &[(&str, &dyn Display)],
        value: impl Value,
    ) {
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(suffix.as_bytes());
        for (i, (label, v)) in labels.iter().enumerate() {
            debug_assert!(valid_name(label) && !label.starts_with("__"), "{label}");
            self.out.push(if i == 0 { b'{' } else { b',' });
            self.out.extend_from_slice(label.as_bytes());
            self.out.extend_from_slice(b"=\"");
            let _ = write!(Escape::label(self.out), "{v}");
            self.out.push(b'"');
        }
        if !labels.is_empty() {
            self.out.push(b'}');
        }
        self.out.push(b' ');
        value.write_to(self.out);
        self.out.push(b'\n');
    }
}

/// A bucket's `le` label: its bound as a sample value is written (`+Inf` for the last).
struct Le(f64);

impl Display for Le {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_infinite() {
            f.write_str("+Inf")
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// Appends text escaped as the format asks: `\\` and newline in help text; those and `"` in
/// label values.
struct Escape<'a> {
    out: &'a mut Vec<u8>,
    quote: bool,
}

impl<'a> Escape<'a> {
    fn help(out: &'a mut Vec<u8>) -> Escape<'a> {
        Escape { out, quote: false }
    }
    fn label(out: &'a mut Vec<u8>) -> Escape<'a> {
        Escape { out, quote: true }
    }
}

impl fmt::Write for Escape<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Byte by byte: no byte of a multi-byte UTF-8 character is ASCII.
        for &b in s.as_bytes() {
            match b {
                b'\\' => self.out.extend_from_slice(b"\\\\"),
                b'\n' => self.out.extend_from_slice(b"\\n"),
                b'"' if self.quote => self.out.extend_from_slice(b"\\\""),
                b => self.out.push(b),
            }
        }
        Ok(())
    }
}

/// A metric or label name: `[a-zA-Z_:][a-zA-Z0-9_:]*` (colons are for recording rules, but
/// legal).
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_writes_the_text_format() {
        let mut out = b"(earlier body) ".to_vec();
        let mut t = Text::new(&mut out);
        t.family(
            "demo_requests_total",
            Kind::Counter,
            "Requests.\nA back\\slash.",
        );
        t.sample("demo_requests_total", &[("path", &"/a\"b\\c\nd é")], 3u64);
        t.sample(
            "demo_requests_total",
            &[("worker", &0), ("reason", &"eof")],
            0u64,
        );
        t.single("demo_up", Kind::Gauge, "Up.", 1u64);
        t.single("demo_seconds", Kind::Gauge, "A float.", 0.25f64);
        t.histogram(
            "demo_latency_seconds",
            "Latency.",
            &[0.00001, 0.5, 1.0],
            &[2, 0, 3, 1],
            1.75,
        );
        let expected = r#"(earlier body) # HELP demo_requests_total Requests.\nA back\\slash.
# TYPE demo_requests_total counter
demo_requests_total{path="/a\"b\\c\nd é"} 3
demo_requests_total{worker="0",reason="eof"} 0
# HELP demo_up Up.
# TYPE demo_up gauge
demo_up 1
# HELP demo_seconds A float.
# TYPE demo_seconds gauge
demo_seconds 0.25
# HELP demo_latency_seconds Latency.
# TYPE demo_latency_seconds histogram
demo_latency_seconds_bucket{le="0.00001"} 2
demo_latency_seconds_bucket{le="0.5"} 2
demo_latency_seconds_bucket{le="1"} 5
demo_latency_seconds_bucket{le="+Inf"} 6
demo_latency_seconds_sum 1.75
demo_latency_seconds_count 6
"#;
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn special_floats() {
        let mut s = Vec::new();
        for v in [
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            1e-5,
            2.5e-5,
            1e6,
        ] {
            v.write_to(&mut s);
            s.push(b' ');
        }
        assert_eq!(s, b"+Inf -Inf NaN 0.00001 0.000025 1000000 ");
    }

    #[test]
    fn names() {
        for ok in ["a", "comet_x_total", "_x", "a:b", "A9"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "9a", "a-b", "a b", "é"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
