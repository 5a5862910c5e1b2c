//! What the client commands read: IDX files, folders of PNG/JPEG files, single image files.

use crate::data::{read_idx_images, read_idx_labels, DataError};
use crate::wire as pb;
use std::path::{Path, PathBuf};

/// One image to send, with the id its result row carries.
#[derive(Clone, Debug)]
pub struct Item {
    /// File path, or `FILE#index` for an image inside an IDX file.
    pub id: String,
    source: Source,
}

#[derive(Clone, Debug)]
enum Source {
    /// Pixels already in memory (from an IDX file).
    Raw {
        width: u32,
        height: u32,
        pixels: Vec<u8>,
    },
    /// A PNG/JPEG file, read when its batch is sent.
    File(PathBuf),
}

/// Everything named on the command line, in order.
#[derive(Debug, Default)]
pub struct Inputs {
    /// The images.
    pub items: Vec<Item>,
    /// True labels per item, when every input was an IDX file with a labels file beside it.
    pub labels: Option<Vec<u8>>,
}

/// Why the inputs could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// A path does not exist or cannot be listed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An IDX file is broken.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Nothing to send.
    #[error("no images found in {0}: pass IDX files, PNG/JPEG files, or folders holding them")]
    Empty(String),
}

fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

fn is_idx_images(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.contains("idx3-ubyte"))
}

/// The labels file that belongs to an IDX images file (`…-images-idx3-ubyte[.gz]` →
/// `…-labels-idx1-ubyte[.gz]`), if it exists.
fn labels_beside(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let labels = path.with_file_name(name.replace("images-idx3", "labels-idx1"));
    (labels != path && labels.is_file()).then_some(labels)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), InputError> {
    let io = |source| InputError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, out)?;
        } else if is_image_file(&path) {
            out.push(path);
        }
    }
    Ok(())
}

impl Inputs {
    /// Reads IDX files now and lists image files (read later, batch by batch).
    pub fn collect(paths: &[PathBuf]) -> Result<Self, InputError> {
        let mut items = Vec::new();
        let mut labels: Option<Vec<u8>> = Some(Vec::new());
        for path in paths {
            if path.is_dir() {
                let mut files = Vec::new();
                walk(path, &mut files)?;
                labels = None;
                items.extend(files.into_iter().map(|f| Item {
                    id: f.display().to_string(),
                    source: Source::File(f),
                }));
            } else if is_idx_images(path) {
                let idx = read_idx_images(path)?;
                let size = idx.rows * idx.cols;
                match (labels_beside(path), labels.as_mut()) {
                    (Some(file), Some(all)) => all.extend(read_idx_labels(&file, 256)?),
                    _ => labels = None,
                }
                let name = path.display();
                items.extend(
                    idx.pixels
                        .chunks_exact(size)
                        .enumerate()
                        .map(|(i, px)| Item {
                            id: format!("{name}#{i}"),
                            source: Source::Raw {
                                width: idx.cols as u32,
                                height: idx.rows as u32,
                                pixels: px.to_vec(),
                            },
                        }),
                );
            } else if path.is_file() {
                labels = None;
                items.push(Item {
                    id: path.display().to_string(),
                    source: Source::File(path.clone()),
                });
            } else {
                return Err(InputError::Io {
                    path: path.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "no such file or folder",
                    ),
                });
            }
        }
        if items.is_empty() {
            let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            return Err(InputError::Empty(names.join(", ")));
        }
        Ok(Self { items, labels })
    }
}

impl Item {
    /// The wire image, reading the file if the item is one.
    pub fn to_wire(&self) -> Result<pb::Image, InputError> {
        let data = match &self.source {
            Source::Raw {
                width,
                height,
                pixels,
            } => pb::image::Data::Raw(pb::RawImage {
                width: *width,
                height: *height,
                pixels: pixels.clone().into(),
            }),
            Source::File(path) => pb::image::Data::Encoded(
                std::fs::read(path)
                    .map_err(|source| InputError::Io {
                        path: path.clone(),
                        source,
                    })?
                    .into(),
            ),
        };
        Ok(pb::Image {
            id: self.id.clone(),
            data: Some(data),
        })
    }
}
