//! Which sessions gc removes: pure code over what the scan found, so every rule is a unit
//! test. Whether a session is active is only a hint here: the deletion itself re-checks
//! by taking the session's lock.

use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::session::SessionId;

pub const DEFAULT_DAYS: u64 = 7;
const DAY: Duration = Duration::from_secs(86_400);
/// An orphan (a directory with no valid record) younger than this is kept, like a
/// `.new-*` dir: it may be a session some other csbox is making or mending right now.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(3600);

/// The rules of one gc run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Remove inactive sessions idle for longer than this (None: age is no reason).
    pub older_than_days: Option<u64>,
    pub empty: bool,
    pub orphaned: bool,
    /// Remove crashed sessions whatever their age (only when asked: `--crashed`).
    pub crashed: bool,
    /// Then remove the oldest inactive sessions until the store is at most this big.
    pub max_size: Option<u64>,
}

impl Policy {
    /// The command line's meaning. With none of `--empty`, `--orphaned`, `--crashed`,
    /// old, empty and orphaned sessions go (old after `--days`, default 7), as with
    /// cleanup-sessions.py; a crashed session goes only when old. Naming any of the three
    /// restricts gc to those kinds; old sessions then go only if `--days` is also given.
    pub fn from_flags(
        days: Option<u64>,
        empty: bool,
        orphaned: bool,
        crashed: bool,
        max_size: Option<u64>,
    ) -> Self {
        let restricted = empty || orphaned || crashed;
        Policy {
            older_than_days: days.or((!restricted).then_some(DEFAULT_DAYS)),
            empty: empty || !restricted,
            orphaned: orphaned || !restricted,
            crashed,
            max_size,
        }
    }
}

/// What the scan knows about one session.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: SessionId,
    /// Its lock was held at scan time.
    pub active: bool,
    /// Its state holds nothing but the skeleton.
    pub empty: bool,
    /// It was created and never started (`csbox spec --new` made it for a bundle), or
    /// an OCI runtime started it from a bundle: a runtime runs it without csbox, so no
    /// lock shows that it is in use, and a bundle can be run again. Such a session goes
    /// only by age (or `--max-size`), never as "empty".
    pub for_runtime: bool,
    /// Why it is orphaned (no valid record), if it is.
    pub orphaned: Option<String>,
    /// It started, never ended, and nothing holds its lock.
    pub crashed: bool,
    /// The user gave it a name (`--name`): a session someone cared to name goes only by
    /// age (or `--max-size`), never as "empty".
    pub named: bool,
    /// The end time in session.json, or else the newest mtime in the session.
    pub last_activity: SystemTime,
    /// Bytes on disk (known when the policy has a `max_size`).
    pub size: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum Reason {
    Old {
        idle_days: u64,
    },
    Empty,
    Orphaned {
        why: String,
    },
    /// Crashed, and `--crashed` was given.
    Crashed,
    /// Removed, oldest first, to bring the store under `--max-size`.
    OverSize,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Old { idle_days } => write!(f, "old (idle {idle_days} days)"),
            Reason::Empty => write!(f, "empty"),
            Reason::Orphaned { why } => write!(f, "orphaned ({why})"),
            Reason::Crashed => write!(f, "crashed (--crashed)"),
            Reason::OverSize => write!(f, "over --max-size (oldest first)"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Remove(Vec<Reason>),
    KeepActive,
    /// Inactive, but not idle for long enough (and no other rule matched).
    KeepYoung,
    /// Inactive, and no rule gc was told to apply matches it.
    KeepUnselected,
}

/// One decision per candidate, in the same order.
pub fn select(cands: &[Candidate], policy: &Policy, now: SystemTime) -> Vec<Decision> {
    let mut decisions: Vec<Decision> = cands
        .iter()
        .map(|c| {
            if c.active {
                return Decision::KeepActive;
            }
            let idle = now.duration_since(c.last_activity).unwrap_or_default();
            let mut reasons = Vec::new();
            let too_old = policy
                .older_than_days
                .is_some_and(|days| idle > Duration::from_secs(days.saturating_mul(DAY.as_secs())));
            if too_old {
                reasons.push(Reason::Old {
                    idle_days: idle.as_secs() / DAY.as_secs(),
                });
            }
            // A crashed session is the user's unfinished work, empty or not: it goes by
            // age (or --crashed), never as "empty".
            if policy.empty && c.empty && !c.for_runtime && !c.crashed && !c.named {
                reasons.push(Reason::Empty);
            }
            if let (true, Some(why)) = (policy.orphaned, &c.orphaned) {
                if idle > ORPHAN_GRACE {
                    reasons.push(Reason::Orphaned { why: why.clone() });
                }
            }
            if policy.crashed && c.crashed {
                reasons.push(Reason::Crashed);
            }
            match (reasons.is_empty(), policy.older_than_days) {
                (false, _) => Decision::Remove(reasons),
                (true, Some(_)) => Decision::KeepYoung,
                (true, None) => Decision::KeepUnselected,
            }
        })
        .collect();
    if let Some(max) = policy.max_size {
        let mut total: u64 = cands
            .iter()
            .zip(&decisions)
            .filter(|(_, d)| !matches!(d, Decision::Remove(_)))
            .map(|(c, _)| c.size.unwrap_or(0))
            .sum();
        let mut kept: Vec<usize> = (0..cands.len())
            .filter(|&i| matches!(decisions[i], Decision::KeepYoung | Decision::KeepUnselected))
            .collect();
        kept.sort_by_key(|&i| (cands[i].last_activity, cands[i].id.clone()));
        for i in kept {
            if total <= max {
                break;
            }
            total -= cands[i].size.unwrap_or(0);
            decisions[i] = Decision::Remove(vec![Reason::OverSize]);
        }
    }
    decisions
}

/// `10G`, `500M`, `1.5T`, `2048`, `64KiB`: binary units, as `du -h` prints them.
pub fn parse_size(s: &str) -> Result<u64> {
    let bad = || {
        Error::Usage(format!(
            "invalid size {s:?}: give a number with an optional unit K, M, G or T (e.g. 10G, 500M)"
        ))
    };
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(bad()),
    };
    let value: f64 = num.parse().map_err(|_| bad())?;
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_SECS: u64 = 1_800_000_000;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(NOW_SECS)
    }

    fn cand(days_idle: u64) -> Candidate {
        Candidate {
            id: SessionId::new(),
            active: false,
            empty: false,
            for_runtime: false,
            orphaned: None,
            crashed: false,
            named: false,
            last_activity: now() - DAY * days_idle as u32 - Duration::from_secs(1),
            size: Some(100),
        }
    }

    fn default_policy() -> Policy {
        Policy::from_flags(None, false, false, false, None)
    }

    #[test]
    fn default_run_removes_old_empty_and_orphaned_like_cleanup_sessions_py() {
        let p = default_policy();
        assert_eq!(p.older_than_days, Some(7));
        assert!(p.empty && p.orphaned);
        let young_empty = Candidate {
            empty: true,
            ..cand(0)
        };
        let young_orphan = Candidate {
            orphaned: Some("session.json: missing".into()),
            ..cand(1)
        };
        let d = select(&[cand(8), cand(6), young_empty, young_orphan], &p, now());
        assert_eq!(d[0], Decision::Remove(vec![Reason::Old { idle_days: 8 }]));
        assert_eq!(d[1], Decision::KeepYoung);
        assert_eq!(d[2], Decision::Remove(vec![Reason::Empty]));
        assert!(matches!(&d[3], Decision::Remove(r) if matches!(r[0], Reason::Orphaned { .. })));
    }

    #[test]
    fn a_crashed_session_goes_only_by_age_or_when_crashed_is_asked_for() {
        let crashed = |days| Candidate {
            crashed: true,
            empty: true,
            ..cand(days)
        };
        let d = select(&[crashed(0), crashed(8)], &default_policy(), now());
        assert_eq!(d[0], Decision::KeepYoung, "empty, but crashed: kept");
        assert_eq!(d[1], Decision::Remove(vec![Reason::Old { idle_days: 8 }]));
        let only_orphans = Policy::from_flags(None, false, true, false, None);
        assert_eq!(
            select(&[crashed(30)], &only_orphans, now())[0],
            Decision::KeepUnselected,
            "a crashed session is not an orphan"
        );
        let asked = Policy::from_flags(None, false, false, true, None);
        assert_eq!(
            select(&[crashed(0), cand(30)], &asked, now()),
            vec![
                Decision::Remove(vec![Reason::Crashed]),
                Decision::KeepUnselected
            ]
        );
    }

    #[test]
    fn an_orphan_younger_than_an_hour_is_kept() {
        let orphan = |ago: Duration| Candidate {
            orphaned: Some("session.json: missing".into()),
            last_activity: now() - ago,
            ..cand(0)
        };
        let p = default_policy();
        let d = select(
            &[orphan(Duration::from_secs(60)), orphan(ORPHAN_GRACE * 2)],
            &p,
            now(),
        );
        assert_eq!(d[0], Decision::KeepYoung);
        assert!(matches!(&d[1], Decision::Remove(r) if matches!(r[0], Reason::Orphaned { .. })));
    }

    #[test]
    fn a_session_for_a_runtime_goes_by_age_not_as_empty() {
        let p = default_policy();
        let exported = |days| Candidate {
            empty: true,
            for_runtime: true,
            ..cand(days)
        };
        let d = select(&[exported(0), exported(8)], &p, now());
        assert_eq!(d[0], Decision::KeepYoung);
        assert_eq!(d[1], Decision::Remove(vec![Reason::Old { idle_days: 8 }]));
        let only_empty = Policy::from_flags(None, true, false, false, None);
        assert_eq!(
            select(&[exported(30)], &only_empty, now())[0],
            Decision::KeepUnselected
        );
    }

    #[test]
    fn a_named_session_goes_by_age_not_as_empty() {
        let named = |days| Candidate {
            empty: true,
            named: true,
            ..cand(days)
        };
        let p = default_policy();
        assert_eq!(select(&[named(1)], &p, now())[0], Decision::KeepYoung);
        assert!(
            matches!(&select(&[named(8)], &p, now())[0], Decision::Remove(r) if r == &vec![Reason::Old { idle_days: 8 }])
        );
        let only_empty = Policy::from_flags(None, true, false, false, None);
        assert_eq!(
            select(&[named(30)], &only_empty, now())[0],
            Decision::KeepUnselected
        );
    }

    #[test]
    fn age_is_strictly_more_than_n_days() {
        let p = Policy::from_flags(Some(3), false, false, false, None);
        let exactly = Candidate {
            last_activity: now() - DAY * 3,
            ..cand(0)
        };
        assert_eq!(
            select(&[exactly, cand(3)], &p, now())[0],
            Decision::KeepYoung
        );
        assert!(matches!(
            select(&[cand(3)], &p, now())[0],
            Decision::Remove(_)
        ));
    }

    #[test]
    fn an_active_session_is_kept_whatever_else_is_true() {
        let p = Policy::from_flags(Some(0), true, true, true, Some(0));
        let c = Candidate {
            active: true,
            empty: true,
            orphaned: Some("x".into()),
            ..cand(400)
        };
        assert_eq!(select(&[c], &p, now()), vec![Decision::KeepActive]);
    }

    #[test]
    fn empty_or_orphaned_flags_restrict_to_those_kinds() {
        let p = Policy::from_flags(None, true, false, false, None);
        assert_eq!(
            (p.older_than_days, p.empty, p.orphaned),
            (None, true, false)
        );
        let orphan = Candidate {
            orphaned: Some("x".into()),
            ..cand(30)
        };
        let empty = Candidate {
            empty: true,
            ..cand(0)
        };
        let d = select(&[cand(30), orphan.clone(), empty], &p, now());
        assert_eq!(d[0], Decision::KeepUnselected, "old but --empty only");
        assert_eq!(d[1], Decision::KeepUnselected);
        assert_eq!(d[2], Decision::Remove(vec![Reason::Empty]));
        // --days adds old ones back
        let p = Policy::from_flags(Some(7), false, true, false, None);
        let d = select(&[cand(30), orphan], &p, now());
        assert!(matches!(&d[0], Decision::Remove(r) if r == &[Reason::Old { idle_days: 30 }]));
        assert!(matches!(&d[1], Decision::Remove(r) if r.len() == 2));
    }

    #[test]
    fn huge_day_counts_do_not_overflow() {
        let p = Policy::from_flags(Some(u64::MAX), false, false, false, None);
        assert_eq!(select(&[cand(9000)], &p, now()), vec![Decision::KeepYoung]);
    }

    #[test]
    fn future_activity_is_never_old() {
        let p = Policy::from_flags(Some(0), false, false, false, None);
        let c = Candidate {
            last_activity: now() + DAY,
            ..cand(0)
        };
        assert_eq!(select(&[c], &p, now()), vec![Decision::KeepYoung]);
    }

    #[test]
    fn max_size_removes_oldest_inactive_until_under() {
        let p = Policy::from_flags(Some(30), false, false, false, Some(250));
        let active = Candidate {
            active: true,
            ..cand(10)
        };
        // sizes 100 each: active(10d) + 2d + 5d + 4d + 1d = 500; must drop 3 -> 200
        let cands = [active, cand(2), cand(5), cand(4), cand(1)];
        let d = select(&cands, &p, now());
        assert_eq!(d[0], Decision::KeepActive);
        assert_eq!(d[1], Decision::Remove(vec![Reason::OverSize]));
        assert_eq!(d[2], Decision::Remove(vec![Reason::OverSize]));
        assert_eq!(d[3], Decision::Remove(vec![Reason::OverSize]));
        assert_eq!(d[4], Decision::KeepYoung);
    }

    #[test]
    fn max_size_counts_what_other_rules_already_remove() {
        let p = Policy::from_flags(Some(7), false, false, false, Some(100));
        let d = select(&[cand(9), cand(1)], &p, now());
        assert_eq!(d[0], Decision::Remove(vec![Reason::Old { idle_days: 9 }]));
        assert_eq!(d[1], Decision::KeepYoung, "100 bytes left is not over 100");
    }

    #[test]
    fn sizes_parse_like_du_prints_them() {
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("500M").unwrap(), 500 << 20);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert_eq!(parse_size("64KiB").unwrap(), 64 << 10);
        assert_eq!(parse_size("2048").unwrap(), 2048);
        assert_eq!(parse_size("1T").unwrap(), 1 << 40);
        for bad in ["", "G", "10X", "-1G", "1e9", "1..2G", "99999999999T"] {
            let e = parse_size(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
        }
    }
}
