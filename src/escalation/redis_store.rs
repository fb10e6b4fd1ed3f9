//! Escalation state in Redis, shared by all replicas (layout in `store.rs`). Each message's
//! record is one Lua script, so it is atomic; a round of messages costs one round trip (a
//! pipeline), each claim one more; every call is bounded by the Redis timeout. The connection
//! manager reconnects on its own; the caller decides what a failure means (degraded mode).

use std::future::Future;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, Script};

use super::config::EscalationConfig;
use super::event::EscalationKind;
use super::memory_store::contact_cap;
use super::store::{
    Claim, ClaimOutcome, Claimed, Record, Snapshot, cooldown_severity, decode_contact,
    decode_negative, decode_turn, encode_contact_member, encode_negative, encode_turn,
};
use super::surge::SurgeWindow;

/// Appends the message to its windows and reads them back.
///
/// KEYS: conversation list, conversation trend cooldown, customer zset, surge key prefix.
/// ARGV: 1 encoded turn, 2 message id (duplicate check: equal to a stored turn's id, the field
/// after its fourth tab, as the memory store compares), 3 max turns, 4 conversation
/// TTL s, 5 negative (1/0), 6 contact member, 7 event ms, 8 repeat cut-off ms, 9 repeat TTL s,
/// 10 contact cap, 11 event bucket, 12 now bucket, 13 recent buckets, 14 baseline buckets,
/// 15 surge TTL s, 16 negatives entry, 17 negatives cap, 18 oldest bucket worth keeping.
///
/// Returns {duplicate, turns, trend cooldown or "", contacts (member, score, ...), has surge,
/// recent total, recent negative, baseline total, baseline negative, first negative bucket or
/// -1, negatives}. The bucket hash is derived from the prefix inside the script, so this needs a
/// standalone Redis (not Cluster).
const RECORD_SCRIPT: &str = r"
local turns = redis.call('LRANGE', KEYS[1], 0, -1)
local dup = 0
for _, t in ipairs(turns) do
  if string.match(t, '^[^\t]*\t[^\t]*\t[^\t]*\t[^\t]*\t(.*)$') == ARGV[2] then dup = 1 break end
end
if dup == 0 then
  redis.call('RPUSH', KEYS[1], ARGV[1])
  redis.call('LTRIM', KEYS[1], -tonumber(ARGV[3]), -1)
  turns = redis.call('LRANGE', KEYS[1], 0, -1)
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
local cooldown = redis.call('GET', KEYS[2]) or ''
local negative = ARGV[5] == '1'
local prefix = KEYS[4]
local buckets = prefix .. 'b'
if dup == 0 then
  redis.call('HINCRBY', buckets, 't:' .. ARGV[11], 1)
  if negative then redis.call('HINCRBY', buckets, 'n:' .. ARGV[11], 1) end
  redis.call('EXPIRE', buckets, ARGV[15])
  -- The hash lives as long as writes come; drop buckets past the TTL now and then.
  if redis.call('HLEN', buckets) > 4 * (tonumber(ARGV[13]) + tonumber(ARGV[14])) + 8 then
    local oldest = tonumber(ARGV[18])
    for _, field in ipairs(redis.call('HKEYS', buckets)) do
      if tonumber(string.sub(field, 3)) < oldest then redis.call('HDEL', buckets, field) end
    end
  end
end
if not negative then
  return {dup, turns, cooldown, {}, 0, 0, 0, 0, 0, -1, {}}
end
redis.call('ZADD', KEYS[3], ARGV[7], ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[8])
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[10]) + 1))
redis.call('EXPIRE', KEYS[3], ARGV[9])
local contacts = redis.call('ZRANGE', KEYS[3], 0, -1, 'WITHSCORES')
local negkey = prefix .. 'neg'
if dup == 0 then
  redis.call('RPUSH', negkey, ARGV[16])
  redis.call('LTRIM', negkey, -tonumber(ARGV[17]), -1)
  redis.call('EXPIRE', negkey, ARGV[15])
end
local negatives = redis.call('LRANGE', negkey, 0, -1)
local now_b = tonumber(ARGV[12])
local recent = tonumber(ARGV[13])
local base = tonumber(ARGV[14])
local rt, rn, bt, bn, first = 0, 0, 0, 0, -1
-- Every bucket of both windows in one HMGET per 500 buckets (not one per bucket).
local lo = now_b - recent - base + 1
local from = lo
while from <= now_b do
  local to = math.min(from + 499, now_b)
  local fields = {}
  for i = from, to do
    fields[#fields + 1] = 't:' .. i
    fields[#fields + 1] = 'n:' .. i
  end
  local v = redis.call('HMGET', buckets, unpack(fields))
  for i = from, to do
    local k = (i - from) * 2
    local t = tonumber(v[k + 1]) or 0
    local n = tonumber(v[k + 2]) or 0
    if i > now_b - recent then
      rt = rt + t
      rn = rn + n
      if n > 0 and first < 0 then first = i end
    else
      bt = bt + t
      bn = bn + n
    end
  end
  from = to + 1
end
return {dup, turns, cooldown, contacts, 1, rt, rn, bt, bn, first, negatives}
";

/// Buckets a surge bucket outlives the current one (its TTL, in buckets).
fn oldest_bucket_age(cfg: &EscalationConfig) -> i64 {
    (cfg.surge_ttl_secs().div_ceil(cfg.surge_bucket_secs.max(1))) as i64
}

/// Takes the cooldowns (same rule as `store::decide_claim`): `SET NX EX` opens an event's
/// cooldown; an open warning may be replaced by a critical once (TTL kept); the opener's own
/// token is let through again (redelivery). A published claim then joins the open incident, or
/// opens it with its own id; an opened cooldown keeps the incident open at least as long (same
/// rule as `MemoryStore::claim`). KEYS: cooldown key, incident key per claim; ARGV: severity,
/// token, TTL s, candidate incident id per claim. Returns a code (0 suppressed, 1 opened,
/// 2 upgraded, 3 redelivered) and an incident id ('' when suppressed) per claim.
const CLAIM_SCRIPT: &str = r"
local out = {}
for i = 1, #KEYS / 2 do
  local key, incident_key = KEYS[2 * i - 1], KEYS[2 * i]
  local severity, token = ARGV[4 * i - 3], ARGV[4 * i - 2]
  local ttl, candidate = tonumber(ARGV[4 * i - 1]), ARGV[4 * i]
  local value = severity .. ':' .. token
  local code = 0
  if redis.call('SET', key, value, 'NX', 'EX', ttl) then
    code = 1
  else
    local current = redis.call('GET', key) or ''
    local cur_severity, cur_token = string.match(current, '^([^:]*):(.*)$')
    if cur_severity == severity and cur_token == token then
      code = 3
    elseif cur_severity == 'warning' and severity == 'critical' then
      redis.call('SET', key, value, 'KEEPTTL')
      code = 2
    end
  end
  local incident = ''
  if code ~= 0 then
    incident = redis.call('GET', incident_key)
    if not incident then
      incident = candidate
      redis.call('SET', incident_key, incident, 'EX', ttl)
    elseif code == 1 and redis.call('TTL', incident_key) < ttl then
      redis.call('EXPIRE', incident_key, ttl)
    end
  end
  out[2 * i - 1] = code
  out[2 * i] = incident
end
return out
";

/// Why a Redis call did not give an answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis error: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected Redis reply: {0}")]
    Malformed(String),
}

type RecordReply = (
    i64,
    Vec<String>,
    String,
    Vec<String>,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    Vec<String>,
);

pub(crate) struct RedisStore {
    manager: ConnectionManager,
    record_script: Script,
    claim_script: Script,
    timeout: Duration,
}

impl RedisStore {
    /// Prepares the connection without connecting (that happens on first use and again after
    /// every failure). Fails only on an unusable URL.
    pub fn new(cfg: &EscalationConfig) -> Result<Option<Self>, StoreError> {
        let Some(url) = &cfg.redis_url else {
            return Ok(None);
        };
        let mut info = url.as_str().into_connection_info()?;
        let mut settings = info.redis_settings().clone();
        if let Some(user) = &cfg.redis_username {
            settings = settings.set_username(user);
        }
        if let Some(password) = &cfg.redis_password {
            settings = settings.set_password(password.expose());
        }
        info = info.set_redis_settings(settings);
        let client = redis::Client::open(info)?;
        let timeout = cfg.redis_timeout();
        // No retries inside the manager: a failed connect surfaces at once and the next call
        // (the degraded-mode probe) starts a fresh attempt.
        let manager_config = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let manager = ConnectionManager::new_lazy_with_config(client, manager_config)?;
        Ok(Some(Self {
            manager,
            record_script: Script::new(RECORD_SCRIPT),
            claim_script: Script::new(CLAIM_SCRIPT),
            timeout,
        }))
    }

    /// Runs `op` on a connection within the timeout. A dropped connection (Redis restarted, or
    /// a connection that died while idle) is retried once on the manager's fresh connection;
    /// both calls are idempotent (duplicates are detected by message id, claims by token).
    async fn bounded<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let attempts = async {
            match op(self.manager.clone()).await {
                Err(e) if e.is_unrecoverable_error() => op(self.manager.clone()).await,
                done => done,
            }
        };
        match tokio::time::timeout(self.timeout, attempts).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        }
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let pong: String = self
            .bounded(|mut con| async move { redis::cmd("PING").query_async(&mut con).await })
            .await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(StoreError::Malformed(pong))
        }
    }

    /// Records messages (in order) and reads back each one's windows: one pipeline of the
    /// record script, which Redis runs in order, so each message sees the ones before it, as if
    /// recorded one by one. Loads the script in the same pipeline (a restarted Redis forgets it).
    pub async fn record(
        &self,
        cfg: &EscalationConfig,
        recs: &[Record],
    ) -> Result<Vec<Snapshot>, StoreError> {
        if recs.is_empty() {
            return Ok(Vec::new());
        }
        let invocations: Vec<_> = recs
            .iter()
            .map(|rec| {
                let mut invocation = self.record_script.prepare_invoke();
                invocation
                    .key(&rec.keys.conversation)
                    .key(rec.keys.cooldown(EscalationKind::ConversationTrend))
                    .key(&rec.keys.customer)
                    .key(&rec.keys.surge_prefix)
                    .arg(encode_turn(&rec.turn))
                    .arg(&rec.turn.message_id)
                    .arg(cfg.trend_max_turns)
                    .arg(cfg.trend_ttl_secs)
                    .arg(u8::from(rec.negative))
                    .arg(encode_contact_member(
                        &rec.keys.conversation_hash,
                        &rec.turn.message_id,
                    ))
                    .arg(rec.event_ms)
                    .arg(rec.repeat_cutoff_ms(cfg))
                    .arg(cfg.repeat_window_secs)
                    .arg(contact_cap(cfg))
                    .arg(rec.event_bucket)
                    .arg(rec.now_bucket)
                    .arg(cfg.recent_buckets())
                    .arg(cfg.baseline_buckets())
                    .arg(cfg.surge_ttl_secs())
                    .arg(encode_negative(rec.event_ms, &rec.turn.message_id))
                    .arg(cfg.max_trigger_ids)
                    .arg(rec.now_bucket - oldest_bucket_age(cfg));
                invocation
            })
            .collect();
        let mut pipe = redis::pipe();
        pipe.load_script(&self.record_script).ignore();
        for invocation in &invocations {
            pipe.invoke_script(invocation);
        }
        let pipe = &pipe;
        let replies: Vec<RecordReply> = self
            .bounded(|mut con| async move { pipe.query_async(&mut con).await })
            .await?;
        if replies.len() != recs.len() {
            return Err(StoreError::Malformed(format!(
                "{} record results for {} messages",
                replies.len(),
                recs.len()
            )));
        }
        replies
            .into_iter()
            .zip(recs)
            .map(|(reply, rec)| parse_record_reply(reply, rec.now_bucket))
            .collect()
    }

    pub async fn claim(&self, claims: &[Claim]) -> Result<Vec<Claimed>, StoreError> {
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = self.claim_script.prepare_invoke();
        for claim in claims {
            invocation
                .key(&claim.key)
                .key(&claim.incident_key)
                .arg(claim.severity.as_str())
                .arg(&claim.token)
                .arg(claim.ttl_secs)
                .arg(&claim.incident_id);
        }
        let invocation = &invocation;
        let answers: Vec<(i64, String)> = self
            .bounded(|mut con| async move { invocation.invoke_async(&mut con).await })
            .await?;
        if answers.len() != claims.len() {
            return Err(StoreError::Malformed(format!(
                "{} claim results for {} claims",
                answers.len(),
                claims.len()
            )));
        }
        Ok(answers
            .into_iter()
            .map(|(code, incident_id)| Claimed {
                outcome: ClaimOutcome::from_code(code),
                incident_id,
            })
            .collect())
    }

    /// Hands open incidents back to Redis (`SET NX EX`: never overrides one Redis knows), so an
    /// incident raised while degraded is not raised again once shared mode resumes.
    pub async fn restore_cooldowns(
        &self,
        open: &[(String, String, u64)],
    ) -> Result<(), StoreError> {
        if open.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (key, value, ttl_secs) in open {
            pipe.cmd("SET")
                .arg(key)
                .arg(value)
                .arg("NX")
                .arg("EX")
                .arg(*ttl_secs)
                .ignore();
        }
        let pipe = &pipe;
        self.bounded(|mut con| async move { pipe.query_async::<()>(&mut con).await })
            .await
    }
}

fn parse_record_reply(reply: RecordReply, now_bucket: i64) -> Result<Snapshot, StoreError> {
    let (dup, turns, cooldown, contacts, has_surge, rt, rn, bt, bn, first, negatives) = reply;
    let turns = turns
        .iter()
        .map(|t| decode_turn(t).ok_or_else(|| StoreError::Malformed("conversation turn".into())))
        .collect::<Result<Vec<_>, _>>()?;
    let contacts = contacts
        .chunks(2)
        .map(|pair| match pair {
            [member, score] => score
                .parse::<f64>()
                .ok()
                .and_then(|score| decode_contact(member, score as i64)),
            _ => None,
        })
        .map(|c| c.ok_or_else(|| StoreError::Malformed("customer contact".into())))
        .collect::<Result<Vec<_>, _>>()?;
    let surge = (has_surge == 1)
        .then(|| {
            let recent_negatives = negatives
                .iter()
                .map(|n| decode_negative(n).ok_or_else(|| StoreError::Malformed("negative".into())))
                .collect::<Result<Vec<_>, _>>()?;
            Ok::<_, StoreError>(SurgeWindow {
                now_bucket,
                recent_total: rt,
                recent_negative: rn,
                baseline_total: bt,
                baseline_negative: bn,
                first_negative_bucket: (first >= 0).then_some(first),
                recent_negatives,
            })
        })
        .transpose()?;
    Ok(Snapshot {
        duplicate: dup == 1,
        turns,
        conversation_cooldown: cooldown_severity(&cooldown),
        contacts,
        surge,
    })
}
