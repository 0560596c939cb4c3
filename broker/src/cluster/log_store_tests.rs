use super::*;
use openraft::{CommittedLeaderId, EntryPayload};

fn entry(term: u64, index: u64) -> Entry<Types> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: EntryPayload::Blank,
    }
}

fn indexes(entries: &[Entry<Types>]) -> Vec<u64> {
    entries.iter().map(|e| e.log_id.index).collect()
}

async fn all(log: &mut LogStore) -> Vec<u64> {
    indexes(&log.try_get_log_entries(..).await.unwrap())
}

fn append(log: &LogStore, range: std::ops::Range<u64>, term: u64) {
    log.write(range.map(|i| entry(term, i)).collect()).unwrap();
    log.shared.segments.sync().unwrap();
}

#[tokio::test]
async fn entries_survive_a_restart_and_read_back_by_range() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = LogStore::open(dir.path()).unwrap();
        append(&log, 1..6, 1);
        append(&log, 6..9, 2);
    }
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(all(&mut log).await, (1..9).collect::<Vec<_>>());
    let some = log.try_get_log_entries(3..5).await.unwrap();
    assert_eq!(indexes(&some), vec![3, 4]);
    assert_eq!(some[0].log_id.leader_id.term, 1);
    let state = log.get_log_state().await.unwrap();
    assert_eq!(
        state.last_log_id.map(|l| (l.leader_id.term, l.index)),
        Some((2, 8))
    );
    assert_eq!(state.last_purged_log_id, None);
}

#[tokio::test]
async fn a_torn_tail_is_cut_off_and_appends_go_on_after_the_last_whole_entry() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = LogStore::open(dir.path()).unwrap();
        append(&log, 1..4, 1);
    }
    // a crash in the middle of writing entry 4: its frame and half its bytes
    let seg = dir.path().join("segments").join(format!("{:020}.seg", 1));
    let whole = std::fs::read(&seg).unwrap();
    let next = frame(&entry(1, 4)).unwrap();
    let mut torn = whole.clone();
    torn.extend_from_slice(&next[..next.len() / 2]);
    std::fs::write(&seg, &torn).unwrap();
    {
        let mut log = LogStore::open(dir.path()).unwrap();
        assert_eq!(all(&mut log).await, vec![1, 2, 3]);
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), whole.len() as u64);
        append(&log, 4..6, 1);
    }
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(all(&mut log).await, vec![1, 2, 3, 4, 5]);
    // a flipped byte inside an entry: that entry and what follows are not trusted
    let mut bytes = std::fs::read(&seg).unwrap();
    let second = FRAME + u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
    bytes[second + FRAME + 1] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    drop(log);
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(all(&mut log).await, vec![1]);
}

#[tokio::test]
async fn truncate_and_purge_hold_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = LogStore::open(dir.path()).unwrap();
        append(&log, 1..11, 1);
        // a new leader overwrote 7.. with its own entries
        log.truncate(LogId::new(CommittedLeaderId::new(1, 1), 7))
            .await
            .unwrap();
        assert_eq!(all(&mut log).await, (1..7).collect::<Vec<_>>());
        append(&log, 7..9, 2);
        log.purge(LogId::new(CommittedLeaderId::new(1, 1), 3))
            .await
            .unwrap();
        assert_eq!(all(&mut log).await, vec![4, 5, 6, 7, 8]);
    }
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(all(&mut log).await, vec![4, 5, 6, 7, 8]);
    let terms: Vec<u64> = log
        .try_get_log_entries(..)
        .await
        .unwrap()
        .iter()
        .map(|e| e.log_id.leader_id.term)
        .collect();
    assert_eq!(terms, vec![1, 1, 1, 2, 2]);
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(3));
    // a snapshot past the whole log: everything purged, the next append continues
    log.purge(LogId::new(CommittedLeaderId::new(2, 1), 20))
        .await
        .unwrap();
    assert!(all(&mut log).await.is_empty());
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id.map(|l| l.index), Some(20));
    append(&log, 21..23, 3);
    drop(log);
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(all(&mut log).await, vec![21, 22]);
}

#[tokio::test]
async fn entries_kept_in_sled_by_an_earlier_version_are_moved_to_segments() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        let old = db.open_tree("entries").unwrap();
        for i in 1..5u64 {
            old.insert(i.to_be_bytes(), encode(&entry(1, i)).unwrap())
                .unwrap();
        }
        db.flush().unwrap();
    }
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(all(&mut log).await, vec![1, 2, 3, 4]);
    drop(log);
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(all(&mut log).await, vec![1, 2, 3, 4]);
}
