//! Prometheus text exposition format 0.0.4 and OpenMetrics 1.0 text parser, and a 0.0.4 encoder; pure, no IO.
#![doc = include_str!("../README.md")]

mod encode;
mod error;
mod limits;
mod line;
mod model;
mod number;
mod parser;

pub use encode::{encode, encode_into};
pub use error::{Descriptor, ErrorKind, ParseError};
pub use limits::Limits;
pub use model::{Exemplar, Format, Label, MetricFamily, MetricKind, Sample};

/// Parses an exposition in `format` with the default [`Limits`].
///
/// The families come out in the order they first appear, each with its samples in input order; names, and label
/// values without escapes, borrow from `input`. The first error rejects the whole exposition.
pub fn parse(input: &str, format: Format) -> Result<Vec<MetricFamily<'_>>, ParseError> {
    parser::parse(input, format, &Limits::DEFAULT)
}

/// Parses an exposition in `format` within `limits` (see [`parse`]).
pub fn parse_with_limits<'a>(
    input: &'a str,
    format: Format,
    limits: &Limits,
) -> Result<Vec<MetricFamily<'a>>, ParseError> {
    parser::parse(input, format, limits)
}

/// Parses a scrape body as it came off the wire: the bytes must be UTF-8 (checked as a whole first, the error
/// located at the first invalid byte), then as [`parse_with_limits`].
pub fn parse_bytes<'a>(input: &'a [u8], format: Format, limits: &Limits) -> Result<Vec<MetricFamily<'a>>, ParseError> {
    match std::str::from_utf8(input) {
        Ok(text) => parser::parse(text, format, limits),
        Err(error) => {
            let valid = &input[..error.valid_up_to()];
            let line_start = valid.iter().rposition(|&byte| byte == b'\n').map_or(0, |newline| newline + 1);
            let line = valid.iter().filter(|&&byte| byte == b'\n').count() + 1;
            // The valid prefix is UTF-8, so counting the bytes that start a character counts characters.
            let column = valid[line_start..].iter().filter(|&&byte| (byte & 0xC0) != 0x80).count() + 1;
            Err(ParseError { line, column, kind: ErrorKind::InvalidUtf8 })
        }
    }
}

/// Every sample of `families` with its family, in order: the flat view a scraper stores.
pub fn samples<'f, 'a>(
    families: &'f [MetricFamily<'a>],
) -> impl Iterator<Item = (&'f MetricFamily<'a>, &'f Sample<'a>)> + 'f {
    families.iter().flat_map(|family| family.samples.iter().map(move |sample| (family, sample)))
}
