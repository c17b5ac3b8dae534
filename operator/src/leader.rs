//! Leader election on a `coordination.k8s.io/v1` Lease, so that two replicas of the
//! operator can run while only one reconciles. kube 5's runtime has none; this follows
//! client-go's `leaderelection` protocol. The decisions are pure and take the time as an
//! argument: [`observe`] (when did this process first see the Lease as it is now),
//! [`decide`] (create / acquire / renew / wait / lost), [`released`] (the Lease a leader
//! leaves behind on shutdown), [`identity`] and [`Timing`]. [`Elector`] does the I/O: get,
//! create and replace the Lease, each write carrying the resourceVersion it was read at, so
//! that of two candidates writing at once one gets 409 Conflict and loses the round.
//!
//! A holder's Lease expires when this process has seen it unchanged for its
//! `leaseDurationSeconds`, by this process's own clock, not when `renewTime` plus the
//! duration is past: the clocks of two nodes may disagree, the passage of time on one
//! clock does not. A leader stops once it could not renew for `lease duration - retry
//! period` since the start of its last successful renewal, which is before any other
//! candidate can have seen the Lease unchanged for the full duration.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::{SignedDuration, Timestamp},
};
use kube::{api::PostParams, Api, Client};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::error::{Error, Result};

/// Default name of the Lease (`--leader-election-lease-name`).
pub const DEFAULT_LEASE_NAME: &str = "datapipeline-operator";

/// How long a Lease lasts, how often its holder renews it, how often others try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    lease_duration: Duration,
    renew_period: Duration,
    retry_period: Duration,
}

impl Timing {
    /// Checks that a leader can renew at least once, and retry once, before it must stop:
    /// `renew period + retry period < lease duration`, all at least one second.
    pub fn new(
        lease_duration: Duration,
        renew_period: Duration,
        retry_period: Duration,
    ) -> Result<Self> {
        let invalid = |reason: String| Err(Error::LeaderTiming(reason));
        if lease_duration.as_secs() > i32::MAX as u64 || lease_duration.subsec_nanos() != 0 {
            return invalid(format!(
                "the lease duration must be whole seconds (at most {}), not {lease_duration:?}",
                i32::MAX
            ));
        }
        if [lease_duration, renew_period, retry_period]
            .iter()
            .any(|d| *d < Duration::from_secs(1))
        {
            return invalid("every period must be at least 1 s".into());
        }
        if renew_period + retry_period >= lease_duration {
            return invalid(format!(
                "the renew period ({renew_period:?}) plus the retry period ({retry_period:?}) \
                 must be shorter than the lease duration ({lease_duration:?})"
            ));
        }
        Ok(Self {
            lease_duration,
            renew_period,
            retry_period,
        })
    }

    pub fn lease_duration(&self) -> Duration {
        self.lease_duration
    }

    pub fn renew_period(&self) -> Duration {
        self.renew_period
    }

    pub fn retry_period(&self) -> Duration {
        self.retry_period
    }

    /// How long after the start of its last successful renewal a leader may go on: the
    /// lease duration less one retry period.
    pub fn renew_deadline(&self) -> Duration {
        self.lease_duration - self.retry_period
    }

    /// `leaseDurationSeconds` of the Lease we write (checked to fit by [`Timing::new`]).
    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }
}

impl Default for Timing {
    /// 15 s lease, renewed every 5 s, others trying every 2 s.
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_period: Duration::from_secs(5),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// The Lease as this process last read it, and when it first read it so.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub spec: LeaseSpec,
    pub since: Timestamp,
}

/// What the Lease read at `now` means for the observation: unchanged since the previous
/// observation keeps its time; changed (a renewal, a new holder) starts a new one.
pub fn observe(
    lease: Option<&LeaseSpec>,
    previous: Option<&Observed>,
    now: Timestamp,
) -> Option<Observed> {
    let spec = lease?;
    match previous {
        Some(p) if &p.spec == spec => Some(p.clone()),
        _ => Some(Observed {
            spec: spec.clone(),
            since: now,
        }),
    }
}

/// What to do with the Lease.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// There is no Lease: create it, held by us.
    Create(LeaseSpec),
    /// Nobody holds the Lease, or its holder let it expire: replace it, held by us.
    Acquire(LeaseSpec),
    /// We hold the Lease: replace it with a new renewTime.
    Renew(LeaseSpec),
    /// Another candidate holds the Lease; it expires at `until` unless renewed.
    Wait { holder: String, until: Timestamp },
    /// We were leading but the Lease names another holder, or none: stop at once.
    Lost { holder: Option<String> },
}

/// Decides from the Lease as read (`None`: absent), when this process first saw it as it
/// is (`unchanged_since`, from [`observe`]), whether we believe we lead, our identity,
/// the timing and the time.
pub fn decide(
    lease: Option<&LeaseSpec>,
    unchanged_since: Timestamp,
    leading: bool,
    identity: &str,
    timing: &Timing,
    now: Timestamp,
) -> Decision {
    let held_by_us = |old: &LeaseSpec, acquire_time: MicroTime, transitions: i32| LeaseSpec {
        holder_identity: Some(identity.to_string()),
        lease_duration_seconds: Some(timing.lease_seconds()),
        acquire_time: Some(acquire_time),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..old.clone()
    };
    let Some(old) = lease else {
        return Decision::Create(held_by_us(&LeaseSpec::default(), MicroTime(now), 0));
    };
    let transitions = old.lease_transitions.unwrap_or(0);
    let holder = old.holder_identity.as_deref().filter(|h| !h.is_empty());
    match holder {
        Some(h) if h == identity => Decision::Renew(held_by_us(
            old,
            old.acquire_time.clone().unwrap_or(MicroTime(now)),
            transitions,
        )),
        _ if leading => Decision::Lost {
            holder: holder.map(str::to_string),
        },
        None => Decision::Acquire(held_by_us(
            old,
            MicroTime(now),
            transitions.saturating_add(1),
        )),
        Some(h) => {
            let seconds = old
                .lease_duration_seconds
                .filter(|s| *s > 0)
                .unwrap_or(timing.lease_seconds());
            let until = unchanged_since
                .checked_add(SignedDuration::from_secs(i64::from(seconds)))
                .unwrap_or(Timestamp::MAX);
            if now >= until {
                Decision::Acquire(held_by_us(
                    old,
                    MicroTime(now),
                    transitions.saturating_add(1),
                ))
            } else {
                Decision::Wait {
                    holder: h.to_string(),
                    until,
                }
            }
        }
    }
}

/// The Lease a leader leaves on shutdown: no holder and a one-second duration, so the next
/// candidate takes it at its next try; `None` when we do not hold it.
pub fn released(lease: &LeaseSpec, identity: &str, now: Timestamp) -> Option<LeaseSpec> {
    (lease.holder_identity.as_deref() == Some(identity)).then(|| LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        renew_time: Some(MicroTime(now)),
        ..lease.clone()
    })
}

/// Our identity: the pod's name when given (`POD_NAME`, from the downward API), else the
/// host name (or `datapipeline-operator`) and a random suffix, unique among candidates.
pub fn identity(pod_name: Option<&str>, hostname: Option<&str>, suffix: &str) -> String {
    fn trimmed(s: Option<&str>) -> Option<&str> {
        s.map(str::trim).filter(|s| !s.is_empty())
    }
    match trimmed(pod_name) {
        Some(pod) => pod.to_string(),
        None => format!(
            "{}-{suffix}",
            trimmed(hostname).unwrap_or(DEFAULT_LEASE_NAME)
        ),
    }
}

/// [`identity`] from this process's environment: `POD_NAME`, else the kernel's host name
/// (or `HOSTNAME`) and 8 random hex digits.
pub fn identity_from_environment() -> String {
    let pod = std::env::var("POD_NAME").ok();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok());
    let suffix = format!("{:08x}", rand::random::<u32>());
    identity(pod.as_deref(), host.as_deref(), &suffix)
}

/// Why a leader stopped leading.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Lost {
    #[error("could not renew the Lease within {0:?}")]
    Deadline(Duration),
    #[error("the Lease names {} as its holder", .0.as_deref().unwrap_or("nobody"))]
    TakenBy(Option<String>),
}

/// The result of one read-decide-write round.
#[derive(Clone, Debug, PartialEq)]
enum Round {
    /// We hold the Lease (created, acquired or renewed).
    Leading,
    Waiting {
        holder: String,
        until: Timestamp,
    },
    Lost {
        holder: Option<String>,
    },
    /// Another candidate wrote between our read and our write (409).
    Conflict,
}

/// One candidate for the Lease `namespace/name`. Does I/O.
pub struct Elector {
    api: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
    timing: Timing,
    observed: Option<Observed>,
    /// Start of the last round that wrote the Lease held by us.
    renewed: Option<Instant>,
}

impl Elector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: String,
        timing: Timing,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: name.to_string(),
            identity,
            timing,
            observed: None,
            renewed: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn read_error(&self, source: kube::Error) -> Error {
        Error::ReadLease {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source: Box::new(source),
        }
    }

    fn write_error(&self, source: kube::Error) -> Error {
        Error::WriteLease {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source: Box::new(source),
        }
    }

    async fn round(&mut self, leading: bool) -> Result<Round> {
        let current = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.read_error(e))?;
        let now = Timestamp::now();
        let spec = current.as_ref().map(|l| l.spec.clone().unwrap_or_default());
        self.observed = observe(spec.as_ref(), self.observed.as_ref(), now);
        let since = self.observed.as_ref().map_or(now, |o| o.since);
        let decision = decide(
            spec.as_ref(),
            since,
            leading,
            &self.identity,
            &self.timing,
            now,
        );
        let written = match decision {
            Decision::Create(spec) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        namespace: Some(self.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Decision::Acquire(spec) | Decision::Renew(spec) => {
                let Some(mut lease) = current else {
                    return Ok(Round::Conflict);
                };
                // The resourceVersion read above stays in the metadata: the API server
                // refuses the write with 409 if anyone wrote since.
                lease.spec = Some(spec);
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
            Decision::Wait { holder, until } => return Ok(Round::Waiting { holder, until }),
            Decision::Lost { holder } => return Ok(Round::Lost { holder }),
        };
        match written {
            Ok(lease) => {
                self.observed = observe(lease.spec.as_ref(), None, now);
                Ok(Round::Leading)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Round::Conflict),
            Err(e) => Err(self.write_error(e)),
        }
    }

    /// Returns once we hold the Lease, trying every retry period; API errors are logged
    /// and retried.
    pub async fn acquire(&mut self) {
        let mut last_holder = None;
        loop {
            let started = Instant::now();
            match self.round(false).await {
                Ok(Round::Leading) => {
                    self.renewed = Some(started);
                    info!(identity = %self.identity, lease = %self.name, namespace = %self.namespace, "acquired the Lease: leading");
                    return;
                }
                Ok(Round::Waiting { holder, until }) => {
                    if last_holder.as_ref() != Some(&holder) {
                        info!(identity = %self.identity, %holder, expires_unless_renewed = %until, "another replica leads: waiting");
                        last_holder = Some(holder);
                    }
                }
                Ok(Round::Conflict) => {
                    info!(identity = %self.identity, "another candidate wrote the Lease first")
                }
                Ok(Round::Lost { .. }) => {}
                Err(error) => warn!(%error, "leader election: retrying"),
            }
            tokio::time::sleep(self.timing.retry_period).await;
        }
    }

    /// Renews the Lease every renew period while we lead; returns only when leadership is
    /// lost: the Lease names someone else, or no renewal succeeded before the deadline.
    pub async fn hold(&mut self) -> Lost {
        let mut renewed = self.renewed.unwrap_or_else(Instant::now);
        loop {
            tokio::time::sleep_until(renewed + self.timing.renew_period).await;
            loop {
                let deadline = renewed + self.timing.renew_deadline();
                let started = Instant::now();
                if started >= deadline {
                    return Lost::Deadline(self.timing.renew_deadline());
                }
                match tokio::time::timeout_at(deadline, self.round(true)).await {
                    Err(_) => return Lost::Deadline(self.timing.renew_deadline()),
                    Ok(Ok(Round::Leading)) => {
                        renewed = started;
                        self.renewed = Some(started);
                        break;
                    }
                    Ok(Ok(Round::Lost { holder })) => return Lost::TakenBy(holder),
                    Ok(Ok(Round::Waiting { holder, .. })) => return Lost::TakenBy(Some(holder)),
                    Ok(Ok(Round::Conflict)) => {
                        warn!("renewing the Lease: another writer came first; reading it again")
                    }
                    Ok(Err(error)) => warn!(%error, "renewing the Lease: retrying"),
                }
                let retry = (Instant::now() + self.timing.retry_period).min(deadline);
                tokio::time::sleep_until(retry).await;
            }
        }
    }

    /// Gives the Lease up (on shutdown) so that another candidate leads at its next try,
    /// without waiting for expiry. Nothing is written when we do not hold it.
    pub async fn release(&mut self) -> Result<()> {
        let current = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.read_error(e))?;
        let Some(mut lease) = current else {
            return Ok(());
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let Some(spec) = released(&spec, &self.identity, Timestamp::now()) else {
            return Ok(());
        };
        lease.spec = Some(spec);
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .map_err(|e| self.write_error(e))?;
        self.renewed = None;
        info!(identity = %self.identity, lease = %self.name, "released the Lease");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "operator-a";
    const OTHER: &str = "operator-b";

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    fn micro(second: i64) -> Option<MicroTime> {
        Some(MicroTime(at(second)))
    }

    /// A Lease held by `holder`, acquired at 100, renewed at `renewed`, 15 s, 3 transitions.
    fn held(holder: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            acquire_time: micro(100),
            renew_time: micro(renewed),
            lease_transitions: Some(3),
            ..LeaseSpec::default()
        }
    }

    /// The same Lease, held by us since `acquired`, renewed at `now`.
    fn ours(acquired: i64, now: i64, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(ME.into()),
            lease_duration_seconds: Some(15),
            acquire_time: micro(acquired),
            renew_time: micro(now),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    fn timing() -> Timing {
        Timing::default()
    }

    #[test]
    fn no_lease_is_created_held_by_us_with_no_transition() {
        assert_eq!(
            decide(None, at(500), false, ME, &timing(), at(500)),
            Decision::Create(ours(500, 500, 0))
        );
    }

    #[test]
    fn another_holder_is_waited_for_until_seen_unchanged_for_its_duration() {
        let lease = held(OTHER, 490);
        assert_eq!(
            decide(Some(&lease), at(495), false, ME, &timing(), at(509)),
            Decision::Wait {
                holder: OTHER.into(),
                until: at(510)
            }
        );
    }

    #[test]
    fn an_expired_holder_is_replaced_and_the_transition_counted() {
        let lease = held(OTHER, 490);
        assert_eq!(
            decide(Some(&lease), at(495), false, ME, &timing(), at(510)),
            Decision::Acquire(ours(510, 510, 4))
        );
    }

    #[test]
    fn the_holders_own_duration_counts_not_ours() {
        let lease = LeaseSpec {
            lease_duration_seconds: Some(60),
            ..held(OTHER, 490)
        };
        assert_eq!(
            decide(Some(&lease), at(495), false, ME, &timing(), at(510)),
            Decision::Wait {
                holder: OTHER.into(),
                until: at(555)
            }
        );
    }

    #[test]
    fn our_own_lease_is_renewed_keeping_acquire_time_and_transitions() {
        let lease = LeaseSpec {
            holder_identity: Some(ME.into()),
            ..held(OTHER, 490)
        };
        let renewed = ours(100, 495, 3);
        assert_eq!(
            decide(Some(&lease), at(490), true, ME, &timing(), at(495)),
            Decision::Renew(renewed.clone())
        );
        // A restarted process with the same pod name holds it already, too.
        assert_eq!(
            decide(Some(&lease), at(490), false, ME, &timing(), at(495)),
            Decision::Renew(renewed)
        );
    }

    #[test]
    fn a_released_lease_is_acquired_at_once() {
        let lease = released(&held(OTHER, 490), OTHER, at(492)).unwrap();
        assert_eq!(
            lease,
            LeaseSpec {
                holder_identity: None,
                lease_duration_seconds: Some(1),
                acquire_time: micro(100),
                renew_time: micro(492),
                lease_transitions: Some(3),
                ..LeaseSpec::default()
            }
        );
        assert_eq!(
            decide(Some(&lease), at(493), false, ME, &timing(), at(493)),
            Decision::Acquire(ours(493, 493, 4))
        );
        let empty_string = LeaseSpec {
            holder_identity: Some(String::new()),
            ..lease
        };
        assert_eq!(
            decide(Some(&empty_string), at(493), false, ME, &timing(), at(493)),
            Decision::Acquire(ours(493, 493, 4))
        );
    }

    #[test]
    fn only_the_holder_releases() {
        assert_eq!(released(&held(OTHER, 490), ME, at(492)), None);
    }

    #[test]
    fn a_leader_that_finds_another_holder_or_none_has_lost() {
        assert_eq!(
            decide(
                Some(&held(OTHER, 490)),
                at(490),
                true,
                ME,
                &timing(),
                at(491)
            ),
            Decision::Lost {
                holder: Some(OTHER.into())
            }
        );
        let cleared = LeaseSpec {
            holder_identity: None,
            ..held(OTHER, 490)
        };
        assert_eq!(
            decide(Some(&cleared), at(490), true, ME, &timing(), at(491)),
            Decision::Lost { holder: None }
        );
    }

    #[test]
    fn a_renew_time_from_a_clock_ahead_of_ours_does_not_hold_the_lease_forever() {
        // The holder's clock is an hour ahead: renewTime + 15 s is far in our future,
        // but the Lease has not changed for 15 s by our clock, so the holder is gone.
        let lease = held(OTHER, 4_100);
        assert_eq!(
            decide(Some(&lease), at(495), false, ME, &timing(), at(510)),
            Decision::Acquire(ours(510, 510, 4))
        );
    }

    #[test]
    fn a_renew_time_from_a_clock_behind_ours_does_not_expire_a_live_holder() {
        // The holder's clock is an hour behind: renewTime + 15 s is long past, but the
        // Lease changed 3 s ago by our clock, so the holder is alive.
        let lease = held(OTHER, -3_000);
        assert_eq!(
            decide(Some(&lease), at(507), false, ME, &timing(), at(510)),
            Decision::Wait {
                holder: OTHER.into(),
                until: at(522)
            }
        );
    }

    #[test]
    fn observation_keeps_its_time_until_the_lease_changes() {
        let first = observe(Some(&held(OTHER, 490)), None, at(491)).unwrap();
        assert_eq!(first.since, at(491));
        let same = observe(Some(&held(OTHER, 490)), Some(&first), at(499)).unwrap();
        assert_eq!(same.since, at(491));
        let renewed = observe(Some(&held(OTHER, 495)), Some(&same), at(500)).unwrap();
        assert_eq!(renewed.since, at(500));
        assert_eq!(observe(None, Some(&renewed), at(501)), None);
    }

    #[test]
    fn timing_defaults_and_checks() {
        let t = Timing::default();
        assert_eq!(
            (
                t.lease_duration(),
                t.renew_period(),
                t.retry_period(),
                t.renew_deadline()
            ),
            (
                Duration::from_secs(15),
                Duration::from_secs(5),
                Duration::from_secs(2),
                Duration::from_secs(13)
            )
        );
        let s = Duration::from_secs;
        assert_eq!(Timing::new(s(15), s(5), s(2)).unwrap(), t);
        assert_eq!(
            Timing::new(s(6), s(5), s(1)).unwrap_err().to_string(),
            "leader election timing: the renew period (5s) plus the retry period (1s) must be \
             shorter than the lease duration (6s)"
        );
        assert_eq!(
            Timing::new(s(15), s(5), Duration::ZERO)
                .unwrap_err()
                .to_string(),
            "leader election timing: every period must be at least 1 s"
        );
        assert_eq!(
            Timing::new(Duration::from_millis(15_500), s(5), s(2))
                .unwrap_err()
                .to_string(),
            "leader election timing: the lease duration must be whole seconds (at most \
             2147483647), not 15.5s"
        );
    }

    #[test]
    fn identity_is_the_pod_name_else_host_and_suffix() {
        assert_eq!(
            identity(Some("op-7d9-x2"), Some("node"), "1a2b"),
            "op-7d9-x2"
        );
        assert_eq!(identity(Some(" "), Some("laptop\n"), "1a2b"), "laptop-1a2b");
        assert_eq!(identity(None, None, "1a2b"), "datapipeline-operator-1a2b");
    }

    #[test]
    fn lost_says_why() {
        assert_eq!(
            Lost::Deadline(Duration::from_secs(13)).to_string(),
            "could not renew the Lease within 13s"
        );
        assert_eq!(
            Lost::TakenBy(Some(OTHER.into())).to_string(),
            "the Lease names operator-b as its holder"
        );
        assert_eq!(
            Lost::TakenBy(None).to_string(),
            "the Lease names nobody as its holder"
        );
    }
}
