//! Progress over time, reconstructed from the journal (`status`, the HTML page's chart): for
//! each run, how many accounts had reached each step of the lifecycle by its end; per day,
//! how many invitations were sent and how many accounts were converted; and a projection of
//! when the accounts still in progress would be done at the recent rate. Pure: fed one run's
//! journal at a time ([`Builder::add_run`]) so memory stays bounded by the largest run.
//!
//! The journal records actions, not observations: an account counts in the furthest step its
//! *done* actions reached (`staged` after an address write, `invited` after an invitation,
//! `done` after its on-premises password was randomized). Acceptance is observed in Graph
//! and not journaled, so the per-day series counts conversions (the password randomization
//! that follows acceptance under the default policy) as the closest recorded event.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::Lifecycle;
use crate::state::{AccountRecord, Action, JournalEntry, Phase, RunRecord};

/// The steps the chart shows, in lifecycle order.
pub const STEPS: [Step; 3] = [Step::Staged, Step::Invited, Step::Done];

/// More runs than this and the chart shows one point per day (the day's last run).
pub const MAX_POINTS: usize = 60;

/// Days of conversions the projection's rate is measured over.
pub const RATE_DAYS: i64 = 14;

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

/// Accounts per step at the end of one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Point {
    pub run: String,
    pub at: jiff::Timestamp,
    /// Accounts whose furthest step is this one, for every step in [`STEPS`] order.
    pub counts: Vec<(Step, usize)>,
}

/// Invitations sent and accounts converted on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Day {
    /// `2026-11-23`.
    pub day: String,
    pub invited: usize,
    pub converted: usize,
}

/// When the accounts still in progress would be done at the recent conversion rate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Projection {
    /// Accounts neither done nor held back (blocked or unmatched).
    pub remaining: usize,
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
    /// The tallies at the end of each run.
    points: Vec<(String, jiff::Timestamp, Tally, BTreeMap<String, Tally>)>,
    days: BTreeMap<String, (usize, usize)>,
    conversions: Vec<jiff::Timestamp>,
}

impl Builder {
    /// Knows each account's partner domain from the address it stages.
    pub fn new(accounts: &[AccountRecord]) -> Builder {
        let domain = accounts
            .iter()
            .filter_map(|a| {
                let address = a.progress.address.as_deref()?;
                let (_, domain) = address.rsplit_once('@')?;
                Some((a.key.clone(), domain.to_ascii_lowercase()))
            })
            .collect();
        Builder {
            domain,
            ..Builder::default()
        }
    }

    /// Adds one run and its journal records (any order).
    pub fn add_run(&mut self, run: &RunRecord, entries: &[JournalEntry]) {
        for e in entries.iter().filter(|e| e.phase == Phase::Done) {
            let Some(step) = Step::of(e.action) else {
                continue;
            };
            let day = e.at.strftime("%Y-%m-%d").to_string();
            let counts = self.days.entry(day).or_default();
            match step {
                Step::Invited => counts.0 += 1,
                Step::Done => {
                    counts.1 += 1;
                    self.conversions.push(e.at);
                }
                Step::Staged => {}
            }
            self.reach(&e.account_key, step);
        }
        let at = run.finished_at.unwrap_or(run.started_at);
        self.points
            .push((run.id.clone(), at, self.all, self.per_domain.clone()));
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
        let point = |run: &String, at: &jiff::Timestamp, tally: &Tally| Point {
            run: run.clone(),
            at: *at,
            counts: STEPS.iter().copied().zip(tally.iter().copied()).collect(),
        };
        // Only domains with an account the journal moved: the others would draw flat zeros.
        let per_domain = if self.per_domain.len() > 1 {
            self.per_domain
                .keys()
                .map(|d| Series {
                    domain: Some(d.clone()),
                    points: thin
                        .iter()
                        .map(|(run, at, _, domains)| {
                            point(run, at, &domains.get(d).copied().unwrap_or_default())
                        })
                        .collect(),
                })
                .collect()
        } else {
            Vec::new()
        };
        let since = now.as_second() - RATE_DAYS * 86_400;
        let recent = self
            .conversions
            .iter()
            .filter(|t| t.as_second() > since && t.as_second() <= now.as_second())
            .count();
        History {
            all: thin
                .iter()
                .map(|(run, at, all, _)| point(run, at, all))
                .collect(),
            domains: per_domain,
            days: self
                .days
                .into_iter()
                .map(|(day, (invited, converted))| Day {
                    day,
                    invited,
                    converted,
                })
                .collect(),
            projection: Some(projection(states, recent, now)),
        }
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

/// The projection at `recent` conversions over the last [`RATE_DAYS`] days.
pub fn projection(
    states: &[(Lifecycle, usize)],
    recent: usize,
    now: jiff::Timestamp,
) -> Projection {
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
    let rate = format!("{:.1}", recent as f64 / RATE_DAYS as f64);
    let (done_by, text) = if remaining == 0 {
        (
            None,
            "No account is in progress: nothing is left to project (blocked and unmatched \
             accounts need a fix first)."
                .to_string(),
        )
    } else if recent == 0 {
        (
            None,
            format!(
                "No projection: no account was converted in the last {RATE_DAYS} days, so at \
                 that rate the remaining {remaining} accounts in progress would never be done."
            ),
        )
    } else {
        // remaining / (recent / RATE_DAYS) days, rounded up to whole days.
        let days = (remaining * RATE_DAYS as usize).div_ceil(recent) as i64;
        let day = jiff::Timestamp::from_second(now.as_second() + days * 86_400)
            .unwrap_or(jiff::Timestamp::MAX)
            .strftime("%Y-%m-%d")
            .to_string();
        let text = format!(
            "At the conversion rate of the last {RATE_DAYS} days ({recent} accounts, {rate} per \
             day), the remaining {remaining} accounts in progress would be done by {day}. This \
             assumes the rate stays the same and every one of them is accepted; blocked and \
             unmatched accounts are not counted."
        );
        (Some(day), text)
    };
    Projection {
        remaining,
        converted_recently: recent,
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
        let counts: Vec<Vec<(Step, usize)>> = h.all.iter().map(|p| p.counts.clone()).collect();
        assert_eq!(
            counts,
            [
                vec![(Step::Staged, 1), (Step::Invited, 1), (Step::Done, 0)],
                vec![(Step::Staged, 0), (Step::Invited, 1), (Step::Done, 1)],
            ]
        );
        // `c` was never touched: its domain gets no chart. Domains compare in lower case.
        let domains: Vec<_> = h.domains.iter().filter_map(|d| d.domain.clone()).collect();
        assert_eq!(domains, ["one.example", "two.example"]);
        assert_eq!(
            h.days,
            [
                Day {
                    day: "2026-11-20".into(),
                    invited: 1,
                    converted: 0
                },
                Day {
                    day: "2026-11-21".into(),
                    invited: 1,
                    converted: 1
                },
            ]
        );
        let p = h.projection.expect("projection");
        assert_eq!((p.remaining, p.converted_recently), (1, 1));
        assert_eq!(p.done_by.as_deref(), Some("2026-12-06"));
    }

    #[test]
    fn a_projection_needs_a_rate() {
        let now = t("2026-11-23T00:00:00Z");
        let states = [
            (Lifecycle::Invited, 10),
            (Lifecycle::Blocked, 5),
            (Lifecycle::Done, 3),
        ];
        let p = projection(&states, 0, now);
        assert_eq!((p.remaining, p.done_by.as_deref()), (10, None));
        assert!(p.text.starts_with("No projection"), "{}", p.text);

        // 7 in 14 days: half an account a day, 10 left: 20 days.
        let p = projection(&states, 7, now);
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
