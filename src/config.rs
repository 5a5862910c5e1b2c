//! The one place that reads the environment: defaults for paths that flags can override.

use std::path::PathBuf;

/// Where aelabel keeps its own files: `$AELABEL_HOME`, else `$XDG_DATA_HOME/aelabel`, else
/// `~/.local/share/aelabel`, else `./aelabel-data`.
pub fn aelabel_home() -> PathBuf {
    if let Some(home) = std::env::var_os("AELABEL_HOME") {
        return PathBuf::from(home);
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(xdg).join("aelabel");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/aelabel"),
        None => PathBuf::from("aelabel-data"),
    }
}

/// Encoder layer widths from input to code, as given on the command line (`784,100,30`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Widths(pub Vec<usize>);

/// Parses a comma-separated list of layer widths such as `784,100,30`.
pub fn parse_layers(text: &str) -> Result<Widths, String> {
    let widths = text
        .split(',')
        .map(|w| {
            w.trim()
                .parse::<usize>()
                .ok()
                .filter(|&w| w > 0)
                .ok_or_else(|| {
                    format!("`{w}` is not a positive layer width (expected e.g. 784,100,30)")
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if widths.len() < 2 {
        return Err("needs at least an input width and a code width, e.g. 784,30".into());
    }
    Ok(Widths(widths))
}

/// Parses a probability strictly between 0 and 1.
pub fn parse_fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v > 0.0 && v < 1.0 => Ok(v),
        _ => Err(format!("`{text}` is not a number strictly between 0 and 1")),
    }
}

/// Parses a whole number of at least 1 (threads, epochs).
pub fn parse_positive(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(v) if v >= 1 => Ok(v),
        _ => Err(format!("`{text}` is not a whole number ≥ 1")),
    }
}

/// Parses an image size: `N` (N×N) or `W×H` / `WxH`, each side 1..=4096.
pub fn parse_input_size(text: &str) -> Result<(usize, usize), String> {
    let side = |t: &str| {
        t.trim()
            .parse::<usize>()
            .ok()
            .filter(|v| (1..=4096).contains(v))
    };
    let parts: Vec<&str> = text.split(['x', 'X', '×']).collect();
    let size = match parts.as_slice() {
        [n] => side(n).map(|n| (n, n)),
        [w, h] => side(w).zip(side(h)),
        _ => None,
    };
    size.ok_or_else(|| {
        format!("`{text}` is not an image size: give N or W×H (e.g. 28 or 32x32), sides 1 to 4096")
    })
}
