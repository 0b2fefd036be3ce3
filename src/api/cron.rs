//! Cron schedules as CronJobs use them: five fields (minute hour day-of-month month
//! day-of-week) with `*`, lists, ranges, steps and month/day names, or the `@hourly`
//! style macros; time zones from the system's zoneinfo files (TZif).

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    minutes: Vec<bool>,
    hours: Vec<bool>,
    days: Vec<bool>,
    months: Vec<bool>,
    weekdays: Vec<bool>,
    /// Both day fields restricted: a day matches if either does (classic cron).
    either_day: bool,
}

/// A schedule or time zone that is not one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("{0:?} is not a number")]
    NotNumber(String),
    #[error("bad step {0:?}")]
    BadStep(String),
    #[error("a step must be positive")]
    ZeroStep,
    #[error("{part:?} is out of range {lo}-{hi}")]
    OutOfRange { part: String, lo: u32, hi: u32 },
    #[error("expected exactly 5 fields, found {count}: {text:?}")]
    FieldCount { count: usize, text: String },
    #[error("unknown time zone {0}")]
    UnknownZone(String),
}

fn field(text: &str, lo: u32, hi: u32, names: &[&str]) -> Result<(Vec<bool>, bool), CronError> {
    let mut set = vec![false; (hi + 1) as usize];
    let mut restricted = true;
    let value = |s: &str| -> Result<u32, CronError> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(i as u32 + lo);
        }
        s.parse::<u32>()
            .map_err(|_| CronError::NotNumber(s.to_string()))
    };
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .map_err(|_| CronError::BadStep(s.to_string()))?,
            ),
            None => (part, 1),
        };
        if step == 0 {
            return Err(CronError::ZeroStep);
        }
        let (a, b) = if range == "*" || range == "?" {
            if step == 1 {
                restricted = false;
            }
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let a = value(range)?;
            (a, if part.contains('/') { hi } else { a })
        };
        if a < lo || b > hi || a > b {
            return Err(CronError::OutOfRange {
                part: part.to_string(),
                lo,
                hi,
            });
        }
        let mut v = a;
        while v <= b {
            set[v as usize] = true;
            v += step;
        }
    }
    Ok((set, restricted))
}

impl Schedule {
    pub fn parse(text: &str) -> Result<Schedule, CronError> {
        let text = match text.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other => other,
        };
        let parts: Vec<&str> = text.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(CronError::FieldCount {
                count: parts.len(),
                text: text.to_string(),
            });
        }
        const MONTHS: &[&str] = &[
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ];
        const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
        let (minutes, _) = field(parts[0], 0, 59, &[])?;
        let (hours, _) = field(parts[1], 0, 23, &[])?;
        let (days, dom_r) = field(parts[2], 1, 31, &[])?;
        let (months, _) = field(parts[3], 1, 12, MONTHS)?;
        // 0 and 7 are both Sunday
        let (mut weekdays, dow_r) = field(parts[4], 0, 7, DAYS)?;
        if weekdays[7] {
            weekdays[0] = true;
        }
        weekdays.truncate(7);
        Ok(Schedule {
            minutes,
            hours,
            days,
            months,
            weekdays,
            either_day: dom_r && dow_r,
        })
    }

    /// Whether the local wall time `secs` (seconds since the epoch, already shifted by
    /// the zone's offset) is on the schedule (to the minute).
    fn matches(&self, local: i64) -> bool {
        let days_since = local.div_euclid(86_400);
        let rem = local.rem_euclid(86_400);
        let (minute, hour) = ((rem / 60 % 60) as usize, (rem / 3600) as usize);
        let civil = super::civil::rfc3339(local);
        let (month, day): (usize, usize) = (
            civil[5..7].parse().unwrap_or(1),
            civil[8..10].parse().unwrap_or(1),
        );
        let weekday = ((days_since + 4).rem_euclid(7)) as usize; // 1970-01-01 was a Thursday
        let dom = self.days[day];
        let dow = self.weekdays[weekday];
        let day_ok = if self.either_day {
            dom || dow
        } else {
            dom && dow
        };
        self.minutes[minute] && self.hours[hour] && self.months[month] && day_ok
    }

    /// The latest scheduled time in `(after, until]` (epoch seconds, UTC), given a zone.
    pub fn last_between(&self, after: i64, until: i64, zone: &Zone) -> Option<i64> {
        let mut t = until - until.rem_euclid(60);
        // at most a year of minutes back; schedules that rare are found by `next`
        let floor = after.max(until - 366 * 86_400);
        while t > floor {
            if self.matches(t + zone.offset_at(t)) {
                return Some(t);
            }
            t -= 60;
        }
        None
    }

    /// The first scheduled time after `after`.
    #[cfg(test)]
    pub fn next_after(&self, after: i64, zone: &Zone) -> Option<i64> {
        let mut t = after - after.rem_euclid(60) + 60;
        for _ in 0..(366 * 24 * 60) {
            if self.matches(t + zone.offset_at(t)) {
                return Some(t);
            }
            t += 60;
        }
        None
    }
}

/// A time zone: UTC offsets by transition time.
#[derive(Debug, Clone, Default)]
pub struct Zone {
    transitions: Vec<(i64, i64)>,
    initial: i64,
}

impl Zone {
    pub fn utc() -> Zone {
        Zone::default()
    }

    /// The zone `name` from /usr/share/zoneinfo (`UTC` and `Etc/UTC` need no file).
    pub fn load(name: &str) -> Result<Zone, CronError> {
        if matches!(name, "" | "UTC" | "Etc/UTC" | "Etc/GMT" | "GMT") {
            return Ok(Zone::utc());
        }
        if name.contains("..") || name.starts_with('/') {
            return Err(CronError::UnknownZone(name.to_string()));
        }
        let data = std::fs::read(format!("/usr/share/zoneinfo/{name}"))
            .map_err(|_| CronError::UnknownZone(name.to_string()))?;
        Zone::from_tzif(&data).ok_or_else(|| CronError::UnknownZone(name.to_string()))
    }

    /// The version 1 data of a TZif file.
    fn from_tzif(d: &[u8]) -> Option<Zone> {
        if d.get(0..4)? != b"TZif" {
            return None;
        }
        let count = |i: usize| -> Option<usize> {
            Some(u32::from_be_bytes(d.get(20 + 4 * i..24 + 4 * i)?.try_into().ok()?) as usize)
        };
        let (timecnt, typecnt) = (count(3)?, count(4)?);
        let times = 44;
        let indexes = times + 4 * timecnt;
        let types = indexes + timecnt;
        let offset = |t: usize| -> Option<i64> {
            Some(i64::from(i32::from_be_bytes(
                d.get(types + 6 * t..types + 6 * t + 4)?.try_into().ok()?,
            )))
        };
        let mut transitions = Vec::with_capacity(timecnt);
        for i in 0..timecnt {
            let at = i64::from(i32::from_be_bytes(
                d.get(times + 4 * i..times + 4 * i + 4)?.try_into().ok()?,
            ));
            let ty = *d.get(indexes + i)? as usize;
            if ty < typecnt {
                transitions.push((at, offset(ty)?));
            }
        }
        Some(Zone {
            transitions,
            initial: offset(0)?,
        })
    }

    pub fn offset_at(&self, t: i64) -> i64 {
        match self.transitions.partition_point(|(at, _)| *at <= t) {
            0 => self.initial,
            i => self.transitions[i - 1].1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::civil::parse_rfc3339;

    fn at(t: &str) -> i64 {
        parse_rfc3339(t).unwrap()
    }

    #[test]
    fn schedules_fire_when_cron_would() {
        let utc = Zone::utc();
        let every5 = Schedule::parse("*/5 * * * *").unwrap();
        assert_eq!(
            every5.next_after(at("2026-11-22T04:01:30Z"), &utc),
            Some(at("2026-11-22T04:05:00Z"))
        );
        assert_eq!(
            every5.last_between(0, at("2026-11-22T04:09:59Z"), &utc),
            Some(at("2026-11-22T04:05:00Z"))
        );
        let hourly = Schedule::parse("@hourly").unwrap();
        assert_eq!(
            hourly.next_after(at("2026-11-22T04:00:00Z"), &utc),
            Some(at("2026-11-22T05:00:00Z"))
        );
        // 2026-11-23 is a Monday
        let mondays = Schedule::parse("30 9 * * MON").unwrap();
        assert_eq!(
            mondays.next_after(at("2026-11-22T00:00:00Z"), &utc),
            Some(at("2026-11-23T09:30:00Z"))
        );
        let ranges = Schedule::parse("0 8-10/2 1,15 jan-mar *").unwrap();
        assert_eq!(
            ranges.next_after(at("2026-11-22T00:00:00Z"), &utc),
            Some(at("2027-01-01T08:00:00Z"))
        );
        assert!(Schedule::parse("* * * *").is_err());
        assert!(Schedule::parse("61 * * * *").is_err());
        assert!(Schedule::parse("*/0 * * * *").is_err());
    }

    #[test]
    fn zones_come_from_zoneinfo() {
        let utc = Zone::load("Etc/UTC").unwrap();
        assert_eq!(utc.offset_at(0), 0);
        assert!(Zone::load("Nowhere/Atlantis").is_err());
        assert!(Zone::load("../etc/passwd").is_err());
        if let Ok(tokyo) = Zone::load("Asia/Tokyo") {
            assert_eq!(tokyo.offset_at(at("2026-11-22T00:00:00Z")), 9 * 3600);
            let nine = Schedule::parse("0 9 * * *").unwrap();
            assert_eq!(
                nine.next_after(at("2026-11-22T01:00:00Z"), &tokyo),
                Some(at("2026-11-23T00:00:00Z"))
            );
        }
    }
}
