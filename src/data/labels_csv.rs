//! The `path,class` labels file that labels a flat image folder.
//!
//! One row per labelled image: its path relative to the folder and its class name. An optional
//! first line `path,class` is a header. Fields may be quoted (`"a, b.png",cat`, with `""` for
//! a quote inside); a quoted field may not span lines. Blank lines are ignored. Rows are
//! numbered by their 1-based line in the file, so an error points at the line to fix.

use super::DataError;
use std::path::Path;

/// One labelled image as the file states it, before it is matched against the folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LabelRow {
    /// 1-based line number in the file.
    pub line: usize,
    /// The image path as written, relative to the folder.
    pub path: String,
    /// The class name as written (surrounding spaces removed).
    pub class: String,
}

/// The rows of the labels file at `path`, each with two non-empty fields.
pub(crate) fn read_labels_csv(path: &Path) -> Result<Vec<LabelRow>, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let row_error = |line: usize, reason: String| DataError::LabelsFile {
        path: path.to_path_buf(),
        row: line,
        reason,
    };
    let mut rows = Vec::new();
    let mut seen_content = false;
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let text = std::str::from_utf8(raw).map_err(|_| {
            row_error(
                line,
                "is not valid UTF-8; save the labels file as UTF-8".to_string(),
            )
        })?;
        let text = text.trim_end_matches('\r');
        if text.trim().is_empty() {
            continue;
        }
        let fields = split_fields(text).map_err(|reason| row_error(line, reason))?;
        let first = !seen_content;
        seen_content = true;
        if first && is_header(&fields) {
            continue;
        }
        let [path_field, class] = <[String; 2]>::try_from(fields).map_err(|fields| {
            row_error(
                line,
                format!(
                    "`{text}` has {} field(s); each row must be `path,class` (quote a path that contains a comma)",
                    fields.len()
                ),
            )
        })?;
        if path_field.is_empty() || class.is_empty() {
            return Err(row_error(
                line,
                format!("`{text}` has an empty path or class; each row must be `path,class` with both set"),
            ));
        }
        rows.push(LabelRow {
            line,
            path: path_field,
            class,
        });
    }
    Ok(rows)
}

fn is_header(fields: &[String]) -> bool {
    fields.len() == 2
        && fields[0].eq_ignore_ascii_case("path")
        && fields[1].eq_ignore_ascii_case("class")
}

/// The comma-separated fields of one line; unquoted fields are trimmed, quoted ones kept as
/// written (with `""` read as `"`).
fn split_fields(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut rest = line;
    loop {
        let trimmed = rest.trim_start();
        if let Some(quoted) = trimmed.strip_prefix('"') {
            let (field, after) = take_quoted(quoted).ok_or_else(|| {
                format!("`{line}` has a quote that is never closed (a quoted field must end on the same line)")
            })?;
            fields.push(field);
            let after = after.trim_start();
            match after.strip_prefix(',') {
                Some(next) => rest = next,
                None if after.is_empty() => return Ok(fields),
                None => {
                    return Err(format!(
                        "`{line}` has text after a closing quote; put a comma right after a quoted field"
                    ))
                }
            }
        } else {
            match rest.split_once(',') {
                Some((field, next)) => {
                    fields.push(field.trim().to_string());
                    rest = next;
                }
                None => {
                    fields.push(rest.trim().to_string());
                    return Ok(fields);
                }
            }
        }
    }
}

/// The content of a quoted field (after its opening quote) and the text after its closing
/// quote, or None when it is never closed.
fn take_quoted(s: &str) -> Option<(String, &str)> {
    let mut field = String::new();
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '"' {
            field.push(c);
        } else if matches!(chars.peek(), Some((_, '"'))) {
            field.push('"');
            chars.next();
        } else {
            return Some((field, &s[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::split_fields;

    #[test]
    fn splits_plain_and_quoted_fields() {
        assert_eq!(split_fields(" a.png , cat ").unwrap(), ["a.png", "cat"]);
        assert_eq!(
            split_fields(r#""x, ""y"".png",dog"#).unwrap(),
            [r#"x, "y".png"#, "dog"]
        );
        assert_eq!(split_fields("a,b,").unwrap(), ["a", "b", ""]);
        assert!(split_fields(r#""open,cat"#)
            .unwrap_err()
            .contains("never closed"));
        assert!(split_fields(r#""a"b,cat"#)
            .unwrap_err()
            .contains("after a closing quote"));
    }
}
