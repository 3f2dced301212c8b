//! `reeve dev`: the one-command start. A hub and a local agent with embedded defaults
//! (SQLite, everything in one folder), a registry folder holding the signed example module
//! served by the hub, the agent enrolled, a desired state applied through the hub that
//! installs and runs the example module, then the dashboard URL and an operator token.
//! Ctrl-C stops the services, the agent and the hub.

use anyhow::{Context, Result, bail};
use clap::Args;
use reeve_delivery::envelope::{Request, authorize};
use reeve_delivery::keys::KeyPair;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// `reeve dev`.
#[derive(Args, Debug)]
pub struct DevArgs {
    /// The folder that holds everything (hub, agent, registry, keys).
    #[arg(long, default_value = ".reeve-dev")]
    pub dir: PathBuf,
    /// The hub's TLS port (relay and API) on 127.0.0.1.
    #[arg(long, default_value_t = 7443)]
    pub hub_port: u16,
    /// The dashboard's plain-HTTP port on 127.0.0.1.
    #[arg(long, default_value_t = 7080)]
    pub http_port: u16,
    /// The port the example module serves on.
    #[arg(long, default_value_t = 8080)]
    pub example_port: u16,
    /// Log filter of the hub and agent diagnostics.
    #[arg(long, env = "REEVE_LOG", default_value = "warn")]
    pub log_level: String,
}

const EXAMPLE: &[(&str, &str, u32)] = &[
    (
        "module.toml",
        include_str!("../../modules/examples/my-server/module.toml"),
        0o644,
    ),
    (
        "serve.py",
        include_str!("../../modules/examples/my-server/serve.py"),
        0o644,
    ),
    (
        "hooks/configure",
        include_str!("../../modules/examples/my-server/hooks/configure"),
        0o755,
    ),
    (
        "templates/server.json.j2",
        include_str!("../../modules/examples/my-server/templates/server.json.j2"),
        0o644,
    ),
];

fn step(msg: &str) {
    eprintln!("  \u{2022} {msg}");
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn sibling(name: &str) -> Result<PathBuf> {
    reeve_agent::config::sibling_binary(name)
}

fn run_tool(args: &[&str]) -> Result<String> {
    let out = Command::new(sibling("reeve-modwork")?)
        .arg("tool")
        .args(args)
        .output()
        .context("cannot run reeve-modwork")?;
    if !out.status.success() {
        bail!(
            "reeve-modwork {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Writes the example module, packs and signs it into the registry folder; returns the
/// trusted key file.
fn publish_example(dir: &Path) -> Result<PathBuf> {
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys)?;
    let public = keys.join("modules.pub");
    if !public.exists() {
        run_tool(&[
            "keygen",
            "--out-dir",
            &keys.to_string_lossy(),
            "--name",
            "modules",
        ])?;
    }
    let src = dir.join("example/my-server");
    for (rel, text, mode) in EXAMPLE {
        let p = src.join(rel);
        std::fs::create_dir_all(p.parent().context("path")?)?;
        std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))?;
    }
    let out = dir.join("registry/my-server/my-server-1.0.0");
    std::fs::create_dir_all(&out)?;
    let pkg = run_tool(&[
        "pack",
        "--dir",
        &src.to_string_lossy(),
        "--out",
        &out.to_string_lossy(),
    ])?;
    let pkg = pkg
        .lines()
        .last()
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    run_tool(&[
        "sign",
        &pkg,
        "--key",
        &keys.join("modules.key").to_string_lossy(),
    ])?;
    Ok(public)
}

fn operator_key(dir: &Path) -> Result<KeyPair> {
    let path = dir.join("keys/dev.key");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return KeyPair::from_secret_base64(text.trim()).context("keys/dev.key is not a key");
    }
    let k = KeyPair::generate()?;
    write_private(&path, &format!("{}\n", k.secret_base64()))?;
    std::fs::write(
        dir.join("keys/dev.pub"),
        format!("{}\n", k.public().to_base64()),
    )?;
    Ok(k)
}

/// Runs `reeve dev` until Ctrl-C.
pub async fn run(a: DevArgs) -> Result<ExitCode> {
    crate::cli::init_tracing("text", &a.log_level);
    std::fs::create_dir_all(&a.dir)
        .with_context(|| format!("cannot create {}", a.dir.display()))?;
    let dir = std::fs::canonicalize(&a.dir)?;
    eprintln!("reeve dev: everything lives in {}", dir.display());
    let trusted = publish_example(&dir)?;
    step("signed the example module my-server 1.0.0 into the registry folder");

    let hub = reeve_hub::start(&reeve_hub::Config {
        data_dir: dir.join("hub"),
        listen: ([127, 0, 0, 1], a.hub_port).into(),
        http: Some(([127, 0, 0, 1], a.http_port).into()),
        url: None,
        registry_dir: Some(dir.join("registry")),
        retention: Default::default(),
    })
    .await
    .context("cannot start the hub (is another reeve dev running? --hub-port/--http-port pick other ports)")?;
    let http = hub.http_addr.context("no HTTP listener")?;
    let cert = crate::hub_cmds::cert_fingerprint(&dir.join("hub"))?;
    step(&format!(
        "hub on {} (key {}, certificate {cert})",
        hub.url,
        hub.hub.public_key().fingerprint()
    ));

    let op = operator_key(&dir)?;
    let token = reeve_hub::admin::add_operator(
        &dir.join("hub"),
        "dev",
        "admin",
        Some(&op.public().to_base64()),
    )?;

    let data = dir.join("agent/data");
    let services = dir.join("agent/services");
    std::fs::create_dir_all(&services)?;
    let pinned = reeve_agent::node::identity::load_file(&data)?
        .and_then(|f| f.hub_key)
        .is_some_and(|k| k == hub.hub.public_key().to_base64());
    if !pinned {
        let t = reeve_hub::admin::create_token(&dir.join("hub"), &hub.url, 600_000)?;
        reeve_agent::node::enrol::join(&data, None, &t.encode(), Some("dev"), None).await?;
        step("node dev enrolled (hub key pinned)");
    }
    let policy = reeve_agent::node::policy_path(&data);
    if !policy.exists() {
        std::fs::write(
            &policy,
            format!(
                "# reeve dev: the dev operator may run commands here (exec is off by default).\n[keys]\ndev = \"{}\"\n\n[methods]\n\"exec\" = [\"dev\"]\n\"exec.stream\" = [\"dev\"]\n",
                op.public().to_base64()
            ),
        )?;
    }
    let socket = dir.join("agent.sock");
    let mut agent_cmd = Command::new(std::env::current_exe()?);
    agent_cmd
        .arg("agent")
        .args(["--data-dir", &data.to_string_lossy()])
        .args(["--services-dir", &services.to_string_lossy()])
        .args(["--registry", &format!("http://{http}/registry")])
        .args(["--trusted-keys", &trusted.to_string_lossy()])
        .args(["--log-level", &a.log_level])
        .env("REEVE_SOCKET", &socket)
        .stdin(Stdio::null());
    if reeve_agent::config::is_root() {
        agent_cmd.arg("--allow-root");
    }
    let mut agent = agent_cmd.spawn().context("cannot start the agent")?;
    let client = reeve_agent::client::Client::new(&socket);
    let started = Instant::now();
    loop {
        if client.get::<serde_json::Value>("/v1/agent").await.is_ok() {
            break;
        }
        if let Ok(Some(status)) = agent.try_wait() {
            bail!("the agent exited at start ({status})");
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = agent.kill();
            bail!("the agent did not answer within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    step("agent started, connecting to the hub");

    // The desired state goes through the hub, signed by the dev operator, like any command.
    let desired = serde_json::json!({"modules": [{"name": "my-server", "version": "1.0.0", "config": {"port": a.example_port}, "running": true}]});
    let req = Request::new(
        "dev",
        "dev",
        "state.apply",
        desired,
        reeve_hub::now_ms() + 3_600_000,
    );
    let (id, _) = hub.hub.accept(authorize(&req, &op)?, "dev").await?;
    let outcome = wait_reply(&hub.hub, &id, Duration::from_secs(120)).await;
    match outcome {
        Some(r) if r.get("status").and_then(|s| s.as_str()) == Some("ok") => {
            step(&format!(
                "desired state applied: my-server 1.0.0 runs on http://127.0.0.1:{}/",
                a.example_port
            ));
        }
        Some(r) => eprintln!("  ! the desired state was not applied: {r}"),
        None => eprintln!("  ! no answer to the desired state yet; see the dashboard"),
    }
    let env_file = dir.join("env");
    write_private(
        &env_file,
        &format!(
            "export REEVE_HUB=https://127.0.0.1:{}\nexport REEVE_HUB_CERT={cert}\nexport REEVE_TOKEN={token}\nexport REEVE_KEY={}\nexport REEVE_SOCKET={}\n",
            a.hub_port,
            dir.join("keys/dev.key").display(),
            socket.display()
        ),
    )?;
    println!();
    println!("reeve dev is running.");
    println!("  dashboard:       http://{http}/");
    println!("  operator token:  {token}");
    println!("  hub (TLS):       {}", hub.url);
    println!(
        "  in another shell: source {} && reeve nodes && reeve ps && reeve send --to dev exec -- uname -a",
        env_file.display()
    );
    println!("Ctrl-C stops everything.");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("\nstopping: services, agent, hub");
    let buddies: Vec<u32> = match client
        .get::<Vec<reeve_proto::api::ServiceStatus>>("/v1/services")
        .await
    {
        Ok(l) => l.iter().filter_map(|s| s.buddy_pid).collect(),
        Err(e) => {
            eprintln!("  ! cannot list the services: {e:#}");
            Vec::new()
        }
    };
    tracing::debug!(?buddies, "stopping buddies after the agent");
    let _ = Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status();
    let _ = tokio::task::spawn_blocking(move || agent.wait()).await;
    // Buddies outlive the agent by design; here everything stops: a buddy stops its service
    // and exits on SIGTERM. The services' desired state stays "running", so the next
    // `reeve dev` brings them back.
    for b in buddies {
        let _ = Command::new("kill")
            .args(["-TERM", &b.to_string()])
            .status();
    }
    drop(hub);
    Ok(ExitCode::SUCCESS)
}

async fn wait_reply(hub: &reeve_hub::Hub, id: &str, limit: Duration) -> Option<serde_json::Value> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(m)) = hub.message(id)
            && m.state == "replied"
        {
            return m.reply;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}
