//! Re-homing a key range: moving a placement rule's keys to another home, online.
//!
//! `POST /v1/admin/rehome {"prefix": P, "to": N}` at any region drives three steps over the
//! internal API, each idempotent:
//!
//! 1. **freeze** at the old home `O`: it installs the new placement (so it executes no new
//!    write of the range: writes forwarded to it are refused with 503, not applied), waits
//!    for the writes in progress to finish (every write holds its key's lock until it
//!    committed or aborted), and answers its clock's `now` as the switch point `S`. Every
//!    write of the range `O` ever executed has a timestamp below `S`.
//! 2. **adopt** at `N`: it waits until the closed timestamp it holds for `O` reaches `S` (it
//!    then holds every write of the range; a gap left by log truncation keeps that closed
//!    timestamp frozen until anti-entropy repaired it), then installs the new placement
//!    and starts executing writes. It reports how many of the keys it stores under `P` the
//!    change moves ([`Placement::moved`]: keys under a longer rule stay where they were).
//! 3. **apply** at every other region: it installs the new placement.
//!
//! The new placement is stored in each region's database (`placement_overrides`) and
//! survives restarts; the configuration files should be updated to match. Between steps,
//! writes of the range may be refused with 503 (never applied); the answer lists the regions
//! it could not reach, and running the same call again finishes the change.

use std::time::Duration;

use regions_core::placement::Placement;
use regions_core::protocol::{RehomeRequest, RehomeResponse, RehomeStep, StepAck};

use crate::node::Region;
use crate::{Error, Result};

/// How long the new home waits to catch up with the old one.
const CATCH_UP: Duration = Duration::from_secs(30);

/// Installs `prefix → to` here; returns the placement it replaced.
async fn install_home(region: &Region, prefix: &str, to: &str) -> Result<Placement> {
    let old = region.placement();
    let next = old.with_home(prefix, to).map_err(Error::BadRequest)?;
    region.store.set_placement_override(prefix, to).await?;
    region.set_placement(next);
    Ok((*old).clone())
}

/// Runs one step here.
pub async fn step(region: &Region, step: &str, s: &RehomeStep) -> Result<StepAck> {
    match step {
        "freeze" => {
            install_home(region, &s.prefix, &s.to).await?;
            region.drain_writes().await;
            Ok(StepAck {
                switch_ts: Some(region.clock.now()),
                moved_keys: 0,
            })
        }
        "adopt" => {
            let switch = s
                .switch_ts
                .ok_or_else(|| Error::BadRequest("/switch_ts: required to adopt a range".into()))?;
            let started = tokio::time::Instant::now();
            let deadline = started + CATCH_UP;
            while s.from != region.name && region.closed_for(&s.from).is_none_or(|c| c < switch) {
                if tokio::time::Instant::now() > deadline {
                    return Err(Error::HomeUnreachable {
                        region: s.from.clone(),
                        reason: format!(
                            "{} did not catch up with {} to {switch} within {} s; nothing changed here, retry",
                            region.name,
                            s.from,
                            CATCH_UP.as_secs()
                        ),
                    });
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tracing::info!(
                prefix = s.prefix,
                from = s.from,
                waited_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                "caught up with the old home; executing the range's writes from now on"
            );
            let old = install_home(region, &s.prefix, &s.to).await?;
            let keys = region.store.keys_with_prefix(&s.prefix).await?;
            Ok(StepAck {
                switch_ts: None,
                moved_keys: old.moved(&region.placement(), keys.iter().map(String::as_str)),
            })
        }
        "apply" => {
            install_home(region, &s.prefix, &s.to).await?;
            Ok(StepAck::default())
        }
        other => Err(Error::BadRequest(format!("/path/step: no re-homing step {other:?}"))),
    }
}

async fn step_at(here: &Region, region: &str, step: &str, s: &RehomeStep, token: Option<&str>) -> Result<StepAck> {
    if region == here.name {
        return self::step(here, step, s).await;
    }
    let peer = here.peer(region)?;
    let unreachable = |reason: String| Error::HomeUnreachable {
        region: region.to_owned(),
        reason,
    };
    let mut request = here.http.post(format!("{}/internal/v1/rehome/{step}", peer.address));
    // The admin's token goes along: with tokens configured, a member's certificate alone
    // cannot re-home a range (the API's `peers.rs`).
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        // Adopting waits for the new home to catch up.
        .timeout(CATCH_UP + Duration::from_secs(5))
        .json(s)
        .send()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        return Err(unreachable(format!("{step} answered {status}: {body}")));
    }
    response.json().await.map_err(|e| unreachable(e.to_string()))
}

/// Re-homes the keys of rule `prefix` to `to` (see the module documentation), the steps
/// carrying the caller's `token`.
pub async fn rehome(here: &Region, req: &RehomeRequest, token: Option<&str>) -> Result<RehomeResponse> {
    let placement = here.placement();
    let current = placement
        .rules()
        .iter()
        .find(|r| r.prefix == req.prefix)
        .map(|r| r.region.clone())
        .ok_or_else(|| {
            Error::BadRequest(format!(
                "/prefix: no placement rule has the prefix {:?} (keys placed by the hash ring cannot be re-homed)",
                req.prefix
            ))
        })?;
    placement
        .with_home(&req.prefix, &req.to)
        .map_err(|e| Error::BadRequest(format!("/to: {e}")))?;
    // Run again after a partial failure from the old home itself, its placement already
    // says `to`: the configured home is then the one to freeze.
    let from = if current == req.to {
        here.config
            .rules
            .iter()
            .find(|r| r.prefix == req.prefix)
            .map_or(current, |r| r.region.clone())
    } else {
        current
    };
    let mut step = RehomeStep {
        prefix: req.prefix.clone(),
        to: req.to.clone(),
        from: from.clone(),
        switch_ts: None,
    };
    let mut moved_keys = 0;
    let mut updated = Vec::new();
    if from != req.to {
        step.switch_ts = step_at(here, &from, "freeze", &step, token).await?.switch_ts;
        updated.push(from.clone());
        moved_keys = step_at(here, &req.to, "adopt", &step, token).await?.moved_keys;
        updated.push(req.to.clone());
    } else {
        step_at(here, &req.to, "apply", &step, token).await?;
        updated.push(req.to.clone());
    }
    let mut missed = Vec::new();
    let others: Vec<String> = here
        .config
        .regions
        .iter()
        .map(|r| r.name.clone())
        .filter(|r| !updated.contains(r))
        .collect();
    for region in others {
        match step_at(here, &region, "apply", &step, token).await {
            Ok(_) => updated.push(region),
            Err(e) => {
                tracing::warn!(region, error = %e, "re-homing not installed there yet");
                missed.push(region);
            }
        }
    }
    tracing::info!(
        prefix = req.prefix,
        from,
        to = req.to,
        moved_keys,
        missed = missed.len(),
        "key range re-homed"
    );
    Ok(RehomeResponse {
        prefix: req.prefix.clone(),
        from,
        to: req.to.clone(),
        switch_ts: step.switch_ts.map(|t| t.to_string()),
        moved_keys,
        updated,
        missed,
    })
}
