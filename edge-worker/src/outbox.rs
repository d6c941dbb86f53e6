//! The isolate's outbox: usage records waiting to be POSTed to the collector, and who is
//! sending which (pure logic; `ship` drives it from each request's `wait_until`).
//!
//! A record leaves the outbox only when a POST carrying it succeeded ([`Outbox::complete`]).
//! The call that produced a record keeps watching it until it is gone (or its time is up),
//! so every waiting record has a live sender even while no new calls arrive (a drain). A call
//! starts a flush only when its own record is still [`RecordState::Waiting`]; the flush then
//! takes every waiting record. So under load one call's flush carries the records of all the
//! calls that arrived while it waited, and those calls only watch — one POST per batch delay,
//! not one per call.
//! A flush *claims* records for a lease; if it fails it releases them, and if it never comes
//! back (its `wait_until` was cancelled, its POST hung) the lease runs out and the next flush
//! claims them again. So no single request's fate can strand the records of others — the bug
//! a shared "a flush is running" flag had: once the flush holding it died, nothing was ever
//! shipped again. A record may therefore be sent twice (a late success after its lease ran
//! out); the collector deduplicates by `event_id`, so it is stored once.
//!
//! The outbox is bounded: past [`Outbox::MAX_RECORDS`] the oldest unclaimed records are
//! dropped (and counted), so a collector gone for good cannot exhaust the isolate's memory.
//! Where no loss is acceptable, bind `USAGE_QUEUE` (the durable path).

use usage_core::UsageRecord;

/// Where one record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordState {
    /// Not in the outbox: a POST carrying it succeeded.
    Delivered,
    /// In a flush whose lease has not run out.
    Sending,
    /// Unclaimed, or its flush's lease ran out: the next flush takes it.
    Waiting,
}

#[derive(Debug)]
struct Pending {
    record: UsageRecord,
    /// The claim sending it, if any, and when that claim's lease ends (ms since the epoch).
    claim: Option<(u64, f64)>,
    /// When it joined the outbox (ms since the epoch).
    pushed_ms: f64,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct Outbox {
    items: Vec<Pending>,
    next_claim: u64,
}

impl Outbox {
    /// At most this many records wait in one isolate.
    pub const MAX_RECORDS: usize = 20_000;

    /// Adds `record` at `now_ms`; returns how many old unclaimed records were dropped to make
    /// room.
    pub fn push(&mut self, record: UsageRecord, now_ms: f64) -> usize {
        let mut dropped = 0;
        while self.items.len() >= Self::MAX_RECORDS {
            let Some(oldest) = self.items.iter().position(|p| p.claim.is_none()) else {
                break;
            };
            self.items.remove(oldest);
            dropped += 1;
        }
        self.items.push(Pending {
            record,
            claim: None,
            pushed_ms: now_ms,
        });
        dropped
    }

    /// Claims up to `max` records that are unclaimed or whose lease ended before `now_ms`,
    /// for `lease_ms`. `None` when there is nothing to send.
    pub fn claim(
        &mut self,
        now_ms: f64,
        lease_ms: f64,
        max: usize,
    ) -> Option<(u64, Vec<UsageRecord>)> {
        let id = self.next_claim;
        let mut batch = Vec::new();
        for p in &mut self.items {
            if batch.len() >= max {
                break;
            }
            if p.claim.is_none_or(|(_, until)| until <= now_ms) {
                p.claim = Some((id, now_ms + lease_ms));
                batch.push(p.record.clone());
            }
        }
        if batch.is_empty() {
            return None;
        }
        self.next_claim += 1;
        Some((id, batch))
    }

    /// Whether a record has been waiting unclaimed for `older_than_ms` or more: its own call
    /// should have sent it by then, so that call is gone (its `wait_until` ended or its timer
    /// was refused) and any flush should take it along.
    pub fn has_stale(&self, now_ms: f64, older_than_ms: f64) -> bool {
        self.items.iter().any(|p| {
            p.claim.is_none_or(|(_, until)| until <= now_ms)
                && now_ms - p.pushed_ms >= older_than_ms
        })
    }

    /// Claim `id` is still being worked on: its lease now ends at `until_ms`.
    pub fn renew(&mut self, id: u64, until_ms: f64) {
        for p in &mut self.items {
            if let Some((c, until)) = p.claim.as_mut() {
                if *c == id {
                    *until = until_ms;
                }
            }
        }
    }

    /// The POST of claim `id` succeeded: its records are delivered.
    pub fn complete(&mut self, id: u64) {
        self.items
            .retain(|p| !matches!(p.claim, Some((c, _)) if c == id));
    }

    /// Claim `id` gave up: its records wait for the next flush.
    pub fn release(&mut self, id: u64) {
        for p in &mut self.items {
            if matches!(p.claim, Some((c, _)) if c == id) {
                p.claim = None;
            }
        }
    }

    /// Where the record with `event_id` is at `now_ms`.
    pub fn state(&self, event_id: uuid::Uuid, now_ms: f64) -> RecordState {
        match self.items.iter().find(|p| p.record.event_id == event_id) {
            None => RecordState::Delivered,
            Some(p) if p.claim.is_some_and(|(_, until)| until > now_ms) => RecordState::Sending,
            Some(_) => RecordState::Waiting,
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// What became of one batch sent to the collector (`ship`'s module docs say why).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shipped {
    /// The collector took it.
    Delivered,
    /// Not accepted yet (no answer, 401/403, 408, 429, 5xx, or no collector configured):
    /// send it again later.
    NotYet,
    /// The collector cannot read it as it is (another 4xx): retrying the same bytes is futile.
    Undeliverable { status: u16 },
}

/// How the collector's `status` is treated.
pub fn outcome_of(status: u16) -> Shipped {
    match status {
        200..=299 => Shipped::Delivered,
        401 | 403 | 408 | 429 | 500..=599 => Shipped::NotYet,
        _ => Shipped::Undeliverable { status },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_batch_the_collector_cannot_read_is_given_up() {
        assert_eq!(outcome_of(202), Shipped::Delivered);
        for status in [401, 403, 408, 429, 500, 503] {
            assert_eq!(outcome_of(status), Shipped::NotYet, "{status}");
        }
        for status in [400, 413, 415, 422] {
            assert_eq!(outcome_of(status), Shipped::Undeliverable { status });
        }
    }
    use usage_core::PriceTable;

    fn sample_record() -> UsageRecord {
        crate::measure::build_record(
            crate::measure::tests::facts(),
            &PriceTable::builtin().unwrap(),
        )
    }

    fn outbox(n: u128) -> Outbox {
        let mut o = Outbox::default();
        let sample = sample_record();
        for i in 0..n {
            let mut r = sample.clone();
            r.event_id = uuid::Uuid::from_u128(i + 1);
            o.push(r, 0.0);
        }
        o
    }

    fn ids(batch: &[UsageRecord]) -> Vec<u128> {
        batch.iter().map(|r| r.event_id.as_u128()).collect()
    }

    #[test]
    fn records_leave_only_when_their_post_succeeded() {
        let mut o = outbox(5);
        let (a, batch) = o.claim(0.0, 1000.0, 3).unwrap();
        assert_eq!(ids(&batch), [1, 2, 3]);
        // A concurrent flush gets only what is not claimed.
        let (b, rest) = o.claim(10.0, 1000.0, 10).unwrap();
        assert_eq!(ids(&rest), [4, 5]);
        assert!(o.claim(20.0, 1000.0, 10).is_none());
        o.release(b); // that POST failed: its records wait
        o.complete(a);
        assert_eq!(o.len(), 2);
        let id = uuid::Uuid::from_u128;
        assert_eq!(o.state(id(1), 25.0), RecordState::Delivered);
        assert_eq!(o.state(id(4), 25.0), RecordState::Waiting);
        let (_, again) = o.claim(30.0, 1000.0, 10).unwrap();
        assert_eq!(ids(&again), [4, 5]);
    }

    #[test]
    fn a_flush_that_never_returns_does_not_strand_the_records() {
        let mut o = outbox(3);
        let (stuck, _) = o.claim(0.0, 25_000.0, 10).unwrap();
        let first = uuid::Uuid::from_u128(1);
        assert_eq!(o.state(first, 24_999.0), RecordState::Sending);
        assert!(o.claim(24_999.0, 25_000.0, 10).is_none(), "still leased");
        assert_eq!(o.state(first, 25_000.0), RecordState::Waiting);
        let (next, batch) = o.claim(25_000.0, 25_000.0, 10).unwrap();
        assert_eq!(ids(&batch), [1, 2, 3]);
        // The stuck flush finishing late neither removes nor frees the new claim's records.
        o.release(stuck);
        o.complete(stuck);
        assert_eq!(o.len(), 3);
        o.complete(next);
        assert!(o.is_empty());
    }

    #[test]
    fn records_left_by_their_callers_are_stale_and_leases_can_be_renewed() {
        let mut o = outbox(2);
        let (a, _) = o.claim(0.0, 1000.0, 1).unwrap(); // record 1 in flight
        assert!(!o.has_stale(100.0, 150.0), "record 2 is young");
        assert!(o.has_stale(150.0, 150.0), "record 2 waited too long");
        // A flush that is still working renews its lease; one that died loses it.
        o.renew(a, 5_000.0);
        assert_eq!(
            o.state(uuid::Uuid::from_u128(1), 4_999.0),
            RecordState::Sending
        );
        assert_eq!(
            o.state(uuid::Uuid::from_u128(1), 5_000.0),
            RecordState::Waiting
        );
        o.complete(a);
        let (_, rest) = o.claim(5_000.0, 1000.0, 10).unwrap();
        assert_eq!(ids(&rest), [2]);
        assert!(!o.has_stale(5_500.0, 150.0), "in flight, not stale");
        assert!(o.has_stale(6_000.0, 150.0), "its lease ran out");
    }

    #[test]
    fn it_is_bounded_dropping_the_oldest_unclaimed() {
        let mut o = outbox(Outbox::MAX_RECORDS as u128);
        let (_, first) = o.claim(0.0, 1000.0, 1).unwrap();
        assert_eq!(ids(&first), [1]);
        let mut r = sample_record();
        r.event_id = uuid::Uuid::from_u128(999_999);
        assert_eq!(o.push(r, 0.0), 1);
        assert_eq!(o.len(), Outbox::MAX_RECORDS);
        // Record 1 is in flight and kept; record 2, the oldest unclaimed, went.
        let (_, batch) = o.claim(1.0, 1000.0, 2).unwrap();
        assert_eq!(ids(&batch), [3, 4]);
    }
}
