//! `corral top [NAME]`: a live view of a cluster in the terminal
//! (ratatui), refreshed every second, with keys to reload, scale up and
//! down, and quit. It keeps going while workers restart and the terminal
//! resizes; when the cluster stops, it says so and exits.
//!
//! Two connections to the control socket: one asks for the status every
//! second; a thread reads the other, which streams the events.

mod model;
mod view;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use corral::cli_support::client::Client;
use corral::cli_support::protocol::{Command, EventRecord};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};

use crate::args::ClusterArgs;
use crate::target;
use model::Model;

/// How often the status is asked for.
const REFRESH: Duration = Duration::from_secs(1);
/// How long the "cluster stopped" screen stays before `top` exits.
const FAREWELL: Duration = Duration::from_millis(1500);

pub(crate) fn run(args: &ClusterArgs) -> anyhow::Result<()> {
    let path = target::socket_path(args.name.as_deref(), &args.common)?;
    let mut client = target::connect_to(&path, args.name.as_deref())?;
    let first = client.status()?;
    let events = follow_events(&path)?;
    let mut terminal = ratatui::try_init().context("cannot take over the terminal")?;
    let outcome = watch(&mut terminal, &mut client, first, &events);
    ratatui::restore();
    let gone = outcome?;
    if let Some(why) = gone {
        crate::display::print(&format!("corral top: {why}\n"))?;
    }
    Ok(())
}

/// What the events thread hands the view.
fn follow_events(path: &std::path::Path) -> anyhow::Result<mpsc::Receiver<EventRecord>> {
    let mut client = Client::connect(path)?;
    let result = client.request(Command::Events)?;
    client.set_timeout(None)?;
    let (sender, receiver) = mpsc::channel();
    let recent: Vec<EventRecord> =
        serde_json::from_value(result["recent"].clone()).unwrap_or_default();
    for record in recent {
        let _ = sender.send(record);
    }
    std::thread::spawn(move || {
        while let Ok(streamed) = client.next_streamed() {
            if let Some(event) = streamed.event
                && sender.send(event).is_err()
            {
                return;
            }
        }
    });
    Ok(receiver)
}

/// Runs the view until the user quits (`Ok(None)`) or the cluster stops
/// (`Ok(Some(why))`).
fn watch(
    terminal: &mut ratatui::DefaultTerminal,
    client: &mut Client,
    first: corral::Status,
    events: &mpsc::Receiver<EventRecord>,
) -> anyhow::Result<Option<String>> {
    let name = first.name.clone();
    let mut model = Model::default();
    let mut last_poll = Instant::now();
    model.update(first, Duration::ZERO);
    loop {
        while let Ok(record) = events.try_recv() {
            let time = crate::display::timestamp(record.time);
            // The time of day is enough on a live view.
            let clock = time.get(11..19).unwrap_or(&time);
            model.add_event(format!("{clock} {}", record.text));
        }
        terminal.draw(|frame| view::draw(frame, &model, None))?;
        let wait = REFRESH.saturating_sub(last_poll.elapsed());
        if event::poll(wait)? {
            match event::read()? {
                Event::Key(key) if key.kind != KeyEventKind::Release => {
                    let quit = matches!(key.code, KeyCode::Char('q') | KeyCode::Esc)
                        || (key.code == KeyCode::Char('c')
                            && key.modifiers.contains(KeyModifiers::CONTROL));
                    if quit {
                        return Ok(None);
                    }
                    if let Some(command) = command_for(key.code) {
                        model.notice = Some(obey(client, command));
                    }
                }
                // A resize is drawn on the next turn of the loop.
                _ => {}
            }
        }
        if last_poll.elapsed() >= REFRESH {
            let elapsed = last_poll.elapsed();
            last_poll = Instant::now();
            match client.status() {
                Ok(status) => model.update(status, elapsed),
                Err(_) => {
                    let why = format!("cluster {name} stopped");
                    terminal.draw(|frame| view::draw(frame, &model, Some(&why)))?;
                    std::thread::sleep(FAREWELL);
                    return Ok(Some(why));
                }
            }
        }
    }
}

/// The request a key makes.
fn command_for(key: KeyCode) -> Option<Command> {
    match key {
        KeyCode::Char('r') => Some(Command::Reload { wait: false }),
        KeyCode::Char('+') | KeyCode::Char('=') | KeyCode::Up => Some(Command::Scale {
            workers: None,
            change: Some(1),
        }),
        KeyCode::Char('-') | KeyCode::Char('_') | KeyCode::Down => Some(Command::Scale {
            workers: None,
            change: Some(-1),
        }),
        _ => None,
    }
}

/// Sends a key's request; says what happened.
fn obey(client: &mut Client, command: Command) -> String {
    let what = match &command {
        Command::Reload { .. } => "reload",
        _ => "scale",
    };
    match client.request(command) {
        Ok(result) => match result.get("workers_desired") {
            Some(count) => format!("scaled to {count} workers"),
            None if result["started"] == true => "reload started".to_string(),
            None => format!("{what} queued"),
        },
        Err(err) => format!("{what} failed: {err}"),
    }
}
