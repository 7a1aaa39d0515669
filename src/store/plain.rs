//! The audit trail for people. Events keep actors and kinds as they were recorded (a daemon's lease
//! owner `HOST-PID-UUID8`, `reviewer:NAME`, `policy:auto_approve`; `transition`, `verify_failed`);
//! the UI and the CLI show them through [`plain_actor`] and [`plain_event`], so both name the same
//! thing the same way.

use super::ItemState;

/// An audit-trail actor in plain words:
///
/// | recorded | shown |
/// |---|---|
/// | `system` | system |
/// | `HOST-PID-UUID8` (a daemon's or `enrichd run`'s lease owner) | daemon on HOST |
/// | `reviewer:ada`, `account:ada`, `ada` (`--as ada`) | ada |
/// | `token:ada` | ada's API token |
/// | `api` (the shared API token) | API token |
/// | `local` (a caller on this machine, no sign-in configured) | someone on this machine |
/// | `policy:auto_approve` | auto-approve |
/// | `policy:sample_first` | sample-first release |
/// | `policy:none` | no-review policy |
/// | `schedule`, `manual`, `webhook` (how a run was started) | the schedule, started by hand, a platform webhook |
pub fn plain_actor(actor: &str) -> String {
    match actor {
        "system" => return "system".into(),
        "api" => return "API token".into(),
        "local" => return "someone on this machine".into(),
        "schedule" => return "the schedule".into(),
        "manual" => return "started by hand".into(),
        "webhook" => return "a platform webhook".into(),
        "" => return "unknown".into(),
        _ => {}
    }
    if let Some(policy) = actor.strip_prefix("policy:") {
        return match policy {
            "auto_approve" => "auto-approve".into(),
            "sample_first" => "sample-first release".into(),
            "none" => "no-review policy".into(),
            other => format!("{} policy", other.replace('_', "-")),
        };
    }
    if let Some(token) = actor.strip_prefix("token:") {
        return format!("{token}'s API token");
    }
    if let Some(name) = actor.strip_prefix("reviewer:").or_else(|| actor.strip_prefix("account:")) {
        return name.to_owned();
    }
    if let Some(host) = daemon_host(actor) {
        return format!("daemon on {host}");
    }
    actor.to_owned()
}

/// What an item event says happened, in plain words: a state change as "waiting for review →
/// approved, to be written" (states in [`ItemState::plain`] words), other kinds by name
/// ("values read back and held").
pub fn plain_event(kind: &str, from_state: Option<&str>, to_state: Option<&str>) -> String {
    let state = |s: &str| s.parse::<ItemState>().map_or_else(|_| s.replace('_', " "), |s| s.plain().to_owned());
    match (kind, from_state, to_state) {
        ("transition", Some(from), Some(to)) => format!("{} → {}", state(from), state(to)),
        ("transition", None, Some(to)) => state(to),
        ("verified", ..) => "values read back and held".into(),
        ("verify_failed", ..) => "values read back: one did not hold".into(),
        ("revert_failed", ..) => "revert failed".into(),
        ("run_requested", ..) => "asked for a run".into(),
        (other, from, to) => {
            let mut words = other.replace('_', " ");
            match (from, to) {
                (Some(from), Some(to)) => words.push_str(&format!(": {} → {}", state(from), state(to))),
                (None, Some(to)) => words.push_str(&format!(": {}", state(to))),
                _ => {}
            }
            words
        }
    }
}

/// The host of a lease owner name (`HOST-PID-UUID8`, see the engine's `owner_name`), or `None` when
/// `actor` is not one. Host names may hold dashes; the process id and the eight hex digits may not.
fn daemon_host(actor: &str) -> Option<&str> {
    let (rest, uuid) = actor.rsplit_once('-')?;
    let (host, pid) = rest.rsplit_once('-')?;
    let hex = uuid.len() == 8 && uuid.bytes().all(|b| b.is_ascii_hexdigit());
    let digits = !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit());
    (hex && digits && !host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::{plain_actor, plain_event};

    #[test]
    fn events_read_as_what_happened() {
        assert_eq!(
            plain_event("transition", Some("edited"), Some("approved")),
            "edited, waiting for review → approved, to be written"
        );
        assert_eq!(plain_event("transition", None, Some("discovered")), "found");
        assert_eq!(plain_event("verify_failed", None, None), "values read back: one did not hold");
        assert_eq!(
            plain_event("regenerated", Some("proposed"), Some("queued")),
            "regenerated: waiting for review → waiting for the model"
        );
    }

    #[test]
    fn actors_read_as_people_name_them() {
        assert_eq!(plain_actor("build-box-7-4242-0a1b2c3d"), "daemon on build-box-7");
        assert_eq!(plain_actor("reviewer:Ada Reviewer"), "Ada Reviewer");
        assert_eq!(plain_actor("eve"), "eve");
        assert_eq!(plain_actor("api"), "API token");
        assert_eq!(plain_actor("local"), "someone on this machine");
        assert_eq!(plain_actor("policy:auto_approve"), "auto-approve");
        assert_eq!(plain_actor("policy:sample_first"), "sample-first release");
        assert_eq!(plain_actor("system"), "system");
        assert_eq!(plain_actor("schedule"), "the schedule");
        // A name that only looks a little like an owner stays a name.
        assert_eq!(plain_actor("ops-anna"), "ops-anna");
        assert_eq!(plain_actor("ops-12-anna"), "ops-12-anna");
    }
}
