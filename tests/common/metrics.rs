//! `/metrics` read as Prometheus text: every sample by name and exact label set, so tests
//! assert values (`== 12.0`) instead of matching substrings (`} 1` also matches `} 12`).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One sample line: `name{label="value",…} number`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Metric name, with `_bucket` / `_sum` / `_count` for histogram parts.
    pub name: String,
    /// Every label, sorted by name.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

/// A parsed exposition: the samples in order and the `# TYPE` of each family.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    /// Every sample, in the order served.
    pub samples: Vec<Sample>,
    /// `# TYPE` of each metric family (`counter`, `gauge`, `histogram`, …).
    pub types: HashMap<String, String>,
}

impl Scrape {
    /// Parses Prometheus text format 0.0.4; any line it cannot read is an error naming it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut scrape = Scrape::default();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let words: Vec<&str> = comment.split_whitespace().collect();
                if let ["TYPE", name, kind] = words.as_slice() {
                    scrape.types.insert(name.to_string(), kind.to_string());
                }
                continue;
            }
            let sample =
                parse_sample(line).map_err(|e| format!("line {}: `{line}`: {e}", number + 1))?;
            scrape.samples.push(sample);
        }
        Ok(scrape)
    }

    /// The value of the sample with exactly these labels, if there is one.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    /// The value of the sample with exactly these labels; panics naming it when absent.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or_else(|| {
            let present: Vec<String> = self
                .samples
                .iter()
                .filter(|s| s.name == name)
                .map(|s| format!("{:?}", s.labels))
                .collect();
            panic!("/metrics has no {name} with labels {labels:?}; it has {present:?}")
        })
    }

    /// Every sample of `name` whose labels include these, e.g. all codes of one method.
    pub fn matching(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or("no value")?;
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return Err(format!("`{name}` is not a metric name"));
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(body) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(body)?;
        labels = parsed;
        rest = after;
    }
    let mut words = rest.split_whitespace();
    let value = match words.next().ok_or("no value")? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        number => number
            .parse::<f64>()
            .map_err(|e| format!("value `{number}`: {e}"))?,
    };
    // An optional timestamp may follow; nothing else may.
    if let Some(ts) = words.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("`{ts}` is not a timestamp"))?;
    }
    if words.next().is_some() {
        return Err("text after the timestamp".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Reads `k="v",…}` and returns the labels and what follows the closing brace.
fn parse_labels(mut body: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    loop {
        body = body.trim_start();
        if let Some(after) = body.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = body.find('=').ok_or("a label without `=`")?;
        let key = body[..eq].trim().to_string();
        let quoted = body[eq + 1..]
            .strip_prefix('"')
            .ok_or("a label value without quotes")?;
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        let end = loop {
            match chars.next().ok_or("an unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("a dangling escape")?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, c) => value.push(c),
            }
        };
        if labels.insert(key.clone(), value).is_some() {
            return Err(format!("label `{key}` twice"));
        }
        body = quoted[end + 1..].trim_start();
        body = body.strip_prefix(',').unwrap_or(body);
    }
}

/// GETs `/metrics` from `addr` and parses it; panics unless it is a 200 in Prometheus text.
pub async fn scrape(addr: SocketAddr) -> Scrape {
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("cannot reach /metrics at {addr}: {e}"));
    tcp.write_all(b"GET /metrics HTTP/1.0\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"));
    assert!(head.starts_with("HTTP/1.0 200 OK"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    Scrape::parse(body).unwrap_or_else(|e| panic!("/metrics is not Prometheus text: {e}"))
}
