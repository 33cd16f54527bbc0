//! Drawing `corral top`: the cluster's line and totals, a row per worker,
//! a requests/s sparkline, the listeners with their queues, the last
//! events, and the keys.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Cell, List, ListItem, Paragraph, Row, Sparkline, Table};

use super::model::Model;
use crate::display::{human_bytes, human_latency, human_uptime, or_dash};

pub(crate) const KEYS: &str = "q quit   r reload   + scale up   - scale down";

pub(crate) fn draw(frame: &mut Frame, model: &Model, gone: Option<&str>) {
    let [header, workers, spark, bottom, footer] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Min(4),
        Constraint::Length(5),
        Constraint::Length(8),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    draw_header(frame, header, model, gone);
    draw_workers(frame, workers, model);
    let rate = model.total_rate();
    let history: Vec<u64> = model.history.iter().copied().collect();
    frame.render_widget(
        Sparkline::default()
            .block(Block::bordered().title(format!(" requests/s: {rate:.0} ")))
            .data(&history)
            .style(Style::default().fg(Color::Green)),
        spark,
    );
    let [listeners, events] =
        Layout::horizontal([Constraint::Percentage(35), Constraint::Percentage(65)]).areas(bottom);
    draw_listeners(frame, listeners, model);
    let shown = events.height.saturating_sub(2) as usize;
    let items: Vec<ListItem> = model
        .events
        .iter()
        .rev()
        .take(shown)
        .rev()
        .map(|text| ListItem::new(text.as_str()))
        .collect();
    frame.render_widget(
        List::new(items).block(Block::bordered().title(" events ")),
        events,
    );
    let footer_text = match &model.notice {
        Some(notice) => format!(
            "{KEYS}   | {}",
            corral::cli_support::escape_untrusted(notice)
        ),
        None => KEYS.to_string(),
    };
    frame.render_widget(Paragraph::new(footer_text), footer);
}

fn draw_header(frame: &mut Frame, area: Rect, model: &Model, gone: Option<&str>) {
    let lines = match (&model.status, gone) {
        (_, Some(why)) => vec![Line::styled(
            why.to_string(),
            Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        )],
        (None, None) => vec![Line::from("connecting…")],
        (Some(status), None) => {
            let cpu: f64 = status.workers.iter().filter_map(|w| w.cpu_percent).sum();
            let memory: u64 = status.workers.iter().filter_map(|w| w.rss_bytes).sum();
            let requests: u64 = status.workers.iter().filter_map(|w| w.requests).sum();
            let stopping = if status.stopping { "  STOPPING" } else { "" };
            let reloading = if status.reloads.in_progress {
                "  RELOADING"
            } else {
                ""
            };
            vec![
                Line::from(format!(
                    "cluster {}  pid {}  policy {}  up {}{stopping}{reloading}",
                    corral::cli_support::escape_untrusted(&status.name),
                    status.pid,
                    status.policy.name(),
                    human_uptime(status.uptime_seconds)
                )),
                Line::from(format!(
                    "workers {}/{} ready   CPU {cpu:.1}%   memory {}   requests {requests}   reloads {} done, {} aborted",
                    status.ready_workers(),
                    status.workers_desired,
                    human_bytes(memory),
                    status.reloads.completed,
                    status.reloads.aborted
                )),
            ]
        }
    };
    frame.render_widget(Paragraph::new(lines).block(Block::new()), area);
}

fn draw_workers(frame: &mut Frame, area: Rect, model: &Model) {
    let header = Row::new(
        [
            "ID", "PID", "STATE", "UPTIME", "RESTARTS", "CPU%", "MEMORY", "REQUESTS", "REQ/S",
            "CONNS", "P95", "LAG", "HEAP",
        ]
        .map(Cell::from),
    )
    .style(Style::default().add_modifier(Modifier::BOLD));
    let rows: Vec<Row> = model
        .status
        .iter()
        .flat_map(|status| status.workers.iter())
        .map(|worker| {
            let state = serde_json::to_value(worker.state).unwrap_or_default();
            let agent = worker.agent.as_ref();
            let restarts = match worker.last_restart_reason {
                Some(reason) if worker.restarts > 0 => format!("{} ({reason})", worker.restarts),
                _ => worker.restarts.to_string(),
            };
            Row::new(vec![
                worker.id.to_string(),
                worker.pid.to_string(),
                state.as_str().unwrap_or("?").to_string(),
                human_uptime(worker.uptime_seconds),
                restarts,
                or_dash(worker.cpu_percent, |p| format!("{p:.1}")),
                or_dash(worker.rss_bytes, human_bytes),
                or_dash(worker.requests, |n| n.to_string()),
                or_dash(model.rates.get(&worker.pid), |r| format!("{r:.0}")),
                or_dash(worker.connections, |n| n.to_string()),
                // What corral's Node agent reports of a Node worker.
                or_dash(agent.and_then(|a| a.latency_p95_seconds), human_latency),
                or_dash(agent.map(|a| a.event_loop_lag_seconds), human_latency),
                or_dash(agent.map(|a| a.heap_used_bytes), human_bytes),
            ])
        })
        .collect();
    let widths = [
        Constraint::Length(4),
        Constraint::Length(8),
        Constraint::Length(9),
        Constraint::Length(8),
        Constraint::Length(14),
        Constraint::Length(7),
        Constraint::Length(8),
        Constraint::Length(9),
        Constraint::Length(7),
        Constraint::Length(6),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(8),
    ];
    frame.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(Block::bordered().title(" workers ")),
        area,
    );
}

fn draw_listeners(frame: &mut Frame, area: Rect, model: &Model) {
    let items: Vec<ListItem> = model
        .status
        .iter()
        .flat_map(|status| status.listeners.iter())
        .map(|listener| {
            let steering = listener
                .steering
                .map(|steering| format!("  steering {}", steering.name()))
                .unwrap_or_default();
            let counts = listener
                .connection_counts
                .map(|counts| format!("  counted {}", counts.name()))
                .unwrap_or_default();
            let line = format!(
                "{}  queued {}{steering}{counts}",
                listener.address,
                or_dash(listener.queued, |n| n.to_string())
            );
            ListItem::new(corral::cli_support::escape_untrusted(&line).into_owned())
        })
        .collect();
    frame.render_widget(
        List::new(items).block(Block::bordered().title(" listeners ")),
        area,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::model::tests::{status, worker};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    fn screen(model: &Model, width: u16, height: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|frame| draw(frame, model, None)).unwrap();
        let buffer = terminal.backend().buffer().clone();
        buffer
            .content()
            .chunks(width as usize)
            .map(|row| row.iter().map(|cell| cell.symbol()).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn every_worker_has_a_row_and_tiny_terminals_do_not_panic() {
        let mut model = Model::default();
        model.update(
            status(vec![worker(1, 4242, Some(1)), worker(2, 4343, Some(2))]),
            std::time::Duration::from_secs(1),
        );
        model.add_event("worker 2 ready (pid 4343)".into());
        let shown = screen(&model, 120, 40);
        assert!(shown.contains("4242") && shown.contains("4343"), "{shown}");
        assert!(shown.contains("worker 2 ready"), "{shown}");
        assert!(shown.contains("cluster demo"), "{shown}");
        for (width, height) in [(1, 1), (20, 5), (200, 10)] {
            screen(&model, width, height);
        }
    }

    #[test]
    fn text_from_workers_shows_escaped() {
        let mut model = Model::default();
        let mut snapshot = status(vec![worker(1, 4242, Some(1))]);
        snapshot.name = "api\x1b]0;owned\x07".into();
        model.update(snapshot, std::time::Duration::from_secs(1));
        model.add_event("worker 1 listening on /tmp/x\nINFO stopped\x1b[2J".into());
        let shown = screen(&model, 160, 40);
        assert!(!shown.contains(['\x1b', '\x07']), "{shown:?}");
        assert!(shown.contains("api\\x1b]0;owned\\x07"), "{shown}");
        assert!(shown.contains("/tmp/x\\nINFO stopped\\x1b[2J"), "{shown}");
    }

    #[test]
    fn node_workers_show_p95_lag_and_heap_and_no_negative_zero() {
        let mut model = Model::default();
        let mut node = worker(1, 4242, Some(40));
        node.agent = Some(corral::AgentMetrics {
            requests_in_flight: 1,
            latency: corral::LatencyHistogram::default(),
            latency_p50_seconds: Some(0.0007),
            latency_p95_seconds: Some(0.08),
            latency_p99_seconds: Some(0.096),
            event_loop_lag_seconds: 0.0021,
            event_loop_lag_p99_seconds: 0.01,
            heap_used_bytes: 5 << 20,
            report_age_seconds: 0.3,
        });
        model.update(
            status(vec![node, worker(2, 4343, None)]),
            std::time::Duration::from_secs(1),
        );
        let shown = screen(&model, 120, 40);
        let row = shown.lines().find(|line| line.contains("4242")).unwrap();
        for cell in ["40", "80.0ms", "2.1ms", "5.0M"] {
            assert!(row.contains(cell), "{cell} in {row}");
        }
        assert!(shown.contains("requests/s: 0 "), "{shown}");
        assert!(!shown.contains("-0"), "{shown}");
    }
}
