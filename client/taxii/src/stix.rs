//! STIX as the gateway needs it: the few fields TAXII filters on (id, type, spec_version,
//! the version — `modified`, else `created`), taken from each object of a bundle or an
//! envelope without touching the rest; and TAXII's timestamps.

use serde::Deserialize;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The fields of one object TAXII filters and lists on, with the object as received.
#[derive(Debug, Clone)]
pub struct StixObject {
    /// `type--uuid`.
    pub id: String,
    /// Its type.
    pub kind: String,
    /// `2.1` unless it says otherwise.
    pub spec_version: String,
    /// `modified`, else `created` (`None`: an object without versions).
    pub version: Option<String>,
    /// The object's JSON text as it came.
    pub json: Box<RawValue>,
}

#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "type", borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    spec_version: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    modified: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    created: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Objects {
    #[serde(default)]
    objects: Vec<Box<RawValue>>,
}

/// Why an object cannot be taken.
pub type Refusal = (Option<String>, String);

/// The objects of a bundle or envelope: those that can be taken, and (id if known, why)
/// for those that cannot.
///
/// # Errors
/// A message if the text is not a JSON object with an `objects` list.
pub fn objects(text: &str) -> Result<(Vec<StixObject>, Vec<Refusal>), String> {
    let list: Objects = serde_json::from_str(text)
        .map_err(|e| format!("not a STIX bundle or TAXII envelope: {e}"))?;
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    for raw in list.objects {
        match object(raw) {
            Ok(o) => good.push(o),
            Err(r) => bad.push(r),
        }
    }
    Ok((good, bad))
}

fn object(json: Box<RawValue>) -> Result<StixObject, Refusal> {
    let f: Fields<'_> =
        serde_json::from_str(json.get()).map_err(|e| (None, format!("not a STIX object: {e}")))?;
    let id =
        f.id.ok_or((None, "an object without an id".to_string()))?
            .into_owned();
    let kind = match f.kind {
        Some(k) if id.starts_with(&format!("{k}--")) => k.into_owned(),
        Some(k) => return Err((Some(id), format!("id does not start with its type {k:?}"))),
        None => return Err((Some(id), "an object without a type".into())),
    };
    let version = f.modified.or(f.created).map(std::borrow::Cow::into_owned);
    if let Some(v) = &version
        && micros(v).is_none()
    {
        return Err((Some(id), format!("{v:?} is not an RFC 3339 timestamp")));
    }
    Ok(StixObject {
        spec_version: f
            .spec_version
            .map_or_else(|| "2.1".to_string(), std::borrow::Cow::into_owned),
        id,
        kind,
        version,
        json,
    })
}

/// A STIX bundle of these objects, as JSON text.
pub fn bundle(objects: &[StixObject]) -> String {
    let mut id = rand::random::<[u8; 16]>();
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    let list: Vec<&RawValue> = objects.iter().map(|o| o.json.as_ref()).collect();
    serde_json::json!({
        "type": "bundle",
        "id": format!("bundle--{}", crate::config::format_uuid(&id)),
        "objects": list,
    })
    .to_string()
}

/// An RFC 3339 timestamp as microseconds since the Unix epoch (`None`: not one, or
/// before 1970).
pub fn micros(text: &str) -> Option<u64> {
    let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1000).ok()
}

/// Microseconds since the Unix epoch as TAXII writes timestamps (`…T…​.ffffffZ`).
pub fn timestamp(us: u64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn fields_of_objects_and_refusals() {
        let text = r#"{"type":"bundle","id":"bundle--1","objects":[
            {"type":"indicator","id":"indicator--a","spec_version":"2.1","created":"2024-01-01T00:00:00Z","modified":"2024-02-01T00:00:00.5Z","pattern":"[x]"},
            {"type":"ipv4-addr","id":"ipv4-addr--b","value":"10.0.0.1"},
            {"type":"malware","id":"indicator--c"},
            {"id":"x--d"},
            {"type":"note","id":"note--e","modified":"yesterday"}]}"#;
        let (good, bad) = objects(text).unwrap();
        assert_eq!(good.len(), 2);
        assert_eq!(good[0].version.as_deref(), Some("2024-02-01T00:00:00.5Z"));
        assert!(good[0].json.get().contains("\"pattern\":\"[x]\""));
        assert_eq!(
            (good[1].kind.as_str(), good[1].version.as_deref()),
            ("ipv4-addr", None)
        );
        assert_eq!(bad.len(), 3);
        assert!(objects("[1,2]").is_err());
    }

    #[test]
    fn timestamps_round_trip_in_microseconds() {
        let us = micros("2024-02-01T00:00:00.5Z").unwrap();
        assert_eq!(timestamp(us), "2024-02-01T00:00:00.500000Z");
        assert_eq!(micros(&timestamp(us + 1)), Some(us + 1));
        assert_eq!(micros("2024-02-01"), None);
    }
}
