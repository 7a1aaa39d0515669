//! The Dockerfile builds: no Docker engine runs where these tests run, so this reads the files
//! themselves. Every path `cargo build` reads — each workspace member's manifest and sources, the
//! files they `include_str!`, the migrations `sqlx::migrate!` embeds, the bench and test targets a
//! manifest names — must be copied into the build stage before its `cargo build`, and not be left out
//! by `.dockerignore`. A new connector crate, template or migration folder that the Dockerfile does not
//! copy fails here, not in someone's `docker build`.

use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn the_build_stage_copies_every_path_the_build_reads() {
    let dockerfile = std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).unwrap();
    let ignore = std::fs::read_to_string(Path::new(ROOT).join(".dockerignore")).unwrap_or_default();
    let copied = copied_before_build(&dockerfile);
    assert!(!copied.is_empty(), "the Dockerfile has no stage that copies sources and runs `cargo build`");
    let missing: Vec<String> =
        needed_paths().into_iter().filter(|p| !covered(p, &copied) || ignored(p, &ignore)).collect();
    assert!(
        missing.is_empty(),
        "the Dockerfile's build stage does not copy (or .dockerignore leaves out) paths the build reads:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn the_image_checks_its_health_and_runs_as_a_user() {
    let dockerfile = std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).unwrap();
    let runtime = stages(&dockerfile).pop().expect("a runtime stage");
    let health = runtime.iter().find(|l| l.starts_with("HEALTHCHECK")).expect("the runtime stage has a HEALTHCHECK");
    assert!(health.contains("/healthz"), "HEALTHCHECK asks /healthz: {health}");
    let tool = health.split_whitespace().skip_while(|w| *w != "CMD").nth(1).expect("HEALTHCHECK CMD");
    assert!(
        runtime.iter().any(|l| l.starts_with("RUN") && l.contains("install") && l.contains(tool)),
        "the runtime stage installs {tool}, which its HEALTHCHECK runs"
    );
    assert!(
        runtime.iter().any(|l| l.starts_with("USER ") && !l.contains("root")),
        "the daemon runs as a non-root user"
    );
}

/// The Dockerfile's stages, each as its instructions (continuation lines joined, comments dropped).
fn stages(dockerfile: &str) -> Vec<Vec<String>> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<Vec<String>> = Vec::new();
    for i in instructions {
        if i.to_ascii_uppercase().starts_with("FROM ") {
            stages.push(Vec::new());
        }
        if let Some(stage) = stages.last_mut() {
            stage.push(i);
        }
    }
    stages
}

/// What the last `cargo build` of the Dockerfile (the one that builds the real sources) sees from the build context: the `COPY` sources
/// (not `--from` another stage) of its stage and the stages it is built `FROM`, before that `RUN`.
fn copied_before_build(dockerfile: &str) -> Vec<String> {
    let stages = stages(dockerfile);
    let name_of = |stage: &Vec<String>| {
        let words: Vec<&str> = stage[0].split_whitespace().collect();
        (words.len() == 4 && words[2].eq_ignore_ascii_case("as")).then(|| words[3].to_owned())
    };
    let Some(build) = stages.iter().rposition(|s| s.iter().any(|i| i.starts_with("RUN") && i.contains("cargo build")))
    else {
        return Vec::new();
    };
    // The chain of stages: the build stage, its base, the base's base...
    let mut chain = vec![build];
    while let Some(base) = stages[*chain.last().unwrap()][0].split_whitespace().nth(1) {
        match stages.iter().position(|s| name_of(s).as_deref() == Some(base)) {
            Some(i) if !chain.contains(&i) => chain.push(i),
            _ => break,
        }
    }
    let last_build = stages[build].iter().rposition(|i| i.starts_with("RUN") && i.contains("cargo build")).unwrap();
    let mut copied = Vec::new();
    for &i in chain.iter().rev() {
        for (at, instruction) in stages[i].iter().enumerate() {
            if i == build && at == last_build {
                break;
            }
            let mut words = instruction.split_whitespace();
            if !matches!(words.next(), Some(w) if w.eq_ignore_ascii_case("COPY") || w.eq_ignore_ascii_case("ADD")) {
                continue;
            }
            let args: Vec<&str> = words.collect();
            if args.iter().any(|a| a.starts_with("--from")) {
                continue;
            }
            let args: Vec<&str> = args.into_iter().filter(|a| !a.starts_with("--")).collect();
            if let Some((_, sources)) = args.split_last() {
                copied.extend(sources.iter().map(|s| s.trim_start_matches("./").trim_end_matches('/').to_owned()));
            }
        }
    }
    copied
}

fn covered(path: &str, copied: &[String]) -> bool {
    copied.iter().any(|c| c.is_empty() || c == "." || path == c || path.starts_with(&format!("{c}/")))
}

/// Whether `.dockerignore` leaves `path` out of the build context (its patterns match the path or
/// any folder above it; a later `!pattern` takes it back).
fn ignored(path: &str, dockerignore: &str) -> bool {
    let mut out = false;
    for pattern in dockerignore.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (negate, pattern) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern),
        };
        let pattern = pattern.trim_start_matches("./").trim_start_matches('/').trim_end_matches('/');
        let parts: Vec<&str> = path.split('/').collect();
        let matches = (1..=parts.len()).any(|n| glob(pattern, &parts[..n].join("/")));
        if matches {
            out = !negate;
        }
    }
    out
}

/// Docker's (Go's `filepath.Match`) globbing, with `**` for any number of folders.
fn glob(pattern: &str, path: &str) -> bool {
    fn parts(p: &[&str], s: &[&str]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(&"**"), _) => parts(&p[1..], s) || (!s.is_empty() && parts(p, &s[1..])),
            (Some(pp), Some(ss)) => segment(pp.as_bytes(), ss.as_bytes()) && parts(&p[1..], &s[1..]),
            _ => false,
        }
    }
    fn segment(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => segment(&p[1..], s) || (!s.is_empty() && segment(p, &s[1..])),
            (Some(b'?'), Some(_)) => segment(&p[1..], &s[1..]),
            (Some(a), Some(b)) => a == b && segment(&p[1..], &s[1..]),
            _ => false,
        }
    }
    parts(&pattern.split('/').collect::<Vec<_>>(), &path.split('/').collect::<Vec<_>>())
}

/// Every file the workspace's `cargo build` reads, relative to the repository root.
fn needed_paths() -> Vec<String> {
    let root = Path::new(ROOT);
    let manifest: toml::Table = std::fs::read_to_string(root.join("Cargo.toml")).unwrap().parse().unwrap();
    let mut members = vec![".".to_owned()];
    if let Some(list) = manifest.get("workspace").and_then(|w| w.get("members")).and_then(|m| m.as_array()) {
        members.extend(list.iter().filter_map(|m| m.as_str()).filter(|m| *m != ".").map(str::to_owned));
    }
    let mut needed = vec!["Cargo.toml".to_owned(), "Cargo.lock".to_owned()];
    for member in members {
        let dir = root.join(&member);
        let text = std::fs::read_to_string(dir.join("Cargo.toml"))
            .unwrap_or_else(|e| panic!("workspace member {member}: {}: {e}", dir.join("Cargo.toml").display()));
        let manifest: toml::Table = text.parse().unwrap();
        needed.push(relative(&dir.join("Cargo.toml")));
        if dir.join("build.rs").exists() {
            needed.push(relative(&dir.join("build.rs")));
        }
        // Targets the manifest names must exist even when only the binary is built.
        for (kind, folder) in [("bench", "benches"), ("test", "tests"), ("bin", "src/bin"), ("example", "examples")] {
            for target in manifest.get(kind).and_then(|t| t.as_array()).into_iter().flatten() {
                let path =
                    match (target.get("path").and_then(|p| p.as_str()), target.get("name").and_then(|n| n.as_str())) {
                        (Some(p), _) => dir.join(p),
                        (None, Some(name)) => dir.join(folder).join(format!("{name}.rs")),
                        (None, None) => continue,
                    };
                needed.push(relative(&path));
            }
        }
        for source in rust_files(&dir.join("src")) {
            needed.push(relative(&source));
            let code = std::fs::read_to_string(&source).unwrap();
            for (macro_name, base) in [
                ("include_str!(\"", source.parent().unwrap().to_path_buf()),
                ("include_bytes!(\"", source.parent().unwrap().to_path_buf()),
                ("sqlx::migrate!(\"", dir.clone()),
            ] {
                for (at, _) in code.match_indices(macro_name) {
                    let rest = &code[at + macro_name.len()..];
                    let target = &rest[..rest.find('"').unwrap()];
                    needed.push(relative(&base.join(target)));
                }
            }
        }
    }
    needed.sort();
    needed.dedup();
    needed
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// `path` relative to the repository root, with `..` resolved and `/` separators.
fn relative(path: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in path.strip_prefix(ROOT).unwrap_or(path).components() {
        match c {
            std::path::Component::ParentDir => {
                parts.pop();
            }
            std::path::Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            _ => {}
        }
    }
    parts.join("/")
}

#[test]
fn the_checks_see_what_a_docker_build_would_miss() {
    // The Dockerfile before this test existed: manifests and three folders, no templates, tasks or benches.
    let old = "FROM rust:1 AS build\nCOPY Cargo.toml Cargo.lock ./\nCOPY connectors connectors\nCOPY migrations migrations\n\
               COPY src src\nRUN cargo build --release\nFROM debian\nCOPY --from=build /x /y\n";
    let copied = copied_before_build(old);
    assert_eq!(copied, ["Cargo.toml", "Cargo.lock", "connectors", "migrations", "src"]);
    let missing: Vec<String> = needed_paths().into_iter().filter(|p| !covered(p, &copied)).collect();
    assert!(missing.contains(&"templates/item.html".to_owned()), "{missing:?}");
    assert!(missing.contains(&"config/tasks/product_copy.toml".to_owned()), "{missing:?}");
    assert!(missing.contains(&"benches/e2e.rs".to_owned()), "{missing:?}");
    // A context that leaves a needed folder out is caught too.
    assert!(ignored("templates/item.html", "templates\n"));
    assert!(ignored("x.db", "*.db\n"));
    assert!(!ignored("migrations/sqlite/0001_init.sql", "*.db\ntarget\n"));
    assert!(!ignored("templates/item.html", "templates\n!templates\n"));
    assert!(ignored("a/b/c.db", "**/*.db\n"));
}
