//! sled panics on some damaged files (a truncated segment: an index out of bounds inside
//! its page cache) instead of returning an error. Every way into a store that may be
//! damaged — opening it, recovering from it, an auditor reading a copy — runs under this
//! guard, which turns such a panic into `CorruptStore` ("the store is damaged") and keeps
//! its message off stderr; panics anywhere else still print as usual.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::Once;

use crate::error::{Error, Result};

thread_local! {
    static GUARDED: Cell<bool> = const { Cell::new(false) };
}

static QUIET_HOOK: Once = Once::new();

/// Run `f` on `dir`'s store; a panic inside it becomes `CorruptStore`.
///
/// # Errors
/// Whatever `f` returns, or `CorruptStore` if it panicked.
pub fn guarded<T>(dir: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    QUIET_HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !GUARDED.with(Cell::get) {
                previous(info);
            }
        }));
    });
    let was = GUARDED.with(|g| g.replace(true));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(was));
    result.unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        Err(Error::CorruptStore {
            path: dir.into(),
            reason: format!(
                "the store is damaged (truncated or overwritten?): sled failed reading it \
                 ({what}); restore it from a backup or a replica"
            ),
        })
    })
}
