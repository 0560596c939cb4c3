//! Ceasefire breach reports as structured, signed records — in the words monitoring
//! missions use, with the precision of each observation stated — so partners can sort,
//! map and export them instead of scraping reports. A report says what was seen, never
//! who is to blame: attribution is the Special Commission's, in a case of its own.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ids::Digest32;

/// Most evidence hashes one report may cite.
pub const MAX_EVIDENCE: usize = 64;

/// When it was seen: a window, since monitors rarely see the exact second.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Start (ms since the Unix epoch).
    pub start_ms: u64,
    /// End (ms since the Unix epoch), not before the start.
    pub end_ms: u64,
}

/// A place in micro-degrees (WGS 84), with its precision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Place {
    /// Latitude × 10⁶.
    pub lat_e6: i32,
    /// Longitude × 10⁶.
    pub lon_e6: i32,
    /// Radius within which the true position lies, in metres.
    pub precision_m: u32,
}

/// How it was observed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sensor {
    /// A patrol on the ground.
    #[default]
    Patrol,
    /// A fixed camera.
    Camera,
    /// An unmanned aerial vehicle.
    Uav,
    /// Radar (counter-battery or other).
    Radar,
    /// Acoustic sensors.
    Acoustic,
    /// Satellite imagery.
    Satellite,
}

/// What was observed, in the categories monitoring missions report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Observed {
    /// An explosion whose kind could not be determined.
    #[default]
    UndeterminedExplosion,
    /// A projectile seen or heard in flight.
    ProjectileInFlight,
    /// Small-arms fire.
    SmallArmsFire,
    /// Heavy weapons found outside their withdrawal lines.
    HeavyWeaponsOutsideWithdrawalLines,
    /// Monitors were refused access.
    AccessRestriction,
    /// Mines or unexploded ordnance.
    MinesOrUxo,
}

/// How sure the observer is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    /// Low.
    #[default]
    Low,
    /// Moderate.
    Moderate,
    /// High.
    High,
}

/// Whether a claim (casualties, damage) was checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Corroboration {
    /// Reported to the monitors, not checked.
    #[default]
    Unconfirmed,
    /// Checked by the monitors.
    Corroborated,
}

/// A structured report of an observed ceasefire breach. It carries no attribution.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CeasefireReport {
    /// When.
    pub window: Window,
    /// Where the event took place.
    pub location: Place,
    /// Which side controls that place, as the monitors record it.
    #[serde(default)]
    pub controlled_by: Option<String>,
    /// Where the observer was.
    #[serde(default)]
    pub observer: Option<Place>,
    /// Bearing from the observer to the event, degrees from north (0–359).
    #[serde(default)]
    pub bearing_deg: Option<u16>,
    /// Distance from the observer, metres.
    #[serde(default)]
    pub distance_m: Option<u32>,
    /// How it was seen.
    pub sensor: Sensor,
    /// What was seen.
    pub observed: Observed,
    /// How many such events (at least 1).
    pub count: u32,
    /// The weapon assessed (free text, e.g. "122 mm artillery").
    #[serde(default)]
    pub weapon: Option<String>,
    /// Confidence in that assessment.
    #[serde(default)]
    pub weapon_confidence: Option<Confidence>,
    /// Direction of fire as observed (e.g. "W to E"), never who fired.
    #[serde(default)]
    pub direction_of_fire: Option<String>,
    /// Casualties reported (killed, injured) and whether corroborated.
    #[serde(default)]
    pub casualties: Option<(u32, u32, Corroboration)>,
    /// Damage reported and whether corroborated.
    #[serde(default)]
    pub damage: Option<(String, Corroboration)>,
    /// SHA-256 of each evidence file (the files travel as their own envelopes or stay
    /// off-network).
    #[serde(default)]
    pub evidence: Vec<Digest32>,
    /// What the observer saw, in words.
    pub description: String,
}

fn bad(reason: String) -> Error {
    Error::Malformed {
        what: "ceasefire report",
        reason,
    }
}

fn check_place(what: &str, p: &Place) -> Result<()> {
    if !(-90_000_000..=90_000_000).contains(&p.lat_e6)
        || !(-180_000_000..=180_000_000).contains(&p.lon_e6)
    {
        return Err(bad(format!("{what} is not on the globe")));
    }
    Ok(())
}

impl CeasefireReport {
    /// Check the report is coherent: a window in order, places on the globe, a bearing
    /// under 360°, at least one event, a bounded evidence list.
    ///
    /// # Errors
    /// `Malformed` naming the first problem.
    pub fn validate(&self) -> Result<()> {
        if self.window.end_ms < self.window.start_ms {
            return Err(bad("the observation window ends before it starts".into()));
        }
        check_place("the location", &self.location)?;
        if let Some(o) = &self.observer {
            check_place("the observer's position", o)?;
        }
        if self.bearing_deg.is_some_and(|b| b >= 360) {
            return Err(bad("a bearing is 0 to 359 degrees".into()));
        }
        if self.count == 0 {
            return Err(bad("a report counts at least one event".into()));
        }
        if self.evidence.len() > MAX_EVIDENCE {
            return Err(bad(format!("at most {MAX_EVIDENCE} evidence hashes")));
        }
        Ok(())
    }

    /// The CSV columns of [`CeasefireReport::csv_row`].
    pub const CSV_HEADER: &'static str = "start_ms,end_ms,lat,lon,precision_m,controlled_by,\
        observer_lat,observer_lon,bearing_deg,distance_m,sensor,observed,count,weapon,\
        weapon_confidence,direction_of_fire,killed,injured,casualties_corroboration,damage,\
        damage_corroboration,evidence,description";

    /// One CSV row (RFC 4180 quoting), in the order of [`Self::CSV_HEADER`].
    pub fn csv_row(&self) -> String {
        let deg = |e6: i32| format!("{:.6}", f64::from(e6) / 1e6);
        let opt = |v: Option<String>| v.unwrap_or_default();
        let (killed, injured, cas) = match &self.casualties {
            Some((k, i, c)) => (k.to_string(), i.to_string(), name(c)),
            None => (String::new(), String::new(), String::new()),
        };
        let (damage, dam) = match &self.damage {
            Some((d, c)) => (d.clone(), name(c)),
            None => (String::new(), String::new()),
        };
        let evidence: Vec<String> = self.evidence.iter().map(ToString::to_string).collect();
        let cols = [
            self.window.start_ms.to_string(),
            self.window.end_ms.to_string(),
            deg(self.location.lat_e6),
            deg(self.location.lon_e6),
            self.location.precision_m.to_string(),
            opt(self.controlled_by.clone()),
            opt(self.observer.as_ref().map(|o| deg(o.lat_e6))),
            opt(self.observer.as_ref().map(|o| deg(o.lon_e6))),
            opt(self.bearing_deg.map(|b| b.to_string())),
            opt(self.distance_m.map(|d| d.to_string())),
            name(&self.sensor),
            name(&self.observed),
            self.count.to_string(),
            opt(self.weapon.clone()),
            opt(self.weapon_confidence.map(|c| name(&c))),
            opt(self.direction_of_fire.clone()),
            killed,
            injured,
            cas,
            damage,
            dam,
            evidence.join(" "),
            self.description.clone(),
        ];
        cols.iter()
            .map(|c| csv_field(c))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Quote a CSV field when it holds a comma, quote or line break (RFC 4180).
pub fn csv_field(v: &str) -> String {
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_owned()
    }
}

/// The name a unit enum serialises to (kebab-case, as in JSON), for CSV.
fn name<T: Serialize>(v: &T) -> String {
    let mut buf = Vec::new();
    if ciborium::into_writer(v, &mut buf).is_err() {
        return String::new();
    }
    ciborium::from_reader::<String, _>(&buf[..]).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> CeasefireReport {
        CeasefireReport {
            window: Window {
                start_ms: 1000,
                end_ms: 2000,
            },
            location: Place {
                lat_e6: 48_015_000,
                lon_e6: 37_802_000,
                precision_m: 500,
            },
            controlled_by: Some("UA".into()),
            sensor: Sensor::Uav,
            observed: Observed::HeavyWeaponsOutsideWithdrawalLines,
            count: 3,
            casualties: Some((0, 2, Corroboration::Unconfirmed)),
            description: "three howitzers, \"fresh\" tracks, near the school".into(),
            ..Default::default()
        }
    }

    #[test]
    fn incoherent_reports_are_named() {
        assert!(report().validate().is_ok());
        let mut r = report();
        r.window.end_ms = 999;
        assert!(r.validate().unwrap_err().to_string().contains("window"));
        let mut r = report();
        r.location.lat_e6 = 91_000_000;
        assert!(r.validate().unwrap_err().to_string().contains("globe"));
        let mut r = report();
        r.bearing_deg = Some(360);
        assert!(r.validate().unwrap_err().to_string().contains("bearing"));
        let mut r = report();
        r.count = 0;
        assert!(r.validate().is_err());
        // an incoherent report is refused when opened (and when sealed)
        let p = crate::Payload::CeasefireReport(r);
        let bytes = p.encode().unwrap();
        assert!(crate::Payload::decode(&bytes, crate::Kind::CeasefireReport).is_err());
        assert!(p.validate().is_err());
    }

    #[test]
    fn csv_rows_quote_and_name_like_the_json() {
        let row = report().csv_row();
        let header_cols = CeasefireReport::CSV_HEADER.split(',').count();
        assert_eq!(header_cols, 23);
        assert!(row.starts_with("1000,2000,48.015000,37.802000,500,UA,,,,,uav,heavy-weapons-outside-withdrawal-lines,3,"), "{row}");
        assert!(row.contains(",0,2,unconfirmed,"), "{row}");
        assert!(
            row.ends_with("\"three howitzers, \"\"fresh\"\" tracks, near the school\""),
            "{row}"
        );
    }
}
