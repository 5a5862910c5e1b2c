//! `aelabel jobs review` for a person at a terminal: the least confident item as a small
//! picture, the model's top three classes, and one key to decide.
//!
//! At a terminal one key press answers (no Enter); from a pipe each line is an answer, so the
//! loop can be scripted and tested. Answers: `a`/`b`/`c` pick one of the top three, a class
//! index or a class name picks that class, `s` skips the item, `q` (or end of input) quits.

use super::jobs::connect_jobs;
use super::ClientError;
use crate::wire as pb;
use pb::label_jobs_client::LabelJobsClient;
use std::io::{BufRead, IsTerminal, Read, Write};

/// What `aelabel jobs review` without `--csv` works on.
#[derive(Clone, Debug)]
pub struct TerminalReview {
    /// Server address.
    pub server: super::Target,
    /// The job.
    pub job_id: String,
    /// Stop after this many reviews.
    pub limit: Option<usize>,
}

/// What a person answered for one item.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Answer {
    Class(pb::submit_review_request::Class),
    Skip,
    Quit,
    /// Not an answer; ask again.
    Unknown(String),
}

fn parse_answer(text: &str, top: &[(usize, f32)], classes: &[String]) -> Answer {
    use pb::submit_review_request::Class;
    let text = text.trim();
    match text {
        "" => Answer::Unknown(String::new()),
        "q" | "Q" | "\u{3}" | "\u{4}" => Answer::Quit,
        "s" | "S" => Answer::Skip,
        "a" | "b" | "c" => {
            let pick = usize::from(text.as_bytes()[0] - b'a');
            match top.get(pick) {
                Some(&(class, _)) => Answer::Class(Class::ClassIndex(class as u32)),
                None => Answer::Unknown(text.to_string()),
            }
        }
        _ => match text.parse::<usize>() {
            Ok(i) if i < classes.len() => Answer::Class(Class::ClassIndex(i as u32)),
            Ok(_) => Answer::Unknown(text.to_string()),
            Err(_) if classes.iter().any(|c| c == text) => {
                Answer::Class(Class::ClassName(text.to_string()))
            }
            Err(_) => Answer::Unknown(text.to_string()),
        },
    }
}

/// The terminal in single-key mode (no line buffering, no echo, Ctrl-C read as a key) until
/// dropped; `None` when standard input is not a terminal.
struct KeyMode {
    saved: libc::termios,
}

impl KeyMode {
    fn enable() -> Option<Self> {
        if !std::io::stdin().is_terminal() {
            return None;
        }
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a termios the call itself filled in.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return None;
            }
            let saved = t;
            t.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG);
            t.c_cc[libc::VMIN] = 1;
            t.c_cc[libc::VTIME] = 0;
            if libc::tcsetattr(0, libc::TCSANOW, &t) != 0 {
                return None;
            }
            Some(Self { saved })
        }
    }
}

impl Drop for KeyMode {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `enable`.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &self.saved);
        }
    }
}

/// Reads one answer: a key at a terminal, a line otherwise (`None` at end of input).
fn read_answer(keys: bool) -> Option<String> {
    tokio::task::block_in_place(|| {
        if keys {
            let mut byte = [0u8; 1];
            match std::io::stdin().read(&mut byte) {
                Ok(1) => Some(char::from(byte[0]).to_string()),
                _ => None,
            }
        } else {
            let mut line = String::new();
            match std::io::stdin().lock().read_line(&mut line) {
                Ok(0) | Err(_) => None,
                Ok(_) => Some(line),
            }
        }
    })
}

/// The image as rows of half-block characters, two pixel rows per line, in 24-bit gray;
/// images wider than 56 pixels are sampled down to 56.
pub fn picture(image: &pb::RawImage) -> String {
    let (w, h) = (image.width as usize, image.height as usize);
    if w == 0 || h == 0 || image.pixels.len() != w * h {
        return String::new();
    }
    let step = w.div_ceil(56).max(1);
    let at = |x: usize, y: usize| image.pixels.get(y * w + x).copied().unwrap_or(0);
    let mut out = String::new();
    for y in (0..h).step_by(2 * step) {
        for x in (0..w).step_by(step) {
            let (top, bottom) = (at(x, y), at(x, y + step));
            out.push_str(&format!(
                "\x1b[38;2;{top};{top};{top}m\x1b[48;2;{bottom};{bottom};{bottom}m\u{2580}"
            ));
        }
        out.push_str("\x1b[0m\n");
    }
    out
}

/// The model's three most probable classes, most probable first.
fn top3(probabilities: &[f32]) -> Vec<(usize, f32)> {
    let mut ranked: Vec<(usize, f32)> = probabilities.iter().copied().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked.truncate(3);
    ranked
}

/// Shows the job's least confident items one at a time and submits what the person picks.
/// Returns how many items were reviewed.
pub async fn review_terminal(job: &TerminalReview) -> Result<usize, ClientError> {
    let mut client = connect_jobs(&job.server).await?;
    let status = client
        .get_job(pb::GetJobRequest {
            job_id: job.job_id.clone(),
        })
        .await?
        .into_inner();
    let classes = status.class_names;
    let mut remaining = status.counts.map_or(0, |c| c.needs_review);
    let keys = KeyMode::enable();
    let mut out = std::io::stdout();
    let write = |out: &mut std::io::Stdout, text: &str| {
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|source| ClientError::Output {
                path: "standard output".into(),
                source,
            })
    };
    let legend: Vec<String> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{i} {c}"))
        .collect();
    write(&mut out, &format!("classes: {}\n", legend.join(" · ")))?;
    // A job on the labelling loop (its own autoencoder or model) is reviewed in the order
    // `jobs next` gives; any other job least confident first.
    let mut queue = if status.pretrained || !status.model_version.is_empty() {
        Queue::Loop(std::collections::VecDeque::new())
    } else {
        Queue::LeastConfident(String::new())
    };
    let mut reviewed = 0usize;
    while job.limit.is_none_or(|n| reviewed < n) {
        let Some(item) = queue.next(&mut client, &job.job_id).await? else {
            write(&mut out, "nothing left to review\n")?;
            break;
        };
        let top = top3(&item.probabilities);
        let choices: Vec<String> = top
            .iter()
            .zip(["a", "b", "c"])
            .map(|(&(class, p), key)| {
                let name = classes.get(class).map_or("?", String::as_str);
                format!("{key}) {name} {:.1} %", 100.0 * p)
            })
            .collect();
        let picture = item.image.as_ref().map(picture).unwrap_or_default();
        write(
            &mut out,
            &format!(
                "\n{picture}{} ({remaining} need review)\n{}\nkey: a/b/c, a class number{}, s skip, q quit > ",
                item.id,
                choices.join("   "),
                if keys.is_some() { "" } else { " or name" },
            ),
        )?;
        let answer = loop {
            let Some(text) = read_answer(keys.is_some()) else {
                break Answer::Quit;
            };
            match parse_answer(&text, &top, &classes) {
                Answer::Unknown(t) => write(
                    &mut out,
                    &format!("`{}` is not an answer; try again > ", t.trim()),
                )?,
                answer => break answer,
            }
        };
        match answer {
            Answer::Quit => break,
            Answer::Skip => {
                if queue.exhausted() {
                    write(&mut out, "\nno more items after this one\n")?;
                    break;
                }
            }
            Answer::Class(class) => {
                let saved = client
                    .submit_review(pb::SubmitReviewRequest {
                        job_id: job.job_id.clone(),
                        item_id: item.id.clone(),
                        class: Some(class),
                    })
                    .await?
                    .into_inner();
                write(&mut out, &format!("\n→ {}\n", saved.human_name))?;
                reviewed += 1;
                remaining = remaining.saturating_sub(1);
            }
            Answer::Unknown(_) => unreachable!("asked again above"),
        }
    }
    drop(keys);
    write(&mut out, &format!("\nreviewed {reviewed} items\n"))?;
    Ok(reviewed)
}

/// Where the next item to show comes from.
enum Queue {
    /// `NextItems` in the loop's order, a batch at a time.
    Loop(std::collections::VecDeque<pb::Item>),
    /// `ListItems` of items needing review, least confident first, after this cursor (empty
    /// at the start; `None` once the last page was read).
    LeastConfident(String),
}

/// Items `NextItems` hands the terminal at once.
const LOOP_BATCH: u32 = 50;

impl Queue {
    /// The next item to show, with its image and probabilities.
    async fn next(
        &mut self,
        client: &mut LabelJobsClient<super::Connection>,
        job_id: &str,
    ) -> Result<Option<pb::Item>, ClientError> {
        match self {
            Queue::Loop(batch) => {
                if batch.is_empty() {
                    let answer = client
                        .next_items(pb::NextItemsRequest {
                            job_id: job_id.to_string(),
                            count: LOOP_BATCH,
                            pick: pb::Pick::Loop as i32,
                            include_images: true,
                        })
                        .await;
                    match answer {
                        Ok(a) => {
                            batch.extend(a.into_inner().items.into_iter().filter_map(|i| i.item))
                        }
                        // Every item reviewed.
                        Err(s) if s.code() == tonic::Code::FailedPrecondition => return Ok(None),
                        Err(s) => return Err(s.into()),
                    }
                }
                Ok(batch.pop_front())
            }
            Queue::LeastConfident(cursor) => {
                if cursor == END {
                    return Ok(None);
                }
                let page = client
                    .list_items(pb::ListItemsRequest {
                        job_id: job_id.to_string(),
                        status: pb::ItemStatus::NeedsReview as i32,
                        page_size: 1,
                        cursor: cursor.clone(),
                        include_images: true,
                    })
                    .await?
                    .into_inner();
                *cursor = if page.next_cursor.is_empty() {
                    END.to_string()
                } else {
                    page.next_cursor
                };
                Ok(page.items.into_iter().next())
            }
        }
    }

    /// Whether nothing follows the item shown last (a skip then ends the review).
    fn exhausted(&self) -> bool {
        matches!(self, Queue::LeastConfident(c) if c == END)
    }
}

/// The cursor value that marks the last page as read.
const END: &str = "\u{0}end";

#[cfg(test)]
mod tests {
    use super::*;
    use pb::submit_review_request::Class;

    #[test]
    fn answers_pick_from_the_top_three_by_index_or_by_name() {
        let classes: Vec<String> = ["cat", "dog", "cow"].map(String::from).to_vec();
        let top = top3(&[0.2, 0.5, 0.3]);
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 2, 0]);
        assert_eq!(
            parse_answer("b\n", &top, &classes),
            Answer::Class(Class::ClassIndex(2))
        );
        assert_eq!(
            parse_answer("0", &top, &classes),
            Answer::Class(Class::ClassIndex(0))
        );
        assert_eq!(
            parse_answer("cow", &top, &classes),
            Answer::Class(Class::ClassName("cow".into()))
        );
        assert_eq!(
            parse_answer("3", &top, &classes),
            Answer::Unknown("3".into())
        );
        assert_eq!(parse_answer("s", &top, &classes), Answer::Skip);
        assert_eq!(parse_answer("q", &top, &classes), Answer::Quit);
    }

    #[test]
    fn a_picture_has_one_line_per_two_pixel_rows() {
        let image = pb::RawImage {
            width: 4,
            height: 4,
            pixels: vec![255; 16].into(),
        };
        let text = picture(&image);
        assert_eq!(text.lines().count(), 2);
        assert_eq!(text.matches('\u{2580}').count(), 8);
        assert!(text.contains("\x1b[38;2;255;255;255m"));
    }
}
