//! Logging set-up: human-readable or JSON lines on stderr, filtered by `RUST_LOG`.

use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Compact human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the global subscriber (once; later calls are ignored).
pub fn init(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.compact().try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// One line for an error and its causes, each said once: a cause already contained in the
/// text is dropped, and a cause that repeats the last part with more detail replaces it
/// (`cannot read x: No such file or directory` rather than the OS message twice).
pub fn describe_error(e: &(dyn std::error::Error + 'static)) -> String {
    let mut messages = Vec::new();
    let mut current = Some(e);
    while let Some(error) = current {
        messages.push(error.to_string());
        current = error.source();
    }
    join_causes(messages)
}

/// [`describe_error`] over messages already listed from the outermost error inwards.
pub fn join_causes(messages: impl IntoIterator<Item = String>) -> String {
    let mut parts: Vec<String> = Vec::new();
    for m in messages {
        if parts.iter().any(|p| p.contains(&m)) {
            continue;
        }
        match parts.last_mut() {
            Some(last) if m.contains(last.as_str()) => *last = m,
            _ => parts.push(m),
        }
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::join_causes;

    #[test]
    fn each_cause_is_said_once() {
        let s = |v: &[&str]| join_causes(v.iter().map(|m| m.to_string()));
        assert_eq!(
            s(&[
                "cannot access model file m: No such file (os error 2)",
                "No such file (os error 2)"
            ]),
            "cannot access model file m: No such file (os error 2)"
        );
        assert_eq!(
            s(&[
                "transport error",
                "tcp connect error",
                "tcp connect error: refused",
                "refused"
            ]),
            "transport error: tcp connect error: refused"
        );
        assert_eq!(s(&["a", "b", "c"]), "a: b: c");
    }
}
