//! The map stays true: the crate graph keeps the shape `docs/ARCHITECTURE.md` draws,
//! and every decision or invariant a comment cites is defined there.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The resolved dependency graph: package name → (dependency name, is a normal
/// dependency) for every workspace package and everything it pulls in.
struct Graph {
    deps: BTreeMap<String, Vec<(String, bool)>>,
    members: BTreeSet<String>,
}

impl Graph {
    fn load() -> Graph {
        // The host's graph only: other platforms' crates need not be downloaded.
        let rustc = Command::new("rustc").arg("-vV").output().unwrap();
        let host = String::from_utf8(rustc.stdout).unwrap();
        let host = host
            .lines()
            .find_map(|l| l.strip_prefix("host: "))
            .unwrap()
            .to_owned();
        let output = Command::new(env!("CARGO"))
            .args(["metadata", "--format-version", "1", "--offline"])
            .args(["--filter-platform", &host])
            .current_dir(workspace_root())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
        let name_of: BTreeMap<&str, &str> = metadata["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
            .collect();
        let members = metadata["workspace_members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| name_of[id.as_str().unwrap()].to_owned())
            .collect();
        let mut deps = BTreeMap::new();
        for node in metadata["resolve"]["nodes"].as_array().unwrap() {
            let edges = node["deps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| {
                    let normal = d["dep_kinds"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|k| k["kind"].is_null());
                    (name_of[d["pkg"].as_str().unwrap()].to_owned(), normal)
                })
                .collect();
            deps.insert(name_of[node["id"].as_str().unwrap()].to_owned(), edges);
        }
        Graph { deps, members }
    }

    /// Everything `package` links, through normal dependencies only.
    fn linked(&self, package: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![package.to_owned()];
        while let Some(p) = todo.pop() {
            for (dep, normal) in self.deps.get(&p).into_iter().flatten() {
                if *normal && seen.insert(dep.clone()) {
                    todo.push(dep.clone());
                }
            }
        }
        seen
    }

    /// The workspace crates `package` depends on directly (normal dependencies).
    fn direct_members(&self, package: &str) -> BTreeSet<String> {
        self.deps[package]
            .iter()
            .filter(|(dep, normal)| *normal && self.members.contains(dep))
            .map(|(dep, _)| dep.clone())
            .collect()
    }

    /// The workspace crates `package` depends on directly, for its tests and build
    /// scripts too.
    fn direct_members_of_any_kind(&self, package: &str) -> BTreeSet<String> {
        self.deps[package]
            .iter()
            .filter(|(dep, _)| self.members.contains(dep))
            .map(|(dep, _)| dep.clone())
            .collect()
    }
}

#[test]
fn the_core_links_no_runtime_http_or_database_crate() {
    let graph = Graph::load();
    let linked = graph.linked("ledger-core");
    let io = [
        "tokio",
        "mio",
        "actix-web",
        "actix-http",
        "hyper",
        "reqwest",
        "rdkafka",
        "scylla",
        "rusqlite",
        "redis",
        "tonic",
    ];
    let found: Vec<&str> = io.into_iter().filter(|c| linked.contains(*c)).collect();
    assert!(found.is_empty(), "ledger-core links {found:?} (D7)");
    // The check sees the graph: the core does link its serialisation crates.
    assert!(linked.contains("serde_json"), "{linked:?}");
}

/// The clock sits beside the core: it depends on the core alone and links no runtime,
/// HTTP or database crate, and the core depends on no workspace crate at all, not even
/// for its tests (they use fixed instants and ids).
#[test]
fn the_clock_depends_on_the_core_alone_and_the_core_on_nothing() {
    let graph = Graph::load();
    assert_eq!(
        graph.direct_members_of_any_kind("ledger-core"),
        BTreeSet::new(),
        "ledger-core depends on workspace crates"
    );
    assert_eq!(
        graph.direct_members_of_any_kind("ledger-clock"),
        BTreeSet::from(["ledger-core".to_owned()]),
        "ledger-clock depends on other workspace crates than ledger-core"
    );
    let linked = graph.linked("ledger-clock");
    let io = [
        "tokio",
        "mio",
        "actix-web",
        "hyper",
        "reqwest",
        "rdkafka",
        "scylla",
    ];
    let found: Vec<&str> = io.into_iter().filter(|c| linked.contains(*c)).collect();
    assert!(found.is_empty(), "ledger-clock links {found:?}");
    // The check sees the graph: the clock does link the core and its uuid crate.
    assert!(linked.contains("ledger-core") && linked.contains("uuid"));
}

#[test]
fn adapters_depend_on_the_core_and_the_clock_alone() {
    let graph = Graph::load();
    for adapter in ["ledger-embedded", "ledger-kafka", "ledger-scylla"] {
        let members = graph.direct_members(adapter);
        let expected = BTreeSet::from(["ledger-clock".to_owned(), "ledger-core".to_owned()]);
        assert_eq!(
            members, expected,
            "{adapter} depends on other workspace crates than ledger-core and ledger-clock"
        );
    }
}

#[test]
fn the_projector_and_the_telemetry_link_no_web_framework() {
    let graph = Graph::load();
    for package in ["ledger-projector", "ledger-telemetry"] {
        let linked = graph.linked(package);
        let web: Vec<&str> = ["actix-web", "actix-http", "actix-server"]
            .into_iter()
            .filter(|c| linked.contains(*c))
            .collect();
        assert!(web.is_empty(), "{package} links {web:?}");
    }
    // The check sees the graph: the projector does link its metrics crate.
    assert!(graph.linked("ledger-projector").contains("prometheus"));
}

#[test]
fn the_auditors_library_serves_no_http_and_knows_no_binary() {
    let graph = Graph::load();
    let linked = graph.linked("ledger-audit");
    for forbidden in ["actix-web", "actix-http", "session-ledger"] {
        assert!(
            !linked.contains(forbidden),
            "ledger-audit links {forbidden}"
        );
    }
    let members = graph.direct_members("ledger-audit");
    let expected = BTreeSet::from([
        "ledger-clock".to_owned(),
        "ledger-core".to_owned(),
        "ledger-token".to_owned(),
    ]);
    assert_eq!(
        members, expected,
        "ledger-audit reads through the core's ports, the token crate's keys and the clock only"
    );
    // The binary fronts the auditors' tools through this crate.
    assert!(
        graph
            .direct_members("session-ledger")
            .contains("ledger-audit")
    );
}

/// `D4`, `I7`, … as cited in the comments of a source line.
fn citations(line: &str) -> Vec<String> {
    let Some(at) = line.find("//") else {
        return Vec::new();
    };
    let comment = &line.as_bytes()[at..];
    let mut found = Vec::new();
    for i in 0..comment.len() {
        let starts = matches!(comment[i], b'D' | b'I')
            && (i == 0 || !comment[i - 1].is_ascii_alphanumeric());
        if !starts {
            continue;
        }
        let digits = comment[i + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let end = i + 1 + digits;
        if digits > 0 && comment.get(end).is_none_or(|b| !b.is_ascii_alphanumeric()) {
            found.push(String::from_utf8_lossy(&comment[i..end]).into_owned());
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_cited_decision_and_invariant_is_defined_in_the_architecture() {
    let root = workspace_root();
    let architecture = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).unwrap();
    let defined: BTreeSet<String> = architecture
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("- **"))
        .filter_map(|l| l.split_once("**").map(|(id, _)| id.to_owned()))
        .filter(|id| citations(&format!("// {id}")) == [id.clone()])
        .collect();
    assert!(
        defined.contains("D1") && defined.contains("I8"),
        "{defined:?}"
    );

    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    rust_files(&root.join("tests"), &mut files);
    let mut undefined = Vec::new();
    let mut cited = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            for id in citations(line) {
                cited += 1;
                if !defined.contains(&id) {
                    undefined.push(format!("{}:{}: {id}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(cited > 0, "no citations found: the scan is broken");
    assert!(
        undefined.is_empty(),
        "cited but not defined in docs/ARCHITECTURE.md: {undefined:#?}"
    );
}

#[test]
fn citations_are_found_in_comments_only() {
    assert_eq!(citations("let d4 = 1; // the join (D4, I5)."), ["D4", "I5"]);
    assert_eq!(citations("/// fails closed (I7)"), ["I7"]);
    assert!(citations("let x = D4; // HS256, I/O, D3x").is_empty());
}

/// How Rust code reads the clock or draws randomness: directly, through `ledger-clock`,
/// or through the constructors the core once had for it.
const CLOCK_OR_RANDOMNESS: [&str; 17] = [
    "SystemTime::now",
    "Instant::now",
    ".elapsed()",
    "now_v1",
    "now_v6",
    "now_v7",
    "new_v4",
    "new_v7",
    "rand::",
    "thread_rng",
    "OsRng",
    "getrandom",
    "ledger_clock",
    "set_test_clock_offset",
    "Timestamp::now",
    "EventId::random",
    "SessionId::generate",
];

/// The rules are pure functions of their inputs (D7): nothing in `ledger-core`, its tests
/// and test fixtures included, reads the clock or draws randomness. `decide`, `explain`
/// and `backtest` take the instant and the event ids they need from their caller, who
/// reads them through `ledger-clock`; the core's tests use fixed instants and counted
/// ids (`ledger_core::testing`).
#[test]
fn the_core_reads_no_clock_and_draws_no_randomness() {
    let core = workspace_root().join("crates/ledger-core");
    let mut files = Vec::new();
    rust_files(&core, &mut files);
    let mut scanned = BTreeSet::new();
    let mut found = BTreeSet::new();
    for file in files {
        let name = file.strip_prefix(&core).unwrap().display().to_string();
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let line = line.split("//").next().unwrap();
            for token in CLOCK_OR_RANDOMNESS {
                if line.contains(token) {
                    found.insert(format!("{name}:{}: {token}", n + 1));
                }
            }
        }
        scanned.insert(name);
    }
    // The check sees the code: the clock's old home, the fixtures and the tests.
    for name in [
        "src/timestamp.rs",
        "src/ids.rs",
        "src/testing.rs",
        "src/decide/tests.rs",
        "tests/it/histories.rs",
    ] {
        assert!(scanned.contains(name), "{name} not scanned: {scanned:#?}");
    }
    assert!(
        found.is_empty(),
        "ledger-core reads the clock or draws randomness: {found:#?}"
    );
}
