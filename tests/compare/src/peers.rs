//! The peers: NATS JetStream (async-nats) and Redis streams (redis-rs).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt, TryStreamExt};
use redis::Value;
use redis::aio::MultiplexedConnection;

use ewx_cli::bench::{
    BoxFuture as PeerFuture, Delivered, Deliveries, Peer, PeerError, Publish, PublishFn, Publisher,
};

/// The payload: the send time (µs since the run's epoch, little endian), then padding.
pub fn payload(size: usize, sent_us: u64) -> Bytes {
    let mut v = vec![b'x'; size.max(8)];
    v[..8].copy_from_slice(&sent_us.to_le_bytes());
    Bytes::from(v)
}

/// The send time of a payload made by [`payload`].
pub fn stamp(payload: &[u8]) -> Result<u64> {
    match payload.get(..8) {
        Some(b) => Ok(u64::from_le_bytes(b.try_into()?)),
        None => bail!("a {}-byte payload has no timestamp", payload.len()),
    }
}

/// A peer's deliveries as a stream of send times.
struct Stamps(BoxStream<'static, Result<u64>>);

impl Deliveries for Stamps {
    fn next(&mut self) -> PeerFuture<'_, Option<std::result::Result<Delivered, PeerError>>> {
        async move {
            let r = self.0.next().await?;
            Some(
                r.map(|t| Delivered {
                    sent_us: Some(t),
                    flash: false,
                })
                .map_err(Into::into),
            )
        }
        .boxed()
    }
}

fn publisher(publish: PublishFn) -> Publisher {
    Publisher {
        publish,
        limit: None,
        flash_percent: 0,
    }
}

/// JetStream: one file-backed stream, publishers await each PubAck, every subscriber has
/// its own ordered push consumer from the first message published after it subscribed.
#[derive(Debug)]
pub struct Nats {
    url: String,
    size: usize,
}

const NATS_STREAM: &str = "BENCH";
const NATS_SUBJECT: &str = "bench";

impl Nats {
    /// Connect and (re)create the stream, empty.
    pub async fn new(url: &str, size: usize) -> Result<Self> {
        let js = jetstream::new(nats_connect(url).await?);
        let _ = js.delete_stream(NATS_STREAM).await;
        js.create_stream(stream::Config {
            name: NATS_STREAM.into(),
            subjects: vec![NATS_SUBJECT.into()],
            storage: stream::StorageType::File,
            num_replicas: 1,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow!("cannot create the JetStream stream: {e}"))?;
        Ok(Self {
            url: url.into(),
            size,
        })
    }
}

async fn nats_connect(url: &str) -> Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .with_context(|| format!("cannot connect to NATS at {url}"))
}

impl Peer for Nats {
    fn publisher(
        &self,
        _index: usize,
    ) -> PeerFuture<'_, std::result::Result<Publisher, PeerError>> {
        let size = self.size;
        async move {
            let js = jetstream::new(nats_connect(&self.url).await?);
            let publish: PublishFn = Arc::new(move |p: Publish| {
                let payload = payload(size, p.sent_us);
                let js = js.clone();
                async move {
                    // the first await sends, the second waits for the PubAck: the message
                    // is stored (and, with sync_interval: always, fsynced)
                    js.publish(NATS_SUBJECT, payload)
                        .await
                        .map_err(|e| anyhow!("publish: {e}"))?
                        .await
                        .map_err(|e| anyhow!("ack: {e}"))?;
                    Ok(())
                }
                .boxed()
            });
            Ok(publisher(publish))
        }
        .boxed()
    }

    fn subscriber(
        &self,
        _index: usize,
    ) -> PeerFuture<'_, std::result::Result<Box<dyn Deliveries>, PeerError>> {
        async move {
            let client = nats_connect(&self.url).await?;
            let js = jetstream::new(client.clone());
            let stream = js
                .get_stream(NATS_STREAM)
                .await
                .map_err(|e| anyhow!("get stream: {e}"))?;
            let consumer = stream
                .create_consumer(consumer::push::OrderedConfig {
                    deliver_subject: client.new_inbox(),
                    filter_subject: NATS_SUBJECT.into(),
                    deliver_policy: consumer::DeliverPolicy::New,
                    ..Default::default()
                })
                .await
                .map_err(|e| anyhow!("create consumer: {e}"))?;
            let messages = consumer
                .messages()
                .await
                .map_err(|e| anyhow!("consume: {e}"))?;
            // keep the client alive as long as the stream
            let deliveries: BoxStream<'static, Result<u64>> = messages
                .map_err(|e| anyhow!("deliver: {e}"))
                .and_then(move |m| {
                    let _keep = &client;
                    futures::future::ready(stamp(&m.message.payload))
                })
                .boxed();
            let d: Box<dyn Deliveries> = Box::new(Stamps(deliveries));
            Ok(d)
        }
        .boxed()
    }
}

/// Redis streams: one stream key; publishers `XADD` on their own multiplexed connection
/// (the lanes' commands are pipelined on it), each subscriber `XREAD BLOCK`s on its own
/// connection from the last id it saw.
#[derive(Debug)]
pub struct Redis {
    client: redis::Client,
    size: usize,
}

const REDIS_KEY: &str = "bench";
/// Entries per `XREAD`.
const REDIS_BATCH: usize = 1000;
/// `XREAD BLOCK` timeout, ms.
const REDIS_BLOCK_MS: usize = 200;

impl Redis {
    /// Connect and delete the stream key, so every subscriber starts from id 0-0.
    pub async fn new(url: &str, size: usize) -> Result<Self> {
        let client = redis::Client::open(url).with_context(|| format!("bad Redis URL {url}"))?;
        let me = Self { client, size };
        let mut c = me.connect().await?;
        let _: Value = redis::cmd("DEL").arg(REDIS_KEY).query_async(&mut c).await?;
        Ok(me)
    }

    async fn connect(&self) -> Result<MultiplexedConnection> {
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(60)));
        self.client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
            .context("cannot connect to Redis")
    }
}

impl Peer for Redis {
    fn publisher(
        &self,
        _index: usize,
    ) -> PeerFuture<'_, std::result::Result<Publisher, PeerError>> {
        let size = self.size;
        async move {
            let conn = self.connect().await?;
            let publish: PublishFn = Arc::new(move |p: Publish| {
                let payload = payload(size, p.sent_us);
                let mut conn = conn.clone();
                async move {
                    // with appendfsync always, Redis replies once the AOF is fsynced
                    let _: Value = redis::cmd("XADD")
                        .arg(REDIS_KEY)
                        .arg("*")
                        .arg("d")
                        .arg(payload.as_ref())
                        .query_async(&mut conn)
                        .await?;
                    Ok(())
                }
                .boxed()
            });
            Ok(publisher(publish))
        }
        .boxed()
    }

    fn subscriber(
        &self,
        _index: usize,
    ) -> PeerFuture<'_, std::result::Result<Box<dyn Deliveries>, PeerError>> {
        async move {
            let conn = self.connect().await?;
            // the key was deleted before any subscriber: from 0-0 is "from now on"
            let state = (conn, String::from("0-0"), VecDeque::<u64>::new());
            let deliveries: BoxStream<'static, Result<u64>> =
                futures::stream::unfold(state, |(mut conn, mut last, mut buf)| async move {
                    loop {
                        if let Some(t) = buf.pop_front() {
                            return Some((Ok(t), (conn, last, buf)));
                        }
                        let reply: Result<Value> = redis::cmd("XREAD")
                            .arg("COUNT")
                            .arg(REDIS_BATCH)
                            .arg("BLOCK")
                            .arg(REDIS_BLOCK_MS)
                            .arg("STREAMS")
                            .arg(REDIS_KEY)
                            .arg(&last)
                            .query_async(&mut conn)
                            .await
                            .map_err(Into::into);
                        if let Err(e) = reply.and_then(|r| entries(r, &mut last, &mut buf)) {
                            return Some((Err(e), (conn, last, buf)));
                        }
                    }
                })
                .boxed();
            let d: Box<dyn Deliveries> = Box::new(Stamps(deliveries));
            Ok(d)
        }
        .boxed()
    }
}

/// Unpack an `XREAD` reply (RESP2 arrays or RESP3 map; nil on timeout): push each entry's
/// timestamp to `buf` and move `last` to the newest id.
fn entries(reply: Value, last: &mut String, buf: &mut VecDeque<u64>) -> Result<()> {
    let per_key = match reply {
        Value::Nil => return Ok(()),
        Value::Array(keys) => keys
            .into_iter()
            .map(|k| match k {
                Value::Array(mut kv) if kv.len() == 2 => Ok(kv.swap_remove(1)),
                other => bail!("unexpected XREAD key entry {other:?}"),
            })
            .collect::<Result<Vec<_>>>()?,
        Value::Map(kv) => kv.into_iter().map(|(_, v)| v).collect(),
        other => bail!("unexpected XREAD reply {other:?}"),
    };
    for list in per_key {
        let Value::Array(list) = list else {
            bail!("unexpected XREAD entry list {list:?}");
        };
        for entry in list {
            let Value::Array(mut e) = entry else {
                bail!("unexpected XREAD entry {entry:?}");
            };
            let (Some(Value::Array(fields)), Some(id)) = (e.pop(), e.pop()) else {
                bail!("unexpected XREAD entry shape");
            };
            *last = match id {
                Value::BulkString(b) => String::from_utf8(b)?,
                Value::SimpleString(s) => s,
                other => bail!("unexpected entry id {other:?}"),
            };
            match fields.get(1) {
                Some(Value::BulkString(p)) => buf.push_back(stamp(p)?),
                other => bail!("unexpected entry fields {other:?}"),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    #[test]
    fn xread_replies_unpack() -> Result<()> {
        let entry = |id: &str, t: u64| {
            let mut p = t.to_le_bytes().to_vec();
            p.extend_from_slice(b"pad");
            Value::Array(vec![
                bulk(id.as_bytes()),
                Value::Array(vec![bulk(b"d"), bulk(&p)]),
            ])
        };
        let list = Value::Array(vec![entry("1-0", 7), entry("1-1", 9)]);
        let (mut last, mut buf) = (String::from("0-0"), VecDeque::new());
        entries(Value::Nil, &mut last, &mut buf)?;
        assert_eq!(last, "0-0");
        entries(
            Value::Array(vec![Value::Array(vec![bulk(b"bench"), list.clone()])]),
            &mut last,
            &mut buf,
        )?;
        assert_eq!((last.as_str(), Vec::from(buf.clone())), ("1-1", vec![7, 9]));
        entries(
            Value::Map(vec![(bulk(b"bench"), list)]),
            &mut last,
            &mut buf,
        )?;
        assert_eq!(buf.len(), 4);
        assert!(entries(Value::Int(1), &mut last, &mut buf).is_err());
        Ok(())
    }
}
