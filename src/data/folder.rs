//! Image folders as data sets: PNG/JPEG files in class folders, or a flat folder labelled by a
//! `path,class` file, decoded in parallel into 8-bit grayscale at one input size.
//!
//! Layouts (extensions `.png`, `.jpg`, `.jpeg` in any case; names starting with `.` are
//! ignored, so `.git` or `.ipynb_checkpoints` never leak in):
//! - `DIR/<class>/**/*.png` are images of `<class>`; class names are sorted by bytes and
//!   indexed in that order (as torchvision's `ImageFolder` does). `DIR/unlabelled/**` (or
//!   `unlabeled/`) and images directly in `DIR` have no class.
//! - With a labels file, every image under `DIR` is read and the file's rows label some of them.
//!
//! Decoding happens twice over the file list: a header pass reads only each image's declared
//! size (to choose the input size when none is given), then a decode pass writes each image
//! straight into its slot of the output. Memory is the 8-bit output plus one decoded image per
//! worker thread. A file that cannot be read is skipped with a warning and listed in
//! [`FolderData::skipped`], or is an error under [`FolderOptions::strict`].

use super::decode::{declared_size, decode_to_input, sniff_format};
use super::labels_csv::read_labels_csv;
use super::{ClassId, DataError, ImageError, ImageLimits, ImageSet, Skipped};
use rayon::prelude::*;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsString;
use std::io::BufRead;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Largest width or height an image file may declare; a larger header is taken as corrupt.
pub const MAX_FILE_SIDE: u32 = 16_384;

/// The input size when none is given and the images do not all share one.
pub const DEFAULT_INPUT_SIZE: (usize, usize) = (28, 28);

/// File extensions read as images, compared case-insensitively.
const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Names of the folder holding unlabelled images in the class-folder layout.
const UNLABELLED: [&str; 2] = ["unlabelled", "unlabeled"];

/// How many class names an error message lists before it says "…".
const NAMES_SHOWN: usize = 20;

const LIMITS: ImageLimits = ImageLimits {
    max_side: MAX_FILE_SIDE,
};

/// How to read an image folder.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FolderOptions {
    /// Resize every image to this (width, height); None = the images' own size when all share
    /// one, else 28×28.
    pub input_size: Option<(usize, usize)>,
    /// A corrupt/unreadable image is an error instead of a skipped file with a warning.
    pub strict: bool,
    /// `path,class` CSV (paths relative to the folder) labelling a flat folder.
    pub labels_file: Option<PathBuf>,
    /// Class names to map onto (e.g. reading a test folder with the training set's classes):
    /// a class folder/CSV class not in the list is an error naming it. None = classes come
    /// from the data.
    pub class_names: Option<Vec<String>>,
}

/// An image folder read into memory: the images with their classes, and what was left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderData {
    /// The decoded images, in sorted path order, each with its class index or None.
    pub images: ImageSet,
    /// Class names; a label `k` in `images` means `class_names[k]`.
    pub class_names: Vec<String>,
    /// Image files that could not be read or decoded (empty under `strict`).
    pub skipped: Vec<Skipped>,
    /// The file of each image in `images`, same order.
    pub paths: Vec<PathBuf>,
}

/// True when `dir` holds IDX image files (`*-idx3-ubyte` or `*-idx3-ubyte.gz`), so it is read
/// as an IDX data set rather than as an image folder.
pub fn is_idx_dir(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        name.ends_with("-idx3-ubyte") || name.ends_with("-idx3-ubyte.gz")
    })
}

/// Reads the image folder `dir` (see the module docs for its layouts), calling
/// `progress(done, total)` from any thread as images finish.
pub fn read_image_folder(
    dir: &Path,
    options: &FolderOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<FolderData, DataError> {
    check_folder(dir)?;
    let listing = match &options.labels_file {
        Some(file) => labelled_by_file(dir, file, options.class_names.as_deref())?,
        None => class_folders(dir, options.class_names.as_deref())?,
    };
    if listing.files.is_empty() {
        let layout = if options.labels_file.is_some() {
            "images may sit anywhere under it"
        } else {
            "put each class's images in a subfolder named after the class, and images without a class in unlabelled/ or in the folder itself"
        };
        return Err(folder_error(
            dir,
            format!("holds no .png, .jpg or .jpeg images; {layout}"),
        ));
    }
    let decoded = decode_files(dir, &listing.files, options, progress)?;
    let labels = decoded.kept.iter().map(|&i| listing.labels[i]).collect();
    let paths = decoded
        .kept
        .iter()
        .map(|&i| listing.files[i].clone())
        .collect();
    Ok(FolderData {
        images: ImageSet {
            width: decoded.width,
            height: decoded.height,
            pixels: decoded.pixels,
            labels,
        },
        class_names: listing.class_names,
        skipped: decoded.skipped,
        paths,
    })
}

fn folder_error(path: &Path, reason: String) -> DataError {
    DataError::Folder {
        path: path.to_path_buf(),
        reason,
    }
}

fn check_folder(dir: &Path) -> Result<(), DataError> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(folder_error(
            dir,
            "is a file, not a folder; pass the folder that holds the images".to_string(),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(folder_error(
            dir,
            "does not exist; pass an existing image folder (or a folder of IDX files)".to_string(),
        )),
        Err(source) => Err(DataError::Io {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// Image files with their classes, sorted by path, before decoding.
struct Listing {
    files: Vec<PathBuf>,
    labels: Vec<Option<ClassId>>,
    class_names: Vec<String>,
}

impl Listing {
    /// Sorted by path so that the image order never depends on the file system.
    fn new(mut entries: Vec<(PathBuf, Option<ClassId>)>, class_names: Vec<String>) -> Self {
        entries.sort();
        let (files, labels) = entries.into_iter().unzip();
        Self {
            files,
            labels,
            class_names,
        }
    }
}

/// One visible directory entry, with symlinks followed.
struct Entry {
    name: OsString,
    path: PathBuf,
    is_dir: bool,
}

/// The entries of `dir` not starting with `.`, sorted by name. An entry whose metadata cannot
/// be read (a broken symlink) counts as a file, so that an image among them is reported as
/// unreadable instead of vanishing.
fn entries(dir: &Path) -> Result<Vec<Entry>, DataError> {
    let io = |source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        if name.as_encoded_bytes().starts_with(b".") {
            continue;
        }
        let path = entry.path();
        let is_dir = std::fs::metadata(&path).is_ok_and(|m| m.is_dir());
        out.push(Entry { name, path, is_dir });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Appends every image file under `dir`, recursively, following symlinks but entering each
/// real directory once (so a symlink loop ends).
fn image_files_under(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    fn walk(
        dir: &Path,
        seen: &mut HashSet<PathBuf>,
        out: &mut Vec<PathBuf>,
    ) -> Result<(), DataError> {
        let real = std::fs::canonicalize(dir).map_err(|source| DataError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        if !seen.insert(real) {
            return Ok(());
        }
        for entry in entries(dir)? {
            if entry.is_dir {
                walk(&entry.path, seen, out)?;
            } else if has_image_extension(&entry.path) {
                out.push(entry.path);
            }
        }
        Ok(())
    }
    walk(dir, &mut HashSet::new(), out)
}

/// `names` for a message: quoted, comma-separated, cut after [`NAMES_SHOWN`].
fn list_names(names: &[String]) -> String {
    let mut shown: Vec<String> = names
        .iter()
        .take(NAMES_SHOWN)
        .map(|n| format!("`{n}`"))
        .collect();
    if names.len() > NAMES_SHOWN {
        shown.push(format!("… ({} more)", names.len() - NAMES_SHOWN));
    }
    shown.join(", ")
}

fn need_two_classes(found: &str, fix: &str) -> String {
    format!("found {found}; aelabel needs at least two classes to train a classifier: {fix}")
}

/// The class-folder layout: `DIR/<class>/**`, `DIR/unlabelled/**` and images in `DIR`.
fn class_folders(dir: &Path, given: Option<&[String]>) -> Result<Listing, DataError> {
    let mut unlabelled = Vec::new();
    let mut classes: Vec<(String, PathBuf, Vec<PathBuf>)> = Vec::new();
    for entry in entries(dir)? {
        if !entry.is_dir {
            if has_image_extension(&entry.path) {
                unlabelled.push(entry.path);
            }
            continue;
        }
        let mut files = Vec::new();
        image_files_under(&entry.path, &mut files)?;
        if UNLABELLED.iter().any(|u| entry.name == *u) {
            unlabelled.append(&mut files);
            continue;
        }
        let Ok(name) = entry.name.into_string() else {
            return Err(folder_error(
                &entry.path,
                "class folder name is not valid UTF-8; rename the folder to the class name".into(),
            ));
        };
        classes.push((name, entry.path, files));
    }
    classes.sort_by(|a, b| a.0.cmp(&b.0));
    let class_names = match given {
        Some(names) => names.to_vec(),
        None => {
            if let [(name, _, _)] = classes.as_slice() {
                return Err(folder_error(
                    dir,
                    need_two_classes(
                        &format!("one class folder `{name}`"),
                        "add a folder of images for each class, or move these images into unlabelled/ if they have no class",
                    ),
                ));
            }
            if let Some((name, path, _)) = classes.iter().find(|c| c.2.is_empty()) {
                return Err(folder_error(
                    path,
                    format!("class folder `{name}` holds no .png, .jpg or .jpeg images; add images of that class or remove the folder"),
                ));
            }
            classes.iter().map(|c| c.0.clone()).collect()
        }
    };
    let mut labelled = Vec::new();
    for (name, path, files) in classes {
        let Some(id) = class_names.iter().position(|n| *n == name) else {
            return Err(folder_error(
                &path,
                format!(
                    "class folder `{name}` is not one of the {} known classes ({}); rename it to one of them, or move its images to unlabelled/",
                    class_names.len(),
                    list_names(&class_names)
                ),
            ));
        };
        labelled.extend(files.into_iter().map(|f| (f, Some(id as ClassId))));
    }
    labelled.extend(unlabelled.into_iter().map(|f| (f, None)));
    Ok(Listing::new(labelled, class_names))
}

/// A path as the labels file must spell it: relative to the folder, `/`-separated.
fn relative_key(dir: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(dir).unwrap_or(file);
    let parts: Vec<_> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect();
    parts.join("/")
}

/// A labels-file path in [`relative_key`] form (`./` and doubled `/` removed), or why it
/// cannot name a file inside the folder.
fn normalise_row_path(path: &str) -> Result<String, String> {
    let mut parts = Vec::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_string_lossy()),
            Component::CurDir => {}
            _ => {
                return Err(format!(
                    "path `{path}` leaves the image folder; write paths relative to the folder, without a leading / or .."
                ))
            }
        }
    }
    Ok(parts.join("/"))
}

/// The labels-file layout: every image under `DIR`, labelled by the rows of `labels_file`.
fn labelled_by_file(
    dir: &Path,
    labels_file: &Path,
    given: Option<&[String]>,
) -> Result<Listing, DataError> {
    let mut files = Vec::new();
    image_files_under(dir, &mut files)?;
    let index: HashMap<String, usize> = files
        .iter()
        .enumerate()
        .map(|(i, f)| (relative_key(dir, f), i))
        .collect();
    let rows = read_labels_csv(labels_file)?;
    if rows.is_empty() {
        return Err(folder_error(
            labels_file,
            "holds no `path,class` rows; add a row per labelled image".to_string(),
        ));
    }
    let class_names = match given {
        Some(names) => names.to_vec(),
        None => {
            let names: Vec<String> = rows
                .iter()
                .map(|r| r.class.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            if let [name] = names.as_slice() {
                return Err(folder_error(
                    labels_file,
                    need_two_classes(
                        &format!("one class `{name}`"),
                        "label images of at least two classes",
                    ),
                ));
            }
            names
        }
    };
    let row_error = |row: usize, reason: String| DataError::LabelsFile {
        path: labels_file.to_path_buf(),
        row,
        reason,
    };
    let mut labels: Vec<Option<ClassId>> = vec![None; files.len()];
    let mut labelled_on: HashMap<usize, usize> = HashMap::new();
    for row in &rows {
        let key = normalise_row_path(&row.path).map_err(|r| row_error(row.line, r))?;
        let Some(&i) = index.get(&key) else {
            let reason = if dir.join(&key).is_file() {
                format!("`{}` is not read as an image: only .png, .jpg and .jpeg files whose names do not start with `.` are", row.path)
            } else {
                format!(
                    "image `{}` does not exist under {}; paths are relative to the image folder",
                    row.path,
                    dir.display()
                )
            };
            return Err(row_error(row.line, reason));
        };
        if let Some(first) = labelled_on.insert(i, row.line) {
            return Err(row_error(
                row.line,
                format!(
                    "image `{}` is already labelled on row {first}; label each image once",
                    row.path
                ),
            ));
        }
        let Some(id) = class_names.iter().position(|n| *n == row.class) else {
            return Err(row_error(
                row.line,
                format!(
                    "class `{}` is not one of the {} known classes ({}); use one of them or leave the image unlabelled",
                    row.class,
                    class_names.len(),
                    list_names(&class_names)
                ),
            ));
        };
        labels[i] = Some(id as ClassId);
    }
    Ok(Listing::new(
        files.into_iter().zip(labels).collect(),
        class_names,
    ))
}

/// Why a file was not read.
enum Failure {
    Read(std::io::Error),
    Image(ImageError),
}

impl Failure {
    fn reason(&self) -> String {
        match self {
            Failure::Read(e) => format!("cannot be read: {e}"),
            Failure::Image(ImageError::UnknownFormat) => {
                "is neither a PNG nor a JPEG file (its first bytes match neither)".to_string()
            }
            Failure::Image(ImageError::Undecodable { format, reason }) => {
                format!("is not a valid {format} file: {reason}")
            }
            Failure::Image(ImageError::TooLarge { width, height, max }) => format!(
                "declares {width}×{height} pixels, over the {max}-pixel side limit, so it is taken as corrupt"
            ),
            Failure::Image(e) => e.to_string(),
        }
    }

    fn into_error(self, path: &Path) -> DataError {
        match self {
            Failure::Read(source) => DataError::Io {
                path: path.to_path_buf(),
                source,
            },
            Failure::Image(e) => DataError::Undecodable {
                path: path.to_path_buf(),
                reason: Failure::Image(e).reason(),
            },
        }
    }
}

/// The width and height `path` declares, reading only its header.
fn read_declared_size(path: &Path) -> Result<(u32, u32), Failure> {
    let file = std::fs::File::open(path).map_err(Failure::Read)?;
    let mut reader = std::io::BufReader::new(file);
    let format = sniff_format(reader.fill_buf().map_err(Failure::Read)?).map_err(Failure::Image)?;
    declared_size(reader, format, LIMITS).map_err(Failure::Image)
}

/// Decodes `path` into `out` (exactly `target` pixels).
fn decode_into(path: &Path, target: (u32, u32), out: &mut [u8]) -> Result<(), Failure> {
    let bytes = std::fs::read(path).map_err(Failure::Read)?;
    let pixels = decode_to_input(&bytes, target, LIMITS).map_err(Failure::Image)?;
    out.copy_from_slice(&pixels);
    Ok(())
}

/// Decoded images, in the order of the listing minus the files left out.
struct Decoded {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
    /// Listing index of each decoded image.
    kept: Vec<usize>,
    skipped: Vec<Skipped>,
}

/// Files left out so far, by listing index: an error under `strict` (the first file in
/// order), otherwise warnings.
fn settle(
    files: &[PathBuf],
    mut failures: Vec<(usize, Failure)>,
    strict: bool,
    skipped: &mut Vec<Skipped>,
) -> Result<(), DataError> {
    failures.sort_by_key(|f| f.0);
    let mut failures = failures.into_iter();
    if strict {
        return match failures.next() {
            Some((i, failure)) => Err(failure.into_error(&files[i])),
            None => Ok(()),
        };
    }
    for (i, failure) in failures {
        let reason = failure.reason();
        tracing::warn!(path = %files[i].display(), %reason, "skipping image {}: {reason}", files[i].display());
        skipped.push(Skipped {
            path: files[i].clone(),
            reason,
        });
    }
    Ok(())
}

/// The input size as u32 pixels, or why it cannot be used.
fn target_size(dir: &Path, (width, height): (usize, usize)) -> Result<(u32, u32), DataError> {
    let side = |s: usize| {
        u32::try_from(s)
            .ok()
            .filter(|&s| (1..=MAX_FILE_SIDE).contains(&s))
    };
    match (side(width), side(height)) {
        (Some(w), Some(h)) => Ok((w, h)),
        _ => Err(folder_error(
            dir,
            format!("input size {width}×{height} is not usable; each side must be 1 to {MAX_FILE_SIDE} pixels"),
        )),
    }
}

/// The header pass (only when no input size is given) then the decode pass.
fn decode_files(
    dir: &Path,
    files: &[PathBuf],
    options: &FolderOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Decoded, DataError> {
    let total = files.len();
    let mut skipped = Vec::new();
    let mut candidates: Vec<usize> = (0..total).collect();
    let size = match options.input_size {
        Some(size) => size,
        None => {
            let declared: Vec<_> = files.par_iter().map(|f| read_declared_size(f)).collect();
            let mut sizes = BTreeSet::new();
            let mut failures = Vec::new();
            candidates.clear();
            for (i, result) in declared.into_iter().enumerate() {
                match result {
                    Ok(size) => {
                        sizes.insert(size);
                        candidates.push(i);
                    }
                    Err(failure) => failures.push((i, failure)),
                }
            }
            if !failures.is_empty() {
                progress(failures.len(), total);
            }
            settle(files, failures, options.strict, &mut skipped)?;
            match sizes.into_iter().collect::<Vec<_>>().as_slice() {
                [(w, h)] => (*w as usize, *h as usize),
                _ => DEFAULT_INPUT_SIZE,
            }
        }
    };
    let target = target_size(dir, size)?;
    let image_size = size.0 * size.1;
    let mut pixels = allocate(dir, candidates.len(), size)?;
    let done = AtomicUsize::new(total - candidates.len());
    let stop = AtomicBool::new(false);
    // Failed slots, in order; under `strict` the first failure stops the others from starting.
    let failed: Vec<(usize, Failure)> = pixels
        .par_chunks_mut(image_size)
        .zip(candidates.par_iter())
        .enumerate()
        .filter_map(|(slot, (out, &i))| {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            let result = decode_into(&files[i], target, out);
            if result.is_err() && options.strict {
                stop.store(true, Ordering::Relaxed);
            }
            progress(done.fetch_add(1, Ordering::Relaxed) + 1, total);
            result.err().map(|failure| (slot, failure))
        })
        .collect();
    // Close the gaps the failed files left, keeping the order.
    let failed_slots: HashSet<usize> = failed.iter().map(|f| f.0).collect();
    let mut kept = Vec::with_capacity(candidates.len() - failed.len());
    for (slot, &i) in candidates.iter().enumerate() {
        if failed_slots.contains(&slot) {
            continue;
        }
        let to = kept.len() * image_size;
        if to != slot * image_size {
            pixels.copy_within(slot * image_size..(slot + 1) * image_size, to);
        }
        kept.push(i);
    }
    let failures = failed
        .into_iter()
        .map(|(slot, failure)| (candidates[slot], failure))
        .collect();
    settle(files, failures, options.strict, &mut skipped)?;
    skipped.sort_by(|a, b| a.path.cmp(&b.path));
    if kept.is_empty() {
        return Err(folder_error(
            dir,
            format!("none of its {total} image files could be decoded (see the warnings); replace the corrupt files"),
        ));
    }
    pixels.truncate(kept.len() * image_size);
    Ok(Decoded {
        width: size.0,
        height: size.1,
        pixels,
        kept,
        skipped,
    })
}

/// Zeroed room for `count` images of `width × height` bytes, refused (not aborted) when it
/// cannot be allocated.
fn allocate(
    dir: &Path,
    count: usize,
    (width, height): (usize, usize),
) -> Result<Vec<u8>, DataError> {
    let too_big = || {
        folder_error(
            dir,
            format!("{count} images of {width}×{height} pixels do not fit in memory; pass a smaller input size"),
        )
    };
    let bytes = count
        .checked_mul(width)
        .and_then(|n| n.checked_mul(height))
        .ok_or_else(too_big)?;
    let mut pixels = Vec::new();
    pixels.try_reserve_exact(bytes).map_err(|_| too_big())?;
    pixels.resize(bytes, 0);
    Ok(pixels)
}
