//! The Kubernetes manifests in `deploy/k8s/`, checked offline: every kustomization builds
//! with `kubectl kustomize` and passes a strict schema check (`kubernetes-validate`, which
//! scripts/test.sh installs) for the oldest and newest Kubernetes they target; the relay.toml
//! the pods run passes `ferry-relay check-config` after the pod's own init script
//! (prepare.sh) has assembled it; and the manifests keep the promises their comments make
//! (grace period over drain deadline, probes on the admin port, one node entry and Service
//! per pod the autoscaler may run, the restricted security context).
//!
//! The README's blocks that need no cluster are run as written: the overlay that replaces
//! the placeholder Secrets, and the validation by hand. prepare.sh runs under the machine's
//! `sh` here (POSIX, as the pod's busybox `sh`).
//!
//! Without `kubectl` the tests print SKIPPED and pass; a missing validator is a failure,
//! since the test script installs it.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

const RELAY: &str = env!("CARGO_BIN_EXE_ferry-relay");
const CERT: &str = env!("CARGO_BIN_EXE_ferry-cert");
const K8S: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/k8s");
/// Oldest (the preStop `sleep` action is on by default from 1.30) and newest versions the
/// manifests are checked against.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];
/// Longest any one offline command may take; kustomize and the validator need a second or two.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// Where the StatefulSet mounts what prepare.sh reads and writes.
const POD_SOURCE: &str = "/etc/ferry-relay";
const POD_OUT: &str = "/run/ferry-relay";

/// Runs `command` with `stdin` fed to it, bounded by [`COMMAND_TIMEOUT`]; `None` if the
/// program does not exist.
fn run(command: &mut Command, stdin: &[u8]) -> Option<Output> {
    let mut child = match command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("cannot start {command:?}: {e}"),
    };
    let pid = child.id();
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    // Fed from a thread, so a child that writes much before reading cannot deadlock with us.
    let feeder = std::thread::spawn(move || input.write_all(&stdin));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let output = match rx.recv_timeout(COMMAND_TIMEOUT) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let pid = rustix::process::Pid::from_raw(pid.try_into().unwrap()).unwrap();
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            panic!("{command:?} did not finish within {COMMAND_TIMEOUT:?}");
        }
    };
    // A validator that exits without reading all of its input breaks the pipe: not ours to judge.
    let _ = feeder.join().unwrap();
    Some(output)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether kubectl is here; prints why the test is skipped if not.
fn have_kubectl() -> bool {
    let found = run(Command::new("kubectl").args(["version", "--client"]), b"").is_some();
    if !found {
        // Past the test harness's capture (which `eprintln!` goes to), so a skip is seen.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: kubectl is not installed, so deploy/k8s is not validated (install kubectl to test it)"
        );
    }
    found
}

/// Every directory under deploy/k8s with a kustomization that builds on its own (components
/// are built through the overlays that include them), relative to deploy/k8s.
fn kustomizations() -> Vec<String> {
    fn walk(dir: &Path, found: &mut Vec<String>) {
        let file = dir.join("kustomization.yaml");
        if let Ok(text) = std::fs::read_to_string(&file) {
            if !text.lines().any(|line| line.trim() == "kind: Component") {
                let relative = dir.strip_prefix(K8S).unwrap().to_string_lossy().into_owned();
                found.push(if relative.is_empty() { ".".into() } else { relative });
            }
        }
        let mut entries: Vec<PathBuf> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
        entries.sort();
        for entry in entries {
            walk(&entry, found);
        }
    }
    let mut found = Vec::new();
    walk(Path::new(K8S), &mut found);
    // The ones README.md names must stay: a renamed overlay fails here, not silently untested.
    for expected in [".", "base", "redirect", "forward", "try"] {
        assert!(found.iter().any(|f| f == expected), "deploy/k8s/{expected} has no kustomization.yaml: {found:?}");
    }
    found
}

/// `kubectl kustomize deploy/k8s/<dir>`: the YAML stream.
fn build(dir: &str) -> String {
    let out = run(Command::new("kubectl").arg("kustomize").arg(Path::new(K8S).join(dir)), b"").unwrap();
    assert!(out.status.success(), "kubectl kustomize deploy/k8s/{dir} failed:\n{}", text(&out.stderr));
    text(&out.stdout)
}

/// The objects of a YAML stream, read by the PyYAML that kubernetes-validate brings along.
fn objects(yaml: &str) -> Vec<Value> {
    let script = "import json, sys, yaml\njson.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)";
    let out = run(Command::new("python3").args(["-c", script]), yaml.as_bytes())
        .expect("python3 is not installed (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "reading the YAML failed (PyYAML comes with kubernetes-validate):\n{}",
        text(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout).unwrap() {
        Value::Array(objects) => objects,
        other => panic!("not a list of objects: {other}"),
    }
}

fn find<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found = find(objects, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
    found[0]
}

fn str_of(value: &Value) -> &str {
    value.as_str().unwrap_or_else(|| panic!("not a string: {value}"))
}

/// The text under `key` of the ConfigMap's or Secret's `data`.
fn data(object: &Value, key: &str) -> Vec<u8> {
    let value = str_of(&object["data"][key]);
    if object["kind"] == "Secret" {
        // kustomize wraps long values; the API server ignores the line breaks.
        let joined: String = value.split_whitespace().collect();
        data_encoding::BASE64.decode(joined.as_bytes()).unwrap()
    } else {
        value.as_bytes().to_vec()
    }
}

/// The value of `key = ...` in `[section]` of a TOML text (the first such line); enough
/// for the plain keys these tests read.
fn toml_value(text: &str, section: &str, key: &str) -> Option<String> {
    let mut current = String::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            current = line.to_owned();
        } else if current == section {
            if let Some((k, v)) = line.split_once('=') {
                if k.trim() == key {
                    return Some(v.trim().trim_matches('"').to_owned());
                }
            }
        }
    }
    None
}

#[test]
fn every_kustomization_passes_strict_schema_validation() {
    if !have_kubectl() {
        return;
    }
    for dir in kustomizations() {
        let yaml = build(&dir);
        // Something to validate: an empty stream would pass.
        assert!(!find(&objects(&yaml), "StatefulSet").is_empty(), "deploy/k8s/{dir} builds no StatefulSet");
        for version in KUBERNETES_VERSIONS {
            let validate = ["-m", "kubernetes_validate", "--strict", "--quiet", "-k", version, "-"];
            let out = run(Command::new("python3").args(validate), yaml.as_bytes()).expect("python3 is not installed");
            let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
            assert!(
                !report.contains("No module named kubernetes_validate"),
                "kubernetes-validate is not installed: `python3 -m pip install kubernetes-validate` (scripts/test.sh does)"
            );
            assert!(out.status.success(), "deploy/k8s/{dir} fails validation against Kubernetes {version}:\n{report}");
            assert!(!report.contains("ERROR"), "deploy/k8s/{dir}, Kubernetes {version}:\n{report}");
        }
        eprintln!("deploy/k8s/{dir}: valid for Kubernetes {}", KUBERNETES_VERSIONS.join(" and "));
    }
}

/// A pod's view of its volumes, laid out in a temporary directory from one build: the
/// ConfigMap's and Secret's keys as files, and a fresh certificate in place of the
/// ferry-relay-tls Secret the operator creates.
struct PodFiles {
    dir: tempfile::TempDir,
}

impl PodFiles {
    fn new(objects: &[Value]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = one(objects, "ConfigMap");
        let secret = one(objects, "Secret");
        for (object, sub) in [(config, "config"), (secret, "secret")] {
            std::fs::create_dir_all(dir.path().join("src").join(sub)).unwrap();
            for key in object["data"].as_object().unwrap().keys() {
                std::fs::write(dir.path().join("src").join(sub).join(key), data(object, key)).unwrap();
            }
        }
        let made = dir.path().join("made");
        let out = run(Command::new(CERT).args(["self-signed", "--name", "relay.example.org", "--out"]).arg(&made), b"")
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        let tls = dir.path().join("src/tls");
        std::fs::create_dir_all(&tls).unwrap();
        std::fs::copy(made.join("cert.pem"), tls.join("tls.crt")).unwrap();
        std::fs::copy(made.join("key.pem"), tls.join("tls.key")).unwrap();
        // As a Secret volume with fsGroup shows it: group-readable.
        std::fs::set_permissions(tls.join("tls.key"), std::fs::Permissions::from_mode(0o440)).unwrap();
        Self { dir }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// Runs the ConfigMap's prepare.sh as the init container does.
    fn prepare(&self, fleet: &str) -> Output {
        let out = run(
            Command::new("sh")
                .arg(self.path("src/config/prepare.sh"))
                .env("FERRY_PREPARE_SRC", self.path("src"))
                .env("FERRY_PREPARE_OUT", self.path("out"))
                .env("FERRY_FLEET", fleet),
            b"",
        );
        out.expect("sh is not installed")
    }

    /// `ferry-relay check-config` on what prepare.sh wrote, with the pod's paths pointing
    /// into the temporary directory.
    fn check_config(&self) -> Output {
        let written = std::fs::read_to_string(self.path("out/relay.toml")).unwrap();
        let here = written.replace(POD_OUT, &self.path("out").to_string_lossy());
        std::fs::write(self.path("check.toml"), here).unwrap();
        // As in the pod, whose host name is its own name.
        run(Command::new(RELAY).arg("check-config").arg(self.path("check.toml")).env("HOSTNAME", "relay-0"), b"")
            .unwrap()
    }
}

#[test]
fn the_pods_config_passes_check_config() {
    if !have_kubectl() {
        return;
    }
    for dir in [".", "forward"] {
        let objects = objects(&build(dir));
        let pod = PodFiles::new(&objects);

        let out = pod.prepare("off");
        assert!(out.status.success(), "deploy/k8s/{dir}: prepare.sh failed:\n{}", text(&out.stderr));
        for key in ["out/tls/key.pem", "out/tls/cert.pem"] {
            let mode = std::fs::metadata(pod.path(key)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{key} has mode {mode:o}: the relay refuses a key others can read");
        }
        let out = pod.check_config();
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "deploy/k8s/{dir}: check-config refuses the pods' relay.toml:\n{stdout}{}",
            text(&out.stderr)
        );
        assert!(stdout.contains(": ok (open mode"), "{stdout}");

        // Closed, with the example token of tokens.toml uncommented: the appended tables
        // still belong to [access].
        let relay_toml = std::fs::read_to_string(pod.path("src/config/relay.toml")).unwrap();
        assert!(relay_toml.contains("mode = \"open\""), "relay.toml no longer sets mode = \"open\"");
        std::fs::write(pod.path("src/config/relay.toml"), relay_toml.replace("mode = \"open\"", "mode = \"closed\""))
            .unwrap();
        let tokens = std::fs::read_to_string(pod.path("src/secret/tokens.toml")).unwrap();
        let mut uncommented = String::new();
        let mut in_rule = false;
        for line in tokens.lines() {
            let bare = line.strip_prefix("# ").unwrap_or(line);
            in_rule |= bare == "[[access.token]]";
            uncommented.push_str(if in_rule { bare } else { line });
            uncommented.push('\n');
        }
        std::fs::write(pod.path("src/secret/tokens.toml"), uncommented).unwrap();
        assert!(pod.prepare("off").status.success());
        let out = pod.check_config();
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "deploy/k8s/{dir}: closed mode with the example token:\n{stdout}{}",
            text(&out.stderr)
        );
        assert!(stdout.contains("closed mode") && stdout.contains("1 token(s)"), "{stdout}");
    }
}

#[test]
fn the_fleet_section_waits_for_a_real_secret() {
    if !have_kubectl() {
        return;
    }
    for dir in [".", "forward"] {
        let objects = objects(&build(dir));
        let pod = PodFiles::new(&objects);
        // The placeholder fleet secret is public: refused.
        let out = pod.prepare("on");
        assert!(!out.status.success(), "deploy/k8s/{dir}: prepare.sh took the placeholder fleet secret");
        assert!(text(&out.stderr).contains("placeholder"), "{}", text(&out.stderr));
        // Too short: refused.
        std::fs::write(pod.path("src/secret/fleet-secret"), [7u8; 31]).unwrap();
        assert!(!pod.prepare("on").status.success(), "deploy/k8s/{dir}: prepare.sh took a 31-byte fleet secret");

        std::fs::write(pod.path("src/secret/fleet-secret"), [7u8; 32]).unwrap();
        let out = pod.prepare("on");
        assert!(out.status.success(), "{}", text(&out.stderr));
        let mode = std::fs::metadata(pod.path("out/fleet-secret")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let written = std::fs::read_to_string(pod.path("out/relay.toml")).unwrap();
        let mode = toml_value(&written, "[fleet]", "mode").expect("fleet.toml sets [fleet] mode");
        assert_eq!(mode, if dir == "forward" { "forward" } else { "redirect" }, "deploy/k8s/{dir}");
        // The relay takes the whole file, fleet and all.
        let out = pod.check_config();
        let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(
            out.status.success() && report.contains(": ok ("),
            "deploy/k8s/{dir}: fleet.toml is refused:\n{report}"
        );
        assert!(report.contains("fleet node `relay-0` of 5"), "{report}");
    }
}

/// The pod template's containers and init containers.
fn containers(workload: &Value) -> Vec<&Value> {
    let spec = &workload["spec"]["template"]["spec"];
    let mut all: Vec<&Value> = spec["initContainers"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
    all.extend(spec["containers"].as_array().unwrap());
    all
}

fn container<'a>(statefulset: &'a Value, name: &str) -> &'a Value {
    containers(statefulset).into_iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no container {name}"))
}

fn mounts(container: &Value) -> BTreeSet<(String, String)> {
    container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (str_of(&m["name"]).to_owned(), str_of(&m["mountPath"]).to_owned()))
        .collect()
}

#[test]
fn the_manifests_keep_their_promises() {
    if !have_kubectl() {
        return;
    }
    for dir in [".", "forward", "try"] {
        let objects = objects(&build(dir));
        let at = format!("deploy/k8s/{dir}");
        for object in &objects {
            if object["kind"] != "Namespace" {
                assert_eq!(
                    object["metadata"]["namespace"], "ferry",
                    "{at}: {} outside the namespace",
                    object["metadata"]["name"]
                );
            }
        }
        let statefulset = one(&objects, "StatefulSet");
        let config = one(&objects, "ConfigMap");
        let relay_toml = text(&data(config, "relay.toml"));
        let fleet_toml = text(&data(config, "fleet.toml"));
        let pod = &statefulset["spec"]["template"]["spec"];

        // The HPA owns the count.
        assert!(
            statefulset["spec"].get("replicas").is_none(),
            "{at}: the StatefulSet sets replicas, which fights the HPA"
        );

        // Restricted security context everywhere (the relays and the try/ Redis).
        for workload in find(&objects, "StatefulSet").into_iter().chain(find(&objects, "Deployment")) {
            let pod = &workload["spec"]["template"]["spec"];
            let name = &workload["metadata"]["name"];
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{at}: {name}");
            assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault", "{at}: {name}");
            assert_eq!(pod["automountServiceAccountToken"], false, "{at}: {name}");
        }
        for c in find(&objects, "StatefulSet").into_iter().chain(find(&objects, "Deployment")).flat_map(containers) {
            let name = &c["name"];
            let security = &c["securityContext"];
            assert_eq!(security["allowPrivilegeEscalation"], false, "{at}: {name}");
            assert_eq!(security["readOnlyRootFilesystem"], true, "{at}: {name}");
            assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]), "{at}: {name}");
            assert!(
                security["capabilities"].get("add").is_none() && security.get("privileged").is_none(),
                "{at}: {name}"
            );
            assert!(c["resources"]["limits"]["memory"].is_string(), "{at}: {name} has no memory limit");
        }

        // The pod's paths are the ones prepare.sh and relay.toml use.
        let prepare = container(statefulset, "prepare");
        let expected: BTreeSet<(String, String)> = [
            ("config", format!("{POD_SOURCE}/config")),
            ("secrets", format!("{POD_SOURCE}/secret")),
            ("tls", format!("{POD_SOURCE}/tls")),
            ("run", POD_OUT.to_owned()),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b))
        .collect();
        assert_eq!(mounts(prepare), expected, "{at}: prepare's mounts");
        assert_eq!(prepare["command"], serde_json::json!(["sh", format!("{POD_SOURCE}/config/prepare.sh")]), "{at}");
        let relay = container(statefulset, "relay");
        let config_path = format!("{POD_OUT}/relay.toml");
        assert_eq!(relay["args"], serde_json::json!(["--config", config_path]), "{at}");
        assert_eq!(
            container(statefulset, "check-config")["args"],
            serde_json::json!(["check-config", config_path]),
            "{at}"
        );
        assert_eq!(
            relay["image"],
            container(statefulset, "check-config")["image"],
            "{at}: check-config checks with another relay"
        );
        for c in [relay, container(statefulset, "check-config")] {
            assert!(mounts(c).iter().all(|(_, path)| path == POD_OUT), "{at}: {} sees the raw Secrets", c["name"]);
        }
        assert_eq!(toml_value(&relay_toml, "[relay]", "cert").unwrap(), format!("{POD_OUT}/tls/cert.pem"));
        assert_eq!(toml_value(&relay_toml, "[relay]", "key").unwrap(), format!("{POD_OUT}/tls/key.pem"));
        assert_eq!(toml_value(&fleet_toml, "[fleet]", "secret_file").unwrap(), format!("{POD_OUT}/fleet-secret"));

        // Probes reach /healthz where the admin listener binds: on every address of the pod.
        let admin = toml_value(&relay_toml, "[admin]", "listen").expect("relay.toml sets [admin] listen");
        let (host, port) = admin.rsplit_once(':').unwrap();
        assert!(
            host == "0.0.0.0" || host == "[::]",
            "{at}: the admin listener binds {host}, which the kubelet cannot reach"
        );
        let admin_port =
            relay["ports"].as_array().unwrap().iter().find(|p| p["name"] == "admin").expect("an admin port");
        assert_eq!(admin_port["containerPort"].to_string(), port, "{at}");
        for probe in ["readinessProbe", "livenessProbe"] {
            assert_eq!(relay[probe]["httpGet"]["path"], "/healthz", "{at}: {probe}");
            assert_eq!(relay[probe]["httpGet"]["port"], "admin", "{at}: {probe}");
        }

        // The memory limit holds what relay.toml lets the relay take: the session buffers,
        // about 120 KiB per open QUIC connection (deploy/relay.toml), and the process.
        let limit = str_of(&relay["resources"]["limits"]["memory"]);
        let limit: u64 = match limit.strip_suffix("Mi") {
            Some(mib) => mib.parse::<u64>().unwrap() << 20,
            None => limit.strip_suffix("Gi").expect("a memory limit in Mi or Gi").parse::<u64>().unwrap() << 30,
        };
        let budget: u64 = toml_value(&relay_toml, "[limits]", "buffer_budget").unwrap().parse().unwrap();
        let connections: u64 = toml_value(&relay_toml, "[limits]", "max_connections").unwrap().parse().unwrap();
        let needed = budget + connections * (120 << 10) + (128 << 20);
        assert!(limit >= needed, "{at}: memory limit {limit} below the {needed} bytes relay.toml [limits] allows");

        // The kubelet's SIGKILL comes after the preStop pause and the relay's drain.
        let deadline: u64 = toml_value(&relay_toml, "[relay]", "shutdown_deadline_secs").unwrap().parse().unwrap();
        let pause = relay["lifecycle"]["preStop"]["sleep"]["seconds"].as_u64().expect("a preStop sleep");
        let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
        assert!(
            grace >= pause + deadline + 5,
            "{at}: grace {grace}s leaves no time after preStop {pause}s + drain {deadline}s"
        );

        // Every pod the HPA may run is a node of the fleet, with an address of its own in
        // redirect mode.
        let hpa = one(&objects, "HorizontalPodAutoscaler");
        assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], statefulset["metadata"]["name"], "{at}");
        let (min, max) = (hpa["spec"]["minReplicas"].as_u64().unwrap(), hpa["spec"]["maxReplicas"].as_u64().unwrap());
        assert!(min >= 2, "{at}: with fewer than two nodes a host has nowhere to register twice");
        let name = str_of(&statefulset["metadata"]["name"]);
        let services = find(&objects, "Service");
        let per_pod: BTreeSet<&str> = services
            .iter()
            .filter_map(|s| s["spec"]["selector"]["statefulset.kubernetes.io/pod-name"].as_str())
            .collect();
        let redirect = toml_value(&fleet_toml, "[fleet]", "mode").unwrap() == "redirect";
        for n in 0..max {
            let pod = format!("{name}-{n}");
            assert!(toml_value(&fleet_toml, "[fleet.nodes]", &pod).is_some(), "{at}: fleet.toml lists no {pod}");
            assert!(!redirect || per_pod.contains(pod.as_str()), "{at}: redirect mode, but {pod} has no Service");
        }
        if !redirect {
            assert!(per_pod.is_empty(), "{at}: per-pod Services in forward mode");
        }
        let headless = services.iter().find(|s| s["metadata"]["name"] == statefulset["spec"]["serviceName"]).unwrap();
        assert_eq!(headless["spec"]["clusterIP"], "None", "{at}: the StatefulSet's Service is not headless");

        // Whatever faces outside carries the relay port on both UDP and TCP, never admin.
        for service in services.iter().filter(|s| s["spec"]["type"] == "LoadBalancer") {
            let ports: BTreeSet<String> = service["spec"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| format!("{}/{}", p["port"], str_of(&p["protocol"])))
                .collect();
            let expected: BTreeSet<String> = ["4433/UDP".to_owned(), "4433/TCP".to_owned()].into();
            assert_eq!(ports, expected, "{at}: {}", service["metadata"]["name"]);
            assert_eq!(service["spec"]["externalTrafficPolicy"], "Local", "{at}: source addresses are lost");
        }

        // The PDB covers the relay pods.
        let pdb = one(&objects, "PodDisruptionBudget");
        assert_eq!(pdb["spec"]["selector"]["matchLabels"], statefulset["spec"]["selector"]["matchLabels"], "{at}");
        assert_eq!(pdb["spec"]["maxUnavailable"], 1, "{at}");
    }
}

/// The shell block of deploy/k8s/README.md that contains `needle`.
fn readme_block(needle: &str) -> String {
    let readme = std::fs::read_to_string(Path::new(K8S).join("README.md")).unwrap();
    let blocks: Vec<&str> =
        readme.split("```sh\n").skip(1).filter_map(|rest| rest.split_once("```")).map(|b| b.0).collect();
    let found: Vec<&&str> = blocks.iter().filter(|b| b.contains(needle)).collect();
    assert_eq!(found.len(), 1, "deploy/k8s/README.md has {} sh blocks with {needle:?}", found.len());
    found[0].to_string()
}

#[test]
fn the_readmes_validation_by_hand_runs() {
    if !have_kubectl() {
        return;
    }
    let block = readme_block("kubernetes_validate");
    // pipefail: a kustomize failure must not pass as an empty, valid stream.
    let bash = ["-e", "-o", "pipefail", "-c", &block];
    let out = run(Command::new("bash").args(bash).current_dir(env!("CARGO_MANIFEST_DIR")), b"").unwrap();
    let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "the README's validation fails:\n{report}\n--- block ---\n{block}");
    assert!(report.contains("passed for resource statefulset/relay"), "{report}");
}

#[test]
fn the_readmes_own_overlay_replaces_the_placeholders() {
    if !have_kubectl() {
        return;
    }
    // As the README says: run from a directory beside deploy/.
    let work = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy"), work.path().join("deploy"))
        .unwrap();
    let block = readme_block("secretGenerator");
    let out = run(Command::new("sh").args(["-e", "-c", &block]).current_dir(work.path()), b"").unwrap();
    assert!(
        out.status.success(),
        "the README's block failed:\n{}{}\n--- block ---\n{block}",
        text(&out.stdout),
        text(&out.stderr)
    );

    let fleet = work.path().join("my-fleet");
    let out = run(Command::new("kubectl").arg("kustomize").arg(&fleet), b"").unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let objects = objects(&text(&out.stdout));
    let secret = one(&objects, "Secret");
    let statefulset = one(&objects, "StatefulSet");
    // The pods use the replaced Secret, by its new hashed name.
    let volumes = statefulset["spec"]["template"]["spec"]["volumes"].as_array().unwrap();
    let used = volumes.iter().find(|v| v["name"] == "secrets").unwrap();
    assert_eq!(used["secret"]["secretName"], secret["metadata"]["name"]);
    assert_eq!(data(secret, "fleet-secret"), std::fs::read(fleet.join("fleet-secret")).unwrap());
    assert_eq!(data(secret, "redis-url"), std::fs::read(fleet.join("redis-url")).unwrap());

    // And prepare.sh takes the real fleet secret where it refuses the placeholder.
    let pod = PodFiles::new(&objects);
    let out = pod.prepare("on");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read(pod.path("out/fleet-secret")).unwrap(),
        std::fs::read(fleet.join("fleet-secret")).unwrap()
    );
}

#[test]
fn prepare_names_a_missing_secret_and_takes_an_empty_token_list() {
    if !have_kubectl() {
        return;
    }
    let objects = objects(&build("."));
    let pod = PodFiles::new(&objects);
    let key = pod.path("src/tls/tls.key");
    let saved = std::fs::read(&key).unwrap();
    std::fs::remove_file(&key).unwrap();
    let out = pod.prepare("off");
    assert!(!out.status.success(), "prepare.sh ran without the TLS key");
    assert!(text(&out.stderr).contains("tls.key is missing"), "{}", text(&out.stderr));
    assert!(!pod.path("out/relay.toml").exists(), "a relay.toml was written without the key");

    std::fs::write(&key, saved).unwrap();
    // An open fleet's operator may leave tokens.toml empty.
    std::fs::write(pod.path("src/secret/tokens.toml"), "").unwrap();
    let out = pod.prepare("off");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = pod.check_config();
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
}
