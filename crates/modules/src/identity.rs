//! What names a package: module names, versions, platforms, `name@version` references, and
//! the package file name built from them.

use std::fmt;
use std::str::FromStr;

use semver::Version;
use serde::{Deserialize, Serialize};

/// The longest module (or service) name accepted.
pub const MAX_NAME_LEN: usize = 64;

/// Checks a module or service name: 1 to 64 characters of `A-Z a-z 0-9 _ . -`, not starting
/// with `.` or `-`. Returns the reason when it is not valid.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("longer than {MAX_NAME_LEN} characters"));
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err("must not start with '.' or '-'".to_owned());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!("contains {c:?}; allowed: A-Z a-z 0-9 _ . -"));
    }
    Ok(())
}

/// Checks a module version: semver without build metadata (a `+` would have to be escaped
/// in registry URLs and file names). Returns the reason when it is not valid.
pub fn check_version(version: &Version) -> Result<(), String> {
    if version.build.is_empty() {
        Ok(())
    } else {
        Err(format!("{version}: build metadata (+…) is not allowed"))
    }
}

/// The platform a package is built for: `any`, or an operating system and an architecture
/// (`linux-x86_64`, `linux-aarch64`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Platform {
    /// Runs everywhere (scripts, data): the generic package file.
    #[default]
    Any,
    /// Built for one operating system and architecture.
    Specific {
        /// Operating system, e.g. `linux`.
        os: String,
        /// Architecture as Rust names it, e.g. `x86_64`, `aarch64`.
        arch: String,
    },
}

impl Platform {
    /// The platform this program runs on (`linux-x86_64` on a 64-bit PC running Linux).
    pub fn current() -> Self {
        Platform::Specific {
            os: std::env::consts::OS.to_owned(),
            arch: std::env::consts::ARCH.to_owned(),
        }
    }

    /// The suffix this platform adds to a package file name: `""` or `-linux-x86_64`.
    pub fn file_suffix(&self) -> String {
        match self {
            Platform::Any => String::new(),
            Platform::Specific { os, arch } => format!("-{os}-{arch}"),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Platform::Any => f.write_str("any"),
            Platform::Specific { os, arch } => write!(f, "{os}-{arch}"),
        }
    }
}

impl FromStr for Platform {
    type Err = String;

    /// Parses `any` or `OS-ARCH` (lower-case letters, digits and `_`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "any" {
            return Ok(Platform::Any);
        }
        let ok = |part: &str| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        match s.split_once('-') {
            Some((os, arch)) if ok(os) && ok(arch) => Ok(Platform::Specific {
                os: os.to_owned(),
                arch: arch.to_owned(),
            }),
            _ => Err(format!(
                "{s:?} is not a platform: expected \"any\" or OS-ARCH like \"linux-x86_64\""
            )),
        }
    }
}

/// A module at one version: `name@version`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ModuleRef {
    /// The module's name.
    pub name: String,
    /// Its version.
    pub version: Version,
}

impl ModuleRef {
    /// A reference to `name` at `version`.
    pub fn new(name: impl Into<String>, version: Version) -> Self {
        Self {
            name: name.into(),
            version,
        }
    }
}

impl fmt::Display for ModuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

impl FromStr for ModuleRef {
    type Err = String;

    /// Parses `name@version`, checking both parts.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, version) = s
            .split_once('@')
            .ok_or_else(|| format!("{s:?} is not NAME@VERSION"))?;
        check_name(name).map_err(|reason| format!("{s:?}: name {reason}"))?;
        let version = Version::parse(version)
            .map_err(|e| format!("{s:?}: version {version:?} is not semver: {e}"))?;
        check_version(&version)?;
        Ok(Self::new(name, version))
    }
}

/// What a package is: module name, version and platform. The signature's trusted comment
/// carries it, and the manifest inside the archive must agree with it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PackageIdentity {
    /// Module name.
    pub name: String,
    /// Module version.
    pub version: Version,
    /// Platform the package is built for.
    pub platform: Platform,
}

/// The prefix of the trusted comment of every reeve module signature.
pub const TRUSTED_COMMENT_PREFIX: &str = "reeve-module";

impl PackageIdentity {
    /// The package file name: `<name>-<version>[-<os>-<arch>].tar.gz`.
    pub fn file_name(&self) -> String {
        format!(
            "{}-{}{}.tar.gz",
            self.name,
            self.version,
            self.platform.file_suffix()
        )
    }

    /// The module reference `name@version`.
    pub fn module_ref(&self) -> ModuleRef {
        ModuleRef::new(self.name.clone(), self.version.clone())
    }

    /// The signature's trusted comment naming this package, in its one fixed format:
    /// `reeve-module name=NAME version=VERSION platform=PLATFORM`.
    pub fn trusted_comment(&self) -> String {
        format!(
            "{TRUSTED_COMMENT_PREFIX} name={} version={} platform={}",
            self.name, self.version, self.platform
        )
    }

    /// Parses a trusted comment written by [`trusted_comment`](Self::trusted_comment)
    /// (exactly that format: the three fields in that order, single spaces).
    pub fn from_trusted_comment(comment: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "trusted comment {comment:?} is not \"{TRUSTED_COMMENT_PREFIX} name=… version=… platform=…\""
            )
        };
        let mut words = comment.split(' ');
        if words.next() != Some(TRUSTED_COMMENT_PREFIX) {
            return Err(bad());
        }
        let mut field = |key: &str| {
            words
                .next()
                .and_then(|w| w.strip_prefix(key))
                .and_then(|w| w.strip_prefix('='))
                .ok_or_else(bad)
        };
        let name = field("name")?.to_owned();
        let version = field("version")?;
        let platform = field("platform")?;
        if words.next().is_some() {
            return Err(bad());
        }
        check_name(&name).map_err(|reason| format!("trusted comment: name {reason}"))?;
        let version = Version::parse(version)
            .map_err(|e| format!("trusted comment: version {version:?}: {e}"))?;
        let platform = platform.parse()?;
        Ok(Self {
            name,
            version,
            platform,
        })
    }
}

impl fmt::Display for PackageIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{} ({})", self.name, self.version, self.platform)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(platform: &str) -> PackageIdentity {
        PackageIdentity {
            name: "my-server".into(),
            version: Version::new(1, 2, 0),
            platform: platform.parse().unwrap(),
        }
    }

    #[test]
    fn file_names() {
        assert_eq!(id("any").file_name(), "my-server-1.2.0.tar.gz");
        assert_eq!(
            id("linux-x86_64").file_name(),
            "my-server-1.2.0-linux-x86_64.tar.gz"
        );
    }

    #[test]
    fn trusted_comment_round_trip() {
        for p in ["any", "linux-aarch64"] {
            let c = id(p).trusted_comment();
            assert_eq!(PackageIdentity::from_trusted_comment(&c).unwrap(), id(p));
        }
        assert_eq!(
            id("any").trusted_comment(),
            "reeve-module name=my-server version=1.2.0 platform=any"
        );
    }

    #[test]
    fn bad_trusted_comments() {
        for c in [
            "timestamp:1234 file:x.tar.gz",
            "reeve-module name=a version=1.0.0",
            "reeve-module version=1.0.0 name=a platform=any",
            "reeve-module name=a version=1.0.0 platform=any extra",
            "reeve-module name=../a version=1.0.0 platform=any",
            "reeve-module name=a version=1.0 platform=any",
        ] {
            assert!(PackageIdentity::from_trusted_comment(c).is_err(), "{c}");
        }
    }

    #[test]
    fn names_and_refs() {
        assert!(check_name("my-server").is_ok());
        for bad in ["", ".x", "-x", "a/b", "a b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        let r: ModuleRef = "redis@2.8.19".parse().unwrap();
        assert_eq!(r.to_string(), "redis@2.8.19");
        assert!("redis".parse::<ModuleRef>().is_err());
        assert!("redis@1.0.0+build".parse::<ModuleRef>().is_err());
    }

    #[test]
    fn platforms() {
        assert_eq!("any".parse::<Platform>().unwrap(), Platform::Any);
        assert!("linux".parse::<Platform>().is_err());
        assert!("Linux-x86".parse::<Platform>().is_err());
        assert_eq!(Platform::current().file_suffix().matches('-').count(), 2);
    }
}
