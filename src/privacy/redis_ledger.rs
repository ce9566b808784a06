//! The ledger replicas share: Redis, through the same [`Redis`] handle as
//! the ticket store. One Lua script does the whole settle (recall, or
//! check-charge-store, or refuse), so Redis runs it atomically: replicas
//! racing on one budget are serialised by Redis itself and cannot
//! overspend together. An account's keys carry its tag in braces
//! (`esq:{dp:…}:spent`, `esq:{dp:…}:answer:…`), so on a Redis Cluster the
//! script touches one hash slot. Every key expires an hour after its window
//! ends (PXAT), so nothing needs sweeping; with Redis persistence the
//! budget survives an esq restart.

use std::sync::Arc;

use async_trait::async_trait;
use redis::Script;

use super::ledger::{Account, Ledger, LedgerUnavailable, Settlement};
use crate::shared::Redis;

pub struct RedisLedger {
    redis: Arc<Redis>,
    settle: Script,
}

/// KEYS[1] spent counter, KEYS[2] the memo's answer.
/// ARGV[1] charge, ARGV[2] budget, ARGV[3] forget-at (ms), ARGV[4] answer.
/// Returns {0 charged | 1 recalled | 2 refused, answer or "", spent}.
const SETTLE: &str = r"
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
local stored = redis.call('GET', KEYS[2])
if stored then
  return {1, stored, spent}
end
local charge = tonumber(ARGV[1])
if spent + charge > tonumber(ARGV[2]) then
  return {2, '', spent}
end
spent = redis.call('INCRBY', KEYS[1], charge)
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
redis.call('SET', KEYS[2], ARGV[4], 'PXAT', ARGV[3])
return {0, '', spent}
";

impl RedisLedger {
    pub fn new(redis: Arc<Redis>) -> RedisLedger {
        RedisLedger {
            redis,
            settle: Script::new(SETTLE),
        }
    }

    fn spent_key(account: &Account) -> String {
        format!("esq:{{dp:{}}}:spent", account.tag())
    }

    fn answer_key(account: &Account, memo: &str) -> String {
        format!("esq:{{dp:{}}}:answer:{memo}", account.tag())
    }
}

fn unavailable(err: crate::shared::Unavailable) -> LedgerUnavailable {
    LedgerUnavailable(err.0)
}

#[async_trait]
impl Ledger for RedisLedger {
    async fn settle(
        &self,
        account: &Account,
        memo: &str,
        charge: u64,
        budget: u64,
        answer: &[u8],
    ) -> Result<Settlement, LedgerUnavailable> {
        let mut invocation = self.settle.prepare_invoke();
        invocation
            .key(Self::spent_key(account))
            .key(Self::answer_key(account, memo))
            .arg(charge)
            .arg(budget)
            .arg(account.forget_at_ms())
            .arg(answer);
        let (outcome, stored, spent): (i64, Vec<u8>, i64) =
            self.redis.script(&invocation).await.map_err(unavailable)?;
        let spent = u64::try_from(spent)
            .map_err(|_| LedgerUnavailable("a negative spent amount in Redis".into()))?;
        match outcome {
            0 => Ok(Settlement::Charged { spent }),
            1 => Ok(Settlement::Recalled {
                answer: stored,
                spent,
            }),
            2 => Ok(Settlement::Refused { spent }),
            other => Err(LedgerUnavailable(format!(
                "the settle script answered {other}"
            ))),
        }
    }

    async fn would_answer(
        &self,
        account: &Account,
        memo: &str,
        charge: u64,
        budget: u64,
    ) -> Result<bool, LedgerUnavailable> {
        let stored: bool = self
            .redis
            .query(redis::cmd("EXISTS").arg(Self::answer_key(account, memo)))
            .await
            .map_err(unavailable)?;
        if stored {
            return Ok(true);
        }
        let spent = self.spent(account).await?;
        Ok(spent
            .checked_add(charge)
            .is_some_and(|after| after <= budget))
    }

    async fn spent(&self, account: &Account) -> Result<u64, LedgerUnavailable> {
        let spent: Option<u64> = self
            .redis
            .query(redis::cmd("GET").arg(Self::spent_key(account)))
            .await
            .map_err(unavailable)?;
        Ok(spent.unwrap_or(0))
    }
}
