//! The `ewx` binary run as people run it, against the demo network written to a temp dir
//! and a real broker on loopback.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

pub const EWX: &str = env!("CARGO_BIN_EXE_ewx");

/// `ewx args` in `dir`, with no EWX_* connection variables from the environment.
pub fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(EWX)
        .current_dir(dir)
        .args(args)
        .env_remove("EWX_BROKER")
        .env_remove("EWX_KEY")
        .env_remove("EWX_ROSTER")
        .env_remove("EWX_PROFILE")
        .output()
        .unwrap()
}

/// `ewx args` as `node` of the demo network in `dir`/net, against the broker at `addr`.
pub fn ewx(dir: &Path, addr: &str, node: &str, args: &[&str]) -> Output {
    let key = format!("net/keys/{node}.key");
    let conn = [
        "--broker",
        addr,
        "--roster",
        "net/roster.cbor",
        "--key",
        &key,
    ];
    let all: Vec<&str> = conn.iter().copied().chain(args.iter().copied()).collect();
    run(dir, &all)
}

pub fn ok(dir: &Path, addr: &str, node: &str, args: &[&str]) -> String {
    let out = ewx(dir, addr, node, args);
    assert!(
        out.status.success(),
        "{node}: ewx {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn fails(dir: &Path, addr: &str, node: &str, args: &[&str]) -> String {
    let out = ewx(dir, addr, node, args);
    assert!(!out.status.success(), "{node}: ewx {args:?} should fail");
    String::from_utf8(out.stderr).unwrap()
}

pub fn field(json: &str, key: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    v[key]
        .as_str()
        .map_or_else(|| v[key].to_string(), str::to_string)
}

/// The demo network written into `dir`/net, and a real broker for it on loopback.
pub fn demo_broker(dir: &Path) -> (tokio::runtime::Runtime, ewx_broker::Broker) {
    let status = Command::new(EWX)
        .current_dir(dir)
        .args(["demo", "--write-network", "net"])
        .output()
        .unwrap();
    assert!(status.status.success());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let config = ewx_broker::Config::from_toml(
        "listen = '127.0.0.1:0'\ndata_dir = 'data'\nkey = 'net/keys/BROKER.key'\nroster = 'net/roster.cbor'\n",
        dir,
    )
    .unwrap();
    let broker = rt.block_on(ewx_broker::Broker::start(config)).unwrap();
    (rt, broker)
}
