//! Per-replica templates: `{port}`, `{replica}` and `{service}` in commands, env values and probes.

use std::fmt;

/// A placeholder a template may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    /// The replica's port, from the service's `ports`.
    Port,
    /// The replica's index, 0-based.
    Replica,
    /// The service's name.
    Service,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Placeholder(Placeholder),
}

/// A string with placeholders, parsed once at config load and rendered for each replica.
///
/// `{{` and `}}` write literal braces.
#[derive(Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    segments: Vec<Segment>,
}

/// The values a template is rendered with.
#[derive(Debug, Clone, Copy)]
pub struct TemplateVars<'a> {
    /// The replica's port, if the service has ports.
    pub port: Option<u16>,
    /// The replica index.
    pub replica: u32,
    /// The service name.
    pub service: &'a str,
}

impl Template {
    /// Parses `source`; unknown placeholders and unbalanced braces are errors.
    pub fn parse(source: &str) -> Result<Self, String> {
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut chars = source.char_indices().peekable();
        while let Some((idx, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|&(_, next)| next) == Some('{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().map(|&(_, next)| next) == Some('}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let rest = &source[idx + 1..];
                    let end = rest.find('}').ok_or_else(|| format!("unclosed '{{' in {source:?}"))?;
                    let placeholder = match &rest[..end] {
                        "port" => Placeholder::Port,
                        "replica" => Placeholder::Replica,
                        "service" => Placeholder::Service,
                        other => {
                            return Err(format!(
                                "unknown placeholder {{{other}}} in {source:?} (known: {{port}}, {{replica}}, {{service}}; write {{{{ for a literal brace)"
                            ));
                        }
                    };
                    if !literal.is_empty() {
                        segments.push(Segment::Literal(std::mem::take(&mut literal)));
                    }
                    segments.push(Segment::Placeholder(placeholder));
                    for _ in 0..=end {
                        chars.next();
                    }
                }
                '}' => return Err(format!("unmatched '}}' in {source:?} (write }}}} for a literal brace)")),
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        Ok(Self { source: source.to_owned(), segments })
    }

    /// True if the template contains `placeholder`.
    pub fn uses(&self, placeholder: Placeholder) -> bool {
        self.segments.contains(&Segment::Placeholder(placeholder))
    }

    /// The text as written in the config.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders the template. A `{port}` of a service without ports renders as `0`; config validation
    /// refuses such templates, so this only happens in tests.
    pub fn render(&self, vars: &TemplateVars<'_>) -> String {
        let mut out = String::with_capacity(self.source.len() + 8);
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Placeholder(Placeholder::Port) => out.push_str(&vars.port.unwrap_or(0).to_string()),
                Segment::Placeholder(Placeholder::Replica) => out.push_str(&vars.replica.to_string()),
                Segment::Placeholder(Placeholder::Service) => out.push_str(vars.service),
            }
        }
        out
    }
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.source, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(source: &str) -> Result<String, String> {
        let vars = TemplateVars { port: Some(9101), replica: 2, service: "web" };
        Template::parse(source).map(|t| t.render(&vars))
    }

    #[test]
    fn renders_placeholders_and_escapes() {
        let cases = [
            ("--port={port}", "--port=9101"),
            ("{service}-{replica}", "web-2"),
            ("plain", "plain"),
            ("{{port}}", "{port}"),
            ("{{{port}}}", "{9101}"),
            ("", ""),
            ("ünïcode {port}", "ünïcode 9101"),
        ];
        for (source, expected) in cases {
            assert_eq!(render(source), Ok(expected.to_owned()), "{source:?}");
        }
    }

    #[test]
    fn rejects_unknown_and_unbalanced() {
        assert!(render("{prot}").is_err_and(|e| e.starts_with("unknown placeholder {prot}")));
        assert!(render("{port").is_err_and(|e| e.starts_with("unclosed '{'")));
        assert!(render("port}").is_err_and(|e| e.starts_with("unmatched '}'")));
    }

    #[test]
    fn reports_which_placeholders_are_used() {
        let template = Template::parse("x{port}").expect("valid template");
        assert!(template.uses(Placeholder::Port));
        assert!(!template.uses(Placeholder::Replica));
    }
}
