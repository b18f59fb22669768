//! `campusgw`: parses the command line, installs logging, and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use campus_gateway::config::Config;
use campus_gateway::telemetry::{init_logging, LogFormat};
use campus_gateway::web::{AuthStore, Role};
use campus_gateway::{app, data_dir, demo};

/// Campus Gateway: school safety sensors in, alarms and time series out.
#[derive(Debug, Parser)]
#[command(name = "campusgw", version, about)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "auto")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole gateway on a simulated campus, with nothing installed.
    Demo {
        /// Port of the status page (and /healthz, /metrics).
        #[arg(long, default_value_t = 8080)]
        web_port: u16,
        /// Port of the embedded MQTT broker (0: any free port).
        #[arg(long, default_value_t = 1883)]
        mqtt_port: u16,
        /// Keep the demo's users, alarms and spool here (default: a fresh
        /// private directory, removed when the demo stops).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Run the gateway: the production daemon.
    Run {
        /// The configuration file.
        #[arg(long, short, env = "CAMPUSGW_CONFIG")]
        config: PathBuf,
    },
    /// Validate a configuration file and print every problem.
    Check {
        /// The configuration file.
        #[arg(long, short, env = "CAMPUSGW_CONFIG")]
        config: PathBuf,
    },
    /// Print who is on duty (值班), per team, now or at a local time.
    Roster {
        /// The configuration file.
        #[arg(long, short, env = "CAMPUSGW_CONFIG")]
        config: PathBuf,
        /// A local time (`[alarms].utc_offset`), e.g. "2026-12-02 03:00"; default now.
        #[arg(long)]
        at: Option<String>,
    },
    /// Duty alerts: check a channel.
    Notify {
        #[command(subcommand)]
        action: NotifyCommand,
    },
    /// Publish the reference feed from simulated devices to a broker (for
    /// checking a site's broker, ACLs and database before the devices arrive).
    Simulate(SimulateArgs),
    /// Copy every store of the data directory (users, alarms, duty alerts)
    /// into a new directory while the gateway runs (SQLite online backup).
    Backup {
        #[command(flatten)]
        store: DataDirArgs,
        /// The new directory for the copies (must not exist, or be empty).
        #[arg(long)]
        to: PathBuf,
    },
    /// Ask a gateway's /healthz (for a container's HEALTHCHECK: the image has no curl).
    Health {
        /// The URL of /healthz.
        #[arg(long, default_value = "http://127.0.0.1:8080/healthz")]
        url: String,
        /// Accept any certificate (a self-signed page certificate, checked on loopback).
        #[arg(long)]
        insecure: bool,
    },
    /// Manage the users of the status page.
    User {
        #[command(subcommand)]
        action: UserCommand,
    },
    /// The built-in MQTT broker ([mqtt.embedded_broker]): its device accounts.
    Broker {
        #[command(subcommand)]
        action: BrokerCommand,
    },
}

#[derive(Debug, Subcommand)]
enum BrokerCommand {
    /// Manage the broker's accounts (the users file).
    User {
        #[command(subcommand)]
        action: BrokerUserCommand,
    },
}

#[derive(Debug, Subcommand)]
enum BrokerUserCommand {
    /// Create an account, or set an existing one's password and topics.
    /// Then reload the gateway (SIGHUP, `systemctl reload campusgw`).
    Add {
        /// The user name (e.g. the site code for a site's devices).
        name: String,
        /// The users file ([mqtt.embedded_broker] users_file); created if missing.
        #[arg(long)]
        users_file: PathBuf,
        /// The account publishes under campus/<SITE>/# (the reference feed's layout).
        #[arg(long)]
        site: Option<String>,
        /// A topic filter the account may publish to (repeatable).
        #[arg(long)]
        publish: Vec<String>,
        /// A topic filter the account may subscribe to (repeatable), e.g. campusgw/# for a display.
        #[arg(long)]
        subscribe: Vec<String>,
        /// Read the password from standard input (one line) instead of a prompt.
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Debug, clap::Args)]
struct SimulateArgs {
    /// The broker: mqtt://host:1883 or mqtts://host:8883.
    #[arg(long)]
    broker: String,
    /// Number of simulated devices (spread over the kinds in turn).
    #[arg(long, default_value_t = 10)]
    devices: usize,
    /// Messages per second over all devices.
    #[arg(long, default_value_t = 10)]
    rate: u32,
    /// Kinds of device, comma-separated (default all five): smoke,gate,kitchen,labcab,bus.
    #[arg(long, value_delimiter = ',')]
    kinds: Vec<campus_gateway::reading::Kind>,
    /// The site: topics are campus/<site>/<kind>/<device>.
    #[arg(long, default_value = "sim")]
    site: String,
    /// Stop after this long, e.g. 30s or 10m (default: until Ctrl-C).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<std::time::Duration>,
    /// User name at the broker.
    #[arg(long)]
    username: Option<String>,
    /// File holding the password (first line), with --username.
    #[arg(long, requires = "username")]
    password_file: Option<PathBuf>,
    /// CA certificate (PEM) of the broker, for mqtts://.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// MQTT client id.
    #[arg(long, default_value = "campusgw-simulate")]
    client_id: String,
}

#[derive(Debug, Subcommand)]
enum NotifyCommand {
    /// Send one test message through a channel and print its answer.
    Test {
        /// The configuration file.
        #[arg(long, short, env = "CAMPUSGW_CONFIG")]
        config: PathBuf,
        /// The channel's id in [notify.channels].
        #[arg(long)]
        channel: String,
        /// A person to address it to (their phone for SMS, @-mentioned on robots).
        #[arg(long)]
        person: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user, or set an existing user's role and password.
    Add {
        /// The user name.
        name: String,
        /// What the user may do.
        #[arg(long, value_enum)]
        role: Role,
        /// Read the password from standard input (one line) instead of a prompt.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        store: DataDirArgs,
    },
}

/// `run`'s exit code for a configuration it cannot use (sysexits' EX_CONFIG);
/// deploy/campusgw.service does not restart on it.
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    campus_gateway::memory::tune();
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Roster { config, at } => roster(&config, at.as_deref()),
        Command::Notify {
            action:
                NotifyCommand::Test {
                    config,
                    channel,
                    person,
                },
        } => notify_test(&config, &channel, person.as_deref()),
        Command::Backup { store, to } => backup(store, &to),
        Command::Health { url, insecure } => health(&url, insecure),
        Command::Simulate(args) => {
            init_logging(cli.log_format);
            simulate(args)
        }
        Command::User {
            action:
                UserCommand::Add {
                    name,
                    role,
                    password_stdin,
                    store,
                },
        } => user_add(&name, role, password_stdin, store),
        Command::Broker {
            action:
                BrokerCommand::User {
                    action:
                        BrokerUserCommand::Add {
                            name,
                            users_file,
                            site,
                            mut publish,
                            subscribe,
                            password_stdin,
                        },
                },
        } => {
            publish.extend(site.map(|s| format!("campus/{s}/#")));
            broker_user_add(&name, &users_file, publish, subscribe, password_stdin)
        }
        Command::Run { config } => {
            init_logging(cli.log_format);
            let loaded = match Config::load(&config) {
                Ok(l) => l,
                Err(e) => {
                    // A broken file does not mend itself: the unit does not
                    // restart on this code (RestartPreventExitStatus).
                    tracing::error!(
                        problems = e.problems.len(),
                        "The configuration has problems; not starting."
                    );
                    eprint!("{e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            for w in &loaded.warnings {
                tracing::warn!(key = %w.path, "{}", w.message);
            }
            runtime(|| async {
                let shutdown = app::signal_token();
                app::run(loaded.config, Some(config), shutdown).await
            })
        }
        Command::Demo {
            web_port,
            mqtt_port,
            data_dir,
        } => {
            init_logging(cli.log_format);
            runtime(|| async move {
                let shutdown = app::signal_token();
                demo::run(
                    demo::Options {
                        web_port,
                        mqtt_port,
                    },
                    data_dir,
                    shutdown,
                )
                .await
            })
        }
    }
}

fn runtime<F, Fut>(f: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Bounded like every queue: 200 wall screens reconnecting at once
        // each check a session in SQLite on a blocking thread; with tokio's
        // default of 512 that burst started ~120 threads, now they take turns.
        .max_blocking_threads(32)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(f()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("campusgw: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `campusgw health`: exit 0 when /healthz answers 200 (ok or degraded), 1 otherwise.
fn health(url: &str, insecure: bool) -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = runtime_value(|| async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .danger_accept_invalid_certs(insecure)
            .build()?;
        let resp = client.get(url).send().await?;
        let status = resp.status();
        // Bounded: a health answer is small.
        let body = resp.text().await.unwrap_or_default();
        Ok::<_, reqwest::Error>((status, body.chars().take(2048).collect::<String>()))
    });
    match result {
        Some(Ok((status, body))) => {
            println!("{} {body}", status.as_u16());
            if status.is_success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Some(Err(e)) => {
            eprintln!("campusgw: {url}: {e}");
            ExitCode::from(1)
        }
        None => ExitCode::from(1),
    }
}

/// `campusgw simulate`: exit 0 when the broker acknowledged every message.
fn simulate(args: SimulateArgs) -> ExitCode {
    use campus_gateway::config::{MqttConfig, MqttTlsConfig, Secret};
    use campus_gateway::demo::simulate::{simulate, SimulateOptions};
    let mut table = toml::Table::new();
    table.insert("url".into(), args.broker.clone().into());
    let mut cfg: MqttConfig = match table.try_into() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("campusgw: --broker: {e}");
            return ExitCode::from(2);
        }
    };
    cfg.client_id = args.client_id;
    cfg.clean_session = true;
    cfg.username = args.username;
    cfg.password = args.password_file.map(|file| Secret::File { file });
    cfg.tls = args.ca_file.map(|ca_file| MqttTlsConfig {
        ca_file,
        client_cert_file: None,
        client_key_file: None,
    });
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mqtt = match campus_gateway::sources::mqtt::options(&cfg, "") {
        Ok(o) => o,
        Err(e) => {
            eprintln!("campusgw: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = SimulateOptions {
        devices: args.devices,
        rate: args.rate,
        kinds: args.kinds,
        site: args.site,
        duration: args.duration,
    };
    let report = runtime_value(|| async {
        let stop = app::signal_token();
        simulate(mqtt, opts, stop).await
    });
    match report {
        Some(Ok(r)) => {
            println!(
                "published {} messages, {} acknowledged by the broker",
                r.published, r.acknowledged
            );
            if r.acknowledged < r.published {
                eprintln!(
                    "campusgw: {} messages not acknowledged by the broker in time",
                    r.published - r.acknowledged
                );
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Some(Err(e)) => {
            eprintln!("campusgw: {e}");
            ExitCode::from(1)
        }
        None => ExitCode::FAILURE,
    }
}

/// Where a command finds the data directory: `--data-dir`, or the
/// configuration's `gateway.data_dir`.
#[derive(Debug, clap::Args)]
struct DataDirArgs {
    /// The configuration file (for gateway.data_dir).
    #[arg(
        long,
        short,
        env = "CAMPUSGW_CONFIG",
        required_unless_present = "data_dir"
    )]
    config: Option<PathBuf>,
    /// The data directory, instead of a configuration file.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

impl DataDirArgs {
    fn resolve(self) -> Result<PathBuf, ExitCode> {
        match (self.data_dir, self.config) {
            (Some(d), _) => Ok(d),
            (None, Some(c)) => match Config::load_skipping_secrets(&c) {
                Ok(l) => Ok(l.config.gateway.data_dir),
                Err(e) => {
                    eprint!("{e}");
                    Err(ExitCode::from(2))
                }
            },
            (None, None) => {
                eprintln!("campusgw: give --config or --data-dir");
                Err(ExitCode::from(2))
            }
        }
    }
}

/// `campusgw backup`: exit 0 when every store present was copied and checked.
fn backup(store: DataDirArgs, to: &std::path::Path) -> ExitCode {
    let dir = match store.resolve() {
        Ok(d) => d,
        Err(code) => return code,
    };
    match campus_gateway::backup::backup(&dir, to) {
        Ok(report) => {
            for c in &report.copied {
                println!("{}: {} bytes", to.join(c.name).display(), c.bytes);
            }
            for name in &report.absent {
                println!("{name}: not in {} (nothing to copy)", dir.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("campusgw: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A new password, from standard input (one line) or typed twice at a prompt.
fn read_new_password(name: &str, from_stdin: bool) -> Result<String, ExitCode> {
    let fail = |e: std::io::Error| {
        eprintln!("campusgw: cannot read the password: {e}");
        ExitCode::FAILURE
    };
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map_err(fail)?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    let first = rpassword::prompt_password(format!("Password for {name}: ")).map_err(fail)?;
    let again = rpassword::prompt_password("Again: ").map_err(fail)?;
    if first != again {
        eprintln!("campusgw: the passwords differ");
        return Err(ExitCode::FAILURE);
    }
    Ok(first)
}

/// `campusgw broker user add`: an account of the built-in broker, hashed into the users file.
fn broker_user_add(
    name: &str,
    path: &std::path::Path,
    publish: Vec<String>,
    subscribe: Vec<String>,
    password_stdin: bool,
) -> ExitCode {
    use campus_gateway::broker::acl::{self, UserEntry, UsersFile};
    if let Err(e) = acl::check_name(name) {
        eprintln!("campusgw: {e}");
        return ExitCode::FAILURE;
    }
    let mut file = if path.exists() {
        match UsersFile::load(path) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("campusgw: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        UsersFile::default()
    };
    if publish.is_empty() && subscribe.is_empty() {
        eprintln!("campusgw: give the account something to do: --site, --publish or --subscribe");
        return ExitCode::FAILURE;
    }
    let password = match read_new_password(name, password_stdin) {
        Ok(p) => p,
        Err(code) => return code,
    };
    // A device's password is usually generated; a short one is guessable.
    if password.chars().count() < 12 {
        eprintln!("campusgw: a broker password needs at least 12 characters");
        return ExitCode::FAILURE;
    }
    let hash = match acl::hash(&password) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("campusgw: {e}");
            return ExitCode::FAILURE;
        }
    };
    file.set(UserEntry {
        name: name.to_owned(),
        hash,
        publish,
        subscribe,
    });
    let problems = file.problems();
    if !problems.is_empty() {
        for p in problems {
            eprintln!("campusgw: {p}");
        }
        return ExitCode::FAILURE;
    }
    match file.save(path) {
        Ok(()) => {
            println!(
                "Broker user {name} saved in {} (reload the gateway to use it: systemctl reload campusgw).",
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("campusgw: {e}");
            ExitCode::FAILURE
        }
    }
}

fn user_add(name: &str, role: Role, password_stdin: bool, store: DataDirArgs) -> ExitCode {
    let dir = match store.resolve() {
        Ok(d) => d,
        Err(code) => return code,
    };
    let password = match read_new_password(name, password_stdin) {
        Ok(p) => p,
        Err(code) => return code,
    };
    // No lock: the running gateway and this share the user store through SQLite.
    if let Err(e) = data_dir::prepare(&dir) {
        eprintln!("campusgw: {e}");
        return ExitCode::FAILURE;
    }
    // The store is closed (its -wal and -shm gone or settled) before its files change hands.
    let result = AuthStore::open(&dir).and_then(|s| {
        s.set_user(name, role, &password)?;
        s.audit("cli", "set_user", name, role.as_str(), "local")
    });
    if let Err(e) = data_dir::adopt(&dir) {
        eprintln!("campusgw: {e}");
        return ExitCode::FAILURE;
    }
    match result {
        Ok(()) => {
            println!(
                "User {name} ({}) saved in {}.",
                role.as_str(),
                dir.join("gateway.db").display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("campusgw: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                println!("warning: {w}");
            }
            println!(
                "{}: OK ({} devices, {} MQTT topics, {} Modbus devices, {} rules)",
                path.display(),
                loaded.config.devices.len(),
                loaded.config.mqtt.topics.len(),
                loaded.config.modbus.devices.len(),
                loaded.config.rules.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprint!("{e}");
            ExitCode::from(2)
        }
    }
}

/// `campusgw roster`: who is on duty per team at a local time.
fn roster(path: &std::path::Path, at: Option<&str>) -> ExitCode {
    use campus_gateway::notify::roster::{DutySource, Roster};
    // Who is on duty needs no secret.
    let cfg = match Config::load_skipping_secrets(path) {
        Ok(l) => l.config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let offset = match campus_gateway::rules::calendar::parse_offset(&cfg.alarms.utc_offset) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("alarms.utc_offset: {e}");
            return ExitCode::from(2);
        }
    };
    let at_ms = match at {
        None => chrono::Utc::now().timestamp_millis(),
        Some(text) => {
            let parsed = chrono::NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M")
                .ok()
                .and_then(|t| t.and_local_timezone(offset).single());
            match parsed {
                Some(t) => t.timestamp_millis(),
                None => {
                    eprintln!("--at: `{text}` is not a local time such as \"2026-12-02 03:00\"");
                    return ExitCode::from(2);
                }
            }
        }
    };
    let roster = match Roster::new(&cfg) {
        Ok(r) => r,
        Err(problems) => {
            for (k, m) in problems {
                eprintln!("{k}: {m}");
            }
            return ExitCode::from(2);
        }
    };
    let when = chrono::DateTime::from_timestamp_millis(at_ms)
        .map(|t| {
            t.with_timezone(&offset)
                .format("%Y-%m-%d %H:%M (%a)")
                .to_string()
        })
        .unwrap_or_default();
    println!("On duty at {when}:");
    let duty = roster.duty(at_ms);
    if duty.is_empty() {
        println!("  no teams in [notify.teams]");
    }
    let mut gaps = 0;
    for d in duty {
        let source = match d.source {
            DutySource::RosterFile => "roster file",
            DutySource::Pattern => "weekly shifts",
        };
        let team = d
            .team_name
            .map_or_else(|| d.team.to_owned(), |n| format!("{n} ({})", d.team));
        if d.people.is_empty() {
            gaps += 1;
            println!("  {team}: NOBODY ON DUTY ({source})");
        } else {
            let people: Vec<String> = d
                .people
                .iter()
                .map(|p| match &p.phone {
                    Some(phone) => format!("{} {phone}", p.name),
                    None => p.name.clone(),
                })
                .collect();
            println!("  {team}: {} ({source})", people.join(", "));
        }
    }
    if gaps > 0 {
        eprintln!("{gaps} team(s) with nobody on duty at that time.");
    }
    ExitCode::SUCCESS
}

/// `campusgw notify test`: exit 0 when the channel's peer took the message.
fn notify_test(path: &std::path::Path, channel: &str, person: Option<&str>) -> ExitCode {
    use campus_gateway::notify::channel::Outcome;
    let cfg = match Config::load(path) {
        Ok(l) => l.config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime_value(|| async {
        campus_gateway::notify::send_test(
            &cfg,
            channel,
            person,
            chrono::Utc::now().timestamp_millis(),
        )
        .await
    });
    match result {
        Some(Ok(Outcome::Delivered(answer))) => {
            println!("{channel}: delivered. {answer}");
            ExitCode::SUCCESS
        }
        Some(Ok(Outcome::Retry(answer))) => {
            eprintln!("{channel}: not delivered, worth retrying later: {answer}");
            ExitCode::from(1)
        }
        Some(Ok(Outcome::Permanent(answer))) => {
            eprintln!("{channel}: refused (check the channel's address, key and secret): {answer}");
            ExitCode::from(1)
        }
        Some(Err(e)) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
        None => ExitCode::from(1),
    }
}

/// Runs one future on a small runtime and returns its value.
fn runtime_value<F, Fut, T>(f: F) -> Option<T>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt.block_on(f())),
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            None
        }
    }
}
