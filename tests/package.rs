//! The Debian package as a school installs it: built with cargo-deb from the
//! release binary (`scripts/package.sh`), installed with `dpkg -i` on this
//! machine, upgraded to the next revision over an edited configuration, and
//! purged at the end. Needs root (or sudo), dpkg, lintian and
//! systemd-analyze (`scripts/test.sh` installs them).

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::{Command, Output};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `args` as root: directly, or through sudo.
fn root(args: &[&str]) -> Command {
    let mut c = if is_root() {
        let mut c = Command::new(args[0]);
        c.args(&args[1..]);
        c
    } else {
        let mut c = Command::new("sudo");
        c.args(args);
        c
    };
    c.env("DEBIAN_FRONTEND", "noninteractive");
    c
}

fn run(mut c: Command) -> Output {
    let what = format!("{c:?}");
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(c: Command) -> String {
    String::from_utf8_lossy(&run(c).stdout).into_owned()
}

/// (mode & 0o7777, owner name, group name).
fn stat(path: &str) -> (u32, String, String) {
    let m = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let name = |db: &str, id: u32| {
        let out = Command::new("getent")
            .args([db, &id.to_string()])
            .output()
            .expect("getent");
        String::from_utf8_lossy(&out.stdout)
            .split(':')
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    (
        m.mode() & 0o7777,
        name("passwd", m.uid()),
        name("group", m.gid()),
    )
}

fn installed_version() -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status} ${Version}", "campusgw"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.strip_prefix("install ok installed ")
        .map(str::to_owned)
}

/// Purges the package (and the user, when the test made it) whatever happens.
struct Purge {
    user_existed: bool,
}

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = root(&["dpkg", "--purge", "campusgw"]).output();
        if !self.user_existed {
            let _ = root(&["deluser", "--system", "campusgw"]).output();
        }
    }
}

/// The newest modification time under `path`.
fn newest(path: &Path) -> std::time::SystemTime {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut t = meta.modified().expect("mtime");
    if meta.is_dir() {
        for e in std::fs::read_dir(path).expect("read_dir") {
            t = t.max(newest(&e.expect("entry").path()));
        }
    }
    t
}

/// target/release/campusgw, refusing one older than the sources: the
/// package must carry the code under test. (Built by scripts/test.sh before
/// the tests: cargo started from a test's environment rebuilds every
/// dependency, which takes longer than the test may.)
fn fresh_release_binary() {
    let root = Path::new(ROOT);
    let bin = root.join("target/release/campusgw");
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run `cargo build --release` first (scripts/test.sh does)",
                bin.display()
            )
        });
    for input in [
        "src",
        "Cargo.toml",
        "Cargo.lock",
        "config/campus.example.toml",
    ] {
        assert!(
            newest(&root.join(input)) <= built,
            "{} is older than {input}: run `cargo build --release` first (scripts/test.sh does)",
            bin.display()
        );
    }
}

/// Builds the package (release binary) into `dir`, as `file`, with cargo-deb options `extra`.
fn package(dir: &Path, file: &str, extra: &[&str]) -> String {
    let path = dir.join(file).display().to_string();
    let mut c = Command::new(Path::new(ROOT).join("scripts/package.sh"));
    c.current_dir(ROOT)
        .env("CAMPUSGW_PACKAGE_PREBUILT", "1")
        .args(["--output", &path])
        .args(extra);
    run(c);
    path
}

#[test]
fn the_packaged_unit_is_the_source_install_unit_with_the_packaged_binary() {
    let strip = |text: &str| -> String {
        text.lines()
            .skip_while(|l| l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let read = |p: &str| std::fs::read_to_string(Path::new(ROOT).join(p)).expect(p);
    let source = strip(&read("deploy/campusgw.service")).replace("/usr/local/bin/", "/usr/bin/");
    let packaged = strip(&read("deploy/debian/campusgw.service"));
    assert_eq!(
        packaged, source,
        "deploy/debian/campusgw.service drifted from deploy/campusgw.service"
    );
}

#[test]
fn the_debian_package_installs_upgrades_keeping_an_edited_config_and_purges() {
    assert!(
        installed_version().is_none(),
        "campusgw is installed on this machine; this test installs and purges its own, remove it first"
    );
    let user_existed = Command::new("getent")
        .args(["passwd", "campusgw"])
        .status()
        .is_ok_and(|s| s.success());
    fresh_release_binary();
    let dir = tempfile::tempdir().expect("tempdir");
    let first = package(dir.path(), "campusgw-1.deb", &[]);
    let next_version = format!("{VERSION}-2");
    let second = package(
        dir.path(),
        "campusgw-2.deb",
        &["--deb-version", &next_version],
    );

    // lintian: clean but for the tags deploy/debian/lintian-overrides justifies.
    let lint = Command::new("lintian")
        .args(["--fail-on", "none", &first])
        .output()
        .expect("lintian (apt install lintian)");
    let report = String::from_utf8_lossy(&lint.stdout);
    let tags: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("E: ") || l.starts_with("W: "))
        .collect();
    assert!(
        tags.is_empty(),
        "lintian:\n{report}{}",
        String::from_utf8_lossy(&lint.stderr)
    );

    let _purge = Purge { user_existed };
    run(root(&["dpkg", "-i", &first]));
    assert_eq!(
        installed_version().as_deref(),
        Some(&*format!("{VERSION}-1"))
    );

    // Files, owners, modes, the user.
    assert_eq!(
        stat("/usr/bin/campusgw"),
        (0o755, "root".into(), "root".into())
    );
    assert_eq!(
        stat("/etc/campusgw"),
        (0o750, "root".into(), "campusgw".into())
    );
    assert_eq!(
        stat("/etc/campusgw/campus.toml"),
        (0o640, "root".into(), "campusgw".into())
    );
    assert_eq!(
        stat("/etc/campusgw/campusgw.env"),
        (0o600, "root".into(), "root".into())
    );
    assert_eq!(
        stat("/var/lib/campusgw"),
        (0o750, "campusgw".into(), "campusgw".into())
    );
    let passwd = stdout({
        let mut c = Command::new("getent");
        c.args(["passwd", "campusgw"]);
        c
    });
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    let uid: u32 = fields[2].parse().expect("uid");
    assert!(uid < 1000, "a system user: {passwd}");
    assert!(fields[6].ends_with("nologin"), "no shell: {passwd}");
    let conffiles = stdout({
        let mut c = Command::new("dpkg-query");
        c.args(["-W", "-f=${Conffiles}", "campusgw"]);
        c
    });
    for f in ["/etc/campusgw/campus.toml", "/etc/campusgw/campusgw.env"] {
        assert!(conffiles.contains(f), "{f} is a conffile: {conffiles}");
    }
    let unit = [
        "/lib/systemd/system/campusgw.service",
        "/usr/lib/systemd/system/campusgw.service",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("the unit is installed");
    assert!(
        Path::new("/etc/systemd/system/multi-user.target.wants/campusgw.service").exists(),
        "the unit is enabled"
    );
    let verify = Command::new("systemd-analyze")
        .args(["verify", unit])
        .output()
        .expect("systemd-analyze");
    let said = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && !said.contains("campusgw.service"),
        "systemd-analyze verify {unit}: {said}"
    );

    // The installed binary accepts the installed configuration once the
    // secrets are set, and no secret is written in it.
    let mut check = root(&[
        "/usr/bin/campusgw",
        "check",
        "--config",
        "/etc/campusgw/campus.toml",
    ]);
    check
        .env("CAMPUSGW_MQTT_PASSWORD", "test-mqtt-secret")
        .env("CAMPUSGW_INFLUX_TOKEN", "test-influx-token");
    let checked = stdout(check);
    assert!(checked.contains(": OK ("), "{checked}");
    assert!(!checked.contains("inline"), "no secret inline: {checked}");

    // The school edits its configuration and makes its first user.
    let edit = "\n# Edited at the school: keep me across upgrades.\n";
    let mut append = root(&["sh", "-c", "cat >> /etc/campusgw/campus.toml"]);
    append.stdin(std::process::Stdio::piped());
    let mut child = append.spawn().expect("edit");
    {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(edit.as_bytes())
            .expect("write");
    }
    assert!(child.wait().expect("wait").success());
    let mut user = root(&[
        "/usr/bin/campusgw",
        "user",
        "add",
        "admin",
        "--role",
        "admin",
        "--config",
        "/etc/campusgw/campus.toml",
        "--password-stdin",
    ]);
    user.stdin(std::process::Stdio::piped());
    let mut child = user.spawn().expect("user add");
    {
        use std::io::Write as _;
        writeln!(child.stdin.take().expect("stdin"), "a-long-admin-password").expect("write");
    }
    assert!(child.wait().expect("wait").success());
    assert_eq!(stat("/var/lib/campusgw/gateway.db").1, "campusgw");

    // The next revision over it: the edit and the data stay.
    run(root(&["dpkg", "-i", &second]));
    assert_eq!(installed_version().as_deref(), Some(&*next_version));
    let config = std::fs::read_to_string("/etc/campusgw/campus.toml").expect("config");
    assert!(config.ends_with(edit), "the edited conffile is kept");
    assert_eq!(
        stat("/etc/campusgw/campus.toml"),
        (0o640, "root".into(), "campusgw".into())
    );
    let (_, owner, _) = stat("/var/lib/campusgw/gateway.db");
    assert_eq!(owner, "campusgw", "the data is kept, still the service's");

    // Purge: binary, unit, configuration and data gone.
    run(root(&["dpkg", "--purge", "campusgw"]));
    assert!(installed_version().is_none());
    for gone in [
        "/usr/bin/campusgw",
        unit,
        "/etc/campusgw",
        "/var/lib/campusgw",
    ] {
        assert!(!Path::new(gone).exists(), "{gone} is left after purge");
    }
}
