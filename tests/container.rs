//! The container image `deploy/build-image.sh` built, run the way a cluster runs it: Debian's
//! podman starts it with the image's own user, a read-only root filesystem, a `/data` volume
//! holding a registered model, and published ports. It must serve that model (health, a
//! `Label` call, `/metrics`) and exit 0 on SIGTERM; and the image must stay small.
//!
//! These tests need root, podman and runc (`deploy/ensure-packages.sh --for-tests` installs
//! them) and the built image, so `cargo test` skips them; `.ci/test` runs them after
//! `deploy/build-image.sh` with `cargo test --release --locked --test container -- --ignored`.
//! `AELABEL_TEST_IMAGE` names another image [default: `aelabel:<crate version>`].

mod common;

use aelabel::wire as pb;
use common::server::{model_path, raw_image, test_images};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

/// The image's user (deploy/build-image.sh).
const IMAGE_UID: u32 = 65532;
/// The largest the image may be, uncompressed: the release binary (about 24 MB) plus glibc,
/// libm, libgcc_s and the loader (2.6 MB). A dependency that doubles the binary fails here.
const MAX_IMAGE_BYTES: u64 = 40 << 20;
/// How long the container may take to report `SERVING`.
const START_LIMIT: Duration = Duration::from_secs(60);

fn image() -> String {
    std::env::var("AELABEL_TEST_IMAGE")
        .unwrap_or_else(|_| format!("aelabel:{}", env!("CARGO_PKG_VERSION")))
}

/// `podman` on the storage buildah built the image in (vfs under /var/lib/containers), with
/// runc: crun 1.8 refuses this machine's hybrid cgroup v1/v2 layout ("cgroups in hybrid mode
/// not supported, drop all controllers from cgroupv2").
fn podman() -> Command {
    let mut command = Command::new("podman");
    command.args(["--storage-driver", "vfs", "--runtime", "runc"]);
    command
}

/// Runs podman with `args`; returns its exit code, stdout and stderr.
fn podman_output(args: &[&str]) -> (i32, String, String) {
    let mut command = podman();
    command.args(args);
    common::output_within(command)
}

/// Runs podman with `args` and returns its trimmed stdout; fails the test unless it exits 0.
fn podman_ok(args: &[&str]) -> String {
    let (code, stdout, stderr) = podman_output(args);
    assert_eq!(code, 0, "podman {args:?}: {stderr}");
    stdout.trim().to_string()
}

/// `podman run` flags every container here gets: the resource limits runc sets inside the
/// container must not exceed what this sandbox lets a process raise (podman's defaults,
/// 1,048,576 open files and 4,194,304 processes, are refused with EPERM here).
const RUN_LIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=16384:16384",
    "--ulimit",
    "nproc=4096:4096",
];

/// A container that is removed, whatever happens, when the test ends.
struct Container {
    name: String,
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman()
            .args(["rm", "--force", "--time", "0", &self.name])
            .output();
    }
}

/// A `/data` folder for the image's user holding the test model.
fn data_volume() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("aelabel-container-data-")
        .tempdir()
        .unwrap();
    std::fs::copy(model_path(), dir.path().join("model.safetensors")).unwrap();
    for path in [
        dir.path().to_path_buf(),
        dir.path().join("model.safetensors"),
    ] {
        std::os::unix::fs::chown(&path, Some(IMAGE_UID), Some(IMAGE_UID)).unwrap();
    }
    dir
}

/// The host address podman published `port` of `container` on.
fn published(container: &str, port: u16) -> SocketAddr {
    let text = podman_ok(&["port", container, &format!("{port}/tcp")]);
    let first = text.lines().next().unwrap_or_default();
    first
        .parse()
        .unwrap_or_else(|e| panic!("podman port {container} {port}: {text:?}: {e}"))
}

async fn labeller_health(addr: SocketAddr) -> Option<i32> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .ok()?
        .connect()
        .await
        .ok()?;
    let request = HealthCheckRequest {
        service: "aelabel.v1.Labeller".into(),
    };
    let answer = HealthClient::new(channel).check(request).await.ok()?;
    Some(answer.into_inner().status)
}

/// The user the container's main process runs as, read on the host from `/proc`.
fn process_uid(container: &str) -> u32 {
    let pid = podman_ok(&["inspect", "--format", "{{.State.Pid}}", container]);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no Uid line in /proc/{pid}/status"));
    uid.parse().unwrap()
}

/// Registers `/data/model.safetensors` through the image itself, so the registry's path is
/// the one the served container sees.
fn register_in_volume(volume: &Path) -> String {
    let mount = format!("{}:/data", volume.display());
    let image = image();
    let mut args = vec!["run", "--rm", "--read-only", "--volume", &mount];
    args.extend(RUN_LIMITS);
    args.extend([&image, "models", "register", "/data/model.safetensors"]);
    podman_ok(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, podman and the built image: .ci/test runs it after deploy/build-image.sh"]
async fn the_image_serves_its_volumes_model_as_its_user_and_stops_on_sigterm() {
    let volume = data_volume();
    let registered = register_in_volume(volume.path());
    let version = aelabel::model::Model::load(model_path())
        .unwrap()
        .meta
        .version;
    assert!(registered.contains(&version), "{registered}");
    assert!(registered.contains("active"), "{registered}");

    let container = Container {
        name: format!("aelabel-test-{}", std::process::id()),
    };
    let mount = format!("{}:/data", volume.path().display());
    let image = image();
    let mut args = vec!["run", "--detach", "--name", &container.name, "--read-only"];
    args.extend(["--volume", &mount]);
    args.extend([
        "--publish",
        "127.0.0.1::50051",
        "--publish",
        "127.0.0.1::9090",
    ]);
    args.extend(RUN_LIMITS);
    // The image's own entrypoint and command: `aelabel serve`, from the registry in /data.
    args.push(&image);
    let started = Instant::now();
    podman_ok(&args);
    let (grpc, http) = (
        published(&container.name, 50051),
        published(&container.name, 9090),
    );

    common::eventually(START_LIMIT, "the container's Labeller SERVING", || async {
        (labeller_health(grpc).await == Some(ServingStatus::Serving as i32)).then_some(())
    })
    .await;
    eprintln!("SERVING {:?} after podman run", started.elapsed());
    assert_eq!(process_uid(&container.name), IMAGE_UID);
    assert_eq!(
        podman_ok(&[
            "inspect",
            "--format",
            "{{.HostConfig.ReadonlyRootfs}}",
            &container.name
        ]),
        "true"
    );

    let (pixels, _) = test_images(3);
    let images = pixels
        .chunks_exact(784)
        .enumerate()
        .map(|(i, px)| raw_image(&format!("img-{i}"), px))
        .collect();
    let channel = tonic::transport::Channel::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let answer = pb::labeller_client::LabellerClient::new(channel)
        .label(pb::LabelRequest {
            images,
            review_threshold: None,
        })
        .await
        .expect("the container answers Label")
        .into_inner();
    assert_eq!(answer.model_version, version);
    let ids: Vec<&str> = answer.predictions.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["img-0", "img-1", "img-2"]);
    let metrics = common::metrics::scrape(http).await;
    let info = [("version", version.as_str())];
    assert_eq!(metrics.value("aelabel_model_info", &info), 1.0);

    // `podman stop` sends SIGTERM and waits (SIGKILL after 30 s would exit 137).
    let stopping = Instant::now();
    podman_ok(&["stop", "--time", "30", &container.name]);
    let took = stopping.elapsed();
    let state = podman_ok(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.ExitCode}}",
        &container.name,
    ]);
    let (_, logs, log_err) = podman_output(&["logs", &container.name]);
    assert_eq!(state, "exited 0", "after {took:?}; logs:\n{logs}{log_err}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    let logs = format!("{logs}{log_err}");
    assert!(
        logs.contains("shutting down: finishing in-flight requests"),
        "{logs}"
    );
}

#[test]
#[ignore = "needs podman and the built image: .ci/test runs it after deploy/build-image.sh"]
fn the_image_is_under_40_mib() {
    let bytes: u64 = podman_ok(&["image", "inspect", "--format", "{{.Size}}", &image()])
        .parse()
        .unwrap();
    eprintln!("{} is {bytes} bytes", image());
    assert!(
        bytes <= MAX_IMAGE_BYTES,
        "{} is {bytes} bytes, over the {MAX_IMAGE_BYTES}-byte bound",
        image()
    );
    assert!(bytes > 10 << 20, "{bytes} bytes cannot hold the binary");
}
