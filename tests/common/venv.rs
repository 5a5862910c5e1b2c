//! Python virtual environments for tests that drive third-party tools from PyPI, one per
//! pinned package set under `CARGO_TARGET_TMPDIR`: created on the first call of a run when
//! missing (a clean clone), reused after. Each keeps its own packages, so tools that pin
//! conflicting dependencies (tritonclient's older `protobuf`) do not meet.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The venv `name` under the target's temporary folder with `packages` (pip requirement
/// strings, pinned) installed. Its `installed` file is written last and lists the packages,
/// so an interrupted or outdated install is redone.
pub fn python_venv(name: &str, packages: &[&str]) -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let marker = venv.join("installed");
    let want = packages.join("\n");
    if std::fs::read_to_string(&marker).is_ok_and(|have| have == want) {
        return venv;
    }
    let _ = std::fs::remove_dir_all(&venv);
    let mut create = Command::new("python3");
    create.arg("-m").arg("venv").arg(&venv);
    let (code, out, err) = super::output_within(create);
    assert_eq!(
        code, 0,
        "python3 -m venv {venv:?} failed (on Debian: apt-get install python3-venv):\n{out}{err}"
    );
    let mut install = Command::new(venv.join("bin/pip"));
    install
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(packages);
    let (code, out, err) = super::output_within(install);
    assert_eq!(code, 0, "pip install {packages:?} failed:\n{out}{err}");
    std::fs::write(&marker, want).expect("the venv's marker file");
    venv
}
