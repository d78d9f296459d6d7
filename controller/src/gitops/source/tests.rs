//! Against real repositories made with the git CLI: file:// and `git daemon` on 127.0.0.1.

use super::*;

use std::process::Stdio;

use crate::gitops::testutil::git as sh;

fn commit(dir: &Path, file: &str, text: &str, msg: &str) -> String {
    std::fs::write(dir.join(file), text).expect("write");
    sh(dir, &["add", "-A"]);
    sh(dir, &["commit", "-q", "-m", msg]);
    sh(dir, &["rev-parse", "HEAD"])
}

fn new_repo() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tmp");
    sh(d.path(), &["init", "-q", "-b", "main"]);
    d
}

const T: Duration = Duration::from_secs(60);

/// A bare repository `r.git` with one commit (its `a.yaml` holds `text`) in a directory to
/// serve, its commit, and a free port for the server.
fn served_repo(text: &str) -> (tempfile::TempDir, String, u16) {
    let repo = new_repo();
    let c1 = commit(repo.path(), "a.yaml", text, "first");
    let served = tempfile::tempdir().expect("served");
    let src = repo.path().display().to_string();
    sh(served.path(), &["clone", "-q", "--bare", &src, "r.git"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    (served, c1, port)
}

#[test]
fn branch_fetch_no_work_when_unchanged_new_commits_and_force_push() {
    let repo = new_repo();
    let c1 = commit(repo.path(), "a.yaml", "one", "first");
    let cache = tempfile::tempdir().expect("cache");
    let url = format!("file://{}", repo.path().display());
    let r = GitRef::Branch("main".into());
    let f1 = fetch(&url, &r, &GitAuth::default(), cache.path(), T).expect("fetch");
    assert_eq!(f1.revision, format!("main@sha1:{c1}"));
    assert!(f1.fetched);
    assert_eq!(
        std::fs::read_to_string(f1.dir.join("a.yaml")).expect("file"),
        "one"
    );
    assert!(!f1.dir.join(".git").exists());

    let again = fetch(&url, &r, &GitAuth::default(), cache.path(), T).expect("fetch");
    assert!(!again.fetched, "same commit: no fetch");
    assert_eq!(again.dir, f1.dir);

    let c2 = commit(repo.path(), "a.yaml", "two", "second");
    let f2 = fetch(&url, &r, &GitAuth::default(), cache.path(), T).expect("fetch");
    assert_eq!(f2.revision, format!("main@sha1:{c2}"));
    assert_eq!(
        std::fs::read_to_string(f2.dir.join("a.yaml")).expect("file"),
        "two"
    );
    assert!(!f1.dir.exists(), "old artifacts are removed");

    // Force-push: main moves to an unrelated history.
    sh(repo.path(), &["checkout", "-q", "--orphan", "rewritten"]);
    sh(repo.path(), &["rm", "-q", "-rf", "."]);
    let c3 = commit(repo.path(), "b.yaml", "rewritten", "rewrite");
    sh(repo.path(), &["branch", "-q", "-f", "main", "rewritten"]);
    let f3 = fetch(&url, &r, &GitAuth::default(), cache.path(), T).expect("fetch");
    assert_eq!(f3.commit, c3);
    assert!(f3.dir.join("b.yaml").exists() && !f3.dir.join("a.yaml").exists());

    let missing = fetch(
        &url,
        &GitRef::Branch("nope".into()),
        &GitAuth::default(),
        cache.path(),
        T,
    )
    .unwrap_err();
    assert!(missing.0.contains("branch \"nope\" not found"), "{missing}");
}

#[test]
fn tags_semver_and_commits() {
    let repo = new_repo();
    let mut shas = Vec::new();
    for v in ["1.0.0", "1.2.0", "2.0.0"] {
        shas.push(commit(repo.path(), "v.txt", v, v));
        sh(repo.path(), &["tag", "-a", &format!("v{v}"), "-m", v]);
    }
    let cache = tempfile::tempdir().expect("cache");
    let url = format!("file://{}", repo.path().display());
    let tag = fetch(
        &url,
        &GitRef::Tag("v1.0.0".into()),
        &GitAuth::default(),
        cache.path(),
        T,
    )
    .expect("tag");
    assert_eq!(
        tag.revision,
        format!("v1.0.0@sha1:{}", shas[0]),
        "annotated tags resolve to their commit"
    );
    let semver = fetch(
        &url,
        &GitRef::Semver(">=1.0.0 <2.0.0".into()),
        &GitAuth::default(),
        cache.path(),
        T,
    )
    .expect("semver");
    assert_eq!(semver.revision, format!("v1.2.0@sha1:{}", shas[1]));
    assert_eq!(
        std::fs::read_to_string(semver.dir.join("v.txt")).expect("v"),
        "1.2.0"
    );
    let none = fetch(
        &url,
        &GitRef::Semver(">=3.0.0".into()),
        &GitAuth::default(),
        cache.path(),
        T,
    )
    .unwrap_err();
    assert!(none.0.contains("no tag matches"), "{none}");
    let old = fetch(
        &url,
        &GitRef::Commit {
            sha: shas[0].clone(),
            branch: Some("main".into()),
        },
        &GitAuth::default(),
        cache.path(),
        T,
    )
    .expect("commit on branch");
    assert_eq!(
        std::fs::read_to_string(old.dir.join("v.txt")).expect("v"),
        "1.0.0"
    );
    assert_eq!(old.revision, format!("main@sha1:{}", shas[0]));
}

#[test]
fn git_daemon_transport_and_unreachable_repositories() {
    let (served, c1, port) = served_repo("served");
    let mut daemon = Command::new("git")
        .args([
            "daemon",
            "--reuseaddr",
            "--export-all",
            "--listen=127.0.0.1",
            &format!("--port={port}"),
            &format!("--base-path={}", served.path().display()),
            &served.path().display().to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("git daemon");
    let url = format!("git://127.0.0.1:{port}/r.git");
    let cache = tempfile::tempdir().expect("cache");
    let mut result = Err(GitError("not tried".into()));
    for _ in 0..100 {
        result = fetch(
            &url,
            &GitRef::Branch("main".into()),
            &GitAuth::default(),
            cache.path(),
            T,
        );
        if result.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert_eq!(result.expect("fetch over git://").commit, c1);

    let err = fetch(
        "https://user:hunter2@127.0.0.1:1/nothing.git",
        &GitRef::Branch("main".into()),
        &GitAuth::default(),
        cache.path(),
        T,
    )
    .unwrap_err();
    assert!(!err.0.contains("hunter2"), "{err}");
    let err = fetch(
        &format!("file://{}/missing", served.path().display()),
        &GitRef::Branch("main".into()),
        &GitAuth::default(),
        cache.path(),
        T,
    )
    .unwrap_err();
    assert!(err.0.contains("missing"), "{err}");
    let ssh_without_hosts = GitAuth {
        ssh_identity: Some("key".to_string().into()),
        ..Default::default()
    };
    let err = fetch(
        "ssh://git@127.0.0.1:1/r.git",
        &GitRef::Branch("main".into()),
        &ssh_without_hosts,
        cache.path(),
        T,
    )
    .unwrap_err();
    assert!(err.0.contains("known_hosts"), "{err}");
}

#[test]
fn redaction_and_ref_precedence() {
    assert_eq!(
        redact("fatal: https://u:p@host/x and ssh://git@h/y"),
        "fatal: https://***@host/x and ssh://***@h/y"
    );
    let r = sealkit_api::GitRepositoryRef {
        branch: Some("main".into()),
        tag: Some("v1".into()),
        ..Default::default()
    };
    assert_eq!(GitRef::from_spec(Some(&r)), Ok(GitRef::Tag("v1".into())));
    assert_eq!(GitRef::from_spec(None), Ok(GitRef::Branch("master".into())));
}

#[test]
fn http_basic_and_bearer_auth_through_git_http_backend() {
    let (served, c1, port) = served_repo("private");
    let peer = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/peers/git_http.py");
    let mut server = Command::new("python3")
        .arg(&peer)
        .args([
            &port.to_string(),
            &served.path().display().to_string(),
            "alice",
            "pa55word",
            "tok-123",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("http://127.0.0.1:{port}/r.git");
    let cache = tempfile::tempdir().expect("cache");
    let main = GitRef::Branch("main".into());
    let none = fetch(&url, &main, &GitAuth::default(), cache.path(), T);
    let wrong = fetch(
        &url,
        &main,
        &GitAuth {
            basic: Some(("alice".into(), "nope".to_string().into())),
            ..Default::default()
        },
        cache.path(),
        T,
    );
    let basic = fetch(
        &url,
        &main,
        &GitAuth {
            basic: Some(("alice".into(), "pa55word".to_string().into())),
            ..Default::default()
        },
        cache.path(),
        T,
    );
    let cache2 = tempfile::tempdir().expect("cache");
    let bearer = fetch(
        &url,
        &main,
        &GitAuth {
            bearer: Some("tok-123".to_string().into()),
            ..Default::default()
        },
        cache2.path(),
        T,
    );
    let _ = server.kill();
    let _ = server.wait();
    let e = none.unwrap_err();
    assert!(
        e.0.contains("401") || e.0.to_lowercase().contains("authentication"),
        "{e}"
    );
    let e = wrong.unwrap_err();
    assert!(!e.0.contains("pa55word") && !e.0.contains("nope"), "{e}");
    assert_eq!(basic.expect("basic auth").commit, c1);
    assert_eq!(bearer.expect("bearer auth").commit, c1);
}

/// `spec.ref.commit` used to become a directory name: a tenant could name another tenant's
/// cached revision (`../../<repo>/artifacts/<commit>`) and be served its files.
#[test]
fn a_commit_is_a_hex_object_id_never_a_path() {
    let a = new_repo();
    let ca = commit(a.path(), "a.yaml", "private to tenant A", "a");
    let cache = tempfile::tempdir().expect("cache");
    let url_a = format!("file://{}", a.path().display());
    let fa = fetch(
        &url_a,
        &GitRef::Branch("main".into()),
        &GitAuth::default(),
        cache.path(),
        T,
    )
    .expect("tenant A");
    let hash_a = fa
        .dir
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .expect("repo dir")
        .to_string_lossy()
        .into_owned();
    let b = new_repo();
    commit(b.path(), "b.yaml", "tenant B", "b");
    let url_b = format!("file://{}", b.path().display());
    // Tenant B's own revision first, so its cache directory exists for `..` to climb out of.
    fetch(
        &url_b,
        &GitRef::Branch("main".into()),
        &GitAuth::default(),
        cache.path(),
        T,
    )
    .expect("tenant B");
    for bad in [
        format!("../../{hash_a}/artifacts/{ca}"),
        "--upload-pack=touch /tmp/sealkit-pwned".to_string(),
        ca[..12].to_string(),
        format!("{}x", &ca[..39]),
        format!("{ca}\n"),
    ] {
        let r = GitRef::Commit {
            sha: bad.clone(),
            branch: None,
        };
        let err = fetch(&url_b, &r, &GitAuth::default(), cache.path(), T)
            .expect_err(&bad)
            .to_string();
        assert!(
            err.contains("spec.ref.commit") && err.contains("hex"),
            "{bad:?}: {err}"
        );
    }
    // SHA-1 and SHA-256 lengths are both object ids (upper case is read as lower case).
    let ok = fetch(
        &url_a,
        &GitRef::Commit {
            sha: ca.to_uppercase(),
            branch: None,
        },
        &GitAuth::default(),
        cache.path(),
        T,
    )
    .expect("an upper-case SHA");
    assert_eq!(ok.commit, ca);
}

/// Branch, tag and name values reach git as ref names: git's ref-name rules apply, and none
/// may look like an option.
#[test]
fn refs_follow_gits_ref_name_rules() {
    let repo = new_repo();
    commit(repo.path(), "a.yaml", "x", "x");
    let cache = tempfile::tempdir().expect("cache");
    let url = format!("file://{}", repo.path().display());
    let cases = [
        (GitRef::Branch("-x".into()), "spec.ref.branch"),
        (GitRef::Branch("a..b".into()), "spec.ref.branch"),
        (GitRef::Branch("a\u{7}b".into()), "spec.ref.branch"),
        (GitRef::Branch("main.lock".into()), "spec.ref.branch"),
        (GitRef::Branch("a b".into()), "spec.ref.branch"),
        (GitRef::Tag("v1:refs/heads/x".into()), "spec.ref.tag"),
        (GitRef::Tag("v1@{0}".into()), "spec.ref.tag"),
        (
            GitRef::Name("refs/heads/main:refs/heads/evil".into()),
            "spec.ref.name",
        ),
        (GitRef::Name("--upload-pack=x".into()), "spec.ref.name"),
        (GitRef::Name("refs//heads".into()), "spec.ref.name"),
        (GitRef::Semver("-1".into()), "spec.ref.semver"),
    ];
    for (r, field) in cases {
        let err = fetch(&url, &r, &GitAuth::default(), cache.path(), T)
            .expect_err(field)
            .to_string();
        assert!(err.contains(field), "{r:?}: {err}");
    }
    for good in ["main", "feature/x-1", "release-1.2"] {
        let r = GitRef::Branch(good.into());
        let err = fetch(&url, &r, &GitAuth::default(), cache.path(), T);
        if good == "main" {
            err.expect("main");
        } else {
            assert!(err.unwrap_err().0.contains("not found"), "{good}");
        }
    }
}

/// Only the transport the URL names; a plain path (git's local transport) and `ext::` (runs
/// a command) are refused before git runs.
#[test]
fn only_the_transport_of_the_url_is_allowed() {
    let repo = new_repo();
    commit(repo.path(), "a.yaml", "x", "x");
    let cache = tempfile::tempdir().expect("cache");
    let marker = cache.path().join("ext-ran");
    for url in [
        repo.path().display().to_string(),
        format!("ext::sh -c touch% {}", marker.display()),
        format!("-u{}", repo.path().display()),
    ] {
        let err = fetch(
            &url,
            &GitRef::Branch("main".into()),
            &GitAuth::default(),
            cache.path(),
            T,
        )
        .expect_err(&url)
        .to_string();
        assert!(err.contains("spec.url"), "{url}: {err}");
    }
    assert!(!marker.exists());
}

fn post_checkout_hook(dir: &Path, marker: &Path) {
    std::fs::create_dir_all(dir).expect("hooks");
    let hook = dir.join("post-checkout");
    std::fs::write(&hook, format!("#!/bin/sh\ntouch '{}'\n", marker.display())).expect("hook");
    let mut perms = std::fs::metadata(&hook).expect("meta").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&hook, perms).expect("chmod");
}

/// No hook runs: not one in the cache's repository, not one the environment configures.
#[test]
fn hooks_never_run() {
    let repo = new_repo();
    commit(repo.path(), "a.yaml", "x", "x");
    let cache = tempfile::tempdir().expect("cache");
    let url = format!("file://{}", repo.path().display());
    let marker = cache.path().join("hook-ran");
    let bare = repo_dir(cache.path(), &url).join("repo.git");
    std::fs::create_dir_all(&bare).expect("bare");
    sh(&bare, &["init", "-q", "--bare"]);
    post_checkout_hook(&bare.join("hooks"), &marker);
    fetch(
        &url,
        &GitRef::Branch("main".into()),
        &GitAuth::default(),
        cache.path(),
        T,
    )
    .expect("fetch");
    assert!(!marker.exists(), "a hook ran");
}

/// Run by [`the_users_and_systems_git_config_is_never_read`] in a child process whose
/// environment points git at hostile configuration.
#[test]
#[ignore = "run in a child process by the_users_and_systems_git_config_is_never_read"]
fn fetch_in_a_hostile_environment() {
    let (Some(url), Some(cache)) = (
        std::env::var_os("SEALKIT_TEST_URL"),
        std::env::var_os("SEALKIT_TEST_CACHE"),
    ) else {
        return;
    };
    fetch(
        &url.to_string_lossy(),
        &GitRef::Branch("main".into()),
        &GitAuth::default(),
        Path::new(&cache),
        T,
    )
    .expect("fetch");
}

#[test]
fn the_users_and_systems_git_config_is_never_read() {
    let repo = new_repo();
    commit(repo.path(), "a.yaml", "x", "x");
    let home = tempfile::tempdir().expect("home");
    let cache = tempfile::tempdir().expect("cache");
    let marker = home.path().join("hook-ran");
    post_checkout_hook(&home.path().join("hooks"), &marker);
    let config = format!(
        "[core]\n\thooksPath = {}\n",
        home.path().join("hooks").display()
    );
    std::fs::write(home.path().join(".gitconfig"), &config).expect("global");
    std::fs::create_dir_all(home.path().join(".config/git")).expect("xdg");
    std::fs::write(home.path().join(".config/git/config"), &config).expect("xdg");
    std::fs::write(home.path().join("system.gitconfig"), &config).expect("system");
    let out = Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "gitops::source::tests::fetch_in_a_hostile_environment",
            "--ignored",
            "--quiet",
        ])
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join(".config"))
        .env("GIT_CONFIG_SYSTEM", home.path().join("system.gitconfig"))
        .env("GIT_CONFIG_GLOBAL", home.path().join(".gitconfig"))
        .env(
            "SEALKIT_TEST_URL",
            format!("file://{}", repo.path().display()),
        )
        .env("SEALKIT_TEST_CACHE", cache.path())
        .output()
        .expect("child");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!marker.exists(), "the configured hooks path was used");
}

/// Fetches of one repository at once (a Kustomization fetching while the source loop does)
/// share its cache: they take turns instead of failing on git's locks.
#[test]
fn concurrent_fetches_of_one_repository_take_turns() {
    let repo = new_repo();
    let c1 = commit(repo.path(), "a.yaml", "x", "x");
    let cache = tempfile::tempdir().expect("cache");
    let url = format!("file://{}", repo.path().display());
    let results: Vec<Result<Fetched, GitError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    fetch(
                        &url,
                        &GitRef::Branch("main".into()),
                        &GitAuth::default(),
                        cache.path(),
                        T,
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    for r in results {
        assert_eq!(r.expect("fetch").commit, c1);
    }
}
