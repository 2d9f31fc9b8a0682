//! Progress over time (`status`, the HTML page's chart): for each run, how many accounts were
//! in each lifecycle state at its end; per day, how many invitations were sent, accepted and
//! how many accounts were converted; and a projection of when the accounts still in progress
//! would be done at the observed acceptance rate. Pure: fed one run's journal at a time
//! ([`Builder::add_run`]) so memory stays bounded by the largest run.
//!
//! Each run that ended records its accounts per lifecycle state (`runs.state_counts`, all
//! together and per partner domain): those are the chart's points (`source: recorded`).
//! A run recorded before that existed (or one that never ended) falls back to what the
//! journal tells (`source: journal`): an account counts in the furthest step its *done*
//! actions reached (`staged` after an address write, `invited` after an invitation, `done`
//! after its on-premises password was randomized). Acceptances per day come from each
//! account's `accepted_at` (the cloud's `externalUserStateChangeDateTime` when plausible,
//! else when b2bsync first read `Accepted`).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::Lifecycle;
use crate::state::{AccountRecord, Action, JournalEntry, Phase, RunRecord, StateCounts};

/// The steps the chart shows, in lifecycle order.
pub const STEPS: [Step; 3] = [Step::Staged, Step::Invited, Step::Done];

/// More runs than this and the chart shows one point per day (the day's last run).
pub const MAX_POINTS: usize = 60;

/// Days of acceptances (or conversions) the projection's rate is measured over.
pub const RATE_DAYS: i64 = 14;

/// Every series a progress point may carry, in the order the chart draws them: the lifecycle
/// states of recorded points (`report::FUNNEL`) with the journal's `staged` step among them.
pub const SERIES: [&str; 9] = [
    "unmatched",
    "blocked",
    "needs_address",
    "awaiting_sync",
    "staged",
    "ready",
    "invited",
    "accepted",
    "done",
];

/// How far an account's done actions have taken it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Its external address was written (AD `mail` or the cloud's `otherMails`).
    Staged,
    /// An invitation was sent.
    Invited,
    /// Its on-premises password was randomized: converted.
    Done,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Staged => "staged",
            Step::Invited => "invited",
            Step::Done => "done",
        }
    }

    /// The step a done action reaches, if it moves an account forward.
    fn of(action: Action) -> Option<Step> {
        match action {
            Action::SetDirectoryMail | Action::SetCloudAddress => Some(Step::Staged),
            Action::Invite | Action::Reinvite => Some(Step::Invited),
            Action::RandomizePassword => Some(Step::Done),
            _ => None,
        }
    }
}

/// Where a point's counts come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The accounts per lifecycle state the run recorded when it ended.
    Recorded,
    /// Rebuilt from the journal's done actions (a run without recorded counts).
    Journal,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Recorded => "recorded",
            Source::Journal => "journal",
        }
    }
}

/// Accounts per series at the end of one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Point {
    pub run: String,
    pub at: jiff::Timestamp,
    pub source: Source,
    /// For a recorded point, accounts per lifecycle state (every state of `report::FUNNEL`);
    /// for a journal point, accounts whose furthest step is `staged`, `invited` or `done`.
    /// In [`SERIES`] order.
    pub counts: Vec<(String, usize)>,
}

/// Invitations sent, invitations accepted and accounts converted on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Day {
    /// `2026-11-23`.
    pub day: String,
    /// Invitations sent (the journal's done `invite` and `reinvite`).
    pub invited: usize,
    /// Accounts whose `accepted_at` is that day.
    pub accepted: usize,
    /// Passwords randomized after acceptance (the journal's done `randomize_password`).
    pub converted: usize,
}

/// When the accounts still in progress would be done at the observed acceptance rate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Projection {
    /// Accounts neither done nor held back (blocked or unmatched).
    pub remaining: usize,
    /// What the rate counts: `acceptances` (accounts' `accepted_at`), or `conversions` when
    /// no account has an acceptance time (a store from before it was recorded).
    pub basis: &'static str,
    /// Acceptances in the last [`RATE_DAYS`] days.
    pub accepted_recently: usize,
    /// Conversions in the last [`RATE_DAYS`] days.
    pub converted_recently: usize,
    pub rate_days: i64,
    /// The day the remaining accounts would be done; `None` when the rate is zero.
    pub done_by: Option<String>,
    /// The projection and its assumption, in one sentence.
    pub text: String,
}

/// The history of one partner domain (or of every account).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Series {
    /// The domain of the external address; `None` for every account together.
    pub domain: Option<String>,
    pub points: Vec<Point>,
}

/// Everything `status` knows about progress over time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct History {
    /// Every account together; one point per run, or per day beyond [`MAX_POINTS`] runs.
    pub all: Vec<Point>,
    /// Per partner domain, when the accounts have more than one.
    pub domains: Vec<Series>,
    pub days: Vec<Day>,
    pub projection: Option<Projection>,
}

/// Accounts per step, in [`STEPS`] order.
type Tally = [usize; STEPS.len()];

/// What a run left for its point: its recorded counts, or the journal's tallies then.
#[derive(Debug, Clone)]
enum Counts {
    Recorded(StateCounts),
    Journal(Tally, BTreeMap<String, Tally>),
}

/// Reads the journal run by run, oldest first. Memory: one step per account that an action
/// moved, and per run one tally for all accounts and one per partner domain moved so far,
/// never a copy of every account per run.
#[derive(Debug, Default)]
pub struct Builder {
    /// The furthest step of each account so far.
    reached: BTreeMap<String, Step>,
    /// The domain of each account's external address.
    domain: BTreeMap<String, String>,
    /// Accounts per step now, all together and per domain.
    all: Tally,
    per_domain: BTreeMap<String, Tally>,
    /// The counts at the end of each run.
    points: Vec<(String, jiff::Timestamp, Counts)>,
    /// Per day: invitations sent, accepted, accounts converted.
    days: BTreeMap<String, (usize, usize, usize)>,
    conversions: Vec<jiff::Timestamp>,
    acceptances: Vec<jiff::Timestamp>,
}

impl Builder {
    /// Knows each account's partner domain from the address it stages, and when it was
    /// accepted.
    pub fn new(accounts: &[AccountRecord]) -> Builder {
        let domain = accounts
            .iter()
            .filter_map(|a| {
                let address = a.progress.address.as_deref()?;
                let (_, domain) = address.rsplit_once('@')?;
                Some((a.key.clone(), domain.to_ascii_lowercase()))
            })
            .collect();
        let mut days: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
        let acceptances: Vec<jiff::Timestamp> = accounts
            .iter()
            .filter_map(|a| a.progress.accepted_at)
            .collect();
        for t in &acceptances {
            days.entry(day_of(*t)).or_default().1 += 1;
        }
        Builder {
            domain,
            days,
            acceptances,
            ..Builder::default()
        }
    }

    /// Adds one run and its journal records (any order).
    pub fn add_run(&mut self, run: &RunRecord, entries: &[JournalEntry]) {
        for e in entries.iter().filter(|e| e.phase == Phase::Done) {
            let Some(step) = Step::of(e.action) else {
                continue;
            };
            let counts = self.days.entry(day_of(e.at)).or_default();
            match step {
                Step::Invited => counts.0 += 1,
                Step::Done => {
                    counts.2 += 1;
                    self.conversions.push(e.at);
                }
                Step::Staged => {}
            }
            self.reach(&e.account_key, step);
        }
        let at = run.finished_at.unwrap_or(run.started_at);
        let counts = match &run.state_counts {
            Some(recorded) => Counts::Recorded(recorded.clone()),
            None => Counts::Journal(self.all, self.per_domain.clone()),
        };
        self.points.push((run.id.clone(), at, counts));
    }

    /// Moves `key` to `step` if that is further than it was, keeping the tallies.
    fn reach(&mut self, key: &str, step: Step) {
        let before = self.reached.get(key).copied();
        if before.is_some_and(|b| b >= step) {
            return;
        }
        self.reached.insert(key.to_string(), step);
        let index = |s: Step| STEPS.iter().position(|&x| x == s).unwrap_or(0);
        let mut tallies = vec![&mut self.all];
        if let Some(d) = self.domain.get(key) {
            tallies.push(self.per_domain.entry(d.clone()).or_default());
        }
        for t in tallies {
            if let Some(b) = before {
                t[index(b)] -= 1;
            }
            t[index(step)] += 1;
        }
    }

    /// The history, with the projection from `states` (accounts per lifecycle state now).
    pub fn finish(self, states: &[(Lifecycle, usize)], now: jiff::Timestamp) -> History {
        let thin = thin(&self.points, |p| p.1);
        // Domains: those a recorded point counts, and those the journal moved an account in
        // (the others would draw flat zeros).
        let mut names: std::collections::BTreeSet<&String> = self.per_domain.keys().collect();
        for (_, _, counts) in &thin {
            if let Counts::Recorded(r) = counts {
                names.extend(r.domains.keys());
            }
        }
        let per_domain = if names.len() > 1 {
            names
                .iter()
                .map(|d| Series {
                    domain: Some((*d).clone()),
                    points: thin
                        .iter()
                        .map(|(run, at, counts)| point(run, *at, counts, Some(d)))
                        .collect(),
                })
                .collect()
        } else {
            Vec::new()
        };
        let recent = |times: &[jiff::Timestamp]| {
            let since = now.as_second() - RATE_DAYS * 86_400;
            times
                .iter()
                .filter(|t| t.as_second() > since && t.as_second() <= now.as_second())
                .count()
        };
        let rate = Rate {
            any_acceptance: !self.acceptances.is_empty(),
            accepted: recent(&self.acceptances),
            converted: recent(&self.conversions),
        };
        History {
            all: thin
                .iter()
                .map(|(run, at, counts)| point(run, *at, counts, None))
                .collect(),
            domains: per_domain,
            days: self
                .days
                .into_iter()
                .map(|(day, (invited, accepted, converted))| Day {
                    day,
                    invited,
                    accepted,
                    converted,
                })
                .collect(),
            projection: Some(projection(states, rate, now)),
        }
    }
}

/// `2026-11-23`: the UTC day of a time.
fn day_of(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%d").to_string()
}

/// One run's point, for every account (`domain` `None`) or one partner domain.
fn point(run: &str, at: jiff::Timestamp, counts: &Counts, domain: Option<&String>) -> Point {
    let (source, counts) = match counts {
        Counts::Recorded(r) => {
            let by_state = match domain {
                None => Some(&r.all),
                Some(d) => r.domains.get(d),
            };
            let counts = crate::report::FUNNEL
                .iter()
                .map(|s| {
                    let n = by_state
                        .and_then(|m| m.get(s.as_str()))
                        .copied()
                        .unwrap_or(0);
                    (
                        s.as_str().to_string(),
                        usize::try_from(n).unwrap_or(usize::MAX),
                    )
                })
                .collect::<Vec<_>>();
            (Source::Recorded, counts)
        }
        Counts::Journal(all, per_domain) => {
            let tally = match domain {
                None => *all,
                Some(d) => per_domain.get(d).copied().unwrap_or_default(),
            };
            let counts = STEPS
                .iter()
                .zip(tally.iter())
                .map(|(s, n)| (s.as_str().to_string(), *n))
                .collect::<Vec<_>>();
            (Source::Journal, counts)
        }
    };
    let mut counts = counts;
    counts.sort_by_key(|(name, _)| SERIES.iter().position(|s| s == name));
    Point {
        run: run.to_string(),
        at,
        source,
        counts,
    }
}

/// One point per run, or the last run of each UTC day when there are too many runs.
fn thin<P: Clone>(points: &[P], time: impl Fn(&P) -> jiff::Timestamp) -> Vec<P> {
    if points.len() <= MAX_POINTS {
        return points.to_vec();
    }
    let day = |p: &P| time(p).as_second().div_euclid(86_400);
    let mut out: Vec<P> = Vec::new();
    for p in points {
        match out.last_mut() {
            Some(last) if day(last) == day(p) => *last = p.clone(),
            _ => out.push(p.clone()),
        }
    }
    out
}

/// What the projection's rate is measured on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rate {
    /// Whether any account has an acceptance time (else the rate counts conversions).
    pub any_acceptance: bool,
    /// Acceptances and conversions in the last [`RATE_DAYS`] days.
    pub accepted: usize,
    pub converted: usize,
}

/// The projection at the observed acceptance rate over the last [`RATE_DAYS`] days (the
/// conversion rate for a store without acceptance times).
pub fn projection(states: &[(Lifecycle, usize)], rate: Rate, now: jiff::Timestamp) -> Projection {
    let remaining: usize = states
        .iter()
        .filter(|(s, _)| {
            !matches!(
                s,
                Lifecycle::Done | Lifecycle::Blocked | Lifecycle::Unmatched
            )
        })
        .map(|(_, n)| n)
        .sum();
    let (basis, recent, what) = if rate.any_acceptance {
        ("acceptances", rate.accepted, "acceptance rate")
    } else {
        ("conversions", rate.converted, "conversion rate")
    };
    let per_day = format!("{:.1}", recent as f64 / RATE_DAYS as f64);
    let (done_by, text) = if remaining == 0 {
        (
            None,
            "No account is in progress: nothing is left to project (blocked and unmatched \
             accounts need a fix first)."
                .to_string(),
        )
    } else if recent == 0 {
        let none = if rate.any_acceptance {
            "no invitation was accepted"
        } else {
            "no account was converted"
        };
        (
            None,
            format!(
                "No projection: {none} in the last {RATE_DAYS} days, so at that rate the \
                 remaining {remaining} accounts in progress would never be done."
            ),
        )
    } else {
        // remaining / (recent / RATE_DAYS) days, rounded up to whole days.
        let days = (remaining * RATE_DAYS as usize).div_ceil(recent) as i64;
        let day = jiff::Timestamp::from_second(now.as_second() + days * 86_400)
            .unwrap_or(jiff::Timestamp::MAX)
            .strftime("%Y-%m-%d")
            .to_string();
        let assumption = if rate.any_acceptance {
            "This assumes invitations go on being accepted at that rate, every one of them is \
             accepted, and each acceptance is converted by the next run"
        } else {
            "No account has an acceptance time yet (a store from before they were recorded), so \
             conversions stand in for acceptances. This assumes the rate stays the same and every \
             one of them is accepted"
        };
        let text = format!(
            "At the {what} of the last {RATE_DAYS} days ({recent} accounts, {per_day} per day), \
             the remaining {remaining} accounts in progress would be done by {day}. \
             {assumption}; blocked and unmatched accounts are not counted."
        );
        (Some(day), text)
    };
    Projection {
        remaining,
        basis,
        accepted_recently: rate.accepted,
        converted_recently: rate.converted,
        rate_days: RATE_DAYS,
        done_by,
        text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> jiff::Timestamp {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn account(key: &str, address: &str) -> AccountRecord {
        AccountRecord {
            key: key.into(),
            dn: None,
            kind: None,
            reason: None,
            updated_at: t("2026-11-01T00:00:00Z"),
            gone_at: None,
            progress: crate::model::Progress {
                address: Some(address.into()),
                ..crate::model::Progress::default()
            },
        }
    }

    fn done(run: &str, key: &str, action: Action, at: &str) -> JournalEntry {
        JournalEntry {
            seq: 0,
            run_id: run.into(),
            action_key: format!("{key}:{}", action.as_str()),
            action,
            account_key: key.into(),
            phase: Phase::Done,
            before: None,
            after: None,
            request_id: None,
            client_request_id: None,
            error: None,
            at: t(at),
        }
    }

    fn run(id: &str, at: &str) -> RunRecord {
        RunRecord {
            id: id.into(),
            command: "run".into(),
            started_at: t(at),
            finished_at: Some(t(at)),
            exit_code: Some(0),
            summary: None,
            state_counts: None,
        }
    }

    #[test]
    fn each_account_counts_in_the_furthest_step_its_done_actions_reached() {
        let accounts = [
            account("a", "a@one.example"),
            account("b", "b@Two.example"),
            account("c", "c@three.example"),
        ];
        let mut b = Builder::new(&accounts);
        b.add_run(
            &run("r1", "2026-11-20T10:00:00Z"),
            &[
                done("r1", "a", Action::SetDirectoryMail, "2026-11-20T10:00:00Z"),
                done("r1", "b", Action::Invite, "2026-11-20T10:00:00Z"),
            ],
        );
        b.add_run(
            &run("r2", "2026-11-21T10:00:00Z"),
            &[
                done("r2", "a", Action::Invite, "2026-11-21T10:00:00Z"),
                done("r2", "b", Action::RandomizePassword, "2026-11-21T10:00:00Z"),
            ],
        );
        let h = b.finish(&[(Lifecycle::Invited, 1)], t("2026-11-22T00:00:00Z"));
        let counts: Vec<Vec<(String, usize)>> = h.all.iter().map(|p| p.counts.clone()).collect();
        let c = |staged, invited, done| {
            vec![
                ("staged".to_string(), staged),
                ("invited".to_string(), invited),
                ("done".to_string(), done),
            ]
        };
        assert_eq!(counts, [c(1, 1, 0), c(0, 1, 1)]);
        assert!(h.all.iter().all(|p| p.source == Source::Journal));
        // `c` was never touched: its domain gets no chart. Domains compare in lower case.
        let domains: Vec<_> = h.domains.iter().filter_map(|d| d.domain.clone()).collect();
        assert_eq!(domains, ["one.example", "two.example"]);
        assert_eq!(
            h.days,
            [
                Day {
                    day: "2026-11-20".into(),
                    invited: 1,
                    accepted: 0,
                    converted: 0
                },
                Day {
                    day: "2026-11-21".into(),
                    invited: 1,
                    accepted: 0,
                    converted: 1
                },
            ]
        );
        let p = h.projection.expect("projection");
        assert_eq!((p.remaining, p.converted_recently), (1, 1));
        assert_eq!(p.basis, "conversions", "no account has an acceptance time");
        assert_eq!(p.done_by.as_deref(), Some("2026-12-06"));
    }

    // Issue 17: a run that recorded its accounts per state is drawn from those counts (all
    // and per domain), an older one from the journal; acceptances per day come from the
    // accounts' accepted_at, and the projection uses their rate.
    #[test]
    fn recorded_counts_are_the_points_and_acceptances_set_the_rate() {
        let mut accounts = [account("a", "a@one.example"), account("b", "b@two.example")];
        accounts[0].progress.accepted_at = Some(t("2026-11-21T08:00:00Z"));
        accounts[1].progress.accepted_at = Some(t("2026-11-10T08:00:00Z"));
        let mut b = Builder::new(&accounts);
        b.add_run(
            &run("r1", "2026-11-20T10:00:00Z"),
            &[done("r1", "a", Action::Invite, "2026-11-20T10:00:00Z")],
        );
        let mut r2 = run("r2", "2026-11-21T10:00:00Z");
        let states = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
            pairs.iter().map(|(s, n)| (s.to_string(), *n)).collect()
        };
        r2.state_counts = Some(StateCounts {
            all: states(&[("accepted", 1), ("invited", 2), ("blocked", 3)]),
            domains: BTreeMap::from([
                ("one.example".to_string(), states(&[("accepted", 1)])),
                ("two.example".to_string(), states(&[("invited", 2)])),
            ]),
        });
        b.add_run(&r2, &[]);
        let h = b.finish(
            &[(Lifecycle::Invited, 2), (Lifecycle::Accepted, 1)],
            t("2026-11-22T00:00:00Z"),
        );
        assert_eq!(h.all[0].source, Source::Journal);
        assert_eq!(h.all[1].source, Source::Recorded);
        // Every lifecycle state, zeros included, in funnel order.
        let names: Vec<&str> = h.all[1].counts.iter().map(|(n, _)| n.as_str()).collect();
        let funnel: Vec<&str> = crate::report::FUNNEL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, funnel);
        let count =
            |p: &Point, name: &str| p.counts.iter().find(|(n, _)| n == name).map(|(_, c)| *c);
        assert_eq!(count(&h.all[1], "blocked"), Some(3));
        assert_eq!(count(&h.all[1], "ready"), Some(0));
        assert_eq!(count(&h.all[0], "staged"), Some(0));
        let two = h
            .domains
            .iter()
            .find(|d| d.domain.as_deref() == Some("two.example"))
            .expect("a chart for two.example");
        assert_eq!(count(&two.points[1], "invited"), Some(2));
        assert_eq!(count(&two.points[1], "accepted"), Some(0));
        let accepted: Vec<(&str, usize)> = h
            .days
            .iter()
            .map(|d| (d.day.as_str(), d.accepted))
            .collect();
        assert_eq!(
            accepted,
            [("2026-11-10", 1), ("2026-11-20", 0), ("2026-11-21", 1)]
        );
        let p = h.projection.expect("projection");
        assert_eq!(p.basis, "acceptances");
        // 2 acceptances in 14 days, 3 in progress: 21 days.
        assert_eq!((p.accepted_recently, p.remaining), (2, 3));
        assert_eq!(p.done_by.as_deref(), Some("2026-12-13"));
        assert!(p.text.contains("acceptance rate"), "{}", p.text);
        assert!(p.text.contains("assumes"), "{}", p.text);
    }

    #[test]
    fn a_projection_needs_a_rate() {
        let now = t("2026-11-23T00:00:00Z");
        let states = [
            (Lifecycle::Invited, 10),
            (Lifecycle::Blocked, 5),
            (Lifecycle::Done, 3),
        ];
        let rate = |accepted| Rate {
            any_acceptance: true,
            accepted,
            converted: 0,
        };
        let p = projection(&states, rate(0), now);
        assert_eq!((p.remaining, p.done_by.as_deref()), (10, None));
        assert!(p.text.starts_with("No projection"), "{}", p.text);

        // 7 in 14 days: half an account a day, 10 left: 20 days.
        let p = projection(&states, rate(7), now);
        assert_eq!(p.done_by.as_deref(), Some("2026-12-13"));
        assert!(p.text.contains("0.5 per day"), "{}", p.text);
        assert!(p.text.contains("remaining 10"), "{}", p.text);
    }

    #[test]
    fn many_runs_thin_to_one_point_per_day() {
        let points: Vec<(String, jiff::Timestamp, ())> = (0..MAX_POINTS as i64 + 10)
            .map(|i| {
                let at = jiff::Timestamp::from_second(1_700_000_000 + i * 3600).unwrap_or_default();
                (format!("r{i}"), at, ())
            })
            .collect();
        let thinned = thin(&points, |p| p.1);
        assert!(thinned.len() < points.len());
        assert_eq!(thinned.last().map(|p| p.0.as_str()), Some("r69"));
    }
}
