//! The hostile-input corpus (see `tests/api/hostile/README.md`), generated at
//! test time: tarballs assembled header by header (the tar crate's builder
//! refuses hostile names, which is the point of them), decompression bombs
//! built from repeated compressed members so that only a few MB are ever
//! written, and local-registry trees with symlinks, FIFOs and worse.
//!
//! Each case says what the staging pipeline must answer. `cap` is the
//! `PLUGIN_INSTALL_MAX_DIR_BYTES` the app under test runs with.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use workspace_plugins::adapters::fs::INVALID_ARCHIVE_MESSAGE;

pub const TOO_LARGE: &str = "staged plugin exceeds size limit";

/// What a case feeds the pipeline.
pub enum Input {
    /// Bytes served over https as `/<file>`, pinned to their digest.
    Archive { file: String, bytes: Vec<u8> },
    /// Bytes served as `/<file>` but pinned to another digest.
    WrongDigest { file: String, bytes: Vec<u8> },
    /// A plugin directory `<registry>/<name>` (created empty before `make`
    /// fills it).
    Local {
        name: String,
        make: Box<dyn Fn(&Path) + Send + Sync>,
    },
    /// `<registry>/<name>` is itself a symlink to a plugin directory.
    LocalSymlinkedRoot { name: String },
}

/// What the pipeline must answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// This status and `error` message (with `source`).
    Error(u16, String),
    /// Staging succeeds: the install gets as far as the container step.
    Staged,
}

pub struct Case {
    pub name: &'static str,
    pub input: Input,
    pub expect: Expect,
}

fn unsafe_path(shown: &str) -> Expect {
    Expect::Error(400, format!("plugin contains an unsafe path: {shown}"))
}

fn symlink(path: &str) -> Expect {
    Expect::Error(400, format!("plugin contains a symlink: {path}"))
}

fn special(path: &str) -> Expect {
    Expect::Error(400, format!("plugin contains a special file: {path}"))
}

fn too_large() -> Expect {
    Expect::Error(413, TOO_LARGE.into())
}

fn invalid_archive() -> Expect {
    Expect::Error(422, INVALID_ARCHIVE_MESSAGE.into())
}

// ---- tar, by hand -------------------------------------------------------

/// A ustar header; `path` and `link` at most 100 bytes.
pub fn header(path: &[u8], kind: u8, size: u64, link: &[u8]) -> [u8; 512] {
    assert!(path.len() <= 100 && link.len() <= 100);
    let mut h = [0u8; 512];
    h[..path.len()].copy_from_slice(path);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0001750\0");
    h[116..124].copy_from_slice(b"0001750\0");
    if size < 0o77777777777 {
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    } else {
        // GNU base-256 for sizes past 8 GiB.
        h[124] = 0x80;
        h[128..136].copy_from_slice(&size.to_be_bytes());
    }
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link);
    if kind == b'S' {
        // GNU sparse files exist only in GNU headers.
        h[257..265].copy_from_slice(b"ustar  \0");
        h[483..495].copy_from_slice(b"00000000000\0");
    } else {
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
    }
    if matches!(kind, b'3' | b'4') {
        h[329..337].copy_from_slice(b"0000001\0");
        h[337..345].copy_from_slice(b"0000003\0");
    }
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

/// A tar stream assembled entry by entry.
#[derive(Default)]
pub struct Tar(Vec<u8>);

impl Tar {
    pub fn new() -> Self {
        Self::default()
    }

    fn pad(&mut self) {
        self.0.resize(self.0.len().div_ceil(512) * 512, 0);
    }

    pub fn entry(mut self, path: &[u8], kind: u8, data: &[u8]) -> Self {
        self.0
            .extend_from_slice(&header(path, kind, data.len() as u64, b""));
        self.0.extend_from_slice(data);
        self.pad();
        self
    }

    pub fn file(self, path: &str, data: &[u8]) -> Self {
        self.entry(path.as_bytes(), b'0', data)
    }

    pub fn dir(self, path: &str) -> Self {
        self.entry(path.as_bytes(), b'5', b"")
    }

    pub fn link(mut self, path: &str, kind: u8, target: &str) -> Self {
        self.0
            .extend_from_slice(&header(path.as_bytes(), kind, 0, target.as_bytes()));
        self
    }

    /// A GNU long-name entry naming the next entry.
    pub fn gnu_long_name(self, name: &[u8]) -> Self {
        let mut data = name.to_vec();
        data.push(0);
        self.entry(b"././@LongLink", b'L', &data)
    }

    /// A pax extended header for the next entry.
    pub fn pax(self, key: &str, value: &[u8]) -> Self {
        let body_len = key.len() + value.len() + 3; // ' ', '=', '\n'
        let mut len = body_len + 1;
        while len != body_len + len.to_string().len() {
            len = body_len + len.to_string().len();
        }
        let mut record = format!("{len} {key}=").into_bytes();
        record.extend_from_slice(value);
        record.push(b'\n');
        self.entry(b"PaxHeaders/x", b'x', &record)
    }

    /// A header alone, for streams whose data follows separately.
    pub fn header_only(mut self, path: &[u8], kind: u8, size: u64) -> Self {
        self.0.extend_from_slice(&header(path, kind, size, b""));
        self
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0u8; 1024]);
        self.0
    }

    pub fn unfinished(self) -> Vec<u8> {
        self.0
    }
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

pub fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 3).unwrap()
}

/// `head`, then `total` zeros, as concatenated compressed members: a
/// multi-gigabyte stream for a few MB of input. Both formats allow
/// concatenated members (gzip RFC 1952 §2.2; zstd frames).
fn bomb(head: &[u8], total: u64, compress: fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
    const BLOCK: u64 = 64 << 20;
    let zeros = compress(&vec![0u8; BLOCK as usize]);
    let mut out = compress(head);
    for _ in 0..total.div_ceil(BLOCK) {
        out.extend_from_slice(&zeros);
    }
    out
}

/// Deterministic, incompressible-ish bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn tgz(name: &str, tar: Tar) -> Input {
    Input::Archive {
        file: format!("{name}.tar.gz"),
        bytes: gzip(&tar.finish()),
    }
}

fn archive(file: String, bytes: Vec<u8>) -> Input {
    Input::Archive { file, bytes }
}

fn local(name: &str, make: impl Fn(&Path) + Send + Sync + 'static) -> Input {
    Input::Local {
        name: name.into(),
        make: Box::new(make),
    }
}

fn plugin_yaml() -> &'static [u8] {
    b"name: hostile\nversion: 1.0.0\n"
}

/// The corpus. Paths an archive tries to escape to carry a `wp-escape`
/// marker so tests can look for them outside the staging root.
pub fn corpus(cap: u64) -> Vec<Case> {
    let cap_usize = usize::try_from(cap).unwrap();
    let mut cases = vec![
        // ---- paths ----
        Case {
            name: "dot-dot",
            input: tgz("dot-dot", Tar::new().file("../wp-escape-1", b"x")),
            expect: unsafe_path("../wp-escape-1"),
        },
        Case {
            name: "nested-dot-dot",
            input: tgz(
                "nested-dot-dot",
                Tar::new()
                    .file("plugin.yaml", plugin_yaml())
                    .file("a/../../wp-escape-2", b"x"),
            ),
            expect: unsafe_path("a/../../wp-escape-2"),
        },
        Case {
            name: "deep-dot-dot",
            input: tgz(
                "deep-dot-dot",
                Tar::new().file("../../../../../../../../tmp/wp-escape-3", b"x"),
            ),
            expect: unsafe_path("../../../../../../../../tmp/wp-escape-3"),
        },
        Case {
            name: "dot-slash-dot-dot",
            input: tgz(
                "dot-slash-dot-dot",
                Tar::new().file("./../wp-escape-4", b"x"),
            ),
            expect: unsafe_path("./../wp-escape-4"),
        },
        Case {
            name: "dot-dot-directory",
            input: tgz("dot-dot-directory", Tar::new().dir("../")),
            expect: unsafe_path("../"),
        },
        Case {
            name: "trailing-dot-dot",
            input: tgz("trailing-dot-dot", Tar::new().dir("a/..")),
            expect: unsafe_path("a/.."),
        },
        Case {
            name: "absolute-file",
            input: tgz("absolute-file", Tar::new().file("/tmp/wp-escape-5", b"x")),
            expect: unsafe_path("/tmp/wp-escape-5"),
        },
        Case {
            name: "absolute-directory",
            input: tgz("absolute-directory", Tar::new().dir("/tmp/wp-escape-6/")),
            expect: unsafe_path("/tmp/wp-escape-6/"),
        },
        Case {
            name: "backslash-dot-dot",
            input: tgz(
                "backslash-dot-dot",
                Tar::new().file("..\\..\\wp-escape-7", b"x"),
            ),
            expect: unsafe_path("..\\\\..\\\\wp-escape-7"),
        },
        Case {
            name: "newline-in-name",
            input: tgz("newline-in-name", Tar::new().file("a\nb", b"x")),
            expect: unsafe_path("a\\nb"),
        },
        Case {
            name: "escape-sequence-in-name",
            input: tgz(
                "escape-sequence-in-name",
                Tar::new().file("\x1b[31mred", b"x"),
            ),
            expect: unsafe_path("\\u{1b}[31mred"),
        },
        Case {
            name: "del-in-name",
            input: tgz("del-in-name", Tar::new().file("a\x7fb", b"x")),
            expect: unsafe_path("a\\u{7f}b"),
        },
        Case {
            name: "c1-control-in-name",
            input: tgz("c1-control-in-name", Tar::new().file("a\u{85}b", b"x")),
            expect: unsafe_path("a\\u{85}b"),
        },
        Case {
            name: "invalid-utf8-name",
            input: tgz(
                "invalid-utf8-name",
                Tar::new().entry(b"caf\xe9.md", b'0', b"x"),
            ),
            expect: unsafe_path("caf\\xe9.md"),
        },
        Case {
            name: "overlong-utf8-slash",
            input: tgz(
                "overlong-utf8-slash",
                Tar::new().entry(b"..\xc0\xafwp-escape-8", b'0', b"x"),
            ),
            expect: unsafe_path("..\\xc0\\xafwp-escape-8"),
        },
        Case {
            name: "nul-in-pax-path",
            input: tgz(
                "nul-in-pax-path",
                Tar::new().pax("path", b"a\0b").file("placeholder", b"x"),
            ),
            expect: unsafe_path("a\\0b"),
        },
        Case {
            name: "pax-path-dot-dot",
            input: tgz(
                "pax-path-dot-dot",
                Tar::new()
                    .pax("path", b"../wp-escape-9")
                    .file("innocent", b"x"),
            ),
            expect: unsafe_path("../wp-escape-9"),
        },
        Case {
            name: "gnu-long-name-dot-dot",
            input: tgz(
                "gnu-long-name-dot-dot",
                Tar::new()
                    .gnu_long_name(format!("{}/../../../wp-escape-10", "d".repeat(120)).as_bytes())
                    .file("innocent", b"x"),
            ),
            expect: unsafe_path(&format!("{}/../../../wp-escape-10", "d".repeat(120))),
        },
        Case {
            name: "root-as-a-file",
            input: tgz("root-as-a-file", Tar::new().file("./", b"x")),
            expect: unsafe_path("./"),
        },
        // ---- entry types ----
        Case {
            name: "symlink-to-etc-passwd",
            input: tgz(
                "symlink-to-etc-passwd",
                Tar::new()
                    .file("plugin.yaml", plugin_yaml())
                    .link("passwd", b'2', "/etc/passwd"),
            ),
            expect: symlink("passwd"),
        },
        Case {
            name: "symlink-loop",
            input: tgz("symlink-loop", Tar::new().link("loop", b'2', "loop")),
            expect: symlink("loop"),
        },
        Case {
            name: "symlink-then-write-through-it",
            input: tgz(
                "symlink-then-write-through-it",
                Tar::new()
                    .link("out", b'2', "../../")
                    .file("out/wp-escape-11", b"x"),
            ),
            expect: symlink("out"),
        },
        Case {
            name: "relative-symlink-inside",
            input: tgz(
                "relative-symlink-inside",
                Tar::new().file("plugin.yaml", plugin_yaml()).link(
                    "rules/alias.md",
                    b'2',
                    "../plugin.yaml",
                ),
            ),
            expect: symlink("rules/alias.md"),
        },
        Case {
            name: "hard-link-to-etc-passwd",
            input: tgz(
                "hard-link-to-etc-passwd",
                Tar::new().link("hard", b'1', "/etc/passwd"),
            ),
            expect: special("hard"),
        },
        Case {
            name: "hard-link-inside",
            input: tgz(
                "hard-link-inside",
                Tar::new().file("plugin.yaml", plugin_yaml()).link(
                    "copy.yaml",
                    b'1',
                    "plugin.yaml",
                ),
            ),
            expect: special("copy.yaml"),
        },
        Case {
            name: "char-device",
            input: tgz("char-device", Tar::new().entry(b"null", b'3', b"")),
            expect: special("null"),
        },
        Case {
            name: "block-device",
            input: tgz("block-device", Tar::new().entry(b"sda", b'4', b"")),
            expect: special("sda"),
        },
        Case {
            name: "fifo",
            input: tgz("fifo", Tar::new().entry(b"pipe", b'6', b"")),
            expect: special("pipe"),
        },
        Case {
            name: "gnu-sparse",
            input: tgz("gnu-sparse", Tar::new().entry(b"sparse", b'S', b"")),
            expect: special("sparse"),
        },
        Case {
            name: "unknown-entry-type",
            input: tgz("unknown-entry-type", Tar::new().entry(b"what", b'Z', b"")),
            expect: special("what"),
        },
        // ---- duplicates and conflicts ----
        Case {
            name: "duplicate-entry",
            input: tgz(
                "duplicate-entry",
                Tar::new()
                    .file("plugin.yaml", plugin_yaml())
                    .file("plugin.yaml", b"name: evil\n"),
            ),
            expect: unsafe_path("plugin.yaml"),
        },
        Case {
            name: "file-then-directory",
            input: tgz(
                "file-then-directory",
                Tar::new().file("rules", b"x").dir("rules/"),
            ),
            expect: unsafe_path("rules/"),
        },
        Case {
            name: "file-under-a-file",
            input: tgz(
                "file-under-a-file",
                Tar::new().file("a", b"x").file("a/b", b"y"),
            ),
            expect: unsafe_path("a/b"),
        },
        // ---- size ----
        Case {
            name: "gzip-bomb",
            input: archive(
                "gzip-bomb.tar.gz".into(),
                bomb(
                    &Tar::new()
                        .header_only(b"zeros", b'0', 10 << 30)
                        .unfinished(),
                    10 << 30,
                    gzip,
                ),
            ),
            expect: too_large(),
        },
        Case {
            name: "zstd-bomb",
            input: archive(
                "zstd-bomb.tar.zst".into(),
                bomb(
                    &Tar::new()
                        .header_only(b"zeros", b'0', 10 << 30)
                        .unfinished(),
                    10 << 30,
                    zstd,
                ),
            ),
            expect: too_large(),
        },
        Case {
            name: "directory-with-gigabytes-of-data",
            input: archive(
                "directory-with-data.tar.gz".into(),
                bomb(
                    &Tar::new().header_only(b"d/", b'5', 4 << 30).unfinished(),
                    cap * 2,
                    gzip,
                ),
            ),
            expect: too_large(),
        },
        Case {
            name: "pax-header-claiming-gigabytes",
            input: archive(
                "pax-memory-bomb.tar.gz".into(),
                bomb(
                    &Tar::new()
                        .header_only(b"PaxHeaders/x", b'x', 4 << 30)
                        .unfinished(),
                    4 << 20,
                    gzip,
                ),
            ),
            expect: too_large(),
        },
        Case {
            name: "twice-the-cap",
            input: tgz(
                "twice-the-cap",
                (0..4).fold(Tar::new(), |t, i| {
                    t.file(&format!("part-{i}.bin"), &noise(cap_usize / 2, i))
                }),
            ),
            expect: too_large(),
        },
        Case {
            name: "one-byte-over-the-cap",
            input: tgz(
                "one-byte-over-the-cap",
                Tar::new()
                    .file("a.bin", &noise(cap_usize / 2, 7))
                    .file("b.bin", &noise(cap_usize / 2 + 1, 8)),
            ),
            expect: too_large(),
        },
        // ---- not (valid) archives ----
        Case {
            name: "truncated-tar-gz",
            input: {
                let full = gzip(
                    &Tar::new()
                        .file("plugin.yaml", plugin_yaml())
                        .file("big.bin", &noise(64 * 1024, 3))
                        .finish(),
                );
                archive("truncated.tar.gz".into(), full[..full.len() / 2].to_vec())
            },
            expect: invalid_archive(),
        },
        Case {
            name: "truncated-tar-zst",
            input: {
                let full = zstd(
                    &Tar::new()
                        .file("plugin.yaml", plugin_yaml())
                        .file("big.bin", &noise(64 * 1024, 4))
                        .finish(),
                );
                archive("truncated.tar.zst".into(), full[..full.len() / 2].to_vec())
            },
            expect: invalid_archive(),
        },
        Case {
            name: "tar-cut-inside-an-entry",
            input: archive(
                "cut-inside.tgz".into(),
                gzip(&Tar::new().file("big.bin", &noise(10_000, 5)).unfinished()[..4096]),
            ),
            expect: invalid_archive(),
        },
        Case {
            name: "text-file-named-tar-gz",
            input: archive(
                "readme.tar.gz".into(),
                b"# just a README, not an archive\n".to_vec(),
            ),
            expect: invalid_archive(),
        },
        Case {
            name: "uncompressed-tar-named-tar-gz",
            input: archive(
                "plain.tar.gz".into(),
                Tar::new().file("plugin.yaml", plugin_yaml()).finish(),
            ),
            expect: invalid_archive(),
        },
        Case {
            name: "zstd-named-tgz",
            input: archive(
                "mislabelled.tgz".into(),
                zstd(&Tar::new().file("plugin.yaml", plugin_yaml()).finish()),
            ),
            expect: invalid_archive(),
        },
        Case {
            name: "gzip-of-garbage",
            input: archive("garbage.tar.gz".into(), gzip(&noise(4096, 9))),
            expect: invalid_archive(),
        },
        Case {
            name: "bad-header-checksum",
            input: {
                let mut tar = Tar::new().file("plugin.yaml", plugin_yaml()).finish();
                tar[148] = b'7';
                archive("bad-checksum.tar.gz".into(), gzip(&tar))
            },
            expect: invalid_archive(),
        },
        Case {
            name: "digest-mismatch",
            input: Input::WrongDigest {
                file: "tampered.tar.gz".into(),
                bytes: gzip(&Tar::new().file("plugin.yaml", plugin_yaml()).finish()),
            },
            expect: Expect::Error(422, "archive sha256 mismatch".into()),
        },
        // ---- manifests that are hostile but not errors ----
        Case {
            name: "plugin-yaml-over-256-kib",
            input: tgz(
                "big-manifest",
                Tar::new().file("plugin.yaml", &big_manifest()),
            ),
            expect: Expect::Staged,
        },
        Case {
            name: "plugin-yaml-invalid-utf8",
            input: tgz(
                "invalid-utf8-manifest",
                Tar::new().file("plugin.yaml", b"name: x\nversion: \xff\xfe\n"),
            ),
            expect: Expect::Staged,
        },
        Case {
            name: "plugin-yaml-alias-bomb",
            input: tgz(
                "alias-bomb-manifest",
                Tar::new().file("plugin.yaml", alias_bomb().as_bytes()),
            ),
            expect: Expect::Staged,
        },
    ];

    // ---- the local registry ----
    cases.extend([
        Case {
            name: "local-symlink-to-etc-passwd",
            input: local("l-symlink", |p| {
                std::fs::write(p.join("plugin.yaml"), plugin_yaml()).unwrap();
                std::os::unix::fs::symlink("/etc/passwd", p.join("passwd")).unwrap();
            }),
            expect: symlink("passwd"),
        },
        Case {
            name: "local-plugin-dir-is-a-symlink",
            input: Input::LocalSymlinkedRoot {
                name: "l-symlinked-root".into(),
            },
            expect: symlink("."),
        },
        Case {
            name: "local-symlinked-subdirectory",
            input: local("l-symlinked-dir", |p| {
                std::os::unix::fs::symlink("/etc", p.join("etc")).unwrap();
            }),
            expect: symlink("etc"),
        },
        Case {
            name: "local-symlink-loop",
            input: local("l-loop", |p| {
                std::os::unix::fs::symlink("loop", p.join("loop")).unwrap();
            }),
            expect: symlink("loop"),
        },
        Case {
            name: "local-fifo",
            input: local("l-fifo", |p| {
                let status = std::process::Command::new("mkfifo")
                    .arg(p.join("pipe"))
                    .status()
                    .unwrap();
                assert!(status.success(), "mkfifo");
            }),
            expect: special("pipe"),
        },
        Case {
            name: "local-unix-socket",
            input: local("l-socket", |p| {
                let listener = std::os::unix::net::UnixListener::bind(p.join("sock")).unwrap();
                drop(listener);
            }),
            expect: special("sock"),
        },
        Case {
            name: "local-hard-link",
            input: local("l-hard-link", |p| {
                std::fs::write(p.join("orig"), b"x").unwrap();
                std::fs::hard_link(p.join("orig"), p.join("hard")).unwrap();
            }),
            expect: special("hard"),
        },
        Case {
            name: "local-newline-in-name",
            input: local("l-newline", |p| {
                std::fs::write(p.join("a\nb"), b"x").unwrap();
            }),
            expect: unsafe_path("a\\nb"),
        },
        Case {
            name: "local-invalid-utf8-name",
            input: local("l-invalid-utf8", |p| {
                let name = std::ffi::OsStr::from_bytes(b"\xff.md");
                std::fs::write(p.join(name), b"x").unwrap();
            }),
            expect: unsafe_path("\\xff.md"),
        },
        Case {
            name: "local-backslash-dot-dot",
            input: local("l-backslash", |p| {
                std::fs::write(p.join("..\\..\\wp-escape-12"), b"x").unwrap();
            }),
            expect: unsafe_path("..\\\\..\\\\wp-escape-12"),
        },
        Case {
            name: "local-over-the-cap",
            input: local("l-too-large", move |p| {
                std::fs::write(p.join("big.bin"), noise(cap_usize + 1, 11)).unwrap();
            }),
            expect: too_large(),
        },
        Case {
            name: "local-plugin-yaml-over-256-kib",
            input: local("l-big-manifest", |p| {
                std::fs::write(p.join("plugin.yaml"), big_manifest()).unwrap();
            }),
            expect: Expect::Staged,
        },
        Case {
            name: "local-plugin-yaml-invalid-utf8",
            input: local("l-invalid-utf8-manifest", |p| {
                std::fs::write(p.join("plugin.yaml"), b"version: \xff\n").unwrap();
            }),
            expect: Expect::Staged,
        },
    ]);
    cases
}

/// A valid-looking manifest padded past the 256 KiB parse cap.
pub fn big_manifest() -> Vec<u8> {
    let mut yaml = b"name: big\nversion: 9.9.9\ndescription: |\n".to_vec();
    while yaml.len() <= 300 * 1024 {
        yaml.extend_from_slice(b"  padding padding padding padding padding padding\n");
    }
    yaml
}

/// "Billion laughs": nine levels of nine aliases.
pub fn alias_bomb() -> String {
    let mut yaml = String::from("a0: &a0 [\"lol\"]\n");
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 9].join(", ");
        yaml.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    yaml.push_str("version: *a9\n");
    yaml
}

// ---- one hostile tree, every source -----------------------------------

/// An entry of a tree that every source can be asked to hold.
pub enum Node {
    File(Vec<u8>),
    /// A symlink to this target.
    Symlink(&'static str),
    /// A FIFO (a local directory, a tarball) or a submodule (git).
    Special,
}

/// A tree (paths `/`-separated, parents implicit), the sources that can
/// express it, and the one answer all of them must get.
pub struct SameTree {
    pub name: &'static str,
    pub entries: Vec<(Vec<u8>, Node)>,
    /// False when a local directory cannot hold it (a `..` entry).
    pub local: bool,
    pub expect: Expect,
}

/// The hostile trees of SPEC §4, each to be staged from a local directory,
/// an https tarball and a git repository; `cap` and `max_entries` are the
/// app's `PLUGIN_INSTALL_MAX_DIR_BYTES` and `PLUGIN_INSTALL_MAX_ENTRIES`.
pub fn same_trees(cap: u64, max_entries: u64) -> Vec<SameTree> {
    let file =
        |path: &str, content: &[u8]| (path.as_bytes().to_vec(), Node::File(content.to_vec()));
    vec![
        SameTree {
            name: "same-symlink",
            entries: vec![
                file("plugin.yaml", plugin_yaml()),
                (b"rules/link".to_vec(), Node::Symlink("/etc/passwd")),
            ],
            local: true,
            expect: symlink("rules/link"),
        },
        SameTree {
            // A right-to-left override in a name could make a message
            // read as something else: it is shown escaped, by every source.
            name: "same-symlink-rtl",
            entries: vec![
                file("plugin.yaml", plugin_yaml()),
                (
                    "rules/evil\u{202e}dm.link".as_bytes().to_vec(),
                    Node::Symlink("../plugin.yaml"),
                ),
            ],
            local: true,
            expect: symlink("rules/evil\\u{202e}dm.link"),
        },
        SameTree {
            name: "same-dot-dot",
            entries: vec![file("plugin.yaml", plugin_yaml()), file("rules/..", b"x")],
            local: false,
            expect: unsafe_path("rules/.."),
        },
        SameTree {
            name: "same-control-char",
            entries: vec![file("plugin.yaml", plugin_yaml()), file("a\nb", b"x")],
            local: true,
            expect: unsafe_path("a\\nb"),
        },
        SameTree {
            name: "same-special-file",
            entries: vec![
                file("plugin.yaml", plugin_yaml()),
                (b"pipe".to_vec(), Node::Special),
            ],
            local: true,
            expect: special("pipe"),
        },
        SameTree {
            name: "same-over-the-byte-cap",
            entries: vec![file(
                "big.bin",
                &noise(usize::try_from(cap).unwrap() + 1, 21),
            )],
            local: true,
            expect: too_large(),
        },
        SameTree {
            name: "same-over-the-entry-cap",
            // `plugin.yaml`, `many/` and its files: one entry more than
            // the cap (a file at the root, so a tarball's single top-level
            // directory is not taken for the plugin root).
            entries: std::iter::once(file("plugin.yaml", plugin_yaml()))
                .chain((1..max_entries).map(|i| file(&format!("many/f{i:05}"), b"")))
                .collect(),
            local: true,
            expect: Expect::Error(413, "staged plugin has too many entries".into()),
        },
    ]
}

/// Writes `entries` under the existing directory `dir`.
pub fn write_local(dir: &Path, entries: &[(Vec<u8>, Node)]) {
    for (path, node) in entries {
        let full = dir.join(std::ffi::OsStr::from_bytes(path));
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        match node {
            Node::File(content) => std::fs::write(&full, content).unwrap(),
            Node::Symlink(target) => std::os::unix::fs::symlink(target, &full).unwrap(),
            Node::Special => {
                let status = std::process::Command::new("mkfifo")
                    .arg(&full)
                    .status()
                    .unwrap();
                assert!(status.success(), "mkfifo");
            }
        }
    }
}

/// `entries` as a gzipped tarball, in order, parents implicit.
pub fn tar_gz_of(entries: &[(Vec<u8>, Node)]) -> Vec<u8> {
    let tar = entries
        .iter()
        .fold(Tar::new(), |tar, (path, node)| match node {
            Node::File(content) => tar.entry(path, b'0', content),
            Node::Symlink(target) => tar.link(std::str::from_utf8(path).unwrap(), b'2', target),
            Node::Special => tar.entry(path, b'6', b""),
        });
    gzip(&tar.finish())
}

/// Waits until `dir` is empty: staging directories are removed in the
/// background once a request is answered.
pub async fn wait_until_empty(dir: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let left: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} still holds {left:?}",
            dir.display()
        );
        // Polled: nothing announces the background removal's end.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
