//! `deploy/k8s/`: every kustomization renders with `kubectl kustomize`, every rendered object
//! validates offline against the Kubernetes 1.30 and newest schemas (the PyPI package
//! `kubernetes-validate`, installed once into a venv under the target directory), and the
//! manifests name what the server really serves and reads: the probes ask the plaintext
//! health-only port and health names `aelabel serve` registers, the API keys and (cluster) TLS
//! certificate come from Secrets mounted where the server looks, and every `AELABEL_*`
//! variable is one the command accepts.

mod common;

use aelabel::service::{
    DEFAULT_GRPC_PORT, DEFAULT_HEALTH_PORT, DEFAULT_HTTP_PORT, SERVER_HEALTH_NAME,
};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The validator, pinned so its schemas do not change under the test.
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";

/// The oldest Kubernetes the manifests support, and the newest the validator knows.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

/// Every kustomization under `deploy/k8s/`.
const KUSTOMIZATIONS: [&str; 3] = ["base", "overlays/single-node", "overlays/cluster"];

/// The plain manifests under `deploy/k8s/jobs/`, applied with `kubectl apply -f`.
const PLAIN_MANIFESTS: [&str; 2] = ["load-fashion-mnist.yaml", "volume-shell.yaml"];

fn k8s_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/k8s")
}

/// The venv holding `kubernetes-validate` (see [`common::venv::python_venv`]).
fn venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        common::venv::python_venv("kubernetes-validate-1.37.0", &[KUBERNETES_VALIDATE])
    })
}

fn render(kustomization: &str) -> String {
    let mut kubectl = Command::new("kubectl");
    kubectl.arg("kustomize").arg(k8s_dir().join(kustomization));
    let (code, out, err) = common::output_within(kubectl);
    assert_eq!(code, 0, "kubectl kustomize {kustomization} failed:\n{err}");
    out
}

/// Validates every object in `yaml` against each of [`KUBERNETES_VERSIONS`], strictly (unknown
/// fields are errors); returns whether all passed and what the validator said.
fn validate(yaml: &str) -> (bool, String) {
    let file = tempfile::NamedTempFile::new().expect("a temporary file");
    std::fs::write(file.path(), yaml).expect("the rendered manifests written");
    let mut passed = true;
    let mut said = String::new();
    for version in KUBERNETES_VERSIONS {
        let mut validator = Command::new(venv().join("bin/kubernetes-validate"));
        validator
            .args(["--kubernetes-version", version, "--strict", "--quiet"])
            .arg(file.path());
        let (code, out, err) = common::output_within(validator);
        passed &= code == 0;
        said.push_str(&out);
        said.push_str(&err);
    }
    (passed, said)
}

/// The objects of a multi-document YAML stream, as JSON (read by the venv's PyYAML).
fn objects(yaml: &str) -> Vec<Value> {
    let mut python = Command::new(venv().join("bin/python"));
    python.args([
        "-c",
        "import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)",
    ]);
    let (code, out, err) = common::output_with_input(python, yaml.as_bytes());
    assert_eq!(code, 0, "the YAML does not parse:\n{err}");
    serde_json::from_str(&out).expect("JSON from the YAML")
}

fn rendered(kustomization: &str) -> Vec<Value> {
    objects(&render(kustomization))
}

/// The one object of `kind` named `name`, if there is one.
fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    let mut matching = objects
        .iter()
        .filter(|o| o["kind"] == kind && o["metadata"]["name"] == name);
    let found = matching.next();
    assert!(matching.next().is_none(), "two {kind} objects named {name}");
    found
}

fn get<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    find(objects, kind, name).unwrap_or_else(|| panic!("no {kind} named {name}"))
}

/// The `AELABEL_*` and `DATABASE_URL` variables `aelabel <command> --help` names.
fn accepted_variables(command: &str) -> BTreeSet<String> {
    let (code, out, err) = common::output_within({
        let mut c = common::clean_command();
        c.args([command, "--help"]);
        c
    });
    assert_eq!(code, 0, "aelabel {command} --help failed: {err}");
    let names: BTreeSet<String> = out
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split('=').next())
        .map(str::to_string)
        .collect();
    assert!(
        names.contains("DATABASE_URL"),
        "aelabel {command} --help names no DATABASE_URL; the parsing here is wrong:\n{out}"
    );
    names
}

#[test]
fn every_kustomization_renders_and_validates_against_kubernetes_schemas() {
    for kustomization in KUSTOMIZATIONS {
        let yaml = render(kustomization);
        assert!(
            objects(&yaml).len() >= 7,
            "{kustomization} renders only:\n{yaml}"
        );
        let (passed, said) = validate(&yaml);
        assert!(passed, "{kustomization} does not validate:\n{said}");
    }
    for manifest in PLAIN_MANIFESTS {
        let yaml = std::fs::read_to_string(k8s_dir().join("jobs").join(manifest))
            .expect("the manifest reads");
        let (passed, said) = validate(&yaml);
        assert!(passed, "jobs/{manifest} does not validate:\n{said}");
    }
}

#[test]
fn the_validator_refuses_a_misspelt_field() {
    let yaml = render("base").replace("readinessProbe:", "readinesProbe:");
    let (passed, said) = validate(&yaml);
    assert!(
        !passed,
        "a Deployment with `readinesProbe` validated:\n{said}"
    );
    assert!(said.contains("readinesProbe"), "{said}");
}

#[test]
fn probes_ask_the_port_and_health_names_the_server_registers() {
    for kustomization in KUSTOMIZATIONS {
        let objects = rendered(kustomization);
        let pod = &get(&objects, "Deployment", "aelabel")["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        // Every probe asks the whole server (no service name is the empty one), which is
        // SERVING with no model yet, so a fresh deployment is Ready to take label jobs; the
        // Labeller's own name would keep it out of the Service until a model is trained. They
        // ask the plaintext health-only port: Kubernetes' gRPC probes cannot speak TLS.
        for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
            let grpc = &container[probe]["grpc"];
            assert_eq!(
                grpc["port"], DEFAULT_HEALTH_PORT,
                "{kustomization}: {probe}"
            );
            assert_eq!(
                grpc["service"].as_str().unwrap_or(""),
                SERVER_HEALTH_NAME,
                "{kustomization}: {probe}"
            );
        }
        assert_eq!(
            container["ports"],
            serde_json::json!([
                {"name": "grpc", "containerPort": DEFAULT_GRPC_PORT},
                {"name": "http", "containerPort": DEFAULT_HTTP_PORT},
                {"name": "health", "containerPort": DEFAULT_HEALTH_PORT},
            ]),
            "{kustomization}"
        );
        let serve = &get(&objects, "ConfigMap", "aelabel-serve")["data"];
        assert_eq!(
            serve["AELABEL_ADDR"],
            format!("0.0.0.0:{DEFAULT_GRPC_PORT}"),
            "{kustomization}"
        );
        assert_eq!(
            serve["AELABEL_HTTP_ADDR"],
            format!("0.0.0.0:{DEFAULT_HTTP_PORT}"),
            "{kustomization}"
        );
        assert_eq!(
            serve["AELABEL_HEALTH_ADDR"],
            format!("0.0.0.0:{DEFAULT_HEALTH_PORT}"),
            "{kustomization}"
        );
        // The keys file is in the mounted Secret aelabel-api-keys, which the pod requires.
        let keys_file = serve["AELABEL_API_KEYS_FILE"]
            .as_str()
            .expect("a keys file");
        let keys = secret_mount(pod, "aelabel-api-keys");
        assert!(
            keys_file.starts_with(&format!("{keys}/")),
            "{kustomization}: {keys_file} is not in the Secret's mount {keys}"
        );
        let drain: f64 = serve["AELABEL_SHUTDOWN_GRACE_SECS"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("AELABEL_SHUTDOWN_GRACE_SECS is a number");
        let grace = pod["terminationGracePeriodSeconds"]
            .as_f64()
            .expect("terminationGracePeriodSeconds");
        assert!(
            grace > drain + 5.0,
            "{kustomization}: the pod is killed {grace} s after SIGTERM, the server drains for {drain} s"
        );
        for name in ["aelabel", "aelabel-headless"] {
            let service = get(&objects, "Service", name);
            assert_eq!(
                service["spec"]["selector"],
                get(&objects, "Deployment", "aelabel")["spec"]["selector"]["matchLabels"],
                "{kustomization}: Service {name} selects other pods than the Deployment's"
            );
            assert_eq!(
                service["spec"]["ports"][0]["targetPort"], "grpc",
                "{kustomization}: {name}"
            );
        }
        let security = &container["securityContext"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(security["readOnlyRootFilesystem"], true);
        assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert_eq!(
            container["image"],
            format!("aelabel:{}", env!("CARGO_PKG_VERSION")),
            "{kustomization}: the image tag is not the one deploy/build-image.sh builds"
        );
    }
}

/// Where the pod mounts the whole Secret `name` (no subPath: renewed files reach the pod);
/// asserts it is mounted read-only and required.
fn secret_mount(pod: &Value, name: &str) -> String {
    let volume = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["secret"]["secretName"] == name)
        .unwrap_or_else(|| panic!("no volume of the Secret {name}"));
    assert_ne!(volume["secret"]["optional"], true, "{name} is optional");
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .expect("volume mounts")
        .iter()
        .find(|m| m["name"] == volume["name"])
        .unwrap_or_else(|| panic!("the Secret {name} is not mounted"));
    assert_eq!(mount["readOnly"], true, "{name}");
    assert!(
        mount.get("subPath").is_none(),
        "{name} is mounted with subPath"
    );
    mount["mountPath"]
        .as_str()
        .expect("a mount path")
        .to_string()
}

/// The value of the container's variable `name` in the Deployment, if it sets one.
fn deployment_env(objects: &[Value], name: &str) -> Option<String> {
    get(objects, "Deployment", "aelabel")["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("an env list")
        .iter()
        .find(|v| v["name"] == name)
        .map(|v| v["value"].as_str().expect("a plain value").to_string())
}

#[test]
fn the_cluster_serves_tls_from_a_secret_and_single_node_stays_plaintext() {
    let cluster = rendered("overlays/cluster");
    let pod = &get(&cluster, "Deployment", "aelabel")["spec"]["template"]["spec"];
    let tls = secret_mount(pod, "aelabel-tls");
    for (variable, file) in [
        ("AELABEL_TLS_CERT", "tls.crt"),
        ("AELABEL_TLS_KEY", "tls.key"),
    ] {
        assert_eq!(
            deployment_env(&cluster, variable),
            Some(format!("{tls}/{file}")),
            "{variable}"
        );
    }
    let annotations =
        &get(&cluster, "Deployment", "aelabel")["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scheme"], "https");
    for name in ["aelabel", "aelabel-headless"] {
        for port in get(&cluster, "Service", name)["spec"]["ports"]
            .as_array()
            .expect("ports")
        {
            assert_eq!(port["appProtocol"], "https", "Service {name}: {port}");
        }
    }
    let single = rendered("overlays/single-node");
    assert_eq!(deployment_env(&single, "AELABEL_TLS_CERT"), None);
}

#[test]
fn manifests_set_only_variables_aelabel_reads() {
    let serve = accepted_variables("serve");
    let pipeline = accepted_variables("pipeline");
    for kustomization in KUSTOMIZATIONS {
        let objects = rendered(kustomization);
        for (config_map, accepted, command) in [
            ("aelabel-serve", &serve, "serve"),
            ("aelabel-train", &pipeline, "pipeline"),
        ] {
            let data = get(&objects, "ConfigMap", config_map)["data"]
                .as_object()
                .expect("ConfigMap data");
            assert!(!data.is_empty());
            for name in data.keys() {
                assert!(
                    accepted.contains(name),
                    "{kustomization}: ConfigMap {config_map} sets {name}, which `aelabel {command}` does not read"
                );
            }
        }
        for (kind, name, accepted) in [
            ("Deployment", "aelabel", &serve),
            ("Job", "aelabel-train", &pipeline),
        ] {
            let env =
                &get(&objects, kind, name)["spec"]["template"]["spec"]["containers"][0]["env"];
            for variable in env.as_array().expect("an env list") {
                let variable = variable["name"].as_str().expect("a name");
                // AELABEL_HOME is read by every command (config::aelabel_home), not a flag.
                let read = variable == "AELABEL_HOME"
                    || variable == "POD_NAME"
                    || accepted.contains(variable);
                assert!(
                    read,
                    "{kustomization}: {kind} {name} sets {variable}, which aelabel does not read"
                );
            }
        }
    }
}

#[test]
fn overlays_differ_as_their_readme_says() {
    let single = rendered("overlays/single-node");
    let cluster = rendered("overlays/cluster");
    let replicas =
        |objects: &[Value]| get(objects, "Deployment", "aelabel")["spec"]["replicas"].clone();
    let access = |objects: &[Value]| {
        get(objects, "PersistentVolumeClaim", "aelabel-home")["spec"]["accessModes"].clone()
    };
    let database_url = |objects: &[Value], kind: &str, name: &str| {
        let env = &get(objects, kind, name)["spec"]["template"]["spec"]["containers"][0]["env"];
        env.as_array()
            .expect("an env list")
            .iter()
            .find(|v| v["name"] == "DATABASE_URL")
            .expect("DATABASE_URL")["valueFrom"]["secretKeyRef"]
            .clone()
    };

    assert_eq!(replicas(&single), 1);
    assert!(find(&single, "HorizontalPodAutoscaler", "aelabel").is_none());
    assert!(find(&single, "PodDisruptionBudget", "aelabel").is_none());
    assert_eq!(access(&single), serde_json::json!(["ReadWriteOnce"]));
    assert_eq!(
        database_url(&single, "Deployment", "aelabel")["optional"],
        true
    );

    assert_eq!(replicas(&cluster), 3);
    let hpa = get(&cluster, "HorizontalPodAutoscaler", "aelabel");
    assert_eq!(hpa["spec"]["minReplicas"], 3);
    assert_eq!(hpa["spec"]["metrics"][0]["resource"]["name"], "cpu");
    assert!(find(&cluster, "PodDisruptionBudget", "aelabel").is_some());
    assert_eq!(access(&cluster), serde_json::json!(["ReadWriteMany"]));
    for (kind, name) in [
        ("Deployment", "aelabel"),
        ("Job", "aelabel-train"),
        ("Job", "aelabel-worker"),
    ] {
        let secret = database_url(&cluster, kind, name);
        assert_eq!(secret["name"], "aelabel-database", "{kind} {name}");
        assert_eq!(secret["optional"], false, "{kind} {name}");
    }
    let annotations =
        &get(&cluster, "Deployment", "aelabel")["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(
        annotations["prometheus.io/port"],
        DEFAULT_HTTP_PORT.to_string()
    );

    for objects in [&single, &cluster] {
        let job = get(objects, "Job", "aelabel-train");
        assert_eq!(
            job["spec"]["template"]["spec"]["containers"][0]["args"],
            serde_json::json!(["pipeline"])
        );
        // The Job and the servers share one AELABEL_HOME volume: models trained there are
        // found at the same path by every server.
        let claim = |kind: &str, name: &str| {
            get(objects, kind, name)["spec"]["template"]["spec"]["volumes"]
                .as_array()
                .expect("volumes")
                .iter()
                .find(|v| v["name"] == "home")
                .expect("a home volume")["persistentVolumeClaim"]["claimName"]
                .clone()
        };
        assert_eq!(claim("Job", "aelabel-train"), "aelabel-home");
        // The training worker writes job models where every replica reads them.
        assert_eq!(claim("Job", "aelabel-worker"), "aelabel-home");
        let worker = get(objects, "Job", "aelabel-worker");
        assert_eq!(
            worker["spec"]["template"]["spec"]["containers"][0]["args"],
            serde_json::json!(["worker", "--once"])
        );
        assert_eq!(claim("Deployment", "aelabel"), "aelabel-home");
    }
}
