//! The ledger replicas share: Redis, through the same [`Redis`] handle as
//! the ticket store. An account's spends are a sorted set (score: the time
//! in milliseconds; member: a unique id and the amount), its answers plain
//! keys with their period as expiry. One Lua script does the whole settle
//! (recall, or check-charge-store, or refuse), so Redis runs it atomically:
//! replicas racing on one budget are serialised by Redis itself and cannot
//! overspend together. The keys carry the account's tag in braces
//! (`esq:{dp:…}:spends`, `esq:{dp:…}:answer:…`), so on a Redis Cluster the
//! script touches one hash slot. Spends older than the longest period are
//! pruned as the script runs; with Redis persistence the budget survives
//! an esq restart. The arithmetic is [`super::ledger::standing`]'s and
//! [`super::ledger::fits_at`]'s, in Lua.

use std::sync::Arc;

use async_trait::async_trait;
use redis::Script;

use super::ledger::{Account, Ledger, LedgerUnavailable, Settlement, Standing, Window, KEEP_MS};
use crate::shared::Redis;

pub struct RedisLedger {
    redis: Arc<Redis>,
    settle: Script,
    standing: Script,
}

/// The spends of the window, oldest first: `spent`, then each spend's time
/// and amount (ARGV[1] period, ARGV[2] now, ARGV[3] keep).
const WINDOW: &str = r"
local function window(key, period, now, keep)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - keep)
  local raw = redis.call('ZRANGEBYSCORE', key, '(' .. (now - period), '+inf', 'WITHSCORES')
  local spends, spent = {}, 0
  for i = 1, #raw, 2 do
    local amount = tonumber(string.match(raw[i], ':(%d+)$'))
    spent = spent + amount
    spends[#spends + 1] = {tonumber(raw[i + 1]), amount}
  end
  return spent, spends
end
";

/// KEYS[1] spends, KEYS[2] the memo's answer. ARGV[1] period, ARGV[2] now,
/// ARGV[3] keep, ARGV[4] charge, ARGV[5] budget, ARGV[6] answer, ARGV[7] a
/// unique spend id. Returns {0 charged | 1 recalled | 2 refused, answer or
/// "", spent, renews_at}.
const SETTLE: &str = r"
local period, now, keep = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local charge, budget = tonumber(ARGV[4]), tonumber(ARGV[5])
local spent, spends = window(KEYS[1], period, now, keep)
local oldest = now
if #spends > 0 then oldest = spends[1][1] + period end
local stored = redis.call('GET', KEYS[2])
if stored then
  return {1, stored, spent, oldest}
end
if spent + charge > budget then
  local left, renews = spent, 4611686018427387903
  for i = 1, #spends do
    left = left - spends[i][2]
    if left + charge <= budget then
      renews = spends[i][1] + period
      break
    end
  end
  return {2, '', spent, renews}
end
redis.call('ZADD', KEYS[1], now, ARGV[7] .. ':' .. charge)
redis.call('PEXPIRE', KEYS[1], keep)
redis.call('SET', KEYS[2], ARGV[6], 'PX', period)
if #spends == 0 then oldest = now + period end
return {0, '', spent + charge, oldest}
";

/// KEYS[1] spends. ARGV[1] period, ARGV[2] now, ARGV[3] keep. Returns
/// {spent, renews_at}.
const STANDING: &str = r"
local period, now = tonumber(ARGV[1]), tonumber(ARGV[2])
local spent, spends = window(KEYS[1], period, now, tonumber(ARGV[3]))
if #spends > 0 then return {spent, spends[1][1] + period} end
return {spent, now}
";

impl RedisLedger {
    pub fn new(redis: Arc<Redis>) -> RedisLedger {
        RedisLedger {
            redis,
            settle: Script::new(&format!("{WINDOW}{SETTLE}")),
            standing: Script::new(&format!("{WINDOW}{STANDING}")),
        }
    }

    fn spends_key(account: &Account) -> String {
        format!("esq:{{dp:{}}}:spends", account.tag())
    }

    fn answer_key(account: &Account, memo: &str) -> String {
        format!("esq:{{dp:{}}}:answer:{memo}", account.tag())
    }
}

fn unavailable(err: crate::shared::Unavailable) -> LedgerUnavailable {
    LedgerUnavailable(err.0)
}

fn amount(value: i64) -> Result<u64, LedgerUnavailable> {
    u64::try_from(value).map_err(|_| LedgerUnavailable("a negative amount in Redis".into()))
}

/// A spend's unique member id (two spends of the same amount at the same
/// millisecond must both count).
fn spend_id() -> String {
    let mut random = [0u8; 8];
    let _ = getrandom::fill(&mut random);
    hex::encode(random)
}

#[async_trait]
impl Ledger for RedisLedger {
    async fn settle(
        &self,
        account: &Account,
        memo: &str,
        charge: u64,
        window: Window,
        now_ms: i64,
        answer: &[u8],
    ) -> Result<Settlement, LedgerUnavailable> {
        let mut invocation = self.settle.prepare_invoke();
        invocation
            .key(Self::spends_key(account))
            .key(Self::answer_key(account, memo))
            .arg(window.period_ms)
            .arg(now_ms)
            .arg(KEEP_MS)
            .arg(charge)
            .arg(window.budget)
            .arg(answer)
            .arg(spend_id());
        let (outcome, stored, spent, renews_at): (i64, Vec<u8>, i64, i64) =
            self.redis.script(&invocation).await.map_err(unavailable)?;
        let spent = amount(spent)?;
        match outcome {
            0 => Ok(Settlement::Charged { spent, renews_at }),
            1 => Ok(Settlement::Recalled {
                answer: stored,
                spent,
                renews_at,
            }),
            2 => Ok(Settlement::Refused { spent, renews_at }),
            other => Err(LedgerUnavailable(format!(
                "the settle script answered {other}"
            ))),
        }
    }

    async fn standing(
        &self,
        account: &Account,
        window: Window,
        now_ms: i64,
    ) -> Result<Standing, LedgerUnavailable> {
        let mut invocation = self.standing.prepare_invoke();
        invocation
            .key(Self::spends_key(account))
            .arg(window.period_ms)
            .arg(now_ms)
            .arg(KEEP_MS);
        let (spent, renews_at): (i64, i64) =
            self.redis.script(&invocation).await.map_err(unavailable)?;
        Ok(Standing {
            spent: amount(spent)?,
            renews_at,
        })
    }

    async fn would_answer(
        &self,
        account: &Account,
        memo: &str,
        charge: u64,
        window: Window,
        now_ms: i64,
    ) -> Result<bool, LedgerUnavailable> {
        let stored: bool = self
            .redis
            .query(redis::cmd("EXISTS").arg(Self::answer_key(account, memo)))
            .await
            .map_err(unavailable)?;
        if stored {
            return Ok(true);
        }
        let spent = self.standing(account, window, now_ms).await?.spent;
        Ok(spent.saturating_add(charge) <= window.budget)
    }
}
