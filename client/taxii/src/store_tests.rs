//! The store's paging, version and redelivery rules, on a real sled store in a temp dir.
#![allow(clippy::unwrap_used)]
use super::*;
use crate::stix::objects;

fn all(limit: usize) -> Filter {
    Filter {
        added_after: None,
        next: None,
        limit,
        ids: None,
        types: None,
        versions: Versions::All,
        spec_versions: None,
    }
}

fn indicator(n: usize, modified: &str) -> String {
    format!(
        r#"{{"type":"indicator","id":"indicator--{n:08}","spec_version":"2.1","created":"2024-01-01T00:00:00Z","modified":"{modified}"}}"#
    )
}

#[test]
fn a_batch_at_one_instant_pages_without_loss_or_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &["c".into()]).unwrap();
    let list: Vec<String> = (0..250)
        .map(|n| indicator(n, "2024-01-01T00:00:00Z"))
        .collect();
    let (objs, _) = objects(&format!("{{\"objects\":[{}]}}", list.join(","))).unwrap();
    // all at the same wall-clock instant
    assert_eq!(store.add("c", Some(b"m1"), &objs, 1_000).unwrap(), 250);
    // the same message again: nothing
    assert_eq!(store.add("c", Some(b"m1"), &objs, 1_000).unwrap(), 0);
    let mut seen = Vec::new();
    let mut f = all(100);
    loop {
        let page = store.page("c", &f).unwrap();
        seen.extend(page.records.iter().map(|(d, _)| *d));
        if !page.more {
            break;
        }
        f.next = page.records.last().map(|(d, _)| *d);
    }
    assert_eq!(seen.len(), 250);
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "dates repeat or go back"
    );
    // added_after alone pages the same way (every date is distinct)
    let mut f = all(100);
    f.added_after = Some(seen[99]);
    assert_eq!(store.page("c", &f).unwrap().records[0].0, seen[100]);
}

#[test]
fn a_record_with_escaped_strings_is_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &["c".into()]).unwrap();
    let text = r#"{"objects":[{"type":"note","id":"note--a\u0062c","spec_version":"2.1","modified":"2024-01-01T00:00:00Z"}]}"#;
    let (objs, _) = objects(text).unwrap();
    store.add("c", None, &objs, 1).unwrap();
    let page = store.page("c", &all(10)).unwrap();
    let r: Record<'_> = serde_json::from_slice(&page.records[0].1).unwrap();
    assert_eq!(r.id, "note--abc");
}

#[test]
fn versions_first_last_and_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &["c".into()]).unwrap();
    for (m, modified) in [("a", "2024-03-01T00:00:00Z"), ("b", "2024-01-01T00:00:00Z")] {
        let (objs, _) = objects(&format!(
            "{{\"objects\":[{},{}]}}",
            indicator(1, modified),
            indicator(2, modified)
        ))
        .unwrap();
        store.add("c", Some(m.as_bytes()), &objs, 5).unwrap();
    }
    let mut f = all(10);
    assert_eq!(store.page("c", &f).unwrap().records.len(), 4);
    f.versions = Versions::Last;
    f.ids = Some(vec!["indicator--00000001".into()]);
    let page = store.page("c", &f).unwrap();
    let r: Record<'_> = serde_json::from_slice(&page.records[0].1).unwrap();
    assert_eq!(
        (page.records.len(), r.version.as_deref()),
        (1, Some("2024-03-01T00:00:00Z"))
    );
    f.versions = Versions::First;
    let page = store.page("c", &f).unwrap();
    let r: Record<'_> = serde_json::from_slice(&page.records[0].1).unwrap();
    assert_eq!(r.version.as_deref(), Some("2024-01-01T00:00:00Z"));
    // first and last at once: both versions of a two-version object
    f.versions = Versions::Any(vec![Versions::First, Versions::Last]);
    assert_eq!(store.page("c", &f).unwrap().records.len(), 2);
    // an id listed twice is one object
    f.versions = Versions::All;
    f.ids = Some(vec![
        "indicator--00000001".into(),
        "indicator--00000001".into(),
    ]);
    assert_eq!(store.page("c", &f).unwrap().records.len(), 2);
    assert!(store.has("c", "indicator--00000002").unwrap());
    assert!(!store.has("c", "indicator--00000003").unwrap());
}
