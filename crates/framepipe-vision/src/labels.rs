//! Class names: parsed from Ultralytics ONNX metadata or a labels file.

use std::borrow::Cow;
use std::path::Path;

use crate::error::VisionError;

/// Largest class id accepted from parsed text (guards against absurd allocations).
pub const MAX_CLASS_ID: u32 = 100_000;

/// Class names indexed by class id. Ids without a name fall back to the
/// number as text in [`Labels::label`].
///
/// ```
/// use framepipe_vision::Labels;
/// let labels = Labels::parse_names_dict("{0: 'Normal', 1: 'Fall'}")?;
/// assert_eq!(labels.label(1), "Fall");
/// assert_eq!(labels.label(7), "7");
/// # Ok::<(), framepipe_vision::VisionError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    names: Vec<Option<String>>,
}

impl Labels {
    /// Labels from names in class-id order.
    pub fn new<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Self {
        Self { names: names.into_iter().map(|s| Some(s.into())).collect() }
    }

    /// Parses the Ultralytics ONNX metadata `names` value, a Python literal:
    /// a dict `{0: 'person', 1: "bicycle"}` (keys may also be quoted, e.g.
    /// JSON `{"0": "person"}`) or a list `['person', 'bicycle']`.
    ///
    /// Single and double quotes, Python escapes (`\\ \' \" \n \t \r \xHH
    /// \uHHHH \UHHHHHHHH`), arbitrary whitespace and a trailing comma are
    /// accepted. Duplicate ids, negative ids, ids above [`MAX_CLASS_ID`]
    /// and trailing garbage are errors that name the byte position.
    pub fn parse_names_dict(text: &str) -> Result<Self, VisionError> {
        let mut p = Parser { s: text, pos: 0 };
        p.skip_ws();
        let mut names: Vec<Option<String>> = Vec::new();
        match p.peek() {
            Some('{') => {
                p.bump();
                p.parse_seq('}', |p| {
                    let key_pos = p.pos;
                    let id = p.parse_key()?;
                    p.skip_ws();
                    p.expect(':')?;
                    p.skip_ws();
                    let name = p.parse_string()?;
                    let idx = id as usize;
                    if names.len() <= idx {
                        names.resize(idx + 1, None);
                    }
                    if names[idx].is_some() {
                        return Err(p.error_at(key_pos, format!("duplicate class id {id}")));
                    }
                    names[idx] = Some(name);
                    Ok(())
                })?;
            }
            Some('[') => {
                p.bump();
                p.parse_seq(']', |p| {
                    if names.len() > MAX_CLASS_ID as usize {
                        return Err(p.error(format!("more than {MAX_CLASS_ID} classes")));
                    }
                    names.push(Some(p.parse_string()?));
                    Ok(())
                })?;
            }
            Some(c) => return Err(p.error(format!("expected '{{' or '[', found {c:?}"))),
            None => return Err(p.error("empty input, expected '{' or '['".to_string())),
        }
        p.skip_ws();
        if let Some(c) = p.peek() {
            return Err(p.error(format!("unexpected {c:?} after the closing bracket")));
        }
        Ok(Self { names })
    }

    /// Labels from text with one name per line; surrounding whitespace is
    /// trimmed and blank lines are ignored.
    pub fn parse_lines(text: &str) -> Self {
        Self::new(text.lines().map(str::trim).filter(|l| !l.is_empty()))
    }

    /// [`Labels::parse_names_dict`] if the text starts with `{` or `[`,
    /// otherwise [`Labels::parse_lines`].
    pub fn parse(text: &str) -> Result<Self, VisionError> {
        match text.trim_start().chars().next() {
            Some('{') | Some('[') => Self::parse_names_dict(text),
            _ => Ok(Self::parse_lines(text)),
        }
    }

    /// Reads a labels file and parses it with [`Labels::parse`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, VisionError> {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).map_err(|source| VisionError::Io { path: path.to_path_buf(), source })?;
        Self::parse(&text)
    }

    /// Number of class-id slots (highest id + 1).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when no names are known.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The name of `class_id`, if known.
    pub fn get(&self, class_id: u32) -> Option<&str> {
        self.names.get(class_id as usize)?.as_deref()
    }

    /// The name of `class_id`, or the id as text when unknown (allocates only then).
    pub fn label(&self, class_id: u32) -> Cow<'_, str> {
        match self.get(class_id) {
            Some(n) => Cow::Borrowed(n),
            None => Cow::Owned(class_id.to_string()),
        }
    }

    /// `(class_id, name)` for every known name, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &str)> {
        self.names.iter().enumerate().filter_map(|(i, n)| n.as_deref().map(|n| (i as u32, n)))
    }
}

struct Parser<'a> {
    s: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    fn error_at(&self, position: usize, reason: String) -> VisionError {
        VisionError::LabelsParse { position, reason }
    }

    fn error(&self, reason: String) -> VisionError {
        self.error_at(self.pos, reason)
    }

    fn expect(&mut self, want: char) -> Result<(), VisionError> {
        match self.peek() {
            Some(c) if c == want => {
                self.bump();
                Ok(())
            }
            Some(c) => Err(self.error(format!("expected {want:?}, found {c:?}"))),
            None => Err(self.error(format!("expected {want:?}, found end of input"))),
        }
    }

    /// Comma-separated items up to `close` (already past the opening bracket).
    fn parse_seq(
        &mut self,
        close: char,
        mut item: impl FnMut(&mut Self) -> Result<(), VisionError>,
    ) -> Result<(), VisionError> {
        loop {
            self.skip_ws();
            if self.peek() == Some(close) {
                self.bump();
                return Ok(());
            }
            item(self)?;
            self.skip_ws();
            match self.peek() {
                Some(',') => {
                    self.bump();
                }
                Some(c) if c == close => {
                    self.bump();
                    return Ok(());
                }
                Some(c) => return Err(self.error(format!("expected ',' or {close:?}, found {c:?}"))),
                None => {
                    return Err(self.error(format!("missing closing {close:?}")));
                }
            }
        }
    }

    /// A class id: bare digits, or a quoted string holding digits.
    fn parse_key(&mut self) -> Result<u32, VisionError> {
        let start = self.pos;
        let text: Cow<'_, str> = match self.peek() {
            Some('\'') | Some('"') => Cow::Owned(self.parse_string()?),
            Some(c) if c.is_ascii_digit() => {
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.bump();
                }
                Cow::Borrowed(&self.s[start..self.pos])
            }
            Some('-') => return Err(self.error("negative class id".to_string())),
            Some(c) => return Err(self.error(format!("expected a class id, found {c:?}"))),
            None => return Err(self.error("expected a class id, found end of input".into())),
        };
        let t = text.trim();
        match t.parse::<u32>() {
            Ok(id) if id <= MAX_CLASS_ID => Ok(id),
            Ok(id) => Err(self.error_at(start, format!("class id {id} is larger than {MAX_CLASS_ID}"))),
            Err(_) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => {
                Err(self.error_at(start, format!("class id {t} is larger than {MAX_CLASS_ID}")))
            }
            Err(_) => Err(self.error_at(start, format!("class id {t:?} is not a number"))),
        }
    }

    /// A Python string literal in single or double quotes.
    fn parse_string(&mut self) -> Result<String, VisionError> {
        let start = self.pos;
        let quote = match self.peek() {
            Some(q @ ('\'' | '"')) => q,
            Some(c) => return Err(self.error(format!("expected a quoted name, found {c:?}"))),
            None => return Err(self.error("expected a quoted name, found end of input".into())),
        };
        self.bump();
        let mut out = String::new();
        loop {
            let Some(c) = self.bump() else {
                return Err(self.error_at(start, "unterminated string".to_string()));
            };
            match c {
                c if c == quote => return Ok(out),
                '\\' => {
                    let esc_pos = self.pos - 1;
                    let Some(e) = self.bump() else {
                        return Err(self.error_at(start, "unterminated string".to_string()));
                    };
                    match e {
                        '\\' => out.push('\\'),
                        '\'' => out.push('\''),
                        '"' => out.push('"'),
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        '0' => out.push('\0'),
                        'x' => out.push(self.hex_escape(2, esc_pos)?),
                        'u' => out.push(self.hex_escape(4, esc_pos)?),
                        'U' => out.push(self.hex_escape(8, esc_pos)?),
                        // Python keeps unknown escapes verbatim.
                        other => {
                            out.push('\\');
                            out.push(other);
                        }
                    }
                }
                c => out.push(c),
            }
        }
    }

    fn hex_escape(&mut self, digits: usize, esc_pos: usize) -> Result<char, VisionError> {
        let mut v: u32 = 0;
        for _ in 0..digits {
            let d = self
                .bump()
                .and_then(|c| c.to_digit(16))
                .ok_or_else(|| self.error_at(esc_pos, format!("bad escape, need {digits} hex digits")))?;
            v = v * 16 + d;
        }
        char::from_u32(v).ok_or_else(|| self.error_at(esc_pos, format!("escape U+{v:X} is not a character")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ultralytics_metadata_dict() {
        let l = Labels::parse_names_dict("{0: 'Normal', 1: 'Fall'}").unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l.get(0), Some("Normal"));
        assert_eq!(l.get(1), Some("Fall"));
        assert_eq!(l.get(2), None);
        assert_eq!(l.label(2), "2");
    }

    #[test]
    fn quotes_escapes_and_whitespace() {
        let text = "  {\n 0 :\"it's\",1:'say \\'hi\\'', 2: 'back\\\\slash',\t3: \"q\\\"x\", 4: 'caf\\xe9 \\u00e9', 5: 'tab\\tz', 6: '\u{1F600} ok', }  ";
        let l = Labels::parse_names_dict(text).unwrap();
        assert_eq!(l.get(0), Some("it's"));
        assert_eq!(l.get(1), Some("say 'hi'"));
        assert_eq!(l.get(2), Some("back\\slash"));
        assert_eq!(l.get(3), Some("q\"x"));
        assert_eq!(l.get(4), Some("café é"));
        assert_eq!(l.get(5), Some("tab\tz"));
        assert_eq!(l.get(6), Some("\u{1F600} ok"));
    }

    #[test]
    fn quoted_keys_lists_gaps_and_order() {
        let l = Labels::parse_names_dict(r#"{"1": "b", "0": "a"}"#).unwrap();
        assert_eq!((l.get(0), l.get(1)), (Some("a"), Some("b")));
        let l = Labels::parse_names_dict("['x', \"y\",]").unwrap();
        assert_eq!((l.get(0), l.get(1), l.len()), (Some("x"), Some("y"), 2));
        let l = Labels::parse_names_dict("{2: 'two', 0: 'zero'}").unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!(l.label(1), "1");
        assert_eq!(l.iter().collect::<Vec<_>>(), [(0, "zero"), (2, "two")]);
        assert!(Labels::parse_names_dict("{}").unwrap().is_empty());
    }

    #[test]
    fn thousand_classes() {
        let body: Vec<String> = (0..1000).map(|i| format!("{i}: 'class {i}'")).collect();
        let text = format!("{{{}}}", body.join(", "));
        let l = Labels::parse_names_dict(&text).unwrap();
        assert_eq!(l.len(), 1000);
        assert_eq!(l.get(999), Some("class 999"));
        assert_eq!(l.get(0), Some("class 0"));
    }

    #[test]
    fn errors_name_the_problem_and_position() {
        let cases: &[(&str, &str)] = &[
            ("", "empty input"),
            ("{0: 'a', 0: 'b'}", "duplicate class id 0"),
            ("{0: 'a'", "missing closing"),
            ("{0: 'a}", "unterminated string"),
            ("{0 'a'}", "expected ':'"),
            ("{-1: 'a'}", "negative class id"),
            ("{x: 'a'}", "expected a class id"),
            ("{'x': 'a'}", "is not a number"),
            ("{999999: 'a'}", "larger than"),
            ("{99999999999999: 'a'}", "larger than"),
            ("{0: 'a'} junk", "after the closing bracket"),
            ("{0: person}", "expected a quoted name"),
            ("{0: 'a\\xZZ'}", "hex digits"),
            ("person", "expected '{' or '['"),
        ];
        for (text, want) in cases {
            let err = Labels::parse_names_dict(text).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(want), "{text:?}: {msg}");
            assert!(matches!(err, VisionError::LabelsParse { .. }));
        }
        let VisionError::LabelsParse { position, .. } = Labels::parse_names_dict("{0: 'a', 0: 'b'}").unwrap_err()
        else {
            unreachable!()
        };
        assert_eq!(position, 9);
    }

    #[test]
    fn lines_file_format() {
        let l = Labels::parse_lines("person\n\n  bicycle \r\ncar\n   \n");
        assert_eq!(l.len(), 3);
        assert_eq!(l.get(1), Some("bicycle"));
        assert_eq!(l.get(2), Some("car"));
        assert_eq!(Labels::parse("a\nb").unwrap().get(1), Some("b"));
        assert_eq!(Labels::parse(" {0: 'a'}").unwrap().get(0), Some("a"));
    }

    #[test]
    fn from_file_reads_and_reports_missing_file() {
        let dir = std::env::temp_dir().join(format!("fp-vision-labels-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("labels.txt");
        std::fs::write(&path, "Normal\nFall\n").unwrap();
        let l = Labels::from_file(&path).unwrap();
        assert_eq!(l.label(1), "Fall");
        std::fs::remove_file(&path).unwrap();
        let err = Labels::from_file(&path).unwrap_err();
        assert!(err.to_string().contains("labels.txt"), "{err}");
        std::fs::remove_dir(&dir).unwrap();
    }
}
