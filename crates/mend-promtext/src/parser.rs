//! The line loop and family assembly: which family each line belongs to, and the rules each format puts on it.
//!
//! 0.0.4 follows Go's `expfmt`: a sample joins the family of its exact name, else the summary or histogram its
//! `_sum`/`_count`/`_bucket` suffix points to, else a new untyped family; families may come back after others.
//! OpenMetrics follows its specification: families are contiguous, their names and sample names never clash, and
//! the values of typed samples obey their type (no negative counters, quantiles in 0..1, …).

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use crate::error::{Descriptor, ErrorKind, ParseError, excerpt};
use crate::limits::Limits;
use crate::line::{Cursor, Fail, SampleLine, offset_in, unescape_help};
use crate::model::{Format, Label, MetricFamily, MetricKind, Sample, Suffix};

const TEXT_TYPES: &str = "counter, gauge, histogram, summary or untyped";
const OPENMETRICS_TYPES: &str = "counter, gauge, histogram, gaugehistogram, summary, stateset, info or unknown";
/// The suffixes that can attach a 0.0.4 sample to a summary or histogram family.
const TEXT_SUFFIXES: [Suffix; 3] = [Suffix::Bucket, Suffix::Sum, Suffix::Count];

/// Parses `input` in `format`, rejecting the whole exposition at the first error.
pub(crate) fn parse<'a>(input: &'a str, format: Format, limits: &Limits) -> Result<Vec<MetricFamily<'a>>, ParseError> {
    let mut builder = Builder::new(format, limits);
    // Real expositions spend about 200 bytes per family (HELP, TYPE, a few samples): size the name index once.
    builder.by_name.reserve((input.len() / 200).min(limits.max_families));
    let mut line_number = 0;
    let mut rest = input;
    while !rest.is_empty() {
        let (raw, next) = match rest.find('\n') {
            Some(end) => (&rest[..end], &rest[end + 1..]),
            None => (rest, ""),
        };
        line_number += 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let outcome = if line.len() > limits.max_line_bytes {
            Err(Fail::at(limits.max_line_bytes, ErrorKind::LineTooLong { limit: limits.max_line_bytes }))
        } else {
            builder.line(line)
        };
        if let Err(fail) = outcome {
            return Err(locate(fail, line_number, line));
        }
        rest = next;
    }
    if format == Format::OpenMetrics && !builder.eof {
        return Err(ParseError { line: line_number + 1, column: 1, kind: ErrorKind::MissingEof });
    }
    Ok(builder.families)
}

/// Turns a byte offset within a line into a 1-based character column.
fn locate(fail: Fail, line: usize, text: &str) -> ParseError {
    let column = text.char_indices().take_while(|(index, _)| *index < fail.offset).count() + 1;
    ParseError { line, column, kind: fail.kind }
}

/// What a family has declared so far.
#[derive(Debug, Default, Clone, Copy)]
struct Declared {
    kind: bool,
    help: bool,
    unit: bool,
}

impl Declared {
    fn has(self, descriptor: Descriptor) -> bool {
        match descriptor {
            Descriptor::Help => self.help,
            Descriptor::Type => self.kind,
            Descriptor::Unit => self.unit,
        }
    }
}

struct Builder<'a, 'l> {
    format: Format,
    limits: &'l Limits,
    families: Vec<MetricFamily<'a>>,
    declared: Vec<Declared>,
    by_name: HashMap<&'a str, usize>,
    /// The family of the previous line, tried first.
    current: Option<usize>,
    /// How many family names end like a summary or histogram sample; while none does, a sample with such a suffix
    /// cannot have a family of its exact name and the current family can take it without a map lookup.
    n_suffixed_names: usize,
    n_samples: usize,
    eof: bool,
    /// Reused for the labels of each line.
    labels: Vec<Label<'a>>,
    /// Reused for names built in clash checks.
    scratch: String,
}

impl<'a, 'l> Builder<'a, 'l> {
    fn new(format: Format, limits: &'l Limits) -> Self {
        Builder {
            format,
            limits,
            families: Vec::new(),
            declared: Vec::new(),
            by_name: HashMap::new(),
            current: None,
            n_suffixed_names: 0,
            n_samples: 0,
            eof: false,
            labels: Vec::new(),
            scratch: String::new(),
        }
    }

    fn line(&mut self, line: &'a str) -> Result<(), Fail> {
        match self.format {
            Format::Text => self.text_line(line),
            Format::OpenMetrics => self.openmetrics_line(line),
        }
    }

    fn new_family(&mut self, name: &'a str, kind: MetricKind, offset: usize) -> Result<usize, Fail> {
        let index = self.push_family(name, kind, offset)?;
        self.by_name.insert(name, index);
        Ok(index)
    }

    /// Appends a family and makes it current, without indexing its name.
    fn push_family(&mut self, name: &'a str, kind: MetricKind, offset: usize) -> Result<usize, Fail> {
        if self.families.len() == self.limits.max_families {
            return Err(Fail::at(offset, ErrorKind::TooManyFamilies { limit: self.limits.max_families }));
        }
        let index = self.families.len();
        self.families.push(MetricFamily { name: name.into(), help: None, unit: None, kind, samples: Vec::new() });
        self.declared.push(Declared::default());
        if TEXT_SUFFIXES.iter().any(|suffix| name.ends_with(suffix.as_str())) {
            self.n_suffixed_names += 1;
        }
        self.current = Some(index);
        Ok(index)
    }

    fn push_sample(&mut self, family: usize, sample: SampleLine<'a>) -> Result<(), Fail> {
        if self.n_samples == self.limits.max_samples {
            return Err(Fail::at(0, ErrorKind::TooManySamples { limit: self.limits.max_samples }));
        }
        self.n_samples += 1;
        self.families[family].samples.push(Sample {
            name: sample.name.into(),
            labels: sample.labels,
            value: sample.value,
            timestamp_ms: sample.timestamp_ms,
            exemplar: sample.exemplar,
        });
        Ok(())
    }

    // ---- 0.0.4 ----

    fn text_line(&mut self, line: &'a str) -> Result<(), Fail> {
        let mut cursor = Cursor::new(line, self.limits);
        cursor.skip_blanks();
        match cursor.peek() {
            None => Ok(()),
            Some(b'#') => self.text_comment(cursor),
            Some(_) => {
                let mut labels = std::mem::take(&mut self.labels);
                let parsed = cursor.text_sample(&mut labels);
                self.labels = labels;
                self.text_sample(parsed?)
            }
        }
    }

    /// `# HELP`, `# TYPE`, `# EOF` (refused) or a plain comment. `# HELP` or `# TYPE` with nothing after it is a
    /// comment, as in Go's parser.
    fn text_comment(&mut self, mut cursor: Cursor<'a, '_>) -> Result<(), Fail> {
        let hash_offset = cursor.pos();
        cursor.expect(b'#', "'#'")?;
        cursor.skip_blanks();
        let keyword = cursor.token(Format::Text);
        cursor.skip_blanks();
        let descriptor = match keyword {
            "HELP" => Descriptor::Help,
            "TYPE" => Descriptor::Type,
            "EOF" if cursor.at_end() => return Err(Fail::at(hash_offset, ErrorKind::EofInText)),
            _ => return Ok(()),
        };
        if cursor.at_end() {
            return Ok(());
        }
        let name_offset = cursor.pos();
        let name = cursor.metric_name()?;
        if !cursor.at_end() {
            if cursor.peek() == Some(b'{') {
                return Err(cursor.unexpected("a blank after the metric name"));
            }
            cursor.skip_blanks();
        }
        match descriptor {
            Descriptor::Help => {
                let help = unescape_help(cursor.rest(), Format::Text);
                let index = self.text_family_for_descriptor(name, Descriptor::Help, name_offset)?;
                self.families[index].help = Some(help);
                self.declared[index].help = true;
            }
            Descriptor::Type => {
                let kind_offset = cursor.pos();
                if cursor.at_end() {
                    return Err(Fail::at(kind_offset, ErrorKind::IncompleteDescriptor { descriptor }));
                }
                let token = cursor.token(Format::Text);
                let kind = text_kind(token).ok_or_else(|| {
                    Fail::at(kind_offset, ErrorKind::UnknownType { kind: excerpt(token), expected: TEXT_TYPES })
                })?;
                cursor.skip_blanks();
                if !cursor.at_end() {
                    return Err(Fail::at(cursor.pos(), ErrorKind::TrailingText { text: excerpt(cursor.rest()) }));
                }
                let index = self.text_family_for_descriptor(name, Descriptor::Type, name_offset)?;
                self.families[index].kind = kind;
                self.declared[index].kind = true;
            }
            Descriptor::Unit => {}
        }
        Ok(())
    }

    /// The family a 0.0.4 descriptor line describes: the one of that exact name, or a new one.
    fn text_family_for_descriptor(
        &mut self,
        name: &'a str,
        descriptor: Descriptor,
        offset: usize,
    ) -> Result<usize, Fail> {
        // HELP and TYPE of one family usually follow each other: try the current family before hashing the name.
        let index = match self.current {
            Some(index) if self.families[index].name == name => index,
            _ => {
                let next = self.families.len();
                match self.by_name.entry(name) {
                    Entry::Occupied(entry) => *entry.get(),
                    Entry::Vacant(entry) => {
                        // One hash for a new family: the vacant entry is filled, not looked up again.
                        if next == self.limits.max_families {
                            let kind = ErrorKind::TooManyFamilies { limit: self.limits.max_families };
                            return Err(Fail::at(offset, kind));
                        }
                        entry.insert(next);
                        return self.push_family(name, MetricKind::Unknown, offset);
                    }
                }
            }
        };
        if self.declared[index].has(descriptor) {
            return Err(Fail::at(offset, ErrorKind::DuplicateDescriptor { descriptor, name: name.to_owned() }));
        }
        // Go's parser takes a HELP after the samples, but a TYPE would retype samples already read.
        if descriptor == Descriptor::Type && !self.families[index].samples.is_empty() {
            return Err(Fail::at(offset, ErrorKind::DescriptorAfterSamples { descriptor, name: name.to_owned() }));
        }
        self.current = Some(index);
        Ok(index)
    }

    fn text_sample(&mut self, sample: SampleLine<'a>) -> Result<(), Fail> {
        let (index, suffix) = self.text_family_for_sample(sample.name, offset_in(sample.line, sample.name))?;
        match (self.families[index].kind, suffix) {
            (MetricKind::Histogram, Suffix::Bucket) => check_bound(&sample, "le", false)?,
            (MetricKind::Summary, Suffix::Bare) => check_bound(&sample, "quantile", false)?,
            _ => {}
        }
        self.push_sample(index, sample)
    }

    /// The family a 0.0.4 sample joins, and the suffix of its name in that family.
    fn text_family_for_sample(&mut self, name: &'a str, offset: usize) -> Result<(usize, Suffix), Fail> {
        if let Some(index) = self.current {
            let family = &self.families[index];
            match family.kind.suffix_of(Format::Text, &family.name, name) {
                Some(Suffix::Bare) => return Ok((index, Suffix::Bare)),
                // A family of the sample's exact name, if there is one, takes it instead.
                Some(suffix) if self.n_suffixed_names == 0 || !self.by_name.contains_key(name) => {
                    return Ok((index, suffix));
                }
                _ => {}
            }
        }
        if let Some(&index) = self.by_name.get(name) {
            let family = &self.families[index];
            let Some(suffix) = family.kind.suffix_of(Format::Text, &family.name, name) else {
                return Err(not_in_family(name, offset, family, Format::Text));
            };
            self.current = Some(index);
            return Ok((index, suffix));
        }
        for suffix in TEXT_SUFFIXES {
            let Some(base) = name.strip_suffix(suffix.as_str()) else { continue };
            let Some(&index) = self.by_name.get(base) else { continue };
            if let Some(suffix) = self.families[index].kind.suffix_of(Format::Text, base, name) {
                self.current = Some(index);
                return Ok((index, suffix));
            }
        }
        Ok((self.new_family(name, MetricKind::Unknown, offset)?, Suffix::Bare))
    }

    // ---- OpenMetrics ----

    fn openmetrics_line(&mut self, line: &'a str) -> Result<(), Fail> {
        if self.eof {
            return Err(Fail::at(0, ErrorKind::TextAfterEof));
        }
        if line.is_empty() {
            return Err(Fail::at(0, ErrorKind::EmptyLine));
        }
        if !line.starts_with('#') {
            let mut labels = std::mem::take(&mut self.labels);
            let parsed = Cursor::new(line, self.limits).openmetrics_sample(&mut labels);
            self.labels = labels;
            return self.openmetrics_sample(parsed?);
        }
        if line == "# EOF" {
            self.eof = true;
            return Ok(());
        }
        let mut cursor = Cursor::new(line, self.limits);
        let descriptor = if cursor.eat("# HELP ") {
            Descriptor::Help
        } else if cursor.eat("# TYPE ") {
            Descriptor::Type
        } else if cursor.eat("# UNIT ") {
            Descriptor::Unit
        } else {
            return Err(Fail::at(0, ErrorKind::InvalidComment { text: excerpt(line) }));
        };
        let name_offset = cursor.pos();
        let name = cursor.metric_name()?;
        // The space before HELP and UNIT text is optional when the text is empty.
        if !cursor.at_end() || descriptor == Descriptor::Type {
            cursor.expect(b' ', "a space after the metric name")?;
        }
        let index = self.openmetrics_family_for_descriptor(name, descriptor, name_offset)?;
        let payload_offset = cursor.pos();
        match descriptor {
            Descriptor::Help => {
                self.families[index].help = Some(unescape_help(cursor.rest(), Format::OpenMetrics));
                self.declared[index].help = true;
            }
            Descriptor::Type => {
                let token = cursor.token(Format::OpenMetrics);
                if !cursor.at_end() {
                    return Err(Fail::at(cursor.pos(), ErrorKind::TrailingText { text: excerpt(cursor.rest()) }));
                }
                let kind = openmetrics_kind(token).ok_or_else(|| {
                    let kind = excerpt(token);
                    Fail::at(payload_offset, ErrorKind::UnknownType { kind, expected: OPENMETRICS_TYPES })
                })?;
                self.check_sample_names_free(name, kind, name_offset)?;
                self.families[index].kind = kind;
                self.declared[index].kind = true;
                self.check_unit_allowed(index, payload_offset)?;
            }
            Descriptor::Unit => {
                let unit = cursor.token(Format::OpenMetrics);
                if !cursor.at_end() {
                    return Err(Fail::at(cursor.pos(), ErrorKind::TrailingText { text: excerpt(cursor.rest()) }));
                }
                self.declared[index].unit = true;
                if !unit.is_empty() {
                    let suffixed = name.len() > unit.len()
                        && name.ends_with(unit)
                        && name.as_bytes()[name.len() - unit.len() - 1] == b'_';
                    if !suffixed {
                        let kind = ErrorKind::UnitMismatch { unit: excerpt(unit), name: name.to_owned() };
                        return Err(Fail::at(payload_offset, kind));
                    }
                    self.families[index].unit = Some(unit.into());
                    self.check_unit_allowed(index, payload_offset)?;
                }
            }
        }
        Ok(())
    }

    /// The family an OpenMetrics descriptor line describes: the current one if it has that name and no samples yet,
    /// else a new one, whose name must not have been used.
    fn openmetrics_family_for_descriptor(
        &mut self,
        name: &'a str,
        descriptor: Descriptor,
        offset: usize,
    ) -> Result<usize, Fail> {
        if let Some(index) = self.current.filter(|&index| self.families[index].name == name) {
            if !self.families[index].samples.is_empty() {
                let kind = ErrorKind::DescriptorAfterSamples { descriptor, name: name.to_owned() };
                return Err(Fail::at(offset, kind));
            }
            if self.declared[index].has(descriptor) {
                return Err(Fail::at(offset, ErrorKind::DuplicateDescriptor { descriptor, name: name.to_owned() }));
            }
            return Ok(index);
        }
        if let Some(kind) = self.name_clash(name) {
            return Err(Fail::at(offset, kind));
        }
        self.new_family(name, MetricKind::Unknown, offset)
    }

    /// Why a new OpenMetrics family may not be called `name`: an earlier family had that name, or has a sample of
    /// that name.
    fn name_clash(&self, name: &str) -> Option<ErrorKind> {
        if self.by_name.contains_key(name) {
            return Some(ErrorKind::FamilyAppearsTwice { name: name.to_owned() });
        }
        Suffix::SUFFIXED.iter().find_map(|suffix| {
            let base = name.strip_suffix(suffix.as_str())?;
            let family = &self.families[*self.by_name.get(base)?];
            family.kind.sample_suffixes(Format::OpenMetrics).contains(suffix).then(|| ErrorKind::NameClash {
                name: name.to_owned(),
                sample: name.to_owned(),
                family: base.to_owned(),
            })
        })
    }

    /// Requires that the sample names a family `name` of type `kind` will have are not earlier families' names.
    fn check_sample_names_free(&mut self, name: &str, kind: MetricKind, offset: usize) -> Result<(), Fail> {
        for suffix in kind.sample_suffixes(Format::OpenMetrics).iter().filter(|suffix| **suffix != Suffix::Bare) {
            self.scratch.clear();
            self.scratch.push_str(name);
            self.scratch.push_str(suffix.as_str());
            if self.by_name.contains_key(self.scratch.as_str()) {
                let sample = self.scratch.clone();
                let kind = ErrorKind::NameClash { name: name.to_owned(), sample: sample.clone(), family: sample };
                return Err(Fail::at(offset, kind));
            }
        }
        Ok(())
    }

    fn check_unit_allowed(&self, index: usize, offset: usize) -> Result<(), Fail> {
        let family = &self.families[index];
        if family.unit.is_some() && matches!(family.kind, MetricKind::Info | MetricKind::StateSet) {
            let kind = ErrorKind::UnitNotAllowed { kind: family.kind, name: family.name.to_string() };
            return Err(Fail::at(offset, kind));
        }
        Ok(())
    }

    fn openmetrics_sample(&mut self, sample: SampleLine<'a>) -> Result<(), Fail> {
        let current = self.current.and_then(|index| {
            let family = &self.families[index];
            family.kind.suffix_of(Format::OpenMetrics, &family.name, sample.name).map(|suffix| (index, suffix))
        });
        let (index, suffix) = match current {
            Some(found) => found,
            None => {
                if let Some(clash) = self.name_clash(sample.name) {
                    let current = self.current.map(|index| &self.families[index]);
                    return Err(match current {
                        Some(family) if sample.name.starts_with(family.name.as_ref()) => {
                            not_in_family(sample.name, 0, family, Format::OpenMetrics)
                        }
                        _ => Fail::at(0, clash),
                    });
                }
                (self.new_family(sample.name, MetricKind::Unknown, 0)?, Suffix::Bare)
            }
        };
        let family = &self.families[index];
        check_openmetrics_sample(family, suffix, &sample)?;
        self.push_sample(index, sample)
    }
}

fn text_kind(token: &str) -> Option<MetricKind> {
    // Go's parser compares the type case-insensitively.
    let kinds = [
        ("counter", MetricKind::Counter),
        ("gauge", MetricKind::Gauge),
        ("histogram", MetricKind::Histogram),
        ("summary", MetricKind::Summary),
        ("untyped", MetricKind::Unknown),
    ];
    kinds.iter().find(|(name, _)| name.eq_ignore_ascii_case(token)).map(|(_, kind)| *kind)
}

fn openmetrics_kind(token: &str) -> Option<MetricKind> {
    Some(match token {
        "counter" => MetricKind::Counter,
        "gauge" => MetricKind::Gauge,
        "histogram" => MetricKind::Histogram,
        "gaugehistogram" => MetricKind::GaugeHistogram,
        "summary" => MetricKind::Summary,
        "stateset" => MetricKind::StateSet,
        "info" => MetricKind::Info,
        "unknown" => MetricKind::Unknown,
        _ => return None,
    })
}

/// The error for a sample whose name its family's type does not allow.
fn not_in_family(sample: &str, offset: usize, family: &MetricFamily<'_>, format: Format) -> Fail {
    let names: Vec<String> = family
        .kind
        .sample_suffixes(format)
        .iter()
        .map(|suffix| format!("{}{}", family.name, suffix.as_str()))
        .collect();
    let expected = match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    };
    Fail::at(
        offset,
        ErrorKind::SampleNotInFamily {
            sample: excerpt(sample),
            kind: family.kind,
            family: family.name.to_string(),
            expected,
        },
    )
}

/// Requires the `le` or `quantile` label of a bucket or quantile sample, as a number (not NaN and within 0..1 for
/// quantiles when `strict`, as OpenMetrics asks).
fn check_bound(sample: &SampleLine<'_>, label: &'static str, strict: bool) -> Result<(), Fail> {
    let Some(found) = sample.labels.iter().find(|candidate| candidate.name == label) else {
        let kind = ErrorKind::MissingLabel { sample: sample.name.to_owned(), label: label.to_owned() };
        return Err(Fail::at(offset_in(sample.line, sample.name), kind));
    };
    let valid = match crate::number::parse_value(&found.value) {
        None => false,
        Some(bound) if strict => !bound.is_nan() && (label == "le" || (0.0..=1.0).contains(&bound)),
        Some(_) => true,
    };
    if valid {
        Ok(())
    } else {
        let offset = offset_in(sample.line, &found.name);
        Err(Fail::at(offset, ErrorKind::InvalidBound { label, value: excerpt(&found.value) }))
    }
}

/// The OpenMetrics rules on a sample's labels, value and exemplar that depend on its family's type.
fn check_openmetrics_sample(family: &MetricFamily<'_>, suffix: Suffix, sample: &SampleLine<'_>) -> Result<(), Fail> {
    use MetricKind::{Counter, GaugeHistogram, Histogram, Info, StateSet, Summary};
    use Suffix::{Bare, Bucket, Count, GCount, GSum, Sum, Total};
    let value = sample.value;
    let refuse = |rule: &'static str| {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = crate::number::write_value(&mut text, value);
        Err(Fail::at(
            sample.value_offset,
            ErrorKind::ValueNotAllowed { sample: sample.name.to_owned(), value: text, rule },
        ))
    };
    match (family.kind, suffix) {
        (Histogram | GaugeHistogram, Bucket) => check_bound(sample, "le", true)?,
        (Summary, Bare) => check_bound(sample, "quantile", true)?,
        (StateSet, Bare) if !sample.labels.iter().any(|label| label.name == family.name) => {
            let kind = ErrorKind::MissingLabel { sample: sample.name.to_owned(), label: family.name.to_string() };
            return Err(Fail::at(offset_in(sample.line, sample.name), kind));
        }
        _ => {}
    }
    match (family.kind, suffix) {
        (Counter, Total)
        | (Histogram | Summary, Count)
        | (Histogram | GaugeHistogram, Bucket)
        | (GaugeHistogram, GCount)
            if value.is_nan() || value < 0.0 =>
        {
            return refuse("counts and totals cannot be negative or NaN");
        }
        (Histogram | Summary, Sum) | (GaugeHistogram, GSum) if value.is_nan() => {
            return refuse("sums cannot be NaN");
        }
        (Summary, Bare) if value < 0.0 => return refuse("quantile values cannot be negative"),
        (StateSet, Bare) if value != 0.0 && value != 1.0 => return refuse("stateset values must be 0 or 1"),
        (Info, Suffix::Info) if value != 1.0 => return refuse("info values must be 1"),
        _ => {}
    }
    let exemplar_allowed = matches!((family.kind, suffix), (Histogram | GaugeHistogram, Bucket) | (Counter, Total));
    if sample.exemplar.is_some() && !exemplar_allowed {
        return Err(Fail::at(sample.exemplar_offset, ErrorKind::ExemplarNotAllowed { sample: sample.name.to_owned() }));
    }
    Ok(())
}
