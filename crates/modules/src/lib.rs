//! reeve's module packages: everything about modules that does not need the agent.
//!
//! A **module** is a package `<name>-<version>[-<os>-<arch>].tar.gz` with a manifest at its
//! root (`module.toml`, or Outpost's `module.json`), signed in minisign's format, served by
//! any static HTTP server with Outpost's layout, and unpacked safely into its own directory.
//! A node converges to a **desired state** (modules, versions, configs, running or not) by
//! planned steps, and rolls back by planned steps.
//!
//! | module | what |
//! |---|---|
//! | [`identity`] | names, versions, platforms, `name@version`, package file names, the signed trusted comment |
//! | [`manifest`] | the manifest: two-phase check with every error at once; config validation with schema defaults |
//! | [`pack`] | reproducible packing; reading an archive's identity |
//! | [`sign`] | minisign keys, signing, verification (fail closed without keys) |
//! | [`registry`] | the registry client: platform file first, resumable hashed downloads into the cache, verified |
//! | [`unpack`] | safe unpack into a fresh directory, checked against the signature's identity |
//! | [`template`] | config templates rendered at `configure`, confined to the module directory |
//! | [`plan`] | desired and installed state, the ordered steps, what steps do, rollback |
//! | [`worker`] | what the module worker (`reeve-modwork`) reports to the agent |
//!
//! Everything but [`identity`], [`plan`] and [`worker`] is behind the default feature
//! `worker`. The agent builds without it: it links only the planner and runs the package
//! work (registry, TLS, unpack, schemas, templates) in the separate `reeve-modwork`
//! process, so that code neither weighs on the agent's resident memory nor handles
//! untrusted archives, schemas and templates inside the agent's address space.
//!
//! Nothing here spawns a process, talks to the supervisor or keeps state between calls:
//! the library does no IO but files under the paths it is given and HTTP to the registry.
//!
//! # For the agent: how the pieces fit
//!
//! The agent does the steps below through the module worker `reeve-modwork` (a child
//! process per operation: `fetch`, `install`, `manifest`, `configure`; results as
//! [`worker`] types), and keeps the planning, hooks, records and journal itself.
//!
//! An apply (`state.apply`, `reeve state apply`) goes:
//! 1. [`plan::DesiredState::parse`] the input; [`plan::plan`] against the recorded
//!    [`plan::InstalledState`] (the first plan knows the submodules of installed modules
//!    only);
//! 2. run its [`plan::Step::Download`] steps: [`registry::Registry::fetch`] for each (with a
//!    progress callback for the CLI's bar; the submodules of each fetched package come from
//!    [`pack::read_package_identity`]-style reading or, after unpack, its manifest), and plan
//!    again with the submodules now known, refusing a downgrade unless forced (compare
//!    versions in the plan's steps against the installed ones);
//! 3. journal and execute the steps in order, recording each completed one with
//!    [`plan::apply_step`]:
//!    - `Install`: [`unpack::unpack`] the fetched package into `<modules>/<name>@<version>`
//!      with `fetched.identity` (so a package signed as another version fails), install its
//!      submodules the same way, run the `install` hook;
//!    - `Configure`: [`manifest::Manifest::validate_config`] (every violation reported;
//!      nothing changes on error), [`template::render_templates`] with the result, write the
//!      config JSON, run the `configure` hook;
//!    - `Start`: run the `start` hook, then give each of [`manifest::Manifest::services`]
//!      (as `module/service`, [`manifest::ServiceSpec::to_file_text`] parsed by reeve-config,
//!      working directory the module directory) to the supervisor;
//!    - `Stop`: stop those services, run the `stop` hook;
//!    - `Uninstall`: run the `uninstall` hook, remove the directory (the cache keeps the
//!      package);
//! 4. on a failure: [`plan::rollback`] with the state before, the completed steps and the
//!    failed one, and execute that.
//!
//! **Hooks** are executables inside the module ([`manifest::Hook`], each with a time limit,
//! default [`manifest::DEFAULT_HOOK_TIMEOUT`]). The environment the agent is expected to give
//! them: working directory the module directory; `REEVE_MODULE_NAME`,
//! `REEVE_MODULE_VERSION`, `REEVE_MODULE_DIR`, `REEVE_HOOK` (`install` … `uninstall`), and at
//! `configure` and after, `REEVE_CONFIG` (path of the validated configuration as JSON, defaults
//! applied). A hook that exits non-zero or outlives its limit fails its step.
//!
//! # Example: pack, sign, verify, unpack
//!
//! ```
//! use std::path::Path;
//! use reeve_modules::{pack, sign, unpack};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/my-server");
//! let work = tempfile::tempdir()?;
//!
//! // Pack (the same directory always gives the same bytes) and sign.
//! let package = pack::pack(&example, work.path())?;
//! let keys = sign::generate_keypair()?;
//! let signature = sign::sign_package(&package, &keys.secret)?;
//! assert!(signature.contains("reeve-module name=my-server version=1.0.0 platform=any"));
//!
//! // Verify against the trusted keys: no keys, no install.
//! assert!(sign::verify_file(&package, &signature, &[]).is_err());
//! let verified = sign::verify_file(&package, &signature, &[keys.public])?;
//! let identity = verified.identity()?;
//!
//! // Unpack safely; the manifest must name what the signature named.
//! let target = work.path().join("my-server@1.0.0");
//! let manifest = unpack::unpack(&package, &target, &unpack::Limits::default(), &identity)?;
//! let config = manifest
//!     .validate_config(&serde_json::json!({"port": 8989}))
//!     .map_err(|e| e.join("; "))?;
//! assert_eq!(config["port"], 8989);
//! assert!(config["message"].is_string()); // a default from the schema
//! # Ok(())
//! # }
//! ```
#![deny(unsafe_code)]

pub mod identity;
#[cfg(feature = "worker")]
pub mod manifest;
#[cfg(feature = "worker")]
pub mod pack;
pub mod plan;
#[cfg(feature = "worker")]
pub mod registry;
#[cfg(feature = "worker")]
pub mod sign;
#[cfg(feature = "worker")]
pub mod template;
#[cfg(feature = "worker")]
pub mod unpack;
pub mod worker;
