//! One line at a time: names, label sets, values, timestamps and exemplars, borrowing from the input.
//!
//! The 0.0.4 grammar (as Go's `expfmt` reads it) allows blanks (spaces and tabs) between tokens and a trailing
//! comma in label sets; the OpenMetrics grammar allows exactly one space between tokens and nothing else. Both
//! share this cursor, which knows nothing about families.

use std::borrow::Cow;

use crate::error::{ErrorKind, excerpt};
use crate::limits::Limits;
use crate::model::{Exemplar, Format, Label};
use crate::number::{TimestampError, parse_openmetrics_timestamp, parse_text_timestamp, parse_value};

/// An error within a line: the byte offset in the line where it starts, and what it is.
#[derive(Debug)]
pub(crate) struct Fail {
    pub(crate) offset: usize,
    pub(crate) kind: ErrorKind,
}

impl Fail {
    pub(crate) fn at(offset: usize, kind: ErrorKind) -> Fail {
        Fail { offset, kind }
    }
}

/// A parsed sample line, before it is placed in a family.
#[derive(Debug)]
pub(crate) struct SampleLine<'a> {
    /// The whole line, for locating errors found after the line was read.
    pub(crate) line: &'a str,
    pub(crate) name: &'a str,
    pub(crate) labels: Vec<Label<'a>>,
    pub(crate) value: f64,
    pub(crate) timestamp_ms: Option<i64>,
    pub(crate) exemplar: Option<Box<Exemplar<'a>>>,
    /// Where the value token starts, for errors about the value.
    pub(crate) value_offset: usize,
    /// Where the exemplar starts, for errors about it.
    pub(crate) exemplar_offset: usize,
}

/// A position in one line (without its line ending).
pub(crate) struct Cursor<'a, 'l> {
    line: &'a str,
    pos: usize,
    limits: &'l Limits,
}

fn is_blank(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

const METRIC_START: u8 = 1;
const METRIC_CHAR: u8 = 2;
const LABEL_START: u8 = 4;
const LABEL_CHAR: u8 = 8;

/// Which name grammar each byte fits: one table lookup per byte instead of a chain of range tests, since name
/// scanning is most of the work on a typical exposition.
static NAME_CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut byte = 0;
    while byte < 256 {
        #[allow(clippy::cast_possible_truncation)] // `byte` < 256.
        let b = byte as u8;
        let letter = b.is_ascii_alphabetic() || b == b'_';
        let mut class = 0;
        if letter || b == b':' {
            class |= METRIC_START | METRIC_CHAR;
        }
        if b.is_ascii_digit() {
            class |= METRIC_CHAR | LABEL_CHAR;
        }
        if letter {
            class |= LABEL_START | LABEL_CHAR;
        }
        table[byte] = class;
        byte += 1;
    }
    table
};

fn is_metric_name_start(byte: u8) -> bool {
    NAME_CLASS[usize::from(byte)] & METRIC_START != 0
}

fn is_metric_name_char(byte: u8) -> bool {
    NAME_CLASS[usize::from(byte)] & METRIC_CHAR != 0
}

fn is_label_name_start(byte: u8) -> bool {
    NAME_CLASS[usize::from(byte)] & LABEL_START != 0
}

fn is_label_name_char(byte: u8) -> bool {
    NAME_CLASS[usize::from(byte)] & LABEL_CHAR != 0
}

impl<'a, 'l> Cursor<'a, 'l> {
    pub(crate) fn new(line: &'a str, limits: &'l Limits) -> Self {
        Cursor { line, pos: 0, limits }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.line.as_bytes().get(self.pos).copied()
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.line.len()
    }

    pub(crate) fn rest(&self) -> &'a str {
        &self.line[self.pos..]
    }

    /// Moves past `prefix` if the line continues with it.
    pub(crate) fn eat(&mut self, prefix: &str) -> bool {
        if self.rest().starts_with(prefix) {
            self.pos += prefix.len();
            true
        } else {
            false
        }
    }

    pub(crate) fn skip_blanks(&mut self) {
        let bytes = self.line.as_bytes();
        while self.pos < bytes.len() && is_blank(bytes[self.pos]) {
            self.pos += 1;
        }
    }

    /// Describes what is at the cursor, for "expected …, found …" errors.
    pub(crate) fn found(&self) -> String {
        match self.rest().chars().next() {
            None => "end of line".to_owned(),
            Some(next) => format!("{:?}", next.to_string()),
        }
    }

    pub(crate) fn unexpected(&self, expected: &'static str) -> Fail {
        Fail::at(self.pos, ErrorKind::Unexpected { expected, found: self.found() })
    }

    /// Requires `byte` at the cursor and moves past it.
    pub(crate) fn expect(&mut self, byte: u8, expected: &'static str) -> Result<(), Fail> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.unexpected(expected))
        }
    }

    /// Reads up to the next blank (0.0.4) or space (OpenMetrics), or the end of the line.
    pub(crate) fn token(&mut self, format: Format) -> &'a str {
        let start = self.pos;
        let bytes = self.line.as_bytes();
        while self.pos < bytes.len() {
            let byte = bytes[self.pos];
            if byte == b' ' || (format == Format::Text && byte == b'\t') {
                break;
            }
            self.pos += 1;
        }
        &self.line[start..self.pos]
    }

    /// The text from `start` to the next blank, `{`, or the end, for error messages about a bad token.
    fn token_from(&self, start: usize) -> String {
        let bytes = self.line.as_bytes();
        let mut end = start;
        while end < bytes.len() && !is_blank(bytes[end]) && bytes[end] != b'{' {
            end += 1;
        }
        excerpt(&self.line[start..end])
    }

    /// Reads a metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`), which must end at a blank, a `{` or the end of the line.
    pub(crate) fn metric_name(&mut self) -> Result<&'a str, Fail> {
        let start = self.pos;
        let bytes = self.line.as_bytes();
        match bytes.get(start) {
            Some(b'"') => return Err(Fail::at(start, ErrorKind::QuotedName)),
            Some(&byte) if is_metric_name_start(byte) => {}
            Some(&byte) if !is_blank(byte) && byte != b'{' => {
                return Err(Fail::at(start, ErrorKind::InvalidMetricName { name: self.token_from(start) }));
            }
            _ => return Err(self.unexpected("a metric name")),
        }
        let mut end = start + 1;
        while end < bytes.len() && is_metric_name_char(bytes[end]) {
            end += 1;
        }
        if end < bytes.len() && !is_blank(bytes[end]) && bytes[end] != b'{' {
            return Err(Fail::at(start, ErrorKind::InvalidMetricName { name: self.token_from(start) }));
        }
        if end - start > self.limits.max_name_bytes {
            return Err(Fail::at(start, ErrorKind::NameTooLong { limit: self.limits.max_name_bytes }));
        }
        self.pos = end;
        Ok(&self.line[start..end])
    }

    /// Reads a label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
    fn label_name(&mut self) -> Result<&'a str, Fail> {
        let start = self.pos;
        let bytes = self.line.as_bytes();
        let is_delimiter = |byte: u8| is_blank(byte) || matches!(byte, b'=' | b',' | b'}');
        match bytes.get(start) {
            Some(b'"') => return Err(Fail::at(start, ErrorKind::QuotedName)),
            Some(&byte) if is_label_name_start(byte) => {}
            Some(&byte) if !is_delimiter(byte) => {
                let mut end = start;
                while end < bytes.len() && !is_delimiter(bytes[end]) {
                    end += 1;
                }
                let name = excerpt(&self.line[start..end]);
                return Err(Fail::at(start, ErrorKind::InvalidLabelName { name }));
            }
            _ => return Err(self.unexpected("a label name")),
        }
        let mut end = start + 1;
        while end < bytes.len() && is_label_name_char(bytes[end]) {
            end += 1;
        }
        if end < bytes.len() && !is_delimiter(bytes[end]) {
            let mut token_end = end;
            while token_end < bytes.len() && !is_delimiter(bytes[token_end]) {
                token_end += 1;
            }
            let name = excerpt(&self.line[start..token_end]);
            return Err(Fail::at(start, ErrorKind::InvalidLabelName { name }));
        }
        if end - start > self.limits.max_name_bytes {
            return Err(Fail::at(start, ErrorKind::NameTooLong { limit: self.limits.max_name_bytes }));
        }
        let name = &self.line[start..end];
        if name == "__name__" {
            return Err(Fail::at(start, ErrorKind::ReservedLabelName { name: name.to_owned() }));
        }
        self.pos = end;
        Ok(name)
    }

    /// Reads a quoted label value at the cursor, unescaping `\\`, `\"` and `\n`; borrowed when it has no escapes.
    fn label_value(&mut self) -> Result<Cow<'a, str>, Fail> {
        let quote = self.pos;
        self.expect(b'"', "'\"' to open the label value")?;
        let start = self.pos;
        let bytes = self.line.as_bytes();
        let unterminated = || Fail::at(quote, ErrorKind::UnterminatedLabelValue);
        let special = |from: usize| bytes[from..].iter().position(|&b| b == b'"' || b == b'\\').map(|i| from + i);
        let mut stop = special(start).ok_or_else(unterminated)?;
        let value = if bytes[stop] == b'"' {
            Cow::Borrowed(&self.line[start..stop])
        } else {
            let mut owned = String::with_capacity(stop - start + 16);
            let mut segment = start;
            loop {
                owned.push_str(&self.line[segment..stop]);
                if bytes[stop] == b'"' {
                    break;
                }
                match bytes.get(stop + 1) {
                    Some(b'\\') => owned.push('\\'),
                    Some(b'"') => owned.push('"'),
                    Some(b'n') => owned.push('\n'),
                    Some(_) => {
                        let escaped = self.line[stop + 1..].chars().next().unwrap_or_default();
                        let sequence = format!("\\{escaped}");
                        return Err(Fail::at(stop, ErrorKind::InvalidEscape { sequence }));
                    }
                    None => return Err(unterminated()),
                }
                segment = stop + 2;
                stop = special(segment).ok_or_else(unterminated)?;
            }
            Cow::Owned(owned)
        };
        if stop - start > self.limits.max_label_value_bytes {
            return Err(Fail::at(start, ErrorKind::LabelValueTooLong { limit: self.limits.max_label_value_bytes }));
        }
        self.pos = stop + 1;
        Ok(value)
    }

    /// Reads a label set at the `{`. In 0.0.4, blanks may surround every token and a trailing comma is allowed; in
    /// OpenMetrics neither is.
    pub(crate) fn label_set(&mut self, format: Format, labels: &mut Vec<Label<'a>>) -> Result<(), Fail> {
        let lenient = format == Format::Text;
        let first = labels.len();
        self.expect(b'{', "'{'")?;
        if lenient {
            self.skip_blanks();
        }
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            let name_offset = self.pos;
            let name = self.label_name()?;
            if lenient {
                self.skip_blanks();
            }
            self.expect(b'=', "'=' after the label name")?;
            if lenient {
                self.skip_blanks();
            }
            let value = self.label_value()?;
            if labels.len() - first == self.limits.max_labels {
                return Err(Fail::at(name_offset, ErrorKind::TooManyLabels { limit: self.limits.max_labels }));
            }
            labels.push(Label { name: Cow::Borrowed(name), value });
            if lenient {
                self.skip_blanks();
            }
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    if lenient {
                        self.skip_blanks();
                        if self.peek() == Some(b'}') {
                            self.pos += 1;
                            break;
                        }
                    }
                }
                Some(b'}') => {
                    self.pos += 1;
                    break;
                }
                _ => return Err(self.unexpected("',' or '}' after the label value")),
            }
        }
        check_unique(self.line, &labels[first..])
    }

    /// Reads the value token and parses it.
    fn value(&mut self, format: Format) -> Result<(f64, usize), Fail> {
        let start = self.pos;
        let token = self.token(format);
        if token.is_empty() {
            return Err(Fail::at(start, ErrorKind::MissingValue));
        }
        match parse_value(token) {
            Some(value) => Ok((value, start)),
            None => Err(Fail::at(start, ErrorKind::InvalidValue { value: excerpt(token) })),
        }
    }

    /// Reads the timestamp token and parses it in the format's unit.
    fn timestamp(&mut self, format: Format) -> Result<i64, Fail> {
        let start = self.pos;
        let token = self.token(format);
        let parsed = match format {
            Format::Text => parse_text_timestamp(token),
            Format::OpenMetrics => parse_openmetrics_timestamp(token),
        };
        parsed.map_err(|error| {
            let timestamp = excerpt(token);
            let kind = match error {
                TimestampError::Invalid => ErrorKind::InvalidTimestamp { timestamp },
                TimestampError::OutOfRange => ErrorKind::TimestampOutOfRange { timestamp },
            };
            Fail::at(start, kind)
        })
    }

    fn trailing_text(&self) -> Fail {
        Fail::at(self.pos, ErrorKind::TrailingText { text: excerpt(self.rest()) })
    }

    /// Reads a 0.0.4 sample line: `name [{labels}] value [timestamp]`, blanks between tokens.
    pub(crate) fn text_sample(&mut self, labels: &mut Vec<Label<'a>>) -> Result<SampleLine<'a>, Fail> {
        self.skip_blanks();
        let name = self.metric_name()?;
        self.skip_blanks();
        if self.peek() == Some(b'{') {
            self.label_set(Format::Text, labels)?;
            self.skip_blanks();
        }
        let (value, value_offset) = self.value(Format::Text)?;
        self.skip_blanks();
        let mut timestamp_ms = None;
        if !self.at_end() {
            timestamp_ms = Some(self.timestamp(Format::Text)?);
            self.skip_blanks();
            if !self.at_end() {
                return Err(self.trailing_text());
            }
        }
        Ok(SampleLine {
            line: self.line,
            name,
            labels: take_exact(labels),
            value,
            timestamp_ms,
            exemplar: None,
            value_offset,
            exemplar_offset: 0,
        })
    }

    /// Reads an OpenMetrics sample line: `name[{labels}] value[ timestamp][ # {labels} value[ timestamp]]`.
    pub(crate) fn openmetrics_sample(&mut self, labels: &mut Vec<Label<'a>>) -> Result<SampleLine<'a>, Fail> {
        let name = self.metric_name()?;
        if self.peek() == Some(b'{') {
            self.label_set(Format::OpenMetrics, labels)?;
        }
        self.expect(b' ', "a space before the value")?;
        let (value, value_offset) = self.value(Format::OpenMetrics)?;
        let mut sample = SampleLine {
            line: self.line,
            name,
            labels: Vec::new(),
            value,
            timestamp_ms: None,
            exemplar: None,
            value_offset,
            exemplar_offset: 0,
        };
        if !self.at_end() {
            self.expect(b' ', "a space after the value")?;
            if self.peek() != Some(b'#') {
                if self.at_end() {
                    return Err(self.unexpected("a timestamp or an exemplar"));
                }
                sample.timestamp_ms = Some(self.timestamp(Format::OpenMetrics)?);
                if !self.at_end() {
                    self.expect(b' ', "a space after the timestamp")?;
                }
            }
            if !self.at_end() {
                sample.exemplar_offset = self.pos;
                sample.exemplar = Some(Box::new(self.exemplar(labels.len(), labels)?));
            }
        }
        sample.labels = take_exact(labels);
        Ok(sample)
    }

    /// Reads an exemplar at its `#`; its labels go to `scratch` after `first` and are moved out.
    fn exemplar(&mut self, first: usize, scratch: &mut Vec<Label<'a>>) -> Result<Exemplar<'a>, Fail> {
        let start = self.pos;
        if !self.eat("# ") {
            return Err(self.unexpected("\"# \" to start an exemplar"));
        }
        if self.peek() != Some(b'{') {
            return Err(self.unexpected("'{' to open the exemplar labels"));
        }
        self.label_set(Format::OpenMetrics, scratch)?;
        let n_chars: usize =
            scratch[first..].iter().map(|label| label.name.chars().count() + label.value.chars().count()).sum();
        if n_chars > 128 {
            return Err(Fail::at(start, ErrorKind::ExemplarTooLong));
        }
        self.expect(b' ', "a space before the exemplar value")?;
        let (value, _) = self.value(Format::OpenMetrics)?;
        let mut timestamp_ms = None;
        if !self.at_end() {
            self.expect(b' ', "a space after the exemplar value")?;
            timestamp_ms = Some(self.timestamp(Format::OpenMetrics)?);
            if !self.at_end() {
                return Err(self.trailing_text());
            }
        }
        Ok(Exemplar { labels: scratch.drain(first..).collect(), value, timestamp_ms })
    }
}

/// Moves the labels out of the reused scratch vector into one allocation of exactly their number: the scratch keeps
/// its capacity for the next line, and the sample holds no spare capacity (`mem::take` would do the opposite).
#[allow(clippy::drain_collect)]
fn take_exact<'a>(scratch: &mut Vec<Label<'a>>) -> Vec<Label<'a>> {
    scratch.drain(..).collect()
}

/// The byte offset of `part` in `line`, when `part` is a slice of it (names and borrowed values are), else 0.
pub(crate) fn offset_in(line: &str, part: &str) -> usize {
    let offset = (part.as_ptr() as usize).wrapping_sub(line.as_ptr() as usize);
    if offset <= line.len() { offset } else { 0 }
}

/// Rejects a label set that names a label twice. Small sets compare pairwise; larger ones sort a copy of the names
/// so that a line with many labels costs `O(n log n)`, not `O(n²)`.
fn check_unique(line: &str, labels: &[Label<'_>]) -> Result<(), Fail> {
    let duplicate = |name: &str| Fail::at(offset_in(line, name), ErrorKind::DuplicateLabel { name: excerpt(name) });
    if labels.len() <= 8 {
        for (index, label) in labels.iter().enumerate() {
            if labels[..index].iter().any(|earlier| earlier.name == label.name) {
                return Err(duplicate(&label.name));
            }
        }
        return Ok(());
    }
    let mut names: Vec<&str> = labels.iter().map(|label| label.name.as_ref()).collect();
    names.sort_unstable();
    match names.windows(2).find(|pair| pair[0] == pair[1]) {
        Some(pair) => {
            // Report the second occurrence in input order, as the small-set path does.
            let second = labels.iter().filter(|label| label.name == pair[0]).nth(1).map(|label| label.name.as_ref());
            Err(duplicate(second.unwrap_or(pair[0])))
        }
        None => Ok(()),
    }
}

/// Unescapes a `# HELP` text: `\\` and `\n` in both formats, `\"` too in OpenMetrics. Other backslashes are kept
/// as written (a malformed HELP is not worth rejecting a scrape for).
pub(crate) fn unescape_help(text: &str, format: Format) -> Cow<'_, str> {
    if !text.contains('\\') {
        return Cow::Borrowed(text);
    }
    let mut owned = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(next) = chars.next() {
        if next != '\\' {
            owned.push(next);
            continue;
        }
        match chars.clone().next() {
            Some('\\') => owned.push('\\'),
            Some('n') => owned.push('\n'),
            Some('"') if format == Format::OpenMetrics => owned.push('"'),
            _ => {
                owned.push('\\');
                continue;
            }
        }
        chars.next();
    }
    Cow::Owned(owned)
}
