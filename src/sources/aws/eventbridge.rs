//! EventBridge events into common events, whether an API destination posted them or
//! they came as an SNS `Message`.
//!
//! The detail-types that matter for on-call get kinds of their own; any other is kept
//! as `aws.event` with its `detail_type` label, so nothing is lost for being new. Labels
//! are the low-cardinality fields (region, account, service, state, Auto Scaling group);
//! instance ids, ARNs and descriptions stay in the raw event for templates.

use std::borrow::Cow;

use serde_json::Value;

use super::parse::{Outer, clean, event_time, text_of};
use crate::event::{Event, Label};
use crate::sources::{DedupKeys, dedup_key};

/// Label name and the detail field it is read from.
type DetailLabels = &'static [(&'static str, &'static str)];

/// Detail-type to kind, and the detail fields each kind turns into labels.
const KINDS: &[(&str, &str, DetailLabels)] = &[
    (
        "EC2 Spot Instance Interruption Warning",
        "aws.spot_interruption",
        &[("instance_action", "instance-action")],
    ),
    (
        "EC2 Instance Rebalance Recommendation",
        "aws.rebalance_recommendation",
        &[],
    ),
    (
        "EC2 Instance State-change Notification",
        "aws.ec2_state_change",
        &[("state", "state")],
    ),
    (
        "AWS Health Event",
        "aws.health",
        &[
            ("service", "service"),
            ("event_type_code", "eventTypeCode"),
            ("event_type_category", "eventTypeCategory"),
            ("status_code", "statusCode"),
            ("scope", "eventScopeCode"),
        ],
    ),
    (
        "EC2 Instance-launch Lifecycle Action",
        "aws.autoscaling_lifecycle",
        LIFECYCLE,
    ),
    (
        "EC2 Instance-terminate Lifecycle Action",
        "aws.autoscaling_lifecycle",
        LIFECYCLE,
    ),
];

const LIFECYCLE: &[(&str, &str)] = &[
    ("transition", "LifecycleTransition"),
    ("auto_scaling_group", "AutoScalingGroupName"),
    ("lifecycle_hook", "LifecycleHookName"),
    ("origin", "Origin"),
    ("destination", "Destination"),
];

/// Detail fields some detail-types carry under one spelling or another, read for every
/// kind.
const COMMON: &[(&str, &[&str])] = &[
    (
        "instance_type",
        &["instance-type", "instanceType", "InstanceType"],
    ),
    (
        "availability_zone",
        &["availability-zone", "availabilityZone", "AvailabilityZone"],
    ),
];

/// Whether `value` is shaped like an EventBridge event.
pub fn is_event(value: &Value) -> bool {
    value.get("detail-type").is_some_and(Value::is_string)
}

/// The event `raw` (its exact text) describes; `value` is `raw` parsed.
pub fn event(outer: &Outer<'_>, raw: &str, value: &Value) -> (Event, DedupKeys) {
    let detail_type = text_of(value.get("detail-type")).unwrap_or_default();
    let known = KINDS.iter().find(|(name, _, _)| *name == detail_type);
    let detail = value.get("detail");

    let mut labels: Vec<Label> = outer.labels.clone();
    let mut push = |name: &'static str, text: Option<Cow<'_, str>>| {
        if let Some(text) = text.map(|t| clean(&t, 128)).filter(|t| !t.is_empty()) {
            labels.push((Cow::Borrowed(name), Cow::Owned(text)));
        }
    };
    push("region", text_of(value.get("region")));
    push("account", text_of(value.get("account")));
    push("event_source", text_of(value.get("source")));
    match known {
        Some((_, _, fields)) => {
            for (label, field) in fields.iter() {
                push(label, text_of(detail.and_then(|d| d.get(*field))));
            }
        }
        None => push("detail_type", Some(detail_type.clone())),
    }
    for (label, spellings) in COMMON {
        let found = spellings
            .iter()
            .find_map(|field| text_of(detail.and_then(|d| d.get(*field))));
        push(label, found);
    }
    labels.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    labels.dedup_by(|a, b| a.0 == b.0);

    let id = text_of(value.get("id")).filter(|id| !id.trim().is_empty());
    // EventBridge delivers at least once, with the same id: that is the key whichever
    // way the event came. An event without one (a hand-made test) counts by content.
    let key = match &id {
        Some(id) => dedup_key(outer.source, &["eventbridge", id]),
        None => dedup_key(outer.source, &["eventbridge-content", raw]),
    };
    let event = Event {
        source: outer.source.clone(),
        kind: Cow::Borrowed(known.map_or("aws.event", |(_, kind, _)| kind)),
        time_ms: event_time(value.get("time"), outer.fallback_ms),
        weight: 1.0,
        value: None,
        limit: None,
        labels,
        provider_id: id.map(Cow::into_owned),
        traceparent: outer.traceparent.clone(),
        raw: raw.trim().into(),
    };
    (event, Some(key))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::sources::aws::parse_eventbridge_body;

    fn parse(name: &str, received_ms: i64) -> Event {
        let path = format!("{}/tests/fixtures/aws/{name}", env!("CARGO_MANIFEST_DIR"));
        let body = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut batch = parse_eventbridge_body(&Arc::from("eb"), &body, received_ms).unwrap();
        assert_eq!(batch.events.len(), 1, "{:?}", batch.skipped);
        batch.events.remove(0).event
    }

    fn labels(event: &Event) -> Vec<String> {
        event
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }

    #[test]
    fn spot_interruption() {
        let event = parse("eventbridge_spot_interruption_warning_anth.json", 77);
        assert_eq!(event.kind, "aws.spot_interruption");
        assert_eq!(
            labels(&event),
            [
                "account=<account_number>",
                "event_source=aws.ec2",
                "instance_action=terminate",
                "region=us-east-1"
            ]
        );
        assert_eq!(event.time_ms, 77, "the 1970 placeholder time is not used");
        assert_eq!(
            event.provider_id.as_deref(),
            Some("1e5527d7-bb36-4607-3370-4164db56a40e")
        );
        assert!(
            event.raw.contains("i-0b662ef9931388ba0"),
            "the instance stays an attribute"
        );
    }

    #[test]
    fn rebalance_recommendation() {
        let event = parse("eventbridge_rebalance_recommendation_anth.json", 0);
        assert_eq!(event.kind, "aws.rebalance_recommendation");
        assert_eq!(event.time_ms, 1_603_721_654_000);
        assert_eq!(
            labels(&event),
            [
                "account=123456789012",
                "event_source=aws.ec2",
                "region=us-east-1"
            ]
        );
    }

    #[test]
    fn health_event_by_service() {
        let event = parse("eventbridge_health_test_event_empty_resources.json", 0);
        assert_eq!(event.kind, "aws.health");
        assert_eq!(
            labels(&event),
            [
                "account=123456789012",
                "event_source=aws.health",
                "event_type_category=category",
                "event_type_code=AWS_EC2_HEALTH_TEST_EVENT",
                "region=us-east-1",
                "service=AWS_EC2"
            ]
        );
    }

    #[test]
    fn lifecycle_actions() {
        let terminate = parse("eventbridge_asg_terminate_lifecycle_anth.json", 0);
        assert_eq!(terminate.kind, "aws.autoscaling_lifecycle");
        assert_eq!(
            terminate.label("transition"),
            Some("autoscaling:EC2_INSTANCE_TERMINATING")
        );
        assert_eq!(
            terminate.label("auto_scaling_group"),
            Some("testt1.demo-0a20f32c.kops.sh")
        );
        assert_eq!(
            terminate.label("lifecycle_hook"),
            Some("cluster-termination-handler")
        );
        assert_eq!(terminate.label("origin"), None);

        let launch = parse("eventbridge_asg_warm_pool_launch_lifecycle.json", 0);
        assert_eq!(
            launch.label("transition"),
            Some("autoscaling:EC2_INSTANCE_LAUNCHING")
        );
        assert_eq!(launch.label("origin"), Some("WarmPool"));
        assert_eq!(launch.label("destination"), Some("AutoScalingGroup"));
        assert_eq!(launch.label("region"), Some("us-west-2"));
        assert_eq!(launch.time_ms, 1_611_016_552_359);
    }

    #[test]
    fn state_changes_and_unknown_detail_types() {
        let body = br#"[{"id":"a","detail-type":"EC2 Instance State-change Notification",
              "source":"aws.ec2","region":"eu-west-1","time":"2024-01-01T00:00:00Z",
              "detail":{"instance-id":"i-1","state":"stopping","instance-type":"m5.large",
                "availability-zone":"eu-west-1a"}},
            {"detail-type":"Glue Job State Change","source":"aws.glue","detail":{"state":"x"}}]"#;
        let batch = parse_eventbridge_body(&Arc::from("eb"), body, 5).unwrap();
        let state = &batch.events[0].event;
        assert_eq!(state.kind, "aws.ec2_state_change");
        assert_eq!(state.label("state"), Some("stopping"));
        assert_eq!(state.label("instance_type"), Some("m5.large"));
        assert_eq!(state.label("availability_zone"), Some("eu-west-1a"));
        let other = &batch.events[1].event;
        assert_eq!(other.kind, "aws.event");
        assert_eq!(other.label("detail_type"), Some("Glue Job State Change"));
        assert_eq!(
            other.label("state"),
            None,
            "unknown detail fields are not labels"
        );
        assert_eq!(other.time_ms, 5);
        assert!(
            batch.events[1].keys.is_some(),
            "an event without id counts by content"
        );
    }
}
