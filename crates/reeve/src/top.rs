//! `reeve top`: a live terminal view of the services (state, pid, uptime, restarts, CPU,
//! memory) and the latest events. `q`, Esc or Ctrl-C quits.

use crate::format;
use anyhow::Result;
use crossterm::event::{self, Event as TermEvent, KeyCode, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::widgets::{Block, Borders, List, ListItem, Row, Table};
use reeve_agent::client::Client;
use reeve_proto::api::{ServiceState, ServiceStatus};
use reeve_proto::event::Event;
use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Clock ticks per second of /proc's CPU times (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

struct Sample {
    ticks: u64,
    at: Instant,
}

fn proc_ticks_and_rss(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let rss_pages: u64 = f.get(21)?.parse().ok()?;
    Some((ticks, rss_pages * 4096))
}

/// Runs the view until the user quits.
pub async fn run(client: Client, interval: Duration) -> Result<ExitCode> {
    use tokio::signal::unix::{SignalKind, signal};
    // A signal must restore the terminal too, not kill the view in raw mode: the handlers
    // are in place before the terminal is taken over.
    let mut stops = [
        signal(SignalKind::interrupt())?,
        signal(SignalKind::terminate())?,
        signal(SignalKind::hangup())?,
    ];
    // Fail before taking over the terminal if the agent is not there.
    tokio::select! {
        r = tokio::time::timeout(FETCH_LIMIT, client.get::<Vec<ServiceStatus>>("/v1/services")) => {
            r.map_err(|_| anyhow::anyhow!("the agent did not answer within {FETCH_LIMIT:?}"))??;
        }
        _ = any_stop(&mut stops) => return Ok(ExitCode::SUCCESS),
    }
    let mut terminal = ratatui::init();
    let result = view(&client, interval, &mut terminal, &mut stops).await;
    ratatui::restore();
    result.map(|_| ExitCode::SUCCESS)
}

/// How long one refresh may wait for the agent before the view says it is not answering.
const FETCH_LIMIT: Duration = Duration::from_secs(5);

/// Resolves when any of the stop signals arrives.
async fn any_stop(stops: &mut [tokio::signal::unix::Signal]) {
    let waits = stops.iter_mut().map(|s| Box::pin(s.recv()));
    futures_util::future::select_all(waits).await;
}

/// One refresh: the services and the latest events.
async fn fetch(client: &Client) -> Result<(Vec<ServiceStatus>, Vec<Event>)> {
    let services: Vec<ServiceStatus> = client.get("/v1/services").await?;
    let events: Vec<Event> = client.get("/v1/events?limit=50").await?;
    Ok((services, events))
}

async fn view(
    client: &Client,
    interval: Duration,
    terminal: &mut ratatui::DefaultTerminal,
    stops: &mut [tokio::signal::unix::Signal],
) -> Result<()> {
    let mut samples: HashMap<u32, Sample> = HashMap::new();
    let (mut services, mut events) = (Vec::new(), Vec::new());
    loop {
        // Signals are watched while the request is in flight: a slow agent never keeps
        // Ctrl-C from restoring the terminal.
        let fetched = tokio::select! {
            r = tokio::time::timeout(FETCH_LIMIT, fetch(client)) => r,
            _ = any_stop(stops) => return Ok(()),
        };
        let trouble = match fetched {
            Ok(Ok((s, e))) => {
                (services, events) = (s, e);
                None
            }
            Ok(Err(e)) => Some(format!("agent error: {e:#}")),
            Err(_) => Some(format!("the agent did not answer within {FETCH_LIMIT:?}")),
        };
        let now = format::now_ms();
        let rows: Vec<Row> = services
            .iter()
            .map(|s| {
                let (cpu, mem) = match s.pid.and_then(|p| proc_ticks_and_rss(p).map(|v| (p, v))) {
                    Some((pid, (ticks, rss))) => {
                        let cpu = samples.get(&pid).map(|prev| {
                            let dt = prev.at.elapsed().as_secs_f64().max(0.001);
                            100.0 * (ticks.saturating_sub(prev.ticks)) as f64 / TICKS_PER_SEC / dt
                        });
                        samples.insert(
                            pid,
                            Sample {
                                ticks,
                                at: Instant::now(),
                            },
                        );
                        (
                            cpu.map_or("-".into(), |c| format!("{c:.1}%")),
                            format!("{:.1}M", rss as f64 / 1048576.0),
                        )
                    }
                    None => ("-".into(), "-".into()),
                };
                let color = match s.state {
                    ServiceState::Running => Color::Green,
                    ServiceState::Starting | ServiceState::Stopping | ServiceState::BackingOff => {
                        Color::Yellow
                    }
                    ServiceState::Failed | ServiceState::Unhealthy => Color::Red,
                    _ => Color::Gray,
                };
                Row::new(vec![
                    s.name.clone(),
                    s.state.to_string(),
                    s.pid.map_or("-".into(), |p| p.to_string()),
                    if s.pid.is_some() {
                        format::age(now.saturating_sub(s.since_ms))
                    } else {
                        "-".into()
                    },
                    s.restarts.to_string(),
                    cpu,
                    mem,
                    format::exit(&s.last_exit),
                ])
                .style(Style::default().fg(color))
            })
            .collect();
        let items: Vec<ListItem> = events
            .iter()
            .rev()
            .map(|e| ListItem::new(format::event_line(e)))
            .collect();
        terminal.draw(|f| {
            let [top, bottom] =
                Layout::vertical([Constraint::Percentage(55), Constraint::Percentage(45)])
                    .areas(f.area());
            let table = Table::new(
                rows,
                [
                    Constraint::Min(16),
                    Constraint::Length(12),
                    Constraint::Length(8),
                    Constraint::Length(9),
                    Constraint::Length(9),
                    Constraint::Length(7),
                    Constraint::Length(8),
                    Constraint::Length(10),
                ],
            )
            .header(
                Row::new(vec![
                    "NAME",
                    "STATE",
                    "PID",
                    "UPTIME",
                    "RESTARTS",
                    "CPU",
                    "MEM",
                    "LAST EXIT",
                ])
                .style(Style::default().add_modifier(Modifier::BOLD)),
            )
            .block(
                Block::default()
                    .borders(Borders::ALL)
                    .title(match &trouble {
                        None => format!(" reeve top — {} services — q quits ", services.len()),
                        Some(t) => format!(" reeve top — {t} — q quits "),
                    }),
            );
            f.render_widget(table, top);
            f.render_widget(
                List::new(items).block(
                    Block::default()
                        .borders(Borders::ALL)
                        .title(" latest events "),
                ),
                bottom,
            );
        })?;
        let deadline = Instant::now() + interval;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            tokio::select! {
                _ = any_stop(stops) => return Ok(()),
                _ = tokio::time::sleep(left.min(Duration::from_millis(50))) => {}
            }
            while event::poll(Duration::ZERO)? {
                if let TermEvent::Key(k) = event::read()? {
                    let quit = matches!(k.code, KeyCode::Char('q') | KeyCode::Esc)
                        || (k.code == KeyCode::Char('c')
                            && k.modifiers.contains(KeyModifiers::CONTROL));
                    if quit {
                        return Ok(());
                    }
                }
            }
        }
    }
}
