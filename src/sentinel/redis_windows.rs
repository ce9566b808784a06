//! The sentinel's windows in Redis, so that every replica counts into the
//! same windows and exactly one replica claims a trip. Each window is one
//! key updated by a Lua script in one round trip (keys carry their subject
//! in braces, so on a cluster a script touches one hash slot).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;

use super::breach::Breach;
use super::windows::{bucket_of, Windows, BREACHES_KEPT, BUCKETS};
use crate::shared::{Redis, Unavailable};

const BREACH_LIST: &str = "esq:breaches";
/// Fingerprints sent per script call.
const STATEMENTS_PER_CALL: usize = 1000;

pub struct RedisWindows {
    redis: Arc<Redis>,
    uses: Script,
    statements: Script,
    streak: Script,
}

impl RedisWindows {
    pub fn new(redis: Arc<Redis>) -> RedisWindows {
        RedisWindows {
            redis,
            // KEYS[1] a hash of bucket -> count; ARGV bucket, n, ttl ms, buckets.
            uses: Script::new(
                r"
local bucket = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
if n > 0 then redis.call('HINCRBY', KEYS[1], ARGV[1], n) end
local all = redis.call('HGETALL', KEYS[1])
local total = 0
for i = 1, #all, 2 do
  if tonumber(all[i]) <= bucket - tonumber(ARGV[4]) then
    redis.call('HDEL', KEYS[1], all[i])
  else
    total = total + tonumber(all[i + 1])
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return total
",
            ),
            // KEYS[1] a sorted set of fingerprint -> last seen; ARGV now, window, fingerprints….
            statements: Script::new(
                r"
local now = tonumber(ARGV[1])
for i = 3, #ARGV do redis.call('ZADD', KEYS[1], now, ARGV[i]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return redis.call('ZCARD', KEYS[1])
",
            ),
            // KEYS[1] a counter; ARGV restart (0/1), denials, ttl ms.
            streak: Script::new(
                r"
if ARGV[1] == '1' then redis.call('DEL', KEYS[1]) end
local n = tonumber(ARGV[2])
if n > 0 then
  local total = redis.call('INCRBY', KEYS[1], n)
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return total
end
local v = redis.call('GET', KEYS[1])
if v then return tonumber(v) end
return 0
",
            ),
        }
    }
}

fn millis(duration: Duration) -> u64 {
    duration.as_millis().max(1) as u64
}

#[async_trait]
impl Windows for RedisWindows {
    async fn add_uses(
        &self,
        key: &str,
        n: u64,
        now_ms: i64,
        window: Duration,
    ) -> Result<u64, Unavailable> {
        let (bucket, size) = bucket_of(now_ms, window);
        let mut invocation = self.uses.prepare_invoke();
        invocation
            .key(key)
            .arg(bucket)
            .arg(n)
            .arg(millis(window) + size as u64)
            .arg(BUCKETS);
        self.redis.script(&invocation).await
    }

    async fn add_statements(
        &self,
        key: &str,
        fingerprints: &[u64],
        now_ms: i64,
        window: Duration,
    ) -> Result<u64, Unavailable> {
        let mut count = 0;
        for chunk in fingerprints.chunks(STATEMENTS_PER_CALL) {
            let mut invocation = self.statements.prepare_invoke();
            invocation.key(key).arg(now_ms).arg(millis(window));
            for fingerprint in chunk {
                invocation.arg(format!("{fingerprint:016x}"));
            }
            count = self.redis.script(&invocation).await?;
        }
        Ok(count)
    }

    async fn streak(
        &self,
        key: &str,
        restart: bool,
        denials: u64,
        window: Duration,
    ) -> Result<u64, Unavailable> {
        let mut invocation = self.streak.prepare_invoke();
        invocation
            .key(key)
            .arg(if restart { "1" } else { "0" })
            .arg(denials)
            .arg(millis(window));
        self.redis.script(&invocation).await
    }

    async fn claim_trip(&self, key: &str, hold: Duration) -> Result<bool, Unavailable> {
        let set: Option<String> = self
            .redis
            .query(
                redis::cmd("SET")
                    .arg(key)
                    .arg(chrono::Utc::now().timestamp_millis())
                    .arg("NX")
                    .arg("PX")
                    .arg(millis(hold)),
            )
            .await?;
        Ok(set.is_some())
    }

    async fn push_breach(&self, breach: &Breach) -> Result<(), Unavailable> {
        let json = serde_json::to_string(breach)
            .map_err(|err| Unavailable(format!("breach does not encode: {err}")))?;
        let mut pipe = redis::pipe();
        pipe.cmd("LPUSH")
            .arg(BREACH_LIST)
            .arg(json)
            .ignore()
            .cmd("LTRIM")
            .arg(BREACH_LIST)
            .arg(0)
            .arg(BREACHES_KEPT as i64 - 1)
            .ignore();
        self.redis.pipeline(&pipe).await
    }

    async fn recent_breaches(&self, limit: usize) -> Result<Vec<Breach>, Unavailable> {
        let stored: Vec<String> = self
            .redis
            .query(
                redis::cmd("LRANGE")
                    .arg(BREACH_LIST)
                    .arg(0)
                    .arg(limit.max(1) as i64 - 1),
            )
            .await?;
        // A record this version cannot read is skipped, not fatal.
        Ok(stored
            .iter()
            .filter_map(|json| serde_json::from_str(json).ok())
            .collect())
    }
}
